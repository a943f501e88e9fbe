//! A running core (either kind) on the bench's one-inbound config, and what /proc says about
//! processes: memory, CPU, I/O syscalls.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cores::{Core, free_port};
use crate::procstat::{HostCpu, rss_kib_of, tick_ms, ticks_with_children};
pub use crate::procstat::{Io, loadavg};
use crate::{CONFIG_NAME, TAG};

const WAIT: Duration = Duration::from_secs(20);

/// A server config both cores load: the API behind a dokodemo-door inbound routed to the api
/// tag (xray-api-facts.md §9.1) and one VLESS inbound without clients.
pub fn tunnel_config(api: u16, vless: u16) -> String {
    format!(
        r#"{{
  "log": {{"loglevel": "warning"}},
  "api": {{"tag": "api", "services": ["HandlerService", "StatsService"]}},
  "stats": {{}},
  "inbounds": [
    {{"tag": "api", "listen": "127.0.0.1", "port": {api}, "protocol": "dokodemo-door", "settings": {{"address": "127.0.0.1"}}}},
    {{"tag": "{TAG}", "listen": "127.0.0.1", "port": {vless}, "protocol": "vless", "settings": {{"clients": [], "decryption": "none"}}}}
  ],
  "outbounds": [{{"protocol": "freedom", "tag": "direct"}}],
  "routing": {{"rules": [{{"type": "field", "inboundTag": ["api"], "outboundTag": "api"}}]}}
}}
"#
    )
}

/// The first line of the core's version output, e.g. "Xray 26.3.27 (...)".
pub fn version(kind: Core) -> String {
    let flag = match kind {
        Core::Xray => "version",
        Core::V2ray => "-version",
    };
    let out = Command::new(kind.bin()).arg(flag).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let text = text.unwrap_or_default();
    let line = text.lines().next().unwrap_or(kind.name());
    // Xray's line goes on with "(Xray, Penetrates Everything.) Custom (go...)".
    line.split(" (").next().unwrap_or(line).to_owned()
}

/// A fresh core process on its own config (`<dir>/tunnel/xray-bench.json`, log beside the
/// tunnel dir); dropping it kills it by its PID and waits for it.
pub struct LiveCore {
    pub kind: Core,
    child: Child,
    pub api: SocketAddr,
    pub vless_port: u16,
    pub config: PathBuf,
    log: PathBuf,
}

impl LiveCore {
    pub fn start(kind: Core, dir: &Path) -> LiveCore {
        let tunnel_dir = dir.join("tunnel");
        fs::create_dir_all(&tunnel_dir).expect("creating the tunnel dir");
        let (api, vless) = (free_port(), free_port());
        let config = tunnel_dir.join(CONFIG_NAME);
        fs::write(&config, tunnel_config(api, vless)).expect("writing the tunnel config");
        let log = dir.join(format!("{kind}.log"));
        let out = File::create(&log).expect("creating the core's log");
        let child = Command::new(kind.bin())
            .args(kind.run_args(&config))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("the log's handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {kind}: {e}"));
        // The guard exists before anything can fail, so a panic below still stops the core.
        let mut core = LiveCore {
            kind,
            child,
            api: SocketAddr::from(([127, 0, 0, 1], api)),
            vless_port: vless,
            config,
            log,
        };
        core.wait_listening();
        core
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + WAIT;
        let kind = self.kind;
        while TcpStream::connect(self.api).is_err() {
            let exited = self.child.try_wait().ok().flatten();
            let log = || fs::read_to_string(&self.log).unwrap_or_default();
            assert!(exited.is_none(), "{kind} exited: {exited:?}\n{}", log());
            assert!(
                Instant::now() < deadline,
                "{kind} never listened\n{}",
                log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(Some(self.pid())).unwrap_or(0)
    }

    /// Panics with the core's log when it died (e.g. a request crashed it).
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            panic!("{} exited during the run: {status}\n{log}", self.kind);
        }
    }
}

impl Drop for LiveCore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resets this process's peak RSS (VmHWM), so the next reading is the peak since now.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU of the core and of this process (children included) over one measured step.
#[derive(Default)]
pub struct Cpu {
    pub core_ms: f64,
    pub client_ms: f64,
    /// Share of all the machine's CPUs busy over the step (anyone's work), in percent.
    pub machine_busy: f64,
}

/// CPU readings of the core, of this process and of the machine, taken before a step.
pub struct CpuMark {
    core: u32,
    ticks: [u64; 2],
    machine: HostCpu,
}

impl CpuMark {
    pub fn now(core: u32) -> CpuMark {
        let ticks = [ticks_with_children(Some(core)), ticks_with_children(None)];
        let machine = HostCpu::now();
        CpuMark {
            core,
            ticks,
            machine,
        }
    }

    pub fn since(&self) -> Cpu {
        let after = [
            ticks_with_children(Some(self.core)),
            ticks_with_children(None),
        ];
        let ms = |i: usize| (after[i] - self.ticks[i]) as f64 * tick_ms();
        Cpu {
            core_ms: ms(0),
            client_ms: ms(1),
            machine_busy: HostCpu::now().since(self.machine).busy_percent(),
        }
    }
}

//! A running core (either kind) on the bench's one-inbound config, and what /proc says about
//! processes: memory, CPU, I/O syscalls.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cores::{Core, free_port};
use crate::procstat::HostCpu;
use crate::{CONFIG_NAME, TAG};

const WAIT: Duration = Duration::from_secs(20);
/// The kernel's USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
pub const TICK_MS: f64 = 10.0;

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
        status_kib(&self.pid().to_string(), "VmRSS:").unwrap_or(0)
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

/// A `/proc/<pid>/status` field in KiB ("self" for this process).
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(field))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// utime+stime of a process and, for "self", of its waited-for children, in USER_HZ ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The command name may hold spaces; utime, stime, cutime, cstime are fields 14 to 17.
    let after_comm = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields = after_comm.split(' ').skip(11).take(4);
    fields.map(|f| f.parse::<u64>().expect("a CPU field")).sum()
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
    core: String,
    ticks: [u64; 2],
    machine: HostCpu,
}

impl CpuMark {
    pub fn now(core: u32) -> CpuMark {
        let core = core.to_string();
        let ticks = [cpu_ticks(&core), cpu_ticks("self")];
        let machine = HostCpu::now();
        CpuMark {
            core,
            ticks,
            machine,
        }
    }

    pub fn since(&self) -> Cpu {
        let after = [cpu_ticks(&self.core), cpu_ticks("self")];
        let ms = |i: usize| (after[i] - self.ticks[i]) as f64 * TICK_MS;
        Cpu {
            core_ms: ms(0),
            client_ms: ms(1),
            machine_busy: HostCpu::now().since(self.machine).busy_percent(),
        }
    }
}

/// The machine's load averages (1, 5, 15 min), as /proc/loadavg prints them.
pub fn loadavg() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Bytes and calls of a process's read and write syscalls (sockets included), from
/// /proc/<pid>/io. An idle core makes none, so any API call shows here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Io {
    pub bytes: u64,
    pub calls: u64,
}

impl Io {
    pub fn of(pid: u32) -> Option<Io> {
        let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        let field = |name: &str| {
            let line = io.lines().find_map(|l| l.strip_prefix(name))?;
            line.trim().parse::<u64>().ok()
        };
        Some(Io {
            bytes: field("rchar:")? + field("wchar:")?,
            calls: field("syscr:")? + field("syscw:")?,
        })
    }

    pub fn since(self, before: Option<Io>) -> Option<Io> {
        let before = before?;
        Some(Io {
            bytes: self.bytes - before.bytes,
            calls: self.calls - before.calls,
        })
    }
}

//! The two real cores every proof that runs a core runs on, and the pieces around them: a tunnel
//! config both load, a unit running it, a VLESS client process (of the same core) with a SOCKS
//! inbound, an origin HTTP server, and a fetch through the tunnel with curl.
//!
//! [`Core::Xray`] is Xray-core built pinned from the Go module proxy by scripts/install-xray.sh
//! (`XRAY_BIN` wins, and the test command sets it); [`Core::V2ray`] is Debian's V2Ray 4.34.
//! `WARDEN_TEST_CORES` (a comma list of `xray`, `v2ray`) narrows [`Core::all`]; the test command
//! sets it to `v2ray` on a machine that cannot build Xray, and says so.
//!
//! Everything listens on 127.0.0.1; every process started here is stopped by its PID on drop.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const V2RAY: &str = "/usr/bin/v2ray";

/// The Xray-core release the tests build (a Go module version, see scripts/install-xray.sh).
pub const XRAY_PIN: &str = include_str!("../../scripts/xray-core.pin");

/// Where scripts/install-xray.sh caches its build of [`XRAY_PIN`].
pub fn xray_cache_path() -> PathBuf {
    let root =
        std::env::var_os("XRAY_CACHE").unwrap_or_else(|| "/var/cache/xray-warden-tests".into());
    PathBuf::from(root)
        .join(format!("xray-core-{}", XRAY_PIN.trim()))
        .join("xray")
}

/// A real core binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Core {
    Xray,
    V2ray,
}

impl Core {
    /// The cores this run covers: both unless `WARDEN_TEST_CORES` names fewer.
    pub fn all() -> Vec<Core> {
        let Ok(list) = std::env::var("WARDEN_TEST_CORES") else {
            return vec![Core::Xray, Core::V2ray];
        };
        let cores: Vec<Core> = list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| match name {
                "xray" => Core::Xray,
                "v2ray" => Core::V2ray,
                other => panic!("WARDEN_TEST_CORES: unknown core {other:?} (xray, v2ray)"),
            })
            .collect();
        cores
    }

    /// Whether this run covers Xray (for Xray-only tests, which say so when they skip).
    pub fn xray_enabled(test: &str) -> bool {
        Core::enabled(Core::Xray, test)
    }

    /// Whether this run covers `core`; says so when `test` is skipped.
    pub fn enabled(core: Core, test: &str) -> bool {
        let on = Core::all().contains(&core);
        if !on {
            eprintln!("SKIPPED: {test} on {core} (WARDEN_TEST_CORES excludes it)");
        }
        on
    }

    pub fn name(self) -> &'static str {
        match self {
            Core::Xray => "xray",
            Core::V2ray => "v2ray",
        }
    }

    /// The binary: `XRAY_BIN`, or the cached pinned build, for Xray; Debian's for V2Ray.
    pub fn bin(self) -> PathBuf {
        match self {
            Core::V2ray => PathBuf::from(V2RAY),
            Core::Xray => {
                let path = std::env::var_os("XRAY_BIN")
                    .map(PathBuf::from)
                    .unwrap_or_else(xray_cache_path);
                assert!(
                    path.is_file(),
                    "no Xray-core at {}: run scripts/install-xray.sh (or set XRAY_BIN), or \
                     WARDEN_TEST_CORES=v2ray to skip the Xray half",
                    path.display()
                );
                path
            }
        }
    }

    /// The binary as a string, for configs and unit files.
    pub fn bin_str(self) -> String {
        self.bin().display().to_string()
    }

    /// The flavour the warden should find.
    pub fn flavour(self) -> xray_warden::domain::Flavour {
        match self {
            Core::Xray => xray_warden::domain::Flavour::Xray,
            Core::V2ray => xray_warden::domain::Flavour::V2ray,
        }
    }

    /// Arguments that run the core on `config` (`xray run -config F`, `v2ray -config F`).
    pub fn run_args(self, config: &Path) -> Vec<String> {
        let mut args = Vec::new();
        if self == Core::Xray {
            args.push("run".to_owned());
        }
        args.push("-config".to_owned());
        args.push(config.display().to_string());
        args
    }

    /// `rest` after what the core needs first: `run` for Xray (its default command, spelled out).
    pub fn args(self, rest: &[&str]) -> Vec<String> {
        let run = (self == Core::Xray).then_some("run");
        run.into_iter()
            .chain(rest.iter().copied())
            .map(str::to_owned)
            .collect()
    }

    /// The process name (comm) a running core has: its file name, cut to 15 bytes.
    pub fn comm(self) -> String {
        let bin = self.bin();
        let name = bin.file_name().unwrap().to_string_lossy();
        name.chars().take(15).collect()
    }

    /// A command running the core on `config`, output discarded.
    pub fn command(self, config: &Path) -> Command {
        let mut command = Command::new(self.bin());
        command
            .args(self.run_args(config))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// What the core prints first when it starts (its name and version).
    pub fn banner(self) -> &'static str {
        match self {
            Core::Xray => "Xray ",
            Core::V2ray => "V2Ray 4.34",
        }
    }

    /// The unit's ExecStart= value.
    pub fn exec_start(self, config: &Path) -> String {
        format!("{} {}", self.bin_str(), self.run_args(config).join(" "))
    }
}

impl std::fmt::Display for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A port on 127.0.0.1 that was free when asked and that no other call in this test process
/// returns. Port 0 would let the kernel hand the same released port to two tunnels of one test
/// (seen: two cores on one port, a false port conflict), so ports come from a counter below
/// the kernel's ephemeral range (32768 and up on Linux), starting at a place that depends on
/// the process id, and each is checked by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id() % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port left in {FIRST}..{}", FIRST + SPAN);
        let port = (FIRST + (base + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Ports of one tunnel's inbounds.
#[derive(Debug, Clone, Copy)]
pub struct TunnelPorts {
    pub api: u16,
    pub vless: u16,
    pub vmess: u16,
    pub trojan: u16,
}

impl TunnelPorts {
    pub fn free() -> Self {
        Self {
            api: free_port(),
            vless: free_port(),
            vmess: free_port(),
            trojan: free_port(),
        }
    }
}

/// A server config both cores load: the API behind a dokodemo-door inbound routed to the api tag
/// (xray-api-facts.md §9.1), and VLESS, VMess and Trojan inbounds without users.
pub fn tunnel_config(ports: TunnelPorts) -> String {
    format!(
        r#"{{
  "log": {{"loglevel": "warning"}},
  "api": {{"tag": "api", "services": ["HandlerService", "StatsService"]}},
  "stats": {{}},
  "policy": {{"levels": {{"0": {{"statsUserUplink": true, "statsUserDownlink": true}}}},
              "system": {{"statsInboundUplink": true, "statsInboundDownlink": true}}}},
  "inbounds": [
    {{"tag": "api", "listen": "127.0.0.1", "port": {api}, "protocol": "dokodemo-door", "settings": {{"address": "127.0.0.1"}}}},
    {{"tag": "vless-in", "listen": "127.0.0.1", "port": {vless}, "protocol": "vless", "settings": {{"clients": [], "decryption": "none"}}}},
    {{"tag": "vmess-in", "listen": "127.0.0.1", "port": {vmess}, "protocol": "vmess", "settings": {{"clients": []}}}},
    {{"tag": "trojan-in", "listen": "127.0.0.1", "port": {trojan}, "protocol": "trojan", "settings": {{"clients": []}}}}
  ],
  "outbounds": [{{"protocol": "freedom", "tag": "direct"}}],
  "routing": {{"rules": [{{"type": "field", "inboundTag": ["api"], "outboundTag": "api"}}]}}
}}
"#,
        api = ports.api,
        vless = ports.vless,
        vmess = ports.vmess,
        trojan = ports.trojan,
    )
}

/// A unit running `core` on `config`.
pub fn tunnel_unit(core: Core, config: &Path) -> String {
    format!(
        "[Unit]\nDescription={core} tunnel\nStartLimitIntervalSec=0\n[Service]\n\
         ExecStart={}\nRestart=always\nRestartSec=1\n",
        core.exec_start(config)
    )
}

/// A core process acting as a VLESS client: SOCKS on `socks`, tunnel at `vless_port`.
pub struct VlessClient {
    child: Child,
    pub socks: u16,
}

impl VlessClient {
    pub fn start(core: Core, dir: &Path, name: &str, vless_port: u16, id: &str) -> VlessClient {
        Self::spawn(core, dir, name, vless_port, id, "")
    }

    /// [`VlessClient::start`], connecting to the tunnel from the local address `source` (e.g.
    /// `127.0.0.2`: Xray's online stats never record the client 127.0.0.1).
    pub fn start_from(
        core: Core,
        dir: &Path,
        name: &str,
        vless_port: u16,
        id: &str,
        source: &str,
    ) -> VlessClient {
        let send_through = format!(r#""sendThrough": "{source}", "#);
        Self::spawn(core, dir, name, vless_port, id, &send_through)
    }

    fn spawn(
        core: Core,
        dir: &Path,
        name: &str,
        vless_port: u16,
        id: &str,
        send_through: &str,
    ) -> VlessClient {
        let socks = free_port();
        let config = format!(
            r#"{{"log": {{"loglevel": "warning"}},
 "inbounds": [{{"listen": "127.0.0.1", "port": {socks}, "protocol": "socks", "settings": {{"udp": false}}}}],
 "outbounds": [{{"protocol": "vless", {send_through}"settings": {{"vnext": [{{"address": "127.0.0.1", "port": {vless_port},
   "users": [{{"id": "{id}", "encryption": "none"}}]}}]}}}}]}}"#
        );
        let path: PathBuf = dir.join(format!("client-{name}.json"));
        std::fs::write(&path, config).unwrap();
        let child = core
            .command(&path)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {core} client: {e}"));
        let client = VlessClient { child, socks };
        wait_listening(socks);
        client
    }
}

impl Drop for VlessClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tiny origin server answering every request with `body`, on a thread of its own.
pub struct Origin {
    pub port: u16,
}

impl Origin {
    pub fn start(body: &'static str) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                let mut buf = [0u8; 4096];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.read(&mut buf);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Origin { port }
    }
}

/// GETs the origin through a SOCKS proxy with curl; `Err` with curl's complaint when refused.
pub fn fetch_via(socks: u16, origin: &Origin) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "3", "--socks5-hostname"])
        .arg(format!("127.0.0.1:{socks}"))
        .arg(format!("http://127.0.0.1:{}/", origin.port))
        .output()
        .expect("running curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs each named test function `fn name(core: Core)` once per core, as the tests
/// `on_xray::name` and `on_v2ray::name`; a core the run excludes (`WARDEN_TEST_CORES`) is
/// skipped with a line that says so.
#[macro_export]
macro_rules! per_core {
    ($($name:ident),+ $(,)?) => {
        mod on_xray {
            $(
                #[test]
                fn $name() {
                    use $crate::support::cores::Core;
                    if Core::enabled(Core::Xray, stringify!($name)) {
                        super::$name(Core::Xray);
                    }
                }
            )+
        }
        mod on_v2ray {
            $(
                #[test]
                fn $name() {
                    use $crate::support::cores::Core;
                    if Core::enabled(Core::V2ray, stringify!($name)) {
                        super::$name(Core::V2ray);
                    }
                }
            )+
        }
    };
}

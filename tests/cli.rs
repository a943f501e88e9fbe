//! The real binary on the host, without systemd: flags, config errors, an unreachable bus and
//! the shutdown path. (The proof against a real systemd is in systemd_proof.rs.)

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use support::warden::{http_call, http_get};
use xray_warden::contract::{ErrorBody, HealthReport, OrphanList, TunnelList};

const BIN: &str = env!("CARGO_BIN_EXE_xray-warden");

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A daemon on the host with a bus address that leads nowhere; killed by PID on drop.
struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Daemon {
    fn start(name: &str, grace: &str) -> Daemon {
        Self::start_with(name, grace, "")
    }

    /// A daemon whose config file ends with `extra` (more sections).
    fn start_with(name: &str, grace: &str, extra: &str) -> Daemon {
        let config = scratch(&format!("{name}.toml"));
        let bus = scratch(&format!("{name}-no-bus"));
        let text = format!(
            "shutdown_grace = \"{grace}\"\n[systemd]\nbus_address = \"unix:path={}\"\nreconnect_min = \"20ms\"\nreconnect_max = \"100ms\"\n{extra}",
            bus.display()
        );
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(BIN)
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut lines = stderr.lines().map_while(Result::ok);
        let addr = lines
            .find_map(|l| {
                let rest = l.split("listening on http://").nth(1)?.to_owned();
                rest.split('/').next()?.parse().ok()
            })
            .expect("the daemon logs its address");
        // Keep draining stderr so the daemon never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Daemon { child, addr }
    }

    fn signal(&self, signal: Signal) {
        support::signal::send(self.child.id(), signal).unwrap();
    }

    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn help_explains_every_flag() {
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    for flag in [
        "--config",
        "--listen",
        "--check",
        "127.0.0.1:9550",
        "config.example.toml",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().contains("run"));
}

#[test]
fn every_config_error_is_reported_and_nothing_is_bound() {
    // The port is free; a daemon that bound it before validating would show up as taken.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = scratch("bad.toml");
    let text = format!(
        "listen = \"127.0.0.1:{port}\"\nshutdown_grace = \"soon\"\ncolour = 1\n[sampler]\nproc_root = \"proc\"\n"
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    for needle in [
        "shutdown_grace",
        "unknown key `colour`",
        "sampler.proc_root",
        "bad.toml",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
    }
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());

    let out = Command::new(BIN)
        .args(["run", "--check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn example_config_passes_the_check() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config.example.toml");
    let out = Command::new(BIN)
        .args(["run", "--check", "-c", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unreachable_bus_is_reported_not_fatal() {
    let mut daemon = Daemon::start("nobus", "1s");
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = http_get(daemon.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("xray_warden_systemd_up 0"), "{body}");
    assert_eq!(http_get(daemon.addr, "/live").unwrap().0, 200);
    assert_eq!(http_get(daemon.addr, "/ready").unwrap().0, 503);
    daemon.signal(Signal::TERM);
    assert_eq!(daemon.wait(Duration::from_secs(5)), Some(0));
}

/// Holds a connection with half a request, so a graceful HTTP shutdown has to wait for it.
fn stall(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stream
}

#[test]
fn shutdown_is_bounded_by_the_grace_period() {
    let mut daemon = Daemon::start("grace", "1s");
    let _stalled = stall(daemon.addr);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    daemon.signal(Signal::TERM);
    assert_eq!(
        daemon.wait(Duration::from_secs(5)),
        Some(1),
        "grace exceeded is not clean"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "left before the grace period: {took:?}"
    );
}

#[test]
fn a_second_signal_aborts_the_shutdown() {
    let mut daemon = Daemon::start("abort", "60s");
    let _stalled = stall(daemon.addr);
    std::thread::sleep(Duration::from_millis(100));
    daemon.signal(Signal::TERM);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        daemon.child.try_wait().unwrap(),
        None,
        "still draining after the first signal"
    );
    daemon.signal(Signal::INT);
    assert_eq!(daemon.wait(Duration::from_secs(2)), Some(1));
}

#[test]
fn the_cli_reads_the_daemons_answers_through_the_contract() {
    const TOKEN: &str = "contract-token-0123456789";
    let token = scratch("contract.token");
    std::fs::write(&token, TOKEN).unwrap();
    // The audit log too goes to the test's scratch dir, never the host's /var/log.
    let api = format!(
        "[api]\ntoken_file = \"{}\"\naudit_log = \"{}\"\n",
        token.display(),
        scratch("contract-audit.log").display()
    );
    let daemon = Daemon::start_with("contract", "1s", &api);
    let cli_config = scratch("contract-cli.toml");
    std::fs::write(&cli_config, format!("listen = \"{}\"\n{api}", daemon.addr)).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&cli_config)
            .output()
            .unwrap();
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
        (out.status.success(), text(out.stdout), text(out.stderr))
    };
    let json = |args: &[&str]| {
        let (ok, stdout, stderr) = cli(&[args, &["--json"]].concat());
        assert!(ok, "{args:?}: {stderr}");
        stdout
    };

    // Without a bus: no tunnels, systemd down, in the JSON and in the table.
    let report: HealthReport = serde_json::from_str(&json(&["health"])).unwrap();
    assert!(!report.systemd_up);
    assert_eq!((report.tunnels_total, report.orphans), (0, 0));
    let (ok, table, _) = cli(&["health"]);
    assert!(ok);
    assert_eq!(
        table,
        "systemd: DOWN  tunnels: 0  unhealthy: 0  orphans: 0\n"
    );
    let list: TunnelList = serde_json::from_str(&json(&["tunnels", "list"])).unwrap();
    assert!(list.tunnels.is_empty());
    let orphans: OrphanList = serde_json::from_str(&json(&["orphans", "list"])).unwrap();
    assert!(orphans.orphans.is_empty());

    // An invalid id reaches the daemon as typed and gets its 400, read as the error body.
    for id in ["a b", "x;rm", "../x", "x.y", "%2F"] {
        for command in ["show", "delete", "stop"] {
            let (ok, _, stderr) = cli(&["tunnels", command, id]);
            assert!(!ok, "{command} {id}");
            assert!(
                stderr.contains("the daemon answered 400 invalid_id: ")
                    && stderr.contains("tunnel id"),
                "{command} {id}: {stderr}"
            );
        }
    }
    // `.` and `..` cannot be carried by a URL: refused before any request.
    for id in [".", ".."] {
        let (ok, _, stderr) = cli(&["tunnels", "delete", id]);
        assert!(
            !ok && stderr.contains("is not a tunnel id"),
            "{id}: {stderr}"
        );
    }
    let (status, body) =
        http_call(daemon.addr, "GET", "/api/v1/tunnels/a%20b", Some(TOKEN), "").unwrap();
    let error: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!((status, error.error.as_str()), (400, "invalid_id"));
}

/// A loopback listener that records every connection made to it; with `answer`, it reads a
/// request and answers it, else it accepts and stays silent (a hung daemon).
struct Recorder {
    addr: SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Recorder {
    fn start(answer: Option<&'static str>) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 4096];
                stream
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let n = std::io::Read::read(&mut stream, &mut buf).unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                match answer {
                    Some(answer) => {
                        let _ = stream.write_all(answer.as_bytes());
                    }
                    None => held.push(stream),
                }
            }
        });
        Recorder { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A 200 with an empty JSON object: with `--json`, the CLI prints it as is.
const HEALTH_ANSWER: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: 2\r\nConnection: close\r\n\r\n{}";

/// A CLI config pointing at `addr` with a token; returns its path.
fn cli_config(name: &str, addr: SocketAddr) -> PathBuf {
    const TOKEN: &str = "proxy-token-0123456789abcdef";
    let token = scratch(&format!("{name}.token"));
    std::fs::write(&token, TOKEN).unwrap();
    let config = scratch(&format!("{name}-cli.toml"));
    let text = format!(
        "listen = \"{addr}\"\n[api]\ntoken_file = \"{}\"\n",
        token.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn the_cli_never_sends_its_token_through_a_proxy() {
    let daemon = Recorder::start(Some(HEALTH_ANSWER));
    let proxy = Recorder::start(Some(HEALTH_ANSWER));
    let config = cli_config("proxy", daemon.addr);
    let proxy_url = format!("http://{}", proxy.addr);
    let out = Command::new(BIN)
        .args(["health", "--json", "--config"])
        .arg(&config)
        .env("http_proxy", &proxy_url)
        .env("HTTP_PROXY", &proxy_url)
        .env("all_proxy", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(proxy.seen().is_empty(), "the proxy got {:?}", proxy.seen());
    assert!(out.status.success(), "{stderr}");
    let asked = daemon.seen();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].starts_with("GET /api/v1/health ")
            && asked[0].contains("Bearer proxy-token-0123456789abcdef"),
        "{asked:?}"
    );
}

#[test]
fn a_hung_daemon_fails_the_cli_within_its_timeout() {
    let hung = Recorder::start(None);
    let config = cli_config("hung", hung.addr);
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["tunnels", "list", "--timeout", "1s", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("did not answer within 1s"), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(hung.seen().len(), 1, "the request reached the hung daemon");
}

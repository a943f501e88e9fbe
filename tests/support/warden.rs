//! The real `xray-warden` binary, run inside a [`Sandbox`]'s namespaces, plus a tiny HTTP client
//! and a parser for the Prometheus text format.
//!
//! The warden must run in the sandbox's PID and mount namespaces: the PIDs systemd reports and
//! the cgroup paths it names only make sense there. `nsenter` forks to enter the PID namespace,
//! so the warden is nsenter's child; it is stopped by its own PID, never by name.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::sandbox::Sandbox;

pub const BIN: &str = env!("CARGO_BIN_EXE_xray-warden");
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running warden; dropping it kills it (by PID) if [`Warden::stop`] was not called.
pub struct Warden {
    nsenter: Child,
    /// Host PID of the warden process itself.
    pid: u32,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Warden {
    /// Starts the warden in `sandbox` with `config` (TOML) and waits until it listens.
    pub fn start(sandbox: &Sandbox, config: &str) -> Warden {
        Self::start_with(sandbox, config, &[BIN], &[])
    }

    /// [`Warden::start`] with another command line before the warden's own arguments (another
    /// build, or a profiler wrapping it: its PID must become the warden's, as valgrind's does)
    /// and more environment, applied last (benches set `RUST_LOG=info`, the production level).
    pub fn start_with(
        sandbox: &Sandbox,
        config: &str,
        program: &[&str],
        env: &[(&str, &str)],
    ) -> Warden {
        let path = sandbox.state_dir().join("warden.toml");
        std::fs::write(&path, config).expect("writing the warden config");
        let (program, args) = program.split_first().expect("a program to run");
        let mut nsenter = sandbox
            .command(program)
            .args(args)
            .args(["run", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .env("RUST_LOG", "xray_warden=debug,info")
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting xray-warden under nsenter");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = nsenter.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = addr_tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let pid = child_pid(nsenter.id());
        let mut warden = Warden {
            nsenter,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => warden.addr = addr,
            Err(_) => panic!("warden did not start listening:\n{}", warden.log()),
        }
        warden
    }

    /// Host PID of the warden process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the warden logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    pub fn scrape(&self) -> Scrape {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        Scrape(body)
    }

    /// Polls until `/ready` answers 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while self.get("/ready").0 != 200 {
            assert!(Instant::now() < deadline, "never ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the metrics until `cond` holds; returns the scrape that satisfied it.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Scrape) -> bool,
    ) -> Scrape {
        let deadline = Instant::now() + timeout;
        loop {
            let scrape = self.scrape();
            if cond(&scrape) {
                return scrape;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\n--- scrape:\n{}\n--- log:\n{}",
                    scrape.0,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends `signal` to the warden process.
    pub fn signal(&self, signal: Signal) {
        let sent = super::signal::send(self.pid, signal);
        sent.unwrap_or_else(|e| panic!("signal {signal:?} to {}: {e}", self.pid));
    }

    /// SIGTERM, then waits for the exit (nsenter passes the warden's exit status on).
    pub fn stop(mut self) -> ExitStatus {
        self.signal(Signal::TERM);
        self.nsenter.wait().expect("waiting for the warden")
    }
}

impl Drop for Warden {
    fn drop(&mut self) {
        if let Ok(None) = self.nsenter.try_wait() {
            let _ = super::signal::send(self.pid, Signal::KILL);
            let _ = self.nsenter.wait();
        }
    }
}

/// The PID of nsenter's forked child (the warden, or another program), read from /proc/<nsenter>/task/*/children.
pub fn child_pid(nsenter: u32) -> u32 {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let children = std::fs::read_to_string(format!("/proc/{nsenter}/task/{nsenter}/children"))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "nsenter {nsenter} never forked");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on http://").nth(1)?;
    rest.split('/').next()?.parse().ok()
}

/// A minimal HTTP/1.0 GET.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_call(addr, "GET", path, None, "")
}

/// A minimal HTTP/1.0 POST of a JSON body, with an optional bearer token.
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    http_call(addr, "POST", path, token, body)
}

/// A minimal HTTP/1.0 request with a JSON body (may be empty) and an optional bearer token.
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {response:.200}")))?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Ok((status, body.unwrap_or_default()))
}

/// One `/metrics` body.
#[derive(Debug, Clone)]
pub struct Scrape(pub String);

impl Scrape {
    /// The value of the series `name` whose labels include every pair of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (series_name, series_labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                let matches = series_name == name
                    && labels
                        .iter()
                        .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
                matches.then(|| value.parse().ok()).flatten()
            })
    }

    /// [`Scrape::value`] for a tunnel's series.
    pub fn tunnel(&self, name: &str, tunnel: &str) -> Option<f64> {
        self.value(name, &[("tunnel", tunnel)])
    }

    /// Runs `promtool check metrics` on the body; panics with its complaints, if any.
    pub fn assert_promtool_clean(&self) {
        let mut promtool = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running promtool (Debian package prometheus)");
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(self.0.as_bytes())
            .unwrap();
        let out = promtool.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn has_tunnel(&self, tunnel: &str) -> bool {
        self.0.contains(&format!("tunnel=\"{tunnel}\""))
    }
}

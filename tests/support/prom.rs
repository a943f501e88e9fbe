//! Debian's REAL Prometheus (2.42) and Alertmanager (0.25) for the loop proofs, each started by
//! the test on a free 127.0.0.1 port with its storage in a scratch directory of its own under
//! `<CARGO_TARGET_TMPDIR>` (never /tmp), and stopped by its PID.
//!
//! Lifetime: `start` returns once the server answers `/-/ready`. Dropping it sends SIGTERM to its
//! PID, then SIGKILL if it has not exited after a grace period, and removes its directory; if the
//! thread is panicking, the tail of the server's log is printed first. If the test process dies
//! without unwinding, the server dies with it: it runs under `setpriv --pdeathsig KILL`, which
//! fires when the spawning THREAD exits, so start servers in the thread that uses them. The next
//! start sweeps directories left by dead test processes.

pub mod derive;
mod sink;
mod speedup;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use serde_json::Value;

pub use sink::{Received, Sink};
pub use speedup::{FastRules, format_duration, parse_duration, replace_key, speed_up_rules};

use super::cores::free_port;
use super::warden::{http_call, http_get};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
pub const PROMTOOL: &str = "/usr/bin/promtool";
pub const AMTOOL: &str = "/usr/bin/amtool";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
const DIR_PREFIX: &str = "peer-";

/// A scratch directory `<CARGO_TARGET_TMPDIR>/peer-<name>-<test pid>-<n>`, removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        sweep_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = root().join(format!("{DIR_PREFIX}{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("cannot remove {}: {e}", self.path.display());
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Removes the scratch dirs of test processes that are gone (their servers died with them).
fn sweep_stale() {
    for entry in fs::read_dir(root()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let owner = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A server process started by the test; stopped by its PID on drop.
pub struct Server {
    name: &'static str,
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts `program ARGS` (which must listen on `addr`) with its output in `dir/NAME.log`,
    /// and waits until `/-/ready` answers 200.
    fn start(
        name: &'static str,
        program: &str,
        args: &[String],
        dir: &Path,
        addr: SocketAddr,
    ) -> Server {
        let log = dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).unwrap();
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", program])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut server = Server {
            name,
            child,
            addr,
            log,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log_text());
            }
            if http_get(self.addr, "/-/ready").is_ok_and(|(status, _)| status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after {START_TIMEOUT:?}:\n{}",
                self.name,
                self.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path`, parsed as JSON; panics unless it answers 200.
    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) =
            http_get(self.addr, path).unwrap_or_else(|e| panic!("{} GET {path}: {e}", self.name));
        assert_eq!(status, 200, "{} GET {path}: {body}", self.name);
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{} GET {path}: {e}: {body}", self.name))
    }

    fn post(&self, path: &str) -> (u16, String) {
        http_call(self.addr, "POST", path, None, "")
            .unwrap_or_else(|e| panic!("{} POST {path}: {e}", self.name))
    }

    /// SIGTERM by PID, then SIGKILL after the grace period; waits for the exit.
    fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.child.id();
        let _ = super::signal::send(pid, Signal::TERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} ({pid}) ignored SIGTERM for {STOP_GRACE:?}; killing it",
            self.name
        );
        // Not reaped yet, so the PID is still ours.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- {} log (tail):\n{}", self.name, tail.join("\n"));
        }
        self.stop();
    }
}

/// A running Prometheus; fields drop in order, the server before its directory.
pub struct Prometheus {
    pub server: Server,
    pub dir: Scratch,
}

impl Prometheus {
    /// Starts Prometheus with `config` (prometheus.yml; rule files it names relative to its
    /// directory are found there) and `files` written next to it.
    pub fn start(config: &str, files: &[(String, String)]) -> Prometheus {
        let dir = Scratch::new("prometheus");
        write_files(&dir.path, "prometheus.yml", config, files);
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let args = vec![
            format!(
                "--config.file={}",
                dir.path.join("prometheus.yml").display()
            ),
            format!("--storage.tsdb.path={}", dir.path.join("data").display()),
            format!("--web.listen-address={addr}"),
            "--log.level=info".to_owned(),
        ];
        let server = Server::start("prometheus", PROMETHEUS, &args, &dir.path, addr);
        Prometheus { server, dir }
    }

    /// The alerts of every rule, pending and firing (`/api/v1/alerts`).
    pub fn alerts(&self) -> Vec<Value> {
        let v = self.server.get_json("/api/v1/alerts");
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// The health of every scrape target (`/api/v1/targets`), as (instance label, health).
    pub fn targets(&self) -> Vec<(String, String)> {
        let v = self.server.get_json("/api/v1/targets");
        let active = v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        active
            .iter()
            .map(|t| {
                let instance = t["labels"]["instance"].as_str().unwrap_or("").to_owned();
                (instance, t["health"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    }
}

/// A running Alertmanager, without clustering; fields drop in order.
pub struct Alertmanager {
    pub server: Server,
    pub dir: Scratch,
}

impl Alertmanager {
    /// Starts Alertmanager with `config` (alertmanager.yml) and `files` written next to it.
    pub fn start(config: &str, files: &[(String, String)]) -> Alertmanager {
        let dir = Scratch::new("alertmanager");
        write_files(&dir.path, "alertmanager.yml", config, files);
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let args = vec![
            format!(
                "--config.file={}",
                dir.path.join("alertmanager.yml").display()
            ),
            format!("--storage.path={}", dir.path.join("data").display()),
            format!("--web.listen-address={addr}"),
            // An empty address turns the HA gossip (0.0.0.0:9094 by default) off.
            "--cluster.listen-address=".to_owned(),
            "--log.level=debug".to_owned(),
        ];
        let server = Server::start("alertmanager", ALERTMANAGER, &args, &dir.path, addr);
        Alertmanager { server, dir }
    }

    /// Replaces the config file and asks for a reload; panics if Alertmanager refuses it.
    pub fn reload(&self, config: &str) {
        fs::write(self.dir.path.join("alertmanager.yml"), config).unwrap();
        let (status, body) = self.server.post("/-/reload");
        assert_eq!(
            status,
            200,
            "reload refused: {body}\n{}",
            self.server.log_text()
        );
    }

    /// The alerts Alertmanager holds (`/api/v2/alerts`).
    pub fn alerts(&self) -> Vec<Value> {
        self.server
            .get_json("/api/v2/alerts")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn write_files(dir: &Path, name: &str, config: &str, files: &[(String, String)]) {
    fs::write(dir.join(name), config).unwrap();
    for (file, text) in files {
        let path = dir.join(file);
        assert!(
            path.starts_with(dir) && !file.contains(".."),
            "bad file name {file}"
        );
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
    }
}

/// Runs `promtool ARGS` in `dir`; panics with its output unless it succeeds. Returns stdout.
pub fn promtool(dir: &Path, args: &[&str]) -> String {
    checker(PROMTOOL, dir, args)
}

/// Runs `amtool ARGS` in `dir` (`check-config FILE`); panics with its output unless it succeeds.
pub fn amtool(dir: &Path, args: &[&str]) -> String {
    checker(AMTOOL, dir, args)
}

fn checker(program: &str, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (scripts/install-deps.sh): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {}: {stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

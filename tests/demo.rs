//! The demo (scripts/demo.sh), run as the README says, so that it cannot rot: `--scenario` must
//! see every expected event of the four things to try within its bounds, and the interactive
//! demo must stop everything it started on Ctrl-C, leaving no process, mount or cgroup behind and
//! nothing outside its work folder. Both run the debug binaries (WARDEN_BIN, DEMO_STACK_BIN:
//! `cargo build --examples` builds the example) on free loopback ports.
//! Needs root: `cargo test --test demo`.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use support::cores::free_port;
use support::sandbox::{choose_root, host_cgroups_named};
use support::warden::http_get;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const WARDEN_BIN: &str = env!("CARGO_BIN_EXE_xray-warden");
/// The ignored test DEMO_CHECK runs (the same test binary).
const CHECK_TEST: &str = "demo_check_every_dashboard_panel_returns_data";
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(300);
const READY_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// One demo at a time: each boots a sandbox and a Prometheus, and the scenario's bounds assume
/// the machine is not also running the other one.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// target/debug/examples/demo_stack, next to the test binary's target/debug/deps.
fn demo_stack_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile.join("examples").join("demo_stack");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build --examples (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A running scripts/demo.sh in a process group of its own, its stdout collected line by line.
/// Dropping it stops whatever is left (SIGTERM to the group, SIGKILL after a grace), removes the
/// sandbox's cgroups, and removes the work folder unless the test failed.
struct Demo {
    child: Child,
    dir: PathBuf,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(name: &str, args: &[&str], extra_env: &[(&str, String)]) -> Demo {
        let root = choose_root(Path::new(env!("CARGO_TARGET_TMPDIR")));
        let dir = root.join(format!("demo-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let port = |_| format!("127.0.0.1:{}", free_port());
        // Through `env --default-signal=INT`: a shell that starts with SIGINT ignored cannot
        // trap it, and a test run from a script's background job (`cargo test &`) inherits it
        // ignored. At a terminal, Ctrl-C reaches the demo with its default action.
        let mut cmd = Command::new("env");
        cmd.arg("--default-signal=INT")
            .arg(Path::new(REPO).join("scripts/demo.sh"))
            .args(args)
            .current_dir(REPO)
            .env("WARDEN_BIN", WARDEN_BIN)
            .env("DEMO_STACK_BIN", demo_stack_bin())
            .env("DEMO_DIR", &dir)
            .env("DEMO_LISTEN", port(0))
            .env("DEMO_PROMETHEUS", port(1))
            .env("DEMO_ALERTMANAGER", port(2))
            .env("DEMO_TUNNEL_PORTS_FROM", free_port().to_string())
            .env_remove("DEMO_CHECK")
            .env_remove("DEMO_SECONDS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting scripts/demo.sh");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("demo| {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            dir,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `text`; panics after `timeout` or if the demo ends first.
    fn wait_line(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => panic!("the demo ended before printing {text:?}"),
            }
        }
        panic!("no line {text:?} within {timeout:?}");
    }

    /// Waits for the demo to exit; panics after `timeout`. Collects the rest of its output.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread ends at EOF: take what it still has.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not exit within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal_group(&self, signal: Signal) {
        let _ = support::signal::send_group(self.child.id(), signal);
    }

    fn cgroup_name(&self) -> String {
        format!(
            "xray-warden-{}",
            self.dir.file_name().unwrap().to_string_lossy()
        )
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal_group(Signal::TERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(100));
            }
            // Whatever still runs in the group; the sandbox dies with its `unshare`.
            self.signal_group(Signal::KILL);
            let _ = self.child.wait();
            let _ = Command::new(Path::new(REPO).join("scripts/sandbox-boot.sh"))
                .arg("--cleanup")
                .arg(&self.dir)
                .status();
        }
        if thread::panicking() {
            eprintln!("the demo's work folder is kept: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Everything the demo left behind outside its work folder, or that still runs: processes whose
/// command line, cwd or exe names the work folder or that live in the sandbox's cgroups, mounts
/// naming it, its cgroups, and new entries of [`shared_places`] (`before`: those before it ran).
fn leftovers(demo: &Demo, before: &BTreeSet<PathBuf>) -> Vec<String> {
    let dir = demo.dir.to_string_lossy().into_owned();
    let cgroup = demo.cgroup_name();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let p = entry.path();
        let cmdline = fs::read(p.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let link = |l: &str| {
            fs::read_link(p.join(l))
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let cgroups = fs::read_to_string(p.join("cgroup")).unwrap_or_default();
        if cmdline.contains(&dir)
            || link("cwd").starts_with(&dir)
            || link("exe").starts_with(&dir)
            || cgroups.contains(&cgroup)
        {
            found.push(format!("process {name}: {cmdline}"));
        }
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    found.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&dir))
            .map(|l| format!("mount: {l}")),
    );
    found.extend(
        host_cgroups_named(&cgroup)
            .into_iter()
            .map(|c| format!("cgroup: {}", c.display())),
    );
    found.extend(
        shared_places()
            .difference(before)
            .filter(|p| !p.starts_with(&demo.dir))
            .map(|p| format!("file: {}", p.display())),
    );
    found
}

/// The entries of the shared places a careless demo would write to (temp and state directories,
/// the default work root) whose names say they could be the demo's.
fn shared_places() -> BTreeSet<PathBuf> {
    let places = [
        "/tmp",
        "/var/tmp",
        "/run",
        "/var/lib",
        "/var/lib/xray-warden-demo",
    ];
    let ours = [
        "xray",
        "warden",
        "demo",
        "prometheus",
        "alertmanager",
        "v2ray",
    ];
    let mut found = BTreeSet::new();
    for place in places {
        for entry in fs::read_dir(place).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_lowercase();
            if ours.iter().any(|o| name.contains(o)) {
                found.insert(entry.path());
            }
        }
    }
    found
}

/// Every event the scenario reports, by the start of its line.
const SCENARIO_EVENTS: [&str; 16] = [
    "kill: restart count (warden-observed auto restarts) at 5 after ",
    "kill: health check not_crash_looping failing after ",
    "kill: XrayTunnelCrashLooping alert firing after ",
    "user: connecting as carol before she is in the users file is refused",
    "user: carol applied to us1's VLESS inbound (3 users) after ",
    "user: connected through us1 as carol after ",
    "user: the core was not restarted (MainPID ",
    "orphan: warden reports eu2 as an orphan (unit_without_config) after ",
    "orphan: XrayTunnelOrphaned alert firing after ",
    "orphan: the warden cleaned eu2 up by itself (unit gone) after ",
    "orphan: audit log: alert.cleanup_orphan done after ",
    "config: health check config_valid failing after ",
    "config: XrayTunnelConfigInvalid alert firing after ",
    "config: the running core kept running (MainPID ",
    "check: DEMO_CHECK passed after ",
    "scenario: every step passed in ",
];

#[test]
fn the_scenario_sees_every_step_work() {
    let _one = one_at_a_time();
    let before = shared_places();
    let exe = std::env::current_exe().unwrap();
    let check = format!(
        "{} --ignored --exact {CHECK_TEST} --nocapture",
        exe.display()
    );
    let mut demo = Demo::start("scenario", &["--scenario"], &[("DEMO_CHECK", check)]);
    let status = demo.wait_exit(SCENARIO_TIMEOUT);
    let out = demo.seen.join("\n");
    assert!(status.success(), "scripts/demo.sh --scenario: {status}");
    for event in SCENARIO_EVENTS {
        assert!(
            demo.seen.iter().any(|l| l.starts_with(event)),
            "no line {event:?} in:\n{out}"
        );
    }
    assert!(!out.contains("FAIL"), "{out}");
    let left = leftovers(&demo, &before);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// Ctrl-C at the terminal: SIGINT to the demo's whole process group.
#[test]
fn ctrl_c_stops_everything_the_demo_started() {
    let _one = one_at_a_time();
    let before = shared_places();
    let mut demo = Demo::start("ctrl-c", &[], &[]);
    demo.wait_line("Ctrl-C", READY_TIMEOUT);
    let out = demo.seen.join("\n");
    for url in ["/graph", "/alerts", "/metrics", "Authorization: Bearer"] {
        assert!(out.contains(url), "the demo printed no {url}:\n{out}");
    }
    assert_eq!(
        out.matches("\n     ").count(),
        4,
        "four commands to try:\n{out}"
    );
    let at = Instant::now();
    demo.signal_group(Signal::INT);
    let status = demo.wait_exit(STOP_TIMEOUT);
    eprintln!("FIGURE the demo stopped {:?} after Ctrl-C", at.elapsed());
    assert_eq!(status.code(), Some(130), "{status}");
    let left = leftovers(&demo, &before);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// Run by the scenario's DEMO_CHECK (not on its own), after the four steps: once the demo's
/// Prometheus has scraped the warden for a minute, every query of every dashboard panel returns
/// data, except the panels that say they are empty by design (whose queries must still be valid).
#[test]
#[ignore = "run by the_scenario_sees_every_step_work through DEMO_CHECK"]
fn demo_check_every_dashboard_panel_returns_data() {
    let url = std::env::var("XW_DEMO_PROMETHEUS").expect("XW_DEMO_PROMETHEUS is set by the demo");
    std::env::var("XW_DEMO_WARDEN").expect("XW_DEMO_WARDEN is set by the demo");
    std::env::var("XW_DEMO_ALERTMANAGER").expect("XW_DEMO_ALERTMANAGER is set by the demo");
    let addr = url.trim_start_matches("http://").parse().unwrap();
    // The demo scrapes every second: a minute of scraping is 60 samples of `up` in the window.
    let query = "/api/v1/query?query=count_over_time(up%7Bjob%3D%22xray-warden%22%7D%5B70s%5D)";
    let deadline = Instant::now() + Duration::from_secs(70);
    loop {
        let (status, body) = http_get(addr, query).unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let samples = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        if samples >= 60.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's Prometheus has not scraped the warden for a minute: {body}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    support::dashboards::assert_every_panel_returns_data(&url);
    support::dashboards::live::assert_the_check_can_fail(&url);
}

//! Proof tier for health checks and orphans: the real `xray-warden` binary against a REAL
//! systemd (the namespace sandbox, one per test) running REAL V2Ray 4.34 tunnels, read back from
//! `/metrics` (`xray_tunnel_health_check{tunnel,check}`, `xray_tunnel_orphaned{tunnel,kind}`)
//! and the warden's log, checked against `systemctl show` and the sandbox's /proc.
//! Needs root: `cargo test --test health_proof`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::sandbox::Sandbox;
use support::v2ray::{TunnelPorts, V2RAY, tunnel_config, tunnel_unit};
use support::warden::{Scrape, Warden};

const WAIT: Duration = Duration::from_secs(20);
const CHECKS: [&str; 5] = [
    "active",
    "not_crash_looping",
    "config_valid",
    "ports_owned",
    "api",
];

/// A sandbox whose tunnels keep their configs in `<state dir>/etc`.
struct Node {
    sandbox: Sandbox,
    etc: PathBuf,
}

impl Node {
    fn boot(name: &str) -> Node {
        let sandbox = Sandbox::boot(name);
        let etc = sandbox.state_dir().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        Node { sandbox, etc }
    }

    /// Writes `config` to `path` and a unit running V2Ray on it, plus `extra` [Service] lines.
    fn unit(&self, id: &str, path: &Path, extra: &str) {
        let body = tunnel_unit(path) + extra;
        self.sandbox.write_unit(&unit(id), &body);
    }

    /// A healthy V2Ray tunnel with its config at `xray-{id}.json`, installed and started.
    fn tunnel(&self, id: &str) -> TunnelPorts {
        let ports = TunnelPorts::free();
        let path = self.etc.join(format!("xray-{id}.json"));
        std::fs::write(&path, tunnel_config(ports)).unwrap();
        self.unit(id, &path, "");
        self.sandbox.systemctl(&["daemon-reload"]);
        self.sandbox.systemctl(&["start", &unit(id)]);
        ports
    }

    fn warden(&self, health: &str) -> Warden {
        let config = format!(
            "[tunnels]\nconfig_dir = \"{}\"\ncore_binary = \"{V2RAY}\"\n\
             [health]\ninterval = \"300ms\"\n{health}\n[sampler]\ninterval = \"1s\"\n",
            self.etc.display()
        );
        let warden = Warden::start(&self.sandbox, &config);
        warden.wait_ready();
        warden
    }

    /// (MainPID, NRestarts) as systemd tells them.
    fn pid_and_restarts(&self, id: &str) -> (String, String) {
        let p = self.sandbox.show(&unit(id), &["MainPID", "NRestarts"]);
        (p["MainPID"].clone(), p["NRestarts"].clone())
    }
}

fn unit(id: &str) -> String {
    format!("xray-tunnel-{id}.service")
}

fn check(scrape: &Scrape, tunnel: &str, check: &str) -> Option<f64> {
    scrape.value(
        "xray_tunnel_health_check",
        &[("tunnel", tunnel), ("check", check)],
    )
}

fn all_pass(scrape: &Scrape, tunnel: &str) -> bool {
    CHECKS.iter().all(|c| check(scrape, tunnel, c) == Some(1.0))
}

fn orphaned(scrape: &Scrape, tunnel: &str, kind: &str) -> bool {
    scrape.value(
        "xray_tunnel_orphaned",
        &[("tunnel", tunnel), ("kind", kind)],
    ) == Some(1.0)
}

fn orphan_series(scrape: &Scrape) -> Vec<String> {
    let lines = scrape.0.lines();
    lines
        .filter(|l| l.starts_with("xray_tunnel_orphaned{"))
        .map(str::to_owned)
        .collect()
}

fn health_collector_ok(scrape: &Scrape) -> Option<f64> {
    scrape.value("xray_warden_collector_success", &[("collector", "health")])
}

/// A process started inside the sandbox by hand (nsenter forks it into the PID namespace);
/// stopped by its host PID on drop.
struct Manual {
    nsenter: Child,
    host_pid: u32,
    /// Its PID inside the sandbox, the one the warden reports.
    pid: u32,
}

impl Manual {
    fn start(sandbox: &Sandbox, program: &str, args: &[&str]) -> Manual {
        let nsenter = sandbox
            .command(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let host_pid = forked_child(nsenter.id());
        let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
        let ns = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .unwrap();
        let pid = ns.split_whitespace().last().unwrap().parse().unwrap();
        Manual {
            nsenter,
            host_pid,
            pid,
        }
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.nsenter.try_wait() {
            let pid = self.host_pid.to_string();
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", &pid])
                .status();
            let _ = self.nsenter.wait();
        }
    }
}

impl Drop for Manual {
    fn drop(&mut self) {
        self.kill();
    }
}

fn forked_child(parent: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let path = format!("/proc/{parent}/task/{parent}/children");
        let children = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "nsenter {parent} never forked");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_log(warden: &Warden, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !warden.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "log never said {needle:?}:\n{}",
            warden.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Perl (perl-base is essential) holding 127.0.0.1:`port` until killed.
fn hold_port(sandbox: &Sandbox, port: u16) -> Manual {
    let script = "use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', \
                  LocalPort => $ARGV[0], Listen => 5, ReuseAddr => 1) or die $!; sleep 3600";
    let holder = Manual::start(sandbox, "/usr/bin/perl", &["-e", script, &port.to_string()]);
    wait_listening(port);
    holder
}

#[test]
fn a_healthy_tunnel_passes_and_a_taken_port_is_named() {
    let node = Node::boot("health-ports");
    node.tunnel("good");
    let clash_ports = TunnelPorts::free();
    let clash_config = node.etc.join("xray-clash.json");
    std::fs::write(&clash_config, tunnel_config(clash_ports)).unwrap();
    node.unit("clash", &clash_config, "");
    node.sandbox.systemctl(&["daemon-reload"]);
    // The port is taken BEFORE the tunnel starts: V2Ray cannot bind it and keeps restarting.
    let holder = hold_port(&node.sandbox, clash_ports.vless);
    node.sandbox
        .systemctl(&["start", "--no-block", &unit("clash")]);
    let before = node.pid_and_restarts("good");

    let warden = node.warden("");
    let scrape = warden.wait_for("good healthy, clash's port taken", WAIT, |s| {
        all_pass(s, "good") && check(s, "clash", "ports_owned") == Some(0.0)
    });
    assert_eq!(
        check(&scrape, "clash", "config_valid"),
        Some(1.0),
        "{}",
        scrape.0
    );
    assert_eq!(health_collector_ok(&scrape), Some(1.0));
    let conflict = format!(
        "port {} held by pid {} (perl)",
        clash_ports.vless, holder.pid
    );
    wait_log(&warden, &conflict);
    assert!(
        orphan_series(&scrape).is_empty(),
        "{:?}",
        orphan_series(&scrape)
    );

    // Freed, the tunnel comes up on its own (RestartSec=1) and owns every port.
    holder.stop();
    warden.wait_for("clash healthy once its port is free", WAIT, |s| {
        all_pass(s, "clash")
    });
    let scrape = warden.scrape();
    assert!(all_pass(&scrape, "good"), "{}", scrape.0);
    assert_eq!(
        node.pid_and_restarts("good"),
        before,
        "the healthy tunnel was never restarted"
    );
    assert!(warden.stop().success());
}

#[test]
fn units_configs_and_processes_without_their_other_half_are_orphans() {
    let node = Node::boot("health-orphans");
    node.tunnel("good");
    // `custom` runs a config that is not named xray-{id}.json: found through its ExecStart.
    let custom_ports = TunnelPorts::free();
    let custom_config = node.etc.join("custom.json");
    std::fs::write(&custom_config, tunnel_config(custom_ports)).unwrap();
    node.unit("custom", &custom_config, "");
    // `noconf` names a config that does not exist; it fails at once and stays failed.
    node.unit("noconf", &node.etc.join("xray-noconf.json"), "Restart=no\n");
    node.sandbox.systemctl(&["daemon-reload"]);
    node.sandbox.systemctl(&["start", &unit("custom")]);
    node.sandbox
        .systemctl(&["start", "--no-block", &unit("noconf")]);
    std::fs::write(
        node.etc.join("xray-lonely.json"),
        tunnel_config(TunnelPorts::free()),
    )
    .unwrap();
    let stray_config = node.sandbox.state_dir().join("stray.json");
    std::fs::write(&stray_config, tunnel_config(TunnelPorts::free())).unwrap();
    let stray = Manual::start(
        &node.sandbox,
        V2RAY,
        &["-config", stray_config.to_str().unwrap()],
    );
    let inventory = node.sandbox.state_dir().join("inventory.json");
    std::fs::write(&inventory, r#"{"tunnels": ["good", "noconf"]}"#).unwrap();
    let before = [
        node.pid_and_restarts("good"),
        node.pid_and_restarts("custom"),
    ];

    let warden = node.warden(&format!("inventory = \"file://{}\"", inventory.display()));
    let stray_name = format!("pid-{}", stray.pid);
    let scrape = warden.wait_for("every kind of orphan", WAIT, |s| {
        orphaned(s, "noconf", "unit_without_config")
            && orphaned(s, "lonely", "config_without_unit")
            && orphaned(s, &stray_name, "stray_process")
            && orphaned(s, "custom", "not_in_inventory")
            && all_pass(s, "good")
            && all_pass(s, "custom")
    });
    // Nothing else: not the healthy tunnels, not the warden's own `v2ray -test` runs.
    assert_eq!(
        orphan_series(&scrape).len(),
        4,
        "{:?}",
        orphan_series(&scrape)
    );
    let since = |s: &Scrape| {
        s.value(
            "xray_tunnel_orphaned_since_seconds",
            &[("tunnel", &stray_name)],
        )
    };
    let first_seen = since(&scrape).unwrap();
    wait_log(&warden, "orphan found");
    assert!(warden.log().contains(&stray_name), "{}", warden.log());

    // A broken inventory orphans nobody (and the collector says it failed); fixed, it counts.
    std::fs::write(&inventory, "{\"tunnels\": [").unwrap();
    let scrape = warden.wait_for("no inventory orphans", WAIT, |s| {
        !orphaned(s, "custom", "not_in_inventory") && health_collector_ok(s) == Some(0.0)
    });
    assert_eq!(
        orphan_series(&scrape).len(),
        3,
        "{:?}",
        orphan_series(&scrape)
    );
    std::fs::write(&inventory, r#"{"tunnels": ["good", "noconf", "custom"]}"#).unwrap();
    let scrape = warden.wait_for("inventory read again", WAIT, |s| {
        health_collector_ok(s) == Some(1.0)
    });
    assert!(!orphaned(&scrape, "custom", "not_in_inventory"));
    assert_eq!(
        since(&scrape),
        Some(first_seen),
        "since is the first sighting"
    );

    // The stray stopped (by its PID), its orphan goes.
    stray.stop();
    warden.wait_for("stray gone", WAIT, |s| {
        !orphaned(s, &stray_name, "stray_process")
    });
    let after = [
        node.pid_and_restarts("good"),
        node.pid_and_restarts("custom"),
    ];
    assert_eq!(after, before, "healthy tunnels never restarted");
    assert!(warden.stop().success());
}

#[test]
fn crash_loops_and_long_failures_are_seen() {
    let node = Node::boot("health-crash");
    node.tunnel("good");
    // The core's own test rejects this config, so V2Ray exits at once.
    let rejected = r#"{"inbounds": [{"port": 1, "protocol": "no-such-protocol"}]}"#;
    for id in ["looping", "broken"] {
        std::fs::write(node.etc.join(format!("xray-{id}.json")), rejected).unwrap();
    }
    node.unit(
        "looping",
        &node.etc.join("xray-looping.json"),
        "RestartSec=300ms\n",
    );
    node.unit("broken", &node.etc.join("xray-broken.json"), "Restart=no\n");
    node.sandbox.systemctl(&["daemon-reload"]);
    let before = node.pid_and_restarts("good");

    let warden =
        node.warden("crash_window = \"1m\"\ncrash_threshold = 3\nfailed_threshold = \"1s\"");
    // Started under the warden's eyes: it counts the restarts it sees.
    node.sandbox
        .systemctl(&["start", "--no-block", &unit("looping")]);
    node.sandbox
        .systemctl(&["start", "--no-block", &unit("broken")]);
    let scrape = warden.wait_for("a crash loop and a long failure", WAIT, |s| {
        check(s, "looping", "not_crash_looping") == Some(0.0)
            && orphaned(s, "broken", "failed_too_long")
    });
    for id in ["looping", "broken"] {
        assert_eq!(
            check(&scrape, id, "config_valid"),
            Some(0.0),
            "{id}\n{}",
            scrape.0
        );
        assert_eq!(check(&scrape, id, "active"), Some(0.0), "{id}");
    }
    assert_eq!(
        check(&scrape, "broken", "not_crash_looping"),
        Some(1.0),
        "one failure is no loop"
    );
    let restarts: u32 = node.sandbox.show(&unit("looping"), &["NRestarts"])["NRestarts"]
        .parse()
        .unwrap();
    assert!(restarts >= 3, "systemd counted {restarts} restarts");
    assert!(all_pass(&scrape, "good"), "{}", scrape.0);
    assert!(
        !orphaned(&scrape, "looping", "failed_too_long"),
        "a crash loop is not failed"
    );
    let state = node.sandbox.show(&unit("broken"), &["ActiveState"])["ActiveState"].clone();
    assert_eq!(state, "failed");
    assert_eq!(node.pid_and_restarts("good"), before);
    assert!(warden.stop().success());
}

/// Set to the config dir when this test binary runs [`cleanup_inside_the_sandbox`] inside a
/// sandbox.
const HELPER_ENV: &str = "HEALTH_PROOF_CLEANUP_ETC";
/// Prefix of the helper's output lines, one JSON cleanup result each.
const RESULT: &str = "CLEANUP-RESULT ";

#[test]
fn orphans_are_cleaned_up_and_nothing_else_is() {
    let node = Node::boot("health-cleanup");
    node.tunnel("good");
    node.unit("noconf", &node.etc.join("xray-noconf.json"), "Restart=no\n");
    node.sandbox.systemctl(&["daemon-reload"]);
    node.sandbox
        .systemctl(&["start", "--no-block", &unit("noconf")]);
    let lonely = node.etc.join("xray-lonely.json");
    std::fs::write(&lonely, tunnel_config(TunnelPorts::free())).unwrap();
    let stray_config = node.sandbox.state_dir().join("stray.json");
    std::fs::write(&stray_config, tunnel_config(TunnelPorts::free())).unwrap();
    let mut stray = Manual::start(
        &node.sandbox,
        V2RAY,
        &["-config", stray_config.to_str().unwrap()],
    );
    let good_config = node.etc.join("xray-good.json");
    let before = node.pid_and_restarts("good");

    // The cleanup runs in the sandbox's namespaces, where systemd's PIDs are procfs's PIDs.
    let out = node
        .sandbox
        .command(std::env::current_exe().unwrap().to_str().unwrap())
        .args([
            "--exact",
            "cleanup_inside_the_sandbox",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_ENV, &node.etc)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(RESULT))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let outcome = |action: &str, key: &str, value: serde_json::Value| {
        let r = results
            .iter()
            .find(|r| r["action"] == action && r[key] == value);
        r.unwrap_or_else(|| panic!("no {action} {value} in {results:#?}"))["outcome"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(outcome("remove_tunnel", "tunnel", "noconf".into()), "done");
    assert_eq!(outcome("remove_config", "tunnel", "lonely".into()), "done");
    assert_eq!(outcome("stop_process", "pid", stray.pid.into()), "done");
    // The helper also asked for the healthy tunnel to go, every way: all refused.
    assert_eq!(outcome("remove_tunnel", "tunnel", "good".into()), "skipped");
    assert_eq!(outcome("remove_config", "tunnel", "good".into()), "skipped");
    let main_pid: u32 = before.0.parse().unwrap();
    assert_eq!(outcome("stop_process", "pid", main_pid.into()), "skipped");

    // What systemd and the file system say afterwards.
    assert!(
        !node
            .sandbox
            .state_dir()
            .join("units")
            .join(unit("noconf"))
            .exists()
    );
    assert!(!lonely.exists());
    // V2Ray exits 0 on SIGTERM; nsenter, its parent, reaps it and ends.
    stray.nsenter.wait().unwrap();
    assert!(
        node.sandbox
            .read_file(&format!("/proc/{}/stat", stray.pid))
            .is_err()
    );
    assert!(good_config.exists());
    assert_eq!(
        node.pid_and_restarts("good"),
        before,
        "the healthy tunnel was never touched"
    );
    assert_eq!(
        node.sandbox.show(&unit("good"), &["ActiveState"])["ActiveState"],
        "active"
    );
}

/// Not a test on its own: the cleanup half of [`orphans_are_cleaned_up_and_nothing_else_is`],
/// which runs this binary inside the sandbox with [`HELPER_ENV`] set. The real watcher fills the
/// snapshot from the sandbox's systemd, one real health pass finds the orphans, and the cleaner
/// carries out their plan plus three requests against the healthy tunnel.
#[test]
#[ignore = "run inside a sandbox by orphans_are_cleaned_up_and_nothing_else_is"]
fn cleanup_inside_the_sandbox() {
    let Ok(etc) = std::env::var(HELPER_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for result in runtime.block_on(helper::clean(PathBuf::from(etc))) {
        println!("{RESULT}{}", serde_json::to_string(&result).unwrap());
    }
}

mod helper {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant, SystemTime};

    use tokio_util::sync::CancellationToken;
    use xray_warden::config::Config;
    use xray_warden::domain::{OrphanKind, ProcessKey, TunnelId};
    use xray_warden::health::orphans::{Found, OrphanKey};
    use xray_warden::health::scan::ProcScan;
    use xray_warden::health::{
        Cleaner, CleanupAction, CleanupResult, HealthTask, Ledger, RemoveTunnel, Settings,
        plan_cleanup,
    };
    use xray_warden::state::SharedState;
    use xray_warden::systemd::watcher;

    /// Deletes a unit the simple way: stop, remove the file, reload.
    struct Systemctl;

    impl RemoveTunnel for Systemctl {
        type Error = String;

        async fn remove_tunnel(&self, id: &TunnelId) -> Result<(), String> {
            let unit = id.unit_name();
            systemctl(&["stop", &unit]).await?;
            let file = Path::new("/etc/systemd/system").join(&unit);
            std::fs::remove_file(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            systemctl(&["daemon-reload"]).await
        }
    }

    async fn systemctl(args: &[&str]) -> Result<(), String> {
        let out = tokio::process::Command::new("systemctl")
            .args(args)
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    pub async fn clean(etc: PathBuf) -> Vec<CleanupResult> {
        let config = Config::default();
        let state = SharedState::default();
        let shutdown = CancellationToken::new();
        let (client_tx, _client_rx) = tokio::sync::watch::channel(None);
        let watching = watcher::run(
            config.systemd.clone(),
            state.clone(),
            client_tx,
            shutdown.clone(),
        );
        let watcher = tokio::spawn(watching);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(state.read().listed && state.read().systemd_up) {
            assert!(
                Instant::now() < deadline,
                "the watcher never listed the units"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut settings = Settings::from_config(&config);
        settings.config_dir = etc;
        settings.core_binary = "/usr/bin/v2ray".into();
        settings.health.failed_threshold = Duration::from_secs(3600);
        let ledger = Ledger::default();
        let mut task = HealthTask::new(settings.clone(), state.clone(), ledger.clone());
        let report = task.pass().await.expect("listed");
        let kinds: Vec<OrphanKind> = report.orphans.iter().map(|o| o.kind).collect();
        assert_eq!(kinds.len(), 3, "{:#?}", report.orphans);

        let plan = plan_cleanup(&report.orphans);
        let cleaner = Cleaner::new(settings.clone(), state.clone(), ledger, Systemctl);
        let mut results = cleaner.execute(&plan, false).await;
        results.extend(against_the_healthy_tunnel(&settings, &state).await);
        shutdown.cancel();
        let _ = watcher.await;
        results
    }

    /// Removal of `good` for every reason, its config, and its main process (with a ledger that
    /// claims it is a stray): each must be refused at the re-check.
    async fn against_the_healthy_tunnel(
        settings: &Settings,
        state: &SharedState,
    ) -> Vec<CleanupResult> {
        let good = TunnelId::new("good").unwrap();
        let main_pid = state.read().tunnels[&good].status.main_pid;
        let start_ticks = ProcScan::new("/proc")
            .start_ticks(main_pid)
            .expect("good runs");
        let forged = Ledger::default();
        let seen = SystemTime::now();
        let key = OrphanKey::Process(ProcessKey {
            pid: main_pid,
            start_ticks,
        });
        forged.stamp(
            vec![Found {
                key,
                detail: String::new(),
            }],
            seen,
        );
        let plan = [
            CleanupAction::RemoveTunnel {
                tunnel: good.clone(),
                reasons: vec![
                    OrphanKind::UnitWithoutConfig,
                    OrphanKind::NotInInventory,
                    OrphanKind::FailedTooLong,
                ],
            },
            CleanupAction::RemoveConfig { tunnel: good },
            CleanupAction::StopProcess {
                pid: main_pid,
                since: seen,
            },
        ];
        let cleaner = Cleaner::new(settings.clone(), state.clone(), forged, Systemctl);
        cleaner.execute(&plan, false).await
    }
}

//! A whole pass over fixture trees (procfs, cgroups, config dir), and the `[health]` config.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::config::{Config, Overrides};
use crate::domain::{ActiveState, Check, GuardLimits, OrphanKind, ProcessKey, UnitStatus};
use crate::domain::{UnknownConfig, UnknownReason};
use crate::state::{COLLECTOR_HEALTH, Tunnel};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/health")
}

/// A copy of the fixture trees under target/, plus what needs absolute paths of the copy:
/// pid 800, a v2ray outside every unit running `<copy>/etc/xray-ghost.json`.
fn tree(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/unit-scratch")
        .join(name);
    let _ = std::fs::remove_dir_all(&root);
    copy_tree(&fixtures(), &root);
    let ghost = root.join("proc/800");
    std::fs::create_dir_all(&ghost).unwrap();
    std::fs::write(ghost.join("comm"), "v2ray\n").unwrap();
    std::fs::write(ghost.join("cgroup"), "0::/\n").unwrap();
    let stat = "800 (v2ray) S 1 800 800 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 7 0 9600 \
                734003200 2560 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 \
                0 0 0 0 0 0 0\n";
    std::fs::write(ghost.join("stat"), stat).unwrap();
    let config = root.join("etc/xray-ghost.json");
    let cmdline = format!("/usr/bin/v2ray\0-config\0{}\0", config.display());
    std::fs::write(ghost.join("cmdline"), cmdline).unwrap();
    std::fs::write(&config, "{}").unwrap();
    root
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn settings(root: &Path) -> Settings {
    Settings {
        health: Config::default().health,
        config_dir: root.join("etc"),
        // Accepts every config: `/bin/true run -test -config F` exits 0.
        core_binary: "/bin/true".into(),
        config_test: verdicts::ConfigTester::Local("/bin/true".into()),
        unit_dir: root.join("units"),
        proc_root: root.join("proc"),
        cgroup_root: root.join("cgroup"),
        api_timeout: Duration::from_millis(200),
        guard: GuardLimits::default(),
    }
}

fn id(s: &str) -> TunnelId {
    TunnelId::new(s).unwrap()
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// Tunnel a: active, runs etc/xray-a.json, its cgroup holds pid 100. Tunnel b: failed an hour
/// ago, runs etc/xray-b.json, which is missing. Tunnel dir: active, runs `-confdir etc`.
fn state(root: &Path) -> SharedState {
    let state = SharedState::default();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let etc = root.join("etc").display().to_string();
    state.update(|s| {
        s.listed = true;
        s.systemd_up = true;
        let a = UnitStatus {
            active_state: Some(ActiveState::Active),
            sub_state: "running".into(),
            control_group: "/system.slice/xray-tunnel-a.service".into(),
            exec_start: argv(&["/usr/bin/v2ray", "-config", &format!("{etc}/xray-a.json")]),
            ..UnitStatus::default()
        };
        let b = UnitStatus {
            active_state: Some(ActiveState::Failed),
            result: "exit-code".into(),
            state_change_usec: hour_ago.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64,
            exec_start: argv(&["/usr/bin/v2ray", "-config", &format!("{etc}/xray-b.json")]),
            ..UnitStatus::default()
        };
        let dir = UnitStatus {
            active_state: Some(ActiveState::Active),
            exec_start: argv(&["/usr/bin/xray", "run", "-confdir", &etc]),
            ..UnitStatus::default()
        };
        for (name, status) in [("a", a), ("b", b), ("dir", dir)] {
            s.tunnels
                .insert(id(name), Tunnel::new(id(name).unit_name(), status));
        }
    });
    state
}

fn check<'a>(report: &'a PassReport, tunnel: &str, name: &str) -> &'a Check {
    let list = &report.checks[&id(tunnel)];
    list.iter().find(|c| c.name == name).unwrap()
}

#[tokio::test]
async fn a_pass_over_fixtures_checks_every_tunnel_and_finds_every_orphan() {
    let root = tree("health-pass");
    let state = state(&root);
    let mut task = HealthTask::new(settings(&root), state.clone(), Ledger::default());
    let report = task.pass().await.unwrap();

    let names: Vec<&str> = report.checks[&id("a")].iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "active",
            "not_crash_looping",
            "config_valid",
            "ports_owned",
            "api"
        ]
    );
    let ok = |t, n| check(&report, t, n).ok;
    assert!(ok("a", "active") && ok("a", "not_crash_looping") && ok("a", "config_valid"));
    // 443 is pid 100's (v4 and v6); 8443 is held by the xray of a login session; 80 is
    // untagged.
    let ports = check(&report, "a", "ports_owned");
    assert_eq!(
        (ports.ok, ports.detail.as_str()),
        (false, "port 8443 held by pid 200 (xray)")
    );
    assert_eq!(check(&report, "a", "api").detail, "no API configured");
    assert!(check(&report, "a", "api").ok);

    assert!(!ok("b", "active") && !ok("b", "config_valid") && !ok("b", "ports_owned"));
    assert!(
        check(&report, "b", "config_valid")
            .detail
            .ends_with("xray-b.json is missing")
    );
    assert_eq!(check(&report, "b", "ports_owned").detail, "not running");

    // A config directory: nothing to test, nothing missing, and said so.
    for name in ["config_valid", "ports_owned", "api"] {
        assert!(ok("dir", name), "{name}: {:?}", check(&report, "dir", name));
    }
    assert_eq!(
        check(&report, "dir", "config_valid").detail,
        "unknown: runs a config directory (-confdir); not tested"
    );
    let unknown = [UnknownConfig {
        tunnel: id("dir"),
        reason: UnknownReason::ConfigDir,
    }];
    assert_eq!(report.config_unknown, unknown);

    let orphans: Vec<(OrphanKind, &str, Option<u32>)> = report
        .orphans
        .iter()
        .map(|o| (o.kind, o.tunnel.as_str(), o.pid))
        .collect();
    assert_eq!(
        orphans,
        [
            (OrphanKind::UnitWithoutConfig, "b", None),
            // xray-ghost.json is run by pid 800, so it is no config without unit.
            (OrphanKind::ConfigWithoutUnit, "lonely", None),
            // Pid 800 runs ghost's config outside every unit. Not strays: pid 200 (a login
            // session), 400 (the warden's unit), 100 and 500 (tunnel units).
            (OrphanKind::StrayProcess, "ghost", Some(800)),
            (OrphanKind::FailedTooLong, "b", None),
        ]
    );
    assert!(report.success);
    // Two tunnels (b, lonely) of the four known (three units and lonely's config) look
    // orphaned, and the stray (ghost) counts only toward the per-pass cap: exactly half, which
    // the default guard allows.
    assert_eq!(report.guard, None);

    let snapshot = state.read();
    assert_eq!(snapshot.tunnels[&id("a")].health, *report.checks[&id("a")]);
    assert_eq!(snapshot.orphans, report.orphans);
    assert_eq!(snapshot.config_unknown, unknown);
    assert_eq!(snapshot.orphan_guard, None);
    assert!(snapshot.collectors[COLLECTOR_HEALTH].success);
}

#[tokio::test]
async fn the_guard_follows_its_limits() {
    let root = tree("health-guard");
    let state = state(&root);
    let mut settings = settings(&root);
    settings.guard = GuardLimits {
        max_fraction: 0.25,
        max_per_pass: 3,
    };
    let mut task = HealthTask::new(settings.clone(), state.clone(), Ledger::default());
    // Two of four known tunnels is more than a quarter: tripped, and published.
    let trip = task.pass().await.unwrap().guard.expect("tripped");
    assert_eq!((trip.orphaned, trip.tunnels, trip.acted_on), (2, 4, 3));
    assert!(trip.over_fraction && !trip.over_per_pass);
    assert_eq!(state.read().orphan_guard, Some(trip));
    // Three things to act on (b, lonely, ghost) with a cap of two: tripped by the cap alone.
    settings.guard = GuardLimits {
        max_fraction: 1.0,
        max_per_pass: 2,
    };
    let mut task = HealthTask::new(settings.clone(), state.clone(), Ledger::default());
    let trip = task.pass().await.unwrap().guard.expect("tripped");
    assert!(!trip.over_fraction && trip.over_per_pass);
    settings.guard.max_per_pass = 3;
    let mut task = HealthTask::new(settings, state.clone(), Ledger::default());
    assert_eq!(task.pass().await.unwrap().guard, None);
    assert_eq!(state.read().orphan_guard, None);
}

/// The fixture tree named `name`, its state, and a task that calls two automatic restarts a
/// crash loop.
fn crash_task(name: &str) -> (SharedState, HealthTask) {
    let root = tree(name);
    let state = state(&root);
    let mut settings = settings(&root);
    settings.health.crash_threshold = 2;
    let task = HealthTask::new(settings, state.clone(), Ledger::default());
    (state, task)
}

#[tokio::test]
async fn orphans_keep_their_first_sighting_and_restarts_trip_the_crash_check() {
    let (state, mut task) = crash_task("health-crash-check");
    let first = task.pass().await.unwrap();
    state.update(|s| s.tunnels.get_mut(&id("a")).unwrap().restarts.auto += 2);
    let second = task.pass().await.unwrap();
    let since = |r: &PassReport| r.orphans.iter().map(|o| o.since).collect::<Vec<_>>();
    assert_eq!(since(&first), since(&second));
    let crash = check(&second, "a", "not_crash_looping");
    assert_eq!(
        (crash.ok, crash.detail.as_str()),
        (false, "2 automatic restarts within 10m")
    );
}

/// A tunnel that leaves the snapshot is forgotten, even when another one arrives in the same
/// pass (the count of tunnels unchanged): back later, its restarts are counted afresh.
#[tokio::test]
async fn a_tunnel_gone_and_back_starts_a_new_restart_history() {
    let (state, mut task) = crash_task("health-forget");
    task.pass().await.unwrap();
    state.update(|s| s.tunnels.get_mut(&id("a")).unwrap().restarts.auto += 2);
    let crashing = task.pass().await.unwrap();
    assert!(!check(&crashing, "a", "not_crash_looping").ok);
    // a leaves as z arrives: three tunnels before and after.
    let a = state.update(|s| {
        let a = s.tunnels.remove(&id("a")).unwrap();
        let z = Tunnel::new(id("z").unit_name(), UnitStatus::default());
        s.tunnels.insert(id("z"), z);
        a
    });
    let without = task.pass().await.unwrap();
    assert!(!without.checks.contains_key(&id("a")));
    state.update(|s| {
        s.tunnels.remove(&id("z"));
        s.tunnels.insert(id("a"), a);
    });
    let back = task.pass().await.unwrap();
    let crash = check(&back, "a", "not_crash_looping");
    assert!(crash.ok, "{crash:?}");
}

#[tokio::test]
async fn nothing_is_judged_before_the_first_listing() {
    let state = SharedState::default();
    let mut task = HealthTask::new(settings(&fixtures()), state.clone(), Ledger::default());
    assert!(task.pass().await.is_none());
    assert!(!state.read().collectors.contains_key(COLLECTOR_HEALTH));
}

#[tokio::test]
async fn an_unreadable_inventory_orphans_nobody_and_fails_the_collector() {
    let root = tree("health-no-inventory");
    let state = state(&root);
    let mut settings = settings(&root);
    settings.health.inventory = Some(fixtures().join("no-such-inventory.json"));
    let mut task = HealthTask::new(settings, state, Ledger::default());
    let report = task.pass().await.unwrap();
    assert!(
        !report
            .orphans
            .iter()
            .any(|o| o.kind == OrphanKind::NotInInventory)
    );
    assert!(!report.success);
}

#[test]
fn the_ledger_knows_a_stray_by_pid_and_first_sighting() {
    let ledger = Ledger::default();
    let t0 = SystemTime::now();
    let key = ProcessKey {
        pid: 42,
        start_ticks: 7,
    };
    let found = orphans::Found {
        key: OrphanKey::Stray(id("ghost"), key),
        detail: String::new(),
    };
    ledger.stamp(vec![found], t0);
    assert_eq!(ledger.stray_start(42, t0), Some(7));
    assert_eq!(ledger.stray_start(42, t0 + Duration::from_secs(1)), None);
    assert_eq!(ledger.stray_start(43, t0), None);
}

#[test]
fn health_config_keys_are_validated() {
    let config = Config::from_toml(
        "[health]\ninterval = \"300ms\"\ncrash_threshold = 2\ninventory = \"file:///etc/inv.json\"",
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.health.interval, Duration::from_millis(300));
    assert_eq!(config.health.crash_threshold, 2);
    assert_eq!(
        config.health.inventory,
        Some(PathBuf::from("/etc/inv.json"))
    );
    assert_eq!(
        Settings::from_config(&config).proc_root,
        PathBuf::from("/proc")
    );

    let text = "[health]\ninterval = \"0s\"\ncrash_window = 5\ncrash_threshold = 0\n\
                failed_threshold = \"soon\"\ninventory = \"https://x\"\ncolour = 1";
    let err = Config::from_toml(text, &Overrides::default()).unwrap_err();
    let all = err.problems.join("\n");
    for key in [
        "health.interval",
        "health.crash_window",
        "health.crash_threshold",
        "health.failed_threshold",
        "health.inventory",
        "health.colour",
    ] {
        assert!(all.contains(key), "missing {key} in:\n{all}");
    }
    let relative = Config::from_toml(
        "[health]\ninventory = \"file://inv.json\"",
        &Overrides::default(),
    );
    assert!(relative.is_err());
}

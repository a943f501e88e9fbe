//! A whole pass over fixture trees (procfs, cgroups, config dir), and the `[health]` config.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::gather::config_file_id;
use super::*;
use crate::config::{Config, Overrides};
use crate::domain::{ActiveState, Check, OrphanKind, ProcessKey, UnitStatus};
use crate::state::{COLLECTOR_HEALTH, Tunnel};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/health")
}

fn settings() -> Settings {
    let root = fixtures();
    Settings {
        health: Config::default().health,
        config_dir: root.join("etc"),
        // Accepts every config: `/bin/true run -test -config F` exits 0.
        core_binary: "/bin/true".into(),
        unit_dir: root.join("units"),
        proc_root: root.join("proc"),
        cgroup_root: root.join("cgroup"),
        api_timeout: Duration::from_millis(200),
    }
}

fn id(s: &str) -> TunnelId {
    TunnelId::new(s).unwrap()
}

/// Tunnel a: active, runs etc/xray-a.json, its cgroup holds pid 100. Tunnel b: failed an hour
/// ago, no config file.
fn state() -> SharedState {
    let state = SharedState::default();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let config_a = fixtures().join("etc/xray-a.json");
    state.update(|s| {
        s.listed = true;
        s.systemd_up = true;
        let a = UnitStatus {
            active_state: Some(ActiveState::Active),
            sub_state: "running".into(),
            control_group: "/system.slice/xray-tunnel-a.service".into(),
            exec_start: vec![
                "/usr/bin/v2ray".into(),
                "-config".into(),
                config_a.display().to_string(),
            ],
            ..UnitStatus::default()
        };
        let b = UnitStatus {
            active_state: Some(ActiveState::Failed),
            result: "exit-code".into(),
            state_change_usec: hour_ago.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64,
            ..UnitStatus::default()
        };
        s.tunnels
            .insert(id("a"), Tunnel::new(id("a").unit_name(), a));
        s.tunnels
            .insert(id("b"), Tunnel::new(id("b").unit_name(), b));
    });
    state
}

fn check<'a>(report: &'a PassReport, tunnel: &str, name: &str) -> &'a Check {
    let list = &report.checks[&id(tunnel)];
    list.iter().find(|c| c.name == name).unwrap()
}

#[tokio::test]
async fn a_pass_over_fixtures_checks_every_tunnel_and_finds_every_orphan() {
    let state = state();
    let mut task = HealthTask::new(settings(), state.clone(), Ledger::default());
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
    // 443 is pid 100's (v4 and v6); 8443 is held by the stray xray; 80 is untagged.
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

    let orphans: Vec<(OrphanKind, &str)> = report
        .orphans
        .iter()
        .map(|o| (o.kind, o.tunnel.as_str()))
        .collect();
    assert_eq!(
        orphans,
        [
            (OrphanKind::UnitWithoutConfig, "b"),
            (OrphanKind::ConfigWithoutUnit, "lonely"),
            (OrphanKind::StrayProcess, "pid-200"),
            // A child of pid 999, not of this test: a stray here.
            (OrphanKind::StrayProcess, "pid-400"),
            (OrphanKind::FailedTooLong, "b"),
        ]
    );
    assert!(report.success);

    let snapshot = state.read();
    assert_eq!(snapshot.tunnels[&id("a")].health, report.checks[&id("a")]);
    assert_eq!(snapshot.orphans, report.orphans);
    assert!(snapshot.collectors[COLLECTOR_HEALTH].success);
}

#[tokio::test]
async fn orphans_keep_their_first_sighting_and_restarts_trip_the_crash_check() {
    let state = state();
    let mut settings = settings();
    settings.health.crash_threshold = 2;
    let mut task = HealthTask::new(settings, state.clone(), Ledger::default());
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

#[tokio::test]
async fn nothing_is_judged_before_the_first_listing() {
    let state = SharedState::default();
    let mut task = HealthTask::new(settings(), state.clone(), Ledger::default());
    assert!(task.pass().await.is_none());
    assert!(!state.read().collectors.contains_key(COLLECTOR_HEALTH));
}

#[tokio::test]
async fn an_unreadable_inventory_orphans_nobody_and_fails_the_collector() {
    let state = state();
    let mut settings = settings();
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
        key: OrphanKey::Process(key),
        detail: String::new(),
    };
    ledger.stamp(vec![found], t0);
    assert_eq!(ledger.stray_start(42, t0), Some(7));
    assert_eq!(ledger.stray_start(42, t0 + Duration::from_secs(1)), None);
    assert_eq!(ledger.stray_start(43, t0), None);
}

#[test]
fn config_file_names() {
    assert_eq!(config_file_id("xray-eu_1.json"), Some(id("eu_1")));
    for name in [
        "xray-.json",
        "xray-a.json.bak",
        "v2ray-a.json",
        "xray-a.b.json",
        "other.json",
    ] {
        assert_eq!(config_file_id(name), None, "{name}");
    }
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

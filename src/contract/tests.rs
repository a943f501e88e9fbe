//! Every contract type survives a round trip through its JSON, and the JSON the web app and
//! the CLI depend on is pinned by golden strings.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;
use crate::domain::{
    ActiveState, Check, Orphan, OrphanKind, Resources, RestartCounts, TunnelId, UnitStatus,
};
use crate::health::cleanup::{CleanupAction, CleanupOutcome, CleanupResult};
use crate::lifecycle::{Action, Outcome};
use crate::state::{Snapshot, Tunnel};
use crate::systemd::JobResult;
use crate::usersync::engine;

fn id(s: &str) -> TunnelId {
    TunnelId::new(s).unwrap()
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> String {
    let json = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(&back, value, "{json}");
    json
}

fn running() -> Tunnel {
    let status = UnitStatus {
        description: "Edge".into(),
        load_state: "loaded".into(),
        active_state: Some(ActiveState::Active),
        sub_state: "running".into(),
        unit_file_state: "enabled".into(),
        main_pid: 812,
        n_restarts: 2,
        exec_main_start_usec: 1_700_000_000_500_000,
        result: "success".into(),
        exec_start: [
            "/usr/bin/xray",
            "run",
            "-config",
            "/etc/xray/xray-edge.json",
        ]
        .map(String::from)
        .to_vec(),
        ..UnitStatus::default()
    };
    Tunnel {
        restarts: RestartCounts { auto: 1, manual: 3 },
        resources: Some(Resources {
            cpu_seconds: 12.25,
            cpu_from_cgroup: true,
            rss_bytes: 52_428_800,
            memory_current_bytes: None,
            tasks: 7,
            processes: 1,
            open_fds: 23,
        }),
        health: vec![
            Check {
                name: "active",
                ok: true,
                detail: "active (running)".into(),
            },
            Check {
                name: "ports_owned",
                ok: false,
                detail: "port 443 held by pid 9 (nginx)".into(),
            },
        ],
        ..Tunnel::new("xray-tunnel-edge.service".into(), status)
    }
}

/// Never started, never sampled, never checked: every nullable field is null.
fn fresh() -> Tunnel {
    Tunnel::new("xray-tunnel-fresh.service".into(), UnitStatus::default())
}

fn snapshot() -> Snapshot {
    let orphan = Orphan {
        tunnel: "pid-77".into(),
        kind: OrphanKind::StrayProcess,
        since: UNIX_EPOCH + Duration::from_millis(1_700_000_001_250),
        detail: "xray -config /tmp/x.json".into(),
        pid: Some(77),
    };
    Snapshot {
        tunnels: BTreeMap::from([(id("edge"), running()), (id("fresh"), fresh())]),
        systemd_up: true,
        orphans: vec![orphan],
        ..Snapshot::default()
    }
}

#[test]
fn tunnel_view_json_is_pinned() {
    let json = round_trip(&TunnelView::from_snapshot(&id("edge"), &running()));
    let golden = concat!(
        r#"{"id":"edge","unit":"xray-tunnel-edge.service","description":"Edge","#,
        r#""load_state":"loaded","active_state":"active","sub_state":"running","#,
        r#""unit_file_state":"enabled","up":true,"main_pid":812,"restarts":2,"#,
        r#""observed_restarts":{"auto":1,"manual":3},"result":"success","#,
        r#""started_at":1700000000.5,"config":"/etc/xray/xray-edge.json","#,
        r#""resources":{"cpu_seconds":12.25,"memory_rss_bytes":52428800,"#,
        r#""memory_current_bytes":null,"tasks":7,"processes":1,"open_fds":23},"#,
        r#""health":[{"check":"active","ok":true,"detail":"active (running)"},"#,
        r#"{"check":"ports_owned","ok":false,"detail":"port 443 held by pid 9 (nginx)"}],"#,
        r#""healthy":false}"#
    );
    assert_eq!(json, golden);
    let json = round_trip(&TunnelView::from_snapshot(&id("fresh"), &fresh()));
    let golden = concat!(
        r#"{"id":"fresh","unit":"xray-tunnel-fresh.service","description":"","#,
        r#""load_state":"","active_state":"inactive","sub_state":"","unit_file_state":"","#,
        r#""up":false,"main_pid":0,"restarts":0,"observed_restarts":{"auto":0,"manual":0},"#,
        r#""result":"","started_at":null,"config":null,"resources":null,"health":[],"#,
        r#""healthy":null}"#
    );
    assert_eq!(json, golden);
}

#[test]
fn outcome_json_is_pinned() {
    let outcome = Outcome {
        id: id("edge"),
        unit: "xray-tunnel-edge.service".into(),
        action: Action::Restarted,
        job: JobResult::Done,
    };
    let json = round_trip(&OutcomeView::from(&outcome));
    let golden =
        r#"{"id":"edge","unit":"xray-tunnel-edge.service","action":"restarted","job":"done"}"#;
    assert_eq!(json, golden);
}

#[test]
fn every_action_has_its_lower_case_name() {
    let actions = [
        (Action::Created, "created"),
        (Action::Replaced, "replaced"),
        (Action::Started, "started"),
        (Action::Stopped, "stopped"),
        (Action::Restarted, "restarted"),
        (Action::Deleted, "deleted"),
    ];
    for (action, name) in actions {
        let named = ActionName::from(action);
        assert_eq!(named.as_str(), name);
        assert_eq!(round_trip(&named), format!("\"{name}\""));
    }
}

#[test]
fn bulk_results_hold_outcomes_and_failures() {
    let outcome = Outcome {
        id: id("edge"),
        unit: "xray-tunnel-edge.service".into(),
        action: Action::Deleted,
        job: JobResult::Done,
    };
    let results = BulkResults {
        results: vec![
            BulkItem::done(&outcome),
            BulkItem::failed(&id("stuck"), "job_failed", "the stop job failed"),
        ],
    };
    let golden = concat!(
        r#"{"results":[{"id":"edge","unit":"xray-tunnel-edge.service","action":"deleted","#,
        r#""job":"done"},{"id":"stuck","error":"job_failed","message":"the stop job failed"}]}"#
    );
    assert_eq!(round_trip(&results), golden);
}

#[test]
fn lists_and_reports_round_trip() {
    let snapshot = snapshot();
    round_trip(&TunnelList::from_snapshot(&snapshot));
    let orphans = round_trip(&OrphanList::from_snapshot(&snapshot));
    let golden = concat!(
        r#"{"orphans":[{"tunnel":"pid-77","kind":"stray_process","since":1700000001.25,"#,
        r#""detail":"xray -config /tmp/x.json","pid":77}]}"#
    );
    assert_eq!(orphans, golden);
    let health = round_trip(&HealthReport::from_snapshot(&snapshot));
    let golden = concat!(
        r#"{"systemd_up":true,"tunnels_total":2,"tunnels_unhealthy":1,"orphans":1,"#,
        r#""tunnels":[{"id":"edge","healthy":false,"checks":["#,
        r#"{"check":"active","ok":true,"detail":"active (running)"},"#,
        r#"{"check":"ports_owned","ok":false,"detail":"port 443 held by pid 9 (nginx)"}]},"#,
        r#"{"id":"fresh","healthy":null,"checks":[]}]}"#
    );
    assert_eq!(health, golden);
    let usage = round_trip(&UsageList::from_snapshot(&snapshot));
    let golden = concat!(
        r#"{"usage":[{"tunnelId":"edge","unit":"xray-tunnel-edge.service","active":true,"#,
        r#""cpuSeconds":12.25,"memoryRssBytes":52428800,"tasks":7,"openFds":23},"#,
        r#"{"tunnelId":"fresh","unit":"xray-tunnel-fresh.service","active":false,"#,
        r#""cpuSeconds":0.0,"memoryRssBytes":0,"tasks":0,"openFds":0}]}"#
    );
    assert_eq!(usage, golden);
}

#[test]
fn error_and_logs_round_trip() {
    let error = ErrorBody::new("invalid_id", "tunnel id is empty");
    assert_eq!(
        round_trip(&error),
        r#"{"error":"invalid_id","message":"tunnel id is empty"}"#
    );
    let logs = LogsView {
        id: "edge".into(),
        lines: vec!["first".into(), "second".into()],
    };
    assert_eq!(
        round_trip(&logs),
        r#"{"id":"edge","lines":["first","second"]}"#
    );
}

fn cleanup_results() -> Vec<CleanupResult> {
    vec![
        CleanupResult {
            action: CleanupAction::RemoveTunnel {
                tunnel: id("b"),
                reasons: vec![OrphanKind::UnitWithoutConfig, OrphanKind::FailedTooLong],
            },
            outcome: CleanupOutcome::Skipped("no longer an orphan".into()),
        },
        CleanupResult {
            action: CleanupAction::RemoveConfig { tunnel: id("c") },
            outcome: CleanupOutcome::WouldDo("would remove /etc/xray/xray-c.json".into()),
        },
        CleanupResult {
            action: CleanupAction::StopProcess {
                tunnel: id("d"),
                pid: 9,
                since: UNIX_EPOCH + Duration::from_millis(1500),
            },
            outcome: CleanupOutcome::Failed("no such process".into()),
        },
    ]
}

#[test]
fn cleanup_results_are_flat() {
    let results = CleanupResults::new(true, &cleanup_results());
    let golden = concat!(
        r#"{"dry_run":true,"results":["#,
        r#"{"action":"remove_tunnel","tunnel":"b","reasons":["unit_without_config","failed_too_long"],"#,
        r#""outcome":"skipped","detail":"no longer an orphan"},"#,
        r#"{"action":"remove_config","tunnel":"c","outcome":"would_do","#,
        r#""detail":"would remove /etc/xray/xray-c.json"},"#,
        r#"{"action":"stop_process","tunnel":"d","pid":9,"since":1.5,"outcome":"failed","#,
        r#""detail":"no such process"}]}"#
    );
    assert_eq!(round_trip(&results), golden);
    let done = CleanupVerdict::Done("removed".into());
    assert_eq!((done.as_str(), done.detail()), ("done", "removed"));
}

/// Until the cleanup's own `Serialize` goes away, both must write the same JSON.
#[test]
fn cleanup_items_write_what_cleanup_results_write() {
    for result in cleanup_results() {
        let own = serde_json::to_string(&result).unwrap();
        assert_eq!(
            serde_json::to_string(&CleanupItem::from(&result)).unwrap(),
            own
        );
    }
}

#[test]
fn sync_summary_json_is_pinned() {
    let summary = SyncSummary {
        source_up: true,
        tunnels: vec![
            TunnelSyncSummary {
                tunnel: "edge".into(),
                outcome: engine::Outcome {
                    added: 2,
                    changed: 1,
                    total: 40,
                    ..engine::Outcome::default()
                },
                error: None,
            },
            TunnelSyncSummary {
                tunnel: "dead".into(),
                outcome: engine::Outcome::default(),
                error: Some("no API".into()),
            },
        ],
    };
    let golden = concat!(
        r#"{"source_up":true,"tunnels":["#,
        r#"{"tunnel":"edge","added":2,"removed":0,"changed":1,"failed":0,"total":40,"guard_tripped":false},"#,
        r#"{"tunnel":"dead","added":0,"removed":0,"changed":0,"failed":0,"total":0,"guard_tripped":false,"#,
        r#""error":"no API"}]}"#
    );
    assert_eq!(round_trip(&summary), golden);
}

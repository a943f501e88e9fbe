//! The tables people read, pinned on answers shaped exactly as the daemon sends them.

use super::tables::{Table, render};
use super::{RemoteError, Request, health_request, orphans_request, sync_request, tunnels_request};
use crate::cli::{OrphansAction, TunnelsAction};
use crate::contract::{
    CleanupResults, HealthReport, LogsView, OrphanList, OutcomeView, SyncSummary, TunnelList,
    TunnelView,
};

const TUNNEL: &str = r#"{"id": "edge", "unit": "xray-tunnel-edge.service", "description": "Edge",
  "load_state": "loaded", "active_state": "active", "sub_state": "running",
  "unit_file_state": "enabled", "up": true, "main_pid": 812, "restarts": 2,
  "observed_restarts": {"auto": 1, "manual": 3}, "result": "success", "started_at": 1700000000.5,
  "config": "/etc/xray/xray-edge.json",
  "resources": {"cpu_seconds": 12.0, "memory_rss_bytes": 52428800, "memory_current_bytes": null,
                "tasks": 7, "processes": 1, "open_fds": 23},
  "health": [{"check": "active", "ok": true, "detail": "active (running)"},
             {"check": "ports_owned", "ok": false, "detail": "port 443 held by pid 9 (nginx)"}],
  "healthy": false}"#;

const NEW_TUNNEL: &str = r#"{"id": "fresh", "unit": "xray-tunnel-fresh.service", "description": "",
  "load_state": "loaded", "active_state": "inactive", "sub_state": "dead",
  "unit_file_state": "", "up": false, "main_pid": 0, "restarts": 0,
  "observed_restarts": {"auto": 0, "manual": 0}, "result": "success", "started_at": null,
  "config": null, "resources": null, "health": [], "healthy": null}"#;

fn tunnels_answer() -> String {
    format!(r#"{{"tunnels": [{TUNNEL}, {NEW_TUNNEL}]}}"#)
}

/// The table of `answer`, read as a `T`.
fn table<T: Table>(answer: &str) -> String {
    render::<T>(serde_json::from_str(answer).unwrap()).unwrap()
}

#[test]
fn tunnels_table() {
    let expected = "\
TUNNEL                   STATE        SUB            RESTARTS     CPU s    RSS MiB    FDS  HEALTHY
edge                     active       running               2      12.0       50.0     23  false
fresh                    inactive     dead                  0         -          -      -  -
";
    assert_eq!(table::<TunnelList>(&tunnels_answer()), expected);
}

#[test]
fn tunnel_table() {
    let expected = "\
id               edge
unit             xray-tunnel-edge.service
description      Edge
active_state     active
sub_state        running
unit_file_state  enabled
main_pid         812
restarts         2
result           success
config           /etc/xray/xray-edge.json
cpu_seconds      12.0
memory_rss_bytes 52428800
memory_current_bytes -
tasks            7
processes        1
open_fds         23
  ok   active             active (running)
  FAIL ports_owned        port 443 held by pid 9 (nginx)
";
    assert_eq!(table::<TunnelView>(TUNNEL), expected);
    let expected = "\
id               fresh
unit             xray-tunnel-fresh.service
description      
active_state     inactive
sub_state        dead
unit_file_state  
main_pid         0
restarts         0
result           success
config           -
";
    assert_eq!(table::<TunnelView>(NEW_TUNNEL), expected);
}

#[test]
fn health_table() {
    let answer = r#"{"systemd_up": true, "tunnels_total": 2, "tunnels_unhealthy": 1, "orphans": 1,
      "tunnels": [{"id": "edge", "healthy": false, "checks": [
                     {"check": "active", "ok": true, "detail": "active (running)"},
                     {"check": "api", "ok": false, "detail": "connection refused"}]},
                  {"id": "fresh", "healthy": null, "checks": []}]}"#;
    let expected = "\
systemd: up  tunnels: 2  unhealthy: 1  orphans: 1
edge  healthy: false
  ok   active             active (running)
  FAIL api                connection refused
fresh  healthy: -
";
    assert_eq!(table::<HealthReport>(answer), expected);
    let down = r#"{"systemd_up": false, "tunnels_total": 0, "tunnels_unhealthy": 0, "orphans": 0,
      "tunnels": []}"#;
    assert_eq!(
        table::<HealthReport>(down),
        "systemd: DOWN  tunnels: 0  unhealthy: 0  orphans: 0\n"
    );
}

#[test]
fn orphans_table() {
    let answer = r#"{"orphans": [
      {"tunnel": "noconf", "kind": "unit_without_config", "since": 1700000000.25,
       "detail": "/etc/xray/xray-noconf.json is missing", "pid": null},
      {"tunnel": "pid-77", "kind": "stray_process", "since": 1700000001.0,
       "detail": "xray -config /tmp/x.json", "pid": 77}]}"#;
    let expected = "\
TUNNEL                   KIND                   DETAIL
noconf                   unit_without_config    /etc/xray/xray-noconf.json is missing
pid-77                   stray_process          xray -config /tmp/x.json
";
    assert_eq!(table::<OrphanList>(answer), expected);
}

#[test]
fn outcome_table() {
    let one = r#"{"id": "edge", "unit": "xray-tunnel-edge.service", "action": "restarted",
      "job": "done"}"#;
    assert_eq!(
        table::<OutcomeView>(one),
        "edge                     restarted      \n"
    );
}

#[test]
fn cleanup_table() {
    let answer = r#"{"dry_run": true, "results": [
      {"action": "remove_tunnel", "tunnel": "noconf", "reasons": ["unit_without_config"],
       "outcome": "would_do", "detail": "would remove tunnel noconf"},
      {"action": "remove_config", "tunnel": "nounit", "outcome": "skipped",
       "detail": "a unit exists again"},
      {"action": "stop_process", "tunnel": "g", "pid": 77, "since": 1700000001.0, "outcome": "failed",
       "detail": "no such process"}]}"#;
    let expected = "\
noconf                   remove_tunnel  would remove tunnel noconf
nounit                   remove_config  a unit exists again
                         stop_process   no such process
";
    assert_eq!(table::<CleanupResults>(answer), expected);
}

#[test]
fn logs_table() {
    let answer = r#"{"id": "edge", "lines": ["first", "second"]}"#;
    assert_eq!(table::<LogsView>(answer), "first\nsecond\n");
}

#[test]
fn sync_table() {
    let answer = r#"{"source_up": false, "tunnels": [
      {"tunnel": "edge", "added": 2, "removed": 0, "changed": 1, "failed": 0, "total": 40,
       "guard_tripped": true},
      {"tunnel": "xr", "added": 1, "removed": 0, "changed": 0, "failed": 0, "total": 9,
       "guard_tripped": false, "drift": 1, "kept": 2, "held": 1, "cannot_hold": ["ss1", "ss2"]},
      {"tunnel": "dead", "added": 0, "removed": 0, "changed": 0, "failed": 0, "total": 0,
       "guard_tripped": false, "error": "cannot reach the core's API: refused"}]}"#;
    let expected = "\
source: DOWN (last good set kept, no removals)
tunnel                    added  removed  changed  failed  total  note
edge                          2        0        1       0     40  removal guard tripped (use --force)
xr                            1        0        0       0      9  1 drifted on the core, repaired; 2 credential change(s) not applied, old kept; 1 held (invalid entry); cannot hold users: ss1, ss2
dead                          0        0        0       0      0  error: cannot reach the core's API: refused
";
    assert_eq!(table::<SyncSummary>(answer), expected);
}

#[test]
fn an_answer_of_another_shape_is_an_error() {
    let renamed = TUNNEL.replace("memory_rss_bytes", "rss_bytes");
    let answer = serde_json::from_str(&renamed).unwrap();
    assert!(render::<TunnelView>(answer).is_err());
}

const LISTEN: &str = "127.0.0.1:9550";

fn url(request: &Request) -> String {
    request.url(LISTEN.parse().unwrap()).unwrap().into()
}

fn show(id: &str) -> Request {
    tunnels_request(&TunnelsAction::Show { id: id.into() }).unwrap()
}

#[test]
fn requests_go_to_their_routes() {
    let at = |path: &str| format!("http://{LISTEN}/api/v1/{path}");
    assert_eq!(url(&show("edge")), at("tunnels/edge"));
    let stop = tunnels_request(&TunnelsAction::Stop { id: "edge".into() }).unwrap();
    assert_eq!(
        (stop.method.as_str(), url(&stop)),
        ("POST", at("tunnels/edge/stop"))
    );
    let logs = TunnelsAction::Logs {
        id: "edge".into(),
        lines: 5,
    };
    assert_eq!(
        url(&tunnels_request(&logs).unwrap()),
        at("tunnels/edge/logs?lines=5")
    );
    assert_eq!(
        url(&tunnels_request(&TunnelsAction::List).unwrap()),
        at("tunnels")
    );
    assert_eq!(url(&health_request()), at("health"));
    assert_eq!(url(&orphans_request(&OrphansAction::List)), at("orphans"));
    let cleanup = orphans_request(&OrphansAction::Cleanup { dry_run: true });
    assert_eq!(url(&cleanup), at("orphans/cleanup"));
    assert_eq!(cleanup.body.as_deref(), Some(&br#"{"dry_run":true}"#[..]));
    assert_eq!(url(&sync_request(false)), at("sync"));
}

/// An invalid id stays one path segment, so the daemon sees it as typed and answers its 400.
#[test]
fn ids_are_sent_as_typed() {
    let cases = [
        ("a b", "a%20b"),
        ("../x", "..%2Fx"),
        ("x/y", "x%2Fy"),
        ("x?y#z", "x%3Fy%23z"),
        ("%2F", "%252F"),
        ("x;rm", "x;rm"),
        ("-lead", "-lead"),
        ("\u{e9}", "%C3%A9"),
    ];
    for (id, sent) in cases {
        let expected = format!("http://{LISTEN}/api/v1/tunnels/{sent}");
        assert_eq!(url(&show(id)), expected, "{id}");
    }
}

/// A URL resolves `.` and `..` away, so they would reach another route: refused here.
#[test]
fn dot_segments_are_refused() {
    for id in [".", ".."] {
        assert!(
            matches!(show(id).url(LISTEN.parse().unwrap()), Err(RemoteError::DotSegment(d)) if d == id),
            "{id}"
        );
    }
}

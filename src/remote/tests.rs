//! The tables people read, pinned on answers shaped exactly as the daemon sends them.

use super::tables;

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

fn parse(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn tunnels_table() {
    let expected = "\
TUNNEL                   STATE        SUB            RESTARTS     CPU s    RSS MiB    FDS  HEALTHY
edge                     active       running               2      12.0       50.0     23  false
fresh                    inactive     dead                  0         -          -      -  -
";
    assert_eq!(tables::tunnels(&parse(&tunnels_answer())), expected);
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
    assert_eq!(tables::tunnel(&parse(TUNNEL)), expected);
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
    assert_eq!(tables::tunnel(&parse(NEW_TUNNEL)), expected);
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
    assert_eq!(tables::health(&parse(answer)), expected);
    let down = r#"{"systemd_up": false, "tunnels_total": 0, "tunnels_unhealthy": 0, "orphans": 0,
      "tunnels": []}"#;
    assert_eq!(
        tables::health(&parse(down)),
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
    assert_eq!(tables::orphans(&parse(answer)), expected);
}

#[test]
fn outcome_and_bulk_tables() {
    let one = r#"{"id": "edge", "unit": "xray-tunnel-edge.service", "action": "restarted",
      "job": "done"}"#;
    assert_eq!(
        tables::results(&parse(one)),
        "edge                     restarted      \n"
    );
    let bulk = r#"{"results": [
      {"id": "edge", "unit": "xray-tunnel-edge.service", "action": "deleted", "job": "done"},
      {"id": "stuck", "error": "job_failed", "message": "the stop job of stuck ended failed"}]}"#;
    let expected = "\
edge                     deleted        
stuck                    job_failed     the stop job of stuck ended failed
";
    assert_eq!(tables::results(&parse(bulk)), expected);
}

#[test]
fn cleanup_table() {
    let answer = r#"{"dry_run": true, "results": [
      {"action": "remove_tunnel", "tunnel": "noconf", "reasons": ["unit_without_config"],
       "outcome": "would_do", "detail": "would remove tunnel noconf"},
      {"action": "remove_config", "tunnel": "nounit", "outcome": "skipped",
       "detail": "a unit exists again"},
      {"action": "stop_process", "pid": 77, "since": 1700000001.0, "outcome": "failed",
       "detail": "no such process"}]}"#;
    let expected = "\
noconf                   remove_tunnel  would remove tunnel noconf
nounit                   remove_config  a unit exists again
                         stop_process   no such process
";
    assert_eq!(tables::results(&parse(answer)), expected);
}

#[test]
fn logs_table() {
    let answer = r#"{"id": "edge", "lines": ["first", "second"]}"#;
    assert_eq!(tables::logs(&parse(answer)), "first\nsecond\n");
}

#[test]
fn sync_table() {
    let answer = r#"{"source_up": false, "tunnels": [
      {"tunnel": "edge", "added": 2, "removed": 0, "changed": 1, "failed": 0, "total": 40,
       "guard_tripped": true},
      {"tunnel": "dead", "added": 0, "removed": 0, "changed": 0, "failed": 0, "total": 0,
       "guard_tripped": false, "error": "cannot reach the core's API: refused"}]}"#;
    let expected = "\
source: DOWN (last good set kept, no removals)
tunnel                    added  removed  changed  failed  total  note
edge                          2        0        1       0     40  removal guard tripped (use --force)
dead                          0        0        0       0      0  error: cannot reach the core's API: refused
";
    assert_eq!(super::sync_table(&parse(answer)), expected);
}

//! JSON views of the snapshot for the API: what `GET /tunnels`, `/health` and `/orphans` answer.

use std::time::UNIX_EPOCH;

use serde_json::{Value, json};

use crate::domain::{Check, Orphan, TunnelId};
use crate::state::{Snapshot, Tunnel};

/// One tunnel: state, restarts, resources and health.
pub fn tunnel(id: &TunnelId, t: &Tunnel) -> Value {
    let s = &t.status;
    json!({
        "id": id.as_str(),
        "unit": t.unit,
        "description": s.description,
        "load_state": s.load_state,
        "active_state": s.active_state().as_str(),
        "sub_state": s.sub_state,
        "unit_file_state": s.unit_file_state,
        "up": s.active_state().is_up(),
        "main_pid": s.main_pid,
        "restarts": s.n_restarts,
        "observed_restarts": {"auto": t.restarts.auto, "manual": t.restarts.manual},
        "result": s.result,
        "started_at": (s.exec_main_start_usec != 0).then(|| s.exec_main_start_usec as f64 / 1e6),
        "config": s.config_arg(),
        "resources": t.resources.map(|r| json!({
            "cpu_seconds": r.cpu_seconds,
            "memory_rss_bytes": r.rss_bytes,
            "memory_current_bytes": r.memory_current_bytes,
            "tasks": r.tasks,
            "processes": r.processes,
            "open_fds": r.open_fds,
        })),
        "health": health(&t.health),
        "healthy": healthy(&t.health),
    })
}

fn health(checks: &[Check]) -> Value {
    checks
        .iter()
        .map(|c| json!({"check": c.name, "ok": c.ok, "detail": c.detail}))
        .collect()
}

/// Healthy means checked and passing every check; `null` before the first health pass.
fn healthy(checks: &[Check]) -> Value {
    if checks.is_empty() {
        Value::Null
    } else {
        Value::Bool(checks.iter().all(|c| c.ok))
    }
}

pub fn tunnels(snapshot: &Snapshot) -> Value {
    let list: Vec<Value> = snapshot
        .tunnels
        .iter()
        .map(|(id, t)| tunnel(id, t))
        .collect();
    json!({ "tunnels": list })
}

/// Health of every tunnel, and of the node as a whole.
pub fn health_report(snapshot: &Snapshot) -> Value {
    let tunnels: Vec<Value> = snapshot
        .tunnels
        .iter()
        .map(|(id, t)| json!({"id": id.as_str(), "healthy": healthy(&t.health), "checks": health(&t.health)}))
        .collect();
    let unhealthy = snapshot
        .tunnels
        .values()
        .filter(|t| t.health.iter().any(|c| !c.ok))
        .count();
    json!({
        "systemd_up": snapshot.systemd_up,
        "tunnels_total": snapshot.tunnels.len(),
        "tunnels_unhealthy": unhealthy,
        "orphans": snapshot.orphans.len(),
        "tunnels": tunnels,
    })
}

pub fn orphan(o: &Orphan) -> Value {
    json!({
        "tunnel": o.tunnel,
        "kind": o.kind.as_str(),
        "since": o.since.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
        "detail": o.detail,
        "pid": o.pid,
    })
}

pub fn orphans(snapshot: &Snapshot) -> Value {
    let list: Vec<Value> = snapshot.orphans.iter().map(orphan).collect();
    json!({ "orphans": list })
}

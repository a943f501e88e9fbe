//! Human tables of the daemon's JSON answers.

use std::fmt::Write;

use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `GET /tunnels`.
pub fn tunnels(answer: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<12} {:<14} {:>8} {:>9} {:>10} {:>6}  HEALTHY",
        "TUNNEL", "STATE", "SUB", "RESTARTS", "CPU s", "RSS MiB", "FDS"
    );
    for t in answer["tunnels"].as_array().into_iter().flatten() {
        let r = &t["resources"];
        let mib = r["memory_rss_bytes"]
            .as_f64()
            .map_or("-".into(), |b| format!("{:.1}", b / 1_048_576.0));
        let cpu = r["cpu_seconds"]
            .as_f64()
            .map_or("-".into(), |c| format!("{c:.1}"));
        let _ = writeln!(
            out,
            "{:<24} {:<12} {:<14} {:>8} {:>9} {:>10} {:>6}  {}",
            s(&t["id"]),
            s(&t["active_state"]),
            s(&t["sub_state"]),
            s(&t["restarts"]),
            cpu,
            mib,
            s(&r["open_fds"]),
            s(&t["healthy"])
        );
    }
    out
}

/// `GET /tunnels/{id}`: key: value lines, then the checks.
pub fn tunnel(t: &Value) -> String {
    let mut out = String::new();
    let keys = [
        "id",
        "unit",
        "description",
        "active_state",
        "sub_state",
        "unit_file_state",
        "main_pid",
        "restarts",
        "result",
        "config",
    ];
    for key in keys {
        let _ = writeln!(out, "{key:<16} {}", s(&t[key]));
    }
    if let Some(r) = t["resources"].as_object() {
        for (key, value) in r {
            let _ = writeln!(out, "{key:<16} {}", s(value));
        }
    }
    out.push_str(&checks(&t["health"]));
    out
}

fn checks(health: &Value) -> String {
    let mut out = String::new();
    for c in health.as_array().into_iter().flatten() {
        let mark = if c["ok"].as_bool() == Some(true) {
            "ok  "
        } else {
            "FAIL"
        };
        let _ = writeln!(out, "  {mark} {:<18} {}", s(&c["check"]), s(&c["detail"]));
    }
    out
}

/// `GET /health`.
pub fn health(answer: &Value) -> String {
    let mut out = String::new();
    let up = answer["systemd_up"].as_bool() == Some(true);
    let _ = writeln!(
        out,
        "systemd: {}  tunnels: {}  unhealthy: {}  orphans: {}",
        if up { "up" } else { "DOWN" },
        s(&answer["tunnels_total"]),
        s(&answer["tunnels_unhealthy"]),
        s(&answer["orphans"])
    );
    for t in answer["tunnels"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "{}  healthy: {}", s(&t["id"]), s(&t["healthy"]));
        out.push_str(&checks(&t["checks"]));
    }
    out
}

/// `GET /orphans`.
pub fn orphans(answer: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<24} {:<22} DETAIL", "TUNNEL", "KIND");
    for o in answer["orphans"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<24} {:<22} {}",
            s(&o["tunnel"]),
            s(&o["kind"]),
            s(&o["detail"])
        );
    }
    out
}

/// Any answer with a `results` list (bulk operations, cleanup) or a single outcome.
pub fn results(answer: &Value) -> String {
    let mut out = String::new();
    let rows: Vec<&Value> = match answer["results"].as_array() {
        Some(list) => list.iter().collect(),
        None => vec![answer],
    };
    for r in rows {
        let pick = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| r.get(*k))
                .map(s)
                .unwrap_or_default()
        };
        let (id, what, detail) = (
            pick(&["id", "tunnel"]),
            pick(&["action", "error"]),
            pick(&["message", "detail"]),
        );
        let _ = writeln!(out, "{id:<24} {what:<14} {detail}");
    }
    out
}

/// `GET /tunnels/{id}/logs`.
pub fn logs(answer: &Value) -> String {
    let mut out = String::new();
    for line in answer["lines"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "{}", line.as_str().unwrap_or_default());
    }
    out
}

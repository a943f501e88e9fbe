//! Human tables of the daemon's answers, read from typed fields of the [`crate::contract`].

use std::fmt::{Display, Write};

use serde::de::DeserializeOwned;

use crate::contract::{
    CheckView, CleanupResults, CleanupStep, HealthReport, LogsView, OrphanList, OutcomeView,
    SyncSummary, TunnelList, TunnelView,
};

/// An answer that prints as a table for people.
pub trait Table: DeserializeOwned {
    fn table(&self) -> String;
}

/// Reads `answer` as a `T` and prints its table; an answer of another shape is an error.
pub fn render<T: Table>(answer: serde_json::Value) -> Result<String, serde_json::Error> {
    T::deserialize(answer).map(|typed| typed.table())
}

/// A value, or `-` for none.
fn or_dash(value: Option<impl Display>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A float as the JSON answer wrote it (`12.0`, not `12`).
fn float(value: f64) -> String {
    serde_json::Number::from_f64(value).map_or_else(|| "-".into(), |n| n.to_string())
}

impl Table for TunnelList {
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<24} {:<12} {:<14} {:>8} {:>9} {:>10} {:>6}  HEALTHY",
            "TUNNEL", "STATE", "SUB", "RESTARTS", "CPU s", "RSS MiB", "FDS"
        );
        for t in &self.tunnels {
            let r = t.resources.as_ref();
            let mib = r.map(|r| format!("{:.1}", r.memory_rss_bytes as f64 / 1_048_576.0));
            let cpu = r.map(|r| format!("{:.1}", r.cpu_seconds));
            let _ = writeln!(
                out,
                "{:<24} {:<12} {:<14} {:>8} {:>9} {:>10} {:>6}  {}",
                t.id,
                t.active_state,
                t.sub_state,
                t.restarts,
                or_dash(cpu),
                or_dash(mib),
                or_dash(r.map(|r| r.open_fds)),
                or_dash(t.healthy)
            );
        }
        out
    }
}

/// `key: value` lines, then the checks.
impl Table for TunnelView {
    fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            let _ = writeln!(out, "{key:<16} {value}");
        };
        line("id", self.id.clone());
        line("unit", self.unit.clone());
        line("description", self.description.clone());
        line("active_state", self.active_state.clone());
        line("sub_state", self.sub_state.clone());
        line("unit_file_state", self.unit_file_state.clone());
        line("main_pid", self.main_pid.to_string());
        line("restarts", self.restarts.to_string());
        line("result", self.result.clone());
        line("config", or_dash(self.config.as_ref()));
        if let Some(r) = &self.resources {
            line("cpu_seconds", float(r.cpu_seconds));
            line("memory_rss_bytes", r.memory_rss_bytes.to_string());
            line("memory_current_bytes", or_dash(r.memory_current_bytes));
            line("tasks", r.tasks.to_string());
            line("processes", r.processes.to_string());
            line("open_fds", r.open_fds.to_string());
        }
        out.push_str(&checks(&self.health));
        out
    }
}

fn checks(checks: &[CheckView]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "  {mark} {:<18} {}", c.check, c.detail);
    }
    out
}

impl Table for HealthReport {
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "systemd: {}  tunnels: {}  unhealthy: {}  orphans: {}",
            if self.systemd_up { "up" } else { "DOWN" },
            self.tunnels_total,
            self.tunnels_unhealthy,
            self.orphans
        );
        for t in &self.tunnels {
            let _ = writeln!(out, "{}  healthy: {}", t.id, or_dash(t.healthy));
            out.push_str(&checks(&t.checks));
        }
        out
    }
}

impl Table for OrphanList {
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:<24} {:<22} DETAIL", "TUNNEL", "KIND");
        for o in &self.orphans {
            let _ = writeln!(out, "{:<24} {:<22} {}", o.tunnel, o.kind, o.detail);
        }
        out
    }
}

/// One row of a result: who, what, and why.
fn row(out: &mut String, id: &str, what: &str, detail: &str) {
    let _ = writeln!(out, "{id:<24} {what:<14} {detail}");
}

/// A single operation's outcome.
impl Table for OutcomeView {
    fn table(&self) -> String {
        let mut out = String::new();
        row(&mut out, &self.id, self.action.as_str(), "");
        out
    }
}

/// The orphan cleanup: each action with its detail.
impl Table for CleanupResults {
    fn table(&self) -> String {
        let mut out = String::new();
        for item in &self.results {
            let (tunnel, action) = match &item.step {
                CleanupStep::RemoveTunnel { tunnel, .. } => (tunnel.as_str(), "remove_tunnel"),
                CleanupStep::RemoveConfig { tunnel } => (tunnel.as_str(), "remove_config"),
                CleanupStep::StopProcess { .. } => ("", "stop_process"),
            };
            row(&mut out, tunnel, action, item.verdict.detail());
        }
        out
    }
}

impl Table for LogsView {
    fn table(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

impl Table for SyncSummary {
    fn table(&self) -> String {
        let mut out = String::new();
        let source = if self.source_up {
            "up"
        } else {
            "DOWN (last good set kept, no removals)"
        };
        let _ = writeln!(out, "source: {source}");
        let _ = writeln!(
            out,
            "{:<24} {:>6} {:>8} {:>8} {:>7} {:>6}  note",
            "tunnel", "added", "removed", "changed", "failed", "total"
        );
        for t in &self.tunnels {
            let n = &t.outcome;
            let note = match &t.error {
                Some(err) => format!("error: {err}"),
                None => sync_notes(n).join("; "),
            };
            let _ = writeln!(
                out,
                "{:<24} {:>6} {:>8} {:>8} {:>7} {:>6}  {note}",
                t.tunnel, n.added, n.removed, n.changed, n.failed, n.total
            );
        }
        out
    }
}

/// What a tunnel's sync did beyond its counts, worst first.
fn sync_notes(n: &crate::contract::Outcome) -> Vec<String> {
    let mut notes = Vec::new();
    if n.guard_tripped {
        notes.push("removal guard tripped (use --force)".to_owned());
    }
    if n.drift > 0 {
        notes.push(format!("{} drifted on the core, repaired", n.drift));
    }
    if n.kept > 0 {
        notes.push(format!(
            "{} credential change(s) not applied, old kept",
            n.kept
        ));
    }
    if n.held > 0 {
        notes.push(format!("{} held (invalid entry)", n.held));
    }
    if !n.cannot_hold.is_empty() {
        notes.push(format!("cannot hold users: {}", n.cannot_hold.join(", ")));
    }
    notes
}

//! Per-tunnel series, written from the snapshot at scrape time straight into the text format
//! (see [`super::text`] for why these families skip the registry).
//!
//! Cardinality: every family is keyed by `tunnel` (one per unit on the node, a few hundred at
//! most). The only extra labels have small closed sets: `state` (6 values), `reason` (2) and the
//! info-style `sub_state` / `result` (one series per tunnel each, the current value).

use super::family::Spec;
use super::text::{Samples, TextWriter};
use crate::domain::{ActiveState, RestartReason};
use std::time::UNIX_EPOCH;

use crate::state::{Snapshot, Tunnel};

const T: &[&str] = &["tunnel"];

const INFO: Spec = Spec::gauge(
    "xray_tunnel_info",
    "Always 1 for every known tunnel unit; carries its unit name and description.",
    &["tunnel", "unit", "description"],
);
const UP: Spec = Spec::gauge(
    "xray_tunnel_up",
    "1 if the tunnel unit's ActiveState is active, else 0.",
    T,
);
const STATE: Spec = Spec::gauge(
    "xray_tunnel_state",
    "1 for the tunnel unit's current ActiveState, 0 for the other states.",
    &["tunnel", "state"],
);
const SUB_STATE: Spec = Spec::gauge(
    "xray_tunnel_sub_state",
    "Always 1; the sub_state label is the unit's current SubState (running, auto-restart, ...).",
    &["tunnel", "sub_state"],
);
const ENABLED: Spec = Spec::gauge(
    "xray_tunnel_enabled",
    "1 if the tunnel's unit file is enabled (starts at boot), else 0.",
    T,
);
const RESTARTS: Spec = Spec::counter(
    "xray_tunnel_restarts_total",
    "systemd's NRestarts: automatic restarts since the last manual start or reset-failed.",
    T,
);
const OBSERVED_RESTARTS: Spec = Spec::counter(
    "xray_tunnel_observed_restarts_total",
    "Restarts the warden observed since it started: auto (Restart= policy) or manual.",
    &["tunnel", "reason"],
);
const RESULT: Spec = Spec::gauge(
    "xray_tunnel_result",
    "Always 1; the result label is systemd's Result of the unit (success, exit-code, signal, ...).",
    &["tunnel", "result"],
);
const EXIT_CODE: Spec = Spec::gauge(
    "xray_tunnel_last_exit_code",
    "Exit status of the tunnel's last main process that exited normally.",
    T,
);
const EXIT_SIGNAL: Spec = Spec::gauge(
    "xray_tunnel_last_exit_signal",
    "Signal number that killed the tunnel's last main process, if a signal did.",
    T,
);
const START_TIME: Spec = Spec::gauge(
    "xray_tunnel_start_time_seconds",
    "Unix time the tunnel's current (or last) main process started.",
    T,
);
const CPU: Spec = Spec::counter(
    "xray_tunnel_cpu_seconds_total",
    "CPU time used by the tunnel's processes (systemd CPUUsageNSec, else procfs over its cgroup).",
    T,
);
const RSS: Spec = Spec::gauge(
    "xray_tunnel_memory_rss_bytes",
    "Resident memory summed over every process in the tunnel's cgroup (procfs).",
    T,
);
const MEMORY_CURRENT: Spec = Spec::gauge(
    "xray_tunnel_memory_current_bytes",
    "systemd's MemoryCurrent of the tunnel (cgroup memory, page cache included), where set.",
    T,
);
const TASKS: Spec = Spec::gauge(
    "xray_tunnel_tasks",
    "Tasks (threads) of the tunnel: systemd TasksCurrent, else counted in procfs.",
    T,
);
const PROCESSES: Spec = Spec::gauge(
    "xray_tunnel_processes",
    "Processes in the tunnel's cgroup.",
    T,
);
const OPEN_FDS: Spec = Spec::gauge(
    "xray_tunnel_open_fds",
    "Open file descriptors summed over every process in the tunnel's cgroup.",
    T,
);

const INBOUND_TRAFFIC: Spec = Spec::counter(
    "xray_tunnel_inbound_traffic_bytes_total",
    "Bytes through the inbound, from the core's StatsService (resets when the core restarts).",
    &["tunnel", "inbound", "direction"],
);
const USER_TRAFFIC: Spec = Spec::counter(
    "xray_tunnel_user_traffic_bytes_total",
    "Bytes of one current user, from the core's StatsService; only with users.per_user_traffic.",
    &["tunnel", "user", "direction"],
);

const HEALTH_CHECK: Spec = Spec::gauge(
    "xray_tunnel_health_check",
    "1 if the tunnel passes the check (active, not_crash_looping, config_valid, ports_owned, api), 0 if not.",
    &["tunnel", "check"],
);
const ORPHANED: Spec = Spec::gauge(
    "xray_tunnel_orphaned",
    "1 for each orphan: a unit without config or not in the inventory, a config without unit, a stray core process, a unit failed too long.",
    &["tunnel", "kind"],
);
const ORPHANED_SINCE: Spec = Spec::gauge(
    "xray_tunnel_orphaned_since_seconds",
    "Unix time the warden first saw the orphan.",
    &["tunnel", "kind"],
);

/// Writes the samples of one family for one tunnel (none when it has no value).
type Emit = fn(&str, &Tunnel, &mut Samples<'_, '_>);

/// Every per-tunnel family, with how a tunnel contributes to it.
const FAMILIES: [(Spec, Emit); 20] = [
    (INFO, |t, x, s| {
        s.push(&[t, &x.unit, &x.status.description], 1.0)
    }),
    (UP, |t, x, s| {
        s.push(&[t], flag(x.status.active_state().is_up()))
    }),
    (STATE, |t, x, s| {
        let active = x.status.active_state();
        for known in ActiveState::KNOWN {
            s.push(&[t, known.as_str()], flag(*active == known));
        }
    }),
    (SUB_STATE, |t, x, s| {
        if !x.status.sub_state.is_empty() {
            s.push(&[t, &x.status.sub_state], 1.0);
        }
    }),
    (ENABLED, |t, x, s| {
        s.push(&[t], flag(x.status.unit_file_state == "enabled"))
    }),
    (RESTARTS, |t, x, s| {
        s.push(&[t], f64::from(x.status.n_restarts))
    }),
    (OBSERVED_RESTARTS, |t, x, s| {
        for reason in RestartReason::ALL {
            s.push(&[t, reason.as_str()], x.restarts.get(reason) as f64);
        }
    }),
    (RESULT, |t, x, s| {
        if !x.status.result.is_empty() {
            s.push(&[t, &x.status.result], 1.0);
        }
    }),
    (EXIT_CODE, |t, x, s| {
        if x.status.exec_main_code == CLD_EXITED {
            s.push(&[t], f64::from(x.status.exec_main_status));
        }
    }),
    (EXIT_SIGNAL, |t, x, s| {
        if matches!(x.status.exec_main_code, CLD_KILLED | CLD_DUMPED) {
            s.push(&[t], f64::from(x.status.exec_main_status));
        }
    }),
    (START_TIME, |t, x, s| {
        if x.status.exec_main_start_usec != 0 {
            s.push(&[t], x.status.exec_main_start_usec as f64 / 1e6);
        }
    }),
    (CPU, |t, x, s| {
        if let Some(r) = &x.resources {
            s.push(&[t], r.cpu_seconds);
        }
    }),
    (RSS, |t, x, s| {
        if let Some(r) = &x.resources {
            s.push(&[t], r.rss_bytes as f64);
        }
    }),
    (MEMORY_CURRENT, |t, x, s| {
        if let Some(bytes) = x.resources.and_then(|r| r.memory_current_bytes) {
            s.push(&[t], bytes as f64);
        }
    }),
    (TASKS, |t, x, s| {
        if let Some(r) = &x.resources {
            s.push(&[t], r.tasks as f64);
        }
    }),
    (PROCESSES, |t, x, s| {
        if let Some(r) = &x.resources {
            s.push(&[t], r.processes as f64);
        }
    }),
    (OPEN_FDS, |t, x, s| {
        if let Some(r) = &x.resources {
            s.push(&[t], r.open_fds as f64);
        }
    }),
    (INBOUND_TRAFFIC, |t, x, s| {
        for c in x.traffic.iter().flat_map(|traffic| &traffic.inbounds) {
            s.push(&[t, &c.name, c.direction], c.bytes as f64);
        }
    }),
    (USER_TRAFFIC, |t, x, s| {
        for c in x.traffic.iter().flat_map(|traffic| &traffic.users) {
            s.push(&[t, &c.name, c.direction], c.bytes as f64);
        }
    }),
    (HEALTH_CHECK, |t, x, s| {
        for check in &x.health {
            s.push(&[t, check.name], flag(check.ok));
        }
    }),
];

/// `CLD_EXITED`, `CLD_KILLED`, `CLD_DUMPED`: how systemd's ExecMainCode says a process ended.
const CLD_EXITED: i32 = 1;
const CLD_KILLED: i32 = 2;
const CLD_DUMPED: i32 = 3;

/// The specs of every per-tunnel family.
#[cfg(test)]
pub fn specs() -> impl Iterator<Item = &'static Spec> {
    FAMILIES
        .iter()
        .map(|(spec, _)| spec)
        .chain([&ORPHANED, &ORPHANED_SINCE])
}

/// Writes every per-tunnel family of `snapshot`, and the orphans.
pub fn write(snapshot: &Snapshot, writer: &mut TextWriter<'_>) {
    for (spec, emit) in &FAMILIES {
        let mut samples = writer.family(spec);
        for (id, tunnel) in &snapshot.tunnels {
            emit(id.as_str(), tunnel, &mut samples);
        }
    }
    let mut orphaned = writer.family(&ORPHANED);
    for o in &snapshot.orphans {
        orphaned.push(&[&o.tunnel, o.kind.as_str()], 1.0);
    }
    let mut since = writer.family(&ORPHANED_SINCE);
    for o in &snapshot.orphans {
        let at = o.since.duration_since(UNIX_EPOCH).unwrap_or_default();
        since.push(&[&o.tunnel, o.kind.as_str()], at.as_secs_f64());
    }
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

//! Per-tunnel series, built from the snapshot at scrape time.
//!
//! Cardinality: every family is keyed by `tunnel` (one per unit on the node, a few hundred at
//! most). The only extra labels have small closed sets: `state` (6 values), `reason` (2) and the
//! info-style `sub_state` / `result` (one series per tunnel each, the current value).

use prometheus::proto::MetricFamily;

use super::family::{Family, Spec};
use crate::domain::{ActiveState, RestartReason};
use crate::state::Snapshot;

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

pub const SPECS: [Spec; 17] = [
    INFO,
    UP,
    STATE,
    SUB_STATE,
    ENABLED,
    RESTARTS,
    OBSERVED_RESTARTS,
    RESULT,
    EXIT_CODE,
    EXIT_SIGNAL,
    START_TIME,
    CPU,
    RSS,
    MEMORY_CURRENT,
    TASKS,
    PROCESSES,
    OPEN_FDS,
];

/// `CLD_EXITED`, `CLD_KILLED`, `CLD_DUMPED`: how systemd's ExecMainCode says a process ended.
const CLD_EXITED: i32 = 1;
const CLD_KILLED: i32 = 2;
const CLD_DUMPED: i32 = 3;

/// Builds every per-tunnel family from `snapshot`.
pub fn build(snapshot: &Snapshot) -> Vec<MetricFamily> {
    let mut f: Vec<Family> = SPECS.iter().map(Spec::family).collect();
    let [
        info,
        up,
        state,
        sub_state,
        enabled,
        restarts,
        observed,
        result,
        exit_code,
        exit_signal,
        start,
        cpu,
        rss,
        memory_current,
        tasks,
        processes,
        fds,
    ] = &mut f[..]
    else {
        unreachable!("SPECS has 17 entries");
    };
    for (id, tunnel) in &snapshot.tunnels {
        let t = id.as_str();
        let s = &tunnel.status;
        let active = s.active_state();
        info.push(&[t, &tunnel.unit, &s.description], 1.0);
        up.push(&[t], flag(active.is_up()));
        for known in ActiveState::KNOWN {
            state.push(&[t, known.as_str()], flag(*active == known));
        }
        if !s.sub_state.is_empty() {
            sub_state.push(&[t, &s.sub_state], 1.0);
        }
        enabled.push(&[t], flag(s.unit_file_state == "enabled"));
        restarts.push(&[t], f64::from(s.n_restarts));
        for reason in RestartReason::ALL {
            observed.push(&[t, reason.as_str()], tunnel.restarts.get(reason) as f64);
        }
        if !s.result.is_empty() {
            result.push(&[t, &s.result], 1.0);
        }
        match s.exec_main_code {
            CLD_EXITED => exit_code.push(&[t], f64::from(s.exec_main_status)),
            CLD_KILLED | CLD_DUMPED => exit_signal.push(&[t], f64::from(s.exec_main_status)),
            _ => {}
        }
        if s.exec_main_start_usec != 0 {
            start.push(&[t], s.exec_main_start_usec as f64 / 1e6);
        }
        if let Some(r) = &tunnel.resources {
            cpu.push(&[t], r.cpu_seconds);
            rss.push(&[t], r.rss_bytes as f64);
            if let Some(bytes) = r.memory_current_bytes {
                memory_current.push(&[t], bytes as f64);
            }
            tasks.push(&[t], r.tasks as f64);
            processes.push(&[t], r.processes as f64);
            fds.push(&[t], r.open_fds as f64);
        }
    }
    f.into_iter().map(Family::finish).collect()
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

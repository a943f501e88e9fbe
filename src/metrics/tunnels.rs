//! Per-tunnel series, written from the snapshot at scrape time straight into the text format
//! (see [`super::text`] for why these families skip the registry).
//!
//! Cardinality: every family is keyed by `tunnel` (one per unit on the node, a few hundred at
//! most). The only extra labels have small closed sets: `state` (6 values), `reason` (2 restart
//! reasons, 8 unknown-config reasons, one series per tunnel), `kind` (5) and the info-style
//! `sub_state` / `result` (one series per tunnel each, the current value). Orphans are one
//! series per (tunnel, kind), however many stray processes share a tunnel: their count is the
//! value, never a label. Traffic adds 2 series per inbound and per outbound, one online-users
//! series on Xray; the per-user families (`user` label) are opt-in and capped per tunnel by
//! `users.max_user_series`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::family::Spec;
use super::text::{Samples, TextWriter};
use crate::domain::{ActiveState, RestartReason};
use crate::state::{COLLECTOR_HEALTH, Snapshot, Tunnel};

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
    "CPU time used by the tunnel's processes: its cgroup's own counter (systemd's CPUUsageNSec where it publishes one), else procfs over its cgroup.",
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
const OUTBOUND_TRAFFIC: Spec = Spec::counter(
    "xray_tunnel_outbound_traffic_bytes_total",
    "Bytes through the outbound, from the core's StatsService (resets when the core restarts).",
    &["tunnel", "outbound", "direction"],
);
const USER_TRAFFIC: Spec = Spec::counter(
    "xray_tunnel_user_traffic_bytes_total",
    "Bytes of one current user, from the core's StatsService; only with users.per_user_traffic.",
    &["tunnel", "user", "direction"],
);
const ONLINE_USERS: Spec = Spec::gauge(
    "xray_tunnel_online_users",
    "Users connected now, from Xray's online API (needs statsUserOnline; loopback 127.0.0.1 and ::1 clients are never counted). Absent on V2Ray.",
    T,
);
const USER_ONLINE_IPS: Spec = Spec::gauge(
    "xray_tunnel_user_online_ips",
    "Distinct addresses one online user is connected from, from Xray's online API; only with users.per_user_online_ips.",
    &["tunnel", "user"],
);

const HEALTH_CHECK: Spec = Spec::gauge(
    "xray_tunnel_health_check",
    "1 if the tunnel passes the check (active, not_crash_looping, config_valid, ports_owned, api), 0 if not.",
    &["tunnel", "check"],
);
const ORPHANED: Spec = Spec::gauge(
    "xray_tunnel_orphaned",
    "Orphans of the tunnel by kind: 1 for a unit without its (known) config, not in the inventory or failed too long, or a config without unit; for stray_process the number of core processes running the tunnel's config outside every systemd unit.",
    &["tunnel", "kind"],
);
const ORPHANED_SINCE: Spec = Spec::gauge(
    "xray_tunnel_orphaned_since_seconds",
    "Unix time the warden first saw the orphan (the earliest, for several stray processes).",
    &["tunnel", "kind"],
);
const CONFIG_UNKNOWN: Spec = Spec::gauge(
    "xray_tunnel_config_unknown",
    "1 when the tunnel unit's config path cannot be trusted (reason: relative_path, confdir, several_configs, outside_config_dir, no_config_flag, missing_value, not_clean, no_command); such a tunnel is never an orphan for a missing config.",
    &["tunnel", "reason"],
);
const GUARD_TRIPPED: Spec = Spec::gauge(
    "xray_warden_orphan_guard_tripped",
    "1 when the last health pass found more orphaned tunnels than max_orphan_fraction or max_orphans_per_pass allow, so that no orphan cleanup acts; 0 otherwise.",
    &[],
);

/// Writes the samples of one family for one tunnel (none when it has no value).
type Emit = fn(&str, &Tunnel, &mut Samples<'_, '_>);

/// The per-tunnel families drawn from the unit's status, restarts and health checks (which
/// change with [`Snapshot::status_version`]), with how a tunnel contributes to each.
const STATUS_FAMILIES: [(Spec, Emit); 12] = [
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
    (HEALTH_CHECK, |t, x, s| {
        for check in &x.health {
            s.push(&[t, check.name], flag(check.ok));
        }
    }),
];

/// The per-tunnel families drawn from the sampler's and the traffic poll's readings, which
/// change with every pass.
const SAMPLE_FAMILIES: [(Spec, Emit); 11] = [
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
    (OUTBOUND_TRAFFIC, |t, x, s| {
        for c in x.traffic.iter().flat_map(|traffic| &traffic.outbounds) {
            s.push(&[t, &c.name, c.direction], c.bytes as f64);
        }
    }),
    (USER_TRAFFIC, |t, x, s| {
        for c in x.traffic.iter().flat_map(|traffic| &traffic.users) {
            s.push(&[t, &c.name, c.direction], c.bytes as f64);
        }
    }),
    (ONLINE_USERS, |t, x, s| {
        if let Some(online) = x.traffic.as_ref().and_then(|t| t.online.as_ref()) {
            s.push(&[t], online.users as f64);
        }
    }),
    (USER_ONLINE_IPS, |t, x, s| {
        let online = x.traffic.as_ref().and_then(|t| t.online.as_ref());
        for u in online.iter().flat_map(|online| &online.user_ips) {
            s.push(&[t, &u.user], u.ips as f64);
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
    STATUS_FAMILIES
        .iter()
        .chain(&SAMPLE_FAMILIES)
        .map(|(spec, _)| spec)
        .chain([&ORPHANED, &ORPHANED_SINCE, &CONFIG_UNKNOWN, &GUARD_TRIPPED])
}

/// Writes every per-tunnel family of `snapshot`: [`write_status`], then [`write_samples`].
#[cfg(test)]
pub fn write(snapshot: &Snapshot, writer: &mut TextWriter<'_>) {
    write_status(snapshot, writer);
    write_samples(snapshot, writer);
}

/// Writes the families of the readings, which change with every sampler pass.
pub fn write_samples(snapshot: &Snapshot, writer: &mut TextWriter<'_>) {
    write_families(&SAMPLE_FAMILIES, snapshot, writer);
}

/// Writes the families drawn from the units' status and health checks, the orphans, the
/// unknown configs and, once a health pass has run, the orphan guard: everything that changes
/// only with [`Snapshot::status_version`].
pub fn write_status(snapshot: &Snapshot, writer: &mut TextWriter<'_>) {
    write_families(&STATUS_FAMILIES, snapshot, writer);
    write_orphans(snapshot, writer);
    let mut unknown = writer.family(&CONFIG_UNKNOWN);
    for u in &snapshot.config_unknown {
        unknown.push(&[u.tunnel.as_str(), u.reason.as_str()], 1.0);
    }
    if snapshot.collectors.contains_key(COLLECTOR_HEALTH) {
        let tripped = snapshot.orphan_guard.is_some();
        writer.family(&GUARD_TRIPPED).push(&[], flag(tripped));
    }
}

fn write_families(families: &[(Spec, Emit)], snapshot: &Snapshot, writer: &mut TextWriter<'_>) {
    for (spec, emit) in families {
        let mut samples = writer.family(spec);
        for (id, tunnel) in &snapshot.tunnels {
            emit(id.as_str(), tunnel, &mut samples);
        }
    }
}

/// One series per (tunnel, kind): the number of orphans and the earliest first sighting.
fn write_orphans(snapshot: &Snapshot, writer: &mut TextWriter<'_>) {
    let mut grouped: BTreeMap<(&str, &str), (usize, SystemTime)> = BTreeMap::new();
    for o in &snapshot.orphans {
        let entry = grouped
            .entry((o.tunnel.as_str(), o.kind.as_str()))
            .or_insert((0, o.since));
        entry.0 += 1;
        entry.1 = entry.1.min(o.since);
    }
    let mut orphaned = writer.family(&ORPHANED);
    for ((tunnel, kind), (count, _)) in &grouped {
        orphaned.push(&[tunnel, kind], *count as f64);
    }
    let mut since = writer.family(&ORPHANED_SINCE);
    for ((tunnel, kind), (_, first)) in &grouped {
        let at = first.duration_since(UNIX_EPOCH).unwrap_or_default();
        since.push(&[tunnel, kind], at.as_secs_f64());
    }
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

#[cfg(test)]
mod orphan_tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{GuardLimits, Orphan, OrphanKind, TunnelId, UnknownConfig, UnknownReason};
    use crate::state::CollectorRun;

    fn render(snapshot: &Snapshot) -> String {
        let mut out = String::new();
        write(snapshot, &mut TextWriter::new(&mut out));
        out
    }

    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let prefix = format!("{name}{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix) || l.starts_with(&format!("{name} ")))
            .collect()
    }

    fn stray(pid: u32, since_secs: u64) -> Orphan {
        Orphan {
            tunnel: "ghost".into(),
            kind: OrphanKind::StrayProcess,
            since: UNIX_EPOCH + Duration::from_secs(since_secs),
            detail: String::new(),
            pid: Some(pid),
        }
    }

    #[test]
    fn strays_of_one_tunnel_are_one_series_counting_them() {
        let mut snapshot = Snapshot {
            orphans: vec![stray(41, 200), stray(42, 100), stray(43, 300)],
            ..Snapshot::default()
        };
        snapshot.orphans.push(Orphan {
            kind: OrphanKind::ConfigWithoutUnit,
            pid: None,
            ..stray(0, 50)
        });
        let text = render(&snapshot);
        assert_eq!(
            samples(&text, "xray_tunnel_orphaned"),
            [
                "xray_tunnel_orphaned{tunnel=\"ghost\",kind=\"config_without_unit\"} 1",
                "xray_tunnel_orphaned{tunnel=\"ghost\",kind=\"stray_process\"} 3",
            ]
        );
        assert_eq!(
            samples(&text, "xray_tunnel_orphaned_since_seconds"),
            [
                "xray_tunnel_orphaned_since_seconds{tunnel=\"ghost\",kind=\"config_without_unit\"} 50",
                "xray_tunnel_orphaned_since_seconds{tunnel=\"ghost\",kind=\"stray_process\"} 100",
            ]
        );
    }

    #[test]
    fn unknown_configs_and_the_guard() {
        let mut snapshot = Snapshot {
            config_unknown: vec![UnknownConfig {
                tunnel: TunnelId::new("dir").unwrap(),
                reason: UnknownReason::ConfigDir,
            }],
            ..Snapshot::default()
        };
        let text = render(&snapshot);
        assert_eq!(
            samples(&text, "xray_tunnel_config_unknown"),
            ["xray_tunnel_config_unknown{tunnel=\"dir\",reason=\"confdir\"} 1"]
        );
        assert!(
            samples(&text, "xray_warden_orphan_guard_tripped").is_empty(),
            "unknown before the first health pass"
        );
        let run = CollectorRun {
            success: true,
            duration: Duration::ZERO,
        };
        snapshot.collectors.insert(COLLECTOR_HEALTH, run);
        let guard = |s: &Snapshot| {
            let text = render(s);
            samples(&text, "xray_warden_orphan_guard_tripped").join("\n")
        };
        assert_eq!(guard(&snapshot), "xray_warden_orphan_guard_tripped 0");
        snapshot.orphan_guard = GuardLimits::default().check(3, 4, 3).err();
        assert_eq!(guard(&snapshot), "xray_warden_orphan_guard_tripped 1");
    }
}

//! The warden's own health: bus connection, collectors, refresh time, build, trouble counters.

use std::time::UNIX_EPOCH;

use prometheus::proto::MetricFamily;

use super::family::Spec;
use crate::state::Snapshot;

const SYSTEMD_UP: Spec = Spec::gauge(
    "xray_warden_systemd_up",
    "1 while the warden holds a working connection to systemd's bus, else 0.",
    &[],
);
const COLLECTOR_SUCCESS: Spec = Spec::gauge(
    "xray_warden_collector_success",
    "1 if the collector's last run read everything it tried to, else 0.",
    &["collector"],
);
const COLLECTOR_DURATION: Spec = Spec::gauge(
    "xray_warden_collector_duration_seconds",
    "How long the collector's last run took.",
    &["collector"],
);
const LAST_REFRESH: Spec = Spec::gauge(
    "xray_warden_last_refresh_timestamp_seconds",
    "Unix time the in-memory snapshot that scrapes read was last updated.",
    &[],
);
const BUILD_INFO: Spec = Spec::gauge(
    "xray_warden_build_info",
    "Always 1; the version label is the running warden's version.",
    &["version"],
);
const TUNNELS: Spec = Spec::gauge("xray_warden_tunnels", "Tunnel units the warden knows.", &[]);
const RECONNECTS: Spec = Spec::counter(
    "xray_warden_systemd_reconnects_total",
    "Times the warden reconnected to systemd's bus after losing it.",
    &[],
);
const UNIT_READ_ERRORS: Spec = Spec::counter(
    "xray_warden_unit_read_errors_total",
    "Unit property reads that failed (unit vanished mid-read, timeout, ...).",
    &[],
);
const VANISHED: Spec = Spec::counter(
    "xray_warden_vanished_processes_total",
    "Processes listed in a tunnel's cgroup that exited before procfs could be read.",
    &[],
);
const CGROUP_ERRORS: Spec = Spec::counter(
    "xray_warden_cgroup_read_errors_total",
    "Sampling passes that could not read a tunnel's cgroup at all.",
    &[],
);

const HELD_FILES: Spec = Spec::gauge(
    "xray_warden_sampler_held_files",
    "Files the sampler holds open between passes: tunnels' cgroup files and processes' stat.",
    &[],
);
const HELD_FILES_LIMIT: Spec = Spec::gauge(
    "xray_warden_sampler_held_files_limit",
    "The most files the sampler holds open: half the warden's open-file limit.",
    &[],
);
const UNITS_BY_PATH: Spec = Spec::gauge(
    "xray_warden_sampler_units_read_by_path",
    "Tunnels the last sampler pass read by path, their files finding no room under the limit.",
    &[],
);

pub const SPECS: [Spec; 13] = [
    SYSTEMD_UP,
    COLLECTOR_SUCCESS,
    COLLECTOR_DURATION,
    LAST_REFRESH,
    BUILD_INFO,
    TUNNELS,
    RECONNECTS,
    UNIT_READ_ERRORS,
    VANISHED,
    CGROUP_ERRORS,
    HELD_FILES,
    HELD_FILES_LIMIT,
    UNITS_BY_PATH,
];

/// Builds the warden's own families from `s`.
pub fn build(s: &Snapshot) -> Vec<MetricFamily> {
    let single = |spec: &Spec, value: f64| {
        let mut family = spec.family();
        family.push(&[], value);
        family.finish()
    };
    let mut success = COLLECTOR_SUCCESS.family();
    let mut duration = COLLECTOR_DURATION.family();
    for (name, run) in &s.collectors {
        success.push(&[name], if run.success { 1.0 } else { 0.0 });
        duration.push(&[name], run.duration.as_secs_f64());
    }
    let mut build_info = BUILD_INFO.family();
    build_info.push(&[env!("CARGO_PKG_VERSION")], 1.0);
    let mut out = vec![
        single(&SYSTEMD_UP, if s.systemd_up { 1.0 } else { 0.0 }),
        success.finish(),
        duration.finish(),
        build_info.finish(),
        single(&TUNNELS, s.tunnels.len() as f64),
        single(&RECONNECTS, s.troubles.reconnects as f64),
        single(&UNIT_READ_ERRORS, s.troubles.unit_read_errors as f64),
        single(&VANISHED, s.troubles.vanished_processes as f64),
        single(&CGROUP_ERRORS, s.troubles.cgroup_read_errors as f64),
        single(&HELD_FILES, s.held_files.held as f64),
        single(&UNITS_BY_PATH, s.held_files.units_by_path as f64),
    ];
    // Without an open-file limit there is no budget: no series (the registry's encoder would
    // write +Inf as `inf`).
    if s.held_files.limit != u64::MAX {
        out.push(single(&HELD_FILES_LIMIT, s.held_files.limit as f64));
    }
    if let Some(at) = s
        .last_refresh
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
    {
        out.push(single(&LAST_REFRESH, at.as_secs_f64()));
    }
    out
}

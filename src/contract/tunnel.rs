//! Tunnels as `GET /api/v1/tunnels`, `GET /api/v1/tunnels/{id}` and `GET /api/v1/health` show them.

use serde::{Deserialize, Serialize};

use crate::domain::{Check, Resources, RestartCounts, TunnelId};
use crate::state::{Snapshot, Tunnel};

/// One tunnel: its unit's state, restarts, resources and health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelView {
    pub id: String,
    pub unit: String,
    pub description: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub unit_file_state: String,
    /// Whether the unit is `active`.
    pub up: bool,
    pub main_pid: u32,
    /// systemd's `NRestarts`.
    pub restarts: u32,
    /// Restarts the warden saw itself, since it started watching.
    pub observed_restarts: ObservedRestarts,
    pub result: String,
    /// Unix seconds the main process started; `null` if it never did.
    pub started_at: Option<f64>,
    /// The config file named on the unit's command line, if any.
    pub config: Option<String>,
    /// `null` until the sampler has read the unit once.
    pub resources: Option<ResourcesView>,
    pub health: Vec<CheckView>,
    /// `null` before the first health pass.
    pub healthy: Option<bool>,
}

impl TunnelView {
    pub fn from_snapshot(id: &TunnelId, t: &Tunnel) -> Self {
        let s = &t.status;
        Self {
            id: id.to_string(),
            unit: t.unit.clone(),
            description: s.description.clone(),
            load_state: s.load_state.clone(),
            active_state: s.active_state().as_str().to_owned(),
            sub_state: s.sub_state.clone(),
            unit_file_state: s.unit_file_state.clone(),
            up: s.active_state().is_up(),
            main_pid: s.main_pid,
            restarts: s.n_restarts,
            observed_restarts: t.restarts.into(),
            result: s.result.clone(),
            started_at: (s.exec_main_start_usec != 0).then(|| s.exec_main_start_usec as f64 / 1e6),
            config: s.config_arg().map(str::to_owned),
            resources: t.resources.map(ResourcesView::from),
            health: checks(&t.health),
            healthy: healthy(&t.health),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedRestarts {
    pub auto: u64,
    pub manual: u64,
}

impl From<RestartCounts> for ObservedRestarts {
    fn from(r: RestartCounts) -> Self {
        Self {
            auto: r.auto,
            manual: r.manual,
        }
    }
}

/// What the unit's processes use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResourcesView {
    pub cpu_seconds: f64,
    pub memory_rss_bytes: u64,
    /// systemd's `MemoryCurrent`, when it accounts memory.
    pub memory_current_bytes: Option<u64>,
    pub tasks: u64,
    pub processes: u64,
    pub open_fds: u64,
}

impl From<Resources> for ResourcesView {
    fn from(r: Resources) -> Self {
        Self {
            cpu_seconds: r.cpu_seconds,
            memory_rss_bytes: r.rss_bytes,
            memory_current_bytes: r.memory_current_bytes,
            tasks: r.tasks,
            processes: r.processes,
            open_fds: r.open_fds,
        }
    }
}

/// One health check's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckView {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

fn checks(checks: &[Check]) -> Vec<CheckView> {
    let view = |c: &Check| CheckView {
        check: c.name.to_owned(),
        ok: c.ok,
        detail: c.detail.clone(),
    };
    checks.iter().map(view).collect()
}

/// Healthy means checked and passing every check; `None` before the first health pass.
fn healthy(checks: &[Check]) -> Option<bool> {
    (!checks.is_empty()).then(|| checks.iter().all(|c| c.ok))
}

/// `GET /api/v1/tunnels`: every tunnel, in id order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelList {
    pub tunnels: Vec<TunnelView>,
}

impl TunnelList {
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        let tunnels = snapshot.tunnels.iter();
        Self {
            tunnels: tunnels
                .map(|(id, t)| TunnelView::from_snapshot(id, t))
                .collect(),
        }
    }
}

/// `GET /api/v1/health`: every tunnel's checks, and the node's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub systemd_up: bool,
    pub tunnels_total: usize,
    /// Tunnels failing at least one check.
    pub tunnels_unhealthy: usize,
    /// How many orphans the last health pass found.
    pub orphans: usize,
    pub tunnels: Vec<TunnelHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelHealth {
    pub id: String,
    /// `null` before the first health pass.
    pub healthy: Option<bool>,
    pub checks: Vec<CheckView>,
}

impl HealthReport {
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        let tunnels = snapshot.tunnels.iter().map(|(id, t)| TunnelHealth {
            id: id.to_string(),
            healthy: healthy(&t.health),
            checks: checks(&t.health),
        });
        let unhealthy = snapshot.tunnels.values();
        Self {
            systemd_up: snapshot.systemd_up,
            tunnels_total: snapshot.tunnels.len(),
            tunnels_unhealthy: unhealthy.filter(|t| t.health.iter().any(|c| !c.ok)).count(),
            orphans: snapshot.orphans.len(),
            tunnels: tunnels.collect(),
        }
    }
}

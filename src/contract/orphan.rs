//! Orphans as `GET /api/v1/orphans` shows them.

use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::domain::Orphan;
use crate::state::Snapshot;

/// One orphan of the last health pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrphanView {
    /// The tunnel id it concerns; `pid-<pid>` for a stray process.
    pub tunnel: String,
    /// `unit_without_config`, `not_in_inventory`, `config_without_unit`, `stray_process` or
    /// `failed_too_long`. A string, so a CLI older than the daemon still reads new kinds.
    pub kind: String,
    /// Unix seconds the warden first saw it in this state.
    pub since: f64,
    pub detail: String,
    /// The stray process's PID; `null` for every other kind.
    pub pid: Option<u32>,
}

impl From<&Orphan> for OrphanView {
    fn from(o: &Orphan) -> Self {
        Self {
            tunnel: o.tunnel.clone(),
            kind: o.kind.as_str().to_owned(),
            since: o
                .since
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            detail: o.detail.clone(),
            pid: o.pid,
        }
    }
}

/// `GET /api/v1/orphans`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrphanList {
    pub orphans: Vec<OrphanView>,
}

impl OrphanList {
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        Self {
            orphans: snapshot.orphans.iter().map(OrphanView::from).collect(),
        }
    }
}

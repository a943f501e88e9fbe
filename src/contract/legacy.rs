//! The web app's existing `GET /api/services?action=resource-usage`, in its camelCase names.

use serde::{Deserialize, Serialize};

use crate::state::Snapshot;

/// `{"usage": [...]}`, one entry per tunnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageList {
    pub usage: Vec<ResourceUsage>,
}

/// One tunnel's CPU, memory, tasks and fds; zeros until the sampler has read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceUsage {
    pub tunnel_id: String,
    pub unit: String,
    pub active: bool,
    pub cpu_seconds: f64,
    pub memory_rss_bytes: u64,
    pub tasks: u64,
    pub open_fds: u64,
}

impl UsageList {
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        let usage = snapshot.tunnels.iter().map(|(id, t)| {
            let r = t.resources.unwrap_or_default();
            ResourceUsage {
                tunnel_id: id.to_string(),
                unit: t.unit.clone(),
                active: t.status.active_state().is_up(),
                cpu_seconds: r.cpu_seconds,
                memory_rss_bytes: r.rss_bytes,
                tasks: r.tasks,
                open_fds: r.open_fds,
            }
        });
        Self {
            usage: usage.collect(),
        }
    }
}

//! What `POST /api/v1/sync` answers: what one user sync round did, per tunnel. The sync loop
//! builds it (`crate::usersync`), the CLI prints it.

use serde::{Deserialize, Serialize};

use crate::usersync::engine::Outcome;

/// One round: whether the users source answered, and each tunnel's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSummary {
    pub source_up: bool,
    pub tunnels: Vec<TunnelSyncSummary>,
}

/// One tunnel's sync: its counts flat beside its id, and `error` only when it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSyncSummary {
    pub tunnel: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

//! What `POST /api/v1/sync` answers: what one user sync round did, per tunnel. The sync loop
//! builds it (`crate::usersync`; the engine's answer for one tunnel is [`Outcome`]), the CLI
//! prints it.

use serde::{Deserialize, Serialize};

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

/// What a sync of one tunnel did; users are counted once however many inbounds they are on.
/// Its fields are part of the API: flattened into [`crate::contract::TunnelSyncSummary`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
    pub failed: usize,
    /// Users the tunnel holds afterwards (unique emails over its inbounds).
    pub total: usize,
    pub guard_tripped: bool,
    /// Users on the tunnel left as they are because their entry in the document is invalid.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held: usize,
    /// Users whose changed credential was not applied (the core could not take the new one):
    /// they keep the old one, live and in the config file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kept: usize,
    /// Users whose live state on the core differed from the desired set before this round
    /// repaired it (cores that list their users: Xray).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drift: usize,
    /// Tags of inbounds skipped because they cannot hold users (single-user or relay
    /// Shadowsocks-2022).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cannot_hold: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

//! The JSON of the `/api` answers as plain serde types, shared by the daemon (which renders
//! them) and the CLI (which reads them).
//!
//! Field names and shapes are the wire format that docs/api.md documents and the web app relies
//! on: renaming a field here changes the API. Because both sides use these types, such a rename
//! is a compile error in the CLI instead of a silent `-` in its tables. Every type is
//! `Serialize + Deserialize`, and the JSON of each is pinned by a test.
//!
//! The constructors from domain, state and lifecycle types live here too, so a handler only
//! picks a type. Nothing here knows about HTTP: no axum, hyper or reqwest.

mod cleanup;
mod legacy;
mod operation;
mod orphan;
mod sync;
mod tunnel;

use serde::{Deserialize, Serialize};

pub use cleanup::{CleanupItem, CleanupResults, CleanupStep, CleanupVerdict};
pub use legacy::{ResourceUsage, UsageList};
pub use operation::{ActionName, BulkFailure, BulkItem, BulkResults, LogsView, OutcomeView};
pub use orphan::{OrphanList, OrphanView};
pub use sync::{Outcome, SyncSummary, TunnelSyncSummary};
pub use tunnel::{
    CheckView, HealthReport, ObservedRestarts, ResourcesView, TunnelHealth, TunnelList, TunnelView,
};

/// Every error answer: `{"error": "<stable code>", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code such as `invalid_id` or `systemd_down`, for programs.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            error: code.to_owned(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests;

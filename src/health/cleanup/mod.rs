//! Cleaning up orphans: a plan from the published orphans ([`plan_cleanup`], pure, in
//! [`crate::domain::cleanup`]), and a [`Cleaner`] that carries it out.
//!
//! The orphans a plan comes from may be a pass old, so every action first re-reads the facts of
//! its one item and applies the same rule again; a tunnel that is not an orphan at that moment
//! is never touched. "Unit without config" is confirmed by a fresh read of the unit over D-Bus
//! and a fresh stat of the config it names ([`TunnelControl::read_unit`]). Unit deletion itself
//! belongs to the lifecycle module ([`TunnelControl::remove_tunnel`]). A config file without
//! unit is removed here; a stray process gets SIGTERM, then SIGKILL after a grace period,
//! through a pidfd opened while its (pid, start time) was still the one the health task
//! reported. Before any of that, the orphan guard looks at the whole plan and at the node's
//! orphans: when it trips, nothing is acted on.

mod execute;
mod pidfd;

use serde::Serialize;

pub use crate::domain::cleanup::{CleanupAction, plan_cleanup};
pub use execute::Cleaner;

use crate::domain::{TunnelId, UnitStatus};

/// What the cleaner needs from the lifecycle: a fresh look at a unit, and deleting a tunnel.
/// Implemented by [`crate::lifecycle::Lifecycle`].
pub trait TunnelControl: Send + Sync {
    type Error: std::fmt::Display + Send;

    /// Deletes tunnel `id` (unit and files). Called only right after the cleaner re-checked
    /// that it is an orphan, and never in a dry run.
    fn remove_tunnel(
        &self,
        id: &TunnelId,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;

    /// Reads unit `xray-tunnel-{id}.service` from systemd now, never from a snapshot: at least
    /// `LoadState`, `ActiveState`, `StateChangeTimestamp` and `ExecStart`. A unit without a
    /// file reads as `LoadState` "not-found".
    fn read_unit(
        &self,
        id: &TunnelId,
    ) -> impl std::future::Future<Output = Result<UnitStatus, Self::Error>> + Send;
}

/// What became of one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum CleanupOutcome {
    /// Done, with what was done.
    Done(String),
    /// Dry run: still an orphan, and this is what would be done.
    WouldDo(String),
    /// Not done because it is no orphan any more, the facts cannot be trusted, or the guard
    /// refused the whole plan: why.
    Skipped(String),
    /// Tried and failed: why.
    Failed(String),
}

/// One action and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanupResult {
    #[serde(flatten)]
    pub action: CleanupAction,
    #[serde(flatten)]
    pub outcome: CleanupOutcome,
}

#[cfg(test)]
mod tests;

//! Cleaning up orphans: a plan from the published orphans ([`plan_cleanup`], pure), and a
//! [`Cleaner`] that carries it out.
//!
//! The orphans a plan comes from may be a pass old, so every action first re-reads the facts of
//! its one item and applies the same rule again; a tunnel that is not an orphan at that moment
//! is never touched. Unit deletion itself belongs to the lifecycle module: the cleaner calls a
//! [`RemoveTunnel`] for it. A config file without unit is removed here; a stray process gets
//! SIGTERM, then SIGKILL after a grace period, each only while its (pid, start time) is still
//! the one the health task reported.

mod execute;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

pub use execute::Cleaner;

use crate::domain::{Orphan, OrphanKind, TunnelId};

/// Deletes a whole tunnel (unit and files); backed by the lifecycle module.
pub trait RemoveTunnel: Send + Sync {
    type Error: std::fmt::Display + Send;

    /// Deletes tunnel `id`. Called only right after the cleaner re-checked that it is an
    /// orphan, and never in a dry run.
    fn remove_tunnel(
        &self,
        id: &TunnelId,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
}

/// One step of a cleanup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CleanupAction {
    /// Delete the tunnel through [`RemoveTunnel`], while one of `reasons` still holds.
    RemoveTunnel {
        #[serde(serialize_with = "display")]
        tunnel: TunnelId,
        #[serde(serialize_with = "kinds")]
        reasons: Vec<OrphanKind>,
    },
    /// Remove `{tunnels.config_dir}/xray-{tunnel}.json`, while no unit exists for it.
    RemoveConfig {
        #[serde(serialize_with = "display")]
        tunnel: TunnelId,
    },
    /// Stop the stray process the health task first saw at `since` under `pid`.
    StopProcess {
        pid: u32,
        #[serde(serialize_with = "unix_seconds")]
        since: SystemTime,
    },
}

/// What became of one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum CleanupOutcome {
    /// Done, with what was done.
    Done(String),
    /// Dry run: still an orphan, and this is what would be done.
    WouldDo(String),
    /// Not done because it is no orphan any more or the facts cannot be trusted: why.
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

/// The actions that would clean up `orphans`: one tunnel removal per tunnel (whatever makes it
/// an orphan: no config, not in the inventory, failed too long), one file removal per config
/// without unit, one stop per stray process. Orphans whose tunnel is not a valid id are left
/// out. Tunnels first, then configs, then processes, each sorted.
pub fn plan_cleanup(orphans: &[Orphan]) -> Vec<CleanupAction> {
    let mut tunnels: Vec<(TunnelId, Vec<OrphanKind>)> = Vec::new();
    let mut configs = Vec::new();
    let mut processes = Vec::new();
    for o in orphans {
        match (o.kind, o.pid) {
            (OrphanKind::StrayProcess, Some(pid)) => processes.push((pid, o.since)),
            (OrphanKind::StrayProcess, None) => {}
            (kind, _) => {
                let Ok(id) = TunnelId::new(&o.tunnel) else {
                    continue;
                };
                if kind == OrphanKind::ConfigWithoutUnit {
                    configs.push(id);
                } else if let Some((_, reasons)) = tunnels.iter_mut().find(|(t, _)| *t == id) {
                    reasons.push(kind);
                } else {
                    tunnels.push((id, vec![kind]));
                }
            }
        }
    }
    tunnels.sort();
    configs.sort();
    configs.dedup();
    processes.sort();
    processes.dedup();
    let tunnels = tunnels.into_iter().map(|(tunnel, mut reasons)| {
        reasons.sort();
        reasons.dedup();
        CleanupAction::RemoveTunnel { tunnel, reasons }
    });
    let configs = configs
        .into_iter()
        .map(|tunnel| CleanupAction::RemoveConfig { tunnel });
    let processes = processes
        .into_iter()
        .map(|(pid, since)| CleanupAction::StopProcess { pid, since });
    tunnels.chain(configs).chain(processes).collect()
}

fn display<S: Serializer>(value: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn kinds<S: Serializer>(kinds: &[OrphanKind], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(kinds.iter().map(|k| k.as_str()))
}

fn unix_seconds<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    s.serialize_f64(since.as_secs_f64())
}

#[cfg(test)]
mod tests;

//! Cleaning up orphans, the pure half: the plan that would clean up a set of orphans, and the
//! guard that refuses a whole plan when too much of the node looks orphaned at once.
//!
//! The guard follows Kubernetes' machine-health-check `maxUnhealthy`: when many things look
//! broken at the same time, the likelier cause is the observer (an inventory that lost its
//! entries, a control plane that deleted every config, a listing that came back empty), and
//! remediating would turn a glitch into an outage. So past the limits nothing is acted on.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use super::{Orphan, OrphanKind, TunnelId};

/// One step of a cleanup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CleanupAction {
    /// Delete the tunnel (unit and files), while one of `reasons` still holds.
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
    /// Stop the stray process the health task first saw at `since` under `pid`, running the
    /// config of `tunnel`.
    StopProcess {
        #[serde(serialize_with = "display")]
        tunnel: TunnelId,
        pid: u32,
        #[serde(serialize_with = "unix_seconds")]
        since: SystemTime,
    },
}

impl CleanupAction {
    /// The tunnel the action concerns.
    pub fn tunnel(&self) -> &TunnelId {
        match self {
            Self::RemoveTunnel { tunnel, .. }
            | Self::RemoveConfig { tunnel }
            | Self::StopProcess { tunnel, .. } => tunnel,
        }
    }
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
        let Ok(id) = TunnelId::new(&o.tunnel) else {
            continue;
        };
        match (o.kind, o.pid) {
            (OrphanKind::StrayProcess, Some(pid)) => processes.push((pid, o.since, id)),
            (OrphanKind::StrayProcess, None) => {}
            (OrphanKind::ConfigWithoutUnit, _) => configs.push(id),
            (kind, _) => match tunnels.iter_mut().find(|(t, _)| *t == id) {
                Some((_, reasons)) => reasons.push(kind),
                None => tunnels.push((id, vec![kind])),
            },
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
        .map(|(pid, since, tunnel)| CleanupAction::StopProcess { tunnel, pid, since });
    tunnels.chain(configs).chain(processes).collect()
}

/// How much of a node may look orphaned at once before the cleanup acts on nothing
/// (`[remediation] max_orphan_fraction`, `max_orphans_per_pass`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardLimits {
    /// Trips when more than this fraction of the node's tunnel units look orphaned.
    pub max_fraction: f64,
    /// Trips when more than this many tunnels look orphaned.
    pub max_per_pass: usize,
}

impl Default for GuardLimits {
    fn default() -> Self {
        Self {
            max_fraction: 0.5,
            max_per_pass: 5,
        }
    }
}

/// The guard refused: how many tunnels looked orphaned, out of how many, and which limit
/// that broke. Its `Display` is the message for logs, audit lines and API answers.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardTrip {
    /// Distinct tunnels the cleanup would act on (stray processes count as their tunnel).
    pub orphaned: usize,
    /// Tunnel units on the node.
    pub tunnels: usize,
    pub limits: GuardLimits,
    pub over_fraction: bool,
    pub over_per_pass: bool,
}

impl GuardLimits {
    /// `Err` when `orphaned` tunnels out of `tunnels` units break a limit: more than
    /// `max_fraction` of them (any orphan at all on a node without tunnel units, since then
    /// the listing itself is suspect), or more than `max_per_pass`. Being exactly at a limit
    /// is allowed. With the default 0.5, a node whose only tunnel is orphaned is refused: one
    /// of one is everything, which is what a broken inventory or control plane looks like
    /// too; raise `max_fraction` to 1.0 to allow it.
    pub fn check(&self, orphaned: usize, tunnels: usize) -> Result<(), GuardTrip> {
        let over_fraction =
            orphaned > 0 && (tunnels == 0 || orphaned as f64 > self.max_fraction * tunnels as f64);
        let over_per_pass = orphaned > self.max_per_pass;
        if !(over_fraction || over_per_pass) {
            return Ok(());
        }
        Err(GuardTrip {
            orphaned,
            tunnels,
            limits: *self,
            over_fraction,
            over_per_pass,
        })
    }

    /// [`GuardLimits::check`] of the distinct tunnels `plan` acts on.
    pub fn check_plan(&self, plan: &[CleanupAction], tunnels: usize) -> Result<(), GuardTrip> {
        let distinct: BTreeSet<&TunnelId> = plan.iter().map(CleanupAction::tunnel).collect();
        self.check(distinct.len(), tunnels)
    }

    /// [`GuardLimits::check_plan`] of the plan that would clean up `orphans`.
    pub fn check_orphans(&self, orphans: &[Orphan], tunnels: usize) -> Result<(), GuardTrip> {
        self.check_plan(&plan_cleanup(orphans), tunnels)
    }
}

impl fmt::Display for GuardTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (orphaned, tunnels) = (self.orphaned, self.tunnels);
        write!(f, "{orphaned} of {tunnels} tunnels look orphaned at once: ")?;
        let mut broken = Vec::new();
        if self.over_fraction {
            broken.push(format!(
                "more than max_orphan_fraction {} of the tunnel units",
                self.limits.max_fraction
            ));
        }
        if self.over_per_pass {
            broken.push(format!(
                "more than max_orphans_per_pass {}",
                self.limits.max_per_pass
            ));
        }
        write!(
            f,
            "{}; acting on none (a broken inventory, control plane or listing looks like this)",
            broken.join(" and ")
        )
    }
}

impl std::error::Error for GuardTrip {}

fn display<S: Serializer>(value: &impl fmt::Display, s: S) -> Result<S::Ok, S::Error> {
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
#[path = "cleanup_tests.rs"]
mod tests;

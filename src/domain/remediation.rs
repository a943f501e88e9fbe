//! The rules of alert-driven remediation: which alerts concern this node and which action, and
//! whether acting on one is allowed right now. Pure; the worker in `ops::remediate` gathers the
//! facts and carries the decision out.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::{Orphan, OrphanKind, TunnelId};

/// The alert label that asks for an action, and the one action the warden knows.
pub const ACTION_LABEL: &str = "warden_action";
pub const CLEANUP_ORPHAN: &str = "cleanup_orphan";

/// The orphan kinds an alert may clean up automatically: a unit whose config the app deleted,
/// and a core running a config of config_dir outside every unit. Anything else (a config file
/// without unit, a unit absent from the inventory, a unit failed too long) holds or may hold an
/// operator's data and is left to people.
pub const ACTIONABLE: [OrphanKind; 2] = [OrphanKind::UnitWithoutConfig, OrphanKind::StrayProcess];

/// Every decision about one alert: the `result` label of `xray_warden_alert_actions_total` and
/// the audit line's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertResult {
    Done,
    DryRun,
    RefusedNotOrphan,
    RefusedTooYoung,
    RefusedCooldown,
    RefusedBudget,
    RefusedGuard,
    RefusedDisabled,
    Duplicate,
    IgnoredResolved,
    IgnoredOtherNode,
    IgnoredUnknownAction,
    IgnoredInvalid,
    Failed,
}

impl AlertResult {
    pub const ALL: [AlertResult; 14] = [
        Self::Done,
        Self::DryRun,
        Self::RefusedNotOrphan,
        Self::RefusedTooYoung,
        Self::RefusedCooldown,
        Self::RefusedBudget,
        Self::RefusedGuard,
        Self::RefusedDisabled,
        Self::Duplicate,
        Self::IgnoredResolved,
        Self::IgnoredOtherNode,
        Self::IgnoredUnknownAction,
        Self::IgnoredInvalid,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::DryRun => "dry_run",
            Self::RefusedNotOrphan => "refused_not_orphan",
            Self::RefusedTooYoung => "refused_too_young",
            Self::RefusedCooldown => "refused_cooldown",
            Self::RefusedBudget => "refused_budget",
            Self::RefusedGuard => "refused_guard",
            Self::RefusedDisabled => "refused_disabled",
            Self::Duplicate => "duplicate",
            Self::IgnoredResolved => "ignored_resolved",
            Self::IgnoredOtherNode => "ignored_other_node",
            Self::IgnoredUnknownAction => "ignored_unknown_action",
            Self::IgnoredInvalid => "ignored_invalid",
            Self::Failed => "failed",
        }
    }
}

/// A decision that is not "act", with why, for the log and the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub result: AlertResult,
    pub why: String,
}

impl Refusal {
    fn new(result: AlertResult, why: impl Into<String>) -> Self {
        Self {
            result,
            why: why.into(),
        }
    }
}

/// An alert as the rules see it (from Alertmanager's payload).
#[derive(Debug, Clone, Copy)]
pub struct AlertView<'a> {
    pub status: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub fingerprint: &'a str,
    pub starts_at: &'a str,
}

/// Which node this warden is and how alerts name nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node: String,
    pub node_label: String,
}

/// An alert that asks this node to clean up a tunnel's orphans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupRequest {
    pub tunnel: TunnelId,
    /// The alert's `kind` label when it has one: only that kind is cleaned.
    pub kind: Option<OrphanKind>,
    /// `fingerprint@startsAt`: one incident, the same on every re-send and on both peers of an
    /// Alertmanager HA pair.
    pub incident: String,
}

/// Whether `alert` asks THIS node for an action it knows; per alert, never per group.
pub fn triage(alert: AlertView<'_>, me: &NodeIdentity) -> Result<CleanupRequest, Refusal> {
    use AlertResult::*;
    let label = |name: &str| alert.labels.get(name).map(String::as_str);
    if alert.status != "firing" {
        let why = format!("alert status is {:?}, not firing", alert.status);
        return Err(Refusal::new(IgnoredResolved, why));
    }
    match label(ACTION_LABEL) {
        Some(CLEANUP_ORPHAN) => {}
        other => {
            let why = format!("{ACTION_LABEL}={other:?} is no action this warden knows");
            return Err(Refusal::new(IgnoredUnknownAction, why));
        }
    }
    match label(&me.node_label) {
        Some(node) if node == me.node => {}
        other => {
            let why = format!("{}={other:?} is not this node ({})", me.node_label, me.node);
            return Err(Refusal::new(IgnoredOtherNode, why));
        }
    }
    let tunnel = label("tunnel").unwrap_or_default();
    let tunnel = TunnelId::new(tunnel)
        .map_err(|e| Refusal::new(IgnoredInvalid, format!("tunnel label {tunnel:?}: {e}")))?;
    let kind = match label("kind") {
        None => None,
        Some(text) => match ACTIONABLE.into_iter().find(|k| k.as_str() == text) {
            Some(kind) => Some(kind),
            None => {
                let why = format!("orphans of kind {text:?} are never cleaned automatically");
                return Err(Refusal::new(IgnoredInvalid, why));
            }
        },
    };
    if alert.fingerprint.is_empty() || alert.starts_at.is_empty() {
        let why = "the alert has no fingerprint or startsAt";
        return Err(Refusal::new(IgnoredInvalid, why));
    }
    Ok(CleanupRequest {
        tunnel,
        kind,
        incident: format!("{}@{}", alert.fingerprint, alert.starts_at),
    })
}

/// The limits an action must respect (`[remediation]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub enabled: bool,
    pub dry_run: bool,
    pub min_orphan_age: Duration,
    pub cooldown: Duration,
    pub max_actions_per_hour: usize,
}

/// What the warden knows at the moment of deciding.
#[derive(Debug, Clone)]
pub struct Moment<'a> {
    pub now: SystemTime,
    /// The orphans of the last health pass.
    pub orphans: &'a [Orphan],
    /// Whether this incident was already acted on (persisted across restarts).
    pub duplicate: bool,
    /// The last action on this tunnel, if any.
    pub last_action: Option<SystemTime>,
    /// Actions in the hour before `now`, over every tunnel.
    pub actions_last_hour: usize,
    /// The orphan guard's verdict over the whole node: `Err(why)` when tripped.
    pub guard: Result<(), String>,
}

/// Acting is allowed: clean up these orphans (dry run or not).
#[derive(Debug, Clone, PartialEq)]
pub struct Go {
    pub orphans: Vec<Orphan>,
    pub dry_run: bool,
}

/// Whether to act on `request` now. Checks, in order: enabled, not a duplicate, still an orphan
/// of an actionable kind, old enough, the guard, the tunnel's cooldown, the hourly budget.
pub fn decide(request: &CleanupRequest, policy: &Policy, m: &Moment<'_>) -> Result<Go, Refusal> {
    use AlertResult::*;
    if !policy.enabled {
        return Err(Refusal::new(
            RefusedDisabled,
            "remediation.enabled is false",
        ));
    }
    if m.duplicate {
        let why = format!("incident {} was already acted on", request.incident);
        return Err(Refusal::new(Duplicate, why));
    }
    let wanted = |k: OrphanKind| {
        request
            .kind
            .map_or(ACTIONABLE.contains(&k), |want| want == k)
    };
    let orphans: Vec<&Orphan> = m
        .orphans
        .iter()
        .filter(|o| o.tunnel == request.tunnel.as_str() && wanted(o.kind))
        .collect();
    if orphans.is_empty() {
        let why = format!("{} is no orphan the warden can see", request.tunnel);
        return Err(Refusal::new(RefusedNotOrphan, why));
    }
    let old: Vec<Orphan> = orphans
        .into_iter()
        .filter(|o| age(o.since, m.now) >= policy.min_orphan_age)
        .cloned()
        .collect();
    if old.is_empty() {
        let why = format!(
            "{} has been an orphan for less than {}",
            request.tunnel,
            humantime::format_duration(policy.min_orphan_age)
        );
        return Err(Refusal::new(RefusedTooYoung, why));
    }
    if let Err(why) = &m.guard {
        return Err(Refusal::new(RefusedGuard, why.clone()));
    }
    if let Some(last) = m.last_action
        && age(last, m.now) < policy.cooldown
    {
        let why = format!(
            "{} was acted on {}s ago",
            request.tunnel,
            age(last, m.now).as_secs()
        );
        return Err(Refusal::new(RefusedCooldown, why));
    }
    if m.actions_last_hour >= policy.max_actions_per_hour {
        let why = format!(
            "{} actions in the last hour (max_actions_per_hour = {})",
            m.actions_last_hour, policy.max_actions_per_hour
        );
        return Err(Refusal::new(RefusedBudget, why));
    }
    Ok(Go {
        orphans: old,
        dry_run: policy.dry_run,
    })
}

fn age(since: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(since).unwrap_or_default()
}

#[cfg(test)]
#[path = "remediation_tests.rs"]
mod tests;

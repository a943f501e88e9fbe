//! What `POST /api/v1/orphans/cleanup` answers: each planned action and what became of it.
//!
//! The JSON is the one [`CleanupResult`] has always had, flat:
//! `{"action": "remove_tunnel", "tunnel": "b", "reasons": [...], "outcome": "done", "detail": "..."}`.

use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::health::cleanup::{CleanupAction, CleanupOutcome, CleanupResult};

/// `{"dry_run": bool, "results": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupResults {
    pub dry_run: bool,
    pub results: Vec<CleanupItem>,
}

impl CleanupResults {
    pub fn new(dry_run: bool, results: &[CleanupResult]) -> Self {
        Self {
            dry_run,
            results: results.iter().map(CleanupItem::from).collect(),
        }
    }
}

/// One action and its verdict, in one flat object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupItem {
    #[serde(flatten)]
    pub step: CleanupStep,
    #[serde(flatten)]
    pub verdict: CleanupVerdict,
}

/// The action, tagged by `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CleanupStep {
    /// Delete the whole tunnel; `reasons` are orphan kinds.
    RemoveTunnel {
        tunnel: String,
        reasons: Vec<String>,
    },
    /// Remove the tunnel's config file, which has no unit.
    RemoveConfig { tunnel: String },
    /// Stop the stray core of `tunnel` first seen at `since` (Unix seconds) under `pid`.
    StopProcess {
        tunnel: String,
        pid: u32,
        since: f64,
    },
}

/// What became of the action, tagged by `outcome`, with its `detail` for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum CleanupVerdict {
    Done(String),
    /// Dry run: still an orphan, and this is what would be done.
    WouldDo(String),
    /// Left alone: no orphan any more, or the facts could not be trusted.
    Skipped(String),
    Failed(String),
}

impl From<&CleanupResult> for CleanupItem {
    fn from(r: &CleanupResult) -> Self {
        let step = match &r.action {
            CleanupAction::RemoveTunnel { tunnel, reasons } => CleanupStep::RemoveTunnel {
                tunnel: tunnel.to_string(),
                reasons: reasons.iter().map(|k| k.as_str().to_owned()).collect(),
            },
            CleanupAction::RemoveConfig { tunnel } => CleanupStep::RemoveConfig {
                tunnel: tunnel.to_string(),
            },
            CleanupAction::StopProcess { tunnel, pid, since } => CleanupStep::StopProcess {
                tunnel: tunnel.to_string(),
                pid: *pid,
                since: since
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64(),
            },
        };
        let verdict = match &r.outcome {
            CleanupOutcome::Done(d) => CleanupVerdict::Done(d.clone()),
            CleanupOutcome::WouldDo(d) => CleanupVerdict::WouldDo(d.clone()),
            CleanupOutcome::Skipped(d) => CleanupVerdict::Skipped(d.clone()),
            CleanupOutcome::Failed(d) => CleanupVerdict::Failed(d.clone()),
        };
        Self { step, verdict }
    }
}

impl CleanupVerdict {
    /// The `outcome` tag: `done`, `would_do`, `skipped` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Done(_) => "done",
            Self::WouldDo(_) => "would_do",
            Self::Skipped(_) => "skipped",
            Self::Failed(_) => "failed",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Self::Done(d) | Self::WouldDo(d) | Self::Skipped(d) | Self::Failed(d) => d,
        }
    }
}

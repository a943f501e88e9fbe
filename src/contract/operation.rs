//! What the mutating tunnel routes answer: one operation's outcome, a bulk operation's results,
//! and the log tail.

use serde::{Deserialize, Serialize};

use crate::domain::TunnelId;
use crate::lifecycle::{Action, Outcome};

/// What an operation did to a tunnel, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionName {
    Created,
    Replaced,
    Started,
    Stopped,
    Restarted,
    Deleted,
}

impl ActionName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Replaced => "replaced",
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::Restarted => "restarted",
            Self::Deleted => "deleted",
        }
    }
}

impl From<Action> for ActionName {
    fn from(action: Action) -> Self {
        match action {
            Action::Created => Self::Created,
            Action::Replaced => Self::Replaced,
            Action::Started => Self::Started,
            Action::Stopped => Self::Stopped,
            Action::Restarted => Self::Restarted,
            Action::Deleted => Self::Deleted,
        }
    }
}

/// One tunnel operation that succeeded: `{"id", "unit", "action", "job"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeView {
    pub id: String,
    pub unit: String,
    pub action: ActionName,
    /// The result of the operation's systemd job (`done`).
    pub job: String,
}

impl From<&Outcome> for OutcomeView {
    fn from(o: &Outcome) -> Self {
        Self {
            id: o.id.to_string(),
            unit: o.unit.clone(),
            action: o.action.into(),
            job: o.job.to_string(),
        }
    }
}

/// One tunnel's operation that failed, inside a bulk answer: `{"id", "error", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkFailure {
    pub id: String,
    /// The stable code the same failure has as an error answer.
    pub error: String,
    pub message: String,
}

/// One tunnel's result in a bulk answer: its outcome or its failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BulkItem {
    Done(OutcomeView),
    Failed(BulkFailure),
}

impl BulkItem {
    pub fn done(outcome: &Outcome) -> Self {
        Self::Done(outcome.into())
    }

    pub fn failed(id: &TunnelId, code: &str, message: impl Into<String>) -> Self {
        Self::Failed(BulkFailure {
            id: id.to_string(),
            error: code.to_owned(),
            message: message.into(),
        })
    }
}

/// What restart-all and the emergency cleanup answer: one result per tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkResults {
    pub results: Vec<BulkItem>,
}

/// `GET /api/v1/tunnels/{id}/logs`: the last lines of the tunnel's log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsView {
    pub id: String,
    pub lines: Vec<String>,
}

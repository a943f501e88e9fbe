//! Why an operation did not happen, in variants every adapter maps to its own answer.

use crate::lifecycle::LifecycleError;
use crate::systemd::JobResult;

/// A refused or failed operation.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The daemon was started without tunnel management (no bus client wired in).
    #[error("tunnel management is off")]
    ManagementOff,
    /// No users source is configured, so there is nothing to sync.
    #[error("no users source is configured")]
    SyncOff,
    /// The bus connection to systemd is down right now; nothing was touched.
    #[error("no connection to systemd's bus right now")]
    SystemdDown,
    /// The daemon is shutting down and no longer takes new work.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The sync round asked for is still running; it will finish on its own.
    #[error("the sync is still running")]
    SyncTimeout,
    /// The orphan guard refused the whole cleanup: too many orphans at once.
    #[error("cleanup refused by the orphan guard: {0}")]
    Guard(String),
    /// The lifecycle refused or failed; its variant says which.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

impl OpError {
    /// A stable, machine-readable code: the API's `error` field and the audit line's result.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ManagementOff => "off",
            Self::SyncOff => "sync_off",
            Self::SystemdDown => "systemd_down",
            Self::ShuttingDown => "shutting_down",
            Self::SyncTimeout => "timeout",
            Self::Guard(_) => "refused_guard",
            Self::Lifecycle(err) => lifecycle_code(err),
        }
    }
}

fn lifecycle_code(err: &LifecycleError) -> &'static str {
    match err {
        LifecycleError::InvalidId(_) => "invalid_id",
        LifecycleError::InvalidConfig { .. } => "invalid_config",
        LifecycleError::CoreRejected { .. } => "config_rejected",
        LifecycleError::PolicyRefused { .. } => "refused_policy",
        LifecycleError::StartFailed { .. } => "start_failed",
        LifecycleError::NotFound { .. } => "not_found",
        LifecycleError::ConfirmationRequired => "confirmation_required",
        LifecycleError::JobFailed {
            result: JobResult::Canceled,
            ..
        } => "job_canceled",
        LifecycleError::JobFailed { .. } => "job_failed",
        LifecycleError::Systemd(_) => "systemd",
        _ => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(OpError::SystemdDown.code(), "systemd_down");
        assert_eq!(OpError::Guard("x".into()).code(), "refused_guard");
        let err = OpError::from(LifecycleError::ConfirmationRequired);
        assert_eq!(err.code(), "confirmation_required");
        let policy = OpError::from(LifecycleError::PolicyRefused { reasons: vec![] });
        assert_eq!(policy.code(), "refused_policy");
        let start = LifecycleError::StartFailed {
            unit: "u".into(),
            job: "start",
            reason: "r".into(),
        };
        assert_eq!(OpError::from(start).code(), "start_failed");
        let bad = crate::domain::TunnelId::new("../x").unwrap_err();
        assert_eq!(
            OpError::from(LifecycleError::from(bad)).code(),
            "invalid_id"
        );
    }
}

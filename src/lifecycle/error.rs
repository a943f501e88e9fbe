//! Why a lifecycle operation failed, in variants an HTTP layer maps to statuses.

use std::io;
use std::path::PathBuf;

use crate::domain::{TunnelId, TunnelIdError};
use crate::systemd::{JobResult, SystemdError};

/// A failed lifecycle operation. Each variant names the HTTP status it is meant for.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The tunnel id does not match `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`. Nothing was touched.
    /// HTTP 400.
    #[error("invalid tunnel id: {0}")]
    InvalidId(#[from] TunnelIdError),
    /// The config is not a JSON object. Nothing was touched. HTTP 400 (not JSON) or 422
    /// (JSON, but not an object).
    #[error("invalid tunnel config: {reason}")]
    InvalidConfig { reason: String },
    /// The config sends traffic where the tunnel policy forbids (the warden's own API, cloud
    /// metadata, ...: [`crate::domain::config_policy`]); one reason per refused place. Nothing
    /// was touched. HTTP 422.
    #[error("the config breaks the tunnel policy: {}", reasons.join("; "))]
    PolicyRefused { reasons: Vec<String> },
    /// The unit started but did not stay up (the core exited or restarted within the settle
    /// time) or its API did not answer; `reason` says which, with the core's own complaint
    /// from its log. The old files and unit are back (a new tunnel is removed). HTTP 422.
    #[error("{unit}: the core did not keep running after its {job}: {reason}")]
    StartFailed {
        unit: String,
        job: &'static str,
        reason: String,
    },
    /// The core's own config test refused the config; `reason` is the tail of its output.
    /// Nothing was installed. HTTP 422.
    #[error("the core rejects the config: {reason}")]
    CoreRejected { reason: String },
    /// The core's config test could not run or did not finish (missing binary, timeout). Nothing
    /// was installed. HTTP 500.
    #[error("the core's config test did not run: {0}")]
    CoreTest(crate::core::CoreTestError),
    /// The tunnel has neither a unit file nor a config. Nothing was touched. HTTP 404.
    #[error("tunnel {id} does not exist")]
    NotFound { id: TunnelId },
    /// A call to systemd failed or its job did not end in time. HTTP 502 (bus unreachable or
    /// systemd refusing the call) or 500.
    #[error("systemd: {0}")]
    Systemd(#[from] SystemdError),
    /// systemd ran the job and it ended otherwise than `done` (`failed`, `canceled`, `timeout`,
    /// `dependency`, `skipped`, ...). After a failed create the old files are back. HTTP 409
    /// (`canceled`: another job replaced it) or 500.
    #[error("{unit}: the {job} job ended with result {result}")]
    JobFailed {
        unit: String,
        job: &'static str,
        result: JobResult,
    },
    /// A destructive operation was asked for without its explicit confirmation. Nothing was
    /// touched. HTTP 400.
    #[error("this operation removes every tunnel and needs an explicit confirmation")]
    ConfirmationRequired,
    /// The unit could not be rendered: a bad `tunnels.*` setting or unit template. Nothing was
    /// installed. HTTP 500 (the node's configuration, not the request, is wrong).
    #[error("cannot render the unit: {reason}")]
    Template { reason: String },
    /// `tunnels.user` or `tunnels.group` is not in /etc/passwd or /etc/group. Nothing was
    /// installed. HTTP 500.
    #[error("{kind} {name:?} does not exist")]
    UnknownAccount { kind: &'static str, name: String },
    /// Reading, writing or removing a file failed; `action` says which and `path` where.
    /// HTTP 500.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl LifecycleError {
    pub(super) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

impl From<crate::core::CoreTestError> for LifecycleError {
    fn from(err: crate::core::CoreTestError) -> Self {
        match err {
            crate::core::CoreTestError::Rejected(reason) => Self::CoreRejected { reason },
            other => Self::CoreTest(other),
        }
    }
}

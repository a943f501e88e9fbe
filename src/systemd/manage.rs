//! Managing units over D-Bus: start, stop and restart jobs awaited to their end, enabling and
//! disabling unit files, `daemon-reload` and `reset-failed`.
//!
//! A job method (`StartUnit`, ...) only queues a job; systemd announces its end with the
//! Manager's `JobRemoved(id, job, unit, result)` signal. The match rule for that signal is
//! installed BEFORE the method is called, so a job that ends at once cannot be missed; systemd
//! sends `JobRemoved` to the client that queued the job even when it never called `Subscribe`.

use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::MatchRule;
use zbus::zvariant::OwnedObjectPath;

use super::{Client, MANAGER_IFACE, MANAGER_PATH, SYSTEMD, SystemdError, decode, is_no_such_unit};

/// How long a start, stop or restart job may take before the wait is abandoned. Longer than
/// systemd's default `TimeoutStartSec`/`TimeoutStopSec` (90 s), so systemd's own timeout (the
/// `timeout` result) normally comes first.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// How a systemd job ended: the `result` string of `JobRemoved`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobResult {
    /// The job did what it was asked (for a start of a `Type=exec` unit: the core was exec'd).
    Done,
    /// Another job replaced it before it finished.
    Canceled,
    /// systemd's own job timeout fired.
    Timeout,
    /// The unit failed (start: the process could not be set up or exited at once).
    Failed,
    /// A unit this one requires failed.
    Dependency,
    /// Nothing to do, e.g. the unit's conditions were not met.
    Skipped,
    /// A result this version does not know (`invalid`, `assert`, `unsupported`, ...).
    Other(String),
}

impl JobResult {
    /// Reads systemd's result string.
    pub fn parse(value: &str) -> Self {
        match value {
            "done" => Self::Done,
            "canceled" => Self::Canceled,
            "timeout" => Self::Timeout,
            "failed" => Self::Failed,
            "dependency" => Self::Dependency,
            "skipped" => Self::Skipped,
            other => Self::Other(other.to_owned()),
        }
    }

    /// systemd's result string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Done => "done",
            Self::Canceled => "canceled",
            Self::Timeout => "timeout",
            Self::Failed => "failed",
            Self::Dependency => "dependency",
            Self::Skipped => "skipped",
            Self::Other(other) => other,
        }
    }

    /// Whether the job succeeded.
    pub fn is_done(&self) -> bool {
        *self == Self::Done
    }
}

impl fmt::Display for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job body as `JobRemoved` carries it: (id, job path, unit, result).
type JobRemoved = (u32, OwnedObjectPath, String, String);

impl Client {
    /// Starts `unit` (mode `replace`) and waits, up to [`JOB_TIMEOUT`], for the job's result.
    pub async fn start_unit(&self, unit: &str) -> Result<JobResult, SystemdError> {
        self.run_job("StartUnit", unit).await
    }

    /// Stops `unit` (mode `replace`) and waits for the job's result. A unit systemd cannot
    /// load (no unit file) and that is not running is already stopped: [`JobResult::Done`].
    pub async fn stop_unit(&self, unit: &str) -> Result<JobResult, SystemdError> {
        match self.run_job("StopUnit", unit).await {
            Err(SystemdError::Call { source, .. }) if is_no_such_unit(&source) => {
                Ok(JobResult::Done)
            }
            other => other,
        }
    }

    /// Restarts `unit` (mode `replace`; a stopped unit is started) and waits for the job's result.
    pub async fn restart_unit(&self, unit: &str) -> Result<JobResult, SystemdError> {
        self.run_job("RestartUnit", unit).await
    }

    /// Enables unit files by name (`EnableUnitFiles`, runtime=false, force=true): the symlinks of
    /// their `[Install]` section are created, replacing conflicting ones.
    pub async fn enable(&self, units: &[&str]) -> Result<(), SystemdError> {
        let reply = self
            .call_manager("EnableUnitFiles", &(units, false, true))
            .await?;
        let _: (bool, Vec<(String, String, String)>) = decode("EnableUnitFiles", &reply)?;
        Ok(())
    }

    /// Disables unit files by name (`DisableUnitFiles`, runtime=false); disabling a unit that
    /// is not enabled is not an error.
    pub async fn disable(&self, units: &[&str]) -> Result<(), SystemdError> {
        let reply = self
            .call_manager("DisableUnitFiles", &(units, false))
            .await?;
        let _: Vec<(String, String, String)> = decode("DisableUnitFiles", &reply)?;
        Ok(())
    }

    /// `daemon-reload`: systemd answers once the unit files are read again.
    pub async fn reload(&self) -> Result<(), SystemdError> {
        self.call_manager("Reload", &()).await.map(drop)
    }

    /// Clears the failed state and restart counter of `unit`; a unit systemd has not loaded is
    /// not an error.
    pub async fn reset_failed(&self, unit: &str) -> Result<(), SystemdError> {
        match self.call_manager("ResetFailedUnit", &(unit,)).await {
            Ok(_) => Ok(()),
            Err(SystemdError::Call { source, .. }) if is_no_such_unit(&source) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Queues a job with `method` on `unit` and waits for its `JobRemoved`.
    async fn run_job(&self, method: &'static str, unit: &str) -> Result<JobResult, SystemdError> {
        let queued = self.queue_job(method, &(unit, "replace")).await?;
        self.job_result(method, queued, JOB_TIMEOUT).await
    }

    /// Calls `method`, which answers with a job's path, with the `JobRemoved` match installed
    /// first: a job ending at once still finds its signal queued.
    pub(super) async fn queue_job<B>(
        &self,
        method: &'static str,
        body: &B,
    ) -> Result<Queued, SystemdError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let rule = MatchRule::builder()
            .sender(SYSTEMD)
            .and_then(|b| b.path(MANAGER_PATH))
            .and_then(|b| b.interface(MANAGER_IFACE))
            .and_then(|b| b.member("JobRemoved"));
        let signals = self.signal_stream(rule).await?;
        let reply = self.call_manager(method, body).await?;
        let job: OwnedObjectPath = decode(method, &reply)?;
        Ok(Queued { signals, job })
    }

    /// Waits up to `timeout` for the `JobRemoved` of a queued job.
    pub(super) async fn job_result(
        &self,
        method: &'static str,
        queued: Queued,
        timeout: Duration,
    ) -> Result<JobResult, SystemdError> {
        let Queued { mut signals, job } = queued;
        let wait = async {
            while let Some(msg) = signals.next().await {
                let Ok(msg) = msg else { continue };
                let Ok((_, path, _, result)) = msg.body().deserialize::<JobRemoved>() else {
                    continue;
                };
                if path == job {
                    return Ok(JobResult::parse(&result));
                }
            }
            Err(SystemdError::Disconnected)
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| SystemdError::Timeout { method, timeout })?
    }
}

/// A queued job and the signals that will announce its end.
pub(super) struct Queued {
    signals: zbus::MessageStream,
    job: OwnedObjectPath,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_results_round_trip() {
        for text in [
            "done",
            "canceled",
            "timeout",
            "failed",
            "dependency",
            "skipped",
        ] {
            let result = JobResult::parse(text);
            assert!(!matches!(result, JobResult::Other(_)), "{text}");
            assert_eq!(result.as_str(), text);
        }
        assert_eq!(
            JobResult::parse("assert"),
            JobResult::Other("assert".into())
        );
        assert_eq!(JobResult::parse("assert").to_string(), "assert");
        assert!(JobResult::Done.is_done());
        assert!(!JobResult::Skipped.is_done());
    }
}

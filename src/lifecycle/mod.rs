//! Tunnel lifecycle: creating (or replacing), starting, stopping, restarting and deleting
//! `xray-tunnel-{id}.service` units with their configs, plus restart-all, an emergency cleanup
//! and the tail of a tunnel's log.
//!
//! Files: the unit `{unit_dir}/xray-tunnel-{id}.service` (0644, rendered from the template in
//! [`template`]), the config `{config_dir}/xray-{id}.json` (0640, root's, group `tunnels.group`:
//! the tunnel reads it and cannot change it; the dir 0750 root:`tunnels.group`) and the log
//! `{log_dir}/xray-{id}.log` (the dir 0750 root's), which systemd appends to and which survives
//! a delete. Both dirs must be root's and closed to group and others' writes ([`files`]); the
//! core's config test runs as `tunnels.user` in a transient unit ([`crate::core::Tester`]). Every systemd action goes over D-Bus ([`Client`]) and waits
//! for its job's result. `unit_dir` must be a directory systemd loads units from.
//!
//! A `Lifecycle` takes no lock of its own: its callers hold the one operation lock
//! (`crate::ops`), so two requests never interleave their writes and jobs.

mod accounts;
mod bulk;
mod control;
mod create;
mod error;
mod files;
mod logs;
mod settle;
pub mod template;

use std::path::Path;

pub use error::LifecycleError;
pub use files::Paths;
pub use logs::{MAX_BYTES as LOG_MAX_BYTES, MAX_LINES as LOG_MAX_LINES};
pub use settle::API_WAIT as START_API_WAIT;

use crate::config::TunnelsConfig;
use crate::domain::TunnelId;
use crate::systemd::{Client, JobResult};

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A new tunnel was installed, enabled and started.
    Created,
    /// An existing tunnel got a new config and unit and was restarted.
    Replaced,
    /// The unit was started.
    Started,
    /// The unit was stopped (it stays enabled).
    Stopped,
    /// The unit was restarted (or started, if it was stopped).
    Restarted,
    /// The unit was stopped and disabled, and its unit file and config removed.
    Deleted,
}

/// A successful operation on one tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub id: TunnelId,
    /// `xray-tunnel-{id}.service`.
    pub unit: String,
    pub action: Action,
    /// The result of the operation's systemd job (start, stop or restart): always
    /// [`JobResult::Done`] here, since any other result is a [`LifecycleError::JobFailed`].
    pub job: JobResult,
}

/// One tunnel's result in a bulk operation.
pub type BulkResult = (TunnelId, Result<Outcome, LifecycleError>);

/// Manages the tunnels of one node through one systemd connection.
#[derive(Debug)]
pub struct Lifecycle {
    client: Client,
    tunnels: TunnelsConfig,
}

impl Lifecycle {
    /// A manager acting through `client` on the tunnels `tunnels` describes. The unit template
    /// file, if any, is read at every create, so edits apply to the next one.
    pub fn new(client: Client, tunnels: TunnelsConfig) -> Self {
        Self { client, tunnels }
    }

    /// Validates a tunnel id given as text (from a URL, a CLI argument). Entry points taking
    /// text call this first, so a bad id touches no file and no unit.
    pub fn parse_id(id: &str) -> Result<TunnelId, LifecycleError> {
        Ok(TunnelId::new(id)?)
    }

    /// Where tunnel `id`'s unit, config and log are.
    pub fn paths(&self, id: &TunnelId) -> Paths {
        Paths::of(&self.tunnels, id)
    }

    /// Starts tunnel `id`. [`LifecycleError::NotFound`] without a unit file.
    pub async fn start(&self, id: &TunnelId) -> Result<Outcome, LifecycleError> {
        self.job(id, Action::Started).await
    }

    /// Stops tunnel `id` (it stays enabled). [`LifecycleError::NotFound`] without a unit file.
    pub async fn stop(&self, id: &TunnelId) -> Result<Outcome, LifecycleError> {
        self.job(id, Action::Stopped).await
    }

    /// Restarts tunnel `id` (a stopped one is started). [`LifecycleError::NotFound`] without a
    /// unit file.
    pub async fn restart(&self, id: &TunnelId) -> Result<Outcome, LifecycleError> {
        self.job(id, Action::Restarted).await
    }

    /// The last `lines` lines of tunnel `id`'s log, oldest first: at most [`LOG_MAX_LINES`],
    /// from at most the last [`LOG_MAX_BYTES`] of the file. A tunnel whose core has not written
    /// yet has an empty log; [`LifecycleError::NotFound`] when there is no log, unit or config.
    pub async fn logs(&self, id: &TunnelId, lines: usize) -> Result<Vec<String>, LifecycleError> {
        let paths = self.paths(id);
        let not_found = LifecycleError::NotFound { id: id.clone() };
        blocking(move || match logs::tail(&paths.log, lines) {
            Ok(lines) => Ok(lines),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if paths.unit.exists() || paths.config.exists() {
                    Ok(Vec::new())
                } else {
                    Err(not_found)
                }
            }
            Err(e) => Err(LifecycleError::io("read", &paths.log)(e)),
        })
        .await
    }

    /// Runs the job of `action` on an existing tunnel.
    async fn job(&self, id: &TunnelId, action: Action) -> Result<Outcome, LifecycleError> {
        let unit = id.unit_name();
        if !exists(&self.paths(id).unit).await? {
            return Err(LifecycleError::NotFound { id: id.clone() });
        }
        let (job, result) = match action {
            Action::Started => ("start", self.client.start_unit(&unit).await?),
            Action::Stopped => ("stop", self.client.stop_unit(&unit).await?),
            _ => ("restart", self.client.restart_unit(&unit).await?),
        };
        tracing::info!(tunnel = %id, job, %result, "tunnel job finished");
        outcome(id, action, job, result)
    }
}

/// An [`Outcome`] when `result` is done, else [`LifecycleError::JobFailed`].
fn outcome(
    id: &TunnelId,
    action: Action,
    job: &'static str,
    result: JobResult,
) -> Result<Outcome, LifecycleError> {
    let unit = id.unit_name();
    if !result.is_done() {
        return Err(LifecycleError::JobFailed { unit, job, result });
    }
    Ok(Outcome {
        id: id.clone(),
        unit,
        action,
        job: result,
    })
}

async fn exists(path: &Path) -> Result<bool, LifecycleError> {
    tokio::fs::try_exists(path)
        .await
        .map_err(LifecycleError::io("look for", path))
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T, F>(work: F) -> Result<T, LifecycleError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, LifecycleError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

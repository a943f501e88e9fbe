//! Deleting tunnels: one, or every one in an emergency; and restarting every tunnel.

use std::collections::BTreeSet;

use super::files::{self, Paths};
use super::{Action, BulkResult, Lifecycle, LifecycleError, Outcome, blocking, outcome};
use crate::domain::TunnelId;

impl Lifecycle {
    /// Deletes tunnel `id`: stops and disables the unit, removes its unit file and config and
    /// reloads systemd. The log file stays. A tunnel with neither a unit file nor a config is
    /// [`LifecycleError::NotFound`] and nothing is touched; a stop job that does not end `done`
    /// is [`LifecycleError::JobFailed`] and the files stay.
    pub async fn delete(&self, id: &TunnelId) -> Result<Outcome, LifecycleError> {
        let paths = self.paths(id);
        let (unit_exists, config_exists) = {
            let paths = paths.clone();
            blocking(move || Ok((paths.unit.exists(), paths.config.exists()))).await?
        };
        if !unit_exists && !config_exists {
            return Err(LifecycleError::NotFound { id: id.clone() });
        }
        let done = self.remove(id, &paths).await?;
        self.client.reload().await?;
        self.forget_failure(id).await;
        tracing::info!(tunnel = %id, "tunnel deleted");
        Ok(done)
    }

    /// Restarts every tunnel that has a unit file in `unit_dir` (stopped ones are started), one
    /// after the other, in id order; the result of each. Fails as a whole only when the unit dir
    /// cannot be read.
    pub async fn restart_all(&self) -> Result<Vec<BulkResult>, LifecycleError> {
        let tunnels = self.tunnels.clone();
        let ids = blocking(move || {
            let ids = files::all_tunnels(&tunnels)
                .map_err(LifecycleError::io("list", &tunnels.unit_dir))?;
            Ok(ids
                .into_iter()
                .filter(|id| Paths::of(&tunnels, id).unit.exists())
                .collect::<Vec<_>>())
        })
        .await?;
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            let result = self.job(&id, Action::Restarted).await;
            results.push((id, result));
        }
        Ok(results)
    }

    /// Removes EVERY tunnel: each unit file in `unit_dir`, each config in `config_dir` and each
    /// tunnel unit systemd still has loaded is stopped, disabled and its files removed; then one
    /// reload. Refused with [`LifecycleError::ConfirmationRequired`] unless `confirm` is true.
    /// Logs stay. Returns the result of each tunnel; a failed one does not stop the others.
    pub async fn emergency_cleanup(
        &self,
        confirm: bool,
    ) -> Result<Vec<BulkResult>, LifecycleError> {
        if !confirm {
            return Err(LifecycleError::ConfirmationRequired);
        }
        tracing::warn!("emergency cleanup: removing every tunnel");
        let tunnels = self.tunnels.clone();
        let on_disk = blocking(move || {
            files::all_tunnels(&tunnels).map_err(LifecycleError::io("list", &tunnels.unit_dir))
        })
        .await?;
        let loaded = self.client.list_loaded_units().await?;
        let ids: BTreeSet<TunnelId> = on_disk
            .into_iter()
            .chain(
                loaded
                    .iter()
                    .filter_map(|u| TunnelId::from_unit_name(u).ok()),
            )
            .collect();
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            let result = self.remove(&id, &self.paths(&id)).await;
            results.push((id, result));
        }
        self.client.reload().await?;
        for (id, _) in &results {
            self.forget_failure(id).await;
        }
        Ok(results)
    }

    /// `reset-failed` of a removed unit, so that systemd unloads it; best effort, since the
    /// removal itself is done.
    async fn forget_failure(&self, id: &TunnelId) {
        if let Err(error) = self.client.reset_failed(&id.unit_name()).await {
            tracing::warn!(tunnel = %id, %error, "reset-failed after removal failed");
        }
    }

    /// Stops, disables and removes the files of one tunnel, without reloading.
    async fn remove(&self, id: &TunnelId, paths: &Paths) -> Result<Outcome, LifecycleError> {
        let unit = id.unit_name();
        let stopped = self.client.stop_unit(&unit).await?;
        let done = outcome(id, Action::Deleted, "stop", stopped)?;
        let unit_path = paths.unit.clone();
        if blocking(move || Ok(unit_path.exists())).await? {
            self.client.disable(&[&unit]).await?;
        }
        let paths = paths.clone();
        blocking(move || {
            files::remove(&paths.unit).map_err(LifecycleError::io("remove", &paths.unit))?;
            files::remove(&paths.config).map_err(LifecycleError::io("remove", &paths.config))
        })
        .await?;
        Ok(done)
    }
}

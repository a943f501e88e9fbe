//! Create-or-replace: validate, test with the core, then install and start; on a failure after
//! the first write, put the old files (and the old unit's state) back.

use super::files::{self, Paths, Saved, Scratch};
use super::template::{self, UnitValues};
use super::{Action, Lifecycle, LifecycleError, Outcome, accounts, blocking, outcome};
use crate::domain::config_policy::{self, TargetPolicy};
use crate::domain::{ActiveState, TunnelId};

/// The old files of a tunnel being replaced, and whether its unit was running.
struct Before {
    config: Saved,
    unit: Saved,
    was_active: bool,
}

impl Lifecycle {
    /// Creates tunnel `id` with `config` (the core's JSON), or replaces its config and unit.
    ///
    /// In order, each step only when the ones before passed: `config` must be a JSON object
    /// ([`LifecycleError::InvalidConfig`]) that passes the tunnel policy
    /// ([`LifecycleError::PolicyRefused`]); the user and group must exist and the unit must
    /// render; the core's own test must accept the config, written to a scratch file
    /// ([`LifecycleError::CoreRejected`]). Only then are the config and unit written
    /// (atomically), systemd reloaded, the unit enabled and started (restarted when it existed),
    /// and the unit must stay up for `tunnels.start_settle` with its API, if any, answering
    /// ([`LifecycleError::StartFailed`]). If any of that fails, the old config and unit are put back (or the new ones removed),
    /// systemd is reloaded and an old unit that was running is restarted on its old config.
    pub async fn create(&self, id: &TunnelId, config: &[u8]) -> Result<Outcome, LifecycleError> {
        check_json(config, &self.tunnels.policy)?;
        account("user", &self.tunnels.user, accounts::uid)?;
        let gid = account("group", &self.tunnels.group, accounts::gid)?;
        let paths = self.paths(id);
        let unit_text = self.render(id, &paths).await?;
        self.core_test(id, config).await?;

        let before = self.before(id, &paths).await?;
        let (bytes, tunnels) = (config.to_vec(), self.tunnels.clone());
        let installed = blocking(move || {
            files::prepare_dirs(&tunnels, gid)
                .map_err(LifecycleError::io("prepare", &tunnels.config_dir))?;
            files::install_config(&paths.config, &bytes, gid)
                .map_err(LifecycleError::io("write", &paths.config))?;
            files::install_unit(&paths.unit, &unit_text)
                .map_err(LifecycleError::io("write", &paths.unit))
        });
        let started = match installed.await {
            Ok(()) => self.activate(id, before.unit.existed(), config).await,
            Err(err) => Err(err),
        };
        if let Err(err) = &started {
            tracing::warn!(tunnel = %id, error = %err, "create failed; rolling back");
            self.roll_back(id, before).await;
        }
        started
    }

    /// The core's own test of `config`, as the tunnel user in a transient systemd unit with a
    /// tunnel's sandbox ([`crate::core::Tester`]), on a scratch file in the config dir that the
    /// tunnel group may read and not write. Prepares the dirs first.
    async fn core_test(&self, id: &TunnelId, config: &[u8]) -> Result<(), LifecycleError> {
        let gid = account("group", &self.tunnels.group, accounts::gid)?;
        let (tunnels, id, bytes) = (self.tunnels.clone(), id.clone(), config.to_vec());
        let scratch = blocking(move || {
            let dir = &tunnels.config_dir;
            files::prepare_dirs(&tunnels, gid).map_err(LifecycleError::io("prepare", dir))?;
            Scratch::write(dir, &id, &bytes, gid).map_err(LifecycleError::io("write", dir))
        })
        .await?;
        let tester = crate::core::Tester::new(&self.tunnels);
        let tested = tester.test(&self.client, scratch.path()).await;
        // The scratch file's name means nothing to the caller.
        let shown = scratch.path().display().to_string();
        tested.map_err(|e| match LifecycleError::from(e) {
            LifecycleError::CoreRejected { reason } => LifecycleError::CoreRejected {
                reason: reason.replace(&shown, "the config"),
            },
            other => other,
        })
    }

    async fn render(&self, id: &TunnelId, paths: &Paths) -> Result<String, LifecycleError> {
        let template = match &self.tunnels.unit_template {
            Some(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(LifecycleError::io("read the unit template", path))?,
            None => template::BUILT_IN.to_owned(),
        };
        let values = UnitValues {
            id,
            core_binary: &self.tunnels.core_binary,
            config: &paths.config,
            log: &paths.log,
            user: &self.tunnels.user,
            group: &self.tunnels.group,
        };
        template::render(&template, &values).map_err(|e| LifecycleError::Template {
            reason: e.to_string(),
        })
    }

    async fn before(&self, id: &TunnelId, paths: &Paths) -> Result<Before, LifecycleError> {
        let (config, unit) = (paths.config.clone(), paths.unit.clone());
        let (config, unit) = blocking(move || {
            let config_saved = Saved::take(&config).map_err(LifecycleError::io("read", &config))?;
            let unit_saved = Saved::take(&unit).map_err(LifecycleError::io("read", &unit))?;
            Ok((config_saved, unit_saved))
        })
        .await?;
        let was_active = if unit.existed() {
            let status = self.client.unit_status(&id.unit_name()).await?;
            status.active_state.as_ref().is_some_and(ActiveState::is_up)
        } else {
            false
        };
        Ok(Before {
            config,
            unit,
            was_active,
        })
    }

    /// Enables and (re)starts the installed unit, then waits until it has settled: a core that
    /// exits right after its start is a [`LifecycleError::StartFailed`].
    async fn activate(
        &self,
        id: &TunnelId,
        replace: bool,
        config: &[u8],
    ) -> Result<Outcome, LifecycleError> {
        let unit = id.unit_name();
        self.client.reload().await?;
        self.client.enable(&[&unit]).await?;
        let (action, job, result) = if replace {
            let result = self.client.restart_unit(&unit).await?;
            (Action::Replaced, "restart", result)
        } else {
            let result = self.client.start_unit(&unit).await?;
            (Action::Created, "start", result)
        };
        let done = outcome(id, action, job, result)?;
        self.settle(id, job, config).await?;
        tracing::info!(tunnel = %id, ?action, "tunnel installed and settled");
        Ok(done)
    }

    /// Best effort: every step is tried and its failure logged, since the caller reports the
    /// error that caused the roll-back.
    async fn roll_back(&self, id: &TunnelId, before: Before) {
        let unit = id.unit_name();
        let (existed, was_active) = (before.unit.existed(), before.was_active);
        if !was_active {
            log_step(id, "stop", self.client.stop_unit(&unit).await.map(drop));
        }
        if !existed {
            log_step(id, "disable", self.client.disable(&[&unit]).await);
        }
        let restored = blocking(move || {
            let restore = |saved: &Saved| {
                saved
                    .restore()
                    .map_err(LifecycleError::io("restore", saved.path()))
            };
            restore(&before.config).and(restore(&before.unit))
        })
        .await;
        if let Err(err) = restored {
            tracing::error!(tunnel = %id, error = %err, "cannot restore the old files");
        }
        log_step(id, "reload", self.client.reload().await);
        if was_active {
            let restarted = self.client.restart_unit(&unit).await;
            log_step(id, "restart the old unit", restarted.map(drop));
        } else {
            log_step(id, "reset-failed", self.client.reset_failed(&unit).await);
        }
    }
}

fn log_step(id: &TunnelId, step: &str, result: Result<(), crate::systemd::SystemdError>) {
    if let Err(error) = result {
        tracing::error!(tunnel = %id, step, %error, "roll-back step failed");
    }
}

/// `config` must be a JSON object that sends no traffic where `policy` forbids; the core's
/// test judges the rest.
fn check_json(config: &[u8], policy: &TargetPolicy) -> Result<(), LifecycleError> {
    let value: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| LifecycleError::InvalidConfig {
            reason: format!("not JSON: {e}"),
        })?;
    if !value.is_object() {
        return Err(LifecycleError::InvalidConfig {
            reason: "the config must be a JSON object".into(),
        });
    }
    config_policy::check(&value, policy).map_err(|refusals| LifecycleError::PolicyRefused {
        reasons: refusals.iter().map(ToString::to_string).collect(),
    })
}

fn account(
    kind: &'static str,
    name: &str,
    lookup: fn(&str) -> std::io::Result<Option<u32>>,
) -> Result<u32, LifecycleError> {
    lookup(name)
        .map_err(LifecycleError::io("read", format!("the {kind} database")))?
        .ok_or_else(|| LifecycleError::UnknownAccount {
            kind,
            name: name.to_owned(),
        })
}

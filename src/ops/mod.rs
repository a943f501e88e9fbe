//! The operations service: the one place that performs actions on the node's tunnels.
//!
//! Every mutation — create/replace, start, stop, restart, delete, restart-all, emergency
//! cleanup, orphan cleanup, a users sync, and the actions Alertmanager asks for — goes through
//! [`Operations::run`]. The HTTP API, the legacy `/api/services` contract, the CLI (through the
//! API) and the webhook only parse, call and render.
//!
//! Guarantees callers can rely on:
//! - one operation at a time: [`OpLock`] is the only operation lock (the users sync loop holds
//!   it for each round too), so two writers never interleave on a tunnel's files or jobs;
//! - a started operation runs to its end (or its rollback) in a task of the daemon's tracker,
//!   even when its caller goes away (a client that disconnects drops only the wait);
//! - exactly one audit line per operation, written by that task, refusals included.

pub mod audit;
mod error;
pub mod incidents;
pub mod remediate;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

pub use audit::{Action, Audit};
pub use error::OpError;

use crate::config::TunnelsConfig;
use crate::contract::SyncSummary as Summary;
use crate::health::cleanup::{self, Cleaner, CleanupResult};
use crate::health::{Ledger, Settings as HealthSettings};
use crate::lifecycle::{BulkResult, Lifecycle, LifecycleError, Outcome};
use crate::state::SharedState;
use crate::systemd::Client;
use crate::usersync::SyncRequest;

pub use crate::state::OpLock;

/// How long a sync operation waits for the round it asked for.
const SYNC_WAIT: Duration = Duration::from_secs(120);

/// One action, as an adapter asks for it. Tunnel ids arrive as text and are validated here,
/// before they reach a path or a unit name, so that a refusal is audited like any other result.
#[derive(Debug, Clone)]
pub enum Op {
    /// Install (or replace) tunnel `id` with `config`, then (re)start it.
    Put {
        id: String,
        config: Vec<u8>,
    },
    Start {
        id: String,
    },
    Stop {
        id: String,
    },
    Restart {
        id: String,
    },
    Delete {
        id: String,
    },
    RestartAll,
    /// Remove every tunnel; refused unless `confirm`.
    EmergencyCleanup {
        confirm: bool,
    },
    /// Clean up the orphans of the last health pass, each re-checked at the moment of acting.
    CleanupOrphans {
        dry_run: bool,
    },
    /// A users sync round now.
    Sync {
        force: bool,
    },
}

impl Op {
    /// The audit log's action.
    pub fn action(&self) -> Action {
        match self {
            Self::Put { .. } => Action::TunnelPut,
            Self::Start { .. } => Action::TunnelStart,
            Self::Stop { .. } => Action::TunnelStop,
            Self::Restart { .. } => Action::TunnelRestart,
            Self::Delete { .. } => Action::TunnelDelete,
            Self::RestartAll => Action::TunnelsRestartAll,
            Self::EmergencyCleanup { .. } => Action::TunnelsEmergencyCleanup,
            Self::CleanupOrphans { dry_run: false } => Action::OrphansCleanup,
            Self::CleanupOrphans { dry_run: true } => Action::OrphansCleanupDryRun,
            Self::Sync { force: false } => Action::Sync,
            Self::Sync { force: true } => Action::SyncForce,
        }
    }

    /// The audit log's target: the tunnel id as given, or `*`.
    pub fn target(&self) -> &str {
        match self {
            Self::Put { id, .. }
            | Self::Start { id }
            | Self::Stop { id }
            | Self::Restart { id }
            | Self::Delete { id } => id,
            _ => "*",
        }
    }
}

/// What a successful operation did.
#[derive(Debug)]
pub enum Done {
    /// One tunnel's operation.
    Tunnel(Outcome),
    /// Each tunnel's result of a bulk operation.
    Bulk(Vec<BulkResult>),
    /// Each orphan's result of a cleanup.
    Cleanup {
        dry_run: bool,
        results: Vec<CleanupResult>,
    },
    /// The sync round's summary.
    Sync(Summary),
}

/// Everything the service acts with. Cheap to clone.
#[derive(Clone)]
pub struct Operations {
    inner: Arc<Parts>,
}

/// What [`Operations::new`] needs.
pub struct Parts {
    /// The watcher's live bus connection (`None` while it is down).
    pub client: watch::Receiver<Option<Client>>,
    pub tunnels: TunnelsConfig,
    pub health: HealthSettings,
    pub ledger: Ledger,
    pub state: SharedState,
    /// The users sync loop's request channel; `None` when sync is off.
    pub sync: Option<mpsc::Sender<SyncRequest>>,
    pub audit: Audit,
    pub lock: OpLock,
    /// The daemon's task tracker: shutdown waits for operations in flight.
    pub tracker: TaskTracker,
}

impl Operations {
    pub fn new(parts: Parts) -> Self {
        Self {
            inner: Arc::new(parts),
        }
    }

    /// The snapshot the collectors write.
    pub fn state(&self) -> &SharedState {
        &self.inner.state
    }

    /// The audit log every decision is written to.
    pub fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    /// Runs `op` for `caller` (an address, `cli`, `alertmanager`) to its end in a tracked
    /// task, writes its one audit line, and returns its result. Dropping the returned future
    /// does not stop the operation.
    pub async fn run(&self, caller: &str, op: Op) -> Result<Done, OpError> {
        let this = self.clone();
        let caller = caller.to_owned();
        let task = self.inner.tracker.spawn(async move {
            let result = this.execute(&op).await;
            let verdict = match &result {
                Ok(_) => "ok",
                Err(err) => err.code(),
            };
            this.inner
                .audit
                .record(&caller, op.action(), op.target(), verdict)
                .await;
            result
        });
        match task.await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => Err(OpError::ShuttingDown),
        }
    }

    /// The last `lines` lines of tunnel `id`'s log (a read: not locked, not audited).
    pub async fn logs(&self, id: &str, lines: usize) -> Result<Vec<String>, OpError> {
        let id = Lifecycle::parse_id(id)?;
        Ok(self.lifecycle()?.logs(&id, lines).await?)
    }

    async fn execute(&self, op: &Op) -> Result<Done, OpError> {
        if let Op::Sync { force } = op {
            return self.sync(*force).await.map(Done::Sync);
        }
        // Validate before waiting for the lock: a bad request never queues behind others.
        let id = match op {
            Op::Put { id, .. }
            | Op::Start { id }
            | Op::Stop { id }
            | Op::Restart { id }
            | Op::Delete { id } => Some(Lifecycle::parse_id(id)?),
            _ => None,
        };
        if let Op::EmergencyCleanup { confirm: false } = op {
            return Err(LifecycleError::ConfirmationRequired.into());
        }
        let _guard = self.inner.lock.lock().await;
        let lifecycle = self.lifecycle()?;
        let tunnel = |r: Result<Outcome, LifecycleError>| Ok(Done::Tunnel(r?));
        let id = || id.clone().expect("validated above for every per-tunnel op");
        match op {
            Op::Put { config, .. } => tunnel(lifecycle.create(&id(), config).await),
            Op::Start { .. } => tunnel(lifecycle.start(&id()).await),
            Op::Stop { .. } => tunnel(lifecycle.stop(&id()).await),
            Op::Restart { .. } => tunnel(lifecycle.restart(&id()).await),
            Op::Delete { .. } => tunnel(lifecycle.delete(&id()).await),
            Op::RestartAll => Ok(Done::Bulk(lifecycle.restart_all().await?)),
            Op::EmergencyCleanup { confirm } => {
                Ok(Done::Bulk(lifecycle.emergency_cleanup(*confirm).await?))
            }
            Op::CleanupOrphans { dry_run } => {
                let plan = cleanup::plan_cleanup(&self.inner.state.read().orphans);
                let results = self.cleaner(lifecycle).execute(&plan, *dry_run).await;
                Ok(Done::Cleanup {
                    dry_run: *dry_run,
                    results,
                })
            }
            Op::Sync { .. } => unreachable!("handled before the lock"),
        }
    }

    /// Takes the operation lock, for work that decides and acts in one critical section (the
    /// remediation worker).
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.lock.lock().await
    }

    /// Carries out a cleanup `plan`; the caller holds [`Self::lock`].
    pub(crate) async fn cleanup_locked(
        &self,
        plan: &[cleanup::CleanupAction],
        dry_run: bool,
    ) -> Result<Vec<CleanupResult>, OpError> {
        Ok(self.cleaner(self.lifecycle()?).execute(plan, dry_run).await)
    }

    /// A cleaner acting through `lifecycle`, reading the health task's snapshot and ledger.
    fn cleaner(&self, lifecycle: Lifecycle) -> Cleaner<Lifecycle> {
        let inner = &self.inner;
        Cleaner::new(
            inner.health.clone(),
            inner.state.clone(),
            inner.ledger.clone(),
            lifecycle,
        )
    }

    /// A lifecycle on the watcher's live connection.
    fn lifecycle(&self) -> Result<Lifecycle, OpError> {
        let client = self.inner.client.borrow().clone();
        let client = client.ok_or(OpError::SystemdDown)?;
        Ok(Lifecycle::new(client, self.inner.tunnels.clone()))
    }

    /// Asks the sync loop for a round and waits for its summary. The loop takes the operation
    /// lock for the round itself.
    async fn sync(&self, force: bool) -> Result<Summary, OpError> {
        let sender = self.inner.sync.clone().ok_or(OpError::SyncOff)?;
        let (reply, answer) = oneshot::channel();
        let request = SyncRequest {
            force,
            reply: Some(reply),
        };
        sender
            .send(request)
            .await
            .map_err(|_| OpError::ShuttingDown)?;
        match tokio::time::timeout(SYNC_WAIT, answer).await {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(_)) => Err(OpError::ShuttingDown),
            Err(_) => Err(OpError::SyncTimeout),
        }
    }
}

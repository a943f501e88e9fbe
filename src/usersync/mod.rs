//! Keeps each tunnel's users in sync with the desired set, through the core's gRPC API: no
//! restart, no downtime, users persisted to the tunnel's config.
//!
//! The loop runs a round every `users.interval`, when asked (SIGHUP, `POST /api/v1/sync`), when
//! a file source changes, and for one tunnel as soon as its core (re)starts. A round fetches the
//! source; a source that fails or does not parse leaves the last good set in force and forbids
//! every removal until it is healthy again.
//!
//! File work (the last good document, records, config files) runs on the blocking pool: this
//! loop shares two async workers with the API and the watcher, and an fsync or a stuck file
//! must not stall them.

mod apply;
pub mod clock;
mod configs;
pub mod engine;
#[cfg(test)]
mod idle_tests;
pub mod metrics;
mod online;
pub mod plan;
mod quiet;
mod record;
mod restarts;
pub mod source;
mod target;
mod traffic;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{TunnelsConfig, UsersConfig};
/// What a round did, per tunnel: the API's answer to `POST /api/v1/sync`.
pub use crate::contract::{SyncSummary, TunnelSyncSummary};
use crate::domain::{TunnelId, UnknownReason, loggable};
use crate::state::SharedState;
use crate::systemd::Client;
use crate::users::{self, Document, MAX_USERS_BYTES};
use clock::SystemdClock;
use configs::ConfigCache;
use engine::{Engine, Settings, Target};
use metrics::SyncMetrics;
use restarts::Retries;
use source::{Fetched, Source};
use target::{Targets, merged_configs};

/// How often the loop looks for restarted cores and changed source files.
const WATCH: Duration = Duration::from_secs(1);
/// The last good document, kept across warden restarts.
const LAST_GOOD: &str = "desired-users.json";

/// A request for a round, answered with its summary.
#[derive(Debug)]
pub struct SyncRequest {
    pub force: bool,
    pub reply: Option<oneshot::Sender<SyncSummary>>,
}

/// Runs until `shutdown` is cancelled. Without a users source it only collects traffic.
/// `systemd` is the watcher's live client (`None` while disconnected), asked for a core's start
/// time when a sync has applied changes.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    users: UsersConfig,
    tunnels: TunnelsConfig,
    state: SharedState,
    metrics: SyncMetrics,
    mut requests: mpsc::Receiver<SyncRequest>,
    lock: crate::state::OpLock,
    systemd: watch::Receiver<Option<Client>>,
    shutdown: CancellationToken,
) {
    if users.source.is_none() {
        info!("no users source configured: user sync is off (traffic is still collected)");
    }
    let configured = if users.source.is_some() { 1.0 } else { 0.0 };
    metrics.source_configured.set(configured);
    let mut sync = Loop::new(&users, tunnels, state, metrics, lock, systemd);
    sync.desired = load_last_good(&sync.state_dir).await;
    let mut rounds = tokio::time::interval(users.interval);
    rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Without a source nothing can be synced: the tick would only cost a wake-up a second.
    let watching = sync.source.is_some();
    let mut watch = tokio::time::interval(WATCH);
    watch.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut traffic = tokio::time::interval(users.traffic_interval);
    traffic.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = rounds.tick() => { sync.round(false, None).await; }
            Some(request) = requests.recv() => {
                let summary = sync.round(request.force, None).await;
                if let Some(reply) = request.reply {
                    let _ = reply.send(summary);
                }
            }
            _ = watch.tick(), if watching => sync.watch().await,
            _ = traffic.tick() => sync.traffic().await,
        }
    }
}

struct Loop {
    source: Option<Source>,
    per_user_traffic: bool,
    per_user_online_ips: bool,
    max_user_series: usize,
    engine: Engine,
    metrics: SyncMetrics,
    state: SharedState,
    config_dir: PathBuf,
    state_dir: PathBuf,
    /// The last good document and whether the source is healthy right now.
    desired: Option<Arc<Document>>,
    /// The core start time each tunnel was last synced at.
    synced_starts: HashMap<TunnelId, u64>,
    /// The running tunnels, built again only when one started, stopped, came or went.
    targets: Targets,
    /// The generation of `targets` the watch tick looked at last.
    watched: u64,
    /// Tunnels whose last sync failed, and when the watch tick tries each again.
    retries: Retries,
    /// What the traffic tick reads from each running tunnel's config.
    configs: ConfigCache,
    /// Tunnels the traffic tick gave counters to.
    counted: std::collections::HashSet<TunnelId>,
    /// The operations service's lock, held for each round: a round never interleaves with a
    /// create, delete or cleanup writing the same config files.
    lock: crate::state::OpLock,
}

impl Loop {
    fn new(
        users: &UsersConfig,
        tunnels: TunnelsConfig,
        state: SharedState,
        metrics: SyncMetrics,
        lock: crate::state::OpLock,
        systemd: watch::Receiver<Option<Client>>,
    ) -> Loop {
        let settings = Settings {
            max_remove_fraction: users.max_remove_fraction,
            concurrency: users.concurrency,
            call_timeout: users.call_timeout,
            flavours: tunnels.clone(),
            state_dir: users.state_dir.clone(),
        };
        Loop {
            source: (users.source.clone())
                .map(|kind| Source::new(kind, users.token_file.clone(), users.timeout)),
            per_user_traffic: users.per_user_traffic,
            per_user_online_ips: users.per_user_online_ips,
            max_user_series: users.max_user_series,
            engine: Engine::new(
                settings,
                metrics.clone(),
                Arc::new(SystemdClock {
                    client: systemd,
                    state: state.clone(),
                }),
            ),
            metrics,
            state,
            config_dir: tunnels.config_dir,
            state_dir: users.state_dir.clone(),
            desired: None,
            synced_starts: HashMap::new(),
            targets: Targets::default(),
            watched: 0,
            retries: Retries::default(),
            configs: ConfigCache::new(users.per_user_traffic),
            counted: Default::default(),
            lock,
        }
    }

    /// Syncs every running tunnel (or only `only`), after refreshing the desired set.
    async fn round(&mut self, force: bool, only: Option<&[TunnelId]>) -> SyncSummary {
        if self.source.is_none() {
            return SyncSummary::default();
        }
        let lock = self.lock.clone();
        let _guard = lock.lock().await;
        let source_up = self.refresh().await;
        let mut summary = SyncSummary {
            source_up,
            tunnels: Vec::new(),
        };
        let Some(desired) = self.desired.clone() else {
            if let Some(source) = &self.source {
                warn!(source = %source.describe(), "no good users document yet: nothing to sync");
            }
            return summary;
        };
        let (targets, alive) = self.targets();
        self.engine.retain(&alive);
        for (id, reason) in self.unsupported() {
            if only.is_some_and(|only| !only.contains(&id)) {
                continue;
            }
            let error = engine::SyncError::Unsupported(reason);
            warn!(tunnel = %id, %error, "user sync skipped");
            summary.tunnels.push(tunnel_summary(&id, Err(error)));
        }
        for target in targets.iter() {
            if only.is_some_and(|only| !only.contains(&target.id)) {
                continue;
            }
            let result = self.engine.sync(target, &desired, source_up, force).await;
            match result {
                Ok(_) => {
                    self.synced_starts
                        .insert(target.id.clone(), target.core_start_usec);
                    self.retries.succeeded(&target.id);
                }
                Err(_) => (self.retries).failed(&target.id, target.core_start_usec, Instant::now()),
            }
            summary.tunnels.push(tunnel_summary(&target.id, result));
        }
        summary
    }

    /// Syncs tunnels whose core started since their last sync, tunnels whose last sync failed
    /// once their wait is over ([`restarts::Retries`]), and everything when a file source
    /// changed. Without a source it does nothing; while no status changed and no retry is due
    /// it compares the statuses in place and builds nothing.
    async fn watch(&mut self) {
        let Some(source) = &self.source else {
            return;
        };
        if source.file_changed().await {
            info!(source = %source.describe(), "users source changed");
            self.round(false, None).await;
            return;
        }
        if self.desired.is_none() {
            return;
        }
        let now = Instant::now();
        let generation = self.targets.refresh(&self.state, &self.config_dir);
        if generation != self.watched {
            self.watched = generation;
            let (targets, _) = self.targets();
            self.retries.retain(&targets);
            let restarted: Vec<TunnelId> = (targets.iter())
                .filter(|t| self.synced_starts.get(&t.id) != Some(&t.core_start_usec))
                .filter(|t| self.retries.ready(t, now))
                .map(|t| t.id.clone())
                .collect();
            if !restarted.is_empty() {
                info!(tunnels = ?restarted, "core (re)started: syncing its users");
                self.round(false, Some(&restarted)).await;
            }
        } else {
            let due = self.retries.due(now);
            if !due.is_empty() {
                tracing::debug!(tunnels = ?due, "trying again tunnels whose last sync failed");
                self.round(false, Some(&due)).await;
            }
        }
    }

    /// Fetches the source; returns whether it is healthy. Keeps the last good document when not.
    async fn refresh(&mut self) -> bool {
        let Some(source) = &mut self.source else {
            return false;
        };
        let bytes = match source.fetch().await {
            Ok(Fetched::Unchanged) => return self.desired.is_some(),
            Ok(Fetched::Changed(bytes)) => bytes,
            Err(err) => {
                warn!(error = %err, "users source unreachable: keeping the last good set, removing nobody");
                self.metrics.source_up.set(0.0);
                return false;
            }
        };
        match users::parse_document(&bytes) {
            Ok(doc) => {
                for r in &doc.rejected {
                    let email = r.email.as_deref().map(loggable).unwrap_or_default();
                    warn!(entry = r.index, %email, reason = %r.reason, "invalid user rejected: left as it is on every tunnel");
                }
                self.metrics.invalid_users.set(doc.rejected.len() as f64);
                self.metrics.source_up.set(1.0);
                save_last_good(&self.state_dir, bytes.clone()).await;
                self.desired = Some(Arc::new(doc));
                true
            }
            Err(err) => {
                warn!(error = %err, "users document unusable: keeping the last good set, removing nobody");
                self.metrics.source_up.set(0.0);
                // Read it again next time even if it does not change, so the state is re-reported.
                if let Some(source) = &mut self.source {
                    source.forget();
                }
                false
            }
        }
    }

    /// Reads every running core's traffic counters into the snapshot. The configs are stat'ed
    /// in one go and read only when changed ([`configs`]); a tunnel without an API costs no more.
    async fn traffic(&mut self) {
        let (targets, _) = self.targets();
        self.configs.refresh(Arc::clone(&targets)).await;
        let options = traffic::TrafficOptions {
            per_user: self.per_user_traffic,
            per_user_online: self.per_user_online_ips,
            cap: self.max_user_series,
        };
        let mut read = HashMap::new();
        for target in targets.iter() {
            let Some(facts) = self.configs.with_api(&target.id).cloned() else {
                continue;
            };
            let traffic = self
                .engine
                .traffic(target, &facts, options)
                .await
                .map_err(
                    |err| tracing::debug!(tunnel = %target.id, error = %err, "no traffic counters"),
                )
                .ok();
            if let Some(t) = &traffic
                && t.users_dropped > 0
            {
                warn!(tunnel = %target.id, dropped = t.users_dropped, "per-user traffic series capped by users.max_user_series");
            }
            if let Some(online) = traffic.as_ref().and_then(|t| t.online.as_ref())
                && online.users_dropped > 0
            {
                warn!(tunnel = %target.id, dropped = online.users_dropped, "per-user online series capped by users.max_user_series");
            }
            read.insert(&target.id, traffic);
        }
        // One write for the tick, touching only the tunnels read now or holding counters from
        // before: a running tunnel without an API (any more) has none.
        let stale: Vec<TunnelId> = (self.counted.iter())
            .filter(|id| self.configs.knows(id) && !read.contains_key(id))
            .cloned()
            .collect();
        if read.is_empty() && stale.is_empty() {
            return;
        }
        for id in &stale {
            self.counted.remove(id);
        }
        for (id, traffic) in &read {
            if traffic.is_some() {
                self.counted.insert((*id).clone());
            } else {
                self.counted.remove(*id);
            }
        }
        self.state.update_samples(|s| {
            for (id, traffic) in read {
                if let Some(tunnel) = s.tunnels.get_mut(id) {
                    tunnel.traffic = traffic;
                }
            }
            for id in &stale {
                if let Some(tunnel) = s.tunnels.get_mut(id) {
                    tunnel.traffic = None;
                }
            }
        });
    }

    /// Running tunnels whose core merges several config files (`-confdir`, more than one
    /// `-config`): the warden cannot tell which file holds an inbound's users, so it syncs
    /// none of them and says why (semantics §9).
    fn unsupported(&self) -> Vec<(TunnelId, UnknownReason)> {
        let snapshot = self.state.read();
        snapshot
            .tunnels
            .iter()
            .filter(|(_, t)| t.status.active_state().is_up())
            .filter_map(|(id, t)| {
                merged_configs(&t.status, &self.config_dir).map(|r| (id.clone(), r))
            })
            .collect()
    }

    /// Running tunnels to sync, and every tunnel id that exists (built again only after a
    /// change, [`target::Targets`]).
    fn targets(&mut self) -> (Arc<[Target]>, Arc<[TunnelId]>) {
        self.targets.refresh(&self.state, &self.config_dir);
        (
            Arc::clone(&self.targets.running),
            Arc::clone(&self.targets.alive),
        )
    }
}

/// The last good document kept in `state_dir`, if any (read on the blocking pool, only from a
/// regular file within the users cap).
async fn load_last_good(state_dir: &Path) -> Option<Arc<Document>> {
    let path = state_dir.join(LAST_GOOD);
    let read = tokio::task::spawn_blocking(move || {
        users::read_regular(&path, MAX_USERS_BYTES).map(|b| users::parse_document(&b))
    });
    let doc = match read.await {
        Ok(Ok(Ok(doc))) => doc,
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Ok(Err(err)) => {
            warn!(error = %err, "cannot read the last good users document");
            return None;
        }
        Ok(Ok(Err(err))) => {
            warn!(error = %err, "ignoring an unusable last good users document");
            return None;
        }
        Err(err) => {
            warn!(error = %err, "reading the last good users document failed");
            return None;
        }
    };
    info!(
        users = doc.users.len(),
        "loaded the last good users document"
    );
    Some(Arc::new(doc))
}

/// Keeps `bytes` as the last good document (atomically, fsynced, on the blocking pool).
async fn save_last_good(state_dir: &Path, bytes: Vec<u8>) {
    let (dir, path) = (state_dir.to_owned(), state_dir.join(LAST_GOOD));
    let target = path.clone();
    let saved = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).and_then(|()| crate::tunnelcfg::write_atomic(&target, &bytes))
    })
    .await
    .unwrap_or_else(|err| Err(std::io::Error::other(err.to_string())));
    if let Err(err) = saved {
        warn!(path = %path.display(), error = %err, "cannot keep the last good users document");
    }
}

fn tunnel_summary(
    id: &TunnelId,
    result: Result<engine::Outcome, engine::SyncError>,
) -> TunnelSyncSummary {
    let (outcome, error) = match result {
        Ok(outcome) => (outcome, None),
        Err(err) => (engine::Outcome::default(), Some(err.to_string())),
    };
    TunnelSyncSummary {
        tunnel: id.to_string(),
        outcome,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc as std_mpsc;

    fn scratch(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/unit-scratch/usersync-loop")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs `work` on a runtime with one worker thread, in a thread of its own, beside a task
    /// that only sleeps 50 ms; returns whether that task finished within 3 s. Blocking file
    /// work on the worker would keep it from ever being polled again.
    fn ticks_beside<F>(work: F, unblock: impl FnOnce()) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = std_mpsc::channel();
        let worker = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let work = tokio::spawn(work);
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(());
                work.await.unwrap();
            });
        });
        let ticked = rx.recv_timeout(Duration::from_secs(3)).is_ok();
        unblock();
        worker.join().unwrap();
        ticked
    }

    #[test]
    fn saving_the_last_good_document_leaves_the_worker_free() {
        let dir = scratch("save");
        // The atomic write takes an exclusive lock on the directory: held here, the save waits.
        let held = std::fs::File::open(&dir).unwrap();
        held.lock().unwrap();
        let state_dir = dir.clone();
        let save = async move { save_last_good(&state_dir, b"{\"users\": []}".to_vec()).await };
        let ticked = ticks_beside(save, move || drop(held));
        assert!(ticked, "the save blocked the runtime's only worker");
        assert_eq!(
            std::fs::read(dir.join(LAST_GOOD)).unwrap(),
            b"{\"users\": []}"
        );
    }

    #[test]
    fn cores_that_merge_several_configs_are_not_synced() {
        let dir = Path::new("/etc/raptor-tunnel");
        let status = |argv: &[&str]| crate::domain::UnitStatus {
            exec_start: argv.iter().map(|a| (*a).to_owned()).collect(),
            ..Default::default()
        };
        let confdir = status(&["/usr/bin/xray", "run", "-confdir", "/etc/raptor-tunnel/a.d"]);
        assert_eq!(
            merged_configs(&confdir, dir),
            Some(UnknownReason::ConfigDir)
        );
        let two = [
            "/usr/bin/xray",
            "run",
            "-c",
            "/etc/raptor-tunnel/xray-a.json",
        ];
        let two = status(&[&two[..], &["-config", "/etc/raptor-tunnel/b.json"]].concat());
        assert_eq!(merged_configs(&two, dir), Some(UnknownReason::Several));
        let one = status(&[
            "/usr/bin/xray",
            "run",
            "-config",
            "/etc/raptor-tunnel/xray-a.json",
        ]);
        assert_eq!(merged_configs(&one, dir), None);
        let message = engine::SyncError::Unsupported(UnknownReason::ConfigDir).to_string();
        assert!(
            message.contains("runs a config directory (-confdir)"),
            "{message}"
        );
    }

    #[test]
    fn a_fifo_as_the_last_good_document_is_skipped_at_once() {
        let dir = scratch("load");
        let fifo = dir.join(LAST_GOOD);
        crate::users::mkfifo(&fifo);
        let state_dir = dir.clone();
        let load = async move { assert!(load_last_good(&state_dir).await.is_none()) };
        // Should the read block on the FIFO, a writer that opens and closes it ends it.
        let unblock = move || crate::users::release_fifo(&fifo);
        assert!(ticks_beside(load, unblock), "a FIFO hung the loop");
    }
}

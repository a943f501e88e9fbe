//! Syncing one tunnel: read its config, find out what its core has, diff against the desired
//! users, apply the difference through the API, then persist it to the config file and the
//! warden's record.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::apply::{self, Tally};
use super::clock::CoreClock;
use super::metrics::SyncMetrics;
use super::plan::{self, Guard, InboundDiff};
use super::quiet::{FileStamp, Quiet};
use super::record::Record;
pub use super::target::Target;
pub use crate::contract::Outcome;
use crate::domain::{Flavour, Protocol, TunnelId, User, is_unmanaged};
use crate::tunnelcfg;
use crate::users::{self, Document};
use crate::xray::{ApiClient, ApiError};

#[derive(Debug, Clone)]
pub struct Settings {
    pub max_remove_fraction: f64,
    pub concurrency: usize,
    pub call_timeout: Duration,
    /// The configured flavour of each tunnel (`tunnels.flavour` / `tunnels.flavours`).
    pub flavours: crate::config::TunnelsConfig,
    pub state_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Config(#[from] tunnelcfg::TunnelConfigError),
    #[error(
        "the config names no TCP API address (api.listen, or a dokodemo-door inbound routed to the api tag)"
    )]
    NoApi,
    /// The core merges several config files (`-confdir`, more than one `-config`): which file
    /// holds an inbound's users is not known, so they are left alone (semantics §9).
    #[error(
        "user sync does not support this tunnel: its core {0}; give it one -config file to have its users synced"
    )]
    Unsupported(crate::domain::UnknownReason),
    #[error("cannot reach the core's API: {0}")]
    Api(#[from] ApiError),
    #[error("the warden's record: {0}")]
    Record(#[from] super::record::RecordError),
    #[error("file work failed: {0}")]
    Blocking(String),
    #[error(
        "the core restarted during the sync (start {before} -> {}): what it was sent is gone with \
         the old process, so it is not recorded and the next sync applies it again",
        now.map_or("unknown".to_owned(), |n| n.to_string())
    )]
    CoreRestarted { before: u64, now: Option<u64> },
}

/// A core's API client, kept while the core's process lives.
struct Connection {
    core_start_usec: u64,
    client: ApiClient,
    can_list_users: bool,
    /// Inbounds found unable to hold users (logged once per core process).
    cannot_hold: HashSet<String>,
}

pub struct Engine {
    settings: Settings,
    metrics: SyncMetrics,
    connections: HashMap<TunnelId, Connection>,
    /// Tells whether a core restarted while it was being synced.
    clock: Arc<dyn CoreClock>,
    /// Tunnels whose last round found nothing to do (see [`super::quiet`]).
    quiet: HashMap<TunnelId, Quiet>,
}

impl Engine {
    pub fn new(settings: Settings, metrics: SyncMetrics, clock: Arc<dyn CoreClock>) -> Self {
        Self {
            settings,
            metrics,
            connections: HashMap::new(),
            clock,
            quiet: HashMap::new(),
        }
    }

    /// Forgets tunnels that no longer exist (and drops their series).
    pub fn retain(&mut self, alive: &[TunnelId]) {
        let alive_set: HashSet<&TunnelId> = alive.iter().collect();
        self.connections.retain(|id, _| alive_set.contains(id));
        self.quiet.retain(|id, _| alive_set.contains(id));
        self.metrics.retain(alive);
    }

    /// Brings `target`'s users to `desired`. Removals and credential changes are only applied
    /// when `removals_allowed` (the source is healthy) and the guard allows them or `force`
    /// overrides it. Users whose entry in `desired` is invalid are left as they are.
    ///
    /// A round after one that found nothing to do, with the same `desired` (the same `Arc`), the
    /// same core process and config file, and the same user counts in the core, is quiet: it
    /// answers the last outcome without reading or listing anything else ([`super::quiet`]).
    /// `force` always makes a full round.
    pub async fn sync(
        &mut self,
        target: &Target,
        desired: &Arc<Document>,
        removals_allowed: bool,
        force: bool,
    ) -> Result<Outcome, SyncError> {
        let started = Instant::now();
        let result = self
            .sync_inner(target, desired, removals_allowed, force)
            .await;
        self.metrics.observe_duration(started.elapsed());
        let api_up = !matches!(result, Err(SyncError::Api(_) | SyncError::NoApi));
        self.metrics.set_api_up(&target.id, api_up);
        match &result {
            Ok(outcome) => self
                .metrics
                .record_success(&target.id, outcome.guard_tripped),
            Err(err) => warn!(tunnel = %target.id, error = %err, "user sync failed"),
        }
        result
    }

    async fn sync_inner(
        &mut self,
        target: &Target,
        desired: &Arc<Document>,
        removals_allowed: bool,
        force: bool,
    ) -> Result<Outcome, SyncError> {
        if !force && let Some(outcome) = self.quiet_round(target, desired).await {
            tracing::debug!(tunnel = %target.id, "user sync: nothing changed since the last round");
            return Ok(outcome);
        }
        self.quiet.remove(&target.id);
        let compared_at = Instant::now();
        let (stamp, config, mut record) = {
            let (target, state_dir) = (target.clone(), self.settings.state_dir.clone());
            blocking(move || {
                // Stamped before it is read: a change after this makes the next round full.
                let stamp = FileStamp::stat(&target.config_path).ok().flatten();
                let config = tunnelcfg::read(&target.config_path)?;
                let record = Record::load_or_start(&state_dir, &target, &config)?;
                Ok((stamp, config, record))
            })
            .await?
        };
        let addr = config.api.ok_or(SyncError::NoApi)?;
        let (client, can_list) = self.connection(target, addr).await?;
        let held = desired.held_emails();
        let before = record.clone();
        let mut outcome = Outcome::default();
        let mut drifted = BTreeSet::new();
        let mut counts = Vec::new();

        // Per inbound: what the core has now and what it should have.
        let mut inbounds = Vec::new();
        for inbound in &config.inbounds {
            if let Some(reason) = inbound.protocol.user_management_refusal(client.flavour()) {
                tracing::debug!(tunnel = %target.id, tag = %inbound.tag, reason, "inbound skipped");
                continue;
            }
            if can_list {
                // Counted before it is listed: a user added in between changes the next count.
                let count = client.inbound_user_count(&inbound.tag).await.ok().flatten();
                counts.push((inbound.tag.clone(), count));
            }
            let current = match can_list {
                true => match client.inbound_users(&inbound.tag).await {
                    Ok(users) => users.unwrap_or_default(),
                    Err(ApiError::CannotHoldUsers(message)) => {
                        self.cannot_hold(target, &inbound.tag, &message);
                        outcome.cannot_hold.push(inbound.tag.clone());
                        counts.pop();
                        continue;
                    }
                    Err(err) => return Err(err.into()),
                },
                false => record.users(&inbound.tag).to_vec(),
            };
            let mut want = users::desired_for(
                &desired.users,
                &target.id,
                &inbound.tag,
                &inbound.protocol,
                client.flavour(),
            );
            plan::inherit_flow(&mut want, &inbound.default_flow);
            let diff = plan::diff(&current, &want, &held);
            if can_list {
                // The live list against the desired set, before this round repairs it.
                let users = plan::drift(&diff);
                self.metrics.set_drift(&target.id, &inbound.tag, users);
                drifted.extend(diff_emails(&diff));
            }
            self.metrics
                .set_users(&target.id, &inbound.tag, want.len(), current.len());
            inbounds.push((inbound.tag.clone(), inbound.protocol.clone(), current, diff));
        }

        let guard = guard_of(&inbounds, self.settings.max_remove_fraction);
        let mut tally = Tally::default();
        if let (Guard::Tripped { removing, total }, false) = (guard, force) {
            warn!(tunnel = %target.id, removing, total, max = self.settings.max_remove_fraction,
                "removal guard tripped: applying additions only (force to override)");
        }
        let with_removals = removals_allowed && (force || guard == Guard::Allow);

        let mut changed_tags = Vec::new();
        for (tag, protocol, current, diff) in &inbounds {
            if diff.ops(with_removals).is_empty() {
                continue;
            }
            let inbound = apply::Inbound {
                tunnel: &target.id,
                client: &client,
                tag,
                protocol,
                current,
                metrics: &self.metrics,
            };
            let concurrency = self.settings.concurrency;
            let applied =
                apply::apply(&inbound, diff, with_removals, concurrency, &mut tally).await;
            // Users the core holds without a real email stay in the file as they are, never
            // written back under a name the core made up.
            let managed: Vec<User> = current
                .iter()
                .filter(|u| !is_unmanaged(&u.email))
                .cloned()
                .collect();
            record.set(tag, apply::merge(&managed, &applied));
            changed_tags.push(tag.clone());
        }
        if !changed_tags.is_empty() {
            self.persist(target, &record, &before, &changed_tags, client.flavour())
                .await?;
        }
        outcome = Outcome {
            added: tally.added.len(),
            removed: tally.removed.len(),
            changed: tally.changed.len(),
            failed: tally.failed,
            total: record.total_users(),
            guard_tripped: matches!(guard, Guard::Tripped { .. }) && !force,
            held: held_on(&inbounds, &held),
            kept: tally.kept.len(),
            drift: drifted.len(),
            ..outcome
        };
        if outcome.held > 0 {
            warn!(tunnel = %target.id, held = outcome.held,
                "users whose entry in the document is invalid are left as they are");
        }
        for (tag, _, _, _) in &inbounds {
            self.metrics
                .set_applied(&target.id, tag, record.users(tag).len());
        }
        self.metrics.record_full(&target.id);
        let nothing_to_do = inbounds.iter().all(|(_, _, _, diff)| diff.is_empty());
        if let (true, Some(config)) = (nothing_to_do, stamp) {
            let counts: Option<Vec<(String, u64)>> = counts
                .into_iter()
                .map(|(tag, count)| count.map(|c| (tag, c)))
                .collect();
            if let Some(counts) = counts {
                let quiet = Quiet {
                    document: Arc::downgrade(desired),
                    core_start_usec: target.core_start_usec,
                    config,
                    api: addr,
                    counts,
                    outcome: outcome.clone(),
                    compared_at,
                };
                self.quiet.insert(target.id.clone(), quiet);
            }
        }
        info!(tunnel = %target.id, added = outcome.added, removed = outcome.removed, changed = outcome.changed,
            failed = outcome.failed, total = outcome.total, drift = outcome.drift,
            "user sync complete: tunnel={} added={} removed={} total={}",
            target.id, outcome.added + outcome.changed, outcome.removed, outcome.total);
        Ok(outcome)
    }

    /// The last outcome again when nothing the last round read has changed; `None` (and a full
    /// round) when anything did, or when checking fails.
    async fn quiet_round(&mut self, target: &Target, desired: &Arc<Document>) -> Option<Outcome> {
        let quiet = self.quiet.get(&target.id)?.clone();
        if !quiet.still_holds(desired, target.core_start_usec, Instant::now()) {
            return None;
        }
        let path = target.config_path.clone();
        let stamp = blocking(move || Ok(FileStamp::stat(&path).ok().flatten()))
            .await
            .ok()??;
        if stamp != quiet.config {
            return None;
        }
        if !quiet.counts.is_empty() {
            let (client, _) = self.connection(target, quiet.api).await.ok()?;
            for (tag, count) in &quiet.counts {
                if client.inbound_user_count(tag).await.ok()?? != *count {
                    return None;
                }
            }
        }
        Some(quiet.outcome)
    }

    /// Marks an inbound whose proxy cannot hold users (a single-user or relay Shadowsocks-2022
    /// inbound, semantics §2): skipped, not a failure of the tunnel's sync. Logged once per core
    /// process, reported by a gauge every round.
    fn cannot_hold(&mut self, target: &Target, tag: &str, message: &str) {
        self.metrics.set_cannot_hold(&target.id, tag);
        let first = self
            .connections
            .get_mut(&target.id)
            .is_some_and(|c| c.cannot_hold.insert(tag.to_owned()));
        if first {
            warn!(tunnel = %target.id, %tag, core = %message,
                "inbound cannot hold users (not a user manager): skipped, its users are not synced");
        }
    }

    /// Writes what was applied to the config file, then to the record, unless the core
    /// restarted meanwhile: checked before the config is written (a core restarted then runs
    /// the old file, which stays as it is) and again after (it may have read either file).
    /// Either way the record is put back to what it was before the sync, under the new start
    /// time, so the next sync sends it all again (adds of present users and removes of absent
    /// ones are no-ops) instead of trusting a file the running core may never have read.
    async fn persist(
        &self,
        target: &Target,
        record: &Record,
        before: &Record,
        changed_tags: &[String],
        flavour: Flavour,
    ) -> Result<(), SyncError> {
        self.still_running(target, before).await?;
        let clients: BTreeMap<String, Vec<User>> = changed_tags
            .iter()
            .map(|tag| (tag.clone(), record.users(tag).to_vec()))
            .collect();
        let path = target.config_path.clone();
        blocking(move || Ok(tunnelcfg::persist_clients(&path, &clients, flavour)?)).await?;
        self.still_running(target, before).await?;
        let (id, state_dir, saved) = (
            target.id.clone(),
            self.settings.state_dir.clone(),
            record.clone(),
        );
        blocking(move || Ok(saved.save(&state_dir, &id)?)).await
    }

    /// Errs when the core's start time is no longer the one the sync began with (or cannot be
    /// read), after saving `before` under the start time seen now.
    async fn still_running(&self, target: &Target, before: &Record) -> Result<(), SyncError> {
        let now = self.clock.start_usec(&target.id).await;
        if now == Some(target.core_start_usec) {
            return Ok(());
        }
        warn!(tunnel = %target.id, before = target.core_start_usec, now = ?now,
            "core restarted during the user sync: recording nothing, the next sync re-applies");
        let reset = before.started_at(now.unwrap_or(target.core_start_usec));
        let (id, state_dir) = (target.id.clone(), self.settings.state_dir.clone());
        blocking(move || Ok(reset.save(&state_dir, &id)?)).await?;
        Err(SyncError::CoreRestarted {
            before: target.core_start_usec,
            now,
        })
    }

    /// The tunnel's API client, detecting the flavour once per core process.
    pub(super) async fn connection(
        &mut self,
        target: &Target,
        addr: std::net::SocketAddr,
    ) -> Result<(ApiClient, bool), ApiError> {
        if let Some(c) = self.connections.get(&target.id)
            && c.core_start_usec == target.core_start_usec
        {
            return Ok((c.client.clone(), c.can_list_users));
        }
        let timeout = self.settings.call_timeout;
        let detected = ApiClient::detect(addr, timeout).await?;
        let configured = self.settings.flavours.flavour_of(&target.id);
        let flavour = configured.unwrap_or(detected.flavour);
        let client = ApiClient::new(addr, flavour, timeout);
        let can_list = detected.can_list_users && flavour == Flavour::Xray;
        self.connections.insert(
            target.id.clone(),
            Connection {
                core_start_usec: target.core_start_usec,
                client: client.clone(),
                can_list_users: can_list,
                cannot_hold: HashSet::new(),
            },
        );
        Ok((client, can_list))
    }
}

/// Runs file work (reads, fsyncs) on the blocking pool, off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SyncError> + Send + 'static,
) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|err| Err(SyncError::Blocking(err.to_string())))
}

fn guard_of(inbounds: &[(String, Protocol, Vec<User>, InboundDiff)], max_fraction: f64) -> Guard {
    let current: Vec<&[User]> = inbounds.iter().map(|(_, _, c, _)| c.as_slice()).collect();
    let diffs: Vec<&InboundDiff> = inbounds.iter().map(|(_, _, _, d)| d).collect();
    plan::guard(&current, &diffs, max_fraction)
}

/// Held users present on the tunnel, each email once.
fn held_on(
    inbounds: &[(String, Protocol, Vec<User>, InboundDiff)],
    held: &BTreeSet<String>,
) -> usize {
    let present: BTreeSet<String> = inbounds
        .iter()
        .flat_map(|(_, _, current, _)| current.iter().map(|u| u.email.to_lowercase()))
        .filter(|email| held.contains(email))
        .collect();
    present.len()
}

/// The emails of a diff's users (lower-cased).
fn diff_emails(diff: &InboundDiff) -> impl Iterator<Item = String> + '_ {
    let added = diff
        .add
        .iter()
        .chain(&diff.change)
        .map(|u| u.email.to_lowercase());
    added.chain(diff.remove.iter().map(|e| e.to_lowercase()))
}

//! Applying one inbound's difference through the core's API, `concurrency` emails at a time,
//! each email's operations in order.
//!
//! A changed credential is a remove then an add (the API has no update), and nothing may end
//! with the user removed because the add was refused (semantics §1). So a change is only tried
//! where the plan says the core refuses a second user with the same email
//! ([`plan::changes_in_place`]); the new user's add is then tried first, while the old one is
//! still there, and only an "already exists" (the add would be taken) lets the remove go ahead.
//! An add that still fails after the remove puts the old user back, and the change is never
//! recorded: the record and the config file keep the old credential.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tracing::{error, info, warn};

use super::metrics::SyncMetrics;
use super::plan::{self, InboundDiff, Op};
use crate::domain::{Protocol, TunnelId, User, loggable};
use crate::xray::{ApiClient, ApiError};

/// Attempts per operation when the core answers with a retryable error.
const ATTEMPTS: u32 = 3;
const RETRY_BASE: Duration = Duration::from_millis(100);

/// Emails touched during one sync (a user added to two inbounds is one added user).
#[derive(Default)]
pub(super) struct Tally {
    pub added: BTreeSet<String>,
    pub removed: BTreeSet<String>,
    pub changed: BTreeSet<String>,
    /// Users whose changed credential was not applied: they keep the old one.
    pub kept: BTreeSet<String>,
    /// Operations that failed.
    pub failed: usize,
}

/// One inbound of one tunnel, and where its results go.
pub(super) struct Inbound<'a> {
    pub tunnel: &'a TunnelId,
    pub client: &'a ApiClient,
    pub tag: &'a str,
    pub protocol: &'a Protocol,
    /// What the inbound holds now, the old credentials of changed users among them.
    pub current: &'a [User],
    pub metrics: &'a SyncMetrics,
}

/// What one email's operations came to: the ops that took effect, and the failures.
#[derive(Default)]
struct Run {
    done: Vec<Op>,
    failures: Vec<(Op, ApiError)>,
    /// A change not applied: the user keeps the old credential.
    kept: Option<String>,
}

/// Applies `diff` (removals and changes only `with_removals`); returns the ops that took effect.
pub(super) async fn apply(
    inbound: &Inbound<'_>,
    diff: &InboundDiff,
    with_removals: bool,
    concurrency: usize,
    tally: &mut Tally,
) -> Vec<Op> {
    let old: BTreeMap<String, &User> = inbound
        .current
        .iter()
        .map(|u| (u.email.to_lowercase(), u))
        .collect();
    let changes: BTreeSet<String> = diff.change.iter().map(|u| u.email.to_lowercase()).collect();
    let runs = diff.ops(with_removals).into_iter().map(|ops| {
        let old = &old;
        let changes = &changes;
        async move {
            match ops.as_slice() {
                [Op::Remove(email), Op::Add(new)] if changes.contains(&email.to_lowercase()) => {
                    let old = old.get(&email.to_lowercase()).copied();
                    change(inbound, old, new).await
                }
                _ => in_order(inbound, ops).await,
            }
        }
    });
    let results: Vec<Run> = stream::iter(runs)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut applied = Vec::new();
    for run in results {
        count(inbound, &run, &changes, tally);
        applied.extend(run.done);
    }
    applied
}

/// Runs `ops` in order, stopping at the first failure.
async fn in_order(inbound: &Inbound<'_>, ops: Vec<Op>) -> Run {
    let mut run = Run::default();
    for op in ops {
        match run_op(inbound, &op).await {
            Ok(()) => run.done.push(op),
            Err(err) => {
                run.failures.push((op, err));
                break;
            }
        }
    }
    run
}

/// A changed credential: `new` replaces `old` (the user as the inbound holds it now).
async fn change(inbound: &Inbound<'_>, old: Option<&User>, new: &User) -> Run {
    let mut run = Run::default();
    let email = new.email.clone();
    let (Some(old), true) = (old, plan::changes_in_place(inbound.protocol)) else {
        warn!(tunnel = %inbound.tunnel, tag = %inbound.tag, email = %loggable(&email),
            protocol = %inbound.protocol,
            "credential change not applied: a {} user cannot be re-added through the API, so the old credential stays", inbound.protocol);
        run.kept = Some(email);
        return run;
    };
    // The trial: with the old user there, a core that would take the new one answers "already
    // exists" and changes nothing (the plan allows this only where that holds).
    match attempt(inbound, &Op::Add(new.clone())).await {
        Err(ApiError::AlreadyExists) => {}
        Ok(()) => {
            // The user was not there after all; the new credential is in place now.
            run.done.push(Op::Add(new.clone()));
            return run;
        }
        Err(err) => {
            run.failures.push((Op::Add(new.clone()), err));
            run.kept = Some(email);
            return run;
        }
    }
    if let Err(err) = run_op(inbound, &Op::Remove(email.clone())).await {
        run.failures.push((Op::Remove(email.clone()), err));
        run.kept = Some(email);
        return run;
    }
    match run_op(inbound, &Op::Add(new.clone())).await {
        Ok(()) => {
            run.done = vec![Op::Remove(email), Op::Add(new.clone())];
            return run;
        }
        Err(err) => run.failures.push((Op::Add(new.clone()), err)),
    }
    // The remove went through and the add did not: the old user goes back.
    if let Err(err) = run_op(inbound, &Op::Add(old.clone())).await {
        error!(tunnel = %inbound.tunnel, tag = %inbound.tag, email = %loggable(&email), error = %err,
            "could not put the user back after a refused credential change: the core lacks them until the next sync or restart (the config file keeps them)");
        run.failures.push((Op::Add(old.clone()), err));
    }
    run.kept = Some(email);
    run
}

/// Counts one email's run into the tally and the metrics.
fn count(inbound: &Inbound<'_>, run: &Run, changes: &BTreeSet<String>, tally: &mut Tally) {
    let (tunnel, tag) = (inbound.tunnel, inbound.tag);
    for op in &run.done {
        inbound.metrics.count_op(tunnel, op.kind(), "ok");
        let key = op.email().to_lowercase();
        match op {
            Op::Add(_) if changes.contains(&key) => {
                tally.changed.insert(key);
            }
            Op::Add(u) => {
                info!(
                    "added user {} to {tunnel}/{tag} via API (no restart)",
                    loggable(&u.email)
                );
                tally.added.insert(key);
            }
            Op::Remove(_) if changes.contains(&key) => {}
            Op::Remove(e) => {
                info!(
                    "removed user {} from {tunnel}/{tag} via API (no restart)",
                    loggable(e)
                );
                tally.removed.insert(key);
            }
        }
    }
    for (op, err) in &run.failures {
        tally.failed += 1;
        let result = match err {
            ApiError::Refused(_) => "refused",
            _ => "error",
        };
        inbound.metrics.count_op(tunnel, op.kind(), result);
        warn!(tunnel = %tunnel, %tag, op = op.kind(), email = %loggable(op.email()), error = %err, "user operation failed");
    }
    if let Some(email) = &run.kept {
        tally.kept.insert(email.to_lowercase());
    }
}

/// Runs one operation with retries; "already exists" on add and "not found" on remove mean the
/// core is already where we want it.
async fn run_op(inbound: &Inbound<'_>, op: &Op) -> Result<(), ApiError> {
    match (op, attempt(inbound, op).await) {
        (Op::Add(_), Err(ApiError::AlreadyExists)) | (Op::Remove(_), Err(ApiError::NotFound)) => {
            Ok(())
        }
        (_, result) => result,
    }
}

/// Sends one operation, again after a retryable error (up to [`ATTEMPTS`] times in all).
async fn attempt(inbound: &Inbound<'_>, op: &Op) -> Result<(), ApiError> {
    let mut attempt = 0;
    loop {
        let result = match op {
            Op::Add(user) => {
                inbound
                    .client
                    .add_user(inbound.tag, inbound.protocol, user)
                    .await
            }
            Op::Remove(email) => inbound.client.remove_user(inbound.tag, email).await,
        };
        match result {
            Err(err) if err.is_retryable() && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(RETRY_BASE * 2u32.pow(attempt)).await;
            }
            other => return other,
        }
    }
}

/// The users an inbound holds after `applied` ops on `current`.
pub(super) fn merge(current: &[User], applied: &[Op]) -> Vec<User> {
    let mut users: BTreeMap<String, User> = current
        .iter()
        .map(|u| (u.email.to_lowercase(), u.clone()))
        .collect();
    for op in applied {
        match op {
            Op::Add(u) => {
                users.insert(u.email.to_lowercase(), u.clone());
            }
            Op::Remove(e) => {
                users.remove(&e.to_lowercase());
            }
        }
    }
    users.into_values().collect()
}

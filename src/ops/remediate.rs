//! The webhook's worker: takes the alerts Alertmanager posted, decides per alert with the pure
//! rules of [`crate::domain::remediation`], and acts through the operations service — after
//! re-checking with the warden's own eyes, under the operation lock. Every decision is logged,
//! audited and counted in `xray_warden_alert_actions_total{action,result}`.

use std::time::SystemTime;

use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::incidents::Incidents;
use super::{Action, Operations};
use crate::alertmanager::Alert;
use crate::config::{RemediationConfig, UsersConfig};
use crate::domain::remediation::{
    self, AlertResult, AlertView, CLEANUP_ORPHAN, CleanupRequest, Moment, NodeIdentity, Policy,
};
use crate::domain::{GuardLimits, TunnelId};
use crate::health::cleanup::{CleanupOutcome, CleanupResult, plan_cleanup};

/// Alert batches waiting for the worker. Small: Alertmanager retries a 503, so a full queue
/// only delays, and a flood cannot grow the warden's memory.
const QUEUE: usize = 64;

/// The handler's end of the queue.
#[derive(Clone)]
pub struct AlertQueue(mpsc::Sender<Vec<Alert>>);

/// Why alerts were not queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the remediation queue is full; retry later")]
    Full,
    #[error("the remediation worker has stopped")]
    Closed,
}

impl AlertQueue {
    /// Queues a payload's alerts without waiting.
    pub fn offer(&self, alerts: Vec<Alert>) -> Result<(), QueueError> {
        self.0.try_send(alerts).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => QueueError::Full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
        })
    }
}

/// The worker's state: the policy, who this node is, and the persisted record of actions.
pub struct Worker {
    ops: Operations,
    policy: Policy,
    me: NodeIdentity,
    limits: GuardLimits,
    incidents: Incidents,
    counter: IntCounterVec,
}

impl Worker {
    /// A worker and the queue feeding it; registers the actions counter in `registry`, every
    /// result at 0 so that rates and dashboards have series before the first alert.
    pub fn new(
        ops: Operations,
        config: &RemediationConfig,
        users: &UsersConfig,
        registry: &Registry,
    ) -> (Self, AlertQueue, mpsc::Receiver<Vec<Alert>>) {
        let counter = IntCounterVec::new(
            Opts::new(
                "xray_warden_alert_actions_total",
                "Decisions on alerts received from Alertmanager, by action and result.",
            ),
            &["action", "result"],
        )
        .expect("static metric spec");
        registry
            .register(Box::new(counter.clone()))
            .expect("registered once");
        for result in AlertResult::ALL {
            counter.with_label_values(&[CLEANUP_ORPHAN, result.as_str()]);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let worker = Self {
            ops,
            policy: Policy {
                enabled: config.enabled,
                dry_run: config.dry_run,
                min_orphan_age: config.min_orphan_age,
                cooldown: config.cooldown,
                max_actions_per_hour: config.max_actions_per_hour,
            },
            me: NodeIdentity {
                node: config.node_name(),
                node_label: config.node_label.clone(),
            },
            limits: GuardLimits {
                max_fraction: config.max_orphan_fraction,
                max_per_pass: config.max_orphans_per_pass,
            },
            incidents: Incidents::load(&users.state_dir),
            counter,
        };
        (worker, AlertQueue(tx), rx)
    }

    /// Handles queued alerts until `shutdown`. An alert being handled is finished first: the
    /// wait for the next batch is the only point where shutdown cuts in.
    pub async fn run(mut self, mut queue: mpsc::Receiver<Vec<Alert>>, shutdown: CancellationToken) {
        info!(node = %self.me.node, label = %self.me.node_label, "remediation worker ready");
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                batch = queue.recv() => match batch {
                    Some(batch) => batch,
                    None => return,
                },
            };
            for alert in &batch {
                self.handle(alert).await;
            }
        }
    }

    async fn handle(&mut self, alert: &Alert) {
        let view = AlertView {
            status: &alert.status,
            labels: &alert.labels,
            fingerprint: &alert.fingerprint,
            starts_at: &alert.starts_at,
        };
        let target = alert.labels.get("tunnel").map_or("-", String::as_str);
        let (result, why) = match remediation::triage(view, &self.me) {
            Err(refusal) => (refusal.result, refusal.why),
            Ok(request) => self.act(&request).await,
        };
        self.counter
            .with_label_values(&[CLEANUP_ORPHAN, result.as_str()])
            .inc();
        self.ops
            .audit()
            .record(
                "alertmanager",
                Action::AlertCleanupOrphan,
                target,
                result.as_str(),
            )
            .await;
        match result {
            AlertResult::Done | AlertResult::DryRun => {
                info!(tunnel = target, result = result.as_str(), %why, "alert acted on")
            }
            AlertResult::Failed => {
                warn!(tunnel = target, result = result.as_str(), %why, "alert action failed")
            }
            _ => info!(tunnel = target, result = result.as_str(), %why, "alert not acted on"),
        }
    }

    /// Decides and acts under the operation lock, so the facts cannot change in between.
    async fn act(&mut self, request: &CleanupRequest) -> (AlertResult, String) {
        let ops = self.ops.clone();
        let _lock = ops.lock().await;
        let now = SystemTime::now();
        let (orphans, units) = {
            let snapshot = ops.state().read();
            let units: Vec<TunnelId> = snapshot.tunnels.keys().cloned().collect();
            (snapshot.orphans.clone(), units)
        };
        let tunnel = request.tunnel.as_str();
        let moment = Moment {
            now,
            orphans: &orphans,
            duplicate: self.incidents.seen(&request.incident),
            last_action: self.incidents.last_action(tunnel),
            actions_last_hour: self.incidents.actions_last_hour(now),
            guard: self
                .limits
                .check_orphans(&orphans, &units)
                .map_err(|trip| trip.to_string()),
        };
        let go = match remediation::decide(request, &self.policy, &moment) {
            Ok(go) => go,
            Err(refusal) => return (refusal.result, refusal.why),
        };
        let results = match ops
            .cleanup_locked(&plan_cleanup(&go.orphans), go.dry_run)
            .await
        {
            Ok(results) => results,
            Err(err) => return (AlertResult::Failed, err.to_string()),
        };
        let (result, why) = summarize(&results);
        if result == AlertResult::Done
            && let Err(err) = self
                .incidents
                .record(&request.incident, tunnel, now, self.policy.cooldown)
                .await
        {
            // The action is done; only its memory is lost: the next re-send re-checks and
            // finds no orphan.
            warn!(error = %err, "cannot persist the remediation record");
        }
        (result, why)
    }
}

/// One result for the whole alert: failed if any step failed, done if any was done, dry run
/// if it would have acted, else the fresh re-check found no orphan after all.
fn summarize(results: &[CleanupResult]) -> (AlertResult, String) {
    let why = results
        .iter()
        .map(|r| match &r.outcome {
            CleanupOutcome::Done(s)
            | CleanupOutcome::WouldDo(s)
            | CleanupOutcome::Skipped(s)
            | CleanupOutcome::Failed(s) => s.as_str(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let any = |f: fn(&CleanupOutcome) -> bool| results.iter().any(|r| f(&r.outcome));
    let result = if any(|o| matches!(o, CleanupOutcome::Failed(_))) {
        AlertResult::Failed
    } else if any(|o| matches!(o, CleanupOutcome::Done(_))) {
        AlertResult::Done
    } else if any(|o| matches!(o, CleanupOutcome::WouldDo(_))) {
        AlertResult::DryRun
    } else {
        AlertResult::RefusedNotOrphan
    };
    (result, why)
}

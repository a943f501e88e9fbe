//! Wiring: builds the shared state, spawns every long-lived task in one place, and runs them
//! until shutdown.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::{Config, Secrets};
use crate::health;
use crate::http::api::ApiState;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::notify;
use crate::ops::remediate::Worker;
use crate::ops::{Audit, OpLock, Operations, Parts};
use crate::sampler;
use crate::state::SharedState;
use crate::supervisor::{Supervisor, TaskEnded};
use crate::systemd::watcher;
use crate::usersync::{self, SyncRequest, metrics::SyncMetrics};

/// How a run ended, when it did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("tasks still running after the {0:?} shutdown grace period")]
    GraceExceeded(Duration),
    #[error("shutdown aborted by a second signal")]
    Aborted,
    /// A long-lived task returned or panicked: the process exits non-zero so that systemd
    /// restarts all of it.
    #[error(transparent)]
    TaskEnded(#[from] TaskEnded),
}

/// Signals that end a run: `shutdown` starts a graceful stop; `abort` ends it at once.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    pub shutdown: CancellationToken,
    pub abort: CancellationToken,
}

/// Runs the daemon on `listener` until `stop.shutdown` is cancelled, then waits up to
/// `config.shutdown_grace` (or until `stop.abort`) for every task to finish.
pub async fn run(
    config: Config,
    secrets: Secrets,
    listener: TcpListener,
    stop: Stop,
) -> Result<(), DaemonError> {
    let state = SharedState::default();
    let metrics = Metrics::new(state.clone());
    let (client_tx, client_rx) = watch::channel(None);
    let manage_rx = client_rx.clone();
    let sync_systemd = client_rx.clone();
    let tracker = TaskTracker::new();
    let shutdown = stop.shutdown.clone();
    let tasks = Supervisor::new(tracker.clone(), shutdown.clone());

    tasks.spawn(
        "systemd",
        watcher::run(
            config.systemd.clone(),
            state.clone(),
            client_tx,
            shutdown.clone(),
        )
        .instrument(info_span!("systemd")),
    );
    tasks.spawn(
        "sampler",
        sampler::run(
            config.sampler.clone(),
            state.clone(),
            client_rx,
            shutdown.clone(),
        )
        .instrument(info_span!("sampler")),
    );
    tasks.spawn(
        "prerender",
        metrics
            .clone()
            .prerender(shutdown.clone())
            .instrument(info_span!("prerender")),
    );
    let (sync_tx, sync_rx) = mpsc::channel(8);
    let sync_metrics = SyncMetrics::new(metrics.registry());
    let sync_on = config.users.source.is_some();
    let lock = OpLock::default();
    tasks.spawn(
        "usersync",
        usersync::run(
            config.users.clone(),
            config.tunnels.clone(),
            state.clone(),
            sync_metrics,
            sync_rx,
            lock.clone(),
            sync_systemd,
            shutdown.clone(),
        )
        .instrument(info_span!("usersync")),
    );
    if sync_on {
        tasks.spawn(
            "sighup",
            sync_on_sighup(sync_tx.clone(), shutdown.clone()).instrument(info_span!("sighup")),
        );
    }
    let health_settings = health::Settings::from_config(&config);
    let ledger = health::Ledger::default();
    tasks.spawn(
        "health",
        health::run(
            health_settings.clone(),
            state.clone(),
            ledger.clone(),
            shutdown.clone(),
        )
        .instrument(info_span!("health")),
    );
    let ops = Operations::new(Parts {
        client: manage_rx,
        tunnels: config.tunnels.clone(),
        health: health_settings,
        ledger: ledger.clone(),
        state: state.clone(),
        sync: sync_on.then_some(sync_tx),
        audit: Audit::new(config.api.audit_log.clone(), metrics.registry()),
        lock,
        tracker: tracker.clone(),
    });
    let (worker, alerts, queue) = Worker::new(
        ops.clone(),
        &config.remediation,
        &config.users,
        metrics.registry(),
    );
    // Without the API nothing can post alerts: the worker would end at once, so it does not run.
    if secrets.api_token.is_some() {
        tasks.spawn(
            "remediation",
            worker
                .run(queue, shutdown.clone())
                .instrument(info_span!("remediation")),
        );
    }
    let api = secrets.api_token.map(|token| ApiState {
        token: Arc::new(token),
        state: state.clone(),
        ops,
        alerts,
    });
    let notify_state = state.clone();
    let app = AppState {
        metrics,
        state,
        shutdown: shutdown.clone(),
        api,
    };
    let limits = http::Limits::from_config(&config.api);
    tasks.spawn(
        "http",
        async move {
            if let Err(err) = http::serve(listener, app, limits).await {
                warn!(error = %err, "HTTP server failed");
            }
        }
        .instrument(info_span!("http")),
    );
    if notify::wanted() {
        tasks.spawn(
            "notify",
            notify::run(notify_state, shutdown.clone()).instrument(info_span!("notify")),
        );
    }
    tracker.close();
    finish(&tracker, &tasks, config.shutdown_grace, &stop).await
}

/// Waits for the shutdown, then up to `grace` (or until `stop.abort`) for every task; an early
/// end of a long-lived task makes the run an error even if the rest stopped cleanly.
async fn finish(
    tracker: &TaskTracker,
    tasks: &Supervisor,
    grace: Duration,
    stop: &Stop,
) -> Result<(), DaemonError> {
    stop.shutdown.cancelled().await;
    info!(grace = ?grace, "shutting down");
    tokio::select! {
        _ = tracker.wait() => info!("shutdown complete"),
        _ = tokio::time::sleep(grace) => return Err(DaemonError::GraceExceeded(grace)),
        _ = stop.abort.cancelled() => return Err(DaemonError::Aborted),
    }
    match tasks.ended() {
        Some(ended) => Err(ended.into()),
        None => Ok(()),
    }
}

/// Asks for a sync round on every SIGHUP.
async fn sync_on_sighup(sync: mpsc::Sender<SyncRequest>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {
                info!("SIGHUP: syncing users");
                let _ = sync.send(SyncRequest { force: false, reply: None }).await;
            }
        }
    }
}

/// Cancels `stop.shutdown` on the first SIGTERM or SIGINT and `stop.abort` on the second.
pub async fn watch_signals(stop: Stop) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    for token in [&stop.shutdown, &stop.abort] {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        token.cancel();
    }
    warn!("second signal: aborting shutdown");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run's end when a long-lived task panics while the others keep going until shutdown:
    /// an error naming the task, well before any signal.
    #[tokio::test]
    async fn a_panicking_task_ends_the_run_with_an_error() {
        let stop = Stop::default();
        let tracker = TaskTracker::new();
        let tasks = Supervisor::new(tracker.clone(), stop.shutdown.clone());
        let shutdown = stop.shutdown.clone();
        tasks.spawn("steady", async move { shutdown.cancelled().await });
        tasks.spawn("health", async { panic!("injected fault") });
        tracker.close();
        let grace = Duration::from_secs(5);
        let ended = tokio::time::timeout(grace, finish(&tracker, &tasks, grace, &stop)).await;
        match ended.expect("the run did not end") {
            Err(DaemonError::TaskEnded(TaskEnded::Panicked { task, message })) => {
                assert_eq!((task, message.as_str()), ("health", "injected fault"));
            }
            other => panic!("{other:?}"),
        }
    }
}

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
use crate::ops::remediate::Worker;
use crate::ops::{Audit, OpLock, Operations, Parts};
use crate::sampler;
use crate::state::SharedState;
use crate::systemd::watcher;
use crate::usersync::{self, SyncRequest, metrics::SyncMetrics};

/// How a run ended, when it did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("tasks still running after the {0:?} shutdown grace period")]
    GraceExceeded(Duration),
    #[error("shutdown aborted by a second signal")]
    Aborted,
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

    tracker.spawn(
        watcher::run(
            config.systemd.clone(),
            state.clone(),
            client_tx,
            shutdown.clone(),
        )
        .instrument(info_span!("systemd")),
    );
    tracker.spawn(
        sampler::run(
            config.sampler.clone(),
            state.clone(),
            client_rx,
            shutdown.clone(),
        )
        .instrument(info_span!("sampler")),
    );
    let (sync_tx, sync_rx) = mpsc::channel(8);
    let sync_metrics = SyncMetrics::new(metrics.registry());
    let sync_on = config.users.source.is_some();
    let lock = OpLock::default();
    tracker.spawn(
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
        tracker.spawn(
            sync_on_sighup(sync_tx.clone(), shutdown.clone()).instrument(info_span!("sighup")),
        );
    }
    let health_settings = health::Settings::from_config(&config);
    let ledger = health::Ledger::default();
    tracker.spawn(
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
    tracker.spawn(
        worker
            .run(queue, shutdown.clone())
            .instrument(info_span!("remediation")),
    );
    let api = secrets.api_token.map(|token| ApiState {
        token: Arc::new(token),
        state: state.clone(),
        ops,
        alerts,
    });
    let app = AppState {
        metrics,
        state,
        shutdown: shutdown.clone(),
        api,
    };
    tracker.spawn(
        async move {
            if let Err(err) = http::serve(listener, app).await {
                warn!(error = %err, "HTTP server failed");
            }
        }
        .instrument(info_span!("http")),
    );
    tracker.close();

    shutdown.cancelled().await;
    info!(grace = ?config.shutdown_grace, "shutting down");
    tokio::select! {
        _ = tracker.wait() => {
            info!("shutdown complete");
            Ok(())
        }
        _ = tokio::time::sleep(config.shutdown_grace) => Err(DaemonError::GraceExceeded(config.shutdown_grace)),
        _ = stop.abort.cancelled() => Err(DaemonError::Aborted),
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

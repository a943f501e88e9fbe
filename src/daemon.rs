//! Wiring: builds the shared state, spawns every long-lived task in one place, and runs them
//! until shutdown.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::config::Config;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::sampler;
use crate::state::SharedState;
use crate::systemd::watcher;

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
pub async fn run(config: Config, listener: TcpListener, stop: Stop) -> Result<(), DaemonError> {
    let state = SharedState::default();
    let (client_tx, client_rx) = watch::channel(None);
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
    let app = AppState {
        metrics: Metrics::new(state.clone()),
        state,
        shutdown: shutdown.clone(),
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

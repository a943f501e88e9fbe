//! The HTTP server: `/metrics`, `/live`, `/ready`, and the authenticated `/api/v1` ([`api`]).
//!
//! [`serve`] takes a bound listener and a shutdown token, so tests run it on port 0. Once the
//! token is cancelled, `/ready` answers 503 (load balancers stop sending) while in-flight
//! requests finish.

pub mod api;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::{CONTENT_TYPE, Metrics};
use crate::state::SharedState;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Metrics,
    pub state: SharedState,
    pub shutdown: CancellationToken,
    /// `None` when no API token is configured: `/api` is then not served.
    pub api: Option<api::ApiState>,
}

pub fn router(app: AppState) -> Router {
    let api = app.api.clone();
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .with_state(app);
    match api {
        Some(api_state) => router.merge(api::router(api_state)),
        None => router,
    }
}

/// How long a client may take to send its request headers before the connection is closed, so
/// that idle or slow connections cannot pile up or hold a graceful shutdown open.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until `shutdown` is cancelled and in-flight requests are done.
///
/// A hand-rolled accept loop over hyper rather than `axum::serve`, because only hyper's own
/// connection builder offers a header-read timeout.
pub async fn serve(listener: TcpListener, app: AppState) -> std::io::Result<()> {
    serve_with(listener, app, HEADER_READ_TIMEOUT).await
}

async fn serve_with(
    listener: TcpListener,
    app: AppState,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    let shutdown = app.shutdown.clone();
    let router = router(app);
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of fds and the like: back off instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (stream, peer) = stream;
        let service = TowerToHyperService::new(router.clone().layer(Extension(api::Peer(peer))));
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                debug!(error = %err, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn metrics(State(app): State<AppState>) -> Response {
    match app.metrics.render() {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(err) => {
            warn!(error = %err, "cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
        }
    }
}

async fn live() -> &'static str {
    "ok\n"
}

/// Ready once the first full listing of units is done, and no longer once shutdown starts.
async fn ready(State(app): State<AppState>) -> (StatusCode, &'static str) {
    if app.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !app.state.read().listed {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first listing of units\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start() -> (String, AppState) {
        start_with(HEADER_READ_TIMEOUT).await
    }

    async fn start_with(header_read_timeout: Duration) -> (String, AppState) {
        let state = SharedState::default();
        let app = AppState {
            metrics: Metrics::new(state.clone()),
            state,
            shutdown: CancellationToken::new(),
            api: None,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve_with(listener, app.clone(), header_read_timeout));
        (base, app)
    }

    /// A minimal HTTP/1.0 GET, to keep test dependencies down.
    async fn get(base: &str, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn ready_follows_listing_and_shutdown() {
        let (base, app) = start().await;
        assert_eq!(get(&base, "/live").await.0, 200);
        assert_eq!(get(&base, "/ready").await.0, 503);
        app.state.update(|s| s.listed = true);
        assert_eq!(get(&base, "/ready").await.0, 200);
        let (status, body) = get(&base, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("xray_warden_systemd_up 0"), "{body}");
        assert_eq!(get(&base, "/nope").await.0, 404);
    }

    #[tokio::test]
    async fn not_ready_once_shutdown_starts() {
        let (_base, app) = start().await;
        app.state.update(|s| s.listed = true);
        app.shutdown.cancel();
        let (status, _) = ready(State(app)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn slow_headers_are_cut_off_and_do_not_hold_shutdown() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (base, app) = start_with(Duration::from_millis(200)).await;
        let addr = base.trim_start_matches("http://");
        let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(3), stalled.read_to_end(&mut buf));
        assert!(
            closed.await.is_ok(),
            "the server kept a header-less connection open"
        );
        app.shutdown.cancel();
    }
}

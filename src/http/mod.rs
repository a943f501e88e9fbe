//! The HTTP server: `/metrics`, `/live` and `/ready`.
//!
//! [`serve`] takes a bound listener and a shutdown token, so tests run it on port 0. Once the
//! token is cancelled, `/ready` answers 503 (load balancers stop sending) while in-flight
//! requests finish.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::{CONTENT_TYPE, Metrics};
use crate::state::SharedState;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Metrics,
    pub state: SharedState,
    pub shutdown: CancellationToken,
}

pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .with_state(app)
}

/// Serves until `shutdown` is cancelled and in-flight requests are done.
pub async fn serve(listener: TcpListener, app: AppState) -> std::io::Result<()> {
    let shutdown = app.shutdown.clone();
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
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
        let state = SharedState::default();
        let app = AppState {
            metrics: Metrics::new(state.clone()),
            state,
            shutdown: CancellationToken::new(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, app.clone()));
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
}

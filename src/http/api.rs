//! `/api/v1`: the authenticated management API. Every route needs `Authorization: Bearer
//! <token>`; without a configured token the routes are not mounted at all.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::usersync::SyncRequest;

/// How long `POST /api/v1/sync` waits for the round it asked for.
const SYNC_WAIT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct ApiState {
    pub token: Arc<String>,
    /// `None` when user sync is off.
    pub sync: Option<mpsc::Sender<SyncRequest>>,
}

pub fn router(api: ApiState) -> Router {
    Router::new()
        .route("/api/v1/sync", post(sync))
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .with_state(api)
}

/// A JSON error with a stable code.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": code, "message": message.into()});
    (status, Json(body)).into_response()
}

async fn authenticate(State(api): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), api.token.as_bytes()) => {
            next.run(request).await
        }
        _ => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        ),
    }
}

/// Compares without an early exit, so response time does not reveal how much of a guess was
/// right. (Ten lines; a crate for it would add nothing.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncBody {
    #[serde(default)]
    force: bool,
}

async fn sync(State(api): State<ApiState>, body: Option<Json<SyncBody>>) -> Response {
    let Some(sender) = api.sync else {
        return error(
            StatusCode::CONFLICT,
            "sync_off",
            "no users source is configured",
        );
    };
    let force = body.map(|Json(b)| b.force).unwrap_or_default();
    let (reply, answer) = oneshot::channel();
    let request = SyncRequest {
        force,
        reply: Some(reply),
    };
    if sender.send(request).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the sync loop has stopped",
        );
    }
    match tokio::time::timeout(SYNC_WAIT, answer).await {
        Ok(Ok(summary)) => Json(summary).into_response(),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the sync loop has stopped",
        ),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the sync is still running",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}

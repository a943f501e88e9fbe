//! `/api/v1`: the authenticated management API. Every route needs `Authorization: Bearer
//! <token>`; without a configured token the routes are not mounted at all.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::audit::Audit;
use crate::contract::{ErrorBody, HealthReport, OrphanList, TunnelList, TunnelView};
use crate::domain::TunnelId;
use crate::state::SharedState;
use crate::usersync::SyncRequest;

mod legacy;
pub mod manage;

/// How long `POST /api/v1/sync` waits for the round it asked for.
const SYNC_WAIT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct ApiState {
    pub token: Arc<String>,
    /// `None` when user sync is off.
    pub sync: Option<mpsc::Sender<SyncRequest>>,
    pub state: SharedState,
    pub audit: Audit,
    /// Tunnel management; `None` turns the mutating tunnel routes off (501).
    pub manager: Option<manage::Manager>,
    /// Orphan cleanup; `None` turns it off (501).
    pub cleanup: Option<manage::CleanupDeps>,
}

/// The address of the client, put on every request by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

pub fn router(api: ApiState) -> Router {
    Router::new()
        .route("/api/v1/sync", post(sync))
        .route(
            "/api/v1/tunnels",
            get(list_tunnels).delete(manage::delete_all),
        )
        .route("/api/v1/tunnels/restart-all", post(manage::restart_all))
        .route(
            "/api/v1/tunnels/{id}",
            get(show_tunnel)
                .put(manage::put_tunnel)
                .delete(manage::delete_tunnel),
        )
        .route("/api/v1/tunnels/{id}/logs", get(manage::logs))
        .route("/api/v1/tunnels/{id}/{action}", post(manage::act_on_tunnel))
        .route("/api/v1/orphans/cleanup", post(manage::cleanup_orphans))
        .route(
            "/api/services",
            get(legacy::get_services)
                .post(legacy::post_services)
                .delete(legacy::delete_services),
        )
        .route("/api/v1/health", get(health))
        .route("/api/v1/orphans", get(list_orphans))
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .with_state(api)
}

/// The caller of a request, for the audit log.
pub fn caller(request_peer: Option<Extension<Peer>>) -> String {
    request_peer.map_or_else(
        || "unknown".to_owned(),
        |Extension(Peer(addr))| addr.to_string(),
    )
}

/// An error answer: a status, a stable code and a message, rendered as JSON.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        error(self.status, self.code, self.message)
    }
}

/// Parses a tunnel id from a path, or the 400 to answer.
pub fn parse_id(id: &str) -> Result<TunnelId, Failure> {
    TunnelId::new(id)
        .map_err(|err| Failure::new(StatusCode::BAD_REQUEST, "invalid_id", err.to_string()))
}

async fn list_tunnels(State(api): State<ApiState>) -> Json<TunnelList> {
    Json(TunnelList::from_snapshot(&api.state.read()))
}

async fn show_tunnel(
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<TunnelView>, Failure> {
    let id = parse_id(&id)?;
    let snapshot = api.state.read();
    let tunnel = snapshot.tunnels.get(&id).ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no tunnel {id}"),
        )
    })?;
    Ok(Json(TunnelView::from_snapshot(&id, tunnel)))
}

async fn health(State(api): State<ApiState>) -> Json<HealthReport> {
    Json(HealthReport::from_snapshot(&api.state.read()))
}

async fn list_orphans(State(api): State<ApiState>) -> Json<OrphanList> {
    Json(OrphanList::from_snapshot(&api.state.read()))
}

/// A JSON error with a stable code.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

/// A contract type as the untyped JSON the handlers that still answer `Json<Value>` return.
fn to_json(answer: impl Serialize) -> serde_json::Value {
    // Contract types are plain structs with string keys: serialising them cannot fail.
    serde_json::to_value(answer).expect("a contract type serialises to JSON")
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

async fn sync(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    body: Option<Json<SyncBody>>,
) -> Response {
    let force = body.as_ref().is_some_and(|Json(b)| b.force);
    let response = run_sync(&api, force).await;
    let result = if response.status().is_success() {
        "ok".to_owned()
    } else {
        response.status().as_u16().to_string()
    };
    let action = if force { "sync.force" } else { "sync" };
    api.audit.record(&caller(peer), action, "*", &result);
    response
}

async fn run_sync(api: &ApiState, force: bool) -> Response {
    let Some(sender) = api.sync.clone() else {
        return error(
            StatusCode::CONFLICT,
            "sync_off",
            "no users source is configured",
        );
    };
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

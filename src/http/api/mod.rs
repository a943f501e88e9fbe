//! `/api/v1`: the authenticated management API. Every route needs `Authorization: Bearer
//! <token>`; without a configured token the routes are not mounted at all.

use std::sync::Arc;

use axum::Extension;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::contract::{ErrorBody, HealthReport, OrphanList, TunnelList, TunnelView};
use crate::domain::TunnelId;
use crate::ops::remediate::AlertQueue;
use crate::ops::{Op, OpError, Operations};
use crate::state::SharedState;

mod alerts;
mod legacy;
pub mod manage;

#[derive(Clone)]
pub struct ApiState {
    pub token: Arc<String>,
    pub state: SharedState,
    /// Every action goes through it; handlers only parse, call and render.
    pub ops: Operations,
    /// The remediation worker's queue (`POST /api/v1/alerts`).
    pub alerts: AlertQueue,
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
            "/api/v1/alerts",
            post(alerts::receive).layer(DefaultBodyLimit::max(crate::alertmanager::MAX_BODY)),
        )
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

impl From<OpError> for Failure {
    /// The status each error means for an HTTP caller; the code is the error's own.
    fn from(err: OpError) -> Self {
        use crate::lifecycle::LifecycleError as L;
        let status = match &err {
            OpError::ManagementOff => StatusCode::NOT_IMPLEMENTED,
            OpError::SyncOff | OpError::Guard(_) => StatusCode::CONFLICT,
            OpError::SystemdDown | OpError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            OpError::SyncTimeout => StatusCode::GATEWAY_TIMEOUT,
            OpError::Lifecycle(l) => match l {
                L::InvalidId(_) | L::InvalidConfig { .. } | L::ConfirmationRequired => {
                    StatusCode::BAD_REQUEST
                }
                L::CoreRejected { .. } | L::PolicyRefused { .. } | L::StartFailed { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                L::NotFound { .. } => StatusCode::NOT_FOUND,
                L::JobFailed {
                    result: crate::systemd::JobResult::Canceled,
                    ..
                } => StatusCode::CONFLICT,
                L::Systemd(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        };
        Failure::new(status, err.code(), err.to_string())
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
) -> Result<Response, Failure> {
    let force = body.as_ref().is_some_and(|Json(b)| b.force);
    let done = api.ops.run(&caller(peer), Op::Sync { force }).await?;
    Ok(manage::render(done).into_response())
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

//! Mutating tunnel routes: create/replace, delete, start/stop/restart, restart-all, emergency
//! cleanup, and the bounded log tail. Every call is audited.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::{ApiState, Failure, Peer, caller, parse_id, to_json};
use crate::config::TunnelsConfig;
use crate::contract::{BulkItem, BulkResults, CleanupResults, LogsView, OutcomeView};
use crate::lifecycle::{Lifecycle, LifecycleError, Outcome};
use crate::systemd::{Client, JobResult};

/// Most lines `GET /tunnels/{id}/logs` returns.
pub const MAX_LOG_LINES: usize = 10_000;

/// Builds a [`Lifecycle`] on the watcher's live bus connection; one operation at a time.
#[derive(Clone)]
pub struct Manager {
    pub client: watch::Receiver<Option<Client>>,
    pub tunnels: TunnelsConfig,
    pub lock: Arc<Mutex<()>>,
}

impl Manager {
    pub fn new(client: watch::Receiver<Option<Client>>, tunnels: TunnelsConfig) -> Self {
        Self {
            client,
            tunnels,
            lock: Arc::default(),
        }
    }

    /// The lifecycle, holding the operation lock; 503 while systemd's bus is down.
    pub async fn get(&self) -> Result<(OwnedMutexGuard<()>, Lifecycle), Failure> {
        let guard = self.lock.clone().lock_owned().await;
        let client = self.client.borrow().clone().ok_or_else(|| {
            Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "systemd_down",
                "no connection to systemd's bus right now",
            )
        })?;
        Ok((guard, Lifecycle::new(client, self.tunnels.clone())))
    }
}

fn manager(api: &ApiState) -> Result<&Manager, Failure> {
    api.manager.as_ref().ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_IMPLEMENTED,
            "off",
            "tunnel management is off",
        )
    })
}

/// Maps a lifecycle error to the status and code its variant documents.
pub fn failure(err: LifecycleError) -> Failure {
    let (status, code) = match &err {
        LifecycleError::InvalidId(_) => (StatusCode::BAD_REQUEST, "invalid_id"),
        LifecycleError::InvalidConfig { .. } => (StatusCode::BAD_REQUEST, "invalid_config"),
        LifecycleError::CoreRejected { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "config_rejected")
        }
        LifecycleError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        LifecycleError::ConfirmationRequired => (StatusCode::BAD_REQUEST, "confirmation_required"),
        LifecycleError::JobFailed {
            result: JobResult::Canceled,
            ..
        } => (StatusCode::CONFLICT, "job_canceled"),
        LifecycleError::JobFailed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "job_failed"),
        LifecycleError::Systemd(_) => (StatusCode::BAD_GATEWAY, "systemd"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    Failure::new(status, code, err.to_string())
}

fn outcome(o: &Outcome) -> Value {
    to_json(OutcomeView::from(o))
}

/// Runs `op` and audits it as `action` on `target`.
fn audited(
    api: &ApiState,
    peer: Option<Extension<Peer>>,
    action: &str,
    target: &str,
    result: Result<Json<Value>, Failure>,
) -> Result<Json<Value>, Failure> {
    let verdict = match &result {
        Ok(_) => "ok",
        Err(f) => f.code,
    };
    api.audit.record(&caller(peer), action, target, verdict);
    result
}

pub async fn put_tunnel(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    let result = async {
        let id = parse_id(&id)?;
        let (_guard, lifecycle) = manager(&api)?.get().await?;
        let done = lifecycle.create(&id, &body).await.map_err(failure)?;
        Ok(Json(outcome(&done)))
    }
    .await;
    audited(&api, peer, "tunnel.put", &id, result)
}

pub async fn delete_tunnel(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Failure> {
    let result = async {
        let id = parse_id(&id)?;
        let (_guard, lifecycle) = manager(&api)?.get().await?;
        let done = lifecycle.delete(&id).await.map_err(failure)?;
        Ok(Json(outcome(&done)))
    }
    .await;
    audited(&api, peer, "tunnel.delete", &id, result)
}

pub async fn act_on_tunnel(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Path((id, verb)): Path<(String, String)>,
) -> Result<Json<Value>, Failure> {
    let action = format!("tunnel.{verb}");
    let result = async {
        let id = parse_id(&id)?;
        if !matches!(verb.as_str(), "start" | "stop" | "restart") {
            let message = format!("unknown action {verb:?}: start, stop or restart");
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                "unknown_action",
                message,
            ));
        }
        let (_guard, lifecycle) = manager(&api)?.get().await?;
        let done = match verb.as_str() {
            "start" => lifecycle.start(&id).await,
            "stop" => lifecycle.stop(&id).await,
            _ => lifecycle.restart(&id).await,
        };
        Ok(Json(outcome(&done.map_err(failure)?)))
    }
    .await;
    audited(&api, peer, &action, &id, result)
}

/// Restarts every tunnel; answers each one's result.
pub async fn restart_all(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
) -> Result<Json<Value>, Failure> {
    let result = async {
        let (_guard, lifecycle) = manager(&api)?.get().await?;
        let results = lifecycle.restart_all().await.map_err(failure)?;
        Ok(Json(bulk(results)))
    }
    .await;
    audited(&api, peer, "tunnels.restart_all", "*", result)
}

/// `{"results": [...]}` of a bulk operation: each tunnel's outcome or its error.
fn bulk(results: Vec<crate::lifecycle::BulkResult>) -> Value {
    let results = results
        .into_iter()
        .map(|(id, r)| match r {
            Ok(o) => BulkItem::done(&o),
            Err(err) => {
                let f = failure(err);
                BulkItem::failed(&id, f.code, f.message)
            }
        })
        .collect();
    to_json(BulkResults { results })
}

#[derive(Debug, Deserialize)]
pub struct Confirm {
    #[serde(default)]
    pub confirm: bool,
}

/// Removes every tunnel; refused without `?confirm=true`.
pub async fn delete_all(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Query(q): Query<Confirm>,
) -> Result<Json<Value>, Failure> {
    let result = async {
        let (_guard, lifecycle) = manager(&api)?.get().await?;
        let results = lifecycle
            .emergency_cleanup(q.confirm)
            .await
            .map_err(failure)?;
        Ok(Json(bulk(results)))
    }
    .await;
    audited(&api, peer, "tunnels.emergency_cleanup", "*", result)
}

#[derive(Debug, Deserialize)]
pub struct Lines {
    pub lines: Option<usize>,
}

/// The last `lines` (default 100, at most [`MAX_LOG_LINES`]) lines of the tunnel's log.
pub async fn logs(
    State(api): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<Lines>,
) -> Result<Json<Value>, Failure> {
    let id = parse_id(&id)?;
    let lines = q.lines.unwrap_or(100);
    if lines == 0 || lines > MAX_LOG_LINES {
        let message = format!("lines must be between 1 and {MAX_LOG_LINES}");
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_lines",
            message,
        ));
    }
    let manager = manager(&api)?;
    let client = manager.client.borrow().clone();
    let tail = match client {
        Some(client) => {
            Lifecycle::new(client, manager.tunnels.clone())
                .logs(&id, lines)
                .await
        }
        None => {
            return Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "systemd_down",
                "no connection to systemd",
            ));
        }
    };
    let tail = tail.map_err(failure)?;
    Ok(Json(to_json(LogsView {
        id: id.to_string(),
        lines: tail,
    })))
}

/// What the orphan cleanup needs besides the lifecycle.
#[derive(Clone)]
pub struct CleanupDeps {
    pub settings: crate::health::Settings,
    pub ledger: crate::health::Ledger,
}

/// Deletes orphaned tunnels through the lifecycle.
struct Remover(Lifecycle);

impl crate::health::cleanup::RemoveTunnel for Remover {
    type Error = LifecycleError;

    async fn remove_tunnel(&self, id: &crate::domain::TunnelId) -> Result<(), LifecycleError> {
        self.0.delete(id).await.map(|_| ())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupBody {
    #[serde(default)]
    pub dry_run: bool,
}

/// Cleans up the orphans of the last health pass; each one is re-checked at the moment of acting
/// and left alone if it no longer is an orphan. `{"dry_run": true}` only says what would be done.
pub async fn cleanup_orphans(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    body: Option<Json<CleanupBody>>,
) -> Result<Json<Value>, Failure> {
    let dry_run = body.is_some_and(|Json(b)| b.dry_run);
    let result = async {
        let deps = api.cleanup.clone().ok_or_else(|| {
            Failure::new(StatusCode::NOT_IMPLEMENTED, "off", "orphan cleanup is off")
        })?;
        let (_guard, lifecycle) = manager(&api)?.get().await?;
        let plan = crate::health::cleanup::plan_cleanup(&api.state.read().orphans);
        let cleaner = crate::health::cleanup::Cleaner::new(
            deps.settings,
            api.state.clone(),
            deps.ledger,
            Remover(lifecycle),
        );
        let results = cleaner.execute(&plan, dry_run).await;
        Ok(Json(to_json(CleanupResults::new(dry_run, &results))))
    }
    .await;
    let action = if dry_run {
        "orphans.cleanup_dry_run"
    } else {
        "orphans.cleanup"
    };
    audited(&api, peer, action, "*", result)
}

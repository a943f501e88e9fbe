//! Mutating tunnel routes: create/replace, delete, start/stop/restart, restart-all, emergency
//! cleanup, orphan cleanup, and the bounded log tail. Each handler parses its request, hands an
//! [`Op`] to the operations service and renders the result; the service audits it.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiState, Failure, Peer, caller};
use crate::contract::{BulkItem, BulkResults, CleanupResults, LogsView, OutcomeView};
use crate::ops::{Done, Op, OpError};

/// Most lines `GET /tunnels/{id}/logs` returns.
pub const MAX_LOG_LINES: usize = 10_000;

/// Runs `op` for the request's caller; the JSON of its result.
async fn run(api: &ApiState, peer: Option<Extension<Peer>>, op: Op) -> Result<Response, Failure> {
    Ok(render(api.ops.run(&caller(peer), op).await?))
}

/// The JSON of a finished operation, as the shared contract types write it.
pub fn render(done: Done) -> Response {
    match done {
        Done::Tunnel(o) => Json(OutcomeView::from(&o)).into_response(),
        Done::Bulk(results) => Json(bulk(results)).into_response(),
        Done::Cleanup { dry_run, results } => {
            Json(CleanupResults::new(dry_run, &results)).into_response()
        }
        Done::Sync(summary) => Json(summary).into_response(),
    }
}

/// Each tunnel's outcome of a bulk operation, or its error.
fn bulk(results: Vec<crate::lifecycle::BulkResult>) -> BulkResults {
    let results = results
        .into_iter()
        .map(|(id, r)| match r {
            Ok(o) => BulkItem::done(&o),
            Err(err) => {
                let f = Failure::from(OpError::from(err));
                BulkItem::failed(&id, f.code, f.message)
            }
        })
        .collect();
    BulkResults { results }
}

pub async fn put_tunnel(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    let config = body.to_vec();
    run(&api, peer, Op::Put { id, config }).await
}

pub async fn delete_tunnel(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    run(&api, peer, Op::Delete { id }).await
}

pub async fn act_on_tunnel(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Path((id, verb)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let op = match verb.as_str() {
        "start" => Op::Start { id },
        "stop" => Op::Stop { id },
        "restart" => Op::Restart { id },
        _ => {
            let message = format!("unknown action {verb:?}: start, stop or restart");
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                "unknown_action",
                message,
            ));
        }
    };
    run(&api, peer, op).await
}

/// Restarts every tunnel; answers each one's result.
pub async fn restart_all(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
) -> Result<Response, Failure> {
    run(&api, peer, Op::RestartAll).await
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
) -> Result<Response, Failure> {
    run(&api, peer, Op::EmergencyCleanup { confirm: q.confirm }).await
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
) -> Result<Response, Failure> {
    let lines = q.lines.unwrap_or(100);
    if lines == 0 || lines > MAX_LOG_LINES {
        let message = format!("lines must be between 1 and {MAX_LOG_LINES}");
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "invalid_lines",
            message,
        ));
    }
    let tail = api.ops.logs(&id, lines).await?;
    Ok(Json(LogsView { id, lines: tail }).into_response())
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
) -> Result<Response, Failure> {
    let dry_run = body.is_some_and(|Json(b)| b.dry_run);
    run(&api, peer, Op::CleanupOrphans { dry_run }).await
}

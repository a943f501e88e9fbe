//! Mutating tunnel routes: create/replace, delete, start/stop/restart, restart-all, emergency
//! cleanup, orphan cleanup, and the bounded log tail. Each handler parses its request, hands an
//! [`Op`] to the operations service and renders the result; the service audits it.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiState, Failure, Peer, caller};
use crate::lifecycle::Outcome;
use crate::ops::{Done, Op};

/// Most lines `GET /tunnels/{id}/logs` returns.
pub const MAX_LOG_LINES: usize = 10_000;

/// Runs `op` for the request's caller; the JSON of its result.
async fn run(
    api: &ApiState,
    peer: Option<Extension<Peer>>,
    op: Op,
) -> Result<Json<Value>, Failure> {
    Ok(render(api.ops.run(&caller(peer), op).await?))
}

/// The JSON of a finished operation.
pub fn render(done: Done) -> Json<Value> {
    Json(match done {
        Done::Tunnel(o) => outcome(&o),
        Done::Bulk(results) => bulk(results),
        Done::Cleanup { dry_run, results } => json!({ "dry_run": dry_run, "results": results }),
        Done::Sync(summary) => json!(summary),
    })
}

fn outcome(o: &Outcome) -> Value {
    json!({"id": o.id.as_str(), "unit": o.unit, "action": format!("{:?}", o.action).to_lowercase(), "job": o.job.to_string()})
}

/// `{"results": [...]}` of a bulk operation: each tunnel's outcome or its error.
fn bulk(results: Vec<crate::lifecycle::BulkResult>) -> Value {
    let results: Vec<Value> = results
        .into_iter()
        .map(|(id, r)| match r {
            Ok(o) => outcome(&o),
            Err(err) => {
                let f = Failure::from(crate::ops::OpError::from(err));
                json!({"id": id.as_str(), "error": f.code, "message": f.message})
            }
        })
        .collect();
    json!({ "results": results })
}

pub async fn put_tunnel(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Failure> {
    let config = body.to_vec();
    run(&api, peer, Op::Put { id, config }).await
}

pub async fn delete_tunnel(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Failure> {
    run(&api, peer, Op::Delete { id }).await
}

pub async fn act_on_tunnel(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Path((id, verb)): Path<(String, String)>,
) -> Result<Json<Value>, Failure> {
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
) -> Result<Json<Value>, Failure> {
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
) -> Result<Json<Value>, Failure> {
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
) -> Result<Json<Value>, Failure> {
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
    Ok(Json(json!({"id": id, "lines": tail})))
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
    run(&api, peer, Op::CleanupOrphans { dry_run }).await
}

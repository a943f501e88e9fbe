//! The contract the existing web app already calls, served with the same meaning on top of the
//! `/api/v1` handlers:
//! `GET /api/services?action=list|resource-usage|health-check|logs&tunnelId=..&lines=..`,
//! `POST /api/services {"action": "cleanup-orphaned"|"restart-all"}`,
//! `DELETE /api/services?confirm=true`.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiState, Failure, Peer, manage};
use crate::contract::{HealthReport, TunnelList, UsageList};
use crate::state::Snapshot;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicesQuery {
    action: Option<String>,
    tunnel_id: Option<String>,
    lines: Option<usize>,
    #[serde(default)]
    confirm: bool,
}

pub async fn get_services(
    State(api): State<ApiState>,
    Query(q): Query<ServicesQuery>,
) -> Result<Response, Failure> {
    match q.action.as_deref() {
        Some("list") => Ok(view(&api, TunnelList::from_snapshot)),
        Some("resource-usage") => Ok(view(&api, UsageList::from_snapshot)),
        Some("health-check") => Ok(view(&api, HealthReport::from_snapshot)),
        Some("logs") => {
            let id = q.tunnel_id.ok_or_else(|| {
                Failure::new(
                    StatusCode::BAD_REQUEST,
                    "missing_tunnel_id",
                    "logs needs tunnelId",
                )
            })?;
            let lines = manage::Lines { lines: q.lines };
            manage::logs(State(api), Path(id), Query(lines)).await
        }
        other => Err(unknown_action(other)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesBody {
    action: String,
    #[serde(default, rename = "dryRun", alias = "dry_run")]
    dry_run: bool,
}

pub async fn post_services(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Json(body): Json<ServicesBody>,
) -> Result<Response, Failure> {
    match body.action.as_str() {
        "restart-all" => manage::restart_all(State(api), peer).await,
        "cleanup-orphaned" => {
            let request = manage::CleanupBody {
                dry_run: body.dry_run,
            };
            manage::cleanup_orphans(State(api), peer, Some(Json(request))).await
        }
        other => Err(unknown_action(Some(other))),
    }
}

pub async fn delete_services(
    State(api): State<ApiState>,
    peer: Option<Extension<Peer>>,
    Query(q): Query<ServicesQuery>,
) -> Result<Response, Failure> {
    manage::delete_all(
        State(api),
        peer,
        Query(manage::Confirm { confirm: q.confirm }),
    )
    .await
}

fn unknown_action(action: Option<&str>) -> Failure {
    Failure::new(
        StatusCode::BAD_REQUEST,
        "unknown_action",
        format!("unknown action {action:?}"),
    )
}

/// A view of the current snapshot, as JSON.
fn view<T: Serialize>(api: &ApiState, view: fn(&Snapshot) -> T) -> Response {
    Json(view(&api.state.read())).into_response()
}

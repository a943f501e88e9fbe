//! `POST /api/v1/alerts`: Alertmanager's webhook. The handler checks the body, queues its
//! alerts for the remediation worker and answers 202 at once; Alertmanager does not retry a
//! 4xx, so a malformed body gets one and changes nothing, and a full queue answers 503, which
//! it retries. Decisions, including refusals, are audited and counted by the worker.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiState, Failure};
use crate::alertmanager::Payload;
use crate::ops::remediate::QueueError;

pub async fn receive(
    State(api): State<ApiState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Failure> {
    let payload = Payload::parse(&body)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, "invalid_payload", e.to_string()))?;
    let count = payload.alerts.len();
    api.alerts.offer(payload.alerts).map_err(|e| {
        let code = match e {
            QueueError::Full => "busy",
            QueueError::Closed => "shutting_down",
        };
        Failure::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
    })?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "queued": count }))))
}

#[cfg(test)]
#[path = "alerts_tests.rs"]
mod tests;

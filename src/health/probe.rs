//! The `api` check's probes: does each active tunnel's core answer on its gRPC API.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use super::checks::{ApiVerdict, NOT_RUNNING};
use crate::xray::{ApiClient, ApiError};

/// API probes in flight at once.
const PROBES_AT_ONCE: usize = 16;

/// One tunnel to probe: whether it is up, and its config's API address (`None` where the config
/// is unknown; `Err` where it cannot be read; `Ok(None)` where it names no API).
pub type ApiTarget = (bool, Option<Result<Option<SocketAddr>, String>>);

/// Probes every target, at most [`PROBES_AT_ONCE`] at a time, answering in target order.
pub async fn probe_all(timeout: Duration, targets: Vec<ApiTarget>) -> Vec<Option<ApiVerdict>> {
    let probes = targets.into_iter().map(|(active, target)| async move {
        let target = target?;
        Some(match target {
            Err(why) => ApiVerdict::Unknown(format!("cannot read the config: {why}")),
            Ok(None) => ApiVerdict::NotConfigured,
            Ok(Some(addr)) if !active => ApiVerdict::Unreachable {
                addr,
                error: NOT_RUNNING.into(),
            },
            Ok(Some(addr)) => match ApiClient::detect(addr, timeout).await {
                Ok(found) => ApiVerdict::Reachable {
                    addr,
                    core: found.flavour.to_string(),
                },
                // It answers; what it serves is the user sync's concern.
                Err(ApiError::NoServices(_)) => ApiVerdict::Reachable {
                    addr,
                    core: "unknown (serves no HandlerService or StatsService)".into(),
                },
                Err(e) => ApiVerdict::Unreachable {
                    addr,
                    error: e.to_string(),
                },
            },
        })
    });
    stream::iter(probes)
        .buffered(PROBES_AT_ONCE)
        .collect()
        .await
}

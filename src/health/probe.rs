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
///
/// Only an active tunnel whose config names an API is asked over the network; every other
/// verdict follows from the target alone and is made without a future (a probe's future is
/// several kilobytes: one per tunnel per pass was a tenth of the health pass's CPU at 1,000
/// tunnels without an API, perf on the steady bench).
pub async fn probe_all(timeout: Duration, targets: Vec<ApiTarget>) -> Vec<Option<ApiVerdict>> {
    let mut verdicts = Vec::with_capacity(targets.len());
    let mut asked = Vec::new();
    for (i, (active, target)) in targets.into_iter().enumerate() {
        verdicts.push(match target {
            None => None,
            Some(Err(why)) => Some(ApiVerdict::Unknown(format!(
                "cannot read the config: {why}"
            ))),
            Some(Ok(None)) => Some(ApiVerdict::NotConfigured),
            Some(Ok(Some(addr))) if !active => Some(ApiVerdict::Unreachable {
                addr,
                error: NOT_RUNNING.into(),
            }),
            Some(Ok(Some(addr))) => {
                asked.push((i, addr));
                None
            }
        });
    }
    let probes = asked
        .into_iter()
        .map(|(i, addr)| async move { (i, probe(addr, timeout).await) });
    let answered: Vec<(usize, ApiVerdict)> = stream::iter(probes)
        .buffer_unordered(PROBES_AT_ONCE)
        .collect()
        .await;
    for (i, verdict) in answered {
        verdicts[i] = Some(verdict);
    }
    verdicts
}

/// What the core at `addr` answers.
async fn probe(addr: SocketAddr, timeout: Duration) -> ApiVerdict {
    match ApiClient::detect(addr, timeout).await {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verdicts_without_a_probe_keep_the_target_order() {
        // A closed port on loopback: the one probe fails fast.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let targets: Vec<ApiTarget> = vec![
            (true, None),
            (true, Some(Ok(None))),
            (false, Some(Ok(Some(addr)))),
            (true, Some(Err("bad json".into()))),
            (true, Some(Ok(Some(addr)))),
        ];
        let verdicts = probe_all(Duration::from_secs(2), targets).await;
        assert_eq!(verdicts.len(), 5);
        assert_eq!(verdicts[0], None);
        assert_eq!(verdicts[1], Some(ApiVerdict::NotConfigured));
        let not_running = ApiVerdict::Unreachable {
            addr,
            error: NOT_RUNNING.into(),
        };
        assert_eq!(verdicts[2], Some(not_running));
        let unknown = ApiVerdict::Unknown("cannot read the config: bad json".into());
        assert_eq!(verdicts[3], Some(unknown));
        assert!(
            matches!(&verdicts[4], Some(ApiVerdict::Unreachable { addr: a, error }) if *a == addr && error != NOT_RUNNING),
            "{:?}",
            verdicts[4]
        );
    }
}

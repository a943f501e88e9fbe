//! Finding out which core serves an API address, with requests that only read.

use std::net::SocketAddr;
use std::time::Duration;

use super::client::{ApiClient, Detected};
use super::error::{ApiError, Failure};
use super::proto;
use super::wire::{self, Method};
use crate::domain::Flavour;

/// An inbound tag no real config uses, so probing with it reads nothing and changes nothing.
pub(super) const PROBE_TAG: &str = "xray-warden probe: no such inbound";

/// What one probe said: the service is there, is not, or the call failed in a way worth
/// retrying (the core is not reachable yet).
enum Heard {
    Served,
    UnknownMethod,
    UnknownService,
}

impl ApiClient {
    /// Finds out which core serves `addr`. Xray's service names first (V2Ray 4.34 knows
    /// neither, facts §0): GetInboundUsersCount of a tag that cannot exist (an Xray with
    /// HandlerService; listing needs v24.11.5+), then GetSysStats (an Xray with StatsService
    /// only, which can read counters but not manage users). Then V2Ray's names: GetSysStats and
    /// an AlterInbound that removes the empty email of that tag (the core refuses it).
    ///
    /// [`ApiError::NoServices`] when the API answers but serves neither HandlerService nor
    /// StatsService under either core's names: such an Xray and such a V2Ray both say only
    /// "unknown service", so which core it is cannot be told, and it does not matter (no user
    /// can be managed). Transport errors and timeouts are returned as they are (retryable).
    /// Takes at most four times the timeout.
    pub async fn detect(addr: SocketAddr, timeout: Duration) -> Result<Detected, ApiError> {
        let xray = ApiClient::new(addr, Flavour::Xray, timeout);
        let found = |flavour, can_list_users| {
            Ok(Detected {
                flavour,
                can_list_users,
            })
        };
        let count = proto::GetInboundUserRequest {
            tag: PROBE_TAG.to_owned(),
            email: String::new(),
        };
        let answer = xray
            .call::<_, proto::GetInboundUsersCountResponse>(
                Method::GetInboundUsersCount.path(Flavour::Xray),
                count,
            )
            .await;
        match heard(answer)? {
            Heard::Served => return found(Flavour::Xray, true),
            Heard::UnknownMethod => return found(Flavour::Xray, false),
            Heard::UnknownService => {}
        }
        if let Heard::Served | Heard::UnknownMethod = heard(xray.sys_stats(Flavour::Xray).await)? {
            return found(Flavour::Xray, false);
        }
        let v2ray = ApiClient::new(addr, Flavour::V2ray, timeout);
        if let Heard::Served | Heard::UnknownMethod = heard(v2ray.sys_stats(Flavour::V2ray).await)?
        {
            return found(Flavour::V2ray, false);
        }
        let probe = wire::inbound_probe(Flavour::V2ray, PROBE_TAG);
        let answer = v2ray
            .call::<_, proto::AlterInboundResponse>(
                Method::AlterInbound.path(Flavour::V2ray),
                probe,
            )
            .await;
        match heard(answer)? {
            Heard::Served | Heard::UnknownMethod => found(Flavour::V2ray, false),
            Heard::UnknownService => Err(ApiError::NoServices(format!(
                "the API at {addr} answers but serves neither HandlerService nor StatsService \
                 (under Xray's or V2Ray's names): list them in the config's api.services"
            ))),
        }
    }

    async fn sys_stats(&self, flavour: Flavour) -> Result<proto::SysStatsResponse, Failure> {
        self.call(Method::GetSysStats.path(flavour), proto::SysStatsRequest {})
            .await
    }
}

/// Any answer from a service, an error included (e.g. "handler not found"), means it is there.
fn heard<A>(answer: Result<A, Failure>) -> Result<Heard, ApiError> {
    match answer {
        Err(Failure::UnknownService(_)) => Ok(Heard::UnknownService),
        Err(Failure::UnknownMethod(_)) => Ok(Heard::UnknownMethod),
        Err(Failure::Api(error)) if error.is_retryable() => Err(error),
        Ok(_) | Err(_) => Ok(Heard::Served),
    }
}

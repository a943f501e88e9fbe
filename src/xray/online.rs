//! Xray's online API (StatsService GetAllOnlineUsers, GetStatsOnline, GetStatsOnlineIpList):
//! who is connected now, and from where. V2Ray 4.34 has none of it (facts §4.1).
//!
//! Xray records a user's address when a connection of that user is dispatched and forgets it
//! when the connection ends (app/dispatcher/default.go, app/stats/online_map.go), only on policy
//! levels with `statsUserOnline: true`, and never for the loopback client `127.0.0.1` or
//! `[::1]` (other loopback addresses such as 127.0.0.2 are recorded). A user's online map,
//! once made, lives until the core restarts.

use std::collections::BTreeMap;

use super::client::ApiClient;
use super::error::{ApiError, Failure};
use super::proto;
use super::wire::Method;
use crate::domain::{Flavour, online_map_name};

impl ApiClient {
    /// The online maps' names (`user>>>EMAIL>>>online`, facts §4.2) of the users connected
    /// now from at least one address, in no particular order; `Ok(None)` when the core has no
    /// such call: V2Ray (nothing is sent) or an Xray before v26.1.13.
    pub async fn online_users(&self) -> Result<Option<Vec<String>>, ApiError> {
        if self.flavour() == Flavour::V2ray {
            return Ok(None);
        }
        let path = Method::GetAllOnlineUsers.path(self.flavour());
        let request = proto::GetAllOnlineUsersRequest {};
        match self
            .call::<_, proto::GetAllOnlineUsersResponse>(path, request)
            .await
        {
            Ok(answer) => Ok(Some(answer.users)),
            Err(failure) => unimplemented_is_none(failure),
        }
    }

    /// How many distinct addresses the user `email` (exactly as the core knows it, case
    /// included) is connected from now (GetStatsOnline); `Ok(None)` when the core has no such
    /// call. A user never seen online since the core started has no online map: the core
    /// answers NOT_FOUND, an [`ApiError::Core`].
    pub async fn online_ip_count(&self, email: &str) -> Result<Option<u64>, ApiError> {
        if self.flavour() == Flavour::V2ray {
            return Ok(None);
        }
        let path = Method::GetStatsOnline.path(self.flavour());
        let request = proto::GetStatsRequest {
            name: online_map_name(email),
            reset: false,
        };
        match self.call::<_, proto::GetStatsResponse>(path, request).await {
            Ok(answer) => {
                let value = answer.stat.map_or(0, |stat| stat.value);
                Ok(Some(u64::try_from(value).unwrap_or(0)))
            }
            Err(failure) => unimplemented_is_none(failure),
        }
    }

    /// The addresses the user `email` is connected from now, each with when it was last seen
    /// (unix seconds), from GetStatsOnlineIpList; `Ok(None)` when the core has no such call
    /// (V2Ray, Xray before v25.2.18). NOT_FOUND as for [`ApiClient::online_ip_count`].
    pub async fn online_ips(&self, email: &str) -> Result<Option<BTreeMap<String, i64>>, ApiError> {
        if self.flavour() == Flavour::V2ray {
            return Ok(None);
        }
        let path = Method::GetStatsOnlineIpList.path(self.flavour());
        let request = proto::GetStatsRequest {
            name: online_map_name(email),
            reset: false,
        };
        match self
            .call::<_, proto::GetStatsOnlineIpListResponse>(path, request)
            .await
        {
            Ok(answer) => Ok(Some(answer.ips.into_iter().collect())),
            Err(failure) => unimplemented_is_none(failure),
        }
    }
}

fn unimplemented_is_none<T>(failure: Failure) -> Result<Option<T>, ApiError> {
    match failure {
        Failure::UnknownService(_) | Failure::UnknownMethod(_) => Ok(None),
        failure => Err(failure.into()),
    }
}

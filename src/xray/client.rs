//! The gRPC client of one core's API: unary calls over one lazily connected HTTP/2 channel.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response};
use tonic_prost::ProstCodec;

use super::error::{ApiError, Failure, classify};
use super::proto;
use super::wire::{self, Method};
use crate::domain::{Flavour, Protocol, User};

/// Answers (user lists, stats) may be far larger than tonic's 4 MiB default (facts P10).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// An inbound tag no real config uses, so probing with it reads nothing and changes nothing.
const PROBE_TAG: &str = "xray-warden probe: no such inbound";

/// A client of one core's gRPC API (HandlerService and StatsService).
///
/// Cheap to clone: clones share one HTTP/2 connection, on which calls run concurrently. The
/// connection is made on first use and re-made after it breaks (a restarted core is reached
/// again without a new client). Every gRPC call is bounded by the timeout given to
/// [`ApiClient::new`], connecting included; [`ApiClient::add_user`] makes two. The client does
/// not limit how many calls are in flight; callers bound their fan-out.
#[derive(Debug, Clone)]
pub struct ApiClient {
    channel: Channel,
    flavour: Flavour,
    timeout: Duration,
    /// (tag, protocol) pairs whose inbound was checked. A core's inbounds do not change while it
    /// runs, and a new core process gets a new client, so one check per inbound is enough.
    checked: Arc<Mutex<HashSet<(String, String)>>>,
}

/// What [`ApiClient::detect`] found out about a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    pub flavour: Flavour,
    /// Whether [`ApiClient::inbound_users`] can list users (Xray >= v24.11.5).
    pub can_list_users: bool,
}

impl ApiClient {
    /// A client for the API at `addr` (plain h2c, as both cores serve it). Nothing is sent
    /// until the first call. Must be called inside a Tokio runtime.
    pub fn new(addr: SocketAddr, flavour: Flavour, timeout: Duration) -> ApiClient {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("a socket address always forms a valid URI")
            .connect_timeout(timeout)
            .connect_lazy();
        ApiClient {
            channel,
            flavour,
            timeout,
            checked: Arc::default(),
        }
    }

    /// The core this client builds its requests for.
    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// Finds out which core serves `addr` with requests that only read: GetInboundUsersCount
    /// of an inbound that cannot exist on Xray's service path, then, if that service is
    /// unknown, GetSysStats on Xray's stats path. V2Ray 4.34 knows neither service (facts §0).
    /// An Xray that enables neither HandlerService nor StatsService is reported as V2Ray; it
    /// could not manage users anyway. Takes at most twice the timeout.
    pub async fn detect(addr: SocketAddr, timeout: Duration) -> Result<Detected, ApiError> {
        let probe = ApiClient::new(addr, Flavour::Xray, timeout);
        let xray = |can_list_users| Detected {
            flavour: Flavour::Xray,
            can_list_users,
        };
        let count = proto::GetInboundUserRequest {
            tag: PROBE_TAG.to_owned(),
            email: String::new(),
        };
        let path = Method::GetInboundUsersCount.path(Flavour::Xray);
        match probe
            .call::<_, proto::GetInboundUsersCountResponse>(path, count)
            .await
        {
            Err(Failure::UnknownService(_)) => {}
            Err(Failure::UnknownMethod(_)) => return Ok(xray(false)),
            Err(Failure::Api(error)) if error.is_retryable() => return Err(error),
            // Any answer from the handler, e.g. "handler not found".
            Ok(_) | Err(_) => return Ok(xray(true)),
        }
        let path = Method::GetSysStats.path(Flavour::Xray);
        match probe
            .call::<_, proto::SysStatsResponse>(path, proto::SysStatsRequest {})
            .await
        {
            Err(Failure::UnknownService(_)) => Ok(Detected {
                flavour: Flavour::V2ray,
                can_list_users: false,
            }),
            Err(Failure::Api(error)) if error.is_retryable() => Err(error),
            Ok(_) | Err(_) => Ok(xray(false)),
        }
    }

    /// Adds `user` to the inbound `tag`, whose protocol the caller knows from the core's config.
    ///
    /// Returns [`ApiError::Refused`] without sending anything when the request could crash
    /// the core or could never be undone: the protocol takes no users on this core, the
    /// credential does not fit the protocol, the email is empty, an id is not a UUID, a
    /// password is empty, or the inbound is shadowsocks (not supported: the account kind
    /// depends on the inbound's method). Then asks the core, with a request that changes
    /// nothing, which proxy serves `tag`, and returns [`ApiError::Refused`] when it is not
    /// `protocol` (an account of the wrong protocol crashes the core, facts P1) or takes no
    /// users. So each add is two calls; an inbound replaced between them (a restart with
    /// another config) is the one case this cannot catch. [`ApiError::AlreadyExists`] when the
    /// email is taken; [`ApiError::Core`] naming the tag when the core has no such inbound.
    pub async fn add_user(
        &self,
        tag: &str,
        protocol: &Protocol,
        user: &User,
    ) -> Result<(), ApiError> {
        let request = wire::add_user(self.flavour, tag, protocol, user)?;
        self.check_inbound(tag, protocol).await?;
        self.alter_inbound(request).await
    }

    /// Removes the user `email` (case-insensitive on the core) from the inbound `tag`.
    /// [`ApiError::NotFound`] when it is not there. Open connections of the user stay up
    /// (facts P8).
    pub async fn remove_user(&self, tag: &str, email: &str) -> Result<(), ApiError> {
        let request = wire::remove_user(self.flavour, tag, email)?;
        self.alter_inbound(request).await
    }

    /// The users the inbound `tag` holds now, or `Ok(None)` when the core cannot list them
    /// (V2Ray, Xray before v24.11.5). Users without email are not listed by the core.
    pub async fn inbound_users(&self, tag: &str) -> Result<Option<Vec<User>>, ApiError> {
        let request = proto::GetInboundUserRequest {
            tag: tag.to_owned(),
            email: String::new(),
        };
        let path = Method::GetInboundUsers.path(self.flavour);
        match self.call(path, request).await {
            Ok(answer) => wire::users_from(self.flavour, answer).map(Some),
            Err(Failure::UnknownService(_) | Failure::UnknownMethod(_)) => Ok(None),
            Err(failure) => Err(failure.into()),
        }
    }

    /// Every counter whose name contains `pattern` (a substring, not a glob; "" = all), with
    /// its value in bytes; `reset` zeroes each one as it is read. Counters appear only after
    /// first traffic and outlive removed users (facts P9). Order unspecified.
    pub async fn query_stats(
        &self,
        pattern: &str,
        reset: bool,
    ) -> Result<Vec<(String, i64)>, ApiError> {
        let request = proto::QueryStatsRequest {
            pattern: pattern.to_owned(),
            reset,
        };
        let path = Method::QueryStats.path(self.flavour);
        let answer: proto::QueryStatsResponse = self.call(path, request).await?;
        Ok(answer.stat.into_iter().map(|s| (s.name, s.value)).collect())
    }

    /// How long the core has been running (whole seconds). A drop between two readings means
    /// it restarted and lost every user added through the API (facts P4).
    pub async fn uptime(&self) -> Result<Duration, ApiError> {
        let path = Method::GetSysStats.path(self.flavour);
        let answer: proto::SysStatsResponse = self.call(path, proto::SysStatsRequest {}).await?;
        Ok(Duration::from_secs(answer.uptime.into()))
    }

    async fn alter_inbound(&self, request: proto::AlterInboundRequest) -> Result<(), ApiError> {
        let path = Method::AlterInbound.path(self.flavour);
        let _: proto::AlterInboundResponse = self.call(path, request).await?;
        Ok(())
    }

    /// Refuses unless the inbound `tag` is served by the proxy `protocol` names.
    async fn check_inbound(&self, tag: &str, protocol: &Protocol) -> Result<(), ApiError> {
        let key = (tag.to_owned(), protocol.as_str().to_owned());
        if self
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        self.probe_inbound(tag, protocol).await?;
        self.checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        Ok(())
    }

    async fn probe_inbound(&self, tag: &str, protocol: &Protocol) -> Result<(), ApiError> {
        let path = Method::AlterInbound.path(self.flavour);
        let probe = wire::inbound_probe(self.flavour, tag);
        let refused = |why: String| Err(ApiError::Refused(format!("inbound {tag:?}: {why}")));
        match self
            .call::<_, proto::AlterInboundResponse>(path, probe)
            .await
        {
            Err(Failure::EmptyEmail { proxy, .. }) if wire::proxy_takes(&proxy, protocol) => Ok(()),
            Err(Failure::EmptyEmail { proxy, .. }) => refused(format!(
                "served by {proxy:?}, not {protocol}; its account would crash the core"
            )),
            Err(Failure::NotUserManager(message)) => refused(format!("takes no users ({message})")),
            Err(failure) => Err(failure.into()),
            Ok(_) => refused("the core accepted an empty email; cannot tell its protocol".into()),
        }
    }

    /// One unary call with a deadline: sent to the core as grpc-timeout, and enforced here
    /// around connecting, sending and reading.
    pub(super) async fn call<Q, A>(&self, path: PathAndQuery, message: Q) -> Result<A, Failure>
    where
        Q: Message + Send + Sync + 'static,
        A: Message + Default + Send + Sync + 'static,
    {
        let mut grpc = Grpc::new(self.channel.clone()).max_decoding_message_size(MAX_ANSWER_BYTES);
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        let call = async {
            let ready = grpc.ready().await;
            ready.map_err(|e| Failure::Api(ApiError::Transport(e.to_string())))?;
            let codec = ProstCodec::<Q, A>::default();
            grpc.unary(request, path, codec)
                .await
                .map_err(|status| classify(&status))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(answer) => answer.map(Response::into_inner),
            Err(_) => Err(Failure::Api(ApiError::Timeout)),
        }
    }
}

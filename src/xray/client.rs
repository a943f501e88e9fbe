//! The gRPC client of one core's API: unary calls over one lazily connected HTTP/2 channel.

use std::collections::HashMap;
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
use super::wire::{self, Method, Served};
use crate::domain::{Flavour, Protocol, User};

/// Answers (user lists, stats) may be far larger than tonic's 4 MiB default (facts P10).
const MAX_ANSWER_BYTES: usize = 64 << 20;

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
    pub(super) flavour: Flavour,
    timeout: Duration,
    /// What the check of each (tag, protocol) found. A core's inbounds do not change while it
    /// runs, and a new core process gets a new client, so one check per inbound is enough.
    pub(super) checked: Arc<Mutex<HashMap<(String, String), Served>>>,
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

    /// Adds `user` to the inbound `tag`, whose protocol the caller knows from the core's config.
    ///
    /// Returns [`ApiError::Refused`] without sending anything when the request could crash
    /// the core or could never be undone: the protocol takes no users on this core, the
    /// credential does not fit the protocol, the email is empty, an id is not a UUID, a
    /// password is empty. Then asks the core, with a request that changes nothing, which proxy
    /// serves `tag`, and returns [`ApiError::Refused`] when it is not `protocol` (an account of
    /// the wrong protocol crashes the core, facts P1) or takes no users. So each add is two
    /// calls the first time per inbound; an inbound replaced between them (a restart with
    /// another config) is the one case this cannot catch. [`ApiError::AlreadyExists`] when the
    /// email is taken; [`ApiError::Core`] naming the tag when the core has no such inbound.
    ///
    /// Shadowsocks: only Xray's multi-user Shadowsocks-2022 inbound takes users here (the
    /// user's password is its base64 key, of exactly the length the inbound's method needs,
    /// read once with ListInbounds). Its core compares emails case-sensitively on add
    /// (facts P7), so each such add first asks the core whether the email is there in any
    /// letter case and answers [`ApiError::AlreadyExists`] itself. AEAD (single-cipher)
    /// shadowsocks inbounds are refused: Xray accepts the same email twice there (semantics §1).
    pub async fn add_user(
        &self,
        tag: &str,
        protocol: &Protocol,
        user: &User,
    ) -> Result<(), ApiError> {
        wire::check_user(self.flavour, protocol, user)?;
        let served = self.check_inbound(tag, protocol).await?;
        let request = wire::add_user(self.flavour, tag, served, user)?;
        if matches!(served, Served::Shadowsocks2022 { .. }) && self.holds(tag, &user.email).await? {
            return Err(ApiError::AlreadyExists);
        }
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
    /// (V2Ray, Xray before v24.11.5). Users the core holds without an email of their own are
    /// left out, since no remove can name them: Xray lists config clients without email with
    /// email "" (VMess, shadowsocks) and renames them `unnamed-user-<index>-<UUID>` on a
    /// Shadowsocks-2022 multi-user inbound (semantics §8); VLESS and Trojan do not list them.
    /// A client really named `unnamed-user-<digits>-<UUID>` in such an inbound is left out too.
    /// Credentials read back as they were added (ids canonical; a Shadowsocks-2022 user's
    /// password is its key), so comparing them with the desired users is exact.
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

    /// How many users the inbound `tag` holds, users without an email of their own included
    /// (GetInboundUsersCount: a small answer where the list is large), or `Ok(None)` when the
    /// core cannot count them (V2Ray, Xray before v24.11.5).
    pub async fn inbound_user_count(&self, tag: &str) -> Result<Option<u64>, ApiError> {
        let request = proto::GetInboundUserRequest {
            tag: tag.to_owned(),
            email: String::new(),
        };
        let path = Method::GetInboundUsersCount.path(self.flavour);
        match self
            .call::<_, proto::GetInboundUsersCountResponse>(path, request)
            .await
        {
            Ok(answer) => Ok(Some(u64::try_from(answer.count).unwrap_or(0))),
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

    pub(super) async fn alter_inbound(
        &self,
        request: proto::AlterInboundRequest,
    ) -> Result<(), ApiError> {
        let path = Method::AlterInbound.path(self.flavour);
        let _: proto::AlterInboundResponse = self.call(path, request).await?;
        Ok(())
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

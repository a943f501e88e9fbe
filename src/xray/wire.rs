//! What goes on the wire for each core: gRPC method paths, `TypedMessage` type strings, and
//! the accounts built from (and read back into) domain users.
//!
//! Both cores use the same message layouts (proto/*.proto) under different package names, so
//! the only per-core parts are the strings here (facts §0, §3.1, P12).

use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;

use super::error::ApiError;
use super::proto;
use crate::domain::{Credential, Flavour, Protocol, User, canonical_uuid};

/// The RPCs this client calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    AlterInbound,
    GetInboundUsers,
    GetInboundUsersCount,
    QueryStats,
    GetSysStats,
    GetStatsOnline,
    GetStatsOnlineIpList,
    GetAllOnlineUsers,
}

impl Method {
    /// facts §0: `/<proto package>.<Service>/<Method>`; V2Ray 4.34 has no GetInboundUsers*
    /// (facts §2) and answers UNIMPLEMENTED, which callers handle.
    pub(crate) fn path(self, flavour: Flavour) -> PathAndQuery {
        use {Flavour::*, Method::*};
        PathAndQuery::from_static(match (flavour, self) {
            (Xray, AlterInbound) => "/xray.app.proxyman.command.HandlerService/AlterInbound",
            (Xray, GetInboundUsers) => "/xray.app.proxyman.command.HandlerService/GetInboundUsers",
            (Xray, GetInboundUsersCount) => {
                "/xray.app.proxyman.command.HandlerService/GetInboundUsersCount"
            }
            (Xray, QueryStats) => "/xray.app.stats.command.StatsService/QueryStats",
            (Xray, GetSysStats) => "/xray.app.stats.command.StatsService/GetSysStats",
            (Xray, GetStatsOnline) => "/xray.app.stats.command.StatsService/GetStatsOnline",
            (Xray, GetStatsOnlineIpList) => {
                "/xray.app.stats.command.StatsService/GetStatsOnlineIpList"
            }
            (Xray, GetAllOnlineUsers) => "/xray.app.stats.command.StatsService/GetAllOnlineUsers",
            (V2ray, AlterInbound) => "/v2ray.core.app.proxyman.command.HandlerService/AlterInbound",
            (V2ray, GetInboundUsers) => {
                "/v2ray.core.app.proxyman.command.HandlerService/GetInboundUsers"
            }
            (V2ray, GetInboundUsersCount) => {
                "/v2ray.core.app.proxyman.command.HandlerService/GetInboundUsersCount"
            }
            (V2ray, QueryStats) => "/v2ray.core.app.stats.command.StatsService/QueryStats",
            (V2ray, GetSysStats) => "/v2ray.core.app.stats.command.StatsService/GetSysStats",
            // V2Ray 4.34 has no online API (facts §4.1): these answer UNIMPLEMENTED.
            (V2ray, GetStatsOnline) => "/v2ray.core.app.stats.command.StatsService/GetStatsOnline",
            (V2ray, GetStatsOnlineIpList) => {
                "/v2ray.core.app.stats.command.StatsService/GetStatsOnlineIpList"
            }
            (V2ray, GetAllOnlineUsers) => {
                "/v2ray.core.app.stats.command.StatsService/GetAllOnlineUsers"
            }
        })
    }
}

/// facts §3.1: every type string is the core's package prefix plus the same suffix, e.g.
/// `xray.proxy.vless.Account` / `v2ray.core.proxy.vless.Account`.
fn type_prefix(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::Xray => "xray.",
        Flavour::V2ray => "v2ray.core.",
    }
}

const ADD_USER: &str = "app.proxyman.command.AddUserOperation";
const REMOVE_USER: &str = "app.proxyman.command.RemoveUserOperation";
const VLESS: &str = "proxy.vless.Account";
const VMESS: &str = "proxy.vmess.Account";
const TROJAN: &str = "proxy.trojan.Account";
const SHADOWSOCKS: &str = "proxy.shadowsocks.Account";
const SHADOWSOCKS_2022: &str = "proxy.shadowsocks_2022.Account";

fn typed(flavour: Flavour, suffix: &str, message: &impl Message) -> proto::TypedMessage {
    proto::TypedMessage {
        r#type: format!("{}{suffix}", type_prefix(flavour)),
        value: message.encode_to_vec(),
    }
}

/// The AlterInbound that adds `user` to the inbound `tag`, or [`ApiError::Refused`] when
/// sending it could be malformed or crash the core (facts P1, P6, appendix A).
pub(crate) fn add_user(
    flavour: Flavour,
    tag: &str,
    protocol: &Protocol,
    user: &User,
) -> Result<proto::AlterInboundRequest, ApiError> {
    let account = account(flavour, protocol, user)?;
    let user = proto::User {
        level: user.level,
        email: user.email.clone(),
        account: Some(account),
    };
    let operation = proto::AddUserOperation { user: Some(user) };
    Ok(proto::AlterInboundRequest {
        tag: tag.to_owned(),
        operation: Some(typed(flavour, ADD_USER, &operation)),
    })
}

/// The AlterInbound that removes the user `email` from the inbound `tag` (facts P2: by email).
pub(crate) fn remove_user(
    flavour: Flavour,
    tag: &str,
    email: &str,
) -> Result<proto::AlterInboundRequest, ApiError> {
    if email.is_empty() {
        return Err(refused("an empty email names no user"));
    }
    let operation = proto::RemoveUserOperation {
        email: email.to_owned(),
    };
    Ok(proto::AlterInboundRequest {
        tag: tag.to_owned(),
        operation: Some(typed(flavour, REMOVE_USER, &operation)),
    })
}

/// The inbound check: removing the empty email changes nothing (the core refuses it before
/// looking anything up) and its answer names the inbound's proxy (live on 4.34:
/// "v2ray.com/core/proxy/vmess/inbound: Email must not be empty.").
pub(crate) fn inbound_probe(flavour: Flavour, tag: &str) -> proto::AlterInboundRequest {
    let operation = proto::RemoveUserOperation {
        email: String::new(),
    };
    proto::AlterInboundRequest {
        tag: tag.to_owned(),
        operation: Some(typed(flavour, REMOVE_USER, &operation)),
    }
}

/// Whether the proxy named by the inbound check (`vless`, `vmess`, `trojan`, ...) takes the
/// accounts built for `protocol`.
pub(crate) fn proxy_takes(proxy: &str, protocol: &Protocol) -> bool {
    matches!(
        (proxy, protocol),
        ("vless", Protocol::Vless) | ("vmess", Protocol::Vmess) | ("trojan", Protocol::Trojan)
    )
}

fn account(
    flavour: Flavour,
    protocol: &Protocol,
    user: &User,
) -> Result<proto::TypedMessage, ApiError> {
    if let Some(why) = protocol.user_management_refusal(flavour) {
        return Err(refused(&format!("{protocol} inbound on {flavour}: {why}")));
    }
    if !protocol.accepts(&user.credential) {
        // facts P1: a mismatched account panics the core.
        return Err(refused(&format!(
            "this credential does not fit a {protocol} inbound"
        )));
    }
    if user.email.is_empty() {
        // facts P6: a user without email can never be removed and gets no stats.
        return Err(refused("empty email"));
    }
    match (protocol, &user.credential) {
        (Protocol::Vless, Credential::Id(id)) => {
            let account = proto::VlessAccount {
                id: uuid(id)?,
                flow: user.flow.clone(),
            };
            Ok(typed(flavour, VLESS, &account))
        }
        (Protocol::Vmess, Credential::Id(id)) => {
            // facts §3.5: alter_id 0 (AEAD) on V2Ray; Xray has no such field. Either way proto3
            // leaves a zero off the wire. security_settings is client-side and omitted.
            let account = proto::VmessAccount {
                id: uuid(id)?,
                alter_id: 0,
            };
            Ok(typed(flavour, VMESS, &account))
        }
        (Protocol::Trojan, Credential::Password(password)) => {
            let account = proto::TrojanAccount {
                password: non_empty(password)?,
            };
            Ok(typed(flavour, TROJAN, &account))
        }
        // Xray's shadowsocks inbound takes either an AEAD account (password + a cipher number
        // that must match the inbound's method) or, when started as 2022 multi-user, a
        // Shadowsocks-2022 account; the wrong one panics the core (facts P1, P7, §3.5). The
        // domain `Protocol` cannot tell them apart, so nothing is sent.
        (Protocol::Shadowsocks, _) => Err(refused(
            "shadowsocks users are not supported: the account kind and cipher depend on the \
             inbound's method, and a wrong guess crashes the core",
        )),
        _ => Err(refused(&format!("{protocol} inbounds take no users"))),
    }
}

fn uuid(id: &str) -> Result<String, ApiError> {
    canonical_uuid(id).ok_or_else(|| refused(&format!("{id:?} is not a UUID")))
}

fn non_empty(password: &str) -> Result<String, ApiError> {
    if password.is_empty() {
        return Err(refused("empty password"));
    }
    Ok(password.to_owned())
}

fn refused(why: &str) -> ApiError {
    ApiError::Refused(why.to_owned())
}

/// Reads the users of a GetInboundUsers answer back into domain users. Xray re-serialises
/// accounts from memory, so their type strings carry Xray's prefix (facts §1.2).
pub(crate) fn users_from(
    flavour: Flavour,
    response: proto::GetInboundUserResponse,
) -> Result<Vec<User>, ApiError> {
    response
        .users
        .into_iter()
        .map(|user| user_from(flavour, user))
        .collect()
}

fn user_from(flavour: Flavour, user: proto::User) -> Result<User, ApiError> {
    let unreadable = |what: &str| ApiError::Core(format!("user {:?}: {what}", user.email));
    let account = user
        .account
        .as_ref()
        .ok_or_else(|| unreadable("no account"))?;
    let suffix = account
        .r#type
        .strip_prefix(type_prefix(flavour))
        .unwrap_or("");
    let bytes = account.value.as_slice();
    let bad = |error: prost::DecodeError| unreadable(&format!("bad account: {error}"));
    let (credential, flow) = match suffix {
        VLESS => {
            let account = proto::VlessAccount::decode(bytes).map_err(bad)?;
            (id_credential(account.id), account.flow)
        }
        VMESS => {
            let account = proto::VmessAccount::decode(bytes).map_err(bad)?;
            (id_credential(account.id), String::new())
        }
        TROJAN => {
            let account = proto::TrojanAccount::decode(bytes).map_err(bad)?;
            (Credential::Password(account.password), String::new())
        }
        SHADOWSOCKS => {
            let account = proto::ShadowsocksAccount::decode(bytes).map_err(bad)?;
            (Credential::Password(account.password), String::new())
        }
        SHADOWSOCKS_2022 => {
            let account = proto::Shadowsocks2022Account::decode(bytes).map_err(bad)?;
            (Credential::Password(account.key), String::new())
        }
        _ => {
            return Err(unreadable(&format!(
                "unsupported account type {:?}",
                account.r#type
            )));
        }
    };
    Ok(User {
        email: user.email,
        credential,
        flow,
        level: user.level,
    })
}

/// Ids come back canonical from the core (it prints its parsed UUID); anything else is kept.
fn id_credential(id: String) -> Credential {
    Credential::Id(canonical_uuid(&id).unwrap_or(id))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;

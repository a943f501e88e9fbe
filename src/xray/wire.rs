//! What goes on the wire for each core: gRPC method paths, `TypedMessage` type strings, and
//! the accounts built from (and read back into) domain users.
//!
//! Both cores use the same message layouts (proto/*.proto) under different package names, so
//! the only per-core parts are the strings here (facts §0, §3.1, P12).

use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;

use super::error::{ApiError, refused};
use super::proto;
use super::ss2022;
use super::types::{
    ADD_USER, REMOVE_USER, SHADOWSOCKS, SHADOWSOCKS_2022, TROJAN, VLESS, VMESS, type_prefix,
};
use crate::domain::{Credential, Flavour, Protocol, User, canonical_uuid};

/// The RPCs this client calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    AlterInbound,
    ListInbounds,
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
            (Xray, ListInbounds) => "/xray.app.proxyman.command.HandlerService/ListInbounds",
            (V2ray, ListInbounds) => "/v2ray.core.app.proxyman.command.HandlerService/ListInbounds",
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

/// The proxy serving an inbound, as the inbound check found it from the core's own answers:
/// it decides which account an add carries (the wrong one crashes the core, facts P1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    Vless,
    Vmess,
    Trojan,
    /// Xray's multi-user Shadowsocks-2022 inbound, whose method takes user keys of exactly
    /// `key_bytes` bytes (base64 in the account).
    Shadowsocks2022 {
        key_bytes: usize,
    },
}

/// What the inbound check makes of the proxy named by the probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeVerdict {
    Served(Served),
    /// Shadowsocks-2022: the key length comes from the inbound's method (ListInbounds).
    NeedsMethod,
    Refused(String),
}

/// Whether the proxy named by the inbound check (`vless`, `vmess`, `trojan`, ...) takes the
/// accounts built for `protocol`, and which.
pub(crate) fn probe_verdict(proxy: &str, protocol: &Protocol) -> ProbeVerdict {
    match (proxy, protocol) {
        ("vless", Protocol::Vless) => ProbeVerdict::Served(Served::Vless),
        ("vmess", Protocol::Vmess) => ProbeVerdict::Served(Served::Vmess),
        ("trojan", Protocol::Trojan) => ProbeVerdict::Served(Served::Trojan),
        ("shadowsocks_2022", Protocol::Shadowsocks) => ProbeVerdict::NeedsMethod,
        // semantics §1: Xray's AEAD shadowsocks adds a user again under an email it already
        // holds, and its account needs a cipher number matching the inbound's method (they
        // differ per core, facts §3.5). Refusing every add here is what keeps a changed
        // password from ever being half-applied through this client.
        ("shadowsocks", Protocol::Shadowsocks) => ProbeVerdict::Refused(
            "an AEAD (single-cipher) shadowsocks inbound: the core keeps duplicate emails and \
             its account must match the inbound's cipher; only Shadowsocks-2022 multi-user \
             inbounds take users through this client"
                .into(),
        ),
        _ => ProbeVerdict::Refused(format!(
            "served by {proxy:?}, not {protocol}; its account would crash the core"
        )),
    }
}

fn typed(flavour: Flavour, suffix: &str, message: &impl Message) -> proto::TypedMessage {
    proto::TypedMessage {
        r#type: format!("{}{suffix}", type_prefix(flavour)),
        value: message.encode_to_vec(),
    }
}

/// Refuses, before anything is sent, a user no inbound of `protocol` on this core could take
/// safely: the protocol takes no users, the credential does not fit it, the email is empty, an
/// id is not a UUID or a password is empty (facts P1, P6, appendix A).
pub(crate) fn check_user(
    flavour: Flavour,
    protocol: &Protocol,
    user: &User,
) -> Result<(), ApiError> {
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
    match &user.credential {
        Credential::Id(id) => uuid(id).map(drop),
        Credential::Password(password) => non_empty(password).map(drop),
    }
}

/// The AlterInbound that adds `user` to the inbound `tag` served by `served`, or
/// [`ApiError::Refused`] when sending it could be malformed or crash the core.
pub(crate) fn add_user(
    flavour: Flavour,
    tag: &str,
    served: Served,
    user: &User,
) -> Result<proto::AlterInboundRequest, ApiError> {
    let account = account(flavour, served, user)?;
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

fn account(flavour: Flavour, served: Served, user: &User) -> Result<proto::TypedMessage, ApiError> {
    if user.email.is_empty() {
        return Err(refused("empty email"));
    }
    match (served, &user.credential) {
        (Served::Vless, Credential::Id(id)) => {
            let account = proto::VlessAccount {
                id: uuid(id)?,
                flow: user.flow.clone(),
            };
            Ok(typed(flavour, VLESS, &account))
        }
        (Served::Vmess, Credential::Id(id)) => {
            // facts §3.5: alter_id 0 (AEAD) on V2Ray; Xray has no such field. Either way proto3
            // leaves a zero off the wire. security_settings is client-side and omitted.
            let account = proto::VmessAccount {
                id: uuid(id)?,
                alter_id: 0,
            };
            Ok(typed(flavour, VMESS, &account))
        }
        (Served::Trojan, Credential::Password(password)) => {
            let account = proto::TrojanAccount {
                password: non_empty(password)?,
            };
            Ok(typed(flavour, TROJAN, &account))
        }
        (Served::Shadowsocks2022 { key_bytes }, Credential::Password(key)) => {
            let account = proto::Shadowsocks2022Account {
                key: ss2022::checked_key(key, key_bytes)?,
            };
            Ok(typed(flavour, SHADOWSOCKS_2022, &account))
        }
        // facts P1: a mismatched account panics the core.
        (served, _) => Err(refused(&format!(
            "this credential does not fit the {served:?} inbound"
        ))),
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

/// Reads the users of a GetInboundUsers answer back into domain users. Xray re-serialises
/// accounts from memory, so their type strings carry Xray's prefix (facts §1.2).
pub(crate) fn users_from(
    flavour: Flavour,
    response: proto::GetInboundUserResponse,
) -> Result<Vec<User>, ApiError> {
    response
        .users
        .into_iter()
        .filter(|user| !ss2022::is_unnamed(flavour, user))
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

#[cfg(test)]
#[path = "wire_ss2022_tests.rs"]
mod ss2022_tests;

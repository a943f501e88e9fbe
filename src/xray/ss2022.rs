//! Shadowsocks-2022 multi-user inbounds (Xray only): the user key length their method needs,
//! read from ListInbounds; the key check made before an add; and the names Xray gives config
//! clients without an email, which listing leaves out.

use base64::Engine as _;
use prost::Message;

use super::error::ApiError;
use super::error::refused;
use super::proto;
use super::types::{SHADOWSOCKS_2022, SHADOWSOCKS_2022_MULTI, type_prefix};
use crate::domain::{Flavour, canonical_uuid};

/// The user key length of a Shadowsocks-2022 multi-user method (Xray accepts only the aes
/// methods multi-user, facts §3.5), or `None`.
pub(crate) fn key_bytes(method: &str) -> Option<usize> {
    match method {
        "2022-blake3-aes-128-gcm" => Some(16),
        "2022-blake3-aes-256-gcm" => Some(32),
        _ => None,
    }
}

/// The key length of the Shadowsocks-2022 inbound `tag` in a ListInbounds answer.
pub(crate) fn inbound_key_bytes(
    flavour: Flavour,
    tag: &str,
    answer: proto::ListInboundsResponse,
) -> Result<usize, ApiError> {
    let Some(inbound) = answer.inbounds.into_iter().find(|i| i.tag == tag) else {
        return Err(refused(&format!("ListInbounds does not list {tag:?}")));
    };
    let settings = inbound.proxy_settings.unwrap_or_default();
    let multi = format!("{}{SHADOWSOCKS_2022_MULTI}", type_prefix(flavour));
    if settings.r#type != multi {
        return Err(refused(&format!(
            "a Shadowsocks-2022 inbound that is not multi-user ({:?})",
            settings.r#type
        )));
    }
    let config = proto::Shadowsocks2022MultiUserServerConfig::decode(settings.value.as_slice())
        .map_err(|e| refused(&format!("unreadable Shadowsocks-2022 settings: {e}")))?;
    key_bytes(&config.method).ok_or_else(|| {
        refused(&format!(
            "Shadowsocks-2022 method {:?} takes no users",
            config.method
        ))
    })
}

/// A Shadowsocks-2022 user key: standard base64 of exactly the method's key length. Xray adds
/// any string, then fails to rebuild its user table from a key that is not base64 or too short
/// and ignores that failure, so from then on no add or remove on the inbound takes effect
/// (Xray's proxy/shadowsocks_2022/inbound_multi.go AddUser; sing-shadowsocks UpdateUsers). A
/// longer key would work on the server yet not in the users' clients, so it is refused too.
pub(super) fn checked_key(key: &str, key_bytes: usize) -> Result<String, ApiError> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|e| {
            refused(&format!(
                "the Shadowsocks-2022 key is not standard base64: {e}"
            ))
        })?;
    if decoded.len() != key_bytes {
        return Err(refused(&format!(
            "the Shadowsocks-2022 key is {} bytes, the inbound's method takes {key_bytes}",
            decoded.len()
        )));
    }
    Ok(key.to_owned())
}

/// Users the core holds without an email of their own, which no remove can name: an empty
/// email (VMess and AEAD shadowsocks list config clients without one so, semantics §8), or on
/// a Shadowsocks-2022 multi-user inbound the name Xray gives such a client at startup,
/// `unnamed-user-<index>-<random UUID>` (Xray's proxy/shadowsocks_2022/inbound_multi.go). A
/// client literally named like that in the config cannot be told apart and is skipped too.
pub(super) fn is_unnamed(flavour: Flavour, user: &proto::User) -> bool {
    if user.email.is_empty() {
        return true;
    }
    let ss2022 = format!("{}{SHADOWSOCKS_2022}", type_prefix(flavour));
    let is_ss2022 = user.account.as_ref().is_some_and(|a| a.r#type == ss2022);
    let Some(rest) = user.email.strip_prefix("unnamed-user-") else {
        return false;
    };
    let Some((index, id)) = rest.split_once('-') else {
        return false;
    };
    is_ss2022
        && !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && canonical_uuid(id).as_deref() == Some(id)
}

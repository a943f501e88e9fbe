//! The type strings of the messages both cores carry in a TypedMessage: the core's package
//! prefix plus a suffix the two cores share (facts §3.1).

use crate::domain::Flavour;

/// facts §3.1: every type string is the core's package prefix plus the same suffix, e.g.
/// `xray.proxy.vless.Account` / `v2ray.core.proxy.vless.Account`.
pub(super) fn type_prefix(flavour: Flavour) -> &'static str {
    match flavour {
        Flavour::Xray => "xray.",
        Flavour::V2ray => "v2ray.core.",
    }
}

pub(super) const ADD_USER: &str = "app.proxyman.command.AddUserOperation";
pub(super) const REMOVE_USER: &str = "app.proxyman.command.RemoveUserOperation";
pub(super) const VLESS: &str = "proxy.vless.Account";
pub(super) const VMESS: &str = "proxy.vmess.Account";
pub(super) const TROJAN: &str = "proxy.trojan.Account";
pub(super) const SHADOWSOCKS: &str = "proxy.shadowsocks.Account";
pub(super) const SHADOWSOCKS_2022: &str = "proxy.shadowsocks_2022.Account";
pub(super) const SHADOWSOCKS_2022_MULTI: &str = "proxy.shadowsocks_2022.MultiUserServerConfig";

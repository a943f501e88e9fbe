//! Which desired users one inbound of one tunnel should have.

use super::DesiredUser;
use crate::domain::{Flavour, Protocol, TunnelId, User};

/// The users `inbound_tag` (of protocol `protocol`) on `tunnel` should have, in document order:
/// those whose `tunnels` include the tunnel (or is absent), whose `inbounds` include the tag (or
/// is absent) and whose credential the protocol accepts. Empty when the protocol cannot take
/// users through the API on `flavour`. `flow` is cleared except on VLESS, the only protocol
/// that has one, so that these users compare equal to the ones read back from the core or the
/// config file.
pub fn desired_for(
    doc_users: &[DesiredUser],
    tunnel: &TunnelId,
    inbound_tag: &str,
    protocol: &Protocol,
    flavour: Flavour,
) -> Vec<User> {
    if protocol.user_management_refusal(flavour).is_some() {
        return Vec::new();
    }
    let on_tunnel = |d: &DesiredUser| d.tunnels.as_ref().is_none_or(|ts| ts.contains(tunnel));
    let on_inbound = |d: &DesiredUser| {
        d.inbounds
            .as_ref()
            .is_none_or(|tags| tags.iter().any(|t| t == inbound_tag))
    };
    doc_users
        .iter()
        .filter(|d| on_tunnel(d) && on_inbound(d) && protocol.accepts(&d.user.credential))
        .map(|d| {
            let mut user = d.user.clone();
            if *protocol != Protocol::Vless {
                user.flow.clear();
            }
            user
        })
        .collect()
}

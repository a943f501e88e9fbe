//! Users of a tunnel's inbounds: who they are (email), how they log in (credential), and which
//! inbound protocols can take them.

use std::fmt;

/// Which core a tunnel runs. They speak the same gRPC API under different package names and
/// differ in a few enum numbers, so every request is built for one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    Xray,
    V2ray,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Xray => "xray",
            Self::V2ray => "v2ray",
        }
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a user authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Credential {
    /// A UUID in canonical lower-case hyphenated form (VLESS, VMess).
    Id(String),
    /// A password (Trojan, Shadowsocks).
    Password(String),
}

/// One user as an inbound holds it. `email` is the identity: the API removes users by email.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct User {
    pub email: String,
    pub credential: Credential,
    /// VLESS flow (`""` or e.g. `xtls-rprx-vision`); ignored by other protocols.
    pub flow: String,
    /// Policy level (`policy.levels[level]`).
    pub level: u32,
}

/// An inbound's protocol, as named in the core's JSON config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Protocol {
    Vless,
    Vmess,
    Trojan,
    Shadowsocks,
    Other(String),
}

impl Protocol {
    pub fn parse(name: &str) -> Self {
        match name {
            "vless" => Self::Vless,
            "vmess" => Self::Vmess,
            "trojan" => Self::Trojan,
            "shadowsocks" => Self::Shadowsocks,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Vless => "vless",
            Self::Vmess => "vmess",
            Self::Trojan => "trojan",
            Self::Shadowsocks => "shadowsocks",
            Self::Other(name) => name,
        }
    }

    /// Why an inbound of this protocol cannot take users through the API on `flavour`, or
    /// `None` when it can. (V2Ray 4.34's Shadowsocks inbound is single-user: "proxy is not a
    /// UserManager"; dokodemo-door, socks, http never are. Source: shared/xray-api-facts.md §3.4.)
    pub fn user_management_refusal(&self, flavour: Flavour) -> Option<&'static str> {
        match (self, flavour) {
            (Self::Vless | Self::Vmess | Self::Trojan, _) => None,
            (Self::Shadowsocks, Flavour::Xray) => None,
            (Self::Shadowsocks, Flavour::V2ray) => {
                Some("V2Ray's shadowsocks inbound is single-user")
            }
            (Self::Other(_), _) => Some("this protocol has no users"),
        }
    }

    /// Whether a credential fits this protocol: ids for VLESS/VMess, passwords for
    /// Trojan/Shadowsocks. Sending a mismatched account crashes the core (facts, appendix A:
    /// "VMess account to VLESS inbound: server PANIC"), so nothing is sent unless this holds.
    pub fn accepts(&self, credential: &Credential) -> bool {
        matches!(
            (self, credential),
            (Self::Vless | Self::Vmess, Credential::Id(_))
                | (Self::Trojan | Self::Shadowsocks, Credential::Password(_))
        )
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a UUID in any case into canonical lower-case hyphenated form, or `None`.
pub fn canonical_uuid(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let ok = bytes.iter().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => *b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    ok.then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_accept_only_their_credential() {
        let id = Credential::Id("x".into());
        let pw = Credential::Password("x".into());
        assert!(Protocol::Vless.accepts(&id) && !Protocol::Vless.accepts(&pw));
        assert!(Protocol::Vmess.accepts(&id) && !Protocol::Vmess.accepts(&pw));
        assert!(Protocol::Trojan.accepts(&pw) && !Protocol::Trojan.accepts(&id));
        assert!(Protocol::Shadowsocks.accepts(&pw));
        assert!(!Protocol::parse("dokodemo-door").accepts(&id));
    }

    #[test]
    fn user_management_depends_on_the_core() {
        assert_eq!(
            Protocol::Shadowsocks.user_management_refusal(Flavour::Xray),
            None
        );
        assert!(
            Protocol::Shadowsocks
                .user_management_refusal(Flavour::V2ray)
                .is_some()
        );
        assert!(
            Protocol::parse("socks")
                .user_management_refusal(Flavour::Xray)
                .is_some()
        );
        assert_eq!(Protocol::parse("vless"), Protocol::Vless);
    }

    #[test]
    fn uuids_are_canonicalised() {
        assert_eq!(
            canonical_uuid("A1B2C3D4-0000-4000-8000-00000000000F").as_deref(),
            Some("a1b2c3d4-0000-4000-8000-00000000000f")
        );
        for bad in [
            "",
            "hello",
            "a1b2c3d4000040008000000000000000000f",
            "g1b2c3d4-0000-4000-8000-00000000000f",
        ] {
            assert_eq!(canonical_uuid(bad), None, "{bad}");
        }
    }
}

//! What Xray's JSON loader accepts in a user, and which users on a core the warden does not
//! manage. A user the loader would refuse must never be written to a config file: the core
//! would not start from it at its next restart (semantics §4, §5).

use super::users::{Credential, Flavour, Protocol, User};

/// The one VLESS flow besides none (semantics §4, Xray:infra/conf/vless.go).
pub const XTLS_VISION: &str = "xtls-rprx-vision";

/// Highest `level` a Trojan or Shadowsocks client may have: the loader reads it into a Go
/// `byte` (semantics §5, Xray:infra/conf/trojan.go, shadowsocks.go).
pub const MAX_BYTE_LEVEL: u32 = 255;

/// Why a user's flow or level would stop a core's config from loading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error(
        "flow {0:?} is not one Xray loads: only \"\" (none) or \"{XTLS_VISION}\" (a config with any other flow fails to start)"
    )]
    Flow(String),
    #[error(
        "level {0} is above {MAX_BYTE_LEVEL}: Trojan and Shadowsocks configs hold it in a byte, and a file with it fails to load"
    )]
    Level(u32),
}

/// Checks a VLESS flow: `""` or [`XTLS_VISION`].
pub fn check_flow(flow: &str) -> Result<(), LoginError> {
    match flow {
        "" | XTLS_VISION => Ok(()),
        other => Err(LoginError::Flow(other.to_owned())),
    }
}

/// Checks a level for a user with `credential`: a password goes to Trojan or Shadowsocks
/// inbounds, whose loader takes at most [`MAX_BYTE_LEVEL`]; ids (VLESS, VMess) take any u32.
pub fn check_level(credential: &Credential, level: u32) -> Result<(), LoginError> {
    match credential {
        Credential::Password(_) if level > MAX_BYTE_LEVEL => Err(LoginError::Level(level)),
        _ => Ok(()),
    }
}

/// Checks what a `protocol` inbound's loader on `flavour` needs of `user`'s flow and level. The
/// flow rule is Xray's (V2Ray 4.34 loads any flow string); both read the level into a byte.
pub fn check_login(protocol: &Protocol, flavour: Flavour, user: &User) -> Result<(), LoginError> {
    if *protocol == Protocol::Vless && flavour == Flavour::Xray {
        check_flow(&user.flow)?;
    }
    match protocol {
        Protocol::Trojan | Protocol::Shadowsocks if user.level > MAX_BYTE_LEVEL => {
            Err(LoginError::Level(user.level))
        }
        _ => Ok(()),
    }
}

/// Whether a user the core lists is one the warden leaves alone, whatever the desired set says:
/// it has no email (VMess lists config clients without one with email ""), or the name
/// multi-user Shadowsocks-2022 gives such a client, `unnamed-user-N-<uuid>` (semantics §8).
/// Such users cannot be removed by email (or only under a name the core made up), so they are
/// never removed and never counted by the removal guard.
pub fn is_unmanaged(email: &str) -> bool {
    if email.is_empty() {
        return true;
    }
    let Some(rest) = email.strip_prefix("unnamed-user-") else {
        return false;
    };
    let Some((index, uuid)) = rest.split_once('-') else {
        return false;
    };
    !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && super::users::canonical_uuid(uuid).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(credential: Credential, flow: &str, level: u32) -> User {
        User {
            email: "a@x".into(),
            credential,
            flow: flow.into(),
            level,
        }
    }

    #[test]
    fn only_none_and_vision_are_flows() {
        assert_eq!(check_flow(""), Ok(()));
        assert_eq!(check_flow(XTLS_VISION), Ok(()));
        for bad in [
            "xtls-rprx-direct",
            "xtls-rprx-vision-udp443",
            "none",
            "XTLS-RPRX-VISION",
        ] {
            assert_eq!(check_flow(bad), Err(LoginError::Flow(bad.into())), "{bad}");
        }
    }

    #[test]
    fn password_levels_fit_a_byte() {
        let pw = Credential::Password("p".into());
        let id = Credential::Id("0f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f".into());
        assert_eq!(check_level(&pw, 255), Ok(()));
        assert_eq!(check_level(&pw, 256), Err(LoginError::Level(256)));
        assert_eq!(check_level(&id, 70_000), Ok(()));
        assert_eq!(
            check_login(
                &Protocol::Trojan,
                Flavour::V2ray,
                &user(pw.clone(), "", 300)
            ),
            Err(LoginError::Level(300))
        );
        let odd = user(id, "x", 300);
        assert_eq!(check_login(&Protocol::Vmess, Flavour::Xray, &odd), Ok(()));
        assert_eq!(check_login(&Protocol::Vless, Flavour::V2ray, &odd), Ok(()));
        assert_eq!(
            check_login(&Protocol::Vless, Flavour::Xray, &odd),
            Err(LoginError::Flow("x".into()))
        );
    }

    #[test]
    fn unnamed_and_empty_emails_are_unmanaged() {
        assert!(is_unmanaged(""));
        assert!(is_unmanaged(
            "unnamed-user-0-eecb6b1b-a14f-459e-b8ba-50448af50a8a"
        ));
        assert!(is_unmanaged(
            "unnamed-user-12-eecb6b1b-a14f-459e-b8ba-50448af50a8a"
        ));
        for managed in [
            "a@x",
            "unnamed-user-",
            "unnamed-user-x-eecb6b1b-a14f-459e-b8ba-50448af50a8a",
            "unnamed-user-0-not-a-uuid",
            "unnamed-user--eecb6b1b-a14f-459e-b8ba-50448af50a8a",
        ] {
            assert!(!is_unmanaged(managed), "{managed}");
        }
    }
}

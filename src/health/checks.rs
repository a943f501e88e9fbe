//! The per-tunnel checks other than ports: each turns facts already read into a [`Check`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::crash::CrashVerdict;
use super::ports;
use crate::domain::{ActiveState, Check, UnknownReason};
use crate::tunnelcfg::TunnelConfig;

/// Check names, in the order a tunnel's checks are listed.
pub const ACTIVE: &str = "active";
pub const NOT_CRASH_LOOPING: &str = "not_crash_looping";
pub const CONFIG_VALID: &str = "config_valid";
pub use super::ports::PORTS_OWNED;
pub const API: &str = "api";

/// The detail of a check that needs a running unit.
pub const NOT_RUNNING: &str = "not running";

fn check(name: &'static str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name,
        ok,
        detail: detail.into(),
    }
}

/// `active`: the unit's ActiveState is `active`.
pub fn active(state: &ActiveState, sub_state: &str, result: &str) -> Check {
    let mut detail = state.to_string();
    if !sub_state.is_empty() {
        detail += &format!(" ({sub_state})");
    }
    if !state.is_up() && !result.is_empty() && result != "success" {
        detail += &format!(", result {result}");
    }
    check(ACTIVE, state.is_up(), detail)
}

/// `not_crash_looping`: fewer automatic restarts within the window than the threshold.
pub fn crash(verdict: CrashVerdict, window: Duration) -> Check {
    let window = humantime::format_duration(window);
    let detail = format!("{} automatic restarts within {window}", verdict.restarts);
    check(NOT_CRASH_LOOPING, !verdict.looping, detail)
}

/// What is known about a tunnel's config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigVerdict {
    Missing,
    /// The core's own test accepts it.
    Valid,
    /// The core's own test rejects it, with the core's words.
    Rejected(String),
    /// The test could not run (no core binary, timeout, unreadable file).
    Untested(String),
}

/// `config_valid`: the config file exists and the core's own test accepts it.
pub fn config(path: &Path, verdict: &ConfigVerdict) -> Check {
    let path = path.display();
    match verdict {
        ConfigVerdict::Missing => check(CONFIG_VALID, false, format!("{path} is missing")),
        ConfigVerdict::Valid => check(CONFIG_VALID, true, format!("{path} passes the core's test")),
        ConfigVerdict::Rejected(why) => check(CONFIG_VALID, false, format!("{path}: {why}")),
        ConfigVerdict::Untested(why) => {
            check(CONFIG_VALID, false, format!("{path} not tested: {why}"))
        }
    }
}

/// `config_valid` of a tunnel whose config is unknown ([`crate::domain::ConfigRef`]): it passes,
/// since a core running a config directory or a relative path is not unhealthy for that, and
/// says why nothing was tested. `xray_tunnel_config_unknown` reports such tunnels.
pub fn config_unknown(reason: UnknownReason) -> Check {
    check(CONFIG_VALID, true, format!("unknown: {reason}; not tested"))
}

/// `ports_owned` or `api` of a tunnel whose config is unknown, so that its ports and API are
/// too: passes while the unit is active ("not checked"), fails "not running" otherwise, like
/// every check that needs a running unit.
pub fn unchecked(name: &'static str, active: bool) -> Check {
    if active {
        check(name, true, "not checked: the config is unknown")
    } else {
        check(name, false, NOT_RUNNING)
    }
}

/// What the API probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiVerdict {
    /// The config names no TCP API address.
    NotConfigured,
    Reachable {
        addr: SocketAddr,
        core: String,
    },
    Unreachable {
        addr: SocketAddr,
        error: String,
    },
    /// The config could not be read, so the address is unknown.
    Unknown(String),
}

/// `api`: the core's gRPC API answers; a config without API passes ("no API configured").
pub fn api(active: bool, verdict: &ApiVerdict) -> Check {
    match verdict {
        ApiVerdict::NotConfigured => check(API, true, "no API configured"),
        _ if !active => check(API, false, NOT_RUNNING),
        ApiVerdict::Reachable { addr, core } => {
            check(API, true, format!("{core} answers on {addr}"))
        }
        ApiVerdict::Unreachable { addr, error } => check(API, false, format!("{addr}: {error}")),
        ApiVerdict::Unknown(why) => check(API, false, why.clone()),
    }
}

/// `ports_owned`: from who holds each configured port; "not checked" where the config is
/// unknown.
pub fn ports(
    active: bool,
    config: Option<&Result<TunnelConfig, String>>,
    held: &[(u16, ports::PortHolders)],
) -> Check {
    match config {
        None => unchecked(PORTS_OWNED, active),
        Some(Ok(_)) => ports::check(active, held),
        Some(Err(why)) => Check {
            name: PORTS_OWNED,
            ok: false,
            detail: if active {
                format!("cannot read the config: {why}")
            } else {
                NOT_RUNNING.into()
            },
        },
    }
}

/// `api`, or "not checked" where the config is unknown (`None`).
pub fn api_of(active: bool, verdict: Option<&ApiVerdict>) -> Check {
    match verdict {
        Some(verdict) => api(active, verdict),
        None => unchecked(API, active),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_says_why_not() {
        let up = active(&ActiveState::Active, "running", "success");
        assert_eq!(
            (up.name, up.ok, up.detail.as_str()),
            (ACTIVE, true, "active (running)")
        );
        let down = active(&ActiveState::Failed, "failed", "exit-code");
        assert_eq!(
            (down.ok, down.detail.as_str()),
            (false, "failed (failed), result exit-code")
        );
        assert!(!active(&ActiveState::Activating, "auto-restart", "exit-code").ok);
    }

    #[test]
    fn crash_follows_the_verdict() {
        let window = Duration::from_secs(600);
        let calm = crash(
            CrashVerdict {
                restarts: 1,
                looping: false,
            },
            window,
        );
        assert_eq!(
            (calm.ok, calm.detail.as_str()),
            (true, "1 automatic restarts within 10m")
        );
        assert!(
            !crash(
                CrashVerdict {
                    restarts: 9,
                    looping: true
                },
                window
            )
            .ok
        );
    }

    #[test]
    fn config_verdicts() {
        let p = Path::new("/etc/t/xray-a.json");
        assert!(config(p, &ConfigVerdict::Valid).ok);
        let missing = config(p, &ConfigVerdict::Missing);
        assert_eq!(
            (missing.ok, missing.detail.as_str()),
            (false, "/etc/t/xray-a.json is missing")
        );
        assert!(!config(p, &ConfigVerdict::Rejected("bad".into())).ok);
        assert!(!config(p, &ConfigVerdict::Untested("no core".into())).ok);
    }

    #[test]
    fn an_unknown_config_passes_and_says_so() {
        let c = config_unknown(UnknownReason::ConfigDir);
        assert_eq!(
            (c.name, c.ok, c.detail.as_str()),
            (
                CONFIG_VALID,
                true,
                "unknown: runs a config directory (-confdir); not tested"
            )
        );
        let up = unchecked(API, true);
        assert_eq!(
            (up.ok, up.detail.as_str()),
            (true, "not checked: the config is unknown")
        );
        let down = unchecked(PORTS_OWNED, false);
        assert_eq!(
            (down.name, down.ok, down.detail.as_str()),
            (PORTS_OWNED, false, NOT_RUNNING)
        );
    }

    #[test]
    fn api_is_skipped_without_one_and_needs_a_running_unit() {
        let none = api(false, &ApiVerdict::NotConfigured);
        assert_eq!((none.ok, none.detail.as_str()), (true, "no API configured"));
        let addr: SocketAddr = "127.0.0.1:10085".parse().unwrap();
        let up = ApiVerdict::Reachable {
            addr,
            core: "v2ray".into(),
        };
        assert!(api(true, &up).ok);
        let stopped = api(false, &up);
        assert_eq!((stopped.ok, stopped.detail.as_str()), (false, NOT_RUNNING));
        let down = ApiVerdict::Unreachable {
            addr,
            error: "refused".into(),
        };
        assert_eq!(api(true, &down).detail, "127.0.0.1:10085: refused");
        assert!(!api(true, &ApiVerdict::Unknown("config unreadable".into())).ok);
    }
}

//! Tunnel identity: the `{id}` of `xray-tunnel-{id}.service`, and the one naming rule for a
//! tunnel's files (`xray-tunnel-{id}.service`, `xray-{id}.json`, `xray-{id}.log`).

use std::fmt;
use std::sync::Arc;

/// Every tunnel unit is named `xray-tunnel-{id}.service`.
pub const UNIT_PREFIX: &str = "xray-tunnel-";
/// See [`UNIT_PREFIX`].
pub const UNIT_SUFFIX: &str = ".service";
/// Every tunnel's config file is named `xray-{id}.json`, its log `xray-{id}.log`.
pub const FILE_PREFIX: &str = "xray-";
/// See [`FILE_PREFIX`].
pub const CONFIG_SUFFIX: &str = ".json";
/// See [`FILE_PREFIX`].
pub const LOG_SUFFIX: &str = ".log";

const MAX_ID_LEN: usize = 64;

/// A validated tunnel id: `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
///
/// Holding one guarantees the id is safe to splice into a unit name or a file path: it has no
/// `/`, no `.`, no whitespace and no shell or systemd specifier characters.
///
/// Shared, not owned: the snapshot, the sampler, the health pass and the rendering each hold
/// every id, and a clone is a reference count, not an allocation and a copy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelId(Arc<str>);

/// Why a string is not a tunnel id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelIdError {
    #[error("tunnel id is empty")]
    Empty,
    #[error("tunnel id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("tunnel id must start with a letter or digit")]
    BadFirst,
    #[error("tunnel id may only contain letters, digits, '_' and '-' (found {0:?})")]
    BadChar(char),
    #[error("{0:?} is not a unit named {UNIT_PREFIX}{{id}}{UNIT_SUFFIX}")]
    NotTunnelUnit(String),
}

impl TunnelId {
    /// Validates `id` against the tunnel id grammar.
    pub fn new(id: &str) -> Result<Self, TunnelIdError> {
        let mut chars = id.chars();
        let first = chars.next().ok_or(TunnelIdError::Empty)?;
        if id.len() > MAX_ID_LEN {
            return Err(TunnelIdError::TooLong);
        }
        if !first.is_ascii_alphanumeric() {
            return Err(TunnelIdError::BadFirst);
        }
        if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
            return Err(TunnelIdError::BadChar(bad));
        }
        Ok(Self(id.into()))
    }

    /// Parses a unit name of the form `xray-tunnel-{id}.service`.
    pub fn from_unit_name(unit: &str) -> Result<Self, TunnelIdError> {
        let not_tunnel = || TunnelIdError::NotTunnelUnit(unit.to_owned());
        let id = unit
            .strip_prefix(UNIT_PREFIX)
            .and_then(|rest| rest.strip_suffix(UNIT_SUFFIX))
            .ok_or_else(not_tunnel)?;
        Self::new(id)
    }

    /// The unit name `xray-tunnel-{id}.service`.
    pub fn unit_name(&self) -> String {
        format!("{UNIT_PREFIX}{}{UNIT_SUFFIX}", self.0)
    }

    /// The config file name `xray-{id}.json` (in `tunnels.config_dir`).
    pub fn config_file_name(&self) -> String {
        format!("{FILE_PREFIX}{}{CONFIG_SUFFIX}", self.0)
    }

    /// The log file name `xray-{id}.log` (in `tunnels.log_dir`).
    pub fn log_file_name(&self) -> String {
        format!("{FILE_PREFIX}{}{LOG_SUFFIX}", self.0)
    }

    /// The tunnel whose config file is named `name` (`xray-{id}.json`, a bare file name);
    /// `None` for any other name.
    pub fn from_config_file_name(name: &str) -> Option<Self> {
        let id = name
            .strip_prefix(FILE_PREFIX)?
            .strip_suffix(CONFIG_SUFFIX)?;
        Self::new(id).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for id in ["a", "0", "tunnel_1", "A-b_C-9", &"x".repeat(64)] {
            assert_eq!(TunnelId::new(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn rejects_invalid_ids() {
        assert_eq!(TunnelId::new(""), Err(TunnelIdError::Empty));
        assert_eq!(TunnelId::new(&"x".repeat(65)), Err(TunnelIdError::TooLong));
        assert_eq!(TunnelId::new("-a"), Err(TunnelIdError::BadFirst));
        assert_eq!(TunnelId::new("_a"), Err(TunnelIdError::BadFirst));
        assert_eq!(TunnelId::new("../x"), Err(TunnelIdError::BadFirst));
        assert_eq!(TunnelId::new("a b"), Err(TunnelIdError::BadChar(' ')));
        assert_eq!(TunnelId::new("x;rm"), Err(TunnelIdError::BadChar(';')));
        assert_eq!(TunnelId::new("a.b"), Err(TunnelIdError::BadChar('.')));
        assert_eq!(TunnelId::new("a/b"), Err(TunnelIdError::BadChar('/')));
        assert_eq!(TunnelId::new("é"), Err(TunnelIdError::BadFirst));
        assert_eq!(TunnelId::new("a%i"), Err(TunnelIdError::BadChar('%')));
    }

    #[test]
    fn parses_unit_names() {
        let id = TunnelId::from_unit_name("xray-tunnel-eu_1.service").unwrap();
        assert_eq!(id.as_str(), "eu_1");
        assert_eq!(id.unit_name(), "xray-tunnel-eu_1.service");
    }

    #[test]
    fn names_and_parses_its_files() {
        let id = TunnelId::new("eu_1").unwrap();
        assert_eq!(id.config_file_name(), "xray-eu_1.json");
        assert_eq!(id.log_file_name(), "xray-eu_1.log");
        assert_eq!(TunnelId::from_config_file_name("xray-eu_1.json"), Some(id));
        for name in [
            "xray-.json",
            "xray-a.json.bak",
            "v2ray-a.json",
            "xray-a.b.json",
            "xray-a.log",
            "other.json",
            ".xray-a.test-1-0.json",
            "/etc/xray-a.json",
        ] {
            assert_eq!(TunnelId::from_config_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn rejects_other_units() {
        for unit in [
            "xray-tunnel-.service",
            "xray-tunnel-a.socket",
            "xray-tunnel-a",
            "v2ray.service",
            "xray-tunnel-a@b.service",
            "xray-tunnel-a.b.service",
        ] {
            assert!(
                TunnelId::from_unit_name(unit).is_err(),
                "{unit} was accepted"
            );
        }
    }
}

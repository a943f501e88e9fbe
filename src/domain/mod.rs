//! The domain core: tunnels, unit states and the rules that interpret them: which config a
//! command line runs ([`ConfigRef`]), what is an orphan ([`orphans`]), what a cleanup would do
//! and when it must refuse ([`cleanup`]), where a tunnel config may send traffic
//! ([`config_policy`]).
//!
//! Plain structs and pure functions only. Nothing here performs I/O or imports zbus, procfs,
//! hyper or prometheus, so every rule is tested on its own.

pub mod cleanup;
pub mod config_policy;
mod config_ref;
mod cpu;
mod health;
pub mod health_trigger;
pub mod orphans;
mod policy_target;
pub mod remediation;
pub mod resync;
pub mod sampling;
mod traffic;
mod tunnel;
mod unit;
mod user_rules;
mod users;

pub use cleanup::{CleanupAction, GuardLimits, GuardTrip, plan_cleanup};
pub use config_ref::{ConfigRef, UnknownConfig, UnknownReason};
pub use cpu::{CpuAccount, ProcessKey};
pub use health::{Check, Orphan, OrphanKind};
pub use traffic::{
    Online, StatName, Traffic, TrafficCounter, UserIps, online_map_name, online_users_capped,
    parse_online_name, parse_stat_name,
};
pub use tunnel::{
    CONFIG_SUFFIX, FILE_PREFIX, LOG_SUFFIX, TunnelId, TunnelIdError, UNIT_PREFIX, UNIT_SUFFIX,
};
pub use unit::{Accounting, ActiveState, Resources, RestartCounts, RestartReason, UnitStatus};
pub use user_rules::{
    LoginError, MAX_BYTE_LEVEL, XTLS_VISION, check_flow, check_level, check_login, is_unmanaged,
};
pub use users::{
    Credential, EmailError, Flavour, MAX_EMAIL_BYTES, Protocol, SourceUrlError, User,
    canonical_uuid, check_email, check_source_url, loggable, redirect_allowed,
};

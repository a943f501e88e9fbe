//! The domain core: tunnels, unit states and the rules that interpret them.
//!
//! Plain structs and pure functions only. Nothing here performs I/O or imports zbus, procfs,
//! hyper or prometheus, so every rule is tested on its own.

mod cpu;
mod health;
pub mod remediation;
mod traffic;
mod tunnel;
mod unit;
mod users;

pub use cpu::{CpuAccount, ProcessKey};
pub use health::{Check, Orphan, OrphanKind};
pub use traffic::{StatName, Traffic, TrafficCounter, parse_stat_name};
pub use tunnel::{TunnelId, TunnelIdError, UNIT_PREFIX, UNIT_SUFFIX};
pub use unit::{ActiveState, Resources, RestartCounts, RestartReason, UnitStatus};
pub use users::{Credential, Flavour, Protocol, User, canonical_uuid};

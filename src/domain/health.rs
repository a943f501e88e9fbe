//! Health checks of a tunnel and orphans of the node: the verdicts the API and the metrics show.

use std::time::SystemTime;

/// The result of one health check of one tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Stable check name: `active`, `not_crash_looping`, `config_valid`, `ports_owned`, `api`.
    pub name: &'static str,
    pub ok: bool,
    /// What was found, for people (e.g. "port 443 held by pid 812 (nginx)").
    pub detail: String,
}

/// What makes something an orphan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrphanKind {
    /// A tunnel unit whose config file (a known path, see `ConfigRef`) is missing.
    UnitWithoutConfig,
    /// A tunnel unit absent from the inventory of tunnel ids the app knows.
    NotInInventory,
    /// A tunnel config file without a unit.
    ConfigWithoutUnit,
    /// A core process running a tunnel's config outside every systemd unit.
    StrayProcess,
    /// A unit failed for longer than the threshold.
    FailedTooLong,
}

impl OrphanKind {
    pub const ALL: [OrphanKind; 5] = [
        OrphanKind::UnitWithoutConfig,
        OrphanKind::NotInInventory,
        OrphanKind::ConfigWithoutUnit,
        OrphanKind::StrayProcess,
        OrphanKind::FailedTooLong,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnitWithoutConfig => "unit_without_config",
            Self::NotInInventory => "not_in_inventory",
            Self::ConfigWithoutUnit => "config_without_unit",
            Self::StrayProcess => "stray_process",
            Self::FailedTooLong => "failed_too_long",
        }
    }
}

/// One orphan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The tunnel id it concerns; for a stray process, the tunnel whose config it runs.
    pub tunnel: String,
    pub kind: OrphanKind,
    /// When the warden first saw it in this state.
    pub since: SystemTime,
    /// What was found (a path, a pid and its command line, ...).
    pub detail: String,
    /// The stray process's PID, for [`OrphanKind::StrayProcess`].
    pub pid: Option<u32>,
}

//! The in-memory snapshot that every scrape reads.
//!
//! Writers (the systemd watcher and the resource sampler) take the write lock only to copy
//! finished results in; nobody holds the lock across an `.await`. Readers clone what they need.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use crate::domain::{
    Check, GuardTrip, Orphan, Resources, RestartCounts, Traffic, TunnelId, UnitStatus,
    UnknownConfig,
};

/// One tunnel as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Tunnel {
    pub unit: String,
    /// Shared with the health pass's targets and inputs, which keep it across passes: replaced,
    /// never changed in place, and only when systemd reports something new.
    pub status: Arc<UnitStatus>,
    pub restarts: RestartCounts,
    /// `None` until the sampler has read the unit's processes at least once.
    pub resources: Option<Resources>,
    /// The core's traffic counters; `None` until read (and for tunnels without a reachable API).
    pub traffic: Option<Traffic>,
    /// The last health checks; empty until the first health pass.
    pub health: Vec<Check>,
}

impl Tunnel {
    /// A tunnel first seen with `status`: nothing counted or sampled yet.
    pub fn new(unit: String, status: UnitStatus) -> Self {
        Self {
            unit,
            status: Arc::new(status),
            restarts: RestartCounts::default(),
            resources: None,
            traffic: None,
            health: Vec::new(),
        }
    }
}

/// The outcome of a collector's last run (`xray_warden_collector_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollectorRun {
    pub success: bool,
    pub duration: Duration,
}

/// Collector names, used as the `collector` label.
pub const COLLECTOR_SYSTEMD: &str = "systemd";
pub const COLLECTOR_SAMPLER: &str = "sampler";
pub const COLLECTOR_HEALTH: &str = "health";

/// Counters of things that went wrong without stopping the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Troubles {
    /// Times the watcher (re)connected to the bus after the first time.
    pub reconnects: u64,
    /// Unit reads that failed (a unit vanished mid-read, a call timed out, ...).
    pub unit_read_errors: u64,
    /// Processes listed in a cgroup that exited before procfs could be read.
    pub vanished_processes: u64,
    /// Cgroups that could not be read at all.
    pub cgroup_read_errors: u64,
}

/// The sampler's open files: it holds each running unit's cgroup files and its processes' `stat`
/// open between passes, up to a limit (half the open-file limit); beyond it, a unit's files are
/// read by path each pass, which costs more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldFiles {
    pub held: u64,
    /// `u64::MAX` without an open-file limit (then not published).
    pub limit: u64,
    /// Units the last pass read by path, some of their files finding no room under the limit.
    pub units_by_path: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub tunnels: BTreeMap<TunnelId, Tunnel>,
    /// Whether the watcher currently holds a working bus connection.
    pub systemd_up: bool,
    /// Set once the first full listing has completed; never cleared.
    pub listed: bool,
    pub last_refresh: Option<SystemTime>,
    pub collectors: BTreeMap<&'static str, CollectorRun>,
    /// Orphans found by the last health pass.
    pub orphans: Vec<Orphan>,
    /// Tunnels whose config the last health pass could not know (relative, `-confdir`, ...):
    /// never orphans for a missing config.
    pub config_unknown: Vec<UnknownConfig>,
    /// `Some` while the last health pass found too much orphaned at once for any cleanup.
    pub orphan_guard: Option<GuardTrip>,
    pub troubles: Troubles,
    pub held_files: HeldFiles,
    /// Bumped by every [`SharedState::update`] and [`SharedState::update_samples`] (not by
    /// [`SharedState::update_runs`]): a rendering of the per-tunnel series made at one version
    /// holds while it stays.
    pub version: u64,
    /// Bumped by every [`SharedState::update`] only: a rendering of the families drawn from
    /// the units' status, restarts, health checks and orphans holds while it stays, whatever
    /// the sampler and the traffic poll write.
    pub status_version: u64,
}

/// Shared handle on the snapshot, and a signal raised after each update that bumps its version.
#[derive(Debug, Clone, Default)]
pub struct SharedState(Arc<RwLock<Snapshot>>, Arc<tokio::sync::Notify>);

impl SharedState {
    pub fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        // A writer that panicked leaves plain data behind; reading it is still sound.
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `update` under the write lock, stamps the refresh time and bumps both versions.
    pub fn update<R>(&self, update: impl FnOnce(&mut Snapshot) -> R) -> R {
        let result = self.write(|s| {
            let result = update(s);
            s.version += 1;
            s.status_version += 1;
            result
        });
        self.1.notify_one();
        result
    }

    /// Like [`SharedState::update`] for a change of the tunnels' samples only (`resources`,
    /// `traffic`), the collectors' runs and trouble counters: `status_version` stays, so the
    /// status families are not rendered again.
    pub fn update_samples<R>(&self, update: impl FnOnce(&mut Snapshot) -> R) -> R {
        let result = self.write(|s| {
            let result = update(s);
            s.version += 1;
            result
        });
        self.1.notify_one();
        result
    }

    /// Like [`SharedState::update`] for a change of the collectors' runs or trouble counters
    /// only (the warden's own series, rendered afresh by every scrape): the version stays.
    pub fn update_runs<R>(&self, update: impl FnOnce(&mut Snapshot) -> R) -> R {
        self.write(update)
    }

    /// Waits for the next update that bumps the version (one that happened since the last wait
    /// counts).
    pub async fn changed(&self) {
        self.1.notified().await;
    }

    fn write<R>(&self, update: impl FnOnce(&mut Snapshot) -> R) -> R {
        let mut guard: RwLockWriteGuard<'_, Snapshot> = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = update(&mut guard);
        guard.last_refresh = Some(SystemTime::now());
        result
    }
}

/// The one operation lock: the operations service (`crate::ops`) holds it for every action and
/// the users sync loop for each round, so no two writers interleave on a tunnel's files or jobs.
pub type OpLock = std::sync::Arc<tokio::sync::Mutex<()>>;

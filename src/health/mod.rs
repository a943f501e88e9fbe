//! Health of every tunnel and orphans of the node, every `health.interval`.
//!
//! Per tunnel, five checks go into the snapshot (`state::Tunnel::health`, in this order):
//! `active`; `not_crash_looping` (automatic restarts within `health.crash_window` below
//! `health.crash_threshold`); `config_valid` (the file the unit runs exists and the core's own
//! test accepts it, re-tested only when the file changes); `ports_owned` (every inbound port
//! listens, held by the unit's own processes, read from procfs); `api` (the core's gRPC API
//! answers, or the config has none). A tunnel that is not active fails `ports_owned` and `api`
//! with "not running" (a port another process holds is still named: it is often the cause).
//!
//! A unit's config is the one its ExecStart names when that path can be trusted
//! ([`ConfigRef::Known`](crate::domain::ConfigRef)); a tunnel whose config is unknown (relative,
//! `-confdir`, several, outside `tunnels.config_dir`, an unloaded unit) passes `config_valid`,
//! `ports_owned` and `api` with "not checked" details and is listed in
//! `Snapshot::config_unknown` instead: it is never "without config".
//!
//! Orphans go into `Snapshot::orphans`: units without their (known) config, units absent from
//! the inventory, configs without a unit or a core running them, core processes running a
//! tunnel's config outside every systemd unit, units failed for longer than
//! `health.failed_threshold`. Each keeps the time the warden first saw it ([`Ledger`]). When too
//! many tunnels look orphaned at once, the orphan guard trips (`Snapshot::orphan_guard`) and the
//! cleanup acts on none. [`cleanup`] plans and carries out their removal, re-checking each one
//! first against fresh facts.
//!
//! Each pass is driven by change: it reads procfs (who holds each port, the core processes) and
//! the configs again only when a cheap input differs from the last full read (a unit's state,
//! main PID or restarts, a config's inode, mtime or size, the config directory, the listening
//! sockets, the set of core processes) or at least every
//! [`SAFETY_NET_PASSES`](crate::domain::health_trigger::SAFETY_NET_PASSES) intervals (10 minutes
//! at the default 15 s); otherwise it re-judges the last full read's facts
//! ([`crate::domain::health_trigger`]). The inputs cost a `stat` per known config, one netlink
//! `sock_diag` dump of the LISTEN sockets ([`netdiag`]; `/proc/net/tcp` for a proc root that is
//! not the warden's own namespace, or when netlink is refused), and one listing of the proc
//! root's PIDs whose new entries alone are read for their comm ([`census`]): no per-unit
//! procfs read. API probes (of active tunnels whose config names an API) and the config verdicts
//! (cached by the inputs' file stamps) run every pass; a tunnel's checks are built again only
//! when one of the facts they come from changed ([`memo`]).
//!
//! The trade-off of the safety net: what none of the inputs shows is seen only by the next
//! full read, up to 10 minutes late at the default interval. That is a running process that
//! takes over a socket without a new listen (an fd passed over a UNIX socket; never seen when a
//! tunnel's own process made it, since a listener made in the unit's cgroup counts as the
//! unit's, [`ports::own_by_cgroup`]), a process that execs a core more than one interval after
//! it started (it was read once more on the pass after its first, then trusted), and more than
//! a whole PID range of processes started between two passes (the census starts over whenever
//! the last PID goes down). Everything a health check is for (a port conflict, an invalid or
//! edited config, a crashed or restarted unit, a stray core started by hand) changes an input
//! and is seen within one interval.
//!
//! The rules are pure functions ([`crash`], [`ports`], [`checks`], and the orphan, plan and
//! guard rules in [`crate::domain::orphans`] and [`crate::domain::cleanup`]); the I/O is in
//! [`scan`] (procfs), [`verdicts`] (the core's config test), [`inventory`] and the pass itself.

mod census;
pub mod checks;
pub mod cleanup;
pub mod crash;
mod gather;
pub mod inventory;
mod memo;
pub mod netdiag;
pub mod ports;
mod probe;
pub mod scan;
mod task;
mod trigger;
pub mod verdicts;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use cleanup::{
    Cleaner, CleanupAction, CleanupOutcome, CleanupResult, TunnelControl, plan_cleanup,
};
pub use task::{HealthTask, PassReport};

use crate::config::{Config, HealthConfig};
use crate::domain::orphans::{self, Book, Found, OrphanKey};
use crate::domain::{GuardLimits, Orphan, TunnelId};
use crate::state::SharedState;

/// Deadline of one API probe (`ApiClient::detect` takes at most twice this).
pub const API_TIMEOUT: Duration = Duration::from_secs(2);

/// What the health task and the cleanup need from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub health: HealthConfig,
    /// The directory of tunnel configs the warden manages (`tunnels.config_dir`): only a unit
    /// config inside it is known, only a core running a config inside it can be a stray.
    pub config_dir: PathBuf,
    /// The core that tests configs (`tunnels.core_binary`); a process running it is a core
    /// whatever its comm.
    pub core_binary: PathBuf,
    /// How configs are tested: as `tunnels.user` through the systemd of `[systemd]`.
    pub config_test: verdicts::ConfigTester,
    /// Where tunnel unit files are (`tunnels.unit_dir`), for the cleanup's last check.
    pub unit_dir: PathBuf,
    /// `sampler.proc_root` and `sampler.cgroup_root`.
    pub proc_root: PathBuf,
    pub cgroup_root: PathBuf,
    pub api_timeout: Duration,
    /// When the orphan cleanup refuses to act at all (`[remediation] max_orphan_fraction`,
    /// `max_orphans_per_pass`).
    pub guard: GuardLimits,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            health: config.health.clone(),
            config_dir: config.tunnels.config_dir.clone(),
            core_binary: config.tunnels.core_binary.clone(),
            config_test: verdicts::ConfigTester::from_config(config),
            unit_dir: config.tunnels.unit_dir.clone(),
            proc_root: config.sampler.proc_root.clone(),
            cgroup_root: config.sampler.cgroup_root.clone(),
            api_timeout: API_TIMEOUT,
            guard: GuardLimits {
                max_fraction: config.remediation.max_orphan_fraction,
                max_per_pass: config.remediation.max_orphans_per_pass,
            },
        }
    }

    /// The config file the lifecycle gives tunnel `id`: `{config_dir}/xray-{id}.json`.
    pub fn config_file(&self, id: &TunnelId) -> PathBuf {
        self.config_dir.join(id.config_file_name())
    }
}

/// The orphans currently known and when each was first seen, shared by the health task (which
/// writes it every pass) and the cleanup (which reads a stray process's identity from it).
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<Book>>);

impl Ledger {
    fn book(&self) -> MutexGuard<'_, Book> {
        // Plain data: a panicked writer leaves nothing half-done that matters.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stamps one pass's findings; see [`orphans::stamp`].
    pub fn stamp(&self, found: Vec<Found>, now: SystemTime) -> Vec<Orphan> {
        orphans::stamp(&mut self.book(), found, now)
    }

    /// The start time (clock ticks since boot) of the stray process `pid` that was first seen
    /// at `since`; `None` when the ledger holds no such orphan (gone, or the PID now belongs to
    /// another process that became an orphan later).
    pub fn stray_start(&self, pid: u32, since: SystemTime) -> Option<u64> {
        self.book().iter().find_map(|(key, seen)| match key {
            OrphanKey::Stray(_, p) if p.pid == pid && *seen == since => Some(p.start_ticks),
            _ => None,
        })
    }
}

/// Runs a health pass every `settings.health.interval` until `shutdown` is cancelled, writing
/// the checks, the orphans and `state::COLLECTOR_HEALTH` into `state`. Nothing is checked until
/// the watcher's first full listing.
pub async fn run(
    settings: Settings,
    state: SharedState,
    ledger: Ledger,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(settings.health.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut task = HealthTask::new(settings, state, ledger);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                // A pass may spawn core tests; shutdown must not wait for a whole pass.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = task.pass() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "measure_tests.rs"]
mod measure;

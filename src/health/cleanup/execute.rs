//! Carrying out a cleanup plan: the guard first, then each item re-checked against fresh facts
//! just before it acts (or, in a dry run, says what it would do).

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use rustix::process::Signal;
use tracing::warn;

use super::pidfd::PidFd;
use super::{CleanupAction, CleanupOutcome, CleanupResult, TunnelControl};
use crate::domain::orphans::{self, ConfigFile, Facts, OrphanKey, UnitFacts};
use crate::domain::{ActiveState, GuardTrip, OrphanKind, TunnelId, UnitStatus};
use crate::health::scan::ProcScan;
use crate::health::{Ledger, Settings, inventory};
use crate::state::{SharedState, Snapshot};

/// How long a stray process gets between SIGTERM and SIGKILL by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// How long a process gets to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Executes cleanup plans against the current facts.
pub struct Cleaner<C> {
    settings: Settings,
    state: SharedState,
    ledger: Ledger,
    control: C,
    scan: ProcScan,
    grace: Duration,
}

use CleanupOutcome::{Done, Failed, Skipped, WouldDo};

impl<C: TunnelControl> Cleaner<C> {
    /// A cleaner reading the same snapshot and ledger the health task writes, acting on
    /// tunnels through `control` (the lifecycle).
    pub fn new(settings: Settings, state: SharedState, ledger: Ledger, control: C) -> Self {
        Self {
            scan: ProcScan::new(&settings.proc_root),
            settings,
            state,
            ledger,
            control,
            grace: DEFAULT_GRACE,
        }
    }

    /// Sets the time between SIGTERM and SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Runs `plan` in order, one action at a time, each re-checked just before it acts.
    /// With `dry_run` nothing changes; each result says what would be done. When the guard
    /// trips (on `plan`, or on every orphan of the last health pass), no action runs and every
    /// result is [`CleanupOutcome::Skipped`] with the guard's reason, dry run or not.
    pub async fn execute(&self, plan: &[CleanupAction], dry_run: bool) -> Vec<CleanupResult> {
        if let Err(trip) = self.guard(plan) {
            warn!(%trip, actions = plan.len(), "orphan cleanup refused by the guard");
            let why = format!("refused by the orphan guard: {trip}");
            let refused = |action: &CleanupAction| CleanupResult {
                action: action.clone(),
                outcome: Skipped(why.clone()),
            };
            return plan.iter().map(refused).collect();
        }
        let mut results = Vec::with_capacity(plan.len());
        for action in plan {
            let outcome = match action {
                CleanupAction::RemoveTunnel { tunnel, reasons } => {
                    self.remove_tunnel(tunnel, reasons, dry_run).await
                }
                CleanupAction::RemoveConfig { tunnel } => self.remove_config(tunnel, dry_run),
                CleanupAction::StopProcess { pid, since, .. } => {
                    self.stop_process(*pid, *since, dry_run).await
                }
            };
            results.push(CleanupResult {
                action: action.clone(),
                outcome,
            });
        }
        results
    }

    /// The guard over `plan` and over the plan of every orphan the last pass found: a caller
    /// asking for one tunnel while most of the node looks orphaned is refused too.
    fn guard(&self, plan: &[CleanupAction]) -> Result<(), GuardTrip> {
        let snapshot = self.state.read();
        let (limits, units) = (self.settings.guard, snapshot.tunnels.len());
        limits.check_plan(plan, units)?;
        limits.check_orphans(&snapshot.orphans, units)
    }

    async fn remove_tunnel(
        &self,
        id: &TunnelId,
        reasons: &[OrphanKind],
        dry_run: bool,
    ) -> CleanupOutcome {
        if let Err(why) = trusted(&self.state.read()) {
            return Skipped(why);
        }
        let wants_inventory = reasons.contains(&OrphanKind::NotInInventory);
        let inventory = match (&self.settings.health.inventory, wants_inventory) {
            (Some(path), true) => inventory::read(path).await.ok(),
            _ => None,
        };
        let status = match self.control.read_unit(id).await {
            Ok(status) => status,
            Err(e) => return Skipped(format!("cannot read the unit now: {e}")),
        };
        if status.load_state == "not-found" && *status.active_state() == ActiveState::Inactive {
            return Skipped("the unit is gone".into());
        }
        let unit = self.fresh_unit_facts(id, &status).await;
        let facts = self.facts(vec![unit], Vec::new(), inventory);
        let found = kinds_of(&facts, id);
        let holding: Vec<&str> = reasons
            .iter()
            .filter(|r| found.contains(r))
            .map(|r| r.as_str())
            .collect();
        if holding.is_empty() {
            return Skipped("no longer an orphan".into());
        }
        let why = holding.join(", ");
        if dry_run {
            return WouldDo(format!("would delete the tunnel ({why})"));
        }
        match self.control.remove_tunnel(id).await {
            Ok(()) => Done(format!("deleted the tunnel ({why})")),
            Err(e) => Failed(format!("deleting the tunnel: {e}")),
        }
    }

    /// A unit as just read from systemd, with a stat of its config made after that read.
    async fn fresh_unit_facts(&self, id: &TunnelId, status: &UnitStatus) -> UnitFacts {
        let config = status.config_ref(&self.settings.config_dir);
        let config_exists = match config.known() {
            // An error other than "not found" proves nothing: count the file as there.
            Some(path) => tokio::fs::try_exists(path).await.unwrap_or(true),
            None => true,
        };
        UnitFacts {
            id: id.clone(),
            config,
            config_exists,
            active_state: status.active_state().clone(),
            state_change_usec: status.state_change_usec,
        }
    }

    fn remove_config(&self, id: &TunnelId, dry_run: bool) -> CleanupOutcome {
        let path = self.settings.config_file(id);
        let unit_file = self.settings.unit_dir.join(id.unit_name());
        if !path.exists() {
            return Skipped(format!("{} is gone", path.display()));
        }
        if unit_file.exists() {
            return Skipped(format!("{} exists", unit_file.display()));
        }
        {
            let snapshot = self.state.read();
            if let Err(why) = trusted(&snapshot) {
                return Skipped(why);
            }
            let file = ConfigFile {
                id: id.clone(),
                path: path.clone(),
            };
            let mut facts = self.facts(self.snapshot_units(&snapshot), vec![file], None);
            facts.cores = self.cores();
            if !kinds_of(&facts, id).contains(&OrphanKind::ConfigWithoutUnit) {
                return Skipped("a unit exists or a unit or core process runs this file".into());
            }
        }
        if dry_run {
            return WouldDo(format!("would remove {}", path.display()));
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Done(format!("removed {}", path.display())),
            Err(e) => Failed(format!("removing {}: {e}", path.display())),
        }
    }

    async fn stop_process(&self, pid: u32, since: SystemTime, dry_run: bool) -> CleanupOutcome {
        if !self.scan.is_own_pid_namespace() {
            return Skipped("proc_root is not this process's PID namespace".into());
        }
        let Some(start) = self.ledger.stray_start(pid, since) else {
            return Skipped(format!(
                "pid {pid} is no stray orphan seen at that time any more"
            ));
        };
        let not_that_stray = || {
            Skipped(format!(
                "pid {pid} is no longer that stray (gone, reused, or in a unit)"
            ))
        };
        if dry_run {
            return match self.still_stray(pid, start) {
                true => WouldDo(format!("would stop pid {pid}")),
                false => not_that_stray(),
            };
        }
        // The pidfd first, the check second: see the pidfd module for why this order.
        let process = match PidFd::open(pid) {
            Ok(process) => process,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return not_that_stray(),
            Err(e) => return Failed(format!("pidfd_open({pid}): {e}")),
        };
        if !self.still_stray(pid, start) {
            return not_that_stray();
        }
        self.terminate(pid, start, &process).await
    }

    /// SIGTERM, up to the grace period, then SIGKILL, all through `process`.
    async fn terminate(&self, pid: u32, start: u64, process: &PidFd) -> CleanupOutcome {
        let running = || self.scan.alive(pid, start);
        match process.signal(Signal::TERM) {
            Ok(true) => {}
            Ok(false) => return Done(format!("pid {pid} exited")),
            Err(e) => return Failed(format!("SIGTERM to pid {pid}: {e}")),
        }
        if process.exited(self.grace, running).await {
            return Done(format!("stopped pid {pid} with SIGTERM"));
        }
        match process.signal(Signal::KILL) {
            Ok(true) => {}
            Ok(false) => return Done(format!("pid {pid} exited")),
            Err(e) => return Failed(format!("SIGKILL to pid {pid}: {e}")),
        }
        match process.exited(KILL_WAIT, running).await {
            true => Done(format!(
                "killed pid {pid} with SIGKILL after {:?}",
                self.grace
            )),
            false => Failed(format!("pid {pid} still runs after SIGKILL")),
        }
    }

    /// Whether `pid` is still the stray process that started at `start`: the same process, a
    /// core, running a tunnel's config, in no systemd unit.
    fn still_stray(&self, pid: u32, start: u64) -> bool {
        let core = self
            .scan
            .core(pid, std::process::id(), &self.settings.core_binary);
        let Some(core) = core.filter(|c| c.key.start_ticks == start) else {
            return false;
        };
        let units = self.snapshot_units(&self.state.read());
        orphans::stray_tunnel(&core, &self.settings.config_dir, &units).is_some()
            && self.scan.alive(pid, start)
    }

    fn cores(&self) -> Vec<orphans::CoreProcess> {
        self.scan
            .cores(std::process::id(), &self.settings.core_binary)
    }

    /// The snapshot's units, with their configs counted as present: for the rules that only
    /// ask which unit runs which file.
    fn snapshot_units(&self, snapshot: &Snapshot) -> Vec<UnitFacts> {
        let dir = &self.settings.config_dir;
        let unit = |(id, t): (&TunnelId, &crate::state::Tunnel)| UnitFacts {
            id: id.clone(),
            config: t.status.config_ref(dir),
            config_exists: true,
            active_state: t.status.active_state().clone(),
            state_change_usec: t.status.state_change_usec,
        };
        snapshot.tunnels.iter().map(unit).collect()
    }

    fn facts(
        &self,
        units: Vec<UnitFacts>,
        config_files: Vec<ConfigFile>,
        inventory: Option<HashSet<String>>,
    ) -> Facts {
        Facts {
            now: SystemTime::now(),
            units,
            config_files,
            inventory,
            cores: Vec::new(),
            config_dir: self.settings.config_dir.clone(),
            failed_threshold: self.settings.health.failed_threshold,
        }
    }
}

/// The snapshot's units can be trusted only while the watcher is connected and has listed.
fn trusted(snapshot: &Snapshot) -> Result<(), String> {
    if snapshot.listed && snapshot.systemd_up {
        Ok(())
    } else {
        Err("systemd's state is not known right now".into())
    }
}

/// The orphan kinds `facts` give tunnel `id`.
fn kinds_of(facts: &Facts, id: &TunnelId) -> Vec<OrphanKind> {
    orphans::find(facts)
        .into_iter()
        .filter_map(|f| match f.key {
            OrphanKey::Tunnel(kind, t) if t == *id => Some(kind),
            _ => None,
        })
        .collect()
}

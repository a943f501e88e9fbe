//! Carrying out a cleanup plan: re-check each item, then act (or, in a dry run, say what).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::process::Command;

use super::{CleanupAction, CleanupOutcome, CleanupResult, RemoveTunnel};
use crate::domain::{OrphanKind, TunnelId};
use crate::health::orphans::{self, ConfigFile, Facts, OrphanKey, UnitFacts};
use crate::health::scan::ProcScan;
use crate::health::{Ledger, Settings, inventory};
use crate::state::{SharedState, Snapshot};

/// How long a stray process gets between SIGTERM and SIGKILL by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// How often a stopping process is looked at.
const POLL: Duration = Duration::from_millis(50);

/// Executes cleanup plans against the current facts.
pub struct Cleaner<R> {
    settings: Settings,
    state: SharedState,
    ledger: Ledger,
    remover: R,
    scan: ProcScan,
    grace: Duration,
}

use CleanupOutcome::{Done, Failed, Skipped, WouldDo};

impl<R: RemoveTunnel> Cleaner<R> {
    /// A cleaner reading the same snapshot and ledger the health task writes.
    pub fn new(settings: Settings, state: SharedState, ledger: Ledger, remover: R) -> Self {
        Self {
            scan: ProcScan::new(&settings.proc_root),
            settings,
            state,
            ledger,
            remover,
            grace: DEFAULT_GRACE,
        }
    }

    /// Sets the time between SIGTERM and SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Runs `plan` in order, one action at a time, each re-checked just before it acts.
    /// With `dry_run` nothing changes; each result says what would be done.
    pub async fn execute(&self, plan: &[CleanupAction], dry_run: bool) -> Vec<CleanupResult> {
        let mut results = Vec::with_capacity(plan.len());
        for action in plan {
            let outcome = match action {
                CleanupAction::RemoveTunnel { tunnel, reasons } => {
                    self.remove_tunnel(tunnel, reasons, dry_run).await
                }
                CleanupAction::RemoveConfig { tunnel } => self.remove_config(tunnel, dry_run),
                CleanupAction::StopProcess { pid, since } => {
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

    async fn remove_tunnel(
        &self,
        id: &TunnelId,
        reasons: &[OrphanKind],
        dry_run: bool,
    ) -> CleanupOutcome {
        let wants_inventory = reasons.contains(&OrphanKind::NotInInventory);
        let inventory = match (&self.settings.health.inventory, wants_inventory) {
            (Some(path), true) => inventory::read(path).await.ok(),
            _ => None,
        };
        let holding: Vec<&str> = {
            let snapshot = self.state.read();
            if let Err(why) = trusted(&snapshot) {
                return Skipped(why);
            }
            let Some(unit) = self.unit_facts(&snapshot, id) else {
                return Skipped("the unit is gone".into());
            };
            let facts = self.facts(vec![unit], Vec::new(), inventory);
            let found = kinds_of(&facts, id);
            reasons
                .iter()
                .filter(|r| found.contains(r))
                .map(|r| r.as_str())
                .collect()
        };
        if holding.is_empty() {
            return Skipped("no longer an orphan".into());
        }
        let why = holding.join(", ");
        if dry_run {
            return WouldDo(format!("would delete the tunnel ({why})"));
        }
        match self.remover.remove_tunnel(id).await {
            Ok(()) => Done(format!("deleted the tunnel ({why})")),
            Err(e) => Failed(format!("deleting the tunnel: {e}")),
        }
    }

    fn remove_config(&self, id: &TunnelId, dry_run: bool) -> CleanupOutcome {
        let path = self.settings.default_config_path(id);
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
            let units = snapshot
                .tunnels
                .keys()
                .filter_map(|t| self.unit_facts(&snapshot, t))
                .collect();
            let file = ConfigFile {
                id: id.clone(),
                path: path.clone(),
            };
            let facts = self.facts(units, vec![file], None);
            if !kinds_of(&facts, id).contains(&OrphanKind::ConfigWithoutUnit) {
                return Skipped("a unit exists or runs this file".into());
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
        if !self.still_stray(pid, start) {
            return Skipped(format!(
                "pid {pid} is no longer that stray (gone, reused, or in a tunnel unit)"
            ));
        }
        if dry_run {
            return WouldDo(format!("would stop pid {pid}"));
        }
        if let Err(e) = signal(pid, "TERM").await {
            return Failed(e);
        }
        if self.exited(pid, start, self.grace).await {
            return Done(format!("stopped pid {pid} with SIGTERM"));
        }
        if !self.still_stray(pid, start) {
            return Done(format!("pid {pid} exited"));
        }
        if let Err(e) = signal(pid, "KILL").await {
            return Failed(e);
        }
        match self.exited(pid, start, Duration::from_secs(2)).await {
            true => Done(format!(
                "killed pid {pid} with SIGKILL after {:?}",
                self.grace
            )),
            false => Failed(format!("pid {pid} still runs after SIGKILL")),
        }
    }

    /// Whether `pid` is still the stray process that started at `start`.
    fn still_stray(&self, pid: u32, start: u64) -> bool {
        let stray = self.scan.stray(pid, std::process::id());
        stray.is_some_and(|s| s.key.start_ticks == start) && self.scan.alive(pid, start)
    }

    async fn exited(&self, pid: u32, start: u64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.scan.alive(pid, start) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
        true
    }

    fn unit_facts(&self, snapshot: &Snapshot, id: &TunnelId) -> Option<UnitFacts> {
        let t = snapshot.tunnels.get(id)?;
        let config_path = t
            .status
            .config_arg()
            .map_or_else(|| self.settings.default_config_path(id), PathBuf::from);
        Some(UnitFacts {
            id: id.clone(),
            // An error other than "not found" proves nothing: count the file as there.
            config_exists: config_path.try_exists().unwrap_or(true),
            config_path,
            active_state: t.status.active_state().clone(),
            state_change_usec: t.status.state_change_usec,
        })
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
            strays: Vec::new(),
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

/// `kill -s SIGNAL PID`, by PID only.
async fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let out = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .output()
        .await
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("kill -s {signal} {pid}: {}", err.trim()))
    }
}

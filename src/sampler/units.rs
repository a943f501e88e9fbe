//! What the sampler keeps per unit between passes, and one pass's reading of every unit, on
//! the blocking pool.
//!
//! Per unit: its cgroup's accounting files held open ([`HeldCgroup`]), the last listing of its
//! processes with each one's `stat` held open, what that listing was made on, and the procfs CPU
//! account. Each pass re-reads the held cgroup files (one `pread` per figure) and reads the
//! processes again only when [`processes_due`] says so (their held files, or a new listing of
//! the cgroup); where the cgroup has no CPU counter, the held `stat` files are re-read instead. At most half of the open-file limit is held; beyond
//! it, files are read by path each pass, as before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::sampling::{LastReading, ProcessBasis, ProcessRead, processes_due, spread};
use crate::domain::{Accounting, CpuAccount, Resources, TunnelId, UnitStatus};
use crate::procfs::{CgroupSample, HeldCgroup, HeldError, HeldProcess, ProcfsError, ProcfsReader};

/// A unit to read this pass: its id and status (the snapshot's own, shared).
pub struct Target {
    pub id: TunnelId,
    pub status: Arc<UnitStatus>,
}

/// One unit's reading.
pub enum Reading {
    Sampled(Resources),
    /// The cgroup is not below the cgroup root: systemd is asked instead.
    NotFound,
    Failed(ProcfsError),
}

/// What is kept per unit.
#[derive(Default)]
pub struct Unit {
    control_group: String,
    held: Option<HeldCgroup>,
    processes: Option<Processes>,
    pub account: CpuAccount,
}

/// The last listing of a unit's processes.
struct Processes {
    sample: CgroupSample,
    /// Each process's `stat`, held open (empty when over the budget).
    held: Vec<HeldProcess>,
    basis: ProcessBasis,
    at: Instant,
    /// Readings of the held processes since the cgroup was listed.
    refreshes: u32,
}

/// Every unit's kept state.
pub struct Units {
    pub by_id: HashMap<TunnelId, Unit>,
    /// At most this many files are held open.
    max_fds: u64,
    /// Files held open now (an estimate: four per held cgroup, one per held process).
    fds: u64,
    /// How old a listing of the processes may get.
    refresh: Duration,
    buf: Vec<u8>,
}

/// Files a held cgroup counts for: its directory, CPU, memory and tasks.
const CGROUP_FDS: u64 = 4;

impl Units {
    pub fn new(refresh: Duration) -> Self {
        // Half of the open-file limit; the rest is for connections, channels, procfs reads.
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        Self::with_budget(refresh, limit / 2)
    }

    pub fn with_budget(refresh: Duration, max_fds: u64) -> Self {
        Self {
            by_id: HashMap::new(),
            max_fds,
            fds: 0,
            refresh,
            buf: Vec::new(),
        }
    }

    /// Reads every target; blocking.
    pub fn read_all(&mut self, reader: &ProcfsReader, targets: &[Target]) -> Vec<(Reading, u64)> {
        let now = Instant::now();
        targets.iter().map(|t| self.read(reader, t, now)).collect()
    }

    /// Forgets units that are no longer known, and closes the files of those not sampled
    /// (stopped: their cgroup is gone; the CPU account stays).
    pub fn retain(
        &mut self,
        known: impl Fn(&TunnelId) -> bool,
        sampled: impl Fn(&TunnelId) -> bool,
    ) {
        self.by_id.retain(|id, _| known(id));
        for (id, unit) in &mut self.by_id {
            if !sampled(id) {
                unit.held = None;
                unit.processes = None;
            }
        }
        self.fds = self.by_id.values().map(Unit::fds).sum();
    }

    /// One unit's reading and how many of its processes vanished while being read.
    fn read(&mut self, reader: &ProcfsReader, target: &Target, now: Instant) -> (Reading, u64) {
        let control_group = &target.status.control_group;
        let unit = match self.by_id.get_mut(&target.id) {
            Some(unit) => unit,
            None => self.by_id.entry(target.id.clone()).or_default(),
        };
        if unit.control_group != *control_group {
            self.fds = self.fds.saturating_sub(unit.fds());
            unit.held = None;
            unit.processes = None;
            unit.control_group.clone_from(control_group);
        }
        let mut budget = Budget {
            fds: &mut self.fds,
            max: self.max_fds,
        };
        let accounting = match accounting(reader, unit, &mut budget, &mut self.buf) {
            Ok(accounting) => accounting,
            Err(err) => return unit.lost(err, &mut budget),
        };
        let basis = ProcessBasis {
            main_pid: target.status.main_pid,
            tasks: accounting.tasks_current,
        };
        let last = unit.processes.as_ref().map(|p| LastReading {
            basis: p.basis,
            age: now.saturating_duration_since(p.at),
            refreshes: p.refreshes,
        });
        let periodic = last.is_some_and(|l| l.age >= self.refresh);
        let mut action = processes_due(last, basis, self.refresh);
        if action == ProcessRead::Refresh {
            // The held processes read again, fds included; one that exited lists anew.
            let processes = unit.processes.as_mut().expect("refreshed: listed before");
            match reader.reread_processes(&mut processes.held, &mut self.buf, true) {
                Some(sample) if !processes.held.is_empty() => {
                    processes.sample = sample;
                    processes.at = now;
                    processes.refreshes += 1;
                }
                _ => action = ProcessRead::List,
            }
        }
        // Without the cgroup's CPU counter, CPU comes from the processes: their held `stat`
        // files are read again, unless one has exited.
        if action == ProcessRead::Keep && accounting.cpu_usage_nsec.is_none() {
            let processes = unit.processes.as_mut().expect("kept: listed before");
            match reader.reread_processes(&mut processes.held, &mut self.buf, false) {
                Some(sample) if !processes.held.is_empty() => processes.sample = sample,
                _ => action = ProcessRead::List,
            }
        }
        let mut vanished = 0;
        if action == ProcessRead::List {
            let pids = match &unit.held {
                Some(held) => held.pids(&mut self.buf).map_err(|e| match e {
                    HeldError::Gone => ProcfsError::CgroupNotFound(control_group.clone()),
                    HeldError::Read(e) => e,
                }),
                None => reader.cgroup_pids(control_group),
            };
            let listed_before = unit.processes.is_some();
            let kept = unit.processes.take().map(|p| p.held).unwrap_or_default();
            *budget.fds = budget.fds.saturating_sub(kept.len() as u64);
            let listed = pids.and_then(|pids| {
                if budget.room(pids.len() as u64) {
                    reader.hold_processes(pids, kept)
                } else {
                    reader.sample_pids(pids).map(|sample| (sample, Vec::new()))
                }
            });
            let (sample, held) = match listed {
                Ok(listed) => listed,
                Err(err) => return unit.lost(err, &mut budget),
            };
            *budget.fds += held.len() as u64;
            vanished = sample.vanished;
            // The first listing's age starts at a point of the period spread by id, so units
            // seen together do not all list again in one pass.
            let at = if listed_before {
                now
            } else {
                let back = self.refresh.mul_f64(spread(target.id.as_str()));
                now.checked_sub(back).unwrap_or(now)
            };
            unit.processes = Some(Processes {
                sample,
                held,
                basis,
                at,
                refreshes: 0,
            });
        }
        // A cgroup with a figure missing is opened anew with each periodic reading: a
        // controller enabled for the unit since shows up within one refresh period.
        let incomplete = unit.held.as_ref().is_some_and(|h| !h.complete());
        if periodic && incomplete && unit.held.take().is_some() {
            *budget.fds = budget.fds.saturating_sub(CGROUP_FDS);
        }
        let sample = &unit.processes.as_ref().expect("listed above").sample;
        let resources = super::combine(sample, accounting, &mut unit.account);
        (Reading::Sampled(resources), vanished)
    }
}

impl Unit {
    fn fds(&self) -> u64 {
        let cgroup = if self.held.is_some() { CGROUP_FDS } else { 0 };
        cgroup + self.processes.as_ref().map_or(0, |p| p.held.len() as u64)
    }

    /// The reading of a unit whose cgroup could not be read: its files are closed.
    fn lost(&mut self, err: ProcfsError, budget: &mut Budget<'_>) -> (Reading, u64) {
        *budget.fds = budget.fds.saturating_sub(self.fds());
        self.held = None;
        self.processes = None;
        match err {
            ProcfsError::CgroupNotFound(_) => (Reading::NotFound, 0),
            err => (Reading::Failed(err), 0),
        }
    }
}

/// The open-file budget of one pass.
struct Budget<'a> {
    fds: &'a mut u64,
    max: u64,
}

impl Budget<'_> {
    fn room(&self, more: u64) -> bool {
        *self.fds + more <= self.max
    }
}

/// The unit's accounting through its held files (opening them within the budget), else by
/// path. A held cgroup that was removed is reopened once.
fn accounting(
    reader: &ProcfsReader,
    unit: &mut Unit,
    budget: &mut Budget<'_>,
    buf: &mut Vec<u8>,
) -> Result<Accounting, ProcfsError> {
    for _ in 0..2 {
        if unit.held.is_none() && budget.room(CGROUP_FDS) {
            unit.held = Some(reader.hold(&unit.control_group)?);
            *budget.fds += CGROUP_FDS;
        }
        let Some(files) = &unit.held else {
            // Over the budget: by path, and the cgroup's existence from its process list.
            reader.cgroup_dir(&unit.control_group)?;
            return reader.accounting(&unit.control_group);
        };
        match files.accounting(buf) {
            Ok(accounting) => return Ok(accounting),
            Err(HeldError::Gone) => {
                unit.held = None;
                *budget.fds = budget.fds.saturating_sub(CGROUP_FDS);
            }
            Err(HeldError::Read(err)) => return Err(err),
        }
    }
    Err(ProcfsError::CgroupNotFound(unit.control_group.clone()))
}

#[cfg(test)]
#[path = "units_tests.rs"]
mod tests;

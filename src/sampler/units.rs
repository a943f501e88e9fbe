//! What the sampler keeps per unit between passes, and one pass's reading of every unit, on
//! the blocking pool.
//!
//! Per unit: its cgroup's accounting files held open ([`HeldCgroup`]), the last listing of its
//! processes with each one's `stat` held open, what that listing was made on, and the procfs CPU
//! account. Each pass re-reads the held cgroup files (one `pread` per figure) and reads the
//! processes again only when [`processes_due`] says so (their held files, or a new listing of
//! the cgroup); where the cgroup has no CPU counter, the held `stat` files are re-read instead.
//! At most half of the open-file limit is held; beyond it, files are read by path each pass,
//! as before (`xray_warden_sampler_units_read_by_path` counts those units).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::sampling::{LastReading, ProcessBasis, ProcessRead, processes_due, spread};
use crate::domain::{Accounting, CpuAccount, Resources, TunnelId, UnitStatus};
use crate::procfs::{CgroupSample, HeldCgroup, HeldError, HeldProcess, ProcfsError, ProcfsReader};
use crate::state::HeldFiles;

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
    /// The status the unit was last read with (the snapshot's own): while a pass brings the
    /// same one, its control group has not moved. Its control group is the one the held files
    /// are of.
    status: Option<Arc<UnitStatus>>,
    /// The pass that last read the unit.
    read_in: u64,
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
    /// Units the last pass read by path, some of their files finding no room in the budget.
    by_path: u64,
    /// Passes so far.
    passes: u64,
    /// How old a listing of the processes may get.
    refresh: Duration,
    buf: Vec<u8>,
}

/// Files a held cgroup counts for: its directory, CPU, memory and tasks.
const CGROUP_FDS: u64 = 4;

impl Units {
    pub fn new(refresh: Duration) -> Self {
        // Half of the open-file limit; the rest is for connections, channels, procfs reads.
        // No limit at all: no budget either (`u64::MAX`; the limit's gauge is then left out).
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        Self::with_budget(refresh, limit.map_or(u64::MAX, |l| l / 2))
    }

    pub fn with_budget(refresh: Duration, max_fds: u64) -> Self {
        Self {
            by_id: HashMap::new(),
            max_fds,
            fds: 0,
            by_path: 0,
            passes: 0,
            refresh,
            buf: Vec::new(),
        }
    }

    /// Reads every target; blocking. Each reading comes with how many of the unit's processes
    /// vanished while being read.
    pub fn read_all(&mut self, reader: &ProcfsReader, targets: &[Target]) -> Vec<(Reading, u64)> {
        self.passes += 1;
        let mut pass = Pass {
            reader,
            budget: Budget {
                fds: &mut self.fds,
                max: self.max_fds,
            },
            buf: &mut self.buf,
            refresh: self.refresh,
            now: Instant::now(),
            number: self.passes,
            by_path: 0,
        };
        let readings = targets
            .iter()
            .map(|target| {
                let unit = match self.by_id.get_mut(&target.id) {
                    Some(unit) => unit,
                    None => self.by_id.entry(target.id.clone()).or_default(),
                };
                unit.read(&mut pass, target)
            })
            .collect();
        self.by_path = pass.by_path;
        readings
    }

    /// The files held, the budget, and the units the last pass read by path.
    pub fn files(&self) -> HeldFiles {
        HeldFiles {
            held: self.fds,
            limit: self.max_fds,
            units_by_path: self.by_path,
        }
    }

    /// After a pass: forgets the units it did not read that are no longer `known`, and closes
    /// the files of the others it did not read (stopped: their cgroup is gone; the CPU account
    /// stays). A unit the pass read is kept even if it went since; the next pass forgets it.
    /// Only the units not read are looked up.
    pub fn retain(&mut self, known: impl Fn(&TunnelId) -> bool) {
        let pass = self.passes;
        self.by_id
            .retain(|id, unit| unit.read_in == pass || known(id));
        for unit in self.by_id.values_mut() {
            if unit.read_in != pass {
                unit.held = None;
                unit.processes = None;
            }
        }
        self.fds = self.by_id.values().map(Unit::fds).sum();
    }
}

/// What one pass shares between its units' readings.
struct Pass<'a> {
    reader: &'a ProcfsReader,
    budget: Budget<'a>,
    buf: &'a mut Vec<u8>,
    /// `sampler.process_interval`.
    refresh: Duration,
    now: Instant,
    /// Which pass this is.
    number: u64,
    /// Units read by path so far.
    by_path: u64,
}

impl Unit {
    /// This pass's reading of the unit, and how many of its processes vanished while being
    /// read.
    fn read(&mut self, pass: &mut Pass<'_>, target: &Target) -> (Reading, u64) {
        self.read_in = pass.number;
        let same_status = self
            .status
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &target.status));
        if !same_status {
            if self.control_group() != target.status.control_group {
                pass.budget.release(self.fds());
                self.held = None;
                self.processes = None;
            }
            self.status = Some(Arc::clone(&target.status));
        }
        let accounting = match self.accounting(pass) {
            Ok(accounting) => accounting,
            Err(err) => return self.lost(err, &mut pass.budget),
        };
        let basis = ProcessBasis {
            main_pid: target.status.main_pid,
            tasks: accounting.tasks_current,
        };
        let last = self.processes.as_ref().map(|p| p.last(pass.now));
        let periodic = last.is_some_and(|l| l.age >= pass.refresh);
        let due = processes_due(last, basis, pass.refresh);
        let mut vanished = 0;
        if self.reread(pass, due, accounting.cpu_usage_nsec.is_none()) == ProcessRead::List {
            match self.list(pass, &target.id, basis) {
                Ok(gone) => vanished = gone,
                Err(err) => return self.lost(err, &mut pass.budget),
            }
        }
        if self.by_path() {
            pass.by_path += 1;
        }
        // A cgroup with a figure missing is opened anew with each periodic reading: a
        // controller enabled for the unit since shows up within one refresh period.
        if periodic && self.held.as_ref().is_some_and(|h| !h.complete()) {
            self.held = None;
            pass.budget.release(CGROUP_FDS);
        }
        let sample = &self.processes.as_ref().expect("listed above").sample;
        let resources = super::combine(sample, accounting, &mut self.account);
        (Reading::Sampled(resources), vanished)
    }

    /// Acts on `due` short of a listing: a refresh reads the held processes again, fds
    /// included; without the cgroup's CPU counter (`cpu_from_processes`) even a kept reading
    /// reads their `stat` files again, since CPU comes from them. Answers `List` when a held
    /// process has exited or none is held: the processes must then be listed anew.
    fn reread(
        &mut self,
        pass: &mut Pass<'_>,
        due: ProcessRead,
        cpu_from_processes: bool,
    ) -> ProcessRead {
        let refresh = match due {
            ProcessRead::Refresh => true,
            ProcessRead::Keep if cpu_from_processes => false,
            due => return due,
        };
        let processes = self.processes.as_mut().expect("read again: listed before");
        let (held, buf) = (&mut processes.held, &mut *pass.buf);
        let sample = if refresh {
            pass.reader.reread_processes(held, buf)
        } else {
            pass.reader.reread_stats(held, buf)
        };
        match sample {
            Some(sample) if !processes.held.is_empty() => {
                processes.sample = sample;
                if refresh {
                    processes.at = pass.now;
                    processes.refreshes += 1;
                }
                due
            }
            _ => ProcessRead::List,
        }
    }

    /// Lists the unit's processes anew (through its held directory, else by path) and holds
    /// each one's `stat` if the budget has room; how many vanished while being read.
    fn list(
        &mut self,
        pass: &mut Pass<'_>,
        id: &TunnelId,
        basis: ProcessBasis,
    ) -> Result<u64, ProcfsError> {
        let pids = match &self.held {
            Some(held) => held.pids(pass.buf).map_err(|e| match e {
                HeldError::Gone => ProcfsError::CgroupNotFound(self.control_group().to_owned()),
                HeldError::Read(e) => e,
            })?,
            None => pass.reader.cgroup_pids(self.control_group())?,
        };
        let listed_before = self.processes.is_some();
        let kept = self.processes.take().map(|p| p.held).unwrap_or_default();
        pass.budget.release(kept.len() as u64);
        let (sample, held) = if pass.budget.room(pids.len() as u64) {
            pass.reader.hold_processes(pids, kept)?
        } else {
            (pass.reader.sample_pids(pids)?, Vec::new())
        };
        pass.budget.take(held.len() as u64);
        // The first listing's age starts at a point of the period spread by id, so units seen
        // together do not all list again in one pass.
        let at = if listed_before {
            pass.now
        } else {
            let back = pass.refresh.mul_f64(spread(id.as_str()));
            pass.now.checked_sub(back).unwrap_or(pass.now)
        };
        let vanished = sample.vanished;
        self.processes = Some(Processes {
            sample,
            held,
            basis,
            at,
            refreshes: 0,
        });
        Ok(vanished)
    }

    /// The unit's accounting through its held files (opening them within the budget), else by
    /// path. A held cgroup that was removed is reopened once.
    fn accounting(&mut self, pass: &mut Pass<'_>) -> Result<Accounting, ProcfsError> {
        for _ in 0..2 {
            if self.held.is_none() && pass.budget.room(CGROUP_FDS) {
                self.held = Some(pass.reader.hold(self.control_group())?);
                pass.budget.take(CGROUP_FDS);
            }
            let Some(files) = &self.held else {
                // Over the budget: by path, and the cgroup's existence from its process list.
                pass.reader.cgroup_dir(self.control_group())?;
                return pass.reader.accounting(self.control_group());
            };
            match files.accounting(pass.buf) {
                Ok(accounting) => return Ok(accounting),
                Err(HeldError::Gone) => {
                    self.held = None;
                    pass.budget.release(CGROUP_FDS);
                }
                Err(HeldError::Read(err)) => return Err(err),
            }
        }
        Err(ProcfsError::CgroupNotFound(self.control_group().to_owned()))
    }

    /// The control group of the status the unit was last read with ("" before its first read).
    fn control_group(&self) -> &str {
        self.status.as_ref().map_or("", |s| &s.control_group)
    }

    fn fds(&self) -> u64 {
        let cgroup = if self.held.is_some() { CGROUP_FDS } else { 0 };
        cgroup + self.processes.as_ref().map_or(0, |p| p.held.len() as u64)
    }

    /// Whether some of the unit's files are read by path: its cgroup's, or some of its
    /// processes' (an empty cgroup has none to hold).
    fn by_path(&self) -> bool {
        self.held.is_none()
            || self
                .processes
                .as_ref()
                .is_some_and(|p| p.held.len() != p.sample.processes.len())
    }

    /// The reading of a unit whose cgroup could not be read: its files are closed.
    fn lost(&mut self, err: ProcfsError, budget: &mut Budget<'_>) -> (Reading, u64) {
        budget.release(self.fds());
        self.held = None;
        self.processes = None;
        match err {
            ProcfsError::CgroupNotFound(_) => (Reading::NotFound, 0),
            err => (Reading::Failed(err), 0),
        }
    }
}

impl Processes {
    fn last(&self, now: Instant) -> LastReading {
        LastReading {
            basis: self.basis,
            age: now.saturating_duration_since(self.at),
            refreshes: self.refreshes,
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

    fn take(&mut self, fds: u64) {
        *self.fds += fds;
    }

    fn release(&mut self, fds: u64) {
        *self.fds = self.fds.saturating_sub(fds);
    }
}

#[cfg(test)]
#[path = "units_tests.rs"]
mod tests;

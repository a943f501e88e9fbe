//! What the sampler keeps per unit between passes, and one pass's reading of every unit, on
//! the blocking pool.
//!
//! Per unit: its cgroup's accounting files held open ([`HeldCgroup`]), the last reading of its
//! processes and what that reading was made on, and the procfs CPU account. Each pass re-reads
//! the held files (one `pread` per figure) and reads the processes again only when
//! [`processes_due`] says so. Files are held for at most [`Units::max_held`] units, a share of
//! the open-file limit; units beyond it are read by path each pass, as before.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::domain::sampling::{ProcessBasis, processes_due, spread};
use crate::domain::{Accounting, CpuAccount, Resources, TunnelId};
use crate::procfs::{CgroupSample, HeldCgroup, HeldError, ProcfsError, ProcfsReader};

/// A unit to read this pass.
pub struct Target {
    pub id: TunnelId,
    pub unit: String,
    pub control_group: String,
    pub main_pid: u32,
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

/// The last reading of a unit's processes.
struct Processes {
    sample: CgroupSample,
    basis: ProcessBasis,
    at: Instant,
}

/// Every unit's kept state.
pub struct Units {
    pub by_id: HashMap<TunnelId, Unit>,
    /// At most this many units hold their files open.
    max_held: usize,
    held: usize,
    /// How old a reading of the processes may get.
    refresh: Duration,
    buf: Vec<u8>,
}

/// Files held per unit: CPU, memory and tasks.
const FILES_PER_UNIT: u64 = 3;

impl Units {
    pub fn new(refresh: Duration) -> Self {
        // Half of the open-file limit, the rest for connections, channels, procfs reads.
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let max_held = (limit / 2 / FILES_PER_UNIT).min(usize::MAX as u64) as usize;
        Self::with_budget(refresh, max_held)
    }

    pub fn with_budget(refresh: Duration, max_held: usize) -> Self {
        Self {
            by_id: HashMap::new(),
            max_held,
            held: 0,
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
        self.held = self.by_id.values().filter(|u| u.held.is_some()).count();
    }

    /// One unit's reading and how many of its processes vanished while being read.
    fn read(&mut self, reader: &ProcfsReader, target: &Target, now: Instant) -> (Reading, u64) {
        let unit = self.by_id.entry(target.id.clone()).or_default();
        if unit.control_group != target.control_group {
            if unit.held.take().is_some() {
                self.held -= 1;
            }
            unit.processes = None;
            unit.control_group.clone_from(&target.control_group);
        }
        let accounting =
            match accounting(reader, unit, &mut self.held, self.max_held, &mut self.buf) {
                Ok(accounting) => accounting,
                Err(ProcfsError::CgroupNotFound(_)) => {
                    unit.processes = None;
                    return (Reading::NotFound, 0);
                }
                Err(err) => return (Reading::Failed(err), 0),
            };
        let basis = ProcessBasis {
            main_pid: target.main_pid,
            tasks: accounting.tasks_current,
        };
        let last = unit
            .processes
            .as_ref()
            .map(|p| (p.basis, now.saturating_duration_since(p.at)));
        let mut vanished = 0;
        if processes_due(
            last,
            basis,
            accounting.cpu_usage_nsec.is_some(),
            self.refresh,
        ) {
            let pids = match &unit.held {
                Some(held) => held.pids().map_err(|e| match e {
                    HeldError::Gone => ProcfsError::CgroupNotFound(target.control_group.clone()),
                    HeldError::Read(e) => e,
                }),
                None => reader.cgroup_pids(&target.control_group),
            };
            let sample = match pids.and_then(|pids| reader.sample_pids(pids)) {
                Ok(sample) => sample,
                Err(ProcfsError::CgroupNotFound(_)) => {
                    unit.processes = None;
                    return (Reading::NotFound, 0);
                }
                Err(err) => return (Reading::Failed(err), 0),
            };
            vanished = sample.vanished;
            // The first reading's age starts at a point of the period spread by id, so units
            // seen together do not all refresh in one pass.
            let at = match unit.processes {
                Some(_) => now,
                None => {
                    let back = self.refresh.mul_f64(spread(target.id.as_str()));
                    now.checked_sub(back).unwrap_or(now)
                }
            };
            unit.processes = Some(Processes { sample, basis, at });
            // Files are opened anew with each periodic reading of the processes: a controller
            // enabled for the unit since shows up within one refresh.
            let periodic = last.is_some_and(|(_, age)| age >= self.refresh);
            if periodic && unit.held.take().is_some() {
                self.held -= 1;
            }
        }
        let sample = &unit.processes.as_ref().expect("read above").sample;
        let resources = super::combine(sample, accounting, &mut unit.account);
        (Reading::Sampled(resources), vanished)
    }
}

/// The unit's accounting through its held files (opening them within the budget), else by
/// path. A held cgroup that was removed is reopened once.
fn accounting(
    reader: &ProcfsReader,
    unit: &mut Unit,
    held: &mut usize,
    max_held: usize,
    buf: &mut Vec<u8>,
) -> Result<Accounting, ProcfsError> {
    for _ in 0..2 {
        if unit.held.is_none() && *held < max_held {
            unit.held = Some(reader.hold(&unit.control_group)?);
            *held += 1;
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
                *held -= 1;
            }
            Err(HeldError::Read(err)) => return Err(err),
        }
    }
    Err(ProcfsError::CgroupNotFound(unit.control_group.clone()))
}

//! Per-process resource usage of a unit's cgroup, read from cgroupfs and procfs.
//!
//! Reading is split from summing: [`ProcfsReader::sample_cgroup`] returns one
//! [`ProcessSample`] per live process; the sampler decides what to sum and how to account CPU.
//! Both roots are configurable so tests point them at fixture trees or at a sandbox.
//!
//! A process may exit between listing `cgroup.procs` and reading `/proc/<pid>`: that is normal
//! for a forking service, so such a process is skipped and counted in
//! [`CgroupSample::vanished`], never reported as an error.

use std::io;
use std::path::{Path, PathBuf};

use procfs::process::Stat;
use procfs::{FromRead, ProcError};

use crate::domain::ProcessKey;

mod accounting;
mod held;
pub use accounting::CgroupLayout;
pub use held::{HeldCgroup, HeldError, HeldProcess, StatFigures};

/// Errors that make a whole cgroup unreadable (one vanished process is not one of them).
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    #[error("cgroup {0:?} was not found under any known hierarchy")]
    CgroupNotFound(String),
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("malformed pid {value:?} in {path}")]
    BadPid { path: PathBuf, value: String },
    #[error("reading /proc/{pid}: {source}")]
    Process { pid: u32, source: ProcError },
}

/// What one process of a cgroup uses right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    pub key: ProcessKey,
    /// utime + stime, in seconds.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
}

/// Every process of one cgroup (sub-cgroups included) at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupSample {
    pub processes: Vec<ProcessSample>,
    /// Processes listed in `cgroup.procs` that were gone before they could be read.
    pub vanished: u64,
}

impl CgroupSample {
    pub fn rss_bytes(&self) -> u64 {
        self.processes.iter().map(|p| p.rss_bytes).sum()
    }

    pub fn threads(&self) -> u64 {
        self.processes.iter().map(|p| p.threads).sum()
    }

    pub fn open_fds(&self) -> u64 {
        self.processes.iter().map(|p| p.open_fds).sum()
    }
}

/// Reads procfs and cgroupfs below configurable roots.
#[derive(Debug, Clone)]
pub struct ProcfsReader {
    proc_root: PathBuf,
    cgroup_root: PathBuf,
    /// Found once: the root's layout does not change while the warden runs.
    layout: CgroupLayout,
    /// Whether the proc root is the kernel's procfs, whose `<pid>/fd` directory reports the
    /// count of open fds as its size (Linux >= 6.2; 0 before).
    fd_dir_counts: bool,
    ticks_per_second: f64,
    page_size: u64,
}

/// Where a unit's cgroup directory may live below the cgroup root: pure cgroup v2 mounts the
/// unified hierarchy at the root itself; hybrid hosts mount it at `unified/` and keep systemd's
/// own v1 hierarchy at `systemd/`.
const HIERARCHIES: [&str; 3] = ["", accounting::UNIFIED, "systemd"];

impl ProcfsReader {
    pub fn new(proc_root: impl Into<PathBuf>, cgroup_root: impl Into<PathBuf>) -> Self {
        Self::with_units(
            proc_root,
            cgroup_root,
            procfs::ticks_per_second(),
            procfs::page_size(),
        )
    }

    /// Like [`ProcfsReader::new`], with the kernel's clock tick and page size given explicitly
    /// (fixtures are written for 100 Hz and 4 KiB pages).
    pub fn with_units(
        proc_root: impl Into<PathBuf>,
        cgroup_root: impl Into<PathBuf>,
        ticks_per_second: u64,
        page_size: u64,
    ) -> Self {
        let (proc_root, cgroup_root) = (proc_root.into(), cgroup_root.into());
        let is_procfs = rustix::fs::statfs(&proc_root)
            .is_ok_and(|fs| fs.f_type == rustix::fs::PROC_SUPER_MAGIC);
        Self {
            fd_dir_counts: is_procfs,
            proc_root,
            layout: CgroupLayout::of(&cgroup_root),
            cgroup_root,
            ticks_per_second: ticks_per_second.max(1) as f64,
            page_size,
        }
    }

    /// The directory of `control_group` (systemd's `ControlGroup`, e.g.
    /// `/system.slice/xray-tunnel-a.service`) in the first hierarchy that has it.
    pub fn cgroup_dir(&self, control_group: &str) -> Result<PathBuf, ProcfsError> {
        let relative = control_group.trim_start_matches('/');
        self.hierarchies()
            .map(|h| self.cgroup_root.join(h).join(relative))
            .find(|dir| dir.join("cgroup.procs").is_file())
            .ok_or_else(|| ProcfsError::CgroupNotFound(control_group.to_owned()))
    }

    /// The cgroup v2 id of `control_group`: the inode of its directory in the unified tree,
    /// which is the id the kernel reports for the sockets its processes create (kernfs gives a
    /// cgroup directory its id as inode number on 64-bit hosts). `None` without a v2 tree (a
    /// host with v1 hierarchies only) or when the unit has no cgroup there.
    pub fn cgroup_id(&self, control_group: &str) -> Option<u64> {
        let dir = self.layout.unified_dir(&self.cgroup_root, control_group)?;
        let meta = std::fs::symlink_metadata(dir).ok()?;
        meta.is_dir()
            .then(|| std::os::unix::fs::MetadataExt::ino(&meta))
    }

    /// PIDs in `control_group` and every cgroup below it (a unit may delegate sub-cgroups).
    ///
    /// Reads `cgroup.procs` in each hierarchy that may hold the unit until one has it, rather
    /// than testing for the file first: one path walk less per unit and pass.
    pub fn cgroup_pids(&self, control_group: &str) -> Result<Vec<u32>, ProcfsError> {
        let relative = control_group.trim_start_matches('/');
        for hierarchy in self.hierarchies() {
            let mut pids = Vec::new();
            if collect_pids(&self.cgroup_root.join(hierarchy).join(relative), &mut pids)? {
                pids.sort_unstable();
                pids.dedup();
                return Ok(pids);
            }
        }
        Err(ProcfsError::CgroupNotFound(control_group.to_owned()))
    }

    /// The hierarchies that may hold a unit's cgroup: the root itself only when it is a cgroup
    /// v2 mount.
    fn hierarchies(&self) -> impl Iterator<Item = &'static str> + use<> {
        let unified = self.layout == CgroupLayout::Unified;
        HIERARCHIES
            .into_iter()
            .filter(move |h| unified || !h.is_empty())
    }

    /// Samples every process of `control_group`.
    pub fn sample_cgroup(&self, control_group: &str) -> Result<CgroupSample, ProcfsError> {
        self.sample_pids(self.cgroup_pids(control_group)?)
    }

    /// Samples each of `pids`; one that exited meanwhile is counted as vanished.
    pub fn sample_pids(&self, pids: Vec<u32>) -> Result<CgroupSample, ProcfsError> {
        let mut sample = CgroupSample::default();
        for pid in pids {
            match self.process(pid) {
                Ok(process) => sample.processes.push(process),
                Err(ProcfsError::Process { source, .. }) if vanished(&source) => {
                    sample.vanished += 1
                }
                Err(err) => return Err(err),
            }
        }
        Ok(sample)
    }

    /// Samples one process.
    pub fn process(&self, pid: u32) -> Result<ProcessSample, ProcfsError> {
        let wrap = |source| ProcfsError::Process { pid, source };
        // Straight from the file: `Process::new_with_root` would open the directory first.
        let path = self.proc_root.join(pid.to_string()).join("stat");
        let stat = Stat::from_file(path).map_err(wrap)?;
        let open_fds = self.count_fds(pid)?;
        let figures = StatFigures {
            utime: stat.utime,
            stime: stat.stime,
            num_threads: u64::try_from(stat.num_threads).unwrap_or(0),
            starttime: stat.starttime,
            rss: stat.rss,
        };
        Ok(self.sample_of(pid, &figures, open_fds))
    }

    /// A process's figures from its `stat`, with `open_fds` counted elsewhere.
    fn sample_of(&self, pid: u32, stat: &StatFigures, open_fds: u64) -> ProcessSample {
        ProcessSample {
            key: ProcessKey {
                pid,
                start_ticks: stat.starttime,
            },
            cpu_seconds: (stat.utime + stat.stime) as f64 / self.ticks_per_second,
            rss_bytes: stat.rss * self.page_size,
            threads: stat.num_threads,
            open_fds,
        }
    }
}

impl ProcfsReader {
    /// Counts the entries of `/proc/<pid>/fd`: one `stat` where the kernel's procfs reports the
    /// count as the directory's size, else by listing it.
    ///
    /// Not `procfs::Process::fd_count`: its fast path trusts `st_size` on any filesystem, so it
    /// answers 4096 on a fixture tree.
    fn count_fds(&self, pid: u32) -> Result<u64, ProcfsError> {
        let dir = self.proc_root.join(pid.to_string()).join("fd");
        if self.fd_dir_counts
            && let Ok(meta) = std::fs::metadata(&dir)
            && meta.len() > 0
        {
            return Ok(meta.len());
        }
        let entries = std::fs::read_dir(&dir).map_err(|err| {
            let source = if err.kind() == io::ErrorKind::NotFound {
                ProcError::NotFound(Some(dir.clone()))
            } else {
                ProcError::Io(err, Some(dir.clone()))
            };
            ProcfsError::Process { pid, source }
        })?;
        Ok(entries.flatten().count() as u64)
    }
}

/// Adds the PIDs of the cgroup `dir` and of every cgroup below it; `false` when `dir` has no
/// `cgroup.procs` (no such cgroup in this hierarchy, or removed while we walk, which is as
/// normal as an exited process).
pub(super) fn collect_pids(dir: &Path, pids: &mut Vec<u32>) -> Result<bool, ProcfsError> {
    let procs = dir.join("cgroup.procs");
    let text = match std::fs::read_to_string(&procs) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(ProcfsError::Io {
                path: procs,
                source,
            });
        }
    };
    pids.extend(parse_pids(&text).map_err(|value| ProcfsError::BadPid {
        path: procs.clone(),
        value,
    })?);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(source) => {
            return Err(ProcfsError::Io {
                path: dir.into(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&entry.path(), pids)?;
        }
    }
    Ok(true)
}

/// Parses the contents of a `cgroup.procs` file: one PID per line.
pub(super) fn parse_pids(text: &str) -> Result<Vec<u32>, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| line.parse().map_err(|_| line.to_owned()))
        .collect()
}

const ESRCH: i32 = 3;

/// Whether a procfs error means the process exited while we read it.
fn vanished(err: &ProcError) -> bool {
    match err {
        ProcError::NotFound(_) => true,
        // ESRCH: the kernel answers it for files of a task that is being reaped.
        ProcError::Io(io, _) => io.raw_os_error() == Some(ESRCH),
        _ => false,
    }
}

#[cfg(test)]
mod tests;

//! A unit's accounting read straight from its cgroup's files: the same numbers systemd publishes
//! as `CPUUsageNSec`, `MemoryCurrent` and `TasksCurrent` (systemd 252 reads exactly these
//! files), without a round trip through dbus-daemon and systemd for each of them.
//!
//! Where each lives depends on the host's layout, found once per reader:
//! - pure cgroup v2 (the root has `cgroup.controllers`): `cpu.stat` (`usage_usec`),
//!   `memory.current` and `pids.current` in the unit's own directory;
//! - cgroup v1 or hybrid: `cpuacct.usage`, `memory.usage_in_bytes` and `pids.current` in the
//!   unit's directory of each controller's hierarchy. Where the unit has no `cpuacct` directory
//!   (no `CPUAccounting=`, the default on such hosts) and the host is hybrid, CPU comes from
//!   the unit's `cpu.stat` in the `unified/` tree: cgroup v2 keeps that file in every cgroup,
//!   "whether the controller is enabled or not" (the kernel's cgroup-v2 documentation, `cpu.stat`),
//!   so the hybrid host's controller-less tree still counts each unit's CPU, exited processes
//!   included. systemd 252 does not read it there (it reports `CPUUsageNSec` only from
//!   `cpuacct`); the number is the cgroup's own all the same.
//!
//! A file that does not exist means the kernel keeps no such figure for the unit (the controller
//! is not enabled for it): `None`, as systemd reports "[not set]".

use std::io;
use std::path::{Path, PathBuf};

use super::{ProcfsError, ProcfsReader};
use crate::domain::Accounting;

/// How the cgroup root is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// One cgroup v2 hierarchy at the root.
    Unified,
    /// One v1 hierarchy per controller below the root (`memory/`, `pids/`, ...), maybe with
    /// `unified/` beside them (`hybrid`); `cpuacct` names the hierarchy that holds
    /// `cpuacct.usage`, if one is mounted.
    PerController {
        cpuacct: Option<&'static str>,
        hybrid: bool,
    },
}

/// Where a hybrid host mounts its cgroup v2 tree, below the cgroup root.
pub const UNIFIED: &str = "unified";

impl CgroupLayout {
    pub fn of(cgroup_root: &Path) -> Self {
        if cgroup_root.join("cgroup.controllers").is_file() {
            return CgroupLayout::Unified;
        }
        let cpuacct = CPUACCT
            .into_iter()
            .find(|h| cgroup_root.join(h).join("cpuacct.usage").is_file());
        let hybrid = cgroup_root
            .join(UNIFIED)
            .join("cgroup.controllers")
            .is_file();
        CgroupLayout::PerController { cpuacct, hybrid }
    }

    /// The directory of `control_group` in the cgroup v2 tree below `cgroup_root`: the root
    /// itself on a pure v2 host, `unified/` on a hybrid one; `None` with v1 hierarchies only.
    pub fn unified_dir(self, cgroup_root: &Path, control_group: &str) -> Option<PathBuf> {
        let relative = control_group.trim_start_matches('/');
        match self {
            CgroupLayout::Unified => Some(cgroup_root.join(relative)),
            CgroupLayout::PerController { hybrid: true, .. } => {
                Some(cgroup_root.join(UNIFIED).join(relative))
            }
            CgroupLayout::PerController { hybrid: false, .. } => None,
        }
    }

    /// Where the accounting of `control_group` (systemd's `ControlGroup`) lives below
    /// `cgroup_root`: the one naming rule that reading by path and holding the files share.
    pub fn files(self, cgroup_root: &Path, control_group: &str) -> AccountingFiles {
        let relative = control_group.trim_start_matches('/');
        match self {
            CgroupLayout::Unified => {
                let dir = cgroup_root.join(relative);
                AccountingFiles {
                    cpu: vec![(dir.join("cpu.stat"), CpuFile::Stat)],
                    memory: dir.join("memory.current"),
                    tasks: dir.join("pids.current"),
                }
            }
            CgroupLayout::PerController { cpuacct, .. } => {
                let file = |hierarchy: &str, name: &str| {
                    cgroup_root.join(hierarchy).join(relative).join(name)
                };
                // Without a `cpuacct` directory for the unit, a hybrid host's v2 tree still
                // counts its CPU (see the module's notes).
                let cpuacct = cpuacct.map(|h| (file(h, "cpuacct.usage"), CpuFile::UsageNsec));
                let unified = self
                    .unified_dir(cgroup_root, control_group)
                    .map(|dir| (dir.join("cpu.stat"), CpuFile::Stat));
                AccountingFiles {
                    cpu: cpuacct.into_iter().chain(unified).collect(),
                    memory: file("memory", "memory.usage_in_bytes"),
                    tasks: file("pids", "pids.current"),
                }
            }
        }
    }
}

/// A unit's accounting files, see [`CgroupLayout::files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountingFiles {
    /// The files that may hold its CPU time, the first that exists wins.
    pub cpu: Vec<(PathBuf, CpuFile)>,
    pub memory: PathBuf,
    pub tasks: PathBuf,
}

/// What a CPU file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuFile {
    /// cgroup v2 `cpu.stat`: `usage_usec` among other lines.
    Stat,
    /// cgroup v1 `cpuacct.usage`: nanoseconds.
    UsageNsec,
}

impl CpuFile {
    /// The CPU time in ns from the file's text.
    pub fn nsec(self, text: &str) -> Option<u64> {
        match self {
            CpuFile::Stat => usage_usec(text).map(|us| us.saturating_mul(1000)),
            CpuFile::UsageNsec => text.trim().parse().ok(),
        }
    }
}

/// The v1 hierarchies that may hold `cpuacct.usage`: its own, or shared with `cpu`.
const CPUACCT: [&str; 2] = ["cpuacct", "cpu,cpuacct"];

impl ProcfsReader {
    /// The accounting of `control_group` (systemd's `ControlGroup`), from the cgroup's files.
    pub fn accounting(&self, control_group: &str) -> Result<Accounting, ProcfsError> {
        let files = self.layout.files(&self.cgroup_root, control_group);
        let mut cpu_usage_nsec = None;
        for (path, kind) in &files.cpu {
            if let Some(text) = read(path)? {
                cpu_usage_nsec = kind.nsec(&text);
                break;
            }
        }
        Ok(Accounting {
            cpu_usage_nsec,
            memory_current: number(read(&files.memory)?),
            tasks_current: number(read(&files.tasks)?),
        })
    }
}

/// The file's text; `None` when it does not exist.
fn read(path: &Path) -> Result<Option<String>, ProcfsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ProcfsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A file holding one number (`memory.current`, `pids.current`, `cpuacct.usage`, ...).
fn number(text: Option<String>) -> Option<u64> {
    text?.trim().parse().ok()
}

/// `usage_usec` of a cgroup v2 `cpu.stat`.
pub fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_usec() {
        let stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(usage_usec(stat), Some(1500));
        assert_eq!(usage_usec("user_usec 1\n"), None);
        assert_eq!(number(Some("4096\n".into())), Some(4096));
        assert_eq!(number(Some("max\n".into())), None);
        assert_eq!(number(None), None);
    }
}

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
use std::path::Path;

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
}

/// The v1 hierarchies that may hold `cpuacct.usage`: its own, or shared with `cpu`.
const CPUACCT: [&str; 2] = ["cpuacct", "cpu,cpuacct"];

impl ProcfsReader {
    /// The accounting of `control_group` (systemd's `ControlGroup`), from the cgroup's files.
    pub fn accounting(&self, control_group: &str) -> Result<Accounting, ProcfsError> {
        let relative = control_group.trim_start_matches('/');
        let root = &self.cgroup_root;
        Ok(match self.layout {
            CgroupLayout::Unified => {
                let dir = root.join(relative);
                let cpu = read(&dir.join("cpu.stat"))?;
                Accounting {
                    cpu_usage_nsec: cpu
                        .as_deref()
                        .and_then(usage_usec)
                        .map(|us| us.saturating_mul(1000)),
                    memory_current: number(read(&dir.join("memory.current"))?),
                    tasks_current: number(read(&dir.join("pids.current"))?),
                }
            }
            CgroupLayout::PerController { cpuacct, hybrid } => {
                let file = |hierarchy: &str, name: &str| {
                    read(&root.join(hierarchy).join(relative).join(name))
                };
                let cpuacct = match cpuacct {
                    Some(hierarchy) => file(hierarchy, "cpuacct.usage")?,
                    None => None,
                };
                let cpu = match cpuacct {
                    Some(text) => number(Some(text)),
                    None if hybrid => file(UNIFIED, "cpu.stat")?
                        .as_deref()
                        .and_then(usage_usec)
                        .map(|us| us.saturating_mul(1000)),
                    None => None,
                };
                Accounting {
                    cpu_usage_nsec: cpu,
                    memory_current: number(file("memory", "memory.usage_in_bytes")?),
                    tasks_current: number(file("pids", "pids.current")?),
                }
            }
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

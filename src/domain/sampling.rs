//! When the sampler reads a unit's processes again, rather than reusing the last reading.
//!
//! Every pass reads the cgroup's accounting (CPU, memory, tasks): one `pread` per figure. The
//! processes (`cgroup.procs` of the unit and its sub-cgroups, then `stat` and the fd count of
//! each) cost several path walks each, and what they add — RSS, open fds, the process count —
//! moves slowly, so they are listed again only when something says they changed or when the last
//! listing is old. In between, where the cgroup keeps no CPU counter (cgroup v1 without
//! `CPUAccounting=`), each process's held `stat` is re-read for its CPU time.

use std::time::Duration;

/// What the last reading of a unit's processes was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessBasis {
    /// The unit's main PID then.
    pub main_pid: u32,
    /// The cgroup's task count then (`pids.current`), if the kernel keeps one.
    pub tasks: Option<u64>,
}

/// Whether a unit's processes must be read in this pass.
///
/// - no reading yet;
/// - the main PID or the cgroup's task count changed since (a restart, a fork, an exit);
/// - the last reading is `refresh` old.
pub fn processes_due(
    last: Option<(ProcessBasis, Duration)>,
    now: ProcessBasis,
    refresh: Duration,
) -> bool {
    let Some((basis, age)) = last else {
        return true;
    };
    basis != now || age >= refresh
}

/// Where in `[0, 1)` a unit's first refresh falls, from its id: refreshes of units first seen
/// together spread over one refresh period instead of landing in one pass.
pub fn spread(id: &str) -> f64 {
    // FNV-1a: stable across runs and builds, unlike the standard hasher.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % 1024) as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn basis(main_pid: u32, tasks: Option<u64>) -> ProcessBasis {
        ProcessBasis { main_pid, tasks }
    }

    #[test]
    fn first_sight_reads() {
        assert!(processes_due(None, basis(1, Some(1)), MIN));
    }

    #[test]
    fn an_unchanged_unit_waits_for_the_refresh() {
        let last = Some((basis(7, Some(3)), Duration::from_secs(59)));
        assert!(!processes_due(last, basis(7, Some(3)), MIN));
        let last = Some((basis(7, Some(3)), MIN));
        assert!(processes_due(last, basis(7, Some(3)), MIN));
    }

    #[test]
    fn a_fork_an_exit_or_a_restart_reads_at_once() {
        let last = Some((basis(7, Some(3)), Duration::from_secs(1)));
        assert!(processes_due(last, basis(7, Some(4)), MIN));
        assert!(processes_due(last, basis(7, Some(2)), MIN));
        assert!(processes_due(last, basis(8, Some(3)), MIN));
    }

    #[test]
    fn spread_is_stable_and_in_range() {
        let a = spread("b0001");
        assert_eq!(a, spread("b0001"));
        assert!((0.0..1.0).contains(&a));
        let distinct: std::collections::HashSet<u64> = (0..100)
            .map(|i| (spread(&format!("b{i:04}")) * 1024.0) as u64)
            .collect();
        assert!(distinct.len() > 60, "{}", distinct.len());
    }
}

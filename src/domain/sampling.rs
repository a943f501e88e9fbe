//! When the sampler reads a unit's processes again, rather than reusing the last reading.
//!
//! Every pass reads the cgroup's accounting (CPU, memory, tasks): one `pread` per figure. The
//! processes (`cgroup.procs` of the unit and its sub-cgroups, then `stat` and the fd count of
//! each) cost several syscalls each, and what they add — RSS, open fds, the process count —
//! moves slowly, so they are listed again only when something says they changed or when the last
//! listing is old. In between, where the cgroup keeps no CPU counter (cgroup v1 without
//! `CPUAccounting=`), each process's held `stat` is re-read for its CPU time.
//!
//! When the last reading is merely old and the cgroup keeps a task count, the set of processes
//! has not changed as far as anything can tell (a fork or an exit moves the count, a restart the
//! main PID): the held processes are only read again (RSS, threads, fds), and the cgroup is
//! listed again every [`LIST_EVERY`]th time. What only a listing sees is a process that replaced
//! another between two passes with the same thread count: up to `LIST_EVERY` periods late.

use std::time::Duration;

/// What the last reading of a unit's processes was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessBasis {
    /// The unit's main PID then.
    pub main_pid: u32,
    /// The cgroup's task count then (`pids.current`), if the kernel keeps one.
    pub tasks: Option<u64>,
}

/// The last reading of a unit's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastReading {
    pub basis: ProcessBasis,
    pub age: Duration,
    /// Readings of the held processes since the cgroup was last listed.
    pub refreshes: u32,
}

/// What a pass does with a unit's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessRead {
    /// Nothing: the last reading stands.
    Keep,
    /// Read each held process again (its `stat`, its fd count), without listing the cgroup.
    Refresh,
    /// List the cgroup's processes and read each.
    List,
}

/// A periodic reading lists the cgroup every this many times (once in 20 minutes at the
/// default `sampler.process_interval` of 300 s); the others read the held processes only.
pub const LIST_EVERY: u32 = 4;

/// What this pass does with a unit's processes:
///
/// - no reading yet, or the main PID or the cgroup's task count changed since (a restart, a
///   fork, an exit): list;
/// - the last reading is `refresh` old: read the held processes again, or list where the
///   cgroup keeps no task count (nothing would show a fork) and every [`LIST_EVERY`]th time;
/// - else keep.
pub fn processes_due(
    last: Option<LastReading>,
    now: ProcessBasis,
    refresh: Duration,
) -> ProcessRead {
    let Some(last) = last else {
        return ProcessRead::List;
    };
    if last.basis != now {
        ProcessRead::List
    } else if last.age < refresh {
        ProcessRead::Keep
    } else if now.tasks.is_some() && last.refreshes + 1 < LIST_EVERY {
        ProcessRead::Refresh
    } else {
        ProcessRead::List
    }
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

    fn last(basis: ProcessBasis, age: Duration, refreshes: u32) -> Option<LastReading> {
        Some(LastReading {
            basis,
            age,
            refreshes,
        })
    }

    #[test]
    fn first_sight_lists() {
        assert_eq!(
            processes_due(None, basis(1, Some(1)), MIN),
            ProcessRead::List
        );
    }

    #[test]
    fn an_unchanged_unit_waits_then_refreshes_and_lists_every_fourth_time() {
        let now = basis(7, Some(3));
        let young = last(now, Duration::from_secs(59), 0);
        assert_eq!(processes_due(young, now, MIN), ProcessRead::Keep);
        for refreshes in 0..LIST_EVERY - 1 {
            let old = last(now, MIN, refreshes);
            assert_eq!(processes_due(old, now, MIN), ProcessRead::Refresh);
        }
        let old = last(now, MIN, LIST_EVERY - 1);
        assert_eq!(processes_due(old, now, MIN), ProcessRead::List);
    }

    #[test]
    fn without_a_task_count_an_old_reading_lists() {
        let now = basis(7, None);
        assert_eq!(
            processes_due(last(now, MIN, 0), now, MIN),
            ProcessRead::List
        );
        let young = last(now, Duration::from_secs(1), 0);
        assert_eq!(processes_due(young, now, MIN), ProcessRead::Keep);
    }

    #[test]
    fn a_fork_an_exit_or_a_restart_lists_at_once() {
        let was = basis(7, Some(3));
        let recent = last(was, Duration::from_secs(1), 0);
        for now in [basis(7, Some(4)), basis(7, Some(2)), basis(8, Some(3))] {
            assert_eq!(
                processes_due(recent, now, MIN),
                ProcessRead::List,
                "{now:?}"
            );
        }
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

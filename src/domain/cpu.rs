//! A monotonic CPU-seconds counter built from per-process readings.

use std::collections::HashMap;

/// Turns per-process CPU readings into one counter that never goes down.
///
/// Summing utime+stime over a cgroup's live processes drops whenever a forked child exits,
/// which Prometheus would read as a counter reset and turn into a bogus spike in `rate()`.
/// This keeps the last reading of every process it has seen; when a process disappears its
/// last reading moves into `retired`, so the total only grows. (CPU a process burned between
/// its last reading and its exit is not seen: procfs offers no way to read it.)
#[derive(Debug, Clone, Default)]
pub struct CpuAccount {
    retired: f64,
    live: HashMap<ProcessKey, f64>,
}

/// A process is its PID plus its start time, so a recycled PID is a new process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    pub pid: u32,
    pub start_ticks: u64,
}

impl CpuAccount {
    /// Replaces the live set with `readings` (CPU seconds per process) and returns the total.
    pub fn update(&mut self, readings: impl IntoIterator<Item = (ProcessKey, f64)>) -> f64 {
        let next: HashMap<ProcessKey, f64> = readings.into_iter().collect();
        for (key, seconds) in &self.live {
            if !next.contains_key(key) {
                self.retired += seconds;
            }
        }
        self.live = next;
        self.total()
    }

    pub fn total(&self) -> f64 {
        self.retired + self.live.values().sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: u32, start_ticks: u64) -> ProcessKey {
        ProcessKey { pid, start_ticks }
    }

    #[test]
    fn exited_children_keep_their_cpu() {
        let mut acct = CpuAccount::default();
        assert_eq!(acct.update([(key(1, 1), 1.0), (key(2, 5), 2.0)]), 3.0);
        // Child 2 exited; the total must not drop.
        assert_eq!(acct.update([(key(1, 1), 1.5)]), 3.5);
    }

    #[test]
    fn recycled_pid_is_a_new_process() {
        let mut acct = CpuAccount::default();
        acct.update([(key(7, 100), 4.0)]);
        assert_eq!(acct.update([(key(7, 900), 0.5)]), 4.5);
    }

    #[test]
    fn empty_account_is_zero() {
        assert_eq!(CpuAccount::default().total(), 0.0);
    }
}

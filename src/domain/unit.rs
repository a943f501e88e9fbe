//! What systemd tells us about one tunnel unit, and how the warden interprets changes to it.

use std::fmt;
use std::path::Path;

use super::ConfigRef;

/// systemd's `ActiveState` of a unit.
///
/// `Other` keeps a value this version does not know (systemd adds states now and then, e.g.
/// `maintenance` and `refreshing` in newer releases) instead of failing the whole unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActiveState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    Other(String),
}

impl ActiveState {
    /// The states exported as one series each by `xray_tunnel_state`.
    pub const KNOWN: [ActiveState; 6] = [
        ActiveState::Active,
        ActiveState::Activating,
        ActiveState::Deactivating,
        ActiveState::Failed,
        ActiveState::Inactive,
        ActiveState::Reloading,
    ];

    pub fn parse(value: &str) -> Self {
        match value {
            "active" => Self::Active,
            "reloading" => Self::Reloading,
            "inactive" => Self::Inactive,
            "failed" => Self::Failed,
            "activating" => Self::Activating,
            "deactivating" => Self::Deactivating,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Active => "active",
            Self::Reloading => "reloading",
            Self::Inactive => "inactive",
            Self::Failed => "failed",
            Self::Activating => "activating",
            Self::Deactivating => "deactivating",
            Self::Other(other) => other,
        }
    }

    /// Whether the unit counts as up (`xray_tunnel_up`): only `active`.
    pub fn is_up(&self) -> bool {
        *self == Self::Active
    }

    /// Whether the unit may have processes worth sampling.
    pub fn may_have_processes(&self) -> bool {
        !matches!(self, Self::Inactive | Self::Failed)
    }
}

impl fmt::Display for ActiveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The unit and service properties the warden tracks, as systemd last reported them.
///
/// Timestamps are microseconds since the Unix epoch, 0 when systemd has none (its convention).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitStatus {
    pub description: String,
    /// `LoadState`: loaded, not-found, masked, error, ...
    pub load_state: String,
    pub active_state: Option<ActiveState>,
    pub sub_state: String,
    /// `UnitFileState`: enabled, disabled, static, ... (empty when there is no unit file)
    pub unit_file_state: String,
    pub fragment_path: String,
    pub main_pid: u32,
    /// systemd's `NRestarts`: automatic restarts since the last manual start or reset-failed.
    pub n_restarts: u32,
    /// `ExecMainStartTimestamp` of the current (or last) main process.
    pub exec_main_start_usec: u64,
    /// `ExecMainStatus`: exit status or signal number of the last main process.
    pub exec_main_status: i32,
    /// `ExecMainCode`: the `CLD_*` code (1 exited, 2 killed, 3 dumped), 0 if none exited yet.
    pub exec_main_code: i32,
    /// `Result`: success, exit-code, signal, core-dump, timeout, oom-kill, ...
    pub result: String,
    /// `ControlGroup`: the unit's cgroup path, empty while it has none.
    pub control_group: String,
    /// argv of the first `ExecStart=` command (where the core's `-config` is named).
    pub exec_start: Vec<String>,
    /// `StateChangeTimestamp`: when `ActiveState` last changed.
    pub state_change_usec: u64,
}

impl UnitStatus {
    /// The config file named on the command line: `-config F`, `-c F`, `--config F`,
    /// `-config=F` (the forms Xray and V2Ray accept), as written. For deciding anything about
    /// the file, use [`UnitStatus::config_ref`], which knows when the path cannot be trusted.
    pub fn config_arg(&self) -> Option<&str> {
        let mut args = self.exec_start.iter().skip(1);
        while let Some(arg) = args.next() {
            let flag = arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag);
            if !matches!(flag, "-config" | "--config" | "-c") {
                continue;
            }
            return match arg.split_once('=') {
                Some((_, value)) => Some(value),
                None => args.next().map(String::as_str),
            };
        }
        None
    }
}

impl UnitStatus {
    /// The config ExecStart runs, judged against `config_dir` (see [`ConfigRef::parse`]).
    pub fn config_ref(&self, config_dir: &Path) -> ConfigRef {
        ConfigRef::parse(&self.exec_start, config_dir)
    }

    pub fn active_state(&self) -> &ActiveState {
        self.active_state.as_ref().unwrap_or(&ActiveState::Inactive)
    }
}

/// A unit's cgroup accounting: the figures systemd publishes as `CPUUsageNSec`, `MemoryCurrent`
/// and `TasksCurrent`, whether asked over D-Bus or read from the cgroup's own files; `None`
/// where the kernel keeps no such figure for the unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accounting {
    pub cpu_usage_nsec: Option<u64>,
    pub memory_current: Option<u64>,
    pub tasks_current: Option<u64>,
}

/// Per-tunnel resource usage from one sampling pass.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Resources {
    /// Cumulative CPU seconds of the unit (a monotonic counter while the warden runs).
    pub cpu_seconds: f64,
    /// Where `cpu_seconds` came from: the cgroup's own counter (what systemd publishes as
    /// `CPUUsageNSec`, or a hybrid host's v2 `cpu.stat`), or procfs.
    pub cpu_from_cgroup: bool,
    /// Sum of the resident set sizes of every process in the unit's cgroup.
    pub rss_bytes: u64,
    /// systemd's `MemoryCurrent` (cgroup memory, page cache included), when set.
    pub memory_current_bytes: Option<u64>,
    /// Tasks (threads) of the unit: `TasksCurrent` when set, else counted in procfs.
    pub tasks: u64,
    /// Processes in the unit's cgroup.
    pub processes: u64,
    /// Open file descriptors summed over every process in the unit's cgroup.
    pub open_fds: u64,
}

/// Why the warden counted a restart in `xray_tunnel_observed_restarts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RestartReason {
    /// systemd restarted the service by its `Restart=` policy (`NRestarts` grew).
    Auto,
    /// A new main process started without `NRestarts` growing: `systemctl restart`, stop+start.
    Manual,
}

impl RestartReason {
    pub const ALL: [RestartReason; 2] = [RestartReason::Auto, RestartReason::Manual];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Manual => "manual",
        }
    }
}

/// Restarts the warden has observed for one tunnel since it started watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestartCounts {
    pub auto: u64,
    pub manual: u64,
}

impl RestartCounts {
    pub fn get(&self, reason: RestartReason) -> u64 {
        match reason {
            RestartReason::Auto => self.auto,
            RestartReason::Manual => self.manual,
        }
    }

    /// Counts the restarts that happened between two reads of the same unit.
    ///
    /// Signals may coalesce, so several automatic restarts can fall between two reads: the
    /// `NRestarts` delta counts them all. A new `ExecMainStartTimestamp` without `NRestarts`
    /// growing is a manual restart. `NRestarts` going down means systemd reset it, which only a
    /// manual start or `reset-failed` does, so it never counts as automatic restarts.
    pub fn observe(&mut self, prev: &UnitStatus, next: &UnitStatus) {
        let auto = next.n_restarts.saturating_sub(prev.n_restarts);
        self.auto += u64::from(auto);
        let new_run =
            prev.exec_main_start_usec != 0 && next.exec_main_start_usec > prev.exec_main_start_usec;
        if new_run && auto == 0 {
            self.manual += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(n_restarts: u32, start: u64) -> UnitStatus {
        UnitStatus {
            n_restarts,
            exec_main_start_usec: start,
            ..UnitStatus::default()
        }
    }

    #[test]
    fn finds_the_config_argument() {
        let argv = |args: &[&str]| UnitStatus {
            exec_start: args.iter().map(|a| (*a).to_owned()).collect(),
            ..UnitStatus::default()
        };
        assert_eq!(
            argv(&["/usr/bin/xray", "run", "-config", "/a.json"]).config_arg(),
            Some("/a.json")
        );
        assert_eq!(
            argv(&["/usr/bin/v2ray", "-c", "/b.json"]).config_arg(),
            Some("/b.json")
        );
        assert_eq!(
            argv(&["/usr/bin/xray", "run", "--config=/c.json"]).config_arg(),
            Some("/c.json")
        );
        assert_eq!(argv(&["/usr/bin/xray", "run"]).config_arg(), None);
        assert_eq!(argv(&["/usr/bin/xray", "-config"]).config_arg(), None);
        assert_eq!(argv(&[]).config_arg(), None);
    }

    #[test]
    fn active_state_round_trips() {
        for state in ActiveState::KNOWN {
            assert_eq!(ActiveState::parse(state.as_str()), state);
        }
        assert_eq!(
            ActiveState::parse("maintenance"),
            ActiveState::Other("maintenance".into())
        );
        assert!(ActiveState::Active.is_up());
        assert!(!ActiveState::Reloading.is_up());
        assert!(!ActiveState::Failed.may_have_processes());
        assert!(ActiveState::Deactivating.may_have_processes());
    }

    #[test]
    fn automatic_restarts_are_counted_by_delta() {
        let mut counts = RestartCounts::default();
        counts.observe(&status(2, 1_000), &status(5, 9_000));
        assert_eq!(counts, RestartCounts { auto: 3, manual: 0 });
    }

    #[test]
    fn new_run_without_nrestarts_is_manual() {
        let mut counts = RestartCounts::default();
        counts.observe(&status(2, 1_000), &status(0, 2_000));
        counts.observe(&status(0, 2_000), &status(0, 3_000));
        assert_eq!(counts, RestartCounts { auto: 0, manual: 2 });
    }

    #[test]
    fn property_churn_without_a_new_run_counts_nothing() {
        let mut counts = RestartCounts::default();
        counts.observe(&status(1, 1_000), &status(1, 1_000));
        counts.observe(&status(0, 0), &status(0, 5_000)); // first start ever seen
        assert_eq!(counts, RestartCounts::default());
        assert_eq!(counts.get(RestartReason::Manual), 0);
    }
}

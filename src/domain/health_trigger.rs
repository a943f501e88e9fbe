//! When a health pass must read everything again, and when the facts of the last full read
//! still hold: the rule of the change-driven health pass.
//!
//! A full read (every unit's fds, the socket owners, every process for stray cores, every config
//! and the config directory) costs milliseconds per hundred units. Between two passes most of
//! it cannot change unless one of a few cheap inputs does: a unit's state, main PID, restarts or
//! cgroup (the watcher's signals), a config file's inode, mtime or size, the config directory's
//! own stamp (a file added or removed), the table of listening sockets (a port taken or freed)
//! and the set of core processes (a stray core started or gone), kept by an incremental
//! [`Census`] of the PIDs. So each pass compares those [`HealthInputs`] with the last full read's
//! and reads again only when one differs, or when the safety net is due ([`SAFETY_NET_PASSES`]
//! intervals after the last full read), which catches whatever the inputs miss: a running
//! process that binds no new socket but changes what it holds, a process that execs a core
//! more than one interval after it was first seen, a PID counter that wrapped all the way
//! round between two passes.
//!
//! The trade-off of the safety net: with the inputs precise, a node whose units, configs,
//! sockets and cores do not change reads everything only every [`SAFETY_NET_PASSES`] intervals
//! (10 minutes at the default 15 s), so what only the safety net sees is seen up to that late.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{TunnelId, UnitStatus};

/// At most this many health intervals between two full reads: 10 minutes at the default 15 s.
pub const SAFETY_NET_PASSES: u32 = 40;

/// What stat says about a file: when any part changes, what was read from it is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileStamp {
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub size: u64,
    pub inode: u64,
}

/// The cheap inputs a full read depends on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HealthInputs {
    /// Each tunnel's status as the watcher last saw it, and its config's stamp (`None` when it
    /// is unknown or missing), in target order.
    /// The status is the snapshot's own, shared: an unchanged one compares by address.
    pub units: Vec<(TunnelId, Arc<UnitStatus>, Option<FileStamp>)>,
    /// The config directory's stamp; `None` when it cannot be read.
    pub config_dir: Option<FileStamp>,
    /// (port, socket inode) of every listening TCP socket; `None` when unreadable.
    pub listeners: Option<Vec<(u16, u64)>>,
    /// The PIDs of the core processes, ascending ([`Census::cores`]); `None` when the process
    /// list is unreadable.
    pub cores: Option<Vec<u32>>,
    /// [`Census::epoch`]: a new one whenever the census starts over (the PID counter wrapped,
    /// or its position is unknown), since a PID seen before may then be another process.
    pub census_epoch: u64,
}

/// Why a pass reads everything again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullRead {
    /// No full read yet.
    First,
    /// An input could not be read: nothing proves it unchanged.
    Unreadable,
    /// An input changed since the last full read.
    InputsChanged,
    /// [`SAFETY_NET_PASSES`] intervals since the last full read.
    SafetyNet,
}

impl FullRead {
    pub fn as_str(self) -> &'static str {
        match self {
            FullRead::First => "first",
            FullRead::Unreadable => "an input is unreadable",
            FullRead::InputsChanged => "inputs changed",
            FullRead::SafetyNet => "safety net",
        }
    }
}

/// Whether (and why) the pass must read everything again, given the last full read's inputs
/// and its age; `None` when its facts still hold.
pub fn full_read_due(
    last: Option<(&HealthInputs, Duration)>,
    now: &HealthInputs,
    interval: Duration,
) -> Option<FullRead> {
    let Some((before, since_full)) = last else {
        return Some(FullRead::First);
    };
    if now.config_dir.is_none() || now.listeners.is_none() || now.cores.is_none() {
        Some(FullRead::Unreadable)
    } else if before != now {
        Some(FullRead::InputsChanged)
    } else if safety_net_due(since_full, interval) {
        Some(FullRead::SafetyNet)
    } else {
        None
    }
}

/// Whether a full read made `since_full` ago is as old as the safety net allows.
pub fn safety_net_due(since_full: Duration, interval: Duration) -> bool {
    since_full >= interval * SAFETY_NET_PASSES
}

/// Which live processes are cores, known without reading every process every pass: each pass
/// lists the PIDs, and only a PID not seen before is read (its comm and exe), plus once more on
/// the pass after, since a process first seen between its fork and its exec (systemd's
/// `(xray)` child, a shell about to `exec xray`) becomes a core only then. A PID names the same
/// process for as long as it is listed, unless the kernel's PID counter wrapped: then
/// everything is read again under a new [`epoch`](Census::epoch).
#[derive(Debug, Clone, Default)]
pub struct Census {
    last_pid: Option<u32>,
    seen: HashMap<u32, Seen>,
    epoch: u64,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    core: bool,
    /// Read on two passes in a row: its comm is what it will be.
    settled: bool,
}

impl Census {
    /// Starts a pass over `pids` (every PID listed now, ascending) and `last_pid` (the last PID
    /// the kernel handed out, `None` when unknown): forgets the PIDs no longer listed and
    /// answers the PIDs to read and [`record`](Census::record). When `last_pid` went down (the
    /// counter wrapped) or is unknown, forgets every PID and starts a new epoch.
    pub fn refresh(&mut self, pids: &[u32], last_pid: Option<u32>) -> Vec<u32> {
        debug_assert!(pids.is_sorted(), "PIDs must be ascending");
        let wrapped = match (self.last_pid, last_pid) {
            (_, None) => true,
            (Some(before), Some(now)) => now < before,
            (None, Some(_)) => false,
        };
        if wrapped {
            self.epoch += 1;
            self.seen.clear();
        }
        self.last_pid = last_pid;
        self.seen.retain(|pid, _| pids.binary_search(pid).is_ok());
        pids.iter()
            .copied()
            .filter(|pid| self.seen.get(pid).is_none_or(|s| !s.settled))
            .collect()
    }

    /// Records what reading `pid` found: whether it is a core.
    pub fn record(&mut self, pid: u32, core: bool) {
        let settled = self.seen.contains_key(&pid);
        self.seen.insert(pid, Seen { core, settled });
    }

    /// Forgets every PID (each is read again next pass) in the same epoch: the safety net's
    /// rescan, which catches a settled process that exec'd a core.
    pub fn forget(&mut self) {
        self.seen.clear();
    }

    /// The PIDs of the cores, ascending.
    pub fn cores(&self) -> Vec<u32> {
        let mut cores: Vec<u32> = self
            .seen
            .iter()
            .filter(|(_, s)| s.core)
            .map(|(pid, _)| *pid)
            .collect();
        cores.sort_unstable();
        cores
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> HealthInputs {
        let stamp = FileStamp {
            mtime_sec: 1,
            mtime_nsec: 2,
            size: 3,
            inode: 4,
        };
        HealthInputs {
            units: vec![(
                TunnelId::new("a").unwrap(),
                Arc::new(UnitStatus::default()),
                Some(stamp),
            )],
            config_dir: Some(stamp),
            listeners: Some(vec![(443, 99)]),
            cores: Some(vec![1000]),
            census_epoch: 1,
        }
    }

    #[test]
    fn reads_again_only_on_change_or_when_the_net_is_due() {
        let (before, every) = (inputs(), Duration::from_secs(15));
        let due = |last: Option<(&HealthInputs, Duration)>, now: &HealthInputs| {
            full_read_due(last, now, every)
        };
        assert_eq!(due(None, &before), Some(FullRead::First));
        assert_eq!(due(Some((&before, every * 39)), &inputs()), None);
        let net = due(Some((&before, every * 40)), &inputs());
        assert_eq!(net, Some(FullRead::SafetyNet));

        let mut config_edited = inputs();
        config_edited.units[0].2.as_mut().unwrap().mtime_nsec += 1;
        let mut port_taken = inputs();
        port_taken.listeners.as_mut().unwrap().push((8443, 100));
        let mut core_started = inputs();
        core_started.cores.as_mut().unwrap().push(1001);
        let mut core_exited = inputs();
        core_exited.cores = Some(Vec::new());
        let mut census_restarted = inputs();
        census_restarted.census_epoch += 1;
        let mut main_pid_changed = inputs();
        Arc::make_mut(&mut main_pid_changed.units[0].1).main_pid = 77;
        let mut unreadable = inputs();
        unreadable.listeners = None;
        let changes = [
            config_edited,
            port_taken,
            core_started,
            core_exited,
            census_restarted,
            main_pid_changed,
        ];
        for now in changes {
            let why = due(Some((&before, every)), &now);
            assert_eq!(why, Some(FullRead::InputsChanged), "{now:?}");
        }
        let why = due(Some((&unreadable, every)), &unreadable);
        assert_eq!(why, Some(FullRead::Unreadable));
        let mut no_processes = inputs();
        no_processes.cores = None;
        let why = due(Some((&no_processes, every)), &no_processes);
        assert_eq!(why, Some(FullRead::Unreadable));
    }

    #[test]
    fn the_safety_net_is_ten_minutes_at_the_default_interval() {
        let every = Duration::from_secs(15);
        assert!(!safety_net_due(Duration::from_secs(599), every));
        assert!(safety_net_due(Duration::from_secs(600), every));
    }

    /// Reads what `refresh` asks for, with `cores` as the processes that are cores now.
    fn pass(census: &mut Census, pids: &[u32], last: u32, cores: &[u32]) -> Vec<u32> {
        let read = census.refresh(pids, Some(last));
        for pid in &read {
            census.record(*pid, cores.contains(pid));
        }
        read
    }

    #[test]
    fn only_new_pids_are_read_and_each_once_more_after() {
        let mut c = Census::default();
        assert_eq!(pass(&mut c, &[1, 5, 9], 9, &[5]), vec![1, 5, 9]);
        assert_eq!(pass(&mut c, &[1, 5, 9], 9, &[5]), vec![1, 5, 9]);
        assert_eq!(pass(&mut c, &[1, 5, 9], 9, &[5]), Vec::<u32>::new());
        assert_eq!(c.cores(), vec![5]);
        assert_eq!(pass(&mut c, &[1, 5, 9, 12], 12, &[5]), vec![12]);
        assert_eq!(pass(&mut c, &[1, 5, 9, 12], 12, &[5]), vec![12]);
        assert_eq!(pass(&mut c, &[1, 5, 9, 12], 12, &[5]), Vec::<u32>::new());
        assert_eq!(c.epoch(), 0);
    }

    #[test]
    fn a_new_core_appears_and_an_exited_one_disappears() {
        let mut c = Census::default();
        pass(&mut c, &[1, 5], 5, &[5]);
        pass(&mut c, &[1, 5], 5, &[5]);
        assert_eq!(c.cores(), vec![5]);
        pass(&mut c, &[1, 5, 20], 20, &[5, 20]);
        assert_eq!(c.cores(), vec![5, 20], "a new core is in the set at once");
        pass(&mut c, &[1, 20], 21, &[20]);
        assert_eq!(c.cores(), vec![20], "an exited core leaves the set");
        assert_eq!(c.epoch(), 0);
    }

    #[test]
    fn a_process_that_execs_a_core_after_its_first_pass_is_seen_on_the_next() {
        let mut c = Census::default();
        pass(&mut c, &[1], 1, &[]);
        pass(&mut c, &[1], 1, &[]);
        // Forked (not a core yet) when first listed, exec'd the core before the next pass.
        pass(&mut c, &[1, 30], 30, &[]);
        assert!(c.cores().is_empty());
        pass(&mut c, &[1, 30], 30, &[30]);
        assert_eq!(c.cores(), vec![30]);
        // Settled after that: a later exec in place is the safety net's, which forgets.
        assert!(pass(&mut c, &[1, 30], 30, &[]).is_empty());
        c.forget();
        assert_eq!(pass(&mut c, &[1, 30], 30, &[]), vec![1, 30]);
        assert!(c.cores().is_empty());
        assert_eq!(c.epoch(), 0, "the safety net's rescan is no new epoch");
    }

    #[test]
    fn a_wrapped_pid_counter_starts_a_new_epoch_and_reads_everything() {
        let mut c = Census::default();
        pass(&mut c, &[1, 700], 700, &[700]);
        pass(&mut c, &[1, 700], 700, &[700]);
        let epoch = c.epoch();
        // 700 exited, the counter wrapped and 700 now belongs to a process that is no core.
        let read = pass(&mut c, &[1, 3, 700], 3, &[]);
        assert_eq!(read, vec![1, 3, 700], "everything is read again");
        assert_eq!(c.epoch(), epoch + 1);
        assert!(c.cores().is_empty());
        // An unknown counter proves nothing either.
        let read = c.refresh(&[1, 3, 700], None);
        assert_eq!(read, vec![1, 3, 700]);
        assert_eq!(c.epoch(), epoch + 2);
    }
}

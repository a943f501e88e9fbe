//! When a health pass must read everything again, and when the facts of the last full read
//! still hold: the rule of the change-driven health pass.
//!
//! A full read (every unit's fds, the socket owners, every process for stray cores, every config
//! and the config directory) costs milliseconds per hundred units. Between two passes most of
//! it cannot change unless one of a few cheap inputs does: a unit's state, main PID, restarts or
//! cgroup (the watcher's signals), a config file's inode, mtime or size, the config directory's
//! own stamp (a file added or removed), the table of listening sockets (a port taken or freed)
//! and the newest PID the kernel handed out (a process started, e.g. a stray core). So each pass
//! compares those [`HealthInputs`] with the last full read's and reads again only when one
//! differs, or when the safety net is due ([`SAFETY_NET_PASSES`] intervals after the last full
//! read), which catches whatever the inputs miss (a running process that binds no new socket
//! but changes what it holds, a core exec'd in place).

use std::time::Duration;

use super::{TunnelId, UnitStatus};

/// At most this many health intervals between two full reads.
pub const SAFETY_NET_PASSES: u32 = 8;

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
    pub units: Vec<(TunnelId, UnitStatus, Option<FileStamp>)>,
    /// The config directory's stamp; `None` when it cannot be read.
    pub config_dir: Option<FileStamp>,
    /// (port, socket inode) of every listening TCP socket; `None` when unreadable.
    pub listeners: Option<Vec<(u16, u64)>>,
    /// The last PID allocated in the warden's PID namespace (`/proc/loadavg`); `None` when
    /// unreadable.
    pub last_pid: Option<u32>,
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
    if now.config_dir.is_none() || now.listeners.is_none() || now.last_pid.is_none() {
        Some(FullRead::Unreadable)
    } else if before != now {
        Some(FullRead::InputsChanged)
    } else if since_full >= interval * SAFETY_NET_PASSES {
        Some(FullRead::SafetyNet)
    } else {
        None
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
                UnitStatus::default(),
                Some(stamp),
            )],
            config_dir: Some(stamp),
            listeners: Some(vec![(443, 99)]),
            last_pid: Some(1000),
        }
    }

    #[test]
    fn reads_again_only_on_change_or_when_the_net_is_due() {
        let (before, every) = (inputs(), Duration::from_secs(15));
        let due = |last: Option<(&HealthInputs, Duration)>, now: &HealthInputs| {
            full_read_due(last, now, every)
        };
        assert_eq!(due(None, &before), Some(FullRead::First));
        assert_eq!(due(Some((&before, every * 7)), &inputs()), None);
        let net = due(Some((&before, every * 8)), &inputs());
        assert_eq!(net, Some(FullRead::SafetyNet));

        let mut config_edited = inputs();
        config_edited.units[0].2.as_mut().unwrap().mtime_nsec += 1;
        let mut port_taken = inputs();
        port_taken.listeners.as_mut().unwrap().push((8443, 100));
        let mut process_started = inputs();
        process_started.last_pid = Some(1001);
        let mut main_pid_changed = inputs();
        main_pid_changed.units[0].1.main_pid = 77;
        let mut unreadable = inputs();
        unreadable.listeners = None;
        for now in [config_edited, port_taken, process_started, main_pid_changed] {
            let why = due(Some((&before, every)), &now);
            assert_eq!(why, Some(FullRead::InputsChanged), "{now:?}");
        }
        let why = due(Some((&unreadable, every)), &unreadable);
        assert_eq!(why, Some(FullRead::Unreadable));
    }
}

//! The port-ownership rule: every inbound port of a tunnel listens, and only its own processes
//! hold it.
//!
//! Facts come in already read (listening sockets by inode, the unit's socket inodes, the owners
//! of other inodes); this file only decides.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::domain::Check;

/// The name of the check.
pub const PORTS_OWNED: &str = "ports_owned";

/// A TCP socket in state LISTEN (`0A` in /proc/net/tcp and tcp6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Listener {
    pub port: u16,
    pub inode: u64,
    /// The cgroup v2 id of the cgroup the socket was created in, as the kernel's socket
    /// diagnostics report it (Linux >= 5.7); `None` when read from /proc/net/tcp, which does
    /// not say.
    pub cgroup: Option<u64>,
}

impl Listener {
    /// A listener whose cgroup is not known.
    pub fn new(port: u16, inode: u64) -> Self {
        Self {
            port,
            inode,
            cgroup: None,
        }
    }
}

/// A process holding a socket, for the message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
}

/// Who holds one configured port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortHolders {
    /// One of the unit's processes listens on it.
    pub unit: bool,
    /// Processes outside the unit listening on it.
    pub others: BTreeSet<Owner>,
    /// Listening sockets that no visible process holds (another PID namespace, or the process
    /// exited between the reads).
    pub unknown: usize,
}

/// Sorts the listeners of each port in `ports` into the unit's, other processes' and unknown.
pub fn holders(
    ports: &[u16],
    listeners: &[Listener],
    unit_inodes: &HashSet<u64>,
    owners: &HashMap<u64, Owner>,
) -> Vec<(u16, PortHolders)> {
    let wanted: BTreeSet<u16> = ports.iter().copied().collect();
    wanted
        .into_iter()
        .map(|port| {
            let mut held = PortHolders::default();
            for l in listeners.iter().filter(|l| l.port == port) {
                if unit_inodes.contains(&l.inode) {
                    held.unit = true;
                } else if let Some(owner) = owners.get(&l.inode) {
                    held.others.insert(owner.clone());
                } else {
                    held.unknown += 1;
                }
            }
            (port, held)
        })
        .collect()
}

/// The unit's own sockets among the listeners on `ports` when their cgroups settle it, without
/// reading any process's fds: `Some` when no listener is on those ports, or when every one of
/// them was created in the unit's own cgroup (`unit_cgroup`, asked only then). `None` when one
/// of them was created elsewhere, or a cgroup is unknown: then only the fds of the unit's
/// processes tell whether it holds the socket (socket activation hands a unit sockets made in
/// systemd's cgroup; a unit may run its processes in sub-cgroups it was delegated).
pub fn own_by_cgroup(
    ports: &[u16],
    listeners: &[Listener],
    unit_cgroup: impl FnOnce() -> Option<u64>,
) -> Option<HashSet<u64>> {
    let mut on_ports = listeners.iter().filter(|l| ports.contains(&l.port));
    let Some(first) = on_ports.next() else {
        return Some(HashSet::new());
    };
    let unit = unit_cgroup()?;
    let mine = |l: &Listener| (l.cgroup == Some(unit)).then_some(l.inode);
    std::iter::once(first).chain(on_ports).map(mine).collect()
}

/// Inodes of listeners on `ports` that the unit does not hold: the ones whose owners must be
/// looked up (a scan of every process's fds, so only done when there are any).
pub fn foreign_inodes(
    ports: &[u16],
    listeners: &[Listener],
    unit_inodes: &HashSet<u64>,
) -> HashSet<u64> {
    listeners
        .iter()
        .filter(|l| ports.contains(&l.port) && !unit_inodes.contains(&l.inode))
        .map(|l| l.inode)
        .collect()
}

/// The `ports_owned` verdict. A port held by another process is a conflict even while the unit
/// is down (it is often why the core cannot start); otherwise a unit that is not active fails
/// with "not running", and an active one fails for every port nobody (visible) listens on.
pub fn check(active: bool, held: &[(u16, PortHolders)]) -> Check {
    if held.is_empty() {
        return verdict(true, "no inbound ports configured".into());
    }
    let mut problems = Vec::new();
    for (port, h) in held {
        for o in &h.others {
            problems.push(format!("port {port} held by pid {} ({})", o.pid, o.comm));
        }
    }
    if !active {
        problems.insert(0, "not running".to_owned());
        return verdict(false, problems.join("; "));
    }
    for (port, h) in held.iter().filter(|(_, h)| !h.unit && h.others.is_empty()) {
        problems.push(match h.unknown {
            0 => format!("port {port}: nobody listens"),
            _ => format!("port {port} held by a process outside the unit that is not visible"),
        });
    }
    if problems.is_empty() {
        let list: Vec<String> = held.iter().map(|(p, _)| p.to_string()).collect();
        return verdict(true, format!("listening on {}", list.join(", ")));
    }
    verdict(false, problems.join("; "))
}

fn verdict(ok: bool, detail: String) -> Check {
    Check {
        name: PORTS_OWNED,
        ok,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pid: u32, comm: &str) -> Owner {
        Owner {
            pid,
            comm: comm.into(),
        }
    }

    fn listeners() -> Vec<Listener> {
        // 2 is the tcp6 twin of the same listener as 1.
        [(443, 1), (443, 2), (8443, 3), (80, 4), (9000, 5)]
            .map(|(port, inode)| Listener::new(port, inode))
            .to_vec()
    }

    fn judge(active: bool, ports: &[u16], unit: &[u64]) -> Check {
        let unit: HashSet<u64> = unit.iter().copied().collect();
        let owners = HashMap::from([(3, owner(812, "nginx")), (4, owner(9, "perl"))]);
        check(active, &holders(ports, &listeners(), &unit, &owners))
    }

    #[test]
    fn ports_held_by_the_unit_pass() {
        let c = judge(true, &[443, 443], &[1, 2]);
        assert!(c.ok, "{c:?}");
        assert_eq!(c.detail, "listening on 443");
        assert_eq!(c.name, "ports_owned");
    }

    #[test]
    fn a_port_held_by_another_process_is_a_conflict_naming_it() {
        let c = judge(true, &[443, 8443], &[1, 2]);
        assert!(!c.ok);
        assert_eq!(c.detail, "port 8443 held by pid 812 (nginx)");
    }

    #[test]
    fn sharing_a_port_with_another_process_is_a_conflict_too() {
        let c = judge(true, &[443, 80], &[1, 2, 4]);
        assert!(c.ok, "the unit holds both: {c:?}");
        let unit: HashSet<u64> = [1].into();
        let owners = HashMap::from([(2, owner(7, "xray"))]);
        let c = check(true, &holders(&[443], &listeners(), &unit, &owners));
        assert_eq!(c.detail, "port 443 held by pid 7 (xray)");
    }

    #[test]
    fn a_port_nobody_listens_on_fails() {
        let c = judge(true, &[443, 1234], &[1]);
        assert!(!c.ok);
        assert_eq!(c.detail, "port 1234: nobody listens");
    }

    #[test]
    fn an_invisible_holder_fails_without_a_pid() {
        let c = judge(true, &[9000], &[]);
        assert!(!c.ok);
        assert!(c.detail.contains("not visible"), "{}", c.detail);
    }

    #[test]
    fn a_stopped_unit_is_not_running_and_still_shows_conflicts() {
        let c = judge(false, &[443], &[]);
        assert_eq!((c.ok, c.detail.as_str()), (false, "not running"));
        let c = judge(false, &[443, 8443, 80], &[]);
        assert_eq!(
            c.detail,
            "not running; port 80 held by pid 9 (perl); port 8443 held by pid 812 (nginx)"
        );
    }

    #[test]
    fn no_ports_is_fine() {
        assert!(judge(true, &[], &[]).ok);
        assert!(judge(false, &[], &[]).ok);
    }

    #[test]
    fn the_units_own_cgroup_settles_its_ports_without_its_fds() {
        let at = |port, inode, cgroup| Listener {
            port,
            inode,
            cgroup,
        };
        let listeners = [
            at(443, 1, Some(70)),
            at(443, 2, Some(70)),
            at(8443, 3, Some(70)),
            at(8443, 4, Some(12)),
            at(80, 5, None),
        ];
        let unit = || Some(70);
        let settled = own_by_cgroup(&[443], &listeners, unit);
        assert_eq!(settled, Some(HashSet::from([1, 2])));
        // A listener made in another cgroup, or one whose cgroup is unknown: the fds decide.
        assert_eq!(own_by_cgroup(&[443, 8443], &listeners, unit), None);
        assert_eq!(own_by_cgroup(&[80], &listeners, unit), None);
        // The unit's cgroup unknown (no cgroup v2 tree): the fds decide too.
        assert_eq!(own_by_cgroup(&[443], &listeners, || None), None);
        // Nobody listens on the ports: nothing to read, and the unit's cgroup is not asked.
        let never = || -> Option<u64> { panic!("asked for the unit's cgroup") };
        assert_eq!(
            own_by_cgroup(&[9000], &listeners, never),
            Some(HashSet::new())
        );
        assert_eq!(own_by_cgroup(&[], &listeners, never), Some(HashSet::new()));
    }

    #[test]
    fn only_foreign_inodes_of_wanted_ports_are_looked_up() {
        let unit: HashSet<u64> = [1].into();
        let foreign = foreign_inodes(&[443, 8443], &listeners(), &unit);
        assert_eq!(foreign, HashSet::from([2, 3]));
    }
}

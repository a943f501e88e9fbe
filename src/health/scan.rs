//! Reading the process table for the health checks: listening TCP sockets, which process holds
//! which socket, and the core processes (whether one is a stray is the domain's rule).
//!
//! Every path is below a configurable proc root (`sampler.proc_root`), so tests point it at
//! fixture trees; the listening sockets come from netlink when that root shows the warden's own
//! network namespace ([`netdiag`]). Processes come and go while we read: one that vanishes is skipped, never an
//! error. Parsing is split from reading and tested on its own.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use procfs::process::Process;
use tracing::warn;

use super::netdiag::{self, ListenerSource};
use super::ports::{Listener, Owner};
use crate::domain::ProcessKey;
use crate::domain::orphans::{self, CoreProcess};

/// `st` of a listening socket in /proc/net/tcp and tcp6.
const TCP_LISTEN: &str = "0A";

/// Set once netlink failed and the files were read instead, to warn once per process.
static NETLINK_FAILED: AtomicBool = AtomicBool::new(false);

/// Reads one proc root.
#[derive(Debug, Clone)]
pub struct ProcScan {
    root: PathBuf,
    source: ListenerSource,
}

impl ProcScan {
    /// Reads `proc_root`, choosing where the listening sockets come from
    /// ([`ListenerSource::for_proc_root`]).
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        let root = proc_root.into();
        Self {
            source: ListenerSource::for_proc_root(&root),
            root,
        }
    }

    /// Reads `proc_root`, the listening sockets from its files whatever it shows.
    pub fn files_only(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            root: proc_root.into(),
            source: ListenerSource::Files,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn listener_source(&self) -> ListenerSource {
        self.source
    }

    /// Every listening TCP socket of the proc root's network namespace, IPv4 and IPv6: by
    /// netlink when the source is [`ListenerSource::Netlink`] (the files when it fails, with
    /// one warning per process), else from `net/tcp` and `net/tcp6`.
    pub fn listeners(&self) -> io::Result<Vec<Listener>> {
        if self.source == ListenerSource::Netlink {
            match netdiag::listeners() {
                Ok(found) => return Ok(found),
                Err(e) => {
                    if !NETLINK_FAILED.swap(true, Ordering::Relaxed) {
                        warn!(error = %e, "sock_diag netlink unusable: reading /proc/net/tcp instead (slower)");
                    }
                }
            }
        }
        self.listener_files()
    }

    /// The LISTEN sockets of `net/tcp` and `net/tcp6`. A missing `tcp6` (IPv6 disabled) is no
    /// error.
    fn listener_files(&self) -> io::Result<Vec<Listener>> {
        let mut all = parse_net_tcp(&fs::read_to_string(self.root.join("net/tcp"))?);
        match fs::read_to_string(self.root.join("net/tcp6")) {
            Ok(text) => all.extend(parse_net_tcp(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(all)
    }

    /// Inodes of the sockets `pid` holds open; empty if it is gone.
    pub fn socket_inodes(&self, pid: u32) -> HashSet<u64> {
        let Ok(entries) = fs::read_dir(self.root.join(pid.to_string()).join("fd")) else {
            return HashSet::new();
        };
        entries
            .flatten()
            .filter_map(|e| fs::read_link(e.path()).ok())
            .filter_map(|target| parse_socket_link(target.to_str()?))
            .collect()
    }

    /// The process holding each of `inodes`, found by scanning every process's fds; inodes
    /// nobody visible holds are left out.
    pub fn owners_of(&self, inodes: &HashSet<u64>) -> HashMap<u64, Owner> {
        let mut owners = HashMap::new();
        if inodes.is_empty() {
            return owners;
        }
        for pid in self.pids() {
            for inode in self.socket_inodes(pid).intersection(inodes) {
                let comm = self.comm(pid).unwrap_or_else(|| "?".to_owned());
                owners.insert(*inode, Owner { pid, comm });
            }
        }
        owners
    }

    /// Every running core process (comm `xray`/`v2ray`, or exe `core_binary`), in PID order,
    /// except zombies and children of `parent` (the warden's own config tests run the core).
    /// Whether each is a stray is the domain's rule ([`orphans::stray_tunnel`]).
    pub fn cores(&self, parent: u32, core_binary: &Path) -> Vec<CoreProcess> {
        self.pids()
            .into_iter()
            .filter_map(|pid| self.core(pid, parent, core_binary))
            .collect()
    }

    /// Whether `pid` runs a core (comm `xray`/`v2ray`, or exe `core_binary`); `false` once it is
    /// gone. Two reads: comm and the exe link.
    pub fn is_core_process(&self, pid: u32, core_binary: &Path) -> bool {
        let Some(comm) = self.comm(pid) else {
            return false;
        };
        if orphans::is_core(&comm, None, core_binary) {
            return true;
        }
        let exe = fs::read_link(self.root.join(pid.to_string()).join("exe")).ok();
        orphans::is_core(&comm, exe.as_deref(), core_binary)
    }

    /// `pid` as a [`CoreProcess`], or `None` if it is gone (or a zombie), no core, or a child
    /// of `parent`.
    pub fn core(&self, pid: u32, parent: u32, core_binary: &Path) -> Option<CoreProcess> {
        let dir = self.root.join(pid.to_string());
        let comm = self.comm(pid)?;
        // Reading another process's exe link needs ptrace access; without it, the comm decides.
        let exe = fs::read_link(dir.join("exe")).ok();
        if !orphans::is_core(&comm, exe.as_deref(), core_binary) {
            return None;
        }
        let stat = Process::new_with_root(dir.clone()).ok()?.stat().ok()?;
        // A zombie has exited (only its parent's wait is missing); a child of `parent` is
        // the warden's own config test.
        if matches!(stat.state, 'Z' | 'X') || u32::try_from(stat.ppid).ok() == Some(parent) {
            return None;
        }
        // An unreadable cgroup proves nothing: an empty text counts as inside a unit.
        let cgroup = fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
        Some(CoreProcess {
            key: ProcessKey {
                pid,
                start_ticks: stat.starttime,
            },
            comm,
            argv: parse_cmdline(&cmdline),
            in_unit: orphans::in_systemd_unit(&cgroup),
        })
    }

    /// The start time of `pid` in clock ticks since boot; `None` once it is gone.
    pub fn start_ticks(&self, pid: u32) -> Option<u64> {
        let dir = self.root.join(pid.to_string());
        Some(Process::new_with_root(dir).ok()?.stat().ok()?.starttime)
    }

    /// Whether the process `pid` that started at `start_ticks` still runs (a zombie has
    /// exited; only its parent's wait is missing).
    pub fn alive(&self, pid: u32, start_ticks: u64) -> bool {
        let dir = self.root.join(pid.to_string());
        let stat = Process::new_with_root(dir).and_then(|p| p.stat());
        stat.is_ok_and(|s| s.starttime == start_ticks && !matches!(s.state, 'Z' | 'X'))
    }

    /// Whether this proc root shows this process's own PID namespace (its `self` names our
    /// PID), so that a PID read there means the same process to `pidfd_open`.
    pub fn is_own_pid_namespace(&self) -> bool {
        let own = std::process::id().to_string();
        fs::read_link(self.root.join("self")).is_ok_and(|target| target.as_os_str() == own.as_str())
    }

    fn comm(&self, pid: u32) -> Option<String> {
        let text = fs::read_to_string(self.root.join(pid.to_string()).join("comm")).ok()?;
        Some(text.trim_end_matches('\n').to_owned())
    }

    /// The numeric entries of the proc root.
    fn pids(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        pids
    }
}

/// The LISTEN sockets of a /proc/net/tcp or tcp6 table (the header and unreadable lines are
/// skipped; inode 0 cannot be attributed to anyone and is skipped too).
pub fn parse_net_tcp(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != TCP_LISTEN {
                return None;
            }
            let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            let inode: u64 = inode.parse().ok()?;
            (inode != 0).then_some(Listener::new(port, inode))
        })
        .collect()
}

/// The inode of an fd link `socket:[12345]`.
pub fn parse_socket_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The arguments of a NUL-separated /proc/PID/cmdline (not UTF-8: replaced characters).
pub fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let text = text.strip_suffix('\0').unwrap_or(&text);
    if text.is_empty() {
        return Vec::new();
    }
    text.split('\0').map(str::to_owned).collect()
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;

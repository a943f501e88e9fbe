//! The I/O side of the process [`Census`]: each pass lists the proc root's PIDs with one
//! `getdents64` loop on a directory fd kept open across passes, reads the last PID from
//! `loadavg`, and reads comm and exe only of the PIDs the census asks for. The rule (which
//! PIDs, when to start over) is [`crate::domain::health_trigger::Census`].

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, RawDir, SeekFrom};

use super::scan::ProcScan;
use crate::domain::health_trigger::Census;

/// The `getdents64` buffer: about 400 PIDs per call.
const DIR_BUFFER: usize = 16 * 1024;

/// The census and what it keeps open between passes.
#[derive(Default)]
pub struct ProcCensus {
    census: Census,
    /// The proc root, opened once; `None` until then, or after it failed.
    dir: Option<OwnedFd>,
    buffer: Vec<MaybeUninit<u8>>,
    pids: Vec<u32>,
}

/// What one pass of the census found.
#[derive(Debug, Clone, PartialEq)]
pub struct CensusRead {
    /// The PIDs of the core processes, ascending; `None` when the proc root cannot be listed.
    pub cores: Option<Vec<u32>>,
    pub epoch: u64,
}

impl ProcCensus {
    /// Lists the PIDs, reads the ones the census asks for, and answers the core processes.
    /// Blocking.
    pub fn read(&mut self, scan: &ProcScan, core_binary: &Path) -> CensusRead {
        let last_pid = std::fs::read_to_string(scan.root().join("loadavg"))
            .ok()
            .as_deref()
            .and_then(last_pid);
        if self.list(scan.root()).is_err() {
            // Reopened next pass; what was seen stays valid (the counter check still applies).
            self.dir = None;
            return CensusRead {
                cores: None,
                epoch: self.census.epoch(),
            };
        }
        for pid in self.census.refresh(&self.pids, last_pid) {
            self.census
                .record(pid, scan.is_core_process(pid, core_binary));
        }
        CensusRead {
            cores: Some(self.census.cores()),
            epoch: self.census.epoch(),
        }
    }

    /// Forgets every PID so that the next [`read`](Self::read) reads each again (the safety
    /// net's rescan).
    pub fn forget(&mut self) {
        self.census.forget();
    }

    /// Fills `self.pids` with the numeric entries of `root`, ascending.
    fn list(&mut self, root: &Path) -> rustix::io::Result<()> {
        let dir = match self.dir.take() {
            Some(dir) => dir,
            None => rustix::fs::open(
                root,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?,
        };
        rustix::fs::seek(&dir, SeekFrom::Start(0))?;
        if self.buffer.len() < DIR_BUFFER {
            self.buffer.resize(DIR_BUFFER, MaybeUninit::uninit());
        }
        self.pids.clear();
        let mut entries = RawDir::new(&dir, &mut self.buffer);
        while let Some(entry) = entries.next() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if let Some(pid) = parse_pid(name) {
                self.pids.push(pid);
            }
        }
        self.pids.sort_unstable();
        self.dir = Some(dir);
        Ok(())
    }
}

/// A PID directory's name: decimal digits only.
fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// The last PID allocated, the fifth field of `/proc/loadavg` (`0.00 0.01 0.05 1/123 4567`).
fn last_pid(loadavg: &str) -> Option<u32> {
    loadavg.split_whitespace().nth(4)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_pid_and_pid_names() {
        assert_eq!(last_pid("0.11 0.20 0.30 2/345 6789\n"), Some(6789));
        assert_eq!(last_pid("0.11 0.20"), None);
        assert_eq!(parse_pid(b"4567"), Some(4567));
        for name in [&b"self"[..], b"", b"12a", b"-1", b"99999999999"] {
            assert_eq!(parse_pid(name), None, "{name:?}");
        }
    }

    /// On the kernel's procfs: the listing finds this process, a core started after the
    /// first pass joins the set, and it leaves the set once it exits.
    #[test]
    fn the_census_of_the_real_procfs_follows_a_core() {
        let scan = ProcScan::new("/proc");
        // A process named like a core: `sleep` run through a symlink called xray.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/census-core");
        std::fs::create_dir_all(&dir).unwrap();
        let xray = dir.join("xray");
        let _ = std::fs::remove_file(&xray);
        std::os::unix::fs::symlink("/bin/sleep", &xray).unwrap();
        let core_binary = Path::new("/nonexistent/core");
        let mut census = ProcCensus::default();
        let first = census.read(&scan, core_binary);
        assert!(census.pids.contains(&std::process::id()));
        let mut child = std::process::Command::new(&xray).arg("30").spawn().unwrap();
        let pid = child.id();
        // Read twice: the first read may catch the child between fork and exec.
        census.read(&scan, core_binary);
        let with = census.read(&scan, core_binary);
        child.kill().unwrap();
        child.wait().unwrap();
        let without = census.read(&scan, core_binary);
        let cores = |r: &CensusRead| r.cores.clone().unwrap();
        assert!(cores(&with).contains(&pid), "{with:?}");
        assert!(!cores(&without).contains(&pid), "{without:?}");
        assert!(!cores(&first).contains(&pid));
    }

    #[test]
    fn an_unlistable_root_reads_as_unknown() {
        let scan = ProcScan::new("/nonexistent/proc");
        let read = ProcCensus::default().read(&scan, Path::new("/bin/true"));
        assert_eq!(read.cores, None);
    }
}

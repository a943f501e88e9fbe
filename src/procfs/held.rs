//! A unit's cgroup accounting files held open between passes and re-read in place.
//!
//! Opening a file below `/sys/fs/cgroup` walks its path through cgroupfs (the profile of the
//! steady bench put a fifth of the warden's CPU in `link_path_walk`); a `pread` at offset 0 of
//! an open cgroup file makes the kernel print it afresh, so after the first pass a unit costs
//! one read per figure. cgroupfs files are seq_files: reading at offset 0 starts a new
//! traversal, which is what `pread` gives without an `lseek`.
//!
//! When systemd removes the unit's cgroup (the unit stopped; a restart creates a new directory
//! of the same name), reads of the held files fail with `ENODEV`: the holder then reopens once
//! by path ([`HeldError::Gone`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::accounting::CpuFile;
use super::{CgroupSample, ProcessSample, ProcfsError, ProcfsReader, collect_pids, vanished};
use crate::domain::Accounting;

/// The open accounting files of one unit's cgroup.
#[derive(Debug)]
pub struct HeldCgroup {
    /// The unit's directory in the hierarchy that lists its processes.
    dir: PathBuf,
    cpu: Option<(File, CpuFile)>,
    memory: Option<File>,
    tasks: Option<File>,
}

/// Why a held read failed.
#[derive(Debug, thiserror::Error)]
pub enum HeldError {
    /// The cgroup was removed since the files were opened.
    #[error("the cgroup was removed")]
    Gone,
    #[error(transparent)]
    Read(#[from] ProcfsError),
}

impl ProcfsReader {
    /// Opens the accounting files of `control_group` (systemd's `ControlGroup`). A figure whose
    /// file does not exist (the controller is not enabled for the unit) stays `None` while these
    /// files are held; [`ProcfsError::CgroupNotFound`] when no hierarchy has the cgroup.
    pub fn hold(&self, control_group: &str) -> Result<HeldCgroup, ProcfsError> {
        let dir = self.cgroup_dir(control_group)?;
        let files = self.layout.files(&self.cgroup_root, control_group);
        let mut cpu = None;
        for (path, kind) in &files.cpu {
            if let Some(file) = open(path)? {
                cpu = Some((file, *kind));
                break;
            }
        }
        let (memory, tasks) = (open(&files.memory)?, open(&files.tasks)?);
        Ok(HeldCgroup {
            dir,
            cpu,
            memory,
            tasks,
        })
    }
}

/// A process's `stat` file held open, beside its last figures.
#[derive(Debug)]
pub struct HeldProcess {
    file: File,
    pub sample: ProcessSample,
}

impl ProcfsReader {
    /// Samples each of `pids` (as [`ProcfsReader::sample_pids`]) and keeps each one's `stat`
    /// open for [`ProcfsReader::reread_processes`].
    pub fn hold_processes(
        &self,
        pids: Vec<u32>,
    ) -> Result<(CgroupSample, Vec<HeldProcess>), ProcfsError> {
        let mut sample = CgroupSample::default();
        let mut held = Vec::with_capacity(pids.len());
        let mut buf = Vec::new();
        for pid in pids {
            match self.hold_process(pid, &mut buf) {
                Ok(process) => {
                    sample.processes.push(process.sample);
                    held.push(process);
                }
                Err(ProcfsError::Process { source, .. }) if vanished(&source) => {
                    sample.vanished += 1
                }
                Err(err) => return Err(err),
            }
        }
        Ok((sample, held))
    }

    fn hold_process(&self, pid: u32, buf: &mut Vec<u8>) -> Result<HeldProcess, ProcfsError> {
        let path = self.proc_root.join(pid.to_string()).join("stat");
        let file = File::open(&path).map_err(|err| ProcfsError::Process {
            pid,
            source: proc_error(err, &path),
        })?;
        let stat = read_stat(&file, pid, buf)?;
        let open_fds = self.count_fds(pid)?;
        Ok(HeldProcess {
            sample: self.sample_of(pid, &stat, open_fds),
            file,
        })
    }

    /// Reads every held process's `stat` again (CPU, RSS, threads; the fd count is kept).
    /// `None` as soon as one has exited: the processes must then be listed anew.
    pub fn reread_processes(
        &self,
        held: &mut [HeldProcess],
        buf: &mut Vec<u8>,
    ) -> Option<CgroupSample> {
        let mut sample = CgroupSample::default();
        for process in held.iter_mut() {
            let pid = process.sample.key.pid;
            let stat = read_stat(&process.file, pid, buf).ok()?;
            process.sample = self.sample_of(pid, &stat, process.sample.open_fds);
            sample.processes.push(process.sample);
        }
        Some(sample)
    }
}

/// A held `stat` read again. A process that exited answers `ESRCH` (the held file names that
/// process, never a later one with the same PID).
fn read_stat(file: &File, pid: u32, buf: &mut Vec<u8>) -> Result<StatFigures, ProcfsError> {
    let wrap = |source| ProcfsError::Process { pid, source };
    let text = match reread(file, buf) {
        Ok(Some(text)) if !text.is_empty() => text,
        Ok(_) => return Err(wrap(procfs::ProcError::NotFound(None))),
        Err(HeldError::Gone) => return Err(wrap(procfs::ProcError::NotFound(None))),
        Err(HeldError::Read(ProcfsError::Io { source, .. })) => {
            return Err(wrap(procfs::ProcError::Io(source, None)));
        }
        Err(HeldError::Read(err)) => return Err(err),
    };
    StatFigures::parse(text).ok_or_else(|| {
        wrap(procfs::ProcError::Other(format!(
            "malformed stat: {text:.120}"
        )))
    })
}

/// The few fields of `/proc/<pid>/stat` the sampler uses.
///
/// Not `procfs::process::Stat`: it parses all 52 fields and allocates the command name, which
/// was a twentieth of the warden's steady CPU once every process's `stat` was re-read each pass
/// (perf, steady bench at 1,000 units on a cgroup v1 host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFigures {
    pub utime: u64,
    pub stime: u64,
    pub num_threads: u64,
    pub starttime: u64,
    /// In pages.
    pub rss: u64,
}

impl StatFigures {
    /// Fields 14, 15, 20, 22 and 24 (proc(5)), counted after the command name, which is in
    /// parentheses and may itself hold spaces and parentheses: the last `)` ends it.
    pub fn parse(text: &str) -> Option<Self> {
        let (_, rest) = text.rsplit_once(')')?;
        // `rest` starts with field 3 (state): field N is at index N - 3.
        let mut fields = rest.split_ascii_whitespace();
        let mut nth = |skip: usize| fields.nth(skip)?.parse::<u64>().ok();
        let utime = nth(14 - 3)?;
        let stime = nth(0)?;
        let num_threads = nth(20 - 15 - 1)?;
        let starttime = nth(22 - 20 - 1)?;
        let rss = nth(24 - 22 - 1)?;
        Some(Self {
            utime,
            stime,
            num_threads,
            starttime,
            rss,
        })
    }
}

/// An open error of a procfs file as the procfs crate reports it.
fn proc_error(err: io::Error, path: &Path) -> procfs::ProcError {
    if err.kind() == io::ErrorKind::NotFound {
        procfs::ProcError::NotFound(Some(path.to_owned()))
    } else {
        procfs::ProcError::Io(err, Some(path.to_owned()))
    }
}

impl HeldCgroup {
    /// Whether every figure has its file: where one is missing (its controller was not
    /// enabled for the unit when opened), opening again may find it.
    pub fn complete(&self) -> bool {
        self.cpu.is_some() && self.memory.is_some() && self.tasks.is_some()
    }

    /// The unit's accounting now, read through the held files; `buf` is scratch space kept by
    /// the caller across units.
    pub fn accounting(&self, buf: &mut Vec<u8>) -> Result<Accounting, HeldError> {
        let cpu_usage_nsec = match &self.cpu {
            Some((file, kind)) => reread(file, buf)?.and_then(|text| kind.nsec(text)),
            None => None,
        };
        let mut figure = |file: &Option<File>| -> Result<Option<u64>, HeldError> {
            Ok(match file {
                Some(file) => reread(file, buf)?.and_then(number),
                None => None,
            })
        };
        Ok(Accounting {
            cpu_usage_nsec,
            memory_current: figure(&self.memory)?,
            tasks_current: figure(&self.tasks)?,
        })
    }

    /// PIDs of the unit's cgroup and of every cgroup below it, sorted.
    pub fn pids(&self) -> Result<Vec<u32>, HeldError> {
        let mut pids = Vec::new();
        if !collect_pids(&self.dir, &mut pids)? {
            return Err(HeldError::Gone);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }
}

/// The file's text, re-read from offset 0; `Gone` once its cgroup was removed.
///
/// Every held file (cgroupfs, `/proc/<pid>/stat`) is a seq_file with a single record: a read
/// at offset 0 prints the record and copies all of it that fits (`seq_read_iter` in the
/// kernel's fs/seq_file.c), so a read that did not fill the buffer got the whole text, and the
/// read that would only answer 0 at the end is not made (one syscall per figure, not two).
fn reread<'b>(file: &File, buf: &'b mut Vec<u8>) -> Result<Option<&'b str>, HeldError> {
    buf.clear();
    buf.resize(READ_SIZE, 0);
    let mut len = 0;
    loop {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len < buf.len() {
                    break;
                }
                buf.resize(buf.len() * 2, 0);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if gone(&err) => return Err(HeldError::Gone),
            Err(source) => {
                return Err(HeldError::Read(ProcfsError::Io {
                    path: PathBuf::from("<held cgroup file>"),
                    source,
                }));
            }
        }
    }
    buf.truncate(len);
    Ok(std::str::from_utf8(buf).ok())
}

/// Every accounting file fits: `cpu.stat` is the longest, a few hundred bytes.
const READ_SIZE: usize = 1024;

/// `ENODEV`: kernfs answers it for a file whose node was removed; `ENOENT` alike.
fn gone(err: &io::Error) -> bool {
    const ENODEV: i32 = 19;
    err.raw_os_error() == Some(ENODEV) || err.kind() == io::ErrorKind::NotFound
}

/// Opens `path` for reading; `None` when it does not exist.
fn open(path: &Path) -> Result<Option<File>, ProcfsError> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ProcfsError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A file holding one number.
fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

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
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, RawDir, SeekFrom};
use rustix::io::Errno;

use super::accounting::CpuFile;
use super::{
    CgroupSample, ProcessSample, ProcfsError, ProcfsReader, collect_pids, parse_pids, vanished,
};
use crate::domain::Accounting;

/// The open accounting files of one unit's cgroup.
#[derive(Debug)]
pub struct HeldCgroup {
    /// The unit's directory in the hierarchy that lists its processes.
    dir: PathBuf,
    /// That directory, open: its `cgroup.procs` is opened and its sub-cgroups are listed
    /// through it, without walking its path again (the sampler's periodic listing of a unit's
    /// processes made two path walks, a `statx` and two opens before).
    handle: OwnedFd,
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
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let handle = match rustix::fs::open(&dir, flags, Mode::empty()) {
            Ok(handle) => handle,
            Err(Errno::NOENT) => return Err(ProcfsError::CgroupNotFound(control_group.into())),
            Err(err) => return Err(io_error(&dir, err)),
        };
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
            handle,
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
    /// open for [`ProcfsReader::reread_processes`]. `kept` are the unit's files held from its
    /// last listing, in PID order: a process still listed is read through its held file (the
    /// same process, since a held `stat` never names a later one with its PID) rather than
    /// opened again.
    pub fn hold_processes(
        &self,
        pids: Vec<u32>,
        kept: Vec<HeldProcess>,
    ) -> Result<(CgroupSample, Vec<HeldProcess>), ProcfsError> {
        let mut sample = CgroupSample::default();
        let mut held = Vec::with_capacity(pids.len());
        let mut kept = kept.into_iter().peekable();
        let mut buf = Vec::new();
        for pid in pids {
            while kept.next_if(|k| k.sample.key.pid < pid).is_some() {}
            let reuse = kept.next_if(|k| k.sample.key.pid == pid);
            match self.hold_process(pid, reuse, &mut buf) {
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

    fn hold_process(
        &self,
        pid: u32,
        reuse: Option<HeldProcess>,
        buf: &mut Vec<u8>,
    ) -> Result<HeldProcess, ProcfsError> {
        let (file, stat) = match reuse.map(|h| (read_stat(&h.file, pid, buf), h.file)) {
            Some((Ok(stat), file)) => (file, stat),
            // Not held, or exited (the PID now names another process): opened anew.
            _ => {
                let path = self.proc_root.join(pid.to_string()).join("stat");
                let file = File::open(&path).map_err(|err| ProcfsError::Process {
                    pid,
                    source: proc_error(err, &path),
                })?;
                let stat = read_stat(&file, pid, buf)?;
                (file, stat)
            }
        };
        let open_fds = self.count_fds(pid)?;
        Ok(HeldProcess {
            sample: self.sample_of(pid, &stat, open_fds),
            file,
        })
    }

    /// Reads every held process's `stat` (CPU, RSS, threads) and fd count again. `None` as
    /// soon as one has exited: the processes must then be listed anew.
    pub fn reread_processes(
        &self,
        held: &mut [HeldProcess],
        buf: &mut Vec<u8>,
    ) -> Option<CgroupSample> {
        self.reread_held(held, buf, |pid, _| self.count_fds(pid).ok())
    }

    /// As [`ProcfsReader::reread_processes`], but each process keeps its last fd count: only
    /// the `stat` files are read.
    pub fn reread_stats(
        &self,
        held: &mut [HeldProcess],
        buf: &mut Vec<u8>,
    ) -> Option<CgroupSample> {
        self.reread_held(held, buf, |_, last| Some(last.open_fds))
    }

    fn reread_held(
        &self,
        held: &mut [HeldProcess],
        buf: &mut Vec<u8>,
        open_fds: impl Fn(u32, &ProcessSample) -> Option<u64>,
    ) -> Option<CgroupSample> {
        let mut sample = CgroupSample::default();
        for process in held.iter_mut() {
            let pid = process.sample.key.pid;
            let stat = read_stat(&process.file, pid, buf).ok()?;
            let open_fds = open_fds(pid, &process.sample)?;
            process.sample = self.sample_of(pid, &stat, open_fds);
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

    /// PIDs of the unit's cgroup and of every cgroup below it, sorted; `buf` is scratch space.
    pub fn pids(&self, buf: &mut Vec<u8>) -> Result<Vec<u32>, HeldError> {
        const PROCS: &str = "cgroup.procs";
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let procs = match rustix::fs::openat(&self.handle, PROCS, flags, Mode::empty()) {
            Ok(procs) => File::from(procs),
            Err(err) if removed(err) => return Err(HeldError::Gone),
            Err(err) => return Err(io_error(&self.dir.join(PROCS), err).into()),
        };
        // Many records: read to the end, a short read is not the end of this file.
        let text = read_from_start(&procs, buf, true)?.unwrap_or_default();
        let mut pids = parse_pids(text).map_err(|value| ProcfsError::BadPid {
            path: self.dir.join(PROCS),
            value,
        })?;
        for child in self.sub_cgroups()? {
            // Rare (a unit that delegates sub-cgroups): by path.
            collect_pids(&self.dir.join(child), &mut pids)?;
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// The names of the cgroups right below the unit's, listed through the open directory.
    fn sub_cgroups(&self) -> Result<Vec<std::ffi::OsString>, HeldError> {
        use std::os::unix::ffi::OsStrExt;
        let failed = |err: Errno| -> HeldError {
            if removed(err) {
                HeldError::Gone
            } else {
                io_error(&self.dir, err).into()
            }
        };
        // kernfs counts a directory's links as 2 plus its subdirectories: at 2 there is none
        // to list (any other count, e.g. a filesystem that does not keep it, lists).
        if rustix::fs::fstat(&self.handle).map_err(failed)?.st_nlink == 2 {
            return Ok(Vec::new());
        }
        rustix::fs::seek(&self.handle, SeekFrom::Start(0)).map_err(failed)?;
        // A cgroup directory holds a few dozen entries: one or two `getdents64` calls.
        let mut space = [MaybeUninit::<u8>::uninit(); 4096];
        let mut entries = RawDir::new(&self.handle, &mut space);
        let mut children = Vec::new();
        while let Some(entry) = entries.next() {
            let entry = entry.map_err(failed)?;
            let name = entry.file_name().to_bytes();
            if entry.file_type() == FileType::Directory && name != b"." && name != b".." {
                children.push(std::ffi::OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(children)
    }
}

/// Whether a call on a held cgroup file or directory failed because the cgroup was removed.
fn removed(err: Errno) -> bool {
    err == Errno::NOENT || err == Errno::NODEV
}

fn io_error(path: &Path, err: Errno) -> ProcfsError {
    ProcfsError::Io {
        path: path.to_owned(),
        source: err.into(),
    }
}

/// The file's text, re-read from offset 0; `Gone` once its cgroup was removed.
///
/// Every held file (cgroupfs, `/proc/<pid>/stat`) is a seq_file with a single record: a read
/// at offset 0 prints the record and copies all of it that fits (`seq_read_iter` in the
/// kernel's fs/seq_file.c), so a read that did not fill the buffer got the whole text, and the
/// read that would only answer 0 at the end is not made (one syscall per figure, not two).
fn reread<'b>(file: &File, buf: &'b mut Vec<u8>) -> Result<Option<&'b str>, HeldError> {
    read_from_start(file, buf, false)
}

/// The file's text from offset 0: until a short read (`to_end` false: a single-record
/// seq_file, see [`reread`]) or until a read answers 0 (`to_end`: a file of many records, which
/// the kernel may hand out in pieces of its own page-sized buffer).
fn read_from_start<'b>(
    file: &File,
    buf: &'b mut Vec<u8>,
    to_end: bool,
) -> Result<Option<&'b str>, HeldError> {
    buf.clear();
    buf.resize(READ_SIZE, 0);
    let mut len = 0;
    loop {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == buf.len() {
                    buf.resize(buf.len() * 2, 0);
                } else if !to_end {
                    break;
                }
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
    removed(Errno::from_io_error(err).unwrap_or(Errno::IO))
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

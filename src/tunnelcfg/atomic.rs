//! Replacing a file so that a reader, or a crash at any instant, sees either the whole old file
//! or the whole new one: write a temp file beside it, fsync, rename over, fsync the directory.
//!
//! Only in directories nobody but root could have planted anything in: the directory written
//! in must be owned by root (or by this process's user) and not writable by group or others
//! ([`open_safe_dir`]). Every step after opening it works on that directory's fd (`openat`,
//! `renameat`, `unlinkat`) and on the open temp file (`fchown`, `fchmod`), so no path is
//! resolved twice.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};

/// Temp files are `.{name}.warden-{pid}-{n}.tmp`, beside the file they replace.
const TEMP_INFIX: &str = ".warden-";
const TEMP_SUFFIX: &str = ".tmp";
/// How many symlinks [`Target::lock`] follows from one path.
const MAX_LINKS: usize = 8;

/// Whether `file_name` is one of our temp files for the file named `target_name`.
pub(super) fn is_temp_name(file_name: &str, target_name: &str) -> bool {
    file_name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_prefix(target_name))
        .and_then(|rest| rest.strip_prefix(TEMP_INFIX))
        .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
        .and_then(|ids| ids.split_once('-'))
        .is_some_and(|(pid, seq)| is_number(pid) && is_number(seq))
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// The owner and mode a new file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
}

impl Owner {
    /// The owner and mode of an existing file.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
        }
    }
}

/// Opens the directory `path` (symlinks in the path itself are followed: it is the caller's)
/// and checks it: a directory owned by root or by this process's user, not writable by group
/// or others. Anything else could let another user plant a symlink or swap a file in it.
pub fn open_safe_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = rustix::fs::open(path, flags, Mode::empty())?;
    let stat = rustix::fs::fstat(&dir)?;
    let me = rustix::process::geteuid().as_raw();
    let problem = if stat.st_uid != 0 && stat.st_uid != me {
        Some(format!("is owned by uid {}, not by root", stat.st_uid))
    } else if stat.st_mode & 0o022 != 0 {
        Some(format!(
            "is writable by group or others (mode {:04o})",
            stat.st_mode & 0o7777
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("directory {} {problem}: refusing to use it", path.display()),
        )),
        None => Ok(dir),
    }
}

/// A file about to be replaced, with an exclusive `flock` on its directory held until drop. The
/// lock serialises every warden writing in that directory (threads or processes), so a temp file
/// found while holding it belongs to a writer that died: it is removed.
pub(super) struct Target {
    path: PathBuf,
    dir: File,
    name: OsString,
}

impl Target {
    /// Follows symlinks only where they can be trusted: a link is followed when the directory
    /// holding it is safe ([`open_safe_dir`]), and the file's final directory must be safe too
    /// (a link stays a link, its target is replaced; a missing file is fine when its directory
    /// exists; anything there but a regular file is refused). Locks the directory and removes
    /// stale temp files of this file.
    pub(super) fn lock(path: &Path) -> Result<Self, Failed> {
        let real = resolve(path).map_err(|e| ("resolve the path", e))?;
        Self::lock_exact(&real)
    }

    /// Like [`Target::lock`], but never follows a symlink at `path` and refuses anything there
    /// that is not a regular file: for files whose old content nobody else may choose.
    pub(super) fn lock_exact(path: &Path) -> Result<Self, Failed> {
        let target = Self::lock_in(path.to_owned())?;
        match rustix::fs::statat(&target.dir, &target.name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => Ok(target),
            Err(e) => Err(("look at the old file", e.into())),
            Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => Ok(target),
                other => Err(("look at the old file", not_regular(path, other))),
            },
        }
    }

    fn lock_in(real: PathBuf) -> Result<Self, Failed> {
        let (Some(dir_path), Some(name)) = (real.parent(), real.file_name()) else {
            return Err(("resolve the path", io::Error::other("not a file path")));
        };
        let dir_path = if dir_path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir_path
        };
        let dir = File::from(open_safe_dir(dir_path).map_err(|e| ("open the directory", e))?);
        dir.lock().map_err(|e| ("lock the directory", e))?;
        let target = Self {
            name: name.to_owned(),
            dir,
            path: real.clone(),
        };
        target.remove_stale_temps(dir_path);
        Ok(target)
    }

    /// The resolved path of the file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's current content (at most `cap` bytes) and owner, read through the locked
    /// directory: never through a symlink (a trusted one was resolved by [`Target::lock`]), and
    /// only from a regular file, opened non-blocking so a FIFO cannot hang the reader.
    pub(super) fn read(&self, cap: u64) -> Result<(Vec<u8>, Owner), Failed> {
        let step = "read the old file";
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd =
            rustix::fs::openat(&self.dir, &self.name, flags, Mode::empty()).map_err(
                |e| match e {
                    rustix::io::Errno::LOOP => (step, not_regular(&self.path, FileType::Symlink)),
                    e => (step, e.into()),
                },
            )?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| (step, e))?;
        let owner = Owner::of(&meta);
        let bytes = crate::readfile::read_open(file, cap).map_err(|e| (step, e))?;
        Ok((bytes, owner))
    }

    fn remove_stale_temps(&self, dir_path: &Path) {
        let Some(target_name) = self.name.to_str() else {
            return;
        };
        let Ok(entries) = fs::read_dir(dir_path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| is_temp_name(n, target_name)) {
                match rustix::fs::unlinkat(&self.dir, &name, AtFlags::empty()) {
                    Ok(()) => {
                        tracing::info!(file = %entry.path().display(), "removed a stale temp file")
                    }
                    Err(error) => {
                        tracing::warn!(file = %entry.path().display(), %error, "cannot remove a stale temp file")
                    }
                }
            }
        }
    }

    /// Replaces the file with `bytes`, giving the new file `owner` (without it: mode 0600 and
    /// the process's owner). On error the old file is untouched and the temp file removed,
    /// except after the rename: then the new file is in place but the directory fsync failed,
    /// and the error says so.
    pub(super) fn replace(&self, bytes: &[u8], owner: Option<Owner>) -> Result<(), Failed> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut temp = OsString::from(".");
        temp.push(&self.name);
        temp.push(format!(
            "{TEMP_INFIX}{}-{seq}{TEMP_SUFFIX}",
            std::process::id()
        ));
        let written = self.write_temp(&temp, bytes, owner).and_then(|()| {
            fault("rename over the old file")?;
            rustix::fs::renameat(&self.dir, &temp, &self.dir, &self.name)
                .map_err(|e| ("rename over the old file", e.into()))
        });
        if let Err((step, source)) = written {
            match rustix::fs::unlinkat(&self.dir, &temp, AtFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(error) => {
                    let file = self.path.with_file_name(&temp);
                    tracing::warn!(file = %file.display(), %error, "cannot remove the temp file");
                }
            }
            return Err((step, source));
        }
        fault("fsync the directory")?;
        self.dir.sync_all().map_err(|e| ("fsync the directory", e))
    }

    fn write_temp(&self, temp: &OsStr, bytes: &[u8], owner: Option<Owner>) -> Result<(), Failed> {
        fault("create the temp file")?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(
            &self.dir,
            temp,
            flags | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| ("create the temp file", io::Error::from(e)))?;
        let mut file = File::from(fd);
        fault("write the temp file")?;
        file.write_all(bytes)
            .map_err(|e| ("write the temp file", e))?;
        if let Some(owner) = owner {
            // Owner before mode: chown clears set-id bits.
            fault("set the owner")?;
            let (uid, gid) = (Uid::from_raw(owner.uid), Gid::from_raw(owner.gid));
            rustix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(|e| ("set the owner", e.into()))?;
            fault("set the mode")?;
            rustix::fs::fchmod(&file, Mode::from_raw_mode(owner.mode & 0o7777))
                .map_err(|e| ("set the mode", e.into()))?;
        }
        fault("fsync the temp file")?;
        file.sync_all().map_err(|e| ("fsync the temp file", e))
    }
}

/// The step that failed, and how.
pub(super) type Failed = (&'static str, io::Error);

fn not_regular(path: &Path, kind: FileType) -> io::Error {
    let what = match kind {
        FileType::Symlink => "a symlink",
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        _ => "not a regular file",
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is {what}: refusing to use it", path.display()),
    )
}

/// The path with trusted symlinks resolved; for a missing file, its directory and its name.
/// A symlink is followed only out of a safe directory.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_owned();
    for _ in 0..MAX_LINKS {
        let meta = match fs::symlink_metadata(&current) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_symlink() {
            break;
        }
        let dir = parent_of(&current);
        open_safe_dir(&dir)?;
        current = dir.join(fs::read_link(&current)?);
    }
    if fs::symlink_metadata(&current).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(io::Error::other(format!(
            "{}: more than {MAX_LINKS} symlinks",
            path.display()
        )));
    }
    let name = current
        .file_name()
        .ok_or_else(|| io::Error::other("not a file path"))?;
    Ok(fs::canonicalize(parent_of(&current))?.join(name))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
thread_local! {
    /// Unit tests set a step name here to make that step of [`Target::replace`] fail.
    pub(super) static FAIL_AT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// A failure injected by unit tests before `step`; nothing outside `cfg(test)`.
fn fault(step: &'static str) -> Result<(), Failed> {
    #[cfg(test)]
    if FAIL_AT.get() == Some(step) {
        return Err((step, io::Error::other("injected by a test")));
    }
    let _ = step;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use crate::tunnelcfg::write_atomic;

    use super::*;

    #[test]
    fn links_are_followed_only_out_of_dirs_nobody_else_can_write() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/atomic-links");
        let _ = fs::remove_dir_all(&root);
        let (safe, open) = (root.join("safe"), root.join("open"));
        fs::create_dir_all(&safe).unwrap();
        fs::create_dir_all(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let target = safe.join("state.json");
        fs::write(&target, "old").unwrap();

        let planted = open.join("x.json");
        symlink(&target, &planted).unwrap();
        let err = write_atomic(&planted, b"new").unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "old");
        let err = write_atomic(&open.join("plain.json"), b"new").unwrap_err();
        assert!(err.to_string().contains("open the directory"), "{err}");

        let trusted = safe.join("current.json");
        symlink("state.json", &trusted).unwrap();
        write_atomic(&trusted, b"new").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        assert!(fs::symlink_metadata(&trusted).unwrap().is_symlink());

        let fifo = safe.join("fifo.json");
        let mode = Mode::from_raw_mode(0o600);
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, mode, 0).unwrap();
        let err = write_atomic(&fifo, b"new").unwrap_err();
        assert!(err.to_string().contains("is a FIFO"), "{err}");
        let err =
            crate::tunnelcfg::install(&trusted, b"x", Owner::of(&fs::metadata(&target).unwrap()))
                .unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
    }
}

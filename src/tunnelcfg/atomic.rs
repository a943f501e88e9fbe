//! Replacing a file so that a reader, or a crash at any instant, sees either the whole old file
//! or the whole new one: write a temp file beside it, fsync, rename over, fsync the directory.

use std::ffi::OsString;
use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, fchown};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Temp files are `.{name}.warden-{pid}-{n}.tmp`, beside the file they replace.
const TEMP_INFIX: &str = ".warden-";
const TEMP_SUFFIX: &str = ".tmp";

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

/// A file about to be replaced, with an exclusive `flock` on its directory held until drop. The
/// lock serialises every warden writing in that directory (threads or processes), so a temp file
/// found while holding it belongs to a writer that died: it is removed.
pub(super) struct Target {
    path: PathBuf,
    dir: File,
    name: OsString,
}

impl Target {
    /// Resolves symlinks (a link stays a link, its target is replaced; a missing file is fine
    /// when its directory exists), locks the directory and removes stale temp files of this file.
    pub(super) fn lock(path: &Path) -> Result<Self, Failed> {
        let real = resolve(path).map_err(|e| ("resolve the path", e))?;
        let (Some(dir_path), Some(name)) = (real.parent(), real.file_name()) else {
            return Err(("resolve the path", io::Error::other("not a file path")));
        };
        let (dir_path, name) = (dir_path.to_owned(), name.to_owned());
        let dir = File::open(&dir_path).map_err(|e| ("open the directory", e))?;
        dir.lock().map_err(|e| ("lock the directory", e))?;
        let target = Self {
            name,
            dir,
            path: real,
        };
        target.remove_stale_temps(&dir_path);
        Ok(target)
    }

    /// The resolved path of the file.
    pub(super) fn path(&self) -> &Path {
        &self.path
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
                match fs::remove_file(entry.path()) {
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

    /// Replaces the file with `bytes`, giving the new file the mode and owner in `like` (without
    /// it: mode 0600 and the process's owner). On error the old file is untouched and the temp
    /// file removed, except after the rename: then the new file is in place but the directory
    /// fsync failed, and the error says so.
    pub(super) fn replace(&self, bytes: &[u8], like: Option<&Metadata>) -> Result<(), Failed> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut temp_name = OsString::from(".");
        temp_name.push(&self.name);
        temp_name.push(format!(
            "{TEMP_INFIX}{}-{seq}{TEMP_SUFFIX}",
            std::process::id()
        ));
        let temp = self.path.with_file_name(temp_name);
        let written = self.write_temp(&temp, bytes, like).and_then(|()| {
            fault("rename over the old file")?;
            fs::rename(&temp, &self.path).map_err(|e| ("rename over the old file", e))
        });
        if let Err((step, source)) = written {
            if let Err(error) = fs::remove_file(&temp)
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(file = %temp.display(), %error, "cannot remove the temp file");
            }
            return Err((step, source));
        }
        fault("fsync the directory")?;
        self.dir.sync_all().map_err(|e| ("fsync the directory", e))
    }

    fn write_temp(&self, temp: &Path, bytes: &[u8], like: Option<&Metadata>) -> Result<(), Failed> {
        fault("create the temp file")?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(temp)
            .map_err(|e| ("create the temp file", e))?;
        fault("write the temp file")?;
        file.write_all(bytes)
            .map_err(|e| ("write the temp file", e))?;
        if let Some(like) = like {
            // Owner before mode: chown clears set-id bits.
            fault("set the owner")?;
            fchown(&file, Some(like.uid()), Some(like.gid())).map_err(|e| ("set the owner", e))?;
            fault("set the mode")?;
            let mode = Permissions::from_mode(like.mode() & 0o7777);
            file.set_permissions(mode)
                .map_err(|e| ("set the mode", e))?;
        }
        fault("fsync the temp file")?;
        file.sync_all().map_err(|e| ("fsync the temp file", e))
    }
}

/// The step that failed, and how.
pub(super) type Failed = (&'static str, io::Error);

/// The path with symlinks resolved; for a missing file, its resolved directory and its name.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    match fs::canonicalize(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(path).is_err() => {
            let name = path.file_name().ok_or(e)?;
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            Ok(fs::canonicalize(parent.unwrap_or(Path::new(".")))?.join(name))
        }
        resolved => resolved,
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

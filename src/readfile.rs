//! Reading a file that someone else writes (the users file, the inventory, a token, a tunnel's
//! config) without letting its path hang or flood the reader: only a regular file is read, and
//! only up to a cap.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::OFlags;

/// Reads the regular file at `path` (symlinks are followed: the path is the operator's
/// choice), refusing anything else — a FIFO would block the reader until a writer appears, a
/// device or `/proc` file may never end — and anything longer than `cap` bytes. The open is
/// non-blocking, so a FIFO is refused at once rather than waited on.
///
/// Blocking I/O: call it on the blocking pool.
pub fn read_regular(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    read_open(file, cap)
}

/// Reads the already open `file` like [`read_regular`]: only if `fstat` says it is a regular
/// file, and at most `cap` bytes. Open it non-blocking, or a FIFO blocks the open itself.
pub fn read_open(file: File, cap: u64) -> io::Result<Vec<u8>> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", kind_of(&meta.file_type())),
        ));
    }
    if meta.len() > cap {
        return Err(too_large(cap));
    }
    read_capped(file, cap)
}

/// Reads at most `cap` bytes; a file that grew past it since the `fstat` is refused too.
fn read_capped(file: File, cap: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_large(cap));
    }
    Ok(bytes)
}

pub(crate) fn too_large(cap: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("larger than the cap of {cap} bytes"),
    )
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// Makes a FIFO at `path` (replacing any file there), for tests of readers that must not hang.
#[cfg(test)]
pub(crate) fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// Opens and closes the FIFO at `path` for writing, which ends a read blocked on it: a test
/// that found a reader hung calls it so as to fail instead of hanging too.
#[cfg(test)]
pub(crate) fn release_fifo(path: &Path) {
    let _ = OpenOptions::new()
        .write(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    fn scratch(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/users-read");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    fn fifo(name: &str) -> PathBuf {
        let path = scratch(name);
        mkfifo(&path);
        path
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let path = fifo("users.fifo");
        let started = Instant::now();
        let err = read_regular(&path, 1024).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            err.to_string().contains("not a regular file (a FIFO)"),
            "{err}"
        );
        let dir = read_regular(path.parent().unwrap(), 1024).unwrap_err();
        assert!(dir.to_string().contains("a directory"), "{dir}");
        let dev = read_regular(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(dev.to_string().contains("a device"), "{dev}");
    }

    #[test]
    fn files_over_the_cap_are_refused() {
        let path = scratch("big.json");
        std::fs::write(&path, vec![b'x'; 1025]).unwrap();
        let err = read_regular(&path, 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        std::fs::write(&path, vec![b'x'; 1024]).unwrap();
        assert_eq!(read_regular(&path, 1024).unwrap().len(), 1024);
    }

    #[test]
    fn a_file_growing_past_the_cap_while_read_is_refused() {
        let path = scratch("growing.json");
        std::fs::write(&path, b"small").unwrap();
        let file = File::open(&path).unwrap();
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        assert_eq!(
            read_capped(file, 10).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
    }
}

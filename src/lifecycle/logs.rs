//! The tail of a tunnel's log file, read from its end with fixed bounds.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::tunnelcfg::open_safe_dir;

/// At most this many lines are returned, whatever the caller asks for.
pub const MAX_LINES: usize = 10_000;
/// At most this many bytes are read, from the end of the file.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// The last `lines` lines of the file at `path` (capped at [`MAX_LINES`]), oldest first, from at
/// most the last [`MAX_BYTES`] of it. A line cut by that window is left out; bytes that are not
/// UTF-8 are replaced. Blocking.
///
/// The log's directory must be root's and not writable by group or others, and the log a
/// regular file, not followed if it is a symlink and not waited on if it is a FIFO: else an
/// error ([`io::ErrorKind::InvalidInput`] or [`io::ErrorKind::PermissionDenied`]) comes at once.
pub fn tail(path: &Path, lines: usize) -> io::Result<Vec<String>> {
    if let Some(dir) = path.parent() {
        match open_safe_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
            other => drop(other?),
        }
    }
    let mut file = super::files::open_regular(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(MAX_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.take(MAX_BYTES).read_to_end(&mut bytes)?;
    Ok(last_lines(&bytes, start > 0, lines.min(MAX_LINES)))
}

/// The last `n` lines of `bytes`; when `cut` the first line is partial and dropped.
fn last_lines(bytes: &[u8], cut: bool, n: usize) -> Vec<String> {
    let mut text = bytes;
    if cut {
        text = match text.iter().position(|&b| b == b'\n') {
            Some(newline) => &text[newline + 1..],
            None => &[],
        };
    }
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if text.is_empty() || n == 0 {
        return Vec::new();
    }
    let mut lines: Vec<String> = text
        .rsplit(|&b| b == b'\n')
        .take(n)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    lines.reverse();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_in_order() {
        let text = b"one\ntwo\nthree\n";
        assert_eq!(last_lines(text, false, 2), ["two", "three"]);
        assert_eq!(last_lines(text, false, 10), ["one", "two", "three"]);
        assert_eq!(last_lines(b"no newline", false, 1), ["no newline"]);
        assert_eq!(last_lines(b"a\n\nb\n", false, 3), ["a", "", "b"]);
        assert!(last_lines(b"", false, 5).is_empty());
        assert!(last_lines(text, false, 0).is_empty());
    }

    #[test]
    fn drops_a_line_cut_by_the_window() {
        assert_eq!(last_lines(b"tial\nwhole\n", true, 5), ["whole"]);
        assert!(last_lines(b"only a partial line", true, 5).is_empty());
    }

    #[test]
    fn replaces_invalid_utf8() {
        assert_eq!(
            last_lines(b"ok\n\xff\xfe\n", false, 1),
            ["\u{fffd}\u{fffd}"]
        );
    }

    #[test]
    fn reads_at_most_the_window_and_the_line_cap() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/lifecycle");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.log");
        // 5 MiB of 100-byte lines: more than both caps.
        let line = format!("{}\n", "x".repeat(99));
        std::fs::write(&path, line.repeat(5 * 1024 * 1024 / 100)).unwrap();
        let all = tail(&path, usize::MAX).unwrap();
        assert_eq!(all.len(), MAX_LINES);
        assert!(all.iter().all(|l| l.len() == 99));
        assert_eq!(tail(&path, 3).unwrap().len(), 3);
        std::fs::write(&path, "first\nsecond\n").unwrap();
        assert_eq!(tail(&path, 5).unwrap(), ["first", "second"]);
        std::fs::remove_file(&path).unwrap();
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/unit-scratch")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_symlinked_log_is_not_followed() {
        let dir = scratch("logs-symlink");
        let secret = dir.join("secret");
        std::fs::write(&secret, "root:$6$hash:19000::::::\n").unwrap();
        let log = dir.join("xray-a.log");
        std::os::unix::fs::symlink(&secret, &log).unwrap();
        let err = tail(&log, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("is a symlink"), "{err}");
    }

    #[test]
    fn a_fifo_log_is_refused_at_once() {
        let dir = scratch("logs-fifo");
        let log = dir.join("xray-a.log");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &log,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let started = std::time::Instant::now();
        let err = tail(&log, 10).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(err.to_string().contains("is a FIFO"), "{err}");
    }

    #[test]
    fn a_log_dir_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("logs-open-dir");
        let log = dir.join("xray-a.log");
        std::fs::write(&log, "line\n").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = tail(&log, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(tail(&log, 10).unwrap(), ["line"]);
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let err = tail(&log, 10).unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }
}

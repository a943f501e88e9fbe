//! Signalling one process through a pidfd, so that a recycled PID is never hit.
//!
//! A PID names whichever process holds it now; a pidfd names the process that held it when the
//! pidfd was opened, for good. The caller opens the pidfd FIRST and only then checks (through
//! /proc) that the PID still is the process it wants: if that check passes, the pidfd refers to
//! that very process, since the process it wants held the PID before the pidfd was opened and
//! still holds it after. Every signal then goes through the pidfd; once the process has exited,
//! a signal fails with ESRCH instead of reaching whoever got the PID next.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

/// How often a process is looked at when its pidfd cannot be polled.
const POLL: Duration = Duration::from_millis(50);

/// A process, held by a pidfd.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd on `pid` of this process's PID namespace. `NotFound` when no such
    /// process exists.
    pub fn open(pid: u32) -> io::Result<Self> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => Ok(Self(fd)),
            Err(rustix::io::Errno::SRCH) => Err(io::Error::from(io::ErrorKind::NotFound)),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `signal`; `Ok(false)` when the process has already exited (ESRCH).
    pub fn signal(&self, signal: Signal) -> io::Result<bool> {
        match pidfd_send_signal(&self.0, signal) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::SRCH) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits at most `within` for the process to exit (a zombie has exited); whether it did.
    /// The pidfd turns readable at exit: poll(2) waits for that on the blocking pool (tokio's
    /// `AsyncFd` has no safe constructor any more, and the crate forbids unsafe code). Should
    /// poll(2) fail, `running` is asked every 50 ms instead.
    pub async fn exited(&self, within: Duration, running: impl Fn() -> bool) -> bool {
        let waited = match self.0.try_clone() {
            Ok(fd) => tokio::task::spawn_blocking(move || wait_readable(&fd, within))
                .await
                .unwrap_or_else(|join| Err(io::Error::other(join))),
            Err(e) => Err(e),
        };
        if let Ok(exited) = waited {
            return exited;
        }
        let deadline = tokio::time::Instant::now() + within;
        while running() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
        true
    }
}

/// Blocks until `pidfd` is readable (its process exited) or `within` has passed.
fn wait_readable(pidfd: &OwnedFd, within: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};

    use super::*;

    fn running(child: &mut Child) -> bool {
        matches!(child.try_wait(), Ok(None))
    }

    #[tokio::test]
    async fn a_process_that_heeds_sigterm_exits() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let fd = PidFd::open(child.id()).unwrap();
        assert!(!fd.exited(Duration::from_millis(100), || true).await);
        assert!(fd.signal(Signal::TERM).unwrap());
        assert!(fd.exited(Duration::from_secs(5), || true).await);
        assert!(!running(&mut child));
        // Reaped: its PID may go to anyone now, and the pidfd still names the dead process.
        assert!(
            !fd.signal(Signal::KILL).unwrap(),
            "ESRCH, not another process"
        );
    }

    #[tokio::test]
    async fn a_process_that_ignores_sigterm_gets_sigkill_through_the_same_pidfd() {
        let mut child = Command::new("/bin/sh")
            .args([
                "-c",
                "trap '' TERM; echo ready; while :; do sleep 0.05; done",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let fd = PidFd::open(child.id()).unwrap();
        // sh says "ready" once its trap is installed (a fixed sleep lost that race under load).
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        assert_eq!(line, "ready\n");
        assert!(fd.signal(Signal::TERM).unwrap());
        assert!(!fd.exited(Duration::from_millis(300), || true).await);
        assert!(running(&mut child));
        assert!(fd.signal(Signal::KILL).unwrap());
        assert!(fd.exited(Duration::from_secs(5), || true).await);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }

    #[test]
    fn no_such_process_is_not_found() {
        let err = PidFd::open(i32::MAX as u32).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let err = PidFd::open(u32::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn a_process_that_already_exited_is_seen_at_once() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let fd = PidFd::open(child.id()).unwrap();
        fd.signal(Signal::KILL).unwrap();
        child.wait().unwrap();
        let started = Instant::now();
        assert!(fd.exited(Duration::from_secs(5), || true).await);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

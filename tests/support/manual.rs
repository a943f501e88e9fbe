//! A process started inside a sandbox by hand, in no unit: a stray core, or a process that
//! holds a port.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::sandbox::Sandbox;

/// A process started inside the sandbox by hand (nsenter forks it into the PID namespace);
/// stopped by its host PID on drop.
pub struct Manual {
    /// nsenter, whose only child is the process.
    pub nsenter: Child,
    /// Its PID in the host's namespace.
    pub host_pid: u32,
    /// Its PID inside the sandbox, the one the warden sees.
    pub pid: u32,
}

impl Manual {
    pub fn start(sandbox: &Sandbox, program: &str, args: &[&str]) -> Manual {
        let nsenter = sandbox
            .command(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let host_pid = forked_child(nsenter.id());
        // NSpid lists the PID in each namespace, the innermost (the sandbox's) last.
        let nspid = host_process(host_pid)
            .and_then(|p| p.status().ok())
            .and_then(|s| s.nspid)
            .expect("the forked process's status");
        let pid = nspid
            .last()
            .and_then(|p| u32::try_from(*p).ok())
            .expect("a PID in the sandbox");
        Manual {
            nsenter,
            host_pid,
            pid,
        }
    }

    /// Whether the process has exited: gone from /proc, or a zombie (nsenter, its parent,
    /// reaps it at once and exits).
    pub fn exited(&self) -> bool {
        let stat = host_process(self.host_pid).and_then(|p| p.stat().ok());
        stat.is_none_or(|s| matches!(s.state, 'Z' | 'X'))
    }

    /// Kills the process (SIGKILL by its host PID, only while nsenter has not reaped it, so the
    /// PID is still its own) and waits for nsenter.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.nsenter.try_wait() {
            let pid = i32::try_from(self.host_pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            let _ = self.nsenter.wait();
        }
    }
}

impl Drop for Manual {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The host's process `pid`, if it is there.
fn host_process(pid: u32) -> Option<procfs::process::Process> {
    procfs::process::Process::new(i32::try_from(pid).ok()?).ok()
}

fn forked_child(parent: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let path = format!("/proc/{parent}/task/{parent}/children");
        let children = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "nsenter {parent} never forked");
        std::thread::sleep(Duration::from_millis(5));
    }
}

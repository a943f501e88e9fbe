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
        let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
        let ns = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .unwrap();
        let pid = ns.split_whitespace().last().unwrap().parse().unwrap();
        Manual {
            nsenter,
            host_pid,
            pid,
        }
    }

    /// Whether the process has exited: gone from /proc, or a zombie (nsenter, its parent,
    /// reaps it at once and exits).
    pub fn exited(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.host_pid));
        stat.map_or(true, |s| {
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next());
            matches!(state, Some("Z" | "X"))
        })
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

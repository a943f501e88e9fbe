//! A process started inside a sandbox by hand, in no unit: the stray core of the loop proof.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::sandbox::Sandbox;

/// A process started inside the sandbox by hand (nsenter forks it into the PID namespace);
/// stopped by its host PID on drop.
pub struct Manual {
    nsenter: Child,
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

    fn kill(&mut self) {
        if let Ok(None) = self.nsenter.try_wait() {
            let pid = self.host_pid.to_string();
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", &pid])
                .status();
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

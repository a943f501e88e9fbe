//! node_exporter's systemd collector (Debian's prometheus-node-exporter), run inside a sandbox's
//! namespaces and stopped by its own PID.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::support::sandbox::Sandbox;
use crate::support::warden::{child_pid, http_get};

pub const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// node_exporter run inside the sandbox's namespaces; dropping it stops it by PID.
pub struct NodeExporter {
    /// nsenter forks to enter the PID namespace: the exporter is its child.
    nsenter: Child,
    pid: Option<u32>,
    pub addr: SocketAddr,
}

impl NodeExporter {
    pub fn start(sandbox: &Sandbox) -> NodeExporter {
        let addr = free_addr();
        let log_path = sandbox.state_dir().join("node-exporter.log");
        let log = File::create(&log_path).expect("creating the node_exporter log");
        let nsenter = sandbox
            .command(NODE_EXPORTER)
            .arg(format!("--web.listen-address={addr}"))
            .args(["--collector.disable-defaults", "--collector.systemd"])
            .arg("--collector.systemd.unit-include=xray-tunnel-.*")
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting node_exporter under nsenter");
        // The guard exists before anything can fail, so a panic below still stops the exporter.
        let mut exporter = NodeExporter {
            nsenter,
            pid: None,
            addr,
        };
        exporter.pid = Some(child_pid(exporter.nsenter.id()));
        exporter.wait_until_it_answers(&log_path);
        exporter
    }

    pub fn pid(&self) -> u32 {
        self.pid.expect("the exporter's PID is known once started")
    }

    fn wait_until_it_answers(&mut self, log: &Path) {
        let deadline = Instant::now() + WAIT;
        while !http_get(self.addr, "/").is_ok_and(|(status, _)| status == 200) {
            let exited = self.nsenter.try_wait().ok().flatten();
            let log = || fs::read_to_string(log).unwrap_or_default();
            assert!(
                exited.is_none(),
                "node_exporter exited: {:?}\n{}",
                exited,
                log()
            );
            assert!(
                Instant::now() < deadline,
                "node_exporter never answered\n{}",
                log()
            );
            thread::sleep(POLL);
        }
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let Some(pid) = self.pid else {
            // nsenter never forked: stop nsenter itself, by its PID.
            let _ = self.nsenter.kill();
            let _ = self.nsenter.wait();
            return;
        };
        let _ = crate::support::signal::send(pid, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.nsenter.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        if matches!(self.nsenter.try_wait(), Ok(None)) {
            let _ = crate::support::signal::send(pid, Signal::KILL);
        }
        let _ = self.nsenter.wait();
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    listener.local_addr().expect("the probe port's address")
}

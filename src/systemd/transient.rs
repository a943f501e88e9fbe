//! Running one command to its end in a transient, sandboxed service (`StartTransientUnit`), as
//! an unprivileged user, with its output on a file descriptor the caller reads.
//!
//! The service is `Type=oneshot`: its start job ends when the command exits, `done` for a
//! success and `failed` otherwise. A failed unit stays loaded so that its `Result` and exit
//! status can be read; it is then collected with `ResetFailedUnit`. A successful one is
//! collected by systemd at once.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use zbus::zvariant::{Fd, Value};

use super::{Client, JobResult, SystemdError};

/// `EPERM`, answered by the syscall filter instead of killing the process.
const EPERM: i32 = 1;

/// One command to run in a transient service.
#[derive(Debug)]
pub struct TransientRun {
    /// The unit name, `*.service`; it must not exist yet.
    pub unit: String,
    pub description: String,
    /// `argv[0]` is the absolute path of the program.
    pub argv: Vec<String>,
    pub user: String,
    pub group: String,
    /// Paths the command may read even if they are somewhere it otherwise cannot see (each may
    /// be missing). Everything else is read-only anyway (`ProtectSystem=strict`).
    pub read_only: Vec<PathBuf>,
    /// Paths the command may write (each may be missing).
    pub read_write: Vec<PathBuf>,
    /// systemd kills the command after this long (`TimeoutStartSec`).
    pub timeout: Duration,
    /// Where stdout and stderr go. It is sent to systemd and closed here once the unit is queued.
    pub output: OwnedFd,
}

/// How a transient service ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The command exited 0.
    Success,
    /// The command or its set-up failed: the service's `Result` (`exit-code`, `signal`,
    /// `timeout`, `core-dump`, ...), `ExecMainCode` (1 exited, 2 killed, 3 dumped) and
    /// `ExecMainStatus` (an exit status, or a signal number). Exit statuses 200 to 243 are
    /// systemd's own: the command never ran (203 EXEC, 217 USER, 226 NAMESPACE, ...).
    Failed {
        result: String,
        code: i32,
        status: i32,
    },
    /// The start job ended otherwise (`canceled`, `dependency`, `timeout`, ...).
    Job(JobResult),
}

impl Client {
    /// Runs `run` in a transient service and waits for its end: at most `run.timeout` plus
    /// a margin for systemd's bookkeeping. If that wait expires, the unit is stopped.
    pub async fn run_transient(&self, run: TransientRun) -> Result<Finished, SystemdError> {
        let unit = run.unit.clone();
        let wait = run.timeout + self.timeout + Duration::from_secs(5);
        let properties = properties(&run);
        let body = (unit.as_str(), "fail", properties, no_aux());
        let job = self.queue_job("StartTransientUnit", &body).await;
        // systemd holds its own copy now; ours must go, or the reader never sees EOF.
        drop(body);
        drop(run);
        let result = match job {
            Ok(queued) => self.job_result("StartTransientUnit", queued, wait).await,
            Err(err) => return Err(err),
        };
        let result = match result {
            Ok(result) => result,
            Err(err) => {
                let _ = self.stop_unit(&unit).await;
                let _ = self.reset_failed(&unit).await;
                return Err(err);
            }
        };
        Ok(match result {
            JobResult::Done => Finished::Success,
            JobResult::Failed => {
                let status = self.unit_status(&unit).await;
                let _ = self.reset_failed(&unit).await;
                let status = status?;
                Finished::Failed {
                    result: status.result,
                    code: status.exec_main_code as i32,
                    status: status.exec_main_status as i32,
                }
            }
            other => {
                let _ = self.reset_failed(&unit).await;
                Finished::Job(other)
            }
        })
    }
}

type Aux<'a> = Vec<(&'a str, Vec<(&'a str, Value<'a>)>)>;

fn no_aux<'a>() -> Aux<'a> {
    Vec::new()
}

fn paths(list: &[PathBuf]) -> Vec<String> {
    // "-": a missing path does not fail the set-up.
    list.iter().map(|p| format!("-{}", p.display())).collect()
}

/// The service's settings: the sandbox of a tunnel unit (deploy/tunnel.service.template), with
/// no capabilities at all and nothing writable but `read_write`.
fn properties(run: &TransientRun) -> Vec<(&'static str, Value<'_>)> {
    let exec = vec![(run.argv[0].clone(), run.argv.clone(), false)];
    let families = vec!["AF_INET", "AF_INET6", "AF_UNIX"];
    let mut list: Vec<(&'static str, Value<'_>)> = vec![
        ("Description", Value::from(run.description.as_str())),
        ("Type", Value::from("oneshot")),
        ("ExecStart", Value::from(exec)),
        ("User", Value::from(run.user.as_str())),
        ("Group", Value::from(run.group.as_str())),
        ("StandardInput", Value::from("null")),
        ("StandardOutputFileDescriptor", fd(&run.output)),
        ("StandardErrorFileDescriptor", fd(&run.output)),
        ("TimeoutStartUSec", Value::from(micros(run.timeout))),
        ("UMask", Value::from(0o077u32)),
        ("ProtectSystem", Value::from("strict")),
        ("ProtectHome", Value::from("yes")),
        ("ReadOnlyPaths", Value::from(paths(&run.read_only))),
        ("ReadWritePaths", Value::from(paths(&run.read_write))),
        ("ProtectProc", Value::from("invisible")),
        ("ProcSubset", Value::from("pid")),
        ("DevicePolicy", Value::from("closed")),
        ("KeyringMode", Value::from("private")),
        // No capabilities: a config test binds nothing.
        ("CapabilityBoundingSet", Value::from(0u64)),
        ("AmbientCapabilities", Value::from(0u64)),
        // The namespaces the service may create: none.
        ("RestrictNamespaces", Value::from(0u64)),
        ("RestrictAddressFamilies", Value::from((true, families))),
        ("SystemCallArchitectures", Value::from(vec!["native"])),
        // Applied in order, like the template's three lines.
        (
            "SystemCallFilter",
            Value::from((true, vec!["@system-service"])),
        ),
        (
            "SystemCallFilter",
            Value::from((false, vec!["@privileged", "@resources"])),
        ),
        ("SystemCallFilter", Value::from((true, vec!["setrlimit"]))),
        ("SystemCallErrorNumber", Value::from(EPERM)),
    ];
    for flag in [
        "PrivateTmp",
        "PrivateDevices",
        "PrivateIPC",
        "PrivateMounts",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RemoveIPC",
        "NoNewPrivileges",
        "RestrictSUIDSGID",
        "RestrictRealtime",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ] {
        list.push((flag, Value::from(true)));
    }
    list
}

fn fd(owned: &OwnedFd) -> Value<'_> {
    Value::Fd(Fd::from(owned.as_fd()))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting of a tunnel unit's [Service] section, but those about restarting and the
    /// log file, is set on the transient service too: a test runs in the tunnel's sandbox.
    #[test]
    fn the_sandbox_of_the_tunnel_template_is_applied() {
        let (_tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        let run = TransientRun {
            unit: "x.service".into(),
            description: String::new(),
            argv: vec!["/bin/true".into()],
            user: "nobody".into(),
            group: "nogroup".into(),
            read_only: Vec::new(),
            read_write: Vec::new(),
            timeout: Duration::from_secs(1),
            output: OwnedFd::from(rx),
        };
        let names: Vec<&str> = properties(&run).into_iter().map(|(n, _)| n).collect();
        let template = crate::lifecycle::template::BUILT_IN;
        let service = template.split("[Service]").nth(1).unwrap();
        let service = service.split("[Install]").next().unwrap();
        let not_for_a_test = ["Restart", "RestartSec", "StandardOutput", "StandardError"];
        let mut checked = 0;
        for line in service.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, _)) = line.split_once('=') else {
                continue;
            };
            checked += 1;
            assert!(
                not_for_a_test.contains(&key) || names.contains(&key),
                "the template sets {key}, the transient test unit does not"
            );
        }
        assert!(checked > 30, "{checked} settings read from the template");
    }
}

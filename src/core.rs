//! The core binary itself (`xray` or `v2ray`): testing a config the way the core would load it.
//!
//! The test parses JSON that callers of the API and the tunnel user control, and a config can
//! make the core open files (`log.error`, `log.access`). So it never runs as the warden (root):
//! [`Tester::test`] runs it as the tunnel user and group, in a transient systemd service with a
//! tunnel unit's sandbox (everything read-only but the log dir, no capabilities; see
//! `src/systemd/transient.rs`), and reads its output through a pipe.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::config::TunnelsConfig;
use crate::domain::Flavour;
use crate::systemd::{Client, Finished, JobResult, SystemdError, TransientRun};

/// How long a config test may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);
/// At most this much of the core's output is kept (its end: the complaint is last).
const OUTPUT_CAP: usize = 64 * 1024;
/// systemd's own exit statuses (the command never ran) are 200 to 243.
const SYSTEMD_STATUSES: std::ops::RangeInclusive<i32> = 200..=243;

#[derive(Debug, thiserror::Error)]
pub enum CoreTestError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    /// systemd could not set the test up (exit status 200-243: no such binary, user or path).
    #[error("systemd could not run {binary} for the test: {result}, status {status}")]
    NotRun {
        binary: String,
        result: String,
        status: i32,
    },
    #[error("the config test could not run in systemd: {0}")]
    Systemd(#[from] SystemdError),
    #[error("the core's config test did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the core rejects the config: {0}")]
    Rejected(String),
}

/// The flavour a core binary is, from its file name (`v2ray*` is V2Ray, anything else Xray).
pub fn binary_flavour(binary: &Path) -> Flavour {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.starts_with("v2ray") {
        Flavour::V2ray
    } else {
        Flavour::Xray
    }
}

/// The command line of the test: `xray run -test -config F` or `v2ray -test -config F`.
fn test_argv(binary: &Path, config: &Path) -> Vec<String> {
    let mut argv = vec![binary.display().to_string()];
    if binary_flavour(binary) == Flavour::Xray {
        argv.push("run".into());
    }
    argv.extend(["-test".into(), "-config".into()]);
    argv.push(config.display().to_string());
    argv
}

/// Who runs config tests and with what: the tunnels' core, user, group and log dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tester {
    pub core_binary: PathBuf,
    pub user: String,
    pub group: String,
    /// The one directory a tunnel may write, so a test may too.
    pub log_dir: PathBuf,
}

impl Tester {
    pub fn new(tunnels: &TunnelsConfig) -> Self {
        Self {
            core_binary: tunnels.core_binary.clone(),
            user: tunnels.user.clone(),
            group: tunnels.group.clone(),
            log_dir: tunnels.log_dir.clone(),
        }
    }

    /// Runs the core's config test on `config` through `client`'s systemd, as the tunnel user
    /// in a tunnel's sandbox; `config` must be readable by that user. systemd kills the test
    /// after [`TEST_TIMEOUT`].
    pub async fn test(&self, client: &Client, config: &Path) -> Result<(), CoreTestError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let binary = self.core_binary.display().to_string();
        let spawn_error = |source| CoreTestError::Spawn {
            binary: binary.clone(),
            source,
        };
        let (sender, mut receiver) = tokio::net::unix::pipe::pipe().map_err(spawn_error)?;
        let run = TransientRun {
            unit: format!(
                "xray-warden-config-test-{}-{seq}.service",
                std::process::id()
            ),
            description: format!("xray-warden: config test of {}", config.display()),
            argv: test_argv(&self.core_binary, config),
            user: self.user.clone(),
            group: self.group.clone(),
            read_only: vec![config.to_owned()],
            read_write: vec![self.log_dir.clone()],
            timeout: TEST_TIMEOUT,
            output: sender.into_blocking_fd().map_err(spawn_error)?,
        };
        let (finished, output) = read_while(client.run_transient(run), &mut receiver).await;
        match finished? {
            Finished::Success => Ok(()),
            Finished::Failed { result, .. } if result == "timeout" => {
                Err(CoreTestError::Timeout(TEST_TIMEOUT))
            }
            Finished::Job(JobResult::Timeout) => Err(CoreTestError::Timeout(TEST_TIMEOUT)),
            Finished::Failed {
                result,
                code: CLD_EXITED,
                status,
            } if SYSTEMD_STATUSES.contains(&status) => Err(CoreTestError::NotRun {
                binary,
                result,
                status,
            }),
            Finished::Failed { .. } => Err(CoreTestError::Rejected(tail(&output))),
            Finished::Job(job) => Err(CoreTestError::NotRun {
                binary,
                result: format!("the start job ended with {job}"),
                status: 0,
            }),
        }
    }
}

/// `ExecMainCode` of a process that exited (rather than being killed).
const CLD_EXITED: i32 = 1;

/// Awaits `work` while reading `pipe` (so a chatty core never blocks on a full pipe), then
/// drains what is left; keeps the last [`OUTPUT_CAP`] bytes.
async fn read_while<T>(
    work: impl Future<Output = T>,
    pipe: &mut tokio::net::unix::pipe::Receiver,
) -> (T, Vec<u8>) {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut open = true;
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            read = pipe.read(&mut buf), if open => match read {
                Ok(0) | Err(_) => open = false,
                Ok(n) => keep(&mut kept, &buf[..n]),
            },
        }
    };
    // The command has exited: what it wrote is in the pipe already.
    while open {
        match pipe.try_read(&mut buf) {
            Ok(0) | Err(_) => open = false,
            Ok(n) => keep(&mut kept, &buf[..n]),
        }
    }
    (result, kept)
}

fn keep(kept: &mut Vec<u8>, more: &[u8]) {
    kept.extend_from_slice(more);
    if kept.len() > OUTPUT_CAP {
        kept.drain(..kept.len() - OUTPUT_CAP);
    }
}

/// The last three non-blank lines of the output, joined: the cores print a banner first and
/// their complaint last.
fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(3)
        .collect();
    lines.reverse();
    lines.join(" | ")
}

/// The test run by this process itself, as whoever runs it: only for unit tests of code above
/// the tester, which have no systemd.
#[cfg(test)]
pub async fn test_locally(binary: &Path, config: &Path) -> Result<(), CoreTestError> {
    let argv = test_argv(binary, config);
    let output = tokio::process::Command::new(binary)
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(TEST_TIMEOUT, output)
        .await
        .map_err(|_| CoreTestError::Timeout(TEST_TIMEOUT))?
        .map_err(|source| CoreTestError::Spawn {
            binary: binary.display().to_string(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let both = [output.stdout, output.stderr].concat();
    Err(CoreTestError::Rejected(tail(&both)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavour_from_the_binary_name() {
        assert_eq!(binary_flavour(Path::new("/usr/bin/v2ray")), Flavour::V2ray);
        assert_eq!(
            binary_flavour(Path::new("/usr/local/bin/xray")),
            Flavour::Xray
        );
    }

    #[test]
    fn each_flavour_gets_its_test_arguments() {
        let config = Path::new("/etc/t/x.json");
        assert_eq!(
            test_argv(Path::new("/usr/bin/v2ray"), config),
            ["/usr/bin/v2ray", "-test", "-config", "/etc/t/x.json"]
        );
        assert_eq!(
            test_argv(Path::new("/usr/local/bin/xray"), config),
            [
                "/usr/local/bin/xray",
                "run",
                "-test",
                "-config",
                "/etc/t/x.json"
            ]
        );
    }

    #[test]
    fn the_complaint_is_the_last_lines_and_the_output_is_capped() {
        assert_eq!(tail(b"banner\n\nA\nB\n  \nC\n"), "A | B | C");
        let mut kept = Vec::new();
        keep(&mut kept, &vec![b'x'; OUTPUT_CAP]);
        keep(&mut kept, b"end");
        assert_eq!(kept.len(), OUTPUT_CAP);
        assert!(kept.ends_with(b"xend"));
    }

    #[tokio::test]
    async fn a_real_v2ray_tests_configs() {
        let v2ray = Path::new("/usr/bin/v2ray");
        if !v2ray.exists() {
            panic!("/usr/bin/v2ray is missing: scripts/install-deps.sh installs it");
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/core");
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"inbounds": [{"port": 1, "listen": "127.0.0.1", "protocol": "socks"}], "outbounds": [{"protocol": "freedom"}]}"#).unwrap();
        test_locally(v2ray, &good).await.unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"inbounds": [{"protocol": "no-such-protocol"}]}"#).unwrap();
        let err = test_locally(v2ray, &bad).await.unwrap_err();
        assert!(matches!(err, CoreTestError::Rejected(_)), "{err}");
        let missing = test_locally(Path::new("/nonexistent/xray"), &good)
            .await
            .unwrap_err();
        assert!(matches!(missing, CoreTestError::Spawn { .. }), "{missing}");
    }
}

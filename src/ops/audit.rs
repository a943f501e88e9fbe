//! The audit log: one JSON line per mutating API call (time, caller, action, target, result),
//! appended to `api.audit_log`, and `xray_warden_actions_total{action,result}`.
//!
//! Cardinality: `action` is an [`Action`], a closed set of twelve, so no request text can
//! become a label value; `result` is `ok` or an error's stable code, both `&'static str` (the
//! codes of [`super::OpError::code`] and of the alert results). Callers, targets and messages
//! go to the log line only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use prometheus::{IntCounterVec, Opts, Registry};
use tracing::warn;

/// Every action the audit log records: the `action` label's whole set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    TunnelPut,
    TunnelStart,
    TunnelStop,
    TunnelRestart,
    TunnelDelete,
    TunnelsRestartAll,
    TunnelsEmergencyCleanup,
    OrphansCleanup,
    OrphansCleanupDryRun,
    Sync,
    SyncForce,
    /// Alertmanager asked for an orphan cleanup (`warden_action="cleanup_orphan"`).
    AlertCleanupOrphan,
}

impl Action {
    pub const ALL: [Action; 12] = [
        Self::TunnelPut,
        Self::TunnelStart,
        Self::TunnelStop,
        Self::TunnelRestart,
        Self::TunnelDelete,
        Self::TunnelsRestartAll,
        Self::TunnelsEmergencyCleanup,
        Self::OrphansCleanup,
        Self::OrphansCleanupDryRun,
        Self::Sync,
        Self::SyncForce,
        Self::AlertCleanupOrphan,
    ];

    /// The name in the log line and the label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TunnelPut => "tunnel.put",
            Self::TunnelStart => "tunnel.start",
            Self::TunnelStop => "tunnel.stop",
            Self::TunnelRestart => "tunnel.restart",
            Self::TunnelDelete => "tunnel.delete",
            Self::TunnelsRestartAll => "tunnels.restart_all",
            Self::TunnelsEmergencyCleanup => "tunnels.emergency_cleanup",
            Self::OrphansCleanup => "orphans.cleanup",
            Self::OrphansCleanupDryRun => "orphans.cleanup_dry_run",
            Self::Sync => "sync",
            Self::SyncForce => "sync.force",
            Self::AlertCleanupOrphan => "alert.cleanup_orphan",
        }
    }
}

#[derive(Clone)]
pub struct Audit {
    path: Option<Arc<PathBuf>>,
    /// Serialises appends from concurrent requests so lines never interleave.
    lock: Arc<Mutex<()>>,
    actions: IntCounterVec,
}

impl Audit {
    /// Appends to `path` (`None`: count only). Registers the actions counter in `registry`.
    pub fn new(path: Option<PathBuf>, registry: &Registry) -> Self {
        let actions = IntCounterVec::new(
            Opts::new(
                "xray_warden_actions_total",
                "Mutating API calls, by action and result (ok, or the error code answered).",
            ),
            &["action", "result"],
        )
        .expect("static metric spec");
        registry
            .register(Box::new(actions.clone()))
            .expect("registered once");
        Self {
            path: path.map(Arc::new),
            lock: Arc::default(),
            actions,
        }
    }

    /// Records one mutating call. The file is written on the blocking pool (an append can
    /// stall on a slow disk; the two async workers must not). Failing to write the log is
    /// logged, never fatal to the call.
    pub async fn record(&self, caller: &str, action: Action, target: &str, result: &'static str) {
        let action = action.as_str();
        self.actions.with_label_values(&[action, result]).inc();
        let Some(path) = self.path.clone() else {
            return;
        };
        let time = UNIX_EPOCH.elapsed().unwrap_or_default().as_secs_f64();
        let line = serde_json::json!({
            "time": time, "caller": caller, "action": action, "target": target, "result": result,
        });
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let lock = self.lock.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            append(&path, &bytes)
        });
        let failed = match written.await {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(join) => join.to_string(),
        };
        let path = self.path.as_deref().map(|p| p.display().to_string());
        warn!(path, error = %failed, "cannot append to the audit log");
    }
}

/// One write(2) of the whole line on an O_APPEND file: a reader tailing the log never sees half
/// a line (writeln! on a File may split it into several writes).
fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let append = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(bytes))
    };
    append().or_else(|err| match path.parent() {
        // First write on a fresh host: create the directory, then try once more.
        Some(dir) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).and_then(|()| append())
        }
        _ => Err(err),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/audit");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[tokio::test]
    async fn appends_json_lines_and_counts() {
        let path = scratch("audit");
        let registry = Registry::new();
        let audit = Audit::new(Some(path.clone()), &registry);
        audit
            .record("127.0.0.1:5000", Action::TunnelDelete, "eu1", "ok")
            .await;
        audit
            .record("127.0.0.1:5001", Action::TunnelPut, "../x", "invalid_id")
            .await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["action"], "tunnel.put");
        assert_eq!(lines[1]["target"], "../x");
        assert_eq!(lines[1]["result"], "invalid_id");
        assert_eq!(
            audit
                .actions
                .with_label_values(&["tunnel.delete", "ok"])
                .get(),
            1
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn action_names_are_distinct_and_label_safe() {
        let names: std::collections::BTreeSet<&str> =
            Action::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), Action::ALL.len());
        let safe = |c: char| c.is_ascii_lowercase() || c == '.' || c == '_';
        assert!(names.iter().all(|n| n.chars().all(safe)), "{names:?}");
    }

    /// An append that blocks (here: a FIFO nobody reads, whose open(2) waits for a reader)
    /// stalls only its own call, not the runtime's worker thread: a timer on the same
    /// single-threaded runtime still fires. Written inline, the append would hold the thread.
    #[test]
    fn a_stalled_append_does_not_hold_the_async_worker() {
        let path = scratch("fifo");
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        assert!(made.unwrap().success(), "mkfifo");
        let (tick_tx, tick_rx) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let audit_path = path.clone();
        let worker = std::thread::spawn(move || {
            runtime.block_on(async move {
                let audit = Audit::new(Some(audit_path), &Registry::new());
                let stalled = tokio::spawn(async move {
                    audit.record("cli", Action::Sync, "*", "ok").await;
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tick_tx.send(());
                stalled.await.unwrap();
            });
        });
        let ticked = tick_rx.recv_timeout(Duration::from_secs(3));
        // Give the stalled open(2) its reader, so every thread ends either way.
        let mut reader = std::fs::File::open(&path).unwrap();
        let mut line = String::new();
        std::io::Read::read_to_string(&mut reader, &mut line).unwrap();
        worker.join().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            ticked.is_ok(),
            "the audit append blocked the runtime thread"
        );
        assert!(line.contains("\"action\":\"sync\""), "{line}");
    }
}

//! The audit log: one JSON line per mutating API call (time, caller, action, target, result),
//! appended to `api.audit_log`, and `xray_warden_actions_total{action,result}`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use prometheus::{IntCounterVec, Opts, Registry};
use tracing::warn;

#[derive(Clone)]
pub struct Audit {
    path: Option<PathBuf>,
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
            path,
            lock: Arc::default(),
            actions,
        }
    }

    /// Records one mutating call. Failing to write the log is logged, never fatal to the call.
    pub fn record(&self, caller: &str, action: &str, target: &str, result: &str) {
        self.actions.with_label_values(&[action, result]).inc();
        let Some(path) = &self.path else { return };
        let time = UNIX_EPOCH.elapsed().unwrap_or_default().as_secs_f64();
        let line = serde_json::json!({
            "time": time, "caller": caller, "action": action, "target": target, "result": result,
        });
        // One write(2) of the whole line on an O_APPEND file: a reader tailing the log never
        // sees half a line (writeln! on a File may split it into several writes).
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let append = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| file.write_all(&bytes))
        };
        let written = append().or_else(|err| match path.parent() {
            // First write on a fresh host: create the directory, then try once more.
            Some(dir) if err.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).and_then(|()| append())
            }
            _ => Err(err),
        });
        if let Err(err) = written {
            warn!(path = %path.display(), error = %err, "cannot append to the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_json_lines_and_counts() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/audit");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("audit-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let registry = Registry::new();
        let audit = Audit::new(Some(path.clone()), &registry);
        audit.record("127.0.0.1:5000", "tunnel.delete", "eu1", "ok");
        audit.record("127.0.0.1:5001", "tunnel.create", "../x", "invalid_id");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
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
}

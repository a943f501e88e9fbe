//! What the remediation has done, kept across restarts in `{state_dir}/remediation.json`: the
//! incidents acted on (so a re-send, an Alertmanager HA duplicate or a warden restart never
//! repeats an action) and the time of each action (for the per-tunnel cooldown and the hourly
//! budget). Written atomically after every action.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// File name under the state directory.
pub const FILE: &str = "remediation.json";
/// Incidents older than this are forgotten (Alertmanager re-sends an incident with the same
/// startsAt only while it fires; a week covers any repeat_interval an operator would set).
const KEEP_INCIDENTS: Duration = Duration::from_secs(7 * 24 * 3600);
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    /// `fingerprint@startsAt` -> unix seconds it was acted on.
    incidents: BTreeMap<String, u64>,
    /// Every action still inside the cooldown or the budget's hour.
    actions: Vec<Action>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Action {
    tunnel: String,
    at: u64,
}

/// The persisted record, loaded once and written after each change.
#[derive(Debug)]
pub struct Incidents {
    path: PathBuf,
    stored: Stored,
}

impl Incidents {
    /// Loads `{state_dir}/remediation.json`. A missing file is an empty record; an unreadable
    /// or corrupt one too, with a warning: every action re-checks its orphan anyway, so the
    /// worst a lost record allows is a refused or harmless repeat.
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(FILE);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                warn!(path = %path.display(), error = %err, "corrupt remediation record: starting empty");
                Stored::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(err) => {
                warn!(path = %path.display(), error = %err, "cannot read the remediation record: starting empty");
                Stored::default()
            }
        };
        Self { path, stored }
    }

    pub fn seen(&self, incident: &str) -> bool {
        self.stored.incidents.contains_key(incident)
    }

    /// The last action on `tunnel`.
    pub fn last_action(&self, tunnel: &str) -> Option<SystemTime> {
        let last = self.stored.actions.iter().filter(|a| a.tunnel == tunnel);
        last.map(|a| a.at).max().map(from_secs)
    }

    /// Actions in the hour before `now`.
    pub fn actions_last_hour(&self, now: SystemTime) -> usize {
        let since = secs(now).saturating_sub(HOUR.as_secs());
        self.stored.actions.iter().filter(|a| a.at > since).count()
    }

    /// Records an action on `tunnel` for `incident` at `now`, forgets what no rule needs any
    /// more (actions older than `keep_actions`), and writes the file atomically, on the
    /// blocking pool (the write fsyncs; the async workers must not wait on the disk).
    pub async fn record(
        &mut self,
        incident: &str,
        tunnel: &str,
        now: SystemTime,
        keep_actions: Duration,
    ) -> std::io::Result<()> {
        let now = secs(now);
        self.stored.incidents.insert(incident.to_owned(), now);
        self.stored.actions.push(Action {
            tunnel: tunnel.to_owned(),
            at: now,
        });
        let keep_actions = keep_actions.max(HOUR).as_secs();
        self.stored
            .incidents
            .retain(|_, at| now.saturating_sub(*at) <= KEEP_INCIDENTS.as_secs());
        self.stored
            .actions
            .retain(|a| now.saturating_sub(a.at) <= keep_actions);
        let bytes = serde_json::to_vec_pretty(&self.stored).map_err(std::io::Error::other)?;
        let path = self.path.clone();
        let write = move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            crate::tunnelcfg::write_atomic(&path, &bytes)
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(std::io::Error::other)?
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn from_secs(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/unit-scratch/incidents")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn survives_a_restart_and_counts_the_last_hour() {
        let dir = scratch("restart");
        let t0 = from_secs(1_800_000_000);
        let mut record = Incidents::load(&dir);
        assert!(!record.seen("f@s"));
        record
            .record("f@s", "eu1", t0, Duration::from_secs(1800))
            .await
            .unwrap();
        let later = t0 + Duration::from_secs(3000);
        record
            .record("g@s", "us2", later, Duration::from_secs(1800))
            .await
            .unwrap();

        let again = Incidents::load(&dir);
        assert!(again.seen("f@s") && again.seen("g@s"));
        assert_eq!(again.last_action("eu1"), Some(t0));
        assert_eq!(again.last_action("nope"), None);
        assert_eq!(again.actions_last_hour(later), 2);
        assert_eq!(again.actions_last_hour(t0 + Duration::from_secs(3601)), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_file_starts_empty_and_is_replaced_whole() {
        let dir = scratch("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE), b"{not json").unwrap();
        let mut record = Incidents::load(&dir);
        assert!(!record.seen("f@s"));
        record
            .record("f@s", "eu1", from_secs(1_800_000_000), HOUR)
            .await
            .unwrap();
        let text = std::fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

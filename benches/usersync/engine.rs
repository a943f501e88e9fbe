//! The engine as the daemon runs it for one tunnel, and the witnesses of what it did: its
//! operations counter and the files of its directories.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prometheus::Registry;
use xray_warden::config::Config;
use xray_warden::domain::TunnelId;
use xray_warden::users;
use xray_warden::usersync::engine::{Engine, Outcome, Settings, Target};
use xray_warden::usersync::metrics::SyncMetrics;

use crate::live::LiveCore;
use crate::{CALL_TIMEOUT, CONCURRENCY, TUNNEL};

/// The engine as the daemon runs it for one tunnel, with its own registry.
pub struct Warden {
    engine: Engine,
    pub registry: Registry,
    target: Target,
    pub state_dir: PathBuf,
}

impl Warden {
    pub fn new(core: &LiveCore, state_dir: PathBuf) -> Warden {
        // No configured flavour, for this tunnel or any: the engine detects it.
        let mut flavours = Config::default().tunnels;
        flavours.flavour = None;
        flavours.flavours.clear();
        let settings = Settings {
            max_remove_fraction: 0.5,
            concurrency: CONCURRENCY,
            call_timeout: CALL_TIMEOUT,
            flavours,
            state_dir: state_dir.clone(),
        };
        let registry = Registry::new();
        // The core is started by hand, not by systemd: its start time never changes.
        let clock = std::sync::Arc::new(|_: &TunnelId| Some(1));
        let engine = Engine::new(settings, SyncMetrics::new(&registry), clock);
        let target = Target {
            id: TunnelId::new(TUNNEL).expect("a valid id"),
            config_path: core.config.clone(),
            core_start_usec: 1,
        };
        Warden {
            engine,
            registry,
            target,
            state_dir,
        }
    }

    /// One round, removals allowed, as the daemon's loop makes it (`force`: as a forced sync).
    pub async fn sync(
        &mut self,
        doc: &Arc<users::Document>,
        force: bool,
    ) -> Result<Outcome, String> {
        let synced = self.engine.sync(&self.target, doc, true, force).await;
        synced.map_err(|e| e.to_string())
    }
}

/// `xray_usersync_operations_total` for one op and result, over every tunnel.
pub fn counter(registry: &Registry, op: &str, result: &str) -> u64 {
    let wanted = |m: &prometheus::proto::Metric| {
        let label = |name: &str| m.get_label().iter().find(|l| l.name() == name);
        label("op").is_some_and(|l| l.value() == op)
            && label("result").is_some_and(|l| l.value() == result)
    };
    operations(registry).filter(|m| wanted(m)).map(value).sum()
}

/// `xray_usersync_operations_total` summed over every label.
pub fn counter_sum(registry: &Registry) -> u64 {
    operations(registry).map(value).sum()
}

fn operations(registry: &Registry) -> impl Iterator<Item = prometheus::proto::Metric> {
    let families = registry.gather().into_iter();
    let ours = families.filter(|f| f.name() == "xray_usersync_operations_total");
    ours.flat_map(|f| f.get_metric().to_vec())
}

fn value(m: prometheus::proto::Metric) -> u64 {
    m.get_counter().get_value() as u64
}

/// What identifies one version of a file: a rewrite (rename over) changes the inode, a write in
/// place the mtime, a chmod or chown the ctime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    path: PathBuf,
    inode: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// Every file of `dirs`, sorted by path.
pub fn stamps(dirs: &[&Path]) -> Vec<Stamp> {
    let mut all = Vec::new();
    for dir in dirs {
        let entries = fs::read_dir(dir).expect("listing a scratch dir");
        for entry in entries.map(|e| e.expect("a dir entry")) {
            let meta = entry.metadata().expect("a file's metadata");
            let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
            all.push(Stamp {
                path: entry.path(),
                inode: meta.ino(),
                size: meta.size(),
                mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
                ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            });
        }
    }
    all.sort_by(|a, b| a.path.cmp(&b.path));
    all
}

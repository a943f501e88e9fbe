//! The warden's column: `Engine::sync` from zero users, then the same users again (no change,
//! both kinds of round: [`crate::nochange`]).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use prometheus::Registry;
use xray_warden::config::Config;
use xray_warden::domain::{TunnelId, User};
use xray_warden::tunnelcfg;
use xray_warden::users;
use xray_warden::usersync::engine::{Engine, Outcome, Settings, Target};
use xray_warden::usersync::metrics::SyncMetrics;

use crate::adds::{Adds, held};
use crate::cores::Core;
use crate::live::{CpuMark, LiveCore, reset_peak_rss, status_kib};
use crate::nochange::{NoChange, no_change};
use crate::{CALL_TIMEOUT, CONCURRENCY, RSS_SETTLE, TAG, TUNNEL};

/// The warden's sync, from zero users and then with nothing to do.
pub struct WardenRun {
    pub adds: Adds,
    pub outcome: Result<Outcome, String>,
    /// `xray_usersync_operations_total{op="add",result="ok"}` after the full sync.
    pub add_ops: u64,
    pub clients_in_file: usize,
    pub invalid_in_file: usize,
    pub self_rss_before: u64,
    pub self_hwm: Option<u64>,
    pub no_change: NoChange,
}

/// The engine as the daemon runs it for one tunnel, with its own registry.
pub struct Warden {
    engine: Engine,
    pub registry: Registry,
    target: Target,
    pub state_dir: PathBuf,
}

impl Warden {
    fn new(core: &LiveCore, state_dir: PathBuf) -> Warden {
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

pub async fn bench_warden(
    kind: Core,
    dir: &Path,
    doc: &Arc<users::Document>,
    repeats: usize,
) -> WardenRun {
    let mut core = LiveCore::start(kind, &dir.join("warden"));
    let mut warden = Warden::new(&core, dir.join("warden/state"));
    let core_rss_idle = core.rss_kib();
    let self_rss_before = status_kib("self", "VmRSS:").unwrap_or(0);
    let hwm_reset = reset_peak_rss();
    let mark = CpuMark::now(core.pid());
    let started = Instant::now();
    let outcome = warden.sync(doc, false).await;
    let took = started.elapsed();
    let cpu = mark.since();
    let self_hwm = hwm_reset.then(|| status_kib("self", "VmHWM:")).flatten();
    core.assert_alive();
    let file = tunnelcfg::read(&core.config).expect("reading the synced config");
    let inbound = file
        .inbounds
        .iter()
        .find(|i| i.tag == TAG)
        .expect("the VLESS inbound");
    tokio::time::sleep(RSS_SETTLE).await;
    let core_rss_after = core.rss_kib();
    let no_change = no_change(&mut warden, &core, doc, repeats).await;
    core.assert_alive();
    let list: Vec<User> = doc.users.iter().map(|d| d.user.clone()).collect();
    let adds = Adds {
        tried: list.len(),
        ok: outcome.as_ref().map_or(0, |o| o.added),
        held: held(&core, &list).await,
        first_error: outcome.as_ref().err().cloned(),
        took,
        cpu,
        core_rss_idle,
        core_rss_after,
        total: list.len(),
        skipped: None,
    };
    core.assert_alive();
    WardenRun {
        adds,
        outcome,
        add_ops: counter(&warden.registry, "add", "ok"),
        clients_in_file: inbound.clients.len(),
        invalid_in_file: inbound.invalid_clients.len(),
        self_rss_before,
        self_hwm,
        no_change,
    }
}

/// `xray_usersync_operations_total` for one op and result, over every tunnel.
fn counter(registry: &Registry, op: &str, result: &str) -> u64 {
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

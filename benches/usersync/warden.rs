//! The warden's column: `Engine::sync` from zero users, then the same users again (no change),
//! with the witnesses of "nothing written".

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Registry;
use xray_warden::config::Config;
use xray_warden::domain::{TunnelId, User};
use xray_warden::tunnelcfg;
use xray_warden::users;
use xray_warden::usersync::engine::{Engine, Outcome, Settings, Target};
use xray_warden::usersync::metrics::SyncMetrics;
use xray_warden::xray::ApiClient;

use crate::adds::{Adds, held};
use crate::cores::Core;
use crate::live::{CpuMark, Io, LiveCore, reset_peak_rss, status_kib};
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
    pub quiet: NoChange,
}

/// The no-change syncs.
pub struct NoChange {
    /// Sorted.
    pub times: Vec<Duration>,
    /// Every outcome was Ok with nothing added, removed, changed or failed.
    pub clean: bool,
    /// Operations counted by the engine during them.
    pub ops: u64,
    /// The core's I/O syscalls (/proc/<pid>/io) during the syncs, over an idle window as long
    /// just before them, and for one probe call after them on a new connection: GetSysStats on
    /// V2Ray (to show the witness sees a call), GetInboundUsers on Xray (the one call each
    /// no-change sync makes there).
    pub core_io: Option<[Io; 3]>,
    /// Xray only: one GetInboundUsers of every user, on a warm connection, [median, fastest] ms.
    pub list_ms: Option<[f64; 2]>,
    /// Xray only: CPU per GetInboundUsers call, [core, this process] in ms.
    pub list_cpu: Option<[f64; 2]>,
    pub stamps_before: Vec<Stamp>,
    pub stamps_after: Vec<Stamp>,
}

impl NoChange {
    /// Nearest-rank percentile (0.0 = the fastest), in ms.
    pub fn ms_at(&self, p: f64) -> f64 {
        let reps = self.times.len();
        let rank = ((p * reps as f64).ceil() as usize).clamp(1, reps);
        self.times[rank - 1].as_secs_f64() * 1e3
    }
}

/// The engine as the daemon runs it for one tunnel, with its own registry.
struct Warden {
    engine: Engine,
    registry: Registry,
    target: Target,
    state_dir: PathBuf,
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

    async fn sync(&mut self, doc: &Arc<users::Document>) -> Result<Outcome, String> {
        let synced = self.engine.sync(&self.target, doc, true, false).await;
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
    let outcome = warden.sync(doc).await;
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
    let quiet = no_change(&mut warden, &core, doc, repeats).await;
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
        quiet,
    }
}

/// `repeats` syncs of the same users, with the three witnesses of "nothing written" around them.
async fn no_change(
    warden: &mut Warden,
    core: &LiveCore,
    doc: &Arc<users::Document>,
    repeats: usize,
) -> NoChange {
    let state_dir = warden.state_dir.clone();
    let dirs = [core.config.parent().expect("the tunnel dir"), &state_dir];
    let stamps_before = stamps(&dirs);
    let ops_before = counter_sum(&warden.registry);
    let mut times = Vec::with_capacity(repeats);
    let mut clean = true;
    let io_before = Io::of(core.pid());
    for _ in 0..repeats {
        let started = Instant::now();
        let again = warden.sync(doc).await;
        times.push(started.elapsed());
        clean &= again.is_ok_and(|o| o.added + o.removed + o.changed + o.failed == 0);
    }
    let io_during = Io::of(core.pid()).and_then(|io| io.since(io_before));
    let ops = counter_sum(&warden.registry) - ops_before;
    let stamps_after = stamps(&dirs);
    let io_idle = idle_io(core, times.iter().sum()).await;
    let io_probe = probe_io(core).await;
    let (list_ms, list_cpu) = match core.kind {
        Core::Xray => {
            let (ms, cpu) = list_ms(core, repeats).await;
            (Some(ms), Some(cpu))
        }
        Core::V2ray => (None, None),
    };
    times.sort();
    let core_io = match (io_during, io_idle, io_probe) {
        (Some(d), Some(i), Some(p)) => Some([d, i, p]),
        _ => None,
    };
    NoChange {
        times,
        clean,
        ops,
        core_io,
        list_ms,
        list_cpu,
        stamps_before,
        stamps_after,
    }
}

/// The core's I/O over `window` with nobody calling it.
async fn idle_io(core: &LiveCore, window: Duration) -> Option<Io> {
    let before = Io::of(core.pid());
    tokio::time::sleep(window).await;
    Io::of(core.pid())?.since(before)
}

/// The core's I/O for one call on a new connection: GetSysStats on V2Ray, GetInboundUsers on
/// Xray (what a no-change sync sends there).
async fn probe_io(core: &LiveCore) -> Option<Io> {
    let before = Io::of(core.pid());
    let client = ApiClient::new(core.api, core.kind.flavour(), CALL_TIMEOUT);
    match core.kind {
        Core::V2ray => client.uptime().await.map(drop).ok()?,
        Core::Xray => client.inbound_users(TAG).await.map(drop).ok()?,
    }
    Io::of(core.pid())?.since(before)
}

/// [median, fastest] of `repeats` GetInboundUsers calls on one warm connection, in ms, and the
/// CPU per call of [the core, this process] in ms.
async fn list_ms(core: &LiveCore, repeats: usize) -> ([f64; 2], [f64; 2]) {
    let client = ApiClient::new(core.api, core.kind.flavour(), CALL_TIMEOUT);
    let _ = client.inbound_users(TAG).await;
    let mark = CpuMark::now(core.pid());
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        let listed = client.inbound_users(TAG).await;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(listed.is_ok(), "GetInboundUsers failed: {listed:?}");
    }
    let cpu = mark.since();
    let calls = times.len() as f64;
    times.sort_by(f64::total_cmp);
    let ms = [times[times.len() / 2], times[0]];
    (ms, [cpu.core_ms / calls, cpu.client_ms / calls])
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
fn counter_sum(registry: &Registry) -> u64 {
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
fn stamps(dirs: &[&Path]) -> Vec<Stamp> {
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

//! User-sync benchmark: 10,000 VLESS users into one inbound of a REAL V2Ray 4.34, measured in
//! one run for xray-warden's sync engine and three baselines, each against a fresh core:
//!
//! - xray-warden: `Engine::sync` from zero users (auto-detect, 16 calls in flight, persisted to
//!   the tunnel's config and the warden's record), then the same users again (no change);
//! - A: one `ApiClient::add_user` per user, awaited one after another;
//! - B: the same with 16 calls in flight (`buffer_unordered(16)`);
//! - C: one process per user (`examples/add_user`), for the first XW_BENCH_SPAWN_USERS users,
//!   extrapolated to all of them.
//!
//! A report, not a test: it prints one table with the targets and a PASS/MISS mark beside the
//! warden's figures, and never fails on a figure. Run it with `cargo bench --bench usersync`
//! after `cargo build --release --example add_user` (baseline C is skipped without it).
//! Without `--bench` on the command line (`cargo test --all-targets`) it only says so.
//!
//! Correctness is printed too: the sync's outcome, the clients in the tunnel's config file, and
//! for every column how many users the core holds afterwards (re-adding each one must answer
//! "already exists"; V2Ray cannot list its users).
//!
//! The no-change sync's "zero writes" is shown three ways: the engine's operation counter in the
//! registry it was given; the core's read/write syscalls (/proc/<pid>/io, sockets included: an
//! idle V2Ray makes none, one API call makes several), beside an idle window as long; and the
//! inode, size, mtime and ctime of every file in the config and state directories.
//!
//! Everything listens on 127.0.0.1; each core is stopped by its PID; scratch files live in
//! `target/bench-usersync-<pid>` and are removed at the end (also on panic).
//!
//! Environment: XW_BENCH_USERS (10000), XW_BENCH_SPAWN_USERS (1000), XW_BENCH_REPEATS (20).

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use prometheus::Registry;
use tokio::runtime::Runtime;
use xray_warden::config::Config;
use xray_warden::domain::{Credential, Flavour, Protocol, TunnelId, User};
use xray_warden::usersync::engine::{Engine, Outcome, Settings, Target};
use xray_warden::usersync::metrics::SyncMetrics;
use xray_warden::usersync::plan;
use xray_warden::xray::{ApiClient, ApiError};
use xray_warden::{tunnelcfg, users};

const V2RAY: &str = "/usr/bin/v2ray";
const TAG: &str = "vless-in";
const TUNNEL: &str = "bench";
const CONFIG_NAME: &str = "xray-bench.json";
/// The record's name in the state dir (`usersync::record`, private to the crate).
const RECORD_NAME: &str = "users-bench.json";
const CONCURRENCY: usize = 16;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const RSS_SETTLE: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(20);
/// The kernel's USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
const TICK_MS: f64 = 10.0;

const TARGET_FULL_S: f64 = 3.0;
const TARGET_NO_CHANGE_MS: f64 = 50.0;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("usersync benchmark: run it with `cargo bench --bench usersync`");
        return;
    }
    assert!(
        Path::new(V2RAY).exists(),
        "{V2RAY} is missing: apt-get install v2ray"
    );
    let knobs = Knobs::from_env();
    let scratch = Scratch::create();
    let log = scratch.0.join("warden.log");
    init_logging(&log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let doc_bytes = users_document(knobs.users);
    let doc = users::parse_document(&doc_bytes).expect("the generated document parses");
    assert!(doc.rejected.is_empty(), "rejected: {:?}", doc.rejected);
    let list: Vec<User> = doc.users.iter().map(|d| d.user.clone()).collect();

    eprintln!("bench: xray-warden, {} users", list.len());
    let warden = runtime.block_on(bench_warden(&scratch.0, &doc, knobs.repeats));
    let log_lines = fs::read_to_string(&log).map_or(0, |l| l.lines().count());
    let costs = breakdown(&scratch.0, &doc_bytes, knobs.repeats);
    eprintln!("bench: A, one call at a time");
    let seq = runtime.block_on(bench_grpc(&scratch.0.join("seq"), &list, 1));
    eprintln!("bench: B, {CONCURRENCY} calls in flight");
    let par = runtime.block_on(bench_grpc(&scratch.0.join("par"), &list, CONCURRENCY));
    let spawn = bench_spawn(&runtime, &scratch.0.join("spawn"), &list, knobs.spawns);
    print_report(&knobs, &warden, [&seq, &par, &spawn], &costs, log_lines);
}

/// Knobs, read from the environment.
struct Knobs {
    users: usize,
    spawns: usize,
    repeats: usize,
}

impl Knobs {
    fn from_env() -> Self {
        let get = |name: &str, default: usize| match std::env::var(name) {
            Ok(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?}: not a number")),
            Err(_) => default,
        };
        let users = get("XW_BENCH_USERS", 10_000).max(1);
        Self {
            users,
            spawns: get("XW_BENCH_SPAWN_USERS", 1_000).clamp(1, users),
            repeats: get("XW_BENCH_REPEATS", 20).max(1),
        }
    }
}

/// `target/bench-usersync-<pid>`, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> Scratch {
        let dir = target_dir().join(format!("bench-usersync-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("creating the scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Cargo's target dir: this binary is `<target>/release/deps/usersync-<hash>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's own path");
    let deps = exe.parent().expect("the deps dir");
    deps.ancestors().nth(2).expect("the target dir").to_owned()
}

/// The warden's log lines go to a file, as the daemon's go to the journal (info by default),
/// so the per-user "added user" lines cost here what they cost there.
fn init_logging(path: &Path) {
    let file = File::create(path).expect("creating the log file");
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .init();
}

/// `{"users": [...]}` with `count` VLESS users; ids differ in their first group, so they stay
/// distinct to the validator's credential key.
fn users_document(count: usize) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            serde_json::json!({
                "email": format!("user{i:05}@bench"),
                "id": format!("{i:08x}-0000-4000-8000-{:012x}", i * 7919),
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "users": entries })).expect("JSON")
}

/// A V2Ray 4.34 server config: the API behind a dokodemo-door inbound routed to the api tag
/// (xray-api-facts.md §9.1) and one VLESS inbound without clients.
fn tunnel_config(api: u16, vless: u16) -> String {
    format!(
        r#"{{
  "log": {{"loglevel": "warning"}},
  "api": {{"tag": "api", "services": ["HandlerService", "StatsService"]}},
  "stats": {{}},
  "inbounds": [
    {{"tag": "api", "listen": "127.0.0.1", "port": {api}, "protocol": "dokodemo-door", "settings": {{"address": "127.0.0.1"}}}},
    {{"tag": "{TAG}", "listen": "127.0.0.1", "port": {vless}, "protocol": "vless", "settings": {{"clients": [], "decryption": "none"}}}}
  ],
  "outbounds": [{{"protocol": "freedom", "tag": "direct"}}],
  "routing": {{"rules": [{{"type": "field", "inboundTag": ["api"], "outboundTag": "api"}}]}}
}}
"#
    )
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    listener.local_addr().expect("the probe port").port()
}

/// A fresh V2Ray process on its own config (`<dir>/tunnel/xray-bench.json`, log beside the
/// tunnel dir); dropping it kills it by its PID and waits for it.
struct Core {
    child: Child,
    api: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Core {
    fn start(dir: &Path) -> Core {
        let tunnel_dir = dir.join("tunnel");
        fs::create_dir_all(&tunnel_dir).expect("creating the tunnel dir");
        let (api, vless) = (free_port(), free_port());
        let config = tunnel_dir.join(CONFIG_NAME);
        fs::write(&config, tunnel_config(api, vless)).expect("writing the tunnel config");
        let log = dir.join("v2ray.log");
        let out = File::create(&log).expect("creating the core's log");
        let child = Command::new(V2RAY)
            .arg("-config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("the log's handle"))
            .stderr(out)
            .spawn()
            .expect("starting v2ray");
        // The guard exists before anything can fail, so a panic below still stops the core.
        let mut core = Core {
            child,
            api: SocketAddr::from(([127, 0, 0, 1], api)),
            config,
            log,
        };
        core.wait_listening();
        core
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(self.api).is_err() {
            let exited = self.child.try_wait().ok().flatten();
            let log = || fs::read_to_string(&self.log).unwrap_or_default();
            assert!(exited.is_none(), "v2ray exited: {exited:?}\n{}", log());
            assert!(Instant::now() < deadline, "v2ray never listened\n{}", log());
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kib(&self) -> u64 {
        status_kib(&self.pid().to_string(), "VmRSS:").unwrap_or(0)
    }

    /// Panics with the core's log when it died (e.g. a request crashed it).
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            panic!("v2ray exited during the run: {status}\n{log}");
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/proc/<pid>/status` field in KiB ("self" for this process).
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(field))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// utime+stime of a process and, for "self", of its waited-for children, in USER_HZ ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The command name may hold spaces; utime, stime, cutime, cstime are fields 14 to 17.
    let after_comm = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields = after_comm.split(' ').skip(11).take(4);
    fields.map(|f| f.parse::<u64>().expect("a CPU field")).sum()
}

/// Resets this process's peak RSS (VmHWM), so the next reading is the peak since now.
fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU of the core and of this process (children included) over one measured step.
#[derive(Default)]
struct Cpu {
    core_ms: f64,
    client_ms: f64,
    /// Share of all the machine's CPUs busy over the step (anyone's work), in percent.
    machine_busy: f64,
}

/// CPU readings of the core, of this process and of the machine, taken before a step.
struct CpuMark {
    core: String,
    ticks: [u64; 2],
    machine: [u64; 2],
}

impl CpuMark {
    fn now(core: u32) -> CpuMark {
        let core = core.to_string();
        let ticks = [cpu_ticks(&core), cpu_ticks("self")];
        let machine = machine_ticks();
        CpuMark {
            core,
            ticks,
            machine,
        }
    }

    fn since(&self) -> Cpu {
        let after = [cpu_ticks(&self.core), cpu_ticks("self")];
        let ms = |i: usize| (after[i] - self.ticks[i]) as f64 * TICK_MS;
        let [busy, total] = machine_ticks();
        let (busy, total) = (busy - self.machine[0], total - self.machine[1]);
        Cpu {
            core_ms: ms(0),
            client_ms: ms(1),
            machine_busy: 100.0 * busy as f64 / total.max(1) as f64,
        }
    }
}

/// Busy (everything but idle and iowait) and total ticks of all CPUs, from /proc/stat.
fn machine_ticks() -> [u64; 2] {
    let stat = fs::read_to_string("/proc/stat").expect("reading /proc/stat");
    let line = stat.lines().next().expect("the cpu line");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .flat_map(str::parse)
        .collect();
    let total = v.iter().sum();
    [total - v[3] - v[4], total]
}

/// One way of adding the users, measured.
#[derive(Default)]
struct Adds {
    /// Users attempted and added (C: of the measured part only).
    tried: usize,
    ok: usize,
    /// Of the users tried, those the core answers "already exists" for afterwards.
    held: usize,
    first_error: Option<String>,
    took: Duration,
    cpu: Cpu,
    core_rss_idle: u64,
    core_rss_after: u64,
    /// C only: the measured part was this many of `total` users.
    total: usize,
    skipped: Option<String>,
}

impl Adds {
    /// Wall time for every user: measured, or extrapolated for C.
    fn took_all(&self) -> f64 {
        self.took.as_secs_f64() * self.total as f64 / self.tried.max(1) as f64
    }

    /// `text` when the figures are of a measured part only (C), else nothing.
    fn mark(&self, text: &'static str) -> &'static str {
        if self.tried < self.total { text } else { "" }
    }
}

/// The warden's sync, from zero users and then with nothing to do.
struct WardenRun {
    adds: Adds,
    outcome: Result<Outcome, String>,
    /// `xray_usersync_operations_total{op="add",result="ok"}` after the full sync.
    add_ops: u64,
    clients_in_file: usize,
    invalid_in_file: usize,
    self_rss_before: u64,
    self_hwm: Option<u64>,
    quiet: NoChange,
}

/// The no-change syncs.
struct NoChange {
    /// Sorted.
    times: Vec<Duration>,
    /// Every outcome was Ok with nothing added, removed, changed or failed.
    clean: bool,
    /// Operations counted by the engine during them.
    ops: u64,
    /// The core's I/O syscalls (/proc/<pid>/io) during the syncs, over an idle window as long
    /// just before them, and for one GetSysStats call after them (to show the witness sees a
    /// call).
    core_io: Option<[Io; 3]>,
    stamps_before: Vec<Stamp>,
    stamps_after: Vec<Stamp>,
}

impl NoChange {
    /// Nearest-rank percentile (0.0 = the fastest), in ms.
    fn ms_at(&self, p: f64) -> f64 {
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
    fn new(core: &Core, state_dir: PathBuf) -> Warden {
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

    async fn sync(&mut self, doc: &users::Document) -> Result<Outcome, String> {
        let synced = self.engine.sync(&self.target, doc, true, false).await;
        synced.map_err(|e| e.to_string())
    }
}

async fn bench_warden(dir: &Path, doc: &users::Document, repeats: usize) -> WardenRun {
    let mut core = Core::start(&dir.join("warden"));
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
    core: &Core,
    doc: &users::Document,
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
        stamps_before,
        stamps_after,
    }
}

/// How many of `list` the core holds: re-adding a held user answers "already exists". Any user
/// it did not hold is added by this, so it comes last.
async fn held(core: &Core, list: &[User]) -> usize {
    let client = ApiClient::new(core.api, Flavour::V2ray, CALL_TIMEOUT);
    let calls = list
        .iter()
        .map(|u| client.add_user(TAG, &Protocol::Vless, u));
    let answers: Vec<_> = stream::iter(calls)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let exists = |r: &&Result<(), ApiError>| matches!(r, Err(ApiError::AlreadyExists));
    answers.iter().filter(exists).count()
}

/// Bytes and calls of a process's read and write syscalls (sockets included), from
/// /proc/<pid>/io. An idle V2Ray makes none, so any API call shows here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Io {
    bytes: u64,
    calls: u64,
}

impl Io {
    fn of(pid: u32) -> Option<Io> {
        let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        let field = |name: &str| {
            let line = io.lines().find_map(|l| l.strip_prefix(name))?;
            line.trim().parse::<u64>().ok()
        };
        Some(Io {
            bytes: field("rchar:")? + field("wchar:")?,
            calls: field("syscr:")? + field("syscw:")?,
        })
    }

    fn since(self, before: Option<Io>) -> Option<Io> {
        let before = before?;
        Some(Io {
            bytes: self.bytes - before.bytes,
            calls: self.calls - before.calls,
        })
    }
}

/// The core's I/O over `window` with nobody calling it.
async fn idle_io(core: &Core, window: Duration) -> Option<Io> {
    let before = Io::of(core.pid());
    tokio::time::sleep(window).await;
    Io::of(core.pid())?.since(before)
}

/// The core's I/O for one GetSysStats call on a new connection.
async fn probe_io(core: &Core) -> Option<Io> {
    let before = Io::of(core.pid());
    let client = ApiClient::new(core.api, Flavour::V2ray, CALL_TIMEOUT);
    client.uptime().await.ok()?;
    Io::of(core.pid())?.since(before)
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
struct Stamp {
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

/// Baselines A and B: `ApiClient::add_user` per user, `width` calls in flight.
async fn bench_grpc(dir: &Path, list: &[User], width: usize) -> Adds {
    let mut core = Core::start(dir);
    let client = ApiClient::new(core.api, Flavour::V2ray, CALL_TIMEOUT);
    let core_rss_idle = core.rss_kib();
    let mark = CpuMark::now(core.pid());
    let started = Instant::now();
    let results = if width == 1 {
        let mut results = Vec::with_capacity(list.len());
        for user in list {
            results.push(client.add_user(TAG, &Protocol::Vless, user).await);
        }
        results
    } else {
        let calls = list
            .iter()
            .map(|u| client.add_user(TAG, &Protocol::Vless, u));
        stream::iter(calls).buffer_unordered(width).collect().await
    };
    let took = started.elapsed();
    let cpu = mark.since();
    core.assert_alive();
    tokio::time::sleep(RSS_SETTLE).await;
    let core_rss_after = core.rss_kib();
    let first_error = results.iter().find_map(|r| r.as_ref().err());
    Adds {
        tried: list.len(),
        ok: results.iter().filter(|r| r.is_ok()).count(),
        held: held(&core, list).await,
        first_error: first_error.map(ToString::to_string),
        took,
        cpu,
        core_rss_idle,
        core_rss_after,
        total: list.len(),
        skipped: None,
    }
}

/// Baseline C: one `add_user` process per user, one after another, for the first `count` users.
fn bench_spawn(runtime: &Runtime, dir: &Path, list: &[User], count: usize) -> Adds {
    let exe = target_dir().join("release/examples/add_user");
    if !exe.exists() {
        let why = format!(
            "{} is missing: build it with `cargo build --release --example add_user`",
            exe.display()
        );
        eprintln!("bench: C skipped: {why}");
        return Adds {
            skipped: Some(why),
            ..Adds::default()
        };
    }
    eprintln!("bench: C, one process per user, {count} users");
    let mut core = Core::start(dir);
    let addr = core.api.to_string();
    let core_rss_idle = core.rss_kib();
    let mut adds = Adds::default();
    let mark = CpuMark::now(core.pid());
    let started = Instant::now();
    for user in &list[..count] {
        let Credential::Id(id) = &user.credential else {
            unreachable!("the document holds VLESS ids only")
        };
        let out = Command::new(&exe)
            .args([addr.as_str(), TAG, &user.email, id])
            .stdin(Stdio::null())
            .output()
            .expect("running add_user");
        adds.tried += 1;
        if out.status.success() {
            adds.ok += 1;
        } else if adds.first_error.is_none() {
            adds.first_error = Some(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
    }
    let took = started.elapsed();
    let cpu = mark.since();
    core.assert_alive();
    thread::sleep(RSS_SETTLE);
    let core_rss_after = core.rss_kib();
    Adds {
        held: runtime.block_on(held(&core, &list[..count])),
        took,
        cpu,
        core_rss_idle,
        core_rss_after,
        total: list.len(),
        ..adds
    }
}

/// Where the warden's time goes, each step timed alone on the files of the warden's run (writes
/// on fresh copies), as labels and [median, fastest] in ms.
fn breakdown(dir: &Path, doc_bytes: &[u8], repeats: usize) -> Vec<(String, [f64; 2])> {
    let config = dir.join("warden/tunnel").join(CONFIG_NAME);
    let record = dir.join("warden/state").join(RECORD_NAME);
    let copies = dir.join("breakdown");
    fs::create_dir_all(&copies).expect("creating the breakdown dir");
    let id = TunnelId::new(TUNNEL).expect("a valid id");
    let doc = users::parse_document(doc_bytes).expect("the document parses");
    let synced = tunnelcfg::read(&config).expect("reading the synced config");
    let clients = &synced
        .inbounds
        .iter()
        .find(|i| i.tag == TAG)
        .expect("VLESS")
        .clients;
    let want = users::desired_for(&doc.users, &id, TAG, &Protocol::Vless, Flavour::V2ray);
    let record_bytes = fs::read(&record).unwrap_or_default();
    let kib = record_bytes.len() / 1024;
    let mut out = Vec::new();
    let mut time = |label: &str, runs: usize, step: &mut dyn FnMut() -> bool| {
        out.push((label.to_owned(), timed(runs, step)));
    };
    time(
        "parse the users document (per source change)",
        repeats,
        &mut || users::parse_document(doc_bytes).is_ok(),
    );
    time("tunnelcfg::read of the synced config", repeats, &mut || {
        tunnelcfg::read(&config).is_ok()
    });
    let label = format!("record file parsed as JSON ({kib} KiB) [~ Record::load]");
    time(&label, repeats, &mut || {
        serde_json::from_slice::<serde_json::Value>(&record_bytes).is_ok()
    });
    time("users::desired_for", repeats, &mut || {
        !users::desired_for(&doc.users, &id, TAG, &Protocol::Vless, Flavour::V2ray).is_empty()
    });
    time("plan::diff (record vs desired)", repeats, &mut || {
        plan::diff(clients, &want, &Default::default()).is_empty()
    });
    // The full sync's writes, on fresh copies: the empty config gets every client, and the
    // record's bytes are re-serialised and written atomically.
    let (empty, copy) = (tunnel_config(1, 2), copies.join(CONFIG_NAME));
    let map = std::collections::BTreeMap::from([(TAG.to_owned(), clients.clone())]);
    time(
        "tunnelcfg::persist_clients, 0 -> all clients",
        5,
        &mut || {
            fs::write(&copy, &empty).expect("writing a config copy");
            tunnelcfg::persist_clients(&copy, &map, Flavour::V2ray).is_ok()
        },
    );
    let label = "record: serialise + write_atomic [~ Record::save]";
    let value: serde_json::Value = serde_json::from_slice(&record_bytes).unwrap_or_default();
    time(label, 5, &mut || {
        let bytes = serde_json::to_vec_pretty(&value).expect("JSON");
        tunnelcfg::write_atomic(&copies.join(RECORD_NAME), &bytes).is_ok()
    });
    // The engine logs one line per added user; the daemon sends them to the journal.
    let label = format!("{} 'added user' log lines (fmt -> file)", clients.len());
    time(&label, 3, &mut || {
        for u in clients {
            tracing::info!(
                "added user {} to {}/{} via API (no restart)",
                u.email,
                id,
                TAG
            );
        }
        true
    });
    out
}

/// Median and fastest of `repeats` runs of `step`, in ms.
fn timed(repeats: usize, step: &mut dyn FnMut() -> bool) -> [f64; 2] {
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(step());
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    [times[times.len() / 2], times[0]]
}

fn print_report(
    knobs: &Knobs,
    w: &WardenRun,
    baselines: [&Adds; 3],
    costs: &[(String, [f64; 2])],
    log_lines: usize,
) {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let version = Command::new(V2RAY).arg("-version").output();
    let version = version.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let version = version.unwrap_or_default();
    let version = version.lines().next().unwrap_or("v2ray ?").to_owned();
    let n = knobs.users;
    println!("\nusersync benchmark, {n} VLESS users into one inbound, {version}, {cpus} CPUs");
    let mut t = Table::default();
    t.line(&[
        "",
        "xray-warden",
        "target",
        "A: 1 call at a time",
        &format!("B: {CONCURRENCY} in flight"),
        "C: 1 process/user",
    ]);
    let all = [&w.adds, baselines[0], baselines[1], baselines[2]];
    let full = target(w.adds.took.as_secs_f64(), TARGET_FULL_S, "s");
    t.row("users added / tried", &all, None, |a| {
        format!("{}/{}{}", a.ok, a.tried, a.mark(" (measured part)"))
    });
    t.row("core holds them (re-add: exists)", &all, None, |a| {
        format!("{}/{}", a.held, a.tried)
    });
    t.row(
        &format!("wall time, all {n} users"),
        &all,
        Some(full),
        |a| {
            format!(
                "{}{:.2} s{}",
                a.mark("~"),
                a.took_all(),
                a.mark(" EXTRAPOLATED")
            )
        },
    );
    let per_user = |a: &Adds, ms: f64| format!("{:.0} µs", ms * 1e3 / a.tried.max(1) as f64);
    t.row("  per user", &all, None, |a| {
        per_user(a, a.took.as_secs_f64() * 1e3)
    });
    t.row("  users per second", &all, None, |a| {
        format!("{:.0}/s", a.tried as f64 / a.took.as_secs_f64().max(1e-9))
    });
    t.row("v2ray CPU per user", &all, None, |a| {
        per_user(a, a.cpu.core_ms)
    });
    t.row("client CPU per user (+ children)", &all, None, |a| {
        per_user(a, a.cpu.client_ms)
    });
    t.row("v2ray RSS: idle -> after, +2 s", &all, None, |a| {
        format!("{} -> {}", mib(a.core_rss_idle), mib(a.core_rss_after))
    });
    t.row("all CPUs busy during it (anyone)", &all, None, |a| {
        format!("{:.0}%", a.cpu.machine_busy)
    });
    t.row("first error", &all, None, |a| {
        let error = a.first_error.as_deref().or(a.skipped.as_deref());
        error.unwrap_or("none").chars().take(40).collect()
    });
    warden_rows(&mut t, w, n);
    t.print();
    print_notes(knobs, w, baselines[2], log_lines);
    print_breakdown(w, baselines[1], costs);
}

/// The rows only the warden has: the full sync's correctness.
fn warden_rows(t: &mut Table, w: &WardenRun, n: usize) {
    let outcome = match &w.outcome {
        Ok(o) => format!(
            "added={} removed={} failed={}",
            o.added, o.removed, o.failed
        ),
        Err(e) => format!("error: {e}"),
    };
    let ok = w.outcome.as_ref();
    let ok = ok.is_ok_and(|o| o.added == n && o.failed == 0);
    let wanted = format!("added={n} failed=0");
    t.warden("full sync: outcome", outcome, check(ok, &wanted));
    let adds = w.add_ops.to_string();
    t.warden("  adds counted ok (metric)", adds, String::new());
    let clients = format!("{} (unreadable: {})", w.clients_in_file, w.invalid_in_file);
    let exact = w.clients_in_file == n && w.invalid_in_file == 0;
    let wanted = format!("= {n}");
    t.warden(
        "  clients in the config file",
        clients,
        check(exact, &wanted),
    );
    let hwm = w.self_hwm.map_or("n/a".to_owned(), mib);
    let rss = format!("{} -> peak {hwm}", mib(w.self_rss_before));
    t.warden("  bench process RSS -> VmHWM", rss, String::new());
    no_change_rows(t, &w.quiet);
}

/// The no-change syncs: time, and the three witnesses of "nothing written".
fn no_change_rows(t: &mut Table, q: &NoChange) {
    let at = |p: f64| q.ms_at(p);
    let label = format!("no-change sync, median of {}", q.times.len());
    let verdict = target(at(0.5), TARGET_NO_CHANGE_MS, "ms");
    t.warden(&label, format!("{:.1} ms", at(0.5)), verdict);
    let spread = format!("{:.1} / {:.1} / {:.1} ms", at(0.0), at(0.9), at(1.0));
    t.warden("  min / p90 / max", spread, String::new());
    let counts = if q.clean { "0 each" } else { "NOT 0" };
    let clean = check(q.clean, "all 0");
    t.warden("  added+removed+changed+failed", counts.to_owned(), clean);
    let ops = check(q.ops == 0, "= 0");
    t.warden("  AlterInbound ops (metric)", q.ops.to_string(), ops);
    let (io, none) = match q.core_io {
        Some([during, idle, probe]) => (
            format!(
                "{} calls, {} B (idle: {}, {} B; 1 call: {}, {} B)",
                during.calls, during.bytes, idle.calls, idle.bytes, probe.calls, probe.bytes
            ),
            during == idle && probe.bytes > 0,
        ),
        None => ("/proc/<pid>/io unreadable".to_owned(), false),
    };
    t.warden("  v2ray read/write syscalls", io, check(none, "= idle"));
    let unchanged = q.stamps_before == q.stamps_after;
    let files = match unchanged {
        true => format!("none of {} files", q.stamps_after.len()),
        false => "CHANGED (see notes)".to_owned(),
    };
    let unchanged = check(unchanged, "none");
    t.warden("  files changed (config + state dir)", files, unchanged);
}

fn print_notes(knobs: &Knobs, w: &WardenRun, spawn: &Adds, log_lines: usize) {
    println!("notes:");
    println!(
        "  every column starts from a fresh v2ray process with no users (killed by PID after)"
    );
    println!(
        "  xray-warden: Engine::sync, flavour auto-detected, concurrency {CONCURRENCY}, call timeout \
         {CALL_TIMEOUT:?}; the time includes detection, persisting {} clients to the config file \
         and the record; its {log_lines} log lines (info) went to a file",
        knobs.users
    );
    if spawn.skipped.is_none() {
        println!(
            "  C: {} processes measured ({:.2} s), the {} -users figure is EXTRAPOLATED linearly; \
             each process makes 2 calls (inbound check + add)",
            spawn.tried,
            spawn.took.as_secs_f64(),
            spawn.total
        );
    }
    println!(
        "  peak RSS: VmHWM of this bench process, reset (clear_refs 5) right before the full sync: \
         a proxy for the engine's peak, holding also the parsed document and the runtime"
    );
    println!("  CPU: utime+stime deltas in 10 ms ticks; 'client' is this whole bench process");
    println!(
        "  v2ray syscalls: rchar+wchar and syscr+syscw of /proc/<v2ray>/io across the no-change \
         syncs, beside an idle window as long and one GetSysStats call: any API call moves them"
    );
    println!("  facts appendix A measured on 4.34: 6.59 s sequential, 3.60 s 16-way");
    if w.quiet.stamps_before != w.quiet.stamps_after {
        println!("  files before: {:#?}", w.quiet.stamps_before);
        println!("  files after: {:#?}", w.quiet.stamps_after);
    }
}

fn print_breakdown(w: &WardenRun, par: &Adds, costs: &[(String, [f64; 2])]) {
    println!("where the warden's time goes (each step alone on the run's files, ms):");
    let width = costs.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 3;
    println!("  {:width$}{:>9}{:>9}", "", "median", "fastest");
    for (label, [median, fastest]) in costs {
        println!("  {label:width$}{median:>9.2}{fastest:>9.2}");
    }
    let cost = |part: &str| {
        let found = costs.iter().find(|(l, _)| l.contains(part));
        found.map_or(0.0, |(_, [median, _])| *median)
    };
    let writes = cost("tunnelcfg::persist") + cost("record: serialise");
    let full = w.adds.took.as_secs_f64() * 1e3;
    let calls = par.took.as_secs_f64() * 1e3;
    let (rest, logs) = (full - writes, cost("log lines"));
    println!(
        "  full sync {full:.0} ms = writes {writes:.0} ms + the rest {rest:.0} ms (detection, {} \
         AlterInbound calls, diff, bookkeeping, log lines ~{logs:.0} ms); B made the same calls \
         in {calls:.0} ms",
        w.add_ops
    );
    let steps = [
        "tunnelcfg::read",
        "record file",
        "users::desired_for",
        "plan::diff",
    ];
    let steps: f64 = steps.iter().map(|s| cost(s)).sum();
    let median = w.quiet.ms_at(0.5);
    println!(
        "  no-change sync {median:.1} ms (median); read + record + desired_for + diff alone: \
         {steps:.1} ms"
    );
}

/// Rows of label, warden figure, target, and the three baselines.
#[derive(Default)]
struct Table {
    lines: Vec<[String; 6]>,
}

impl Table {
    fn line(&mut self, cells: &[&str; 6]) {
        self.lines.push(cells.map(str::to_owned));
    }

    /// A row for every column; `all` is the warden then A, B, C.
    fn row(
        &mut self,
        label: &str,
        all: &[&Adds; 4],
        target: Option<String>,
        show: impl Fn(&Adds) -> String,
    ) {
        let cell = |a: &Adds| match a.skipped {
            Some(_) => "skipped".to_owned(),
            None => show(a),
        };
        let [w, a, b, c] = all.map(cell);
        let label = label.to_owned();
        self.lines
            .push([label, w, target.unwrap_or_default(), a, b, c]);
    }

    fn warden(&mut self, label: &str, value: String, target: String) {
        let empty = String::new;
        let cells = [label.to_owned(), value, target, empty(), empty(), empty()];
        self.lines.push(cells);
    }

    fn print(&self) {
        let width = |i: usize| {
            let cells = self.lines.iter().map(|r| r[i].chars().count());
            cells.max().unwrap_or(0) + 3
        };
        let widths: Vec<usize> = (0..6).map(width).collect();
        for line in &self.lines {
            let cells = line.iter().zip(&widths).map(|(c, w)| format!("{c:w$}"));
            println!("{}", cells.collect::<String>().trim_end());
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn target(value: f64, limit: f64, unit: &str) -> String {
    let mark = if value <= limit { "PASS" } else { "MISS" };
    format!("<= {limit} {unit} {mark}")
}

fn check(ok: bool, what: &str) -> String {
    format!("{what} {}", if ok { "PASS" } else { "MISS" })
}

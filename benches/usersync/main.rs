//! User-sync benchmark: 10,000 VLESS users into one inbound, on BOTH real cores in one run —
//! Xray-core (`XRAY_BIN`, or the pinned build tests/support/cores.rs caches) and V2Ray 4.34
//! (/usr/bin/v2ray) — for xray-warden's sync engine and three baselines, each against a fresh
//! core:
//!
//! - xray-warden: `Engine::sync` from zero users (auto-detect, 16 calls in flight, persisted to
//!   the tunnel's config and the warden's record), then the same users again (no change, both
//!   kinds of round: see below);
//! - A: one `ApiClient::add_user` per user, awaited one after another;
//! - B: the same with 16 calls in flight (`buffer_unordered(16)`);
//! - C: one process per user, the seed's own method: `xray api adu --server=ADDR FILE` on Xray,
//!   `examples/add_user` on V2Ray (4.34 has no `adu`); for the first XW_BENCH_SPAWN_USERS users,
//!   extrapolated to all of them.
//!
//! A report, not a test: it prints one table per core with the targets and a PASS/MISS mark
//! beside the warden's figures, then both cores side by side, and never fails on a figure. A
//! core that is missing (or that WARDEN_TEST_CORES excludes) is reported as SKIPPED, loudly.
//! Run it with `cargo bench --bench usersync` after `cargo build --release --example add_user`
//! (V2Ray's baseline C is skipped without it). Without `--bench` on the command line
//! (`cargo test --all-targets`) it only says so.
//!
//! Correctness is printed too: the sync's outcome, the clients in the tunnel's config file, and
//! for every column how many users the core holds afterwards (Xray: its own GetInboundUsers
//! list; V2Ray, which cannot list users: re-adding each one must answer "already exists").
//!
//! The no-change syncs come in the two kinds the daemon makes ([`nochange`]). After the full
//! sync, one no-change round (a full one that finds nothing to do) is timed once and set apart;
//! then XW_BENCH_REPEATS QUIET rounds (same `Arc` document, core process and config file stamp:
//! the daemon's steady state; one GetInboundUsersCount per inbound on Xray, no call on V2Ray),
//! with the no-change target (Xray <= 10 ms, V2Ray <= 50 ms); then XW_BENCH_REPEATS FULL rounds,
//! forced (`force = true`, as every forced sync and at least one round every 5 minutes: config
//! and record read, 1 count + 1 GetInboundUsers per inbound on Xray, everything diffed), with no
//! target. On Xray the count and the list calls are also timed alone on a warm connection.
//!
//! For each kind, "zero writes" is shown three ways: the engine's operation counter in the
//! registry it was given; the core's read/write syscalls (/proc/<pid>/io, sockets included: an
//! idle core makes none, one API call makes several) beside an idle window as long, checked
//! against one probe call on a new connection (V2Ray: equal to the idle window; Xray: one count
//! per quiet round, one count + one list per full round); and the inode, size, mtime and ctime of
//! every file in the config and state directories. Which rounds were full is read from the
//! `xray_usersync_last_full_round_timestamp_seconds` gauge after each round (quiet: 0 of them;
//! forced: all).
//!
//! Everything listens on 127.0.0.1; each core is stopped by its PID; scratch files live in
//! `target/bench-usersync-<pid>` and are removed at the end (also on panic).
//!
//! Environment: XW_BENCH_USERS (10000), XW_BENCH_SPAWN_USERS (1000), XW_BENCH_REPEATS (20),
//! XRAY_BIN, WARDEN_TEST_CORES (as for the tests).

mod adds;
mod baselines;
mod breakdown;
#[allow(dead_code)]
#[path = "../../tests/support/cores.rs"]
mod cores;
mod engine;
mod live;
mod nochange;
#[allow(dead_code)]
#[path = "../shared/procstat.rs"]
mod procstat;
mod report;
mod summary;
mod warden;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::runtime::Runtime;
use xray_warden::domain::User;
use xray_warden::users;

use adds::Adds;
use breakdown::Costs;
use cores::{Core, V2RAY, xray_cache_path};
use warden::WardenRun;

const TAG: &str = "vless-in";
const TUNNEL: &str = "bench";
const CONFIG_NAME: &str = "xray-bench.json";
/// The record's name in the state dir (`usersync::record`, private to the crate).
const RECORD_NAME: &str = "users-bench.json";
const CONCURRENCY: usize = 16;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const RSS_SETTLE: Duration = Duration::from_secs(2);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("usersync benchmark: run it with `cargo bench --bench usersync`");
        return;
    }
    let knobs = Knobs::from_env();
    let scratch = Scratch::create();
    let log = scratch.0.join("warden.log");
    init_logging(&log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let doc_bytes = users_document(knobs.users);
    let doc = std::sync::Arc::new(
        users::parse_document(&doc_bytes).expect("the generated document parses"),
    );
    assert!(doc.rejected.is_empty(), "rejected: {:?}", doc.rejected);
    let input = Input {
        knobs: &knobs,
        runtime: &runtime,
        log: &log,
        doc_bytes: &doc_bytes,
        doc: &doc,
    };
    let load_start = live::loadavg();
    let runs: Vec<CoreRun> = [Core::Xray, Core::V2ray]
        .into_iter()
        .map(|kind| match unavailable(kind) {
            Some(why) => {
                eprintln!("bench: {kind} SKIPPED: {why}");
                CoreRun {
                    kind,
                    version: String::new(),
                    result: Err(why),
                }
            }
            None => CoreRun {
                kind,
                version: live::version(kind),
                result: Ok(measure(kind, &scratch.0.join(kind.name()), &input)),
            },
        })
        .collect();
    report::print(&knobs, &runs, [load_start, live::loadavg()]);
    summary::print(&knobs, &runs);
}

/// Why `kind` cannot run here, if it cannot.
fn unavailable(kind: Core) -> Option<String> {
    if !Core::all().contains(&kind) {
        return Some("WARDEN_TEST_CORES excludes it".to_owned());
    }
    let path = match kind {
        Core::Xray => std::env::var_os("XRAY_BIN").map_or_else(xray_cache_path, PathBuf::from),
        Core::V2ray => PathBuf::from(V2RAY),
    };
    let install = match kind {
        Core::Xray => "run scripts/install-xray.sh or set XRAY_BIN",
        Core::V2ray => "apt-get install v2ray",
    };
    (!path.is_file()).then(|| format!("no {kind} at {} ({install})", path.display()))
}

/// What every core's run reads.
struct Input<'a> {
    knobs: &'a Knobs,
    runtime: &'a Runtime,
    log: &'a Path,
    doc_bytes: &'a [u8],
    doc: &'a std::sync::Arc<users::Document>,
}

/// One core's part of the run; `Err` holds why it was skipped.
struct CoreRun {
    kind: Core,
    version: String,
    result: Result<Measured, String>,
}

struct Measured {
    warden: WardenRun,
    /// A, B, C.
    baselines: [Adds; 3],
    costs: Costs,
    log_lines: usize,
    /// The load average when this core's part started.
    load: String,
}

fn measure(kind: Core, dir: &Path, input: &Input) -> Measured {
    let load = live::loadavg();
    let (knobs, runtime) = (input.knobs, input.runtime);
    let list: Vec<User> = input.doc.users.iter().map(|d| d.user.clone()).collect();
    let lines = || fs::read_to_string(input.log).map_or(0, |l| l.lines().count());
    let lines_before = lines();
    eprintln!("bench: {kind}: xray-warden, {} users", list.len());
    let warden = runtime.block_on(warden::bench_warden(kind, dir, input.doc, knobs.repeats));
    let log_lines = lines() - lines_before;
    let flavour = kind.flavour();
    let costs = breakdown::breakdown(dir, input.doc_bytes, flavour, knobs.repeats);
    eprintln!("bench: {kind}: A, one call at a time");
    let seq = runtime.block_on(baselines::bench_grpc(kind, &dir.join("seq"), &list, 1));
    eprintln!("bench: {kind}: B, {CONCURRENCY} calls in flight");
    let par_dir = dir.join("par");
    let par = runtime.block_on(baselines::bench_grpc(kind, &par_dir, &list, CONCURRENCY));
    let spawn_dir = dir.join("spawn");
    let spawn = baselines::bench_spawn(kind, runtime, &spawn_dir, &list, knobs.spawns);
    Measured {
        warden,
        baselines: [seq, par, spawn],
        costs,
        log_lines,
        load,
    }
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

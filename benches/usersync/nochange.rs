//! The no-change syncs, both kinds of round the daemon makes once the users are in:
//!
//! - quiet rounds (the steady state): the same `Arc` document, core process and config file as
//!   a round that found nothing to do; the engine only counts each inbound's users on Xray
//!   (GetInboundUsersCount) and calls nothing on V2Ray;
//! - full comparisons (`force`, and at least every 5 minutes): config and record read, each
//!   inbound counted and listed on Xray (GetInboundUsers), everything diffed.
//!
//! For each kind: the time of every round, and the witnesses of "nothing written" (the
//! engine's operation counter, the core's read/write syscalls beside an idle window as long, the
//! stamps of every file in the config and state dirs), plus how many rounds were full (the
//! `xray_usersync_last_full_round_timestamp_seconds` gauge moves at the end of each full round
//! only). On Xray each call the rounds make is also timed alone.

use std::time::{Duration, Instant};

use prometheus::Registry;
use xray_warden::users;
use xray_warden::xray::ApiClient;

use crate::cores::Core;
use crate::engine::{Stamp, Warden, counter_sum, stamps};
use crate::live::{CpuMark, Io, LiveCore};
use crate::{CALL_TIMEOUT, TAG};

/// Both kinds of no-change round, and what their calls cost alone.
pub struct NoChange {
    /// The first round after the full sync: a full one that finds nothing to do (after it the
    /// rounds are quiet), in ms; not in either set of figures below.
    pub first_ms: f64,
    /// That first round was Ok with nothing to do.
    pub first_clean: bool,
    pub quiet: Rounds,
    pub forced: Rounds,
    /// Xray only: GetInboundUsersCount alone (what a quiet round sends per inbound).
    pub count: Option<CallCost>,
    /// Xray only: GetInboundUsers of every user alone (what a full round adds per inbound).
    pub list: Option<CallCost>,
    /// V2Ray only: the core's syscalls for one GetSysStats on a new connection, to show the
    /// witness sees a call.
    pub probe: Option<Io>,
}

/// `repeats` rounds of one kind.
pub struct Rounds {
    /// Sorted.
    pub times: Vec<Duration>,
    /// Every outcome was Ok with nothing added, removed, changed or failed.
    pub clean: bool,
    /// Operations counted by the engine during them.
    pub ops: u64,
    /// How many of them were full rounds (the last-full-round gauge moved).
    pub full: usize,
    /// The core's I/O syscalls during the rounds and over an idle window as long after them.
    pub io: Option<[Io; 2]>,
    pub stamps_before: Vec<Stamp>,
    pub stamps_after: Vec<Stamp>,
}

impl Rounds {
    /// Nearest-rank percentile (0.0 = the fastest), in ms.
    pub fn ms_at(&self, p: f64) -> f64 {
        let reps = self.times.len();
        let rank = ((p * reps as f64).ceil() as usize).clamp(1, reps);
        self.times[rank - 1].as_secs_f64() * 1e3
    }

    pub fn files_unchanged(&self) -> bool {
        self.stamps_before == self.stamps_after
    }

    /// The core's syscalls per round beyond the idle window's, as [calls, bytes].
    pub fn io_per_round(&self) -> Option<[u64; 2]> {
        let [during, idle] = self.io?;
        let rounds = self.times.len().max(1) as u64;
        Some([
            during.calls.saturating_sub(idle.calls) / rounds,
            during.bytes.saturating_sub(idle.bytes) / rounds,
        ])
    }
}

/// One API call timed alone.
pub struct CallCost {
    /// [median, fastest] of `repeats` calls on one warm connection, in ms.
    pub ms: [f64; 2],
    /// CPU per call of [the core, this process], in ms.
    pub cpu: [f64; 2],
    /// The core's syscalls for one such call on a new connection.
    pub io: Option<Io>,
}

/// GetInboundUsersCount is timed alone this many times per repeat: its CPU is far below the
/// 10 ms tick of /proc/<pid>/stat.
pub const COUNT_CALLS_PER_REPEAT: usize = 10;

#[derive(Clone, Copy)]
enum Call {
    Count,
    List,
}

/// The first no-change round, then `repeats` quiet rounds, then `repeats` forced ones.
pub async fn no_change(
    warden: &mut Warden,
    core: &LiveCore,
    doc: &std::sync::Arc<users::Document>,
    repeats: usize,
) -> NoChange {
    let started = Instant::now();
    let first = warden.sync(doc, false).await;
    let first_ms = started.elapsed().as_secs_f64() * 1e3;
    let quiet = rounds(warden, core, doc, repeats, false).await;
    let forced = rounds(warden, core, doc, repeats, true).await;
    let (count, list, probe) = match core.kind {
        Core::Xray => (
            Some(call_cost(core, Call::Count, repeats * COUNT_CALLS_PER_REPEAT).await),
            Some(call_cost(core, Call::List, repeats).await),
            None,
        ),
        Core::V2ray => (None, None, probe_sys_stats(core).await),
    };
    NoChange {
        first_ms,
        first_clean: first.is_ok_and(|o| nothing_done(&o)),
        quiet,
        forced,
        count,
        list,
        probe,
    }
}

fn nothing_done(o: &xray_warden::usersync::engine::Outcome) -> bool {
    o.added + o.removed + o.changed + o.failed == 0
}

/// `repeats` no-change rounds with `force`, with the witnesses around them.
async fn rounds(
    warden: &mut Warden,
    core: &LiveCore,
    doc: &std::sync::Arc<users::Document>,
    repeats: usize,
    force: bool,
) -> Rounds {
    let state_dir = warden.state_dir.clone();
    let dirs = [core.config.parent().expect("the tunnel dir"), &state_dir];
    let stamps_before = stamps(&dirs);
    let ops_before = counter_sum(&warden.registry);
    let mut times = Vec::with_capacity(repeats);
    let (mut clean, mut full) = (true, 0);
    let mut last = last_full(&warden.registry);
    let io_before = Io::of(core.pid());
    for _ in 0..repeats {
        let started = Instant::now();
        let again = warden.sync(doc, force).await;
        times.push(started.elapsed());
        clean &= again.is_ok_and(|o| nothing_done(&o));
        let now = last_full(&warden.registry);
        full += usize::from(now != last);
        last = now;
    }
    let io_during = Io::of(core.pid()).and_then(|io| io.since(io_before));
    let ops = counter_sum(&warden.registry) - ops_before;
    let stamps_after = stamps(&dirs);
    let io_idle = idle_io(core, times.iter().sum()).await;
    times.sort();
    Rounds {
        times,
        clean,
        ops,
        full,
        io: io_during.zip(io_idle).map(|(d, i)| [d, i]),
        stamps_before,
        stamps_after,
    }
}

/// `xray_usersync_last_full_round_timestamp_seconds` of the bench's one tunnel.
fn last_full(registry: &Registry) -> Option<f64> {
    let families = registry.gather().into_iter();
    let mut ours =
        families.filter(|f| f.name() == "xray_usersync_last_full_round_timestamp_seconds");
    let family = ours.next()?;
    let metric = family.get_metric().first()?;
    Some(metric.get_gauge().get_value())
}

/// The core's I/O over `window` with nobody calling it.
async fn idle_io(core: &LiveCore, window: Duration) -> Option<Io> {
    let before = Io::of(core.pid());
    tokio::time::sleep(window).await;
    Io::of(core.pid())?.since(before)
}

/// V2Ray: the core's I/O for one GetSysStats on a new connection.
async fn probe_sys_stats(core: &LiveCore) -> Option<Io> {
    let before = Io::of(core.pid());
    let client = ApiClient::new(core.api, core.kind.flavour(), CALL_TIMEOUT);
    client.uptime().await.ok()?;
    Io::of(core.pid())?.since(before)
}

/// One `call` on a new connection (its syscalls), then `repeats` more on that warm connection
/// (their times and CPU).
async fn call_cost(core: &LiveCore, call: Call, repeats: usize) -> CallCost {
    let client = ApiClient::new(core.api, core.kind.flavour(), CALL_TIMEOUT);
    let before = Io::of(core.pid());
    make(&client, call).await;
    let io = Io::of(core.pid()).and_then(|io| io.since(before));
    let mark = CpuMark::now(core.pid());
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        make(&client, call).await;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let cpu = mark.since();
    let calls = times.len() as f64;
    times.sort_by(f64::total_cmp);
    CallCost {
        ms: [times[times.len() / 2], times[0]],
        cpu: [cpu.core_ms / calls, cpu.client_ms / calls],
        io,
    }
}

async fn make(client: &ApiClient, call: Call) {
    match call {
        Call::Count => {
            let counted = client.inbound_user_count(TAG).await;
            assert!(
                matches!(counted, Ok(Some(_))),
                "GetInboundUsersCount failed: {counted:?}"
            );
        }
        Call::List => {
            let listed = client.inbound_users(TAG).await;
            assert!(listed.is_ok(), "GetInboundUsers failed: {listed:?}");
        }
    }
}

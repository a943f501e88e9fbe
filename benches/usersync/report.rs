//! The printed report: one table per core (the warden, its targets, baselines A, B, C), the
//! notes, where the warden's time goes, and a summary with both cores side by side.

use std::thread;

use crate::CONCURRENCY;
use crate::adds::Adds;
use crate::breakdown::Costs;
use crate::cores::Core;
use crate::live::Io;
use crate::nochange::{CallCost, NoChange, Rounds};
use crate::warden::WardenRun;
use crate::{CoreRun, Knobs, Measured};

pub const TARGET_FULL_S: f64 = 3.0;

/// The no-change target: the 10 ms on Xray; 50 ms on V2Ray, as before.
pub fn target_no_change_ms(kind: Core) -> f64 {
    match kind {
        Core::Xray => 10.0,
        Core::V2ray => 50.0,
    }
}

pub fn print(knobs: &Knobs, runs: &[CoreRun], loads: [String; 2]) {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let n = knobs.users;
    println!("\nusersync benchmark, {n} VLESS users into one inbound, {cpus} CPUs");
    println!(
        "load average (1 5 15 min): {} at the start, {} at the end",
        loads[0], loads[1]
    );
    for run in runs {
        match &run.result {
            Err(why) => println!("\n== {}: SKIPPED: {why}", run.kind),
            Ok(m) => print_core(knobs, run.kind, &run.version, m),
        }
    }
}

fn print_core(knobs: &Knobs, kind: Core, version: &str, m: &Measured) {
    let n = knobs.users;
    println!(
        "\n== {kind}: {version}, load average at its start {}",
        m.load
    );
    let mut t = Table::default();
    t.line(&[
        "",
        "xray-warden",
        "target",
        "A: 1 call at a time",
        &format!("B: {CONCURRENCY} in flight"),
        "C: 1 process/user",
    ]);
    let w = &m.warden;
    let all = [&w.adds, &m.baselines[0], &m.baselines[1], &m.baselines[2]];
    let full = target(w.adds.took.as_secs_f64(), TARGET_FULL_S, "s");
    t.row("users added / tried", &all, None, |a| {
        format!("{}/{}{}", a.ok, a.tried, a.mark(" (measured part)"))
    });
    let held = match kind {
        Core::Xray => "core lists them (GetInboundUsers)",
        Core::V2ray => "core holds them (re-add: exists)",
    };
    t.row(held, &all, None, |a| format!("{}/{}", a.held, a.tried));
    let label = format!("wall time, all {n} users");
    t.row(&label, &all, Some(full), |a| {
        let (tilde, extra) = (a.mark("~"), a.mark(" EXTRAPOLATED"));
        format!("{tilde}{:.2} s{extra}", a.took_all())
    });
    let per_user = |a: &Adds, ms: f64| format!("{:.0} µs", ms * 1e3 / a.tried.max(1) as f64);
    t.row("  per user", &all, None, |a| {
        per_user(a, a.took.as_secs_f64() * 1e3)
    });
    t.row("  users per second", &all, None, |a| {
        format!("{:.0}/s", a.tried as f64 / a.took.as_secs_f64().max(1e-9))
    });
    t.row(&format!("{kind} CPU per user"), &all, None, |a| {
        per_user(a, a.cpu.core_ms)
    });
    t.row("client CPU per user (+ children)", &all, None, |a| {
        per_user(a, a.cpu.client_ms)
    });
    t.row(
        &format!("{kind} RSS: idle -> after, +2 s"),
        &all,
        None,
        |a| format!("{} -> {}", mib(a.core_rss_idle), mib(a.core_rss_after)),
    );
    t.row("all CPUs busy during it (anyone)", &all, None, |a| {
        format!("{:.0}%", a.cpu.machine_busy)
    });
    t.row("first error", &all, None, |a| {
        let error = a.first_error.as_deref().or(a.skipped.as_deref());
        error.unwrap_or("none").chars().take(40).collect()
    });
    warden_rows(&mut t, kind, w, n);
    t.print();
    print_notes(knobs, kind, m);
    print_breakdown(kind, m);
}

/// The rows only the warden has: the full sync's correctness.
fn warden_rows(t: &mut Table, kind: Core, w: &WardenRun, n: usize) {
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
    no_change_rows(t, kind, &w.no_change);
}

/// The no-change syncs, quiet rounds then forced full ones: time, calls, and the witnesses of
/// "nothing written".
fn no_change_rows(t: &mut Table, kind: Core, nc: &NoChange) {
    let first = format!("{:.1} ms", nc.first_ms);
    let clean = check(nc.first_clean, "nothing to do");
    t.warden("first no-change round (full, once)", first, clean);
    let (q, f) = (&nc.quiet, &nc.forced);
    let label = format!("no-change, QUIET round, median of {}", q.times.len());
    let verdict = target(q.ms_at(0.5), target_no_change_ms(kind), "ms");
    t.warden(&label, format!("{:.2} ms", q.ms_at(0.5)), verdict);
    spread_row(t, q);
    let full = format!("{} of {}", q.full, q.times.len());
    t.warden(
        "  full rounds among them (gauge)",
        full,
        check(q.full == 0, "= 0"),
    );
    if let Some(count) = &nc.count {
        call_rows(t, "GetInboundUsersCount", count, "1 call/inbound");
    }
    witness_rows(t, kind, nc, Kind::Quiet);
    let label = format!(
        "no-change, FULL round (forced), median of {}",
        f.times.len()
    );
    t.warden(
        &label,
        format!("{:.1} ms", f.ms_at(0.5)),
        "no target".to_owned(),
    );
    spread_row(t, f);
    let full = format!("{} of {}", f.full, f.times.len());
    let all = check(f.full == f.times.len(), "= all");
    t.warden("  full rounds among them (gauge)", full, all);
    if let Some(list) = &nc.list {
        call_rows(t, "GetInboundUsers", list, "+ 1 count, per inbound");
    }
    witness_rows(t, kind, nc, Kind::Full);
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Quiet,
    Full,
}

pub fn rounds_of(nc: &NoChange, which: Kind) -> &Rounds {
    match which {
        Kind::Quiet => &nc.quiet,
        Kind::Full => &nc.forced,
    }
}

fn spread_row(t: &mut Table, r: &Rounds) {
    let (min, p90, max) = (r.ms_at(0.0), r.ms_at(0.9), r.ms_at(1.0));
    let spread = format!("{min:.2} / {p90:.2} / {max:.2} ms");
    t.warden("  min / p90 / max", spread, String::new());
}

fn call_rows(t: &mut Table, name: &str, c: &CallCost, what: &str) {
    let [median, fastest] = c.ms;
    let ms = format!("{median:.2} ms (fastest {fastest:.2})");
    t.warden(&format!("  of which {name}, alone"), ms, what.to_owned());
    let [core, client] = c.cpu;
    let cpu = format!("{core:.1} ms in the core, {client:.1} ms here");
    t.warden("    its CPU per call", cpu, String::new());
}

/// The three witnesses of "nothing written" for one kind of round.
fn witness_rows(t: &mut Table, kind: Core, nc: &NoChange, which: Kind) {
    let r = rounds_of(nc, which);
    let counts = if r.clean { "0 each" } else { "NOT 0" };
    let clean = check(r.clean, "all 0");
    t.warden("  added+removed+changed+failed", counts.to_owned(), clean);
    let ops = check(r.ops == 0, "= 0");
    t.warden("  AlterInbound ops (metric)", r.ops.to_string(), ops);
    let (io, verdict) = io_row(kind, nc, which);
    t.warden(&format!("  {kind} read/write syscalls"), io, verdict);
    let files = match r.files_unchanged() {
        true => format!("none of {} files", r.stamps_after.len()),
        false => "CHANGED (see notes)".to_owned(),
    };
    let unchanged = check(r.files_unchanged(), "none");
    t.warden("  files changed (config + state dir)", files, unchanged);
}

/// V2Ray: the core's syscalls during either kind of round must equal an idle window's. Xray:
/// per quiet round they must be one count call's (more than nothing, at most one such call on a
/// new connection); per full round one count and one list.
pub fn io_row(kind: Core, nc: &NoChange, which: Kind) -> (String, String) {
    let r = rounds_of(nc, which);
    let (Some([during, idle]), Some([calls, each])) = (r.io, r.io_per_round()) else {
        return ("/proc/<pid>/io unreadable".to_owned(), check(false, "read"));
    };
    let io_of = |c: &Option<CallCost>| c.as_ref().and_then(|c| c.io);
    match (kind, io_of(&nc.count), io_of(&nc.list)) {
        (Core::V2ray, ..) => {
            let probe = nc.probe.unwrap_or(Io { bytes: 0, calls: 0 });
            (
                format!(
                    "{} calls, {} B (idle: {}, {} B; 1 call: {}, {} B)",
                    during.calls, during.bytes, idle.calls, idle.bytes, probe.calls, probe.bytes
                ),
                check(during == idle && probe.bytes > 0, "= idle"),
            )
        }
        (Core::Xray, Some(count), Some(list)) => {
            let (ok, what, shown) = match which {
                Kind::Quiet => {
                    let ok = each > 0 && each <= count.bytes + count.bytes / 2;
                    let shown = format!("1 count: {}, {} B", count.calls, count.bytes);
                    (ok, "= 1 count", shown)
                }
                Kind::Full => {
                    let most = list.bytes + count.bytes;
                    let ok = each >= list.bytes / 2 && each <= most + most / 2;
                    let shown = format!("1 list: {}, {} B", list.calls, list.bytes);
                    (ok, "= 1 count + 1 list", shown)
                }
            };
            (
                format!(
                    "{calls} calls, {each} B per round (idle: {}, {} B; {shown})",
                    idle.calls, idle.bytes
                ),
                check(ok, what),
            )
        }
        (Core::Xray, ..) => ("no probe call".to_owned(), check(false, "probed")),
    }
}

fn print_notes(knobs: &Knobs, kind: Core, m: &Measured) {
    let spawn = &m.baselines[2];
    println!("notes ({kind}):");
    println!(
        "  every column starts from a fresh {kind} process with no users (killed by PID after)"
    );
    println!(
        "  xray-warden: Engine::sync, flavour auto-detected, concurrency {CONCURRENCY}, call timeout \
         {:?}; the time includes detection, persisting {} clients to the config file and the \
         record; its {} log lines (info) went to a file",
        crate::CALL_TIMEOUT,
        knobs.users,
        m.log_lines
    );
    if spawn.skipped.is_none() {
        let each = match kind {
            Core::Xray => {
                "each is `xray api adu --server=ADDR FILE` (the bench writes FILE first: the \
                 inbound with one client) making 1 AlterInbound call; adu exits 0 even when it \
                 adds nothing, so success is its 'Added 1 user(s)' line"
            }
            Core::V2ray => {
                "each is examples/add_user making 2 calls (inbound check + add); V2Ray 4.34 has \
                 no `api adu`"
            }
        };
        println!(
            "  C: {} processes measured ({:.2} s), the {}-users figure is EXTRAPOLATED linearly; \
             {each}",
            spawn.tried,
            spawn.took.as_secs_f64(),
            spawn.total
        );
    }
    match kind {
        Core::Xray => println!(
            "  correctness: the core's own list (GetInboundUsers) must name every user tried; \
             a QUIET round (same document Arc, core process and config file stamp as a round \
             that found nothing to do) makes 1 GetInboundUsersCount per inbound and reads no \
             file; a FULL round (forced, or 5 min since the last) reads config + record and makes \
             1 count + 1 GetInboundUsers per inbound; neither makes an AlterInbound call"
        ),
        Core::V2ray => println!(
            "  correctness: re-adding each user must answer 'already exists' (V2Ray cannot list \
             users); a QUIET round stats the config file and calls nothing; a FULL round (forced) \
             reads config + record, diffs, and calls nothing"
        ),
    }
    println!(
        "  rounds: the first no-change round after the full sync is a full one (timed once, in \
         neither set); 'full rounds among them' counts the rounds after which \
         xray_usersync_last_full_round_timestamp_seconds moved"
    );
    println!(
        "  peak RSS: VmHWM of this bench process, reset (clear_refs 5) right before the full sync: \
         a proxy for the engine's peak, holding also the parsed document and the runtime"
    );
    println!("  CPU: utime+stime deltas in 10 ms ticks; 'client' is this whole bench process");
    println!(
        "  {kind} syscalls: rchar+wchar and syscr+syscw of /proc/<pid>/io across each set of \
         rounds, beside an idle window as long after it, and one probe call on a new connection \
         ('1 call': GetSysStats on V2Ray; '1 count': GetInboundUsersCount, '1 list': \
         GetInboundUsers of every user on Xray)"
    );
    if kind == Core::Xray {
        println!(
            "  calls alone: on one warm connection after one on a new connection; {} \
             GetInboundUsersCount calls (CPU ticks are 10 ms), {} GetInboundUsers calls",
            knobs.repeats * crate::nochange::COUNT_CALLS_PER_REPEAT,
            knobs.repeats
        );
    }
    if kind == Core::V2ray {
        println!("  facts appendix A measured on 4.34: 6.59 s sequential, 3.60 s 16-way");
    }
    let nc = &m.warden.no_change;
    for (name, r) in [("quiet", &nc.quiet), ("full", &nc.forced)] {
        if !r.files_unchanged() {
            println!("  files before the {name} rounds: {:#?}", r.stamps_before);
            println!("  files after them: {:#?}", r.stamps_after);
        }
    }
}

fn print_breakdown(kind: Core, m: &Measured) {
    let costs: &Costs = &m.costs;
    println!("where the warden's time goes on {kind} (each step alone on the run's files, ms):");
    let width = costs.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 3;
    println!("  {:width$}{:>9}{:>9}", "", "median", "fastest");
    for (label, [median, fastest]) in costs {
        println!("  {label:width$}{median:>9.2}{fastest:>9.2}");
    }
    let cost = |part: &str| {
        let found = costs.iter().find(|(l, _)| l.contains(part));
        found.map_or(0.0, |(_, [median, _])| *median)
    };
    let w = &m.warden;
    let writes = cost("tunnelcfg::persist") + cost("record: serialise");
    let full = w.adds.took.as_secs_f64() * 1e3;
    let calls = m.baselines[1].took.as_secs_f64() * 1e3;
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
    let nc = &w.no_change;
    let median = nc.forced.ms_at(0.5);
    let list = match &nc.list {
        Some(list) => {
            let sum = steps + list.ms[0];
            format!(" + GetInboundUsers {:.1} ms = {sum:.1} ms", list.ms[0])
        }
        None => String::new(),
    };
    println!(
        "  no-change FULL round {median:.1} ms (median); read + record + desired_for + diff \
         alone: {steps:.1} ms{list}"
    );
    let count = match &nc.count {
        Some(count) => format!(" + GetInboundUsersCount (alone: {:.2} ms)", count.ms[0]),
        None => ", no call".to_owned(),
    };
    println!(
        "  no-change QUIET round {:.2} ms (median): a stat of the config file{count}",
        nc.quiet.ms_at(0.5)
    );
}

/// Rows of label, warden figure, target, and the three baselines.
#[derive(Default)]
pub struct Table {
    pub lines: Vec<[String; 6]>,
}

impl Table {
    pub fn line(&mut self, cells: &[&str; 6]) {
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

    pub fn print(&self) {
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

pub fn target(value: f64, limit: f64, unit: &str) -> String {
    let mark = if value <= limit { "PASS" } else { "MISS" };
    format!("<= {limit} {unit} {mark}")
}

pub fn check(ok: bool, what: &str) -> String {
    format!("{what} {}", if ok { "PASS" } else { "MISS" })
}

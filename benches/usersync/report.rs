//! The printed report: one table per core (the warden, its targets, baselines A, B, C), the
//! notes, where the warden's time goes, and a summary with both cores side by side.

use std::thread;

use crate::CONCURRENCY;
use crate::adds::Adds;
use crate::breakdown::Costs;
use crate::cores::Core;
use crate::warden::{NoChange, WardenRun};
use crate::{CoreRun, Knobs, Measured};

const TARGET_FULL_S: f64 = 3.0;

/// The no-change target: the 10 ms on Xray; 50 ms on V2Ray, as before.
fn target_no_change_ms(kind: Core) -> f64 {
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
    print_summary(knobs, runs);
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
    no_change_rows(t, kind, &w.quiet);
}

/// The no-change syncs: time, and the three witnesses of "nothing written".
fn no_change_rows(t: &mut Table, kind: Core, q: &NoChange) {
    let at = |p: f64| q.ms_at(p);
    let label = format!("no-change sync, median of {}", q.times.len());
    let verdict = target(at(0.5), target_no_change_ms(kind), "ms");
    t.warden(&label, format!("{:.1} ms", at(0.5)), verdict);
    let spread = format!("{:.1} / {:.1} / {:.1} ms", at(0.0), at(0.9), at(1.0));
    t.warden("  min / p90 / max", spread, String::new());
    if let Some([median, fastest]) = q.list_ms {
        let list = format!("{median:.1} ms (fastest {fastest:.1})");
        let what = "1 read-only call/inbound".to_owned();
        t.warden("  of which GetInboundUsers, alone", list, what);
    }
    if let Some([core, client]) = q.list_cpu {
        let cpu = format!("{core:.1} ms in the core, {client:.1} ms here");
        t.warden("    its CPU per call", cpu, String::new());
    }
    let counts = if q.clean { "0 each" } else { "NOT 0" };
    let clean = check(q.clean, "all 0");
    t.warden("  added+removed+changed+failed", counts.to_owned(), clean);
    let ops = check(q.ops == 0, "= 0");
    t.warden("  AlterInbound ops (metric)", q.ops.to_string(), ops);
    let (io, verdict) = io_row(kind, q);
    t.warden(&format!("  {kind} read/write syscalls"), io, verdict);
    let unchanged = q.stamps_before == q.stamps_after;
    let files = match unchanged {
        true => format!("none of {} files", q.stamps_after.len()),
        false => "CHANGED (see notes)".to_owned(),
    };
    let unchanged = check(unchanged, "none");
    t.warden("  files changed (config + state dir)", files, unchanged);
}

/// V2Ray: the core's syscalls during the no-change syncs must equal an idle window's. Xray:
/// each sync lists the inbound's users, so they must stay within one such call per sync.
fn io_row(kind: Core, q: &NoChange) -> (String, String) {
    let Some([during, idle, probe]) = q.core_io else {
        return ("/proc/<pid>/io unreadable".to_owned(), check(false, "read"));
    };
    let syncs = q.times.len().max(1) as u64;
    match kind {
        Core::V2ray => (
            format!(
                "{} calls, {} B (idle: {}, {} B; 1 call: {}, {} B)",
                during.calls, during.bytes, idle.calls, idle.bytes, probe.calls, probe.bytes
            ),
            check(during == idle && probe.bytes > 0, "= idle"),
        ),
        Core::Xray => {
            let each = during.bytes.saturating_sub(idle.bytes) / syncs;
            let calls = during.calls.saturating_sub(idle.calls) / syncs;
            let within = each <= probe.bytes + probe.bytes / 2 && probe.bytes > 0;
            (
                format!(
                    "{calls} calls, {each} B per sync (idle: {}, {} B; 1 list: {}, {} B)",
                    idle.calls, idle.bytes, probe.calls, probe.bytes
                ),
                check(within, "<= 1 list"),
            )
        }
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
             the engine lists the inbound's live users at every sync (Xray can), so a no-change \
             sync makes exactly one read-only call per inbound and no AlterInbound call"
        ),
        Core::V2ray => println!(
            "  correctness: re-adding each user must answer 'already exists' (V2Ray cannot list \
             users); the no-change sync reads the warden's record and calls nothing"
        ),
    }
    println!(
        "  peak RSS: VmHWM of this bench process, reset (clear_refs 5) right before the full sync: \
         a proxy for the engine's peak, holding also the parsed document and the runtime"
    );
    println!("  CPU: utime+stime deltas in 10 ms ticks; 'client' is this whole bench process");
    println!(
        "  {kind} syscalls: rchar+wchar and syscr+syscw of /proc/<pid>/io across the no-change \
         syncs, beside an idle window as long and one probe call on a new connection \
         ('1 call': GetSysStats on V2Ray; '1 list': GetInboundUsers of every user on Xray)"
    );
    if kind == Core::V2ray {
        println!("  facts appendix A measured on 4.34: 6.59 s sequential, 3.60 s 16-way");
    }
    let q = &m.warden.quiet;
    if q.stamps_before != q.stamps_after {
        println!("  files before: {:#?}", q.stamps_before);
        println!("  files after: {:#?}", q.stamps_after);
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
    let median = w.quiet.ms_at(0.5);
    let list = match w.quiet.list_ms {
        Some([list, _]) => format!(" + GetInboundUsers {list:.1} ms = {:.1} ms", steps + list),
        None => String::new(),
    };
    println!(
        "  no-change sync {median:.1} ms (median); read + record + desired_for + diff alone: \
         {steps:.1} ms{list}"
    );
}

/// Both cores side by side: the headline figures of each column.
fn print_summary(knobs: &Knobs, runs: &[CoreRun]) {
    let n = knobs.users;
    println!("\nsummary, {n} users, both cores in this run:");
    let mut t = Table::default();
    let mut head = [""; 6];
    for (i, run) in runs.iter().take(2).enumerate() {
        head[1 + 2 * i] = run.kind.name();
        head[2 + 2 * i] = "target";
    }
    t.line(&head);
    let mut row = |label: &str, cell: &dyn Fn(Core, &Measured) -> (String, String)| {
        let mut cells: [String; 6] = Default::default();
        cells[0] = label.to_owned();
        for (i, run) in runs.iter().take(2).enumerate() {
            let (value, target) = match &run.result {
                Ok(m) => cell(run.kind, m),
                Err(_) => ("SKIPPED".to_owned(), String::new()),
            };
            cells[1 + 2 * i] = value;
            cells[2 + 2 * i] = target;
        }
        t.lines.push(cells);
    };
    let wall = |a: &Adds| match &a.skipped {
        Some(_) => "skipped".to_owned(),
        None => format!(
            "{}{:.2} s{} ({}/{} held)",
            a.mark("~"),
            a.took_all(),
            a.mark(" extrapolated"),
            a.held,
            a.tried
        ),
    };
    row("xray-warden, full sync", &|_, m| {
        let took = m.warden.adds.took.as_secs_f64();
        (wall(&m.warden.adds), target(took, TARGET_FULL_S, "s"))
    });
    let names = [
        "A: 1 call at a time",
        &format!("B: {CONCURRENCY} in flight"),
        "C: 1 process/user",
    ];
    for (i, name) in names.iter().enumerate() {
        row(name, &|_, m| (wall(&m.baselines[i]), String::new()));
    }
    row("no-change sync, median", &|kind, m| {
        let median = m.warden.quiet.ms_at(0.5);
        let limit = target_no_change_ms(kind);
        (format!("{median:.1} ms"), target(median, limit, "ms"))
    });
    row("  AlterInbound ops / files changed", &|_, m| {
        let q = &m.warden.quiet;
        let files = usize::from(q.stamps_before != q.stamps_after);
        let ok = q.ops == 0 && files == 0 && q.clean;
        (format!("{} / {files}", q.ops), check(ok, "0 / 0"))
    });
    row("  calls to the core per sync", &|kind, m| match kind {
        Core::Xray => {
            let list = m.warden.quiet.list_ms.map_or(0.0, |[median, _]| median);
            (
                format!("1 GetInboundUsers ({list:.1} ms)"),
                "read-only".to_owned(),
            )
        }
        Core::V2ray => ("none".to_owned(), String::new()),
    });
    t.print();
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

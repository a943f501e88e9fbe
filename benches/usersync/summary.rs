//! The report's last part: both cores side by side, the headline figures of each column.

use crate::CONCURRENCY;
use crate::adds::Adds;
use crate::cores::Core;
use crate::report::{
    Kind, TARGET_FULL_S, Table, check, io_row, rounds_of, target, target_no_change_ms,
};
use crate::{CoreRun, Knobs, Measured};

/// Both cores side by side: the headline figures of each column.
pub fn print(knobs: &Knobs, runs: &[CoreRun]) {
    let n = knobs.users;
    println!("\nsummary, {n} users, both cores in this run:");
    let mut t = Table::default();
    let mut head = [""; 6];
    for (i, run) in runs.iter().take(2).enumerate() {
        head[1 + 2 * i] = run.kind.name();
        head[2 + 2 * i] = "target";
    }
    t.line(&head);
    let mut row = |label: &str, cell: Cell| {
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
    row("no-change, QUIET round, median", &|kind, m| {
        let median = m.warden.no_change.quiet.ms_at(0.5);
        let limit = target_no_change_ms(kind);
        (format!("{median:.2} ms"), target(median, limit, "ms"))
    });
    witness_summary(&mut row, Kind::Quiet);
    row("  calls to the core per round", &|kind, m| match kind {
        Core::Xray => {
            let ms = m.warden.no_change.count.as_ref().map_or(0.0, |c| c.ms[0]);
            let calls = format!("1 GetInboundUsersCount ({ms:.2} ms)");
            (calls, "per inbound".to_owned())
        }
        Core::V2ray => ("none".to_owned(), String::new()),
    });
    row("no-change, FULL round (forced), median", &|_, m| {
        let median = m.warden.no_change.forced.ms_at(0.5);
        (format!("{median:.1} ms"), "no target".to_owned())
    });
    witness_summary(&mut row, Kind::Full);
    row("  calls to the core per round", &|kind, m| match kind {
        Core::Xray => {
            let ms = m.warden.no_change.list.as_ref().map_or(0.0, |c| c.ms[0]);
            let calls = format!("1 count + 1 GetInboundUsers ({ms:.1} ms)");
            (calls, "per inbound".to_owned())
        }
        Core::V2ray => ("none".to_owned(), String::new()),
    });
    t.print();
}

type Cell<'a> = &'a dyn Fn(Core, &Measured) -> (String, String);

/// The summary's witness rows for one kind of no-change round.
fn witness_summary(row: &mut impl FnMut(&str, Cell), which: Kind) {
    row("  full rounds among them", &|_, m| {
        let r = rounds_of(&m.warden.no_change, which);
        let ok = match which {
            Kind::Quiet => r.full == 0,
            Kind::Full => r.full == r.times.len(),
        };
        let what = if which == Kind::Quiet { "= 0" } else { "= all" };
        (format!("{} of {}", r.full, r.times.len()), check(ok, what))
    });
    row("  AlterInbound ops / files changed", &|_, m| {
        let r = rounds_of(&m.warden.no_change, which);
        let files = usize::from(!r.files_unchanged());
        let ok = r.ops == 0 && files == 0 && r.clean;
        (format!("{} / {files}", r.ops), check(ok, "0 / 0"))
    });
    row("  core syscalls per round", &|kind, m| {
        let r = rounds_of(&m.warden.no_change, which);
        let shown = r
            .io_per_round()
            .map_or("unreadable".to_owned(), |[calls, bytes]| {
                format!("{calls} calls, {bytes} B")
            });
        (shown, io_row(kind, &m.warden.no_change, which).1)
    });
}

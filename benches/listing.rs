//! What one watcher listing call costs the sandbox's systemd, call by call, at a fleet size.
//!
//! The watcher's safety net (`systemd.resync_interval`) lists units. A listing costs the
//! warden little, but systemd does the work: this bench prices each call apart, as systemd's
//! own CPU (utime+stime of its PID 1 in the sandbox) over a number of calls made by
//! `systemctl` inside the sandbox, which makes the same D-Bus calls the warden makes:
//! - `list-units --all PATTERN`: `ListUnitsByPatterns` (the light round's states);
//! - `list-unit-files PATTERN`: `ListUnitFilesByPatterns` (unit files and their enablement);
//! - `show UNIT`: one unit's properties (`GetAll`), what the watcher reads per moved unit;
//! - `is-enabled UNIT`: `GetUnitFileState`, what the watcher asks of a unit systemd unloaded;
//! - `daemon-reload`: systemd's own cost of a reload, after which the warden lists the files.
//!
//! Run it with `cargo bench --bench listing` (root). Environment: XW_LISTING_UNITS (`1000`),
//! XW_LISTING_CALLS (`5`, calls per kind). Without `--bench` it only says so.

#[path = "../tests/support/mod.rs"]
mod support;

mod shared;

use std::thread;
use std::time::{Duration, Instant};

use shared::fleet::start_units;
use shared::procstat::Cpu;
use support::sandbox::Sandbox;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("listing benchmark: run it with `cargo bench --bench listing` (needs root)");
        return;
    }
    let number = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?}: a number"))
            })
            .unwrap_or(default)
    };
    let units = number("XW_LISTING_UNITS", 1000);
    let calls = number("XW_LISTING_CALLS", 5);
    let sandbox = Sandbox::boot("bench-listing");
    start_units(&sandbox, 0..units);
    // Let the start settle: systemd's own bookkeeping after starting a fleet is not a listing.
    thread::sleep(Duration::from_secs(10));
    let systemd = sandbox.systemd_pid();
    let one_unit = "xray-tunnel-b000.service";
    let kinds: [(&str, Vec<&str>); 6] = [
        ("idle (no call)", vec![]),
        (
            "ListUnitsByPatterns",
            vec!["list-units", "--all", "--no-legend", "xray-tunnel-*"],
        ),
        (
            "ListUnitFilesByPatterns",
            vec!["list-unit-files", "--no-legend", "xray-tunnel-*"],
        ),
        ("one unit's properties", vec!["show", one_unit]),
        ("GetUnitFileState", vec!["is-enabled", one_unit]),
        ("Reload (daemon-reload)", vec!["daemon-reload"]),
    ];

    println!(
        "systemd CPU per call at {units} units ({calls} calls each, systemctl in the sandbox)"
    );
    for (label, args) in &kinds {
        let (before, from) = (Cpu::of(systemd), Instant::now());
        for _ in 0..calls {
            if args.is_empty() {
                thread::sleep(Duration::from_millis(200));
            } else {
                sandbox.systemctl(args);
            }
        }
        let (cpu, took) = (Cpu::of(systemd).since(before), from.elapsed());
        println!(
            "  {label:<26} {:>9.1} ms of systemd CPU per call (run time {:>9.1} ms), wall {:>7.1} ms per call",
            cpu.ms() / calls as f64,
            cpu.run_ms() / calls as f64,
            took.as_secs_f64() * 1e3 / calls as f64,
        );
    }
}

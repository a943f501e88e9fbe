//! Steady-state benchmark: what xray-warden costs per second, against node_exporter's systemd
//! collector, both serving the same `xray-tunnel-*` units of a REAL systemd booted in a
//! namespace sandbox, each scraped every 15 s like a default Prometheus job.
//!
//! In one run, for each fleet size (200, 1,000 and 2,000 units; the sandbox keeps the units of
//! the size before and starts the rest), every column on the same units: the baseline warden
//! build (if there is one, see below), this tree's warden (release build, an empty config:
//! every feature on at its default period, no user sync since no source is configured; the
//! D-Bus call deadline raised to 60 s, see `WARDEN_CONFIG`) and node_exporter. The columns run
//! side by side through the whole size: each is started and waited for until it serves every
//! unit, then a common warm-up, then each column is measured in turn, in `XW_STEADY_ROUNDS`
//! windows of its own with a scrape every 15 s, the order reversed every other round
//! ([`measure::measure_size`] says why). Per column it prints the total CPU per second (utime+stime of
//! the exporter, the sandbox's systemd and its dbus-daemon over its windows, and each window's
//! figure), the median scrape latency (connect to last byte, read into a buffer kept between
//! scrapes; also until the body is copied out as a `String`, as measured until stop 18), the
//! body's size, and the RSS after its last window (measured from the exporter's start). The
//! issue's targets are marked PASS/MISS beside the warden's figures; the bench never fails on a
//! figure.
//!
//! Run it with `cargo bench --bench steady` (root, Debian's prometheus-node-exporter). Without
//! `--bench` on the command line (`cargo test --all-targets` runs bench binaries that way) it
//! only says so, and boots nothing.
//!
//! Environment: XW_STEADY_UNITS (`200,1000,2000`), XW_STEADY_SECS (one window, 300: see
//! [`WINDOW_SECS`]),
//! XW_STEADY_ROUNDS (windows per column, 2), XW_STEADY_WARMUP_SECS (45), XW_STEADY_SCRAPE_SECS (15), XW_STEADY_BASELINE (a warden binary
//! to measure beside this tree's; default `<target>/steady-baseline/xray-warden` when that exists,
//! `none` to skip), XW_STEADY_WRAP (a command line the warden columns run under, for profiling:
//! `valgrind --tool=callgrind --callgrind-out-file=<dir>/cg.%p`; their figures are then the
//! profiler's), XW_STEADY_RESYNC (the watcher's `systemd.resync_interval` for every warden
//! column, e.g. `20s`, to measure its safety net: the default 300 s falls in a window or not). A smoke run:
//! `XW_STEADY_UNITS=50 XW_STEADY_SECS=15 XW_STEADY_WARMUP_SECS=5`.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "steady/measure.rs"]
mod measure;
#[path = "steady/report.rs"]
mod report;
mod shared;

use std::path::{Path, PathBuf};
use std::time::Duration;

use shared::fleet::{dbus_daemon_of, start_units};
use shared::node_exporter::NODE_EXPORTER;
use shared::procstat::{Cpu, HostCpu};
use support::sandbox::Sandbox;
use support::warden::BIN;

/// Every period at its default (sampler 15 s with a process listing every 300 s, health 15 s, resync 300 s). Only the D-Bus
/// deadline is raised: a sandbox that has just started 1,000 units answers the first
/// `ListUnitFilesByPatterns` slower than the default 5 s, and the warden would retry for minutes.
const WARDEN_CONFIG: &str = "[systemd]\ncall_timeout = \"60s\"\n";
/// The production log level (the test helper's default is debug).
const WARDEN_LOG: (&str, &str) = ("RUST_LOG", "info");
/// The shipped unit: its `Environment=` lines apply to this tree's warden.
const SHIPPED_UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/xray-warden.service");
const WAIT: Duration = Duration::from_secs(180);
/// The default warm-up: longer than two health intervals after the warden serves every unit.
/// Its first health pass comes at the first tick after the unit listing, up to 15 s after the
/// scrape that found every unit, and the pass after it reads every process once more (the
/// census settling, `domain::health_trigger::Census`): about 30 ms at 2,000
/// units, once. With the 20 s of stop 20 it fell into the window or not, by chance (perf of a
/// 2,000-unit window put it in the window's first 50 ms).
const WARMUP_SECS: u64 = 45;

/// One window. Two of them (the default rounds) make 600 s per column: the period of the health
/// pass's safety net (a full read every 40 passes of 15 s) and twice the watcher's resync
/// (300 s), so each column's windows hold that work at its real weight. With windows of 160 s
/// (stop 22) the safety net always fell into the warden's last window and weighed twice as
/// much in the pooled figure. Still weighed twice: the sampler's listing of every unit's
/// processes, every 20 minutes (the fourth of its 300 s readings), which falls into the
/// warden's last window. `XW_STEADY_SECS=600` makes the two windows hold the sampler's whole
/// 1,200 s cycle at its real weight (stop 24's record), at twice the run time.
const WINDOW_SECS: u64 = 300;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("steady benchmark: run it with `cargo bench --bench steady` (needs root)");
        return;
    }
    let settings = Settings::from_env();
    assert!(
        Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} is missing: apt-get install prometheus-node-exporter"
    );
    let sandbox = Sandbox::boot("bench-steady");
    let systemd = sandbox.systemctl(&["--version"]);
    let systemd = systemd.lines().next().unwrap_or("systemd ?").to_owned();
    let columns = settings.columns();
    report::header(&settings, &systemd, &columns);
    let mut sizes = Vec::new();
    let mut running = 0;
    for &units in &settings.sizes {
        start_units(&sandbox, running..units.max(running));
        running = units.max(running);
        let dbus = dbus_daemon_of(&sandbox);
        let load_before = report::loadavg();
        let figures = measure::measure_size(&sandbox, dbus, &columns, units, &settings);
        let size = report::Size {
            units,
            figures,
            load: [load_before, report::loadavg()],
        };
        report::size(&size, &columns);
        sizes.push(size);
    }
    report::summary(&sizes, &columns);
}

/// Knobs, read from the environment.
pub struct Settings {
    pub sizes: Vec<usize>,
    /// One window of one column; each column has `rounds` of them per size.
    pub window: Duration,
    pub rounds: usize,
    pub warmup: Duration,
    pub scrape_every: Duration,
    pub baseline: Option<PathBuf>,
    pub wrap: Vec<String>,
    /// The warden's config: [`WARDEN_CONFIG`], with `XW_STEADY_RESYNC` if set.
    pub config: String,
}

impl Settings {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok();
        let secs = |name: &str, default: u64| {
            let v = var(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?}: not a number"))
            });
            Duration::from_secs(v.max(1))
        };
        let sizes = var("XW_STEADY_UNITS").unwrap_or_else(|| "200,1000,2000".into());
        let sizes = sizes.split(',').map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("XW_STEADY_UNITS={sizes:?}: a list of numbers"))
        });
        let default_baseline = Path::new(BIN).with_file_name("../steady-baseline/xray-warden");
        let baseline = match var("XW_STEADY_BASELINE") {
            Some(v) if v == "none" => None,
            Some(v) => Some(PathBuf::from(v)),
            None => default_baseline.exists().then_some(default_baseline),
        };
        Self {
            sizes: sizes.collect(),
            window: secs("XW_STEADY_SECS", WINDOW_SECS),
            rounds: var("XW_STEADY_ROUNDS").map_or(2, |v| {
                v.parse::<usize>()
                    .unwrap_or_else(|_| panic!("XW_STEADY_ROUNDS={v:?}: not a number"))
                    .max(1)
            }),
            warmup: secs("XW_STEADY_WARMUP_SECS", WARMUP_SECS),
            scrape_every: secs("XW_STEADY_SCRAPE_SECS", 15),
            baseline,
            wrap: var("XW_STEADY_WRAP")
                .map(|w| w.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            config: match var("XW_STEADY_RESYNC") {
                Some(every) => format!("{WARDEN_CONFIG}resync_interval = \"{every}\"\n"),
                None => WARDEN_CONFIG.to_owned(),
            },
        }
    }

    fn columns(&self) -> Vec<Column> {
        let baseline = self.baseline.iter().map(|bin| {
            let commit = bin.with_file_name("COMMIT");
            let commit = std::fs::read_to_string(commit).unwrap_or_default();
            let label = match commit.trim() {
                "" => "baseline".to_owned(),
                c => format!("baseline {}", &c[..c.len().min(7)]),
            };
            Column::Warden {
                label,
                bin: bin.display().to_string(),
                env: Vec::new(),
            }
        });
        let this = Column::Warden {
            label: "xray-warden".into(),
            bin: BIN.into(),
            env: shipped_environment(),
        };
        baseline.chain([this, Column::Node]).collect()
    }
}

/// The `Environment=KEY=VALUE` lines of the shipped unit file.
fn shipped_environment() -> Vec<(String, String)> {
    let unit = std::fs::read_to_string(SHIPPED_UNIT).expect("reading the shipped unit");
    let lines = unit.lines().filter_map(|l| l.strip_prefix("Environment="));
    let pairs = lines.filter_map(|l| l.split_once('='));
    pairs.map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// One exporter measured at each size.
pub enum Column {
    /// A warden build, with environment of its own beside `RUST_LOG=info`.
    Warden {
        label: String,
        bin: String,
        env: Vec<(String, String)>,
    },
    Node,
}

impl Column {
    pub fn label(&self) -> &str {
        match self {
            Column::Warden { label, .. } => label,
            Column::Node => "node_exporter(systemd)",
        }
    }
}

/// What one column measured at one size.
pub struct Figures {
    /// Over the column's windows: the exporter, systemd, dbus-daemon.
    pub cpu: [Cpu; 3],
    /// The column's windows, summed.
    pub window: Duration,
    /// The windows' scrapes, sorted.
    pub latencies: Vec<Duration>,
    /// The same scrapes until the body was copied out as a `String` (how this bench measured
    /// until stop 18: the copies and the UTF-8 check were counted).
    pub with_copy: Vec<Duration>,
    /// The size of the last response.
    pub body_bytes: usize,
    pub rss_kib: u64,
    /// From the exporter's start to the RSS reading.
    pub rss_at: Duration,
    /// The machine over the windows, for context.
    pub host: HostCpu,
    /// The warden's sampler at the last scrape: files held, their limit, tunnels read by path
    /// for want of room (`None` for node_exporter).
    pub held_files: Option<[u64; 3]>,
    /// For a warden: the median time to move its last body over loopback from a plain socket
    /// ([`measure::loopback_floor`]).
    pub floor: Option<Duration>,
    /// Each window's CPU per second (exporter + systemd + dbus-daemon), in the order measured,
    /// and where in the size's sequence of windows it fell (0 = first).
    pub per_window: Vec<(usize, f64)>,
}

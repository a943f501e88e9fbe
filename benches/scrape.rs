//! Scrape benchmark: the real xray-warden against node_exporter's systemd collector, both serving
//! the same `xray-tunnel-*` units of a REAL systemd booted in a namespace sandbox.
//!
//! A report, not a test: it prints one table with the targets and a PASS/MISS mark beside the
//! warden's figures, and never fails on a figure. Run it with `cargo bench --bench scrape` (root,
//! Debian's prometheus-node-exporter). Without `--bench` on the command line (`cargo test
//! --all-targets` runs bench binaries that way) it only says so, and boots nothing.
//!
//! CPU is utime+stime from /proc/<host pid>/stat, summed over the exporter, the sandbox's systemd
//! and its dbus-daemon. The kernel reports it in USER_HZ (100) ticks, so each reading is cut to
//! 10 ms: that is why each figure averages over many scrapes. The run time of the live threads
//! (/proc/<pid>/task/*/schedstat, ns) is printed below it as a finer cross-check.
//!
//! Environment: XW_BENCH_UNITS (200), XW_BENCH_WARDEN_SCRAPES (200), XW_BENCH_NODE_SCRAPES (30),
//! XW_BENCH_IDLE_SECS (10).

#[path = "../tests/support/mod.rs"]
mod support;

mod shared;

use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use shared::fleet::{dbus_daemon_of, start_units};
use shared::node_exporter::{NODE_EXPORTER, NodeExporter};
use shared::procstat::{Cpu, HostCpu, rss_kib};
use shared::{ms, target};
use support::sandbox::Sandbox;
use support::warden::{Scrape, Warden, http_get};

/// The warden's default sampler period; the config below keeps every default.
const SAMPLER_INTERVAL: Duration = Duration::from_secs(5);
const WARDEN_CONFIG: &str = "# every default: sampler interval 5s, resync 300s, concurrency 16\n";
const WARMUP: usize = 5;
const LAST_REFRESH: &str = "xray_warden_last_refresh_timestamp_seconds";
const RSS_SETTLE: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(60);

const TARGET_MEDIAN_MS: f64 = 2.0;
const TARGET_CPU_MS: f64 = 1.0;
const TARGET_RSS_MIB: f64 = 15.0;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("scrape benchmark: run it with `cargo bench --bench scrape` (needs root)");
        return;
    }
    let settings = Settings::from_env();
    assert!(
        Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} is missing: apt-get install prometheus-node-exporter"
    );
    let sandbox = Sandbox::boot("bench-scrape");
    let systemd = sandbox.systemctl(&["--version"]);
    let systemd = systemd.lines().next().unwrap_or("systemd ?").to_owned();
    start_units(&sandbox, 0..settings.units);
    let dbus = dbus_daemon_of(&sandbox);
    let warden = bench_warden(&sandbox, dbus, &settings);
    let node = bench_node_exporter(&sandbox, dbus, &settings);
    print_report(&settings, &systemd, &warden, &node);
}

/// Knobs, read from the environment.
struct Settings {
    units: usize,
    warden_scrapes: usize,
    node_scrapes: usize,
    idle: Duration,
}

impl Settings {
    fn from_env() -> Self {
        let get = |name: &str, default: u64| match std::env::var(name) {
            Ok(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?}: not a number")),
            Err(_) => default,
        };
        Self {
            units: get("XW_BENCH_UNITS", 200) as usize,
            warden_scrapes: get("XW_BENCH_WARDEN_SCRAPES", 200).max(1) as usize,
            node_scrapes: get("XW_BENCH_NODE_SCRAPES", 30).max(1) as usize,
            idle: Duration::from_secs(get("XW_BENCH_IDLE_SECS", 10).max(1)),
        }
    }
}

/// Everything measured of one exporter.
struct Figures {
    /// GET /metrics.
    scrapes: Run,
    /// A tiny page (the warden's /live, node_exporter's /): what HTTP alone costs.
    floor: Run,
    rss_kib: u64,
    /// Over `Settings::idle` without scrapes: the exporter, systemd, dbus-daemon.
    idle_cpu: [Cpu; 3],
    notes: Vec<String>,
}

fn bench_warden(sandbox: &Sandbox, dbus: u32, settings: &Settings) -> Figures {
    eprintln!("bench: starting xray-warden");
    let warden = Warden::start(sandbox, WARDEN_CONFIG);
    warden.wait_ready();
    let cpu_prefix = "xray_tunnel_cpu_seconds_total{";
    warden.wait_for("CPU series of every unit", WAIT, |s| {
        s.0.lines().filter(|l| l.starts_with(cpu_prefix)).count() == settings.units
    });
    let pids = [warden.pid(), sandbox.systemd_pid(), dbus];
    let (scrapes, floor, clean) = warden_loops(&warden, pids, settings.warden_scrapes);
    thread::sleep(RSS_SETTLE);
    let rss_kib = rss_kib(warden.pid());
    eprintln!("bench: idle window of {:?}", settings.idle);
    let idle_cpu = idle_cpu(pids, settings.idle);
    let pass = warden.scrape().value(
        "xray_warden_collector_duration_seconds",
        &[("collector", "sampler")],
    );
    let mut notes = vec![if clean {
        "warden loops synchronised to the sampler tick: no sampler pass inside them".to_owned()
    } else {
        "a sampler pass fell inside the warden loops: its CPU is included".to_owned()
    }];
    notes.push(format!(
        "sampler pass wall time (the warden's own figure): {:.1} ms for {} units",
        pass.unwrap_or(f64::NAN) * 1e3,
        settings.units
    ));
    notes.push(format!("warden stopped by SIGTERM: {}", warden.stop()));
    Figures {
        scrapes,
        floor,
        rss_kib,
        idle_cpu,
        notes,
    }
}

/// Measures right after a sampler pass, so the pass's D-Bus and procfs work stays out of the
/// per-scrape figures; retries (twice) if a refresh still landed inside. Returns the /metrics
/// and /live runs, and whether they were clean.
fn warden_loops(warden: &Warden, pids: [u32; 3], scrapes: usize) -> (Run, Run, bool) {
    let refresh = |body: &str| Scrape(body.to_owned()).value(LAST_REFRESH, &[]);
    let mut attempt = 1;
    loop {
        let before = refresh(&warden.scrape().0);
        warden.wait_for("a sampler pass", SAMPLER_INTERVAL * 3, |s| {
            refresh(&s.0) != before
        });
        thread::sleep(Duration::from_millis(200));
        let synced = Instant::now();
        let floor = measure(warden.addr, "/live", scrapes, pids);
        let run = measure(warden.addr, "/metrics", scrapes, pids);
        let in_time = synced.elapsed() + Duration::from_millis(300) < SAMPLER_INTERVAL;
        let clean = in_time && refresh(&run.first_body) == refresh(&run.last_body);
        if clean || !in_time || attempt == 3 {
            return (run, floor, clean);
        }
        eprintln!("bench: the snapshot changed during the loop; measuring again");
        attempt += 1;
    }
}

fn bench_node_exporter(sandbox: &Sandbox, dbus: u32, settings: &Settings) -> Figures {
    eprintln!("bench: starting node_exporter (the warden is stopped)");
    let exporter = NodeExporter::start(sandbox);
    let pids = [exporter.pid(), sandbox.systemd_pid(), dbus];
    let floor = measure(exporter.addr, "/", settings.warden_scrapes, pids);
    let scrapes = measure(exporter.addr, "/metrics", settings.node_scrapes, pids);
    let active = "state=\"active\"";
    let units = scrapes.last_body.lines();
    let units = units.filter(|l| l.starts_with("node_systemd_unit_state{") && l.contains(active));
    let units = units.count();
    thread::sleep(RSS_SETTLE);
    let rss_kib = rss_kib(exporter.pid());
    let idle_cpu = idle_cpu(pids, settings.idle);
    drop(exporter);
    let notes = vec![
        format!("node_exporter saw {units} units, measured alone (systemd and dbus serve only it)"),
        "node_exporter's series include its own go_*, process_* and promhttp_* series".to_owned(),
    ];
    Figures {
        scrapes,
        floor,
        rss_kib,
        idle_cpu,
        notes,
    }
}

/// One measured loop of GETs.
struct Run {
    /// Sorted; client side, from connect to the body read in full.
    latencies: Vec<Duration>,
    /// Over the loop: the exporter, systemd, dbus-daemon.
    cpu: [Cpu; 3],
    /// The whole machine over the loop, for context: other load makes every figure noisier.
    host: HostCpu,
    first_body: String,
    last_body: String,
}

impl Run {
    /// Nearest-rank percentile, in ms.
    fn latency_ms(&self, p: f64) -> f64 {
        let rank = (p * self.latencies.len() as f64).ceil() as usize;
        let at = rank.clamp(1, self.latencies.len()) - 1;
        self.latencies[at].as_secs_f64() * 1e3
    }

    /// CPU per request of each process, in ms, by `unit` (ticks or schedstat).
    fn cpu_ms(&self, unit: fn(Cpu) -> f64) -> [f64; 3] {
        self.cpu.map(|c| unit(c) / self.latencies.len() as f64)
    }

    fn series(&self) -> usize {
        let lines = self.last_body.lines();
        lines
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count()
    }
}

/// `WARMUP` GETs of `path`, then `count` timed ones in a row, with the CPU of `pids` read around
/// them.
fn measure(addr: SocketAddr, path: &str, count: usize, pids: [u32; 3]) -> Run {
    for _ in 0..WARMUP {
        get(addr, path);
    }
    let (before, host_before) = (pids.map(Cpu::of), HostCpu::now());
    let mut latencies = Vec::with_capacity(count);
    let mut bodies = Vec::with_capacity(2);
    for i in 0..count {
        let started = Instant::now();
        let body = get(addr, path);
        latencies.push(started.elapsed());
        if i == 0 || i + 1 == count {
            bodies.push(body);
        }
    }
    let after = pids.map(Cpu::of);
    latencies.sort();
    let last_body = bodies.pop().expect("at least one GET");
    Run {
        latencies,
        cpu: [0, 1, 2].map(|i| after[i].since(before[i])),
        host: HostCpu::now().since(host_before),
        first_body: bodies.pop().unwrap_or_else(|| last_body.clone()),
        last_body,
    }
}

fn get(addr: SocketAddr, path: &str) -> String {
    let (status, body) =
        http_get(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    assert_eq!(status, 200, "GET http://{addr}{path}: {body:.300}");
    body
}

fn idle_cpu(pids: [u32; 3], window: Duration) -> [Cpu; 3] {
    let before = pids.map(Cpu::of);
    thread::sleep(window);
    let after = pids.map(Cpu::of);
    [0, 1, 2].map(|i| after[i].since(before[i]))
}

fn print_report(settings: &Settings, systemd: &str, w: &Figures, n: &Figures) {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let units = settings.units;
    println!("\nscrape benchmark, {units} xray-tunnel units, sandboxed {systemd}, {cpus} CPUs");
    let mut t = Table::new(w, n);
    t.line(["", "xray-warden", "target", "node_exporter(systemd)"].map(str::to_owned));
    t.row(
        &format!("scrapes measured (after {WARMUP} warm-up)"),
        None,
        |f| f.scrapes.latencies.len().to_string(),
    );
    let median = |f: &Figures| f.scrapes.latency_ms(0.5);
    t.row(
        "median scrape latency",
        Some(target(median(w), TARGET_MEDIAN_MS, "ms")),
        |f| ms(median(f)),
    );
    t.row("p90 scrape latency", None, |f| {
        ms(f.scrapes.latency_ms(0.9))
    });
    let cpu = |f: &Figures| f.scrapes.cpu_ms(Cpu::ms).iter().sum::<f64>();
    let cpu_target = target(cpu(w), TARGET_CPU_MS, "ms");
    t.row("CPU per scrape (exp+systemd+dbus)", Some(cpu_target), |f| {
        ms(cpu(f))
    });
    t.row("  exporter / systemd / dbus", None, |f| {
        split(f.scrapes.cpu_ms(Cpu::ms))
    });
    let precise = |f: &Figures| f.scrapes.cpu_ms(Cpu::run_ms);
    t.row("  same from schedstat (ns)", None, |f| {
        ms(precise(f).iter().sum())
    });
    t.row("  exporter / systemd / dbus", None, |f| split(precise(f)));
    t.row("HTTP floor (GET /live | /): median", None, |f| {
        ms(f.floor.latency_ms(0.5))
    });
    t.row("HTTP floor: CPU per GET (schedstat)", None, |f| {
        ms(f.floor.cpu_ms(Cpu::run_ms).iter().sum())
    });
    t.row("body size", None, |f| kib(f.scrapes.last_body.len()));
    t.row("series", None, |f| f.scrapes.series().to_string());
    let mib = |f: &Figures| f.rss_kib as f64 / 1024.0;
    let rss_target = target(mib(w), TARGET_RSS_MIB, "MiB");
    t.row("RSS after 2 s idle", Some(rss_target), |f| {
        format!("{:.1} MiB", mib(f))
    });
    let secs = settings.idle.as_secs_f64();
    let idle = format!("background CPU, {secs} s idle, ms/s");
    let rate = |f: &Figures, unit: fn(Cpu) -> f64| f.idle_cpu.map(|c| unit(c) / secs);
    t.row(&idle, None, |f| {
        let (ticks, ns) = (rate(f, Cpu::ms), rate(f, Cpu::run_ms));
        let sum = |v: [f64; 3]| v.iter().sum::<f64>();
        format!("{:.2} (schedstat {:.2})", sum(ticks), sum(ns))
    });
    t.row("  exporter / systemd / dbus", None, |f| {
        split(rate(f, Cpu::ms))
    });
    t.print();
    println!("notes:");
    println!("  CPU = delta of utime+stime (USER_HZ=100, so 10 ms per reading) / requests");
    println!("  schedstat rows sum the run time of live threads; threads that exit are missed");
    let host = |f: &Figures| f.scrapes.host.describe();
    println!(
        "  machine during the /metrics loops (this client included): warden {}; node_exporter {}",
        host(w),
        host(n)
    );
    for note in w.notes.iter().chain(&n.notes) {
        println!("  {note}");
    }
}

/// Rows of label, warden figure, target, node_exporter figure.
struct Table<'a> {
    warden: &'a Figures,
    node: &'a Figures,
    lines: Vec<[String; 4]>,
}

impl<'a> Table<'a> {
    fn new(warden: &'a Figures, node: &'a Figures) -> Self {
        let lines = Vec::new();
        Self {
            warden,
            node,
            lines,
        }
    }

    fn row(&mut self, label: &str, target: Option<String>, show: impl Fn(&Figures) -> String) {
        let (warden, node) = (show(self.warden), show(self.node));
        self.line([label.to_owned(), warden, target.unwrap_or_default(), node]);
    }

    fn line(&mut self, cells: [String; 4]) {
        self.lines.push(cells);
    }

    fn print(&self) {
        let width = |i: usize| self.lines.iter().map(|r| r[i].len()).max().unwrap_or(0) + 3;
        let (w0, w1, w2) = (width(0), width(1), width(2));
        for [label, warden, target, node] in &self.lines {
            println!("{label:w0$}{warden:w1$}{target:w2$}{node}");
        }
    }
}

fn split(values: [f64; 3]) -> String {
    format!("{:.2} / {:.2} / {:.2}", values[0], values[1], values[2])
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

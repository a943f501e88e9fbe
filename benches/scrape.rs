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

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::sandbox::Sandbox;
use support::warden::{Scrape, Warden, http_get};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
/// The warden's default sampler period; the config below keeps every default.
const SAMPLER_INTERVAL: Duration = Duration::from_secs(5);
const WARDEN_CONFIG: &str = "# every default: sampler interval 5s, resync 300s, concurrency 16\n";
const WARMUP: usize = 5;
const LAST_REFRESH: &str = "xray_warden_last_refresh_timestamp_seconds";
/// The kernel's USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
const TICK_MS: f64 = 10.0;
const RSS_SETTLE: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

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
    start_units(&sandbox, settings.units);
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

/// Writes every unit, reloads once, starts them all with one call and waits until all are active.
fn start_units(sandbox: &Sandbox, count: usize) {
    let names: Vec<String> = (0..count)
        .map(|i| format!("xray-tunnel-b{i:03}.service"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let unit = format!(
            "[Unit]\nDescription=bench tunnel {i}\n[Service]\nExecStart=/bin/sleep infinity\n"
        );
        sandbox.write_unit(name, &unit);
    }
    sandbox.systemctl(&["daemon-reload"]);
    let mut start = vec!["start", "--no-block"];
    start.extend(names.iter().map(String::as_str));
    sandbox.systemctl(&start);
    let list = [
        "list-units",
        "--no-legend",
        "--plain",
        "--state=active",
        "xray-tunnel-*",
    ];
    sandbox.wait_for("every unit active", WAIT, || {
        sandbox.systemctl(&list).lines().count() == count
    });
}

/// Host PID of the sandbox's dbus-daemon: the one whose PID namespace is that of its systemd.
/// Read-only discovery; nothing is ever signalled by name.
fn dbus_daemon_of(sandbox: &Sandbox) -> u32 {
    let ns_of = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let ours = ns_of(&sandbox.systemd_pid().to_string()).expect("the sandbox's pid namespace");
    let entries = fs::read_dir("/proc").expect("reading /proc");
    let pids = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    let mut found = pids.filter(|pid| {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        comm.trim_end() == "dbus-daemon" && ns_of(&pid.to_string()) == Some(ours.clone())
    });
    found.next().expect("the sandbox's dbus-daemon is running")
}

/// Everything measured of one exporter.
struct Figures {
    scrapes: usize,
    /// Sorted, client side, request sent to body read.
    latencies: Vec<Duration>,
    /// Over the measured scrapes: the exporter, systemd, dbus-daemon.
    cpu: [Cpu; 3],
    body_bytes: usize,
    series: usize,
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
    let (run, clean) = warden_loop(&warden, pids, settings.warden_scrapes);
    thread::sleep(RSS_SETTLE);
    let rss_kib = rss_kib(warden.pid());
    eprintln!("bench: idle window of {:?}", settings.idle);
    let idle_cpu = idle_cpu(pids, settings.idle);
    let last = warden.scrape();
    let mut notes = vec![if clean {
        "warden loop synchronised to the sampler tick: no sampler pass inside it".to_owned()
    } else {
        "a sampler pass fell inside the warden loop: its CPU is included".to_owned()
    }];
    let pass = last.value(
        "xray_warden_collector_duration_seconds",
        &[("collector", "sampler")],
    );
    notes.push(format!(
        "sampler pass wall time (warden's own figure): {:.1} ms for {} units",
        pass.unwrap_or(f64::NAN) * 1e3,
        settings.units
    ));
    let status = warden.stop();
    notes.push(format!("warden stopped by SIGTERM: {status}"));
    run.into_figures(rss_kib, idle_cpu, notes)
}

/// Measures right after a sampler pass, so the pass's D-Bus and procfs work stays out of the
/// per-scrape figures; retries (twice) if a refresh still landed inside. Returns whether clean.
fn warden_loop(warden: &Warden, pids: [u32; 3], scrapes: usize) -> (Run, bool) {
    let refresh = |body: &str| Scrape(body.to_owned()).value(LAST_REFRESH, &[]);
    let mut attempt = 1;
    loop {
        let before = refresh(&warden.scrape().0);
        warden.wait_for("a sampler pass", SAMPLER_INTERVAL * 3, |s| {
            refresh(&s.0) != before
        });
        thread::sleep(Duration::from_millis(200));
        let synced = Instant::now();
        let run = measure(warden.addr, scrapes, pids);
        let in_time = synced.elapsed() + Duration::from_millis(300) < SAMPLER_INTERVAL;
        let clean = in_time && refresh(&run.first_body) == refresh(&run.last_body);
        if clean || !in_time || attempt == 3 {
            return (run, clean);
        }
        eprintln!("bench: the snapshot changed during the loop; measuring again");
        attempt += 1;
    }
}

fn bench_node_exporter(sandbox: &Sandbox, dbus: u32, settings: &Settings) -> Figures {
    eprintln!("bench: starting node_exporter (the warden is stopped)");
    let exporter = NodeExporter::start(sandbox);
    let pids = [exporter.pid(), sandbox.systemd_pid(), dbus];
    let run = measure(exporter.addr, settings.node_scrapes, pids);
    let units = run
        .last_body
        .lines()
        .filter(|l| l.starts_with("node_systemd_unit_state{") && l.contains("state=\"active\""))
        .count();
    thread::sleep(RSS_SETTLE);
    let rss_kib = rss_kib(exporter.pid());
    let idle_cpu = idle_cpu(pids, settings.idle);
    let notes = vec![
        format!("node_exporter saw {units} units; measured alone (systemd and dbus serve only it)"),
        "node_exporter series include its own go_*/process_*/promhttp_* series".to_owned(),
    ];
    drop(exporter);
    run.into_figures(rss_kib, idle_cpu, notes)
}

/// One measured loop of scrapes.
struct Run {
    latencies: Vec<Duration>,
    cpu: [Cpu; 3],
    first_body: String,
    last_body: String,
}

impl Run {
    fn into_figures(mut self, rss_kib: u64, idle_cpu: [Cpu; 3], notes: Vec<String>) -> Figures {
        self.latencies.sort();
        let series = self.last_body.lines();
        let series = series.filter(|l| !l.is_empty() && !l.starts_with('#'));
        Figures {
            scrapes: self.latencies.len(),
            series: series.count(),
            body_bytes: self.last_body.len(),
            latencies: self.latencies,
            cpu: self.cpu,
            rss_kib,
            idle_cpu,
            notes,
        }
    }
}

/// `WARMUP` scrapes, then `scrapes` timed ones in a row, with the CPU of `pids` read around them.
fn measure(addr: SocketAddr, scrapes: usize, pids: [u32; 3]) -> Run {
    for _ in 0..WARMUP {
        get_metrics(addr);
    }
    let before = pids.map(Cpu::of);
    let mut latencies = Vec::with_capacity(scrapes);
    let mut bodies = Vec::with_capacity(2);
    for i in 0..scrapes {
        let started = Instant::now();
        let body = get_metrics(addr);
        latencies.push(started.elapsed());
        if i == 0 || i + 1 == scrapes {
            bodies.push(body);
        }
    }
    let after = pids.map(Cpu::of);
    let last_body = bodies.pop().expect("at least one scrape");
    Run {
        latencies,
        cpu: [0, 1, 2].map(|i| after[i].since(before[i])),
        first_body: bodies.pop().unwrap_or_else(|| last_body.clone()),
        last_body,
    }
}

fn get_metrics(addr: SocketAddr) -> String {
    let (status, body) =
        http_get(addr, "/metrics").unwrap_or_else(|e| panic!("GET http://{addr}/metrics: {e}"));
    assert_eq!(status, 200, "GET http://{addr}/metrics: {body:.300}");
    body
}

fn idle_cpu(pids: [u32; 3], window: Duration) -> [Cpu; 3] {
    let before = pids.map(Cpu::of);
    thread::sleep(window);
    let after = pids.map(Cpu::of);
    [0, 1, 2].map(|i| after[i].since(before[i]))
}

/// CPU used by one process: USER_HZ ticks (all threads, dead ones included) and the run time of
/// its live threads in ns.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    ticks: u64,
    run_ns: u64,
}

impl Cpu {
    fn of(pid: u32) -> Cpu {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
        // The command name in parentheses may hold spaces; utime and stime are fields 14 and 15.
        let after_comm = &stat[stat.rfind(')').expect("a stat line") + 2..];
        let fields: Vec<u64> = after_comm
            .split(' ')
            .skip(11)
            .take(2)
            .map(|f| f.parse().expect("utime/stime"))
            .collect();
        Cpu {
            ticks: fields.iter().sum(),
            run_ns: run_ns_of(pid),
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            ticks: self.ticks.saturating_sub(before.ticks),
            run_ns: self.run_ns.saturating_sub(before.run_ns),
        }
    }

    fn ms(self) -> f64 {
        self.ticks as f64 * TICK_MS
    }

    fn run_ms(self) -> f64 {
        self.run_ns as f64 / 1e6
    }
}

/// Sum of the first field of /proc/<pid>/task/*/schedstat (time on CPU, ns).
fn run_ns_of(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let stats = tasks.filter_map(|t| fs::read_to_string(t.ok()?.path().join("schedstat")).ok());
    stats
        .filter_map(|s| s.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"));
    let kib = line.and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    kib.expect("a VmRSS line")
}

/// node_exporter run inside the sandbox's namespaces; dropping it stops it by PID.
struct NodeExporter {
    /// nsenter forks to enter the PID namespace: the exporter is its child.
    nsenter: Child,
    pid: Option<u32>,
    addr: SocketAddr,
}

impl NodeExporter {
    fn start(sandbox: &Sandbox) -> NodeExporter {
        let addr = free_addr();
        let log_path = sandbox.state_dir().join("node-exporter.log");
        let log = File::create(&log_path).expect("creating the node_exporter log");
        let nsenter = sandbox
            .command(NODE_EXPORTER)
            .arg(format!("--web.listen-address={addr}"))
            .args(["--collector.disable-defaults", "--collector.systemd"])
            .arg("--collector.systemd.unit-include=xray-tunnel-.*")
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting node_exporter under nsenter");
        // The guard exists before anything can fail, so a panic below still stops the exporter.
        let mut exporter = NodeExporter {
            nsenter,
            pid: None,
            addr,
        };
        exporter.pid = Some(child_of(exporter.nsenter.id()));
        exporter.wait_until_it_answers(&log_path);
        exporter
    }

    fn pid(&self) -> u32 {
        self.pid.expect("the exporter's PID is known once started")
    }

    fn wait_until_it_answers(&mut self, log: &Path) {
        let deadline = Instant::now() + WAIT;
        while !http_get(self.addr, "/").is_ok_and(|(status, _)| status == 200) {
            let exited = self.nsenter.try_wait().ok().flatten();
            let log = || fs::read_to_string(log).unwrap_or_default();
            assert!(
                exited.is_none(),
                "node_exporter exited: {:?}\n{}",
                exited,
                log()
            );
            assert!(
                Instant::now() < deadline,
                "node_exporter never answered\n{}",
                log()
            );
            thread::sleep(POLL);
        }
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let Some(pid) = self.pid else {
            // nsenter never forked: stop nsenter itself, by its PID.
            let _ = self.nsenter.kill();
            let _ = self.nsenter.wait();
            return;
        };
        let _ = kill(pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.nsenter.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        if matches!(self.nsenter.try_wait(), Ok(None)) {
            let _ = kill(pid, "KILL");
        }
        let _ = self.nsenter.wait();
    }
}

fn kill(pid: u32, signal: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
}

/// The PID of nsenter's forked child, from /proc/<nsenter>/task/<nsenter>/children.
fn child_of(nsenter: u32) -> u32 {
    let path = format!("/proc/{nsenter}/task/{nsenter}/children");
    let deadline = Instant::now() + WAIT;
    loop {
        let children = fs::read_to_string(&path).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().expect("a PID");
        }
        assert!(Instant::now() < deadline, "nsenter {nsenter} never forked");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    listener.local_addr().expect("the probe port's address")
}

fn print_report(settings: &Settings, systemd: &str, w: &Figures, n: &Figures) {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nscrape benchmark, {} xray-tunnel units, sandboxed {systemd}, {cpus} CPUs",
        settings.units
    );
    let mut t = Table::default();
    t.row("", "xray-warden", "target", "node_exporter(systemd)");
    let measured = format!("scrapes measured (after {WARMUP} warm-up)");
    t.row(
        &measured,
        &w.scrapes.to_string(),
        "",
        &n.scrapes.to_string(),
    );
    let (wm, nm) = (percentile(&w.latencies, 0.5), percentile(&n.latencies, 0.5));
    t.row(
        "median scrape latency",
        &ms(wm),
        &target(wm, TARGET_MEDIAN_MS, "ms"),
        &ms(nm),
    );
    let (w90, n90) = (percentile(&w.latencies, 0.9), percentile(&n.latencies, 0.9));
    t.row("p90 scrape latency", &ms(w90), "", &ms(n90));
    let (wc, nc) = (per_scrape(w, Cpu::ms), per_scrape(n, Cpu::ms));
    t.row(
        "CPU per scrape (exp+systemd+dbus)",
        &ms(wc),
        &target(wc, TARGET_CPU_MS, "ms"),
        &ms(nc),
    );
    t.row(
        "  exporter / systemd / dbus",
        &split(w, Cpu::ms),
        "",
        &split(n, Cpu::ms),
    );
    let (wr, nr) = (per_scrape(w, Cpu::run_ms), per_scrape(n, Cpu::run_ms));
    t.row("  same from schedstat (ns precision)", &ms(wr), "", &ms(nr));
    t.row(
        "  exporter / systemd / dbus",
        &split(w, Cpu::run_ms),
        "",
        &split(n, Cpu::run_ms),
    );
    t.row("body size", &kib(w.body_bytes), "", &kib(n.body_bytes));
    t.row("series", &w.series.to_string(), "", &n.series.to_string());
    let (wrss, nrss) = (w.rss_kib as f64 / 1024.0, n.rss_kib as f64 / 1024.0);
    let rss_target = target(wrss, TARGET_RSS_MIB, "MiB");
    t.row(
        "RSS after 2 s idle",
        &format!("{wrss:.1} MiB"),
        &rss_target,
        &format!("{nrss:.1} MiB"),
    );
    let idle = format!("background CPU, {} s idle (ms/s)", settings.idle.as_secs());
    t.row(
        &idle,
        &idle_rate(w, settings.idle),
        "",
        &idle_rate(n, settings.idle),
    );
    t.row(
        "  exporter / systemd / dbus",
        &idle_split(w, settings.idle),
        "",
        &idle_split(n, settings.idle),
    );
    t.print();
    println!("notes:");
    println!(
        "  CPU = delta of utime+stime (USER_HZ=100: 10 ms per reading) over the loop / scrapes"
    );
    println!("  schedstat rows sum the live threads' run time; threads that exit are missed");
    for note in w.notes.iter().chain(&n.notes) {
        println!("  {note}");
    }
}

#[derive(Default)]
struct Table(Vec<[String; 4]>);

impl Table {
    fn row(&mut self, label: &str, warden: &str, target: &str, node: &str) {
        self.0
            .push([label, warden, target, node].map(str::to_owned));
    }

    fn print(&self) {
        let width = |i: usize| self.0.iter().map(|r| r[i].len()).max().unwrap_or(0) + 3;
        let (w0, w1, w2) = (width(0), width(1), width(2));
        for [label, warden, target, node] in &self.0 {
            println!("{label:w0$}{warden:w1$}{target:w2$}{node}");
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

fn per_scrape(f: &Figures, cpu_ms: fn(Cpu) -> f64) -> f64 {
    f.cpu.iter().map(|c| cpu_ms(*c)).sum::<f64>() / f.scrapes as f64
}

fn split(f: &Figures, cpu_ms: fn(Cpu) -> f64) -> String {
    let parts = f
        .cpu
        .map(|c| format!("{:.2}", cpu_ms(c) / f.scrapes as f64));
    format!("{} ms", parts.join(" / "))
}

fn idle_rate(f: &Figures, window: Duration) -> String {
    let total: f64 = f.idle_cpu.iter().map(|c| c.ms()).sum();
    let run: f64 = f.idle_cpu.iter().map(|c| c.run_ms()).sum();
    let secs = window.as_secs_f64();
    format!("{:.2} (schedstat {:.2})", total / secs, run / secs)
}

fn idle_split(f: &Figures, window: Duration) -> String {
    let parts = f
        .idle_cpu
        .map(|c| format!("{:.2}", c.ms() / window.as_secs_f64()));
    parts.join(" / ")
}

fn ms(value: f64) -> String {
    if value >= 10.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.3} ms")
    }
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn target(value: f64, limit: f64, unit: &str) -> String {
    let mark = if value <= limit { "PASS" } else { "MISS" };
    format!("<= {limit} {unit} {mark}")
}

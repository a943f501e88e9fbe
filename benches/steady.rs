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
//! ([`measure_size`] says why). Per column it prints the total CPU per second (utime+stime of
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
//! Environment: XW_STEADY_UNITS (`200,1000,2000`), XW_STEADY_SECS (one window, 160),
//! XW_STEADY_ROUNDS (windows per column, 2), XW_STEADY_WARMUP_SECS (45), XW_STEADY_SCRAPE_SECS (15), XW_STEADY_BASELINE (a warden binary
//! to measure beside this tree's; default `<target>/steady-baseline/xray-warden` when that exists,
//! `none` to skip), XW_STEADY_WRAP (a command line the warden columns run under, for profiling:
//! `valgrind --tool=callgrind --callgrind-out-file=<dir>/cg.%p`; their figures are then the
//! profiler's), XW_STEADY_RESYNC (the watcher's `systemd.resync_interval` for every warden
//! column, e.g. `20s`, to measure its safety net: the default 300 s falls in a window or not). A smoke run:
//! `XW_STEADY_UNITS=50 XW_STEADY_SECS=15 XW_STEADY_WARMUP_SECS=5`.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "steady/report.rs"]
mod report;
mod shared;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use shared::fleet::{dbus_daemon_of, start_units};
use shared::node_exporter::{NODE_EXPORTER, NodeExporter};
use shared::procstat::{Cpu, HostCpu, rss_kib};
use support::sandbox::Sandbox;
use support::warden::{BIN, Warden};

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
        let figures = measure_size(&sandbox, dbus, &columns, units, &settings);
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
            window: secs("XW_STEADY_SECS", 160),
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
    /// ([`loopback_floor`]).
    pub floor: Option<Duration>,
    /// Each window's CPU per second (exporter + systemd + dbus-daemon), in the order measured,
    /// and where in the size's sequence of windows it fell (0 = first).
    pub per_window: Vec<(usize, f64)>,
}

/// The running exporter of a column; dropping it stops it.
enum Running {
    Warden(Warden),
    Node(NodeExporter),
}

/// A column's exporter, running through every window of one size.
struct Live {
    running: Running,
    pid: u32,
    addr: SocketAddr,
    started: Instant,
    /// Scrapes land here, kept from one scrape to the next like a Prometheus scrape buffer.
    buffer: Vec<u8>,
    windows: Vec<Window>,
}

/// One measured window of one column.
struct Window {
    /// Where it fell in the size's sequence of windows.
    slot: usize,
    cpu: [Cpu; 3],
    length: Duration,
    scrapes: Vec<Scraped>,
    host: HostCpu,
}

/// Every column at one size, side by side. All exporters run through the whole size; each is
/// measured in `rounds` windows, in turn, the order reversed every other round (A B, B A, ...)
/// so that no column always comes first or last: an earlier bench that measured one column
/// after the other found the second 4-8% slower whichever build it was (docs/benchmarks.md). A
/// column is scraped only in its own windows (and in the common warm-up), so node_exporter,
/// which works only when scraped, is idle in the warden's windows; the warden keeps its
/// background passes in node_exporter's, which adds its share of systemd and dbus-daemon (about
/// 0.03 ms/s at 1,000 units) to node_exporter's figure.
fn measure_size(
    sandbox: &Sandbox,
    dbus: u32,
    columns: &[Column],
    units: usize,
    s: &Settings,
) -> Vec<Figures> {
    let mut live: Vec<Live> = columns
        .iter()
        .map(|c| start(sandbox, c, units, s))
        .collect();
    // The warm-up: every exporter scraped every 15 s, like the targets of one Prometheus job.
    let warm = Instant::now() + s.warmup;
    while Instant::now() < warm {
        let next = Instant::now() + s.scrape_every;
        for l in &mut live {
            scrape_metrics(l.addr, &mut l.buffer);
        }
        thread::sleep(next.min(warm).saturating_duration_since(Instant::now()));
    }
    let mut slot = 0;
    for round in 0..s.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..live.len()).collect()
        } else {
            (0..live.len()).rev().collect()
        };
        for i in order {
            let label = columns[i].label();
            let window = measure_window(&mut live[i], [sandbox.systemd_pid(), dbus], slot, s);
            eprintln!("bench: {units} units, {label}, window {} done", slot + 1);
            live[i].windows.push(window);
            slot += 1;
        }
    }
    live.into_iter().map(finish).collect()
}

/// Starts a column's exporter and waits until it serves every unit.
fn start(sandbox: &Sandbox, column: &Column, units: usize, s: &Settings) -> Live {
    eprintln!("bench: {units} units, starting {}", column.label());
    let started = Instant::now();
    let running = match column {
        Column::Warden { bin, env, .. } => {
            let env: Vec<(&str, &str)> = std::iter::once(WARDEN_LOG)
                .chain(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .collect();
            let program: Vec<&str> = s
                .wrap
                .iter()
                .map(String::as_str)
                .chain([bin.as_str()])
                .collect();
            let warden = Warden::start_with(sandbox, &s.config, &program, &env);
            // No `wait_ready` (15 s): listing a large fleet may take longer on a busy machine.
            let cpu_prefix = "xray_tunnel_cpu_seconds_total{";
            warden.wait_for("CPU series of every unit", WAIT, |s| {
                s.0.lines().filter(|l| l.starts_with(cpu_prefix)).count() == units
            });
            Running::Warden(warden)
        }
        Column::Node => Running::Node(NodeExporter::start(sandbox)),
    };
    let (pid, addr) = match &running {
        Running::Warden(w) => (w.pid(), w.addr),
        Running::Node(n) => (n.pid(), n.addr),
    };
    Live {
        running,
        pid,
        addr,
        started,
        buffer: Vec::new(),
        windows: Vec::new(),
    }
}

/// One window of `live`, scraped every 15 s from its start; `others` are systemd and
/// dbus-daemon.
fn measure_window(live: &mut Live, others: [u32; 2], slot: usize, s: &Settings) -> Window {
    let pids = [live.pid, others[0], others[1]];
    // For a profiler attached by hand (`perf record -p PID`): the window starts now.
    eprintln!("bench: window of {:?} begins, pid {}", s.window, live.pid);
    let (before, host_before, from) = (pids.map(Cpu::of), HostCpu::now(), Instant::now());
    let until = from + s.window;
    let mut scrapes = Vec::new();
    let mut next = from;
    while next < until {
        thread::sleep(next.saturating_duration_since(Instant::now()));
        scrapes.push(scrape_metrics(live.addr, &mut live.buffer));
        next += s.scrape_every;
    }
    thread::sleep(until.saturating_duration_since(Instant::now()));
    let after = pids.map(Cpu::of);
    Window {
        slot,
        cpu: [0, 1, 2].map(|i| after[i].since(before[i])),
        length: from.elapsed(),
        scrapes,
        host: HostCpu::now().since(host_before),
    }
}

/// Stops the exporter and pools its windows: CPU over their summed length, every scrape's
/// latency; RSS and the sampler's files as they are at the end.
fn finish(live: Live) -> Figures {
    let rss_kib = rss_kib(live.pid);
    let rss_at = live.started.elapsed();
    match live.running {
        Running::Warden(w) => eprintln!("bench: warden stopped: {}", w.stop()),
        Running::Node(n) => drop(n),
    }
    let windows = live.windows;
    let per_window = windows
        .iter()
        .map(|w| {
            let ms: f64 = w.cpu.iter().map(|c| c.ms()).sum();
            (w.slot, ms / w.length.as_secs_f64())
        })
        .collect();
    let cpu = windows.iter().fold([Cpu::default(); 3], |sum, w| {
        [0, 1, 2].map(|i| sum[i].plus(w.cpu[i]))
    });
    let host = windows
        .iter()
        .map(|w| w.host)
        .reduce(HostCpu::plus)
        .expect("at least one window");
    let scrapes: Vec<&Scraped> = windows.iter().flat_map(|w| &w.scrapes).collect();
    let mut latencies: Vec<Duration> = scrapes.iter().map(|s| s.to_last_byte).collect();
    let mut with_copy: Vec<Duration> = scrapes.iter().map(|s| s.with_copy).collect();
    latencies.sort();
    with_copy.sort();
    let body_bytes = scrapes.last().map_or(0, |s| s.body_bytes);
    let gauge = |name: &str| {
        let body = String::from_utf8_lossy(&live.buffer);
        let line = body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '));
        line.and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    let held_files = [
        "xray_warden_sampler_held_files",
        "xray_warden_sampler_held_files_limit",
        "xray_warden_sampler_units_read_by_path",
    ]
    .map(gauge);
    let held_files = match held_files {
        [Some(held), Some(limit), Some(by_path)] => Some([held, limit, by_path]),
        _ => None,
    };
    let floor = held_files.is_some().then(|| {
        let headers = live.buffer.windows(4).position(|w| w == b"\r\n\r\n");
        let body = headers.map_or(&live.buffer[..], |end| &live.buffer[end + 4..]);
        loopback_floor(body, latencies.len())
    });
    Figures {
        cpu,
        window: windows.iter().map(|w| w.length).sum(),
        latencies,
        with_copy,
        body_bytes,
        rss_kib,
        rss_at,
        host,
        held_files,
        per_window,
        floor,
    }
}

/// The median of `scrapes` GETs of `body` from a plain blocking socket in this process, timed
/// like a scrape: what moving that many bytes over this machine's loopback costs with no
/// exporter behind it, the floor under the warden's scrape median.
fn loopback_floor(body: &[u8], scrapes: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the floor's port");
    let addr = listener.local_addr().expect("the floor's address");
    let response = [b"HTTP/1.0 200 OK\r\n\r\n".as_slice(), body].concat();
    let scrapes = scrapes.max(1);
    let server = thread::spawn(move || {
        for _ in 0..scrapes {
            let (mut conn, _) = listener.accept().expect("accepting a floor scrape");
            // The whole request is read before the answer, so closing sends no reset.
            let mut request = Vec::new();
            let mut chunk = [0u8; 512];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut chunk).expect("reading the request");
                assert!(n > 0, "the client closed before its request ended");
                request.extend_from_slice(&chunk[..n]);
            }
            conn.write_all(&response).expect("writing the body");
        }
    });
    let mut buffer = Vec::new();
    let mut times: Vec<Duration> = (0..scrapes)
        .map(|_| {
            thread::sleep(Duration::from_millis(100));
            scrape_metrics(addr, &mut buffer).to_last_byte
        })
        .collect();
    server.join().expect("the floor's server");
    times.sort();
    times[(times.len() - 1) / 2]
}

/// One scrape's timings.
struct Scraped {
    to_last_byte: Duration,
    with_copy: Duration,
    body_bytes: usize,
}

/// One GET /metrics: the time from connect to the last byte, as a scraper sees it. The response
/// lands in `buffer`, kept from one scrape to the next (Prometheus too reuses a buffer sized by
/// the target's last scrape), so that growing and copying it is not counted; the status line is
/// checked after the clock stops. Also timed: until the body is copied out as a `String`, as
/// this bench measured before.
fn scrape_metrics(addr: SocketAddr, buffer: &mut Vec<u8>) -> Scraped {
    buffer.clear();
    let at = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("read timeout");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("GET /metrics");
    stream.read_to_end(buffer).expect("reading /metrics");
    let to_last_byte = at.elapsed();
    // The client of the records until stop 18 checked the text and copied the body out; the
    // buffer is lent to the check and handed back, so the copy of the body is the only one.
    let text = String::from_utf8(std::mem::take(buffer)).expect("a UTF-8 response");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    let with_copy = at.elapsed();
    assert!(
        text.starts_with("HTTP/1.") && text.get(9..12) == Some("200"),
        "{text:.300}"
    );
    *buffer = text.into_bytes();
    Scraped {
        to_last_byte,
        with_copy,
        body_bytes: body.map_or(0, |b| b.len()),
    }
}

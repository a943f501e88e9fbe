//! The steady bench's measurement: every column of one size started side by side, then
//! measured in turn, window by window; the windows pooled into one [`Figures`] per column.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::shared::node_exporter::NodeExporter;
use crate::shared::procstat::{Cpu, HostCpu, rss_kib};
use crate::support::sandbox::Sandbox;
use crate::support::warden::Warden;
use crate::{Column, Figures, Settings, WAIT, WARDEN_LOG};

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
pub fn measure_size(
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
pub fn loopback_floor(body: &[u8], scrapes: usize) -> Duration {
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

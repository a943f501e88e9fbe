//! The steady bench's tables: one per fleet size as it finishes, then the targets.

use crate::shared::procstat::Cpu;
pub use crate::shared::procstat::loadavg;
use crate::shared::{ms, target};
use crate::{Column, Figures, Settings};

/// The targets, at 1,000 units unless named otherwise.
const CPU_MS_PER_S: f64 = 2.0;
const BELOW_NODE: f64 = 15.0;
const MEDIAN_MS: f64 = 2.0;
const RSS_MIB_200: f64 = 15.0;
const RSS_MIB_1000: f64 = 20.0;

/// Every column at one fleet size.
pub struct Size {
    pub units: usize,
    pub figures: Vec<Figures>,
    /// /proc/loadavg before and after the size's columns.
    pub load: [String; 2],
}

impl Figures {
    /// Exporter + systemd + dbus-daemon, ms of CPU per second.
    pub fn cpu_per_s(&self) -> f64 {
        self.split().iter().sum()
    }

    fn split(&self) -> [f64; 3] {
        self.cpu.map(|c| Cpu::ms(c) / self.window.as_secs_f64())
    }

    fn median_ms(&self) -> f64 {
        let Some(mid) = self
            .latencies
            .get(self.latencies.len().saturating_sub(1) / 2)
        else {
            return f64::NAN;
        };
        mid.as_secs_f64() * 1e3
    }

    fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

pub fn header(s: &Settings, systemd: &str, columns: &[Column]) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let names: Vec<&str> = columns.iter().map(Column::label).collect();
    println!(
        "\nsteady benchmark, sandboxed {systemd}, {cpus} CPUs, load {}",
        loadavg()
    );
    println!(
        "sizes {:?}; a common warm-up of {} s, then per column {} windows of {} s, a scrape every {} s",
        s.sizes,
        s.warmup.as_secs(),
        s.rounds,
        s.window.as_secs(),
        s.scrape_every.as_secs()
    );
    println!(
        "columns, running side by side on the same units, measured in turn (the order reversed every other round): {}",
        names.join(", ")
    );
    for column in columns {
        if let Column::Warden { label, bin, env } = column {
            println!("  {label}: {bin}, environment {env:?} and RUST_LOG=info");
        }
    }
    println!("warden config: {:?}", s.config);
}

/// One size's table, printed as soon as it is measured.
pub fn size(size: &Size, columns: &[Column]) {
    let node = size
        .figures
        .last()
        .expect("node_exporter is the last column");
    let mut rows = vec![
        std::iter::once(format!("{} units", size.units))
            .chain(columns.iter().map(|c| c.label().to_owned()))
            .collect::<Vec<_>>(),
    ];
    let mut row = |label: &str, show: &dyn Fn(&Figures, bool) -> String| {
        let cells = size.figures.iter().enumerate().map(|(i, f)| {
            let is_warden = i + 1 < size.figures.len();
            show(f, is_warden)
        });
        rows.push(std::iter::once(label.to_owned()).chain(cells).collect());
    };
    let at_1000 = size.units == 1000;
    row("CPU, exporter+systemd+dbus", &|f, warden| {
        let mut cell = format!("{:.2} ms/s", f.cpu_per_s());
        if warden && at_1000 {
            let times = node.cpu_per_s() / f.cpu_per_s();
            let cpu = target(f.cpu_per_s(), CPU_MS_PER_S, "ms/s");
            let below = if times >= BELOW_NODE { "PASS" } else { "MISS" };
            cell += &format!(" [{cpu}; {times:.1}x below node, >= {BELOW_NODE}x {below}]");
        }
        cell
    });
    row("  each window (its place in the order)", &|f, _| {
        let cells: Vec<String> = f
            .per_window
            .iter()
            .map(|(slot, cpu)| format!("{cpu:.2} (#{})", slot + 1))
            .collect();
        cells.join(", ")
    });
    row("  exporter / systemd / dbus", &|f, _| {
        let [e, s, d] = f.split();
        format!("{e:.2} / {s:.2} / {d:.2}")
    });
    row("scrape median", &|f, warden| {
        let mut cell = ms(f.median_ms());
        if warden && at_1000 {
            cell += &format!(" [{}]", target(f.median_ms(), MEDIAN_MS, "ms"));
        }
        cell
    });
    row("  the same body from a plain socket", &|f, _| {
        f.floor
            .map_or_else(|| "-".to_owned(), |d| ms(d.as_secs_f64() * 1e3))
    });
    row("  with the body copied out", &|f, _| {
        let mid = f.with_copy.get(f.with_copy.len().saturating_sub(1) / 2);
        mid.map_or_else(|| "-".to_owned(), |d| ms(d.as_secs_f64() * 1e3))
    });
    row("body", &|f, _| {
        format!("{:.2} MB", f.body_bytes as f64 / 1e6)
    });
    row("scrapes in the windows", &|f, _| {
        f.latencies.len().to_string()
    });
    row("RSS after the last window", &|f, warden| {
        let mut cell = format!("{:.1} MiB after {} s", f.rss_mib(), f.rss_at.as_secs());
        let limit = match size.units {
            200 => Some(RSS_MIB_200),
            1000 => Some(RSS_MIB_1000),
            _ => None,
        };
        if let (true, Some(limit)) = (warden, limit) {
            cell += &format!(" [{}]", target(f.rss_mib(), limit, "MiB"));
        }
        cell
    });
    row("sampler's held files / limit", &|f, _| match f.held_files {
        Some([held, limit, by_path]) => format!("{held} / {limit}, {by_path} units read by path"),
        None => "-".to_owned(),
    });
    row("machine over the windows", &|f, _| f.host.describe());
    print_rows(&rows);
    println!(
        "load average before / after: {} / {}",
        size.load[0], size.load[1]
    );
}

/// Growth from 1,000 to 2,000 units, and the figures side by side.
pub fn summary(sizes: &[Size], columns: &[Column]) {
    println!("\nsummary: CPU ms/s (exporter+systemd+dbus) | scrape median | RSS");
    let mut rows = vec![
        std::iter::once("units".to_owned())
            .chain(columns.iter().map(|c| c.label().to_owned()))
            .collect::<Vec<_>>(),
    ];
    for size in sizes {
        let cells = size.figures.iter().map(|f| {
            format!(
                "{:.2} | {} | {:.1} MiB",
                f.cpu_per_s(),
                ms(f.median_ms()),
                f.rss_mib()
            )
        });
        rows.push(
            std::iter::once(size.units.to_string())
                .chain(cells)
                .collect(),
        );
    }
    print_rows(&rows);
    let cpu_at = |units: usize, col: usize| {
        let size = sizes.iter().find(|s| s.units == units)?;
        Some(size.figures[col].cpu_per_s())
    };
    for (col, column) in columns.iter().enumerate().take(columns.len() - 1) {
        if let (Some(a), Some(b)) = (cpu_at(1000, col), cpu_at(2000, col)) {
            let growth = b / a;
            let mark = if growth <= 2.0 { "PASS" } else { "MISS" };
            let label = column.label();
            println!("{label}: CPU 1,000 -> 2,000 units x{growth:.2} [<= 2.0 (linear) {mark}]");
        }
    }
}

fn print_rows(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |i: usize| rows.iter().filter_map(|r| r.get(i)).map(String::len).max();
    let widths: Vec<usize> = (0..columns).map(|i| width(i).unwrap_or(0) + 3).collect();
    for row in rows {
        let line: String = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        println!("{}", line.trim_end());
    }
}

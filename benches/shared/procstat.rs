//! CPU and memory of host processes, read from /proc.

use std::fs;

/// The kernel's USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
pub const TICK_MS: f64 = 10.0;

/// CPU used by one process: USER_HZ ticks (all threads, dead ones included) and the run time of
/// its live threads in ns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    ticks: u64,
    run_ns: u64,
}

impl Cpu {
    pub fn of(pid: u32) -> Cpu {
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

    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            ticks: self.ticks.saturating_sub(before.ticks),
            run_ns: self.run_ns.saturating_sub(before.run_ns),
        }
    }

    /// Two windows' CPU together.
    pub fn plus(self, other: Cpu) -> Cpu {
        Cpu {
            ticks: self.ticks + other.ticks,
            run_ns: self.run_ns + other.run_ns,
        }
    }

    pub fn ms(self) -> f64 {
        self.ticks as f64 * TICK_MS
    }

    pub fn run_ms(self) -> f64 {
        self.run_ns as f64 / 1e6
    }
}

/// The machine's CPU time from the first line of /proc/stat, in USER_HZ ticks.
#[derive(Debug, Clone, Copy)]
pub struct HostCpu {
    /// user + nice + system + irq + softirq.
    busy: u64,
    steal: u64,
    total: u64,
}

impl HostCpu {
    pub fn now() -> HostCpu {
        let stat = fs::read_to_string("/proc/stat").expect("reading /proc/stat");
        let line = stat.lines().next().expect("the cpu line");
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .flat_map(str::parse)
            .collect();
        let busy = v[0] + v[1] + v[2] + v[5] + v[6];
        HostCpu {
            busy,
            steal: v[7],
            total: v.iter().sum(),
        }
    }

    pub fn since(self, before: HostCpu) -> HostCpu {
        HostCpu {
            busy: self.busy - before.busy,
            steal: self.steal - before.steal,
            total: self.total - before.total,
        }
    }

    /// Two windows together.
    pub fn plus(self, other: HostCpu) -> HostCpu {
        HostCpu {
            busy: self.busy + other.busy,
            steal: self.steal + other.steal,
            total: self.total + other.total,
        }
    }

    /// Share of all CPUs busy (stolen time left out), in percent.
    pub fn busy_percent(self) -> f64 {
        100.0 * self.busy as f64 / self.total.max(1) as f64
    }

    pub fn describe(self) -> String {
        let pct = |part: u64| 100.0 * part as f64 / self.total.max(1) as f64;
        format!(
            "all CPUs {:.0}% busy, {:.1}% stolen",
            pct(self.busy),
            pct(self.steal)
        )
    }
}

/// Sum of the first field of /proc/<pid>/task/*/schedstat (time on CPU, ns).
pub fn run_ns_of(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let stats = tasks.filter_map(|t| fs::read_to_string(t.ok()?.path().join("schedstat")).ok());
    stats
        .filter_map(|s| s.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"));
    let kib = line.and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    kib.expect("a VmRSS line")
}

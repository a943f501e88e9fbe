//! CPU, memory and I/O of host processes and of the machine, read from /proc through the
//! procfs crate (the one the warden itself uses), not parsed here by hand.

use procfs::process::Process;
use procfs::{Current, CurrentSI, KernelStats, LoadAverage};

/// The length in ms of one of the kernel's USER_HZ ticks, the unit of utime and stime.
pub fn tick_ms() -> f64 {
    1000.0 / procfs::ticks_per_second() as f64
}

/// Process `pid` (this process if `None`), if it is there.
fn found(pid: Option<u32>) -> Option<Process> {
    match pid {
        Some(pid) => Process::new(i32::try_from(pid).ok()?).ok(),
        None => Process::myself().ok(),
    }
}

/// The live process `pid`; panics if it is gone.
fn process(pid: u32) -> Process {
    found(Some(pid)).unwrap_or_else(|| panic!("process {pid} is gone"))
}

/// CPU used by one process: USER_HZ ticks (all threads, dead ones included) and the run time of
/// its live threads in ns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    ticks: u64,
    run_ns: u64,
}

impl Cpu {
    pub fn of(pid: u32) -> Cpu {
        let process = process(pid);
        let stat = process
            .stat()
            .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
        Cpu {
            ticks: stat.utime + stat.stime,
            run_ns: run_ns_of(&process),
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
        self.ticks as f64 * tick_ms()
    }

    pub fn run_ms(self) -> f64 {
        self.run_ns as f64 / 1e6
    }
}

/// utime+stime of process `pid` (this process if `None`) and of its waited-for children, in
/// USER_HZ ticks.
pub fn ticks_with_children(pid: Option<u32>) -> u64 {
    let process = found(pid).unwrap_or_else(|| panic!("process {pid:?} is gone"));
    let stat = process.stat().expect("/proc/<pid>/stat");
    let children = u64::try_from(stat.cutime + stat.cstime).unwrap_or(0);
    stat.utime + stat.stime + children
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
        let cpu = KernelStats::current().expect("reading /proc/stat").total;
        let busy = cpu.user + cpu.nice + cpu.system;
        let busy = busy + cpu.irq.unwrap_or(0) + cpu.softirq.unwrap_or(0);
        let steal = cpu.steal.unwrap_or(0);
        HostCpu {
            busy,
            steal,
            total: busy + cpu.idle + cpu.iowait.unwrap_or(0) + steal,
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

/// Time on CPU of the live threads of `process` (their `schedstat`), in ns.
fn run_ns_of(process: &Process) -> u64 {
    let Ok(tasks) = process.tasks() else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok()?.schedstat().ok())
        .map(|s| s.sum_exec_runtime)
        .sum()
}

/// VmRSS of process `pid` (this process if `None`) in KiB, if it is still there.
pub fn rss_kib_of(pid: Option<u32>) -> Option<u64> {
    found(pid)?.status().ok()?.vmrss
}

pub fn rss_kib(pid: u32) -> u64 {
    rss_kib_of(Some(pid)).expect("a VmRSS line")
}

/// This process's peak RSS (VmHWM) in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    found(None)?.status().ok()?.vmhwm
}

/// The machine's load averages (1, 5, 15 min), as /proc/loadavg prints them.
pub fn loadavg() -> String {
    LoadAverage::current().map_or_else(
        |_| String::new(),
        |l| format!("{:.2} {:.2} {:.2}", l.one, l.five, l.fifteen),
    )
}

/// Bytes and calls of a process's read and write syscalls (sockets included), from
/// /proc/<pid>/io. An idle core makes none, so any API call shows here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Io {
    pub bytes: u64,
    pub calls: u64,
}

impl Io {
    pub fn of(pid: u32) -> Option<Io> {
        let io = found(Some(pid))?.io().ok()?;
        Some(Io {
            bytes: io.rchar + io.wchar,
            calls: io.syscr + io.syscw,
        })
    }

    pub fn since(self, before: Option<Io>) -> Option<Io> {
        let before = before?;
        Some(Io {
            bytes: self.bytes - before.bytes,
            calls: self.calls - before.calls,
        })
    }
}

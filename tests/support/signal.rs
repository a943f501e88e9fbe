//! Signals sent by PID through `kill(2)` (rustix), rather than by spawning `kill(1)`.

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

/// systemd's `SIGRTMIN+3`, the halt request of a container's init: glibc's `SIGRTMIN` is 34
/// (it keeps the kernel's first two real-time signals, 32 and 33, for itself; signal(7)), so
/// 37, the number `kill -s RTMIN+3` sends.
pub fn halt_request() -> Signal {
    // SAFETY: 37 is a valid signal number, and not one glibc reserves (32 and 33); it is only
    // sent, to another process.
    unsafe { Signal::from_raw_unchecked(37) }
}

/// Sends `signal` to the process `pid`.
pub fn send(pid: u32, signal: Signal) -> std::io::Result<()> {
    Ok(kill_process(pid_of(pid)?, signal)?)
}

/// Sends `signal` to every process of the process group `group`.
pub fn send_group(group: u32, signal: Signal) -> std::io::Result<()> {
    Ok(kill_process_group(pid_of(group)?, signal)?)
}

fn pid_of(pid: u32) -> std::io::Result<Pid> {
    let raw = i32::try_from(pid).map_err(std::io::Error::other)?;
    Pid::from_raw(raw).ok_or_else(|| std::io::Error::other("PID 0 names no process"))
}

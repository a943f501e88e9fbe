//! xray-warden: supervises the `xray-tunnel-*` systemd units of a VPN node and exports them to
//! Prometheus.
//!
//! Modules, each owning one concern:
//! - [`domain`]: tunnels, unit states, restart and CPU accounting rules. Pure, no I/O.
//! - [`procfs`]: per-process CPU, memory, threads and fds of a unit's cgroup (procfs crate).
#![forbid(unsafe_code)]

pub mod domain;
pub mod procfs;
pub mod config;
pub mod state;
pub mod systemd;
pub mod sampler;
pub mod metrics;

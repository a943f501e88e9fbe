//! xray-warden: supervises the `xray-tunnel-*` systemd units of a VPN node and exports them to
//! Prometheus.
//!
//! Modules, each owning one concern:
//! - [`domain`]: tunnels, unit states, restart and CPU accounting rules. Pure, no I/O.
//! - [`procfs`]: per-process CPU, memory, threads and fds of a unit's cgroup (procfs crate).
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod procfs;
pub mod sampler;
pub mod state;
pub mod systemd;

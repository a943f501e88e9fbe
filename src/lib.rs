//! xray-warden: supervises the `xray-tunnel-*` systemd units of a VPN node and exports them to
//! Prometheus.
//!
//! Modules, each owning one concern:
//! - [`domain`]: tunnel ids, unit states, restart and CPU accounting rules. Pure, no I/O.
//! - [`config`]: the TOML file plus flags, validated into one immutable `Config`.
//! - [`core`]: the core binary itself: its own config test.
//! - [`systemd`]: the zbus client and the watcher (connect, list, follow signals, reconnect).
//! - [`procfs`]: per-process CPU, memory, threads and fds of a unit's cgroup.
//! - [`readfile`]: bounded reads of regular files others write (never a FIFO, never unbounded).
//! - [`sampler`]: the periodic resource pass that merges systemd accounting with procfs.
//! - [`health`]: the periodic health checks of every tunnel, the orphan scan, and their cleanup.
//! - [`state`]: the snapshot the collectors write and every scrape reads.
//! - [`metrics`]: the owned Prometheus registry and its snapshot collectors.
//! - [`http`]: `/metrics`, `/live`, `/ready`, and the bearer-token `/api/v1`.
//! - [`contract`]: the JSON of the API's answers as serde types, rendered by [`http`] and read
//!   by [`remote`].
//! - [`daemon`]: spawns every long-lived task in one place and runs the shutdown path.
//! - [`supervisor`]: a long-lived task that ends before shutdown ends the whole run.
//! - [`cli`]: the command-line flags.
//! - [`tunnelcfg`]: a tunnel's Xray/V2Ray JSON config: inbounds, clients, API address, and the
//!   atomic rewrite of the clients.
//! - [`users`]: the desired-users document, validated entry by entry, and who goes where.
//! - [`xray`]: the gRPC client of a core's API (users, stats), refusing requests that crash it.
//! - [`usersync`]: the reconcile loop: source, diff, removal guard, apply, persist, traffic.
//! - [`remote`]: CLI commands that talk to a running daemon (`xray-warden sync`).
//! - [`lifecycle`]: creating, starting, stopping, restarting and deleting tunnel units and their
//!   configs over D-Bus, from the unit template; restart-all, emergency cleanup, log tails.
//! - [`ops`]: the operations service, the one place that performs actions (lifecycle, cleanup,
//!   sync, alert-driven remediation) under the only operation lock, with its audit log.
//! - [`alertmanager`]: Alertmanager's webhook payload.
#![forbid(unsafe_code)]

pub mod alertmanager;
pub mod cli;
pub mod config;
pub mod contract;
pub mod core;
pub mod daemon;
pub mod domain;
pub mod health;
pub mod http;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod procfs;
pub mod readfile;
pub mod remote;
pub mod sampler;
pub mod state;
pub mod supervisor;
pub mod systemd;
pub mod tunnelcfg;
pub mod users;
pub mod usersync;
pub mod xray;

//! Command-line interface: raw flags, parsed by clap, before any validation.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Supervises the xray-tunnel-* systemd units of a VPN node and exports them to Prometheus.
#[derive(Debug, Parser)]
#[command(name = "xray-warden", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: watch the tunnel units and serve /metrics, /live and /ready.
    Run(RunArgs),
    /// Ask the running daemon for a user sync now and print what it did (POST /api/v1/sync).
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The daemon's configuration: its `listen` address and `api.token_file` are used.
    #[arg(long, short, value_name = "FILE", env = "XRAY_WARDEN_CONFIG")]
    pub config: Option<PathBuf>,

    /// Apply removals even when they exceed users.max_remove_fraction.
    #[arg(long)]
    pub force: bool,

    /// Print the daemon's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file. Every key is optional; see deploy/config.example.toml for
    /// the keys and their defaults. Without it, the built-in defaults apply.
    #[arg(long, short, value_name = "FILE", env = "XRAY_WARDEN_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to serve HTTP on, overriding `listen` from the file (default 127.0.0.1:9550).
    /// Port 0 picks a free port; the chosen address is logged.
    #[arg(long, short, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Only validate the configuration, print the effective values and exit.
    #[arg(long)]
    pub check: bool,
}

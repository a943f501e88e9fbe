//! Command-line interface: raw flags, parsed by clap, before any validation.
//!
//! Self-contained (clap and humantime only): build.rs compiles this file on its own to generate
//! the man pages and shell completions from the same definition.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Manage tunnels through the running daemon's API.
    Tunnels {
        #[command(subcommand)]
        action: TunnelsAction,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show the health checks of every tunnel.
    Health {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List or clean up orphans: units without config, configs without unit, stray cores, ...
    Orphans {
        #[command(subcommand)]
        action: OrphansAction,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// How the CLI reaches the daemon, and how it prints.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The daemon's configuration: its `listen` address and `api.token_file` are used.
    #[arg(
        long,
        short,
        value_name = "FILE",
        env = "XRAY_WARDEN_CONFIG",
        global = true
    )]
    pub config: Option<PathBuf>,

    /// Print the daemon's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// Give up when the daemon has not answered within this long.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT, value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
}

/// How long a CLI command waits for the daemon by default: longer than the daemon's own
/// default `api.request_timeout` (180 s), so the daemon's answer, even a timeout, comes first.
pub const DEFAULT_TIMEOUT: &str = "190s";

#[derive(Debug, Subcommand)]
pub enum TunnelsAction {
    /// Every tunnel with its state, restarts and resources.
    List,
    /// One tunnel in full.
    Show { id: String },
    /// Create or replace a tunnel from a core config file (tested by the core first).
    Create {
        id: String,
        /// The Xray/V2Ray JSON config of the tunnel.
        #[arg(value_name = "CONFIG_JSON")]
        file: PathBuf,
    },
    /// Start the tunnel's unit.
    Start { id: String },
    /// Stop the tunnel's unit.
    Stop { id: String },
    /// Restart the tunnel's unit.
    Restart { id: String },
    /// Stop, disable and remove the tunnel's unit and config.
    Delete { id: String },
    /// The last lines of the tunnel's log.
    Logs {
        id: String,
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrphansAction {
    /// List the orphans.
    List,
    /// Remove orphans (stray processes are stopped); re-checked at the moment of acting.
    Cleanup {
        /// Only say what would be done.
        #[arg(long)]
        dry_run: bool,
    },
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

    /// Give up when the daemon has not answered within this long.
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_TIMEOUT, value_parser = humantime::parse_duration)]
    pub timeout: Duration,
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

    /// Log line format on stderr: `text` adapts to a terminal (colour), journald (`<N>`
    /// priority prefix, no timestamp) or a pipe (plain); `json` is one object per line.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value_t,
        env = "XRAY_WARDEN_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// The `--log-format` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, shaped for where stderr goes (terminal, journald, pipe).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

//! Configuration: a TOML file (every key optional) plus command-line overrides, turned into one
//! validated, immutable [`Config`].
//!
//! Every problem is collected before anything is reported, so an operator fixes a file in one
//! round: unknown keys (found with `serde_ignored`, because serde's `deny_unknown_fields` stops
//! at the first one), values of the wrong type (each leaf is read leniently, see [`file::Lenient`])
//! and values that parse but make no sense.

mod check;
mod file;
mod policy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::FileConfig;

use std::collections::BTreeMap;

use crate::domain::config_policy::TargetPolicy;
use crate::domain::{Flavour, TunnelId};

/// The validated configuration of the daemon. Defaults are in deploy/config.example.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address of the HTTP server (`/metrics`, `/live`, `/ready`).
    pub listen: SocketAddr,
    /// How long a graceful shutdown may take before the remaining tasks are abandoned.
    pub shutdown_grace: Duration,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax (`RUST_LOG` wins when set).
    pub log_filter: String,
    pub systemd: SystemdConfig,
    pub sampler: SamplerConfig,
    pub tunnels: TunnelsConfig,
    pub users: UsersConfig,
    pub api: ApiConfig,
    pub health: HealthConfig,
    pub remediation: RemediationConfig,
}

/// What the warden may do when Alertmanager calls its webhook (`POST /api/v1/alerts`).
#[derive(Debug, Clone, PartialEq)]
pub struct RemediationConfig {
    /// `false` refuses every alert (each is still counted and audited).
    pub enabled: bool,
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// This node's name, compared with the alert's `node_label`; `None` means the host name.
    pub node: Option<String>,
    /// The alert label that names the node an alert is about.
    pub node_label: String,
    /// The warden itself must have seen the orphan for this long before acting on it.
    pub min_orphan_age: Duration,
    /// Least time between two actions on the same tunnel.
    pub cooldown: Duration,
    /// Most actions in any hour, over every tunnel.
    pub max_actions_per_hour: usize,
    /// Act on none when more than this fraction of the node's tunnels look orphaned at once.
    pub max_orphan_fraction: f64,
    /// Act on none when more than this many orphans are seen at once.
    pub max_orphans_per_pass: usize,
}

impl RemediationConfig {
    /// The node name alerts must carry: `node`, else the kernel's host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        })
    }
}

/// Where tunnels keep their files and which core they run.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelsConfig {
    /// Where `xray-{id}.json` lives when the unit's ExecStart names no `-config`.
    pub config_dir: PathBuf,
    /// The core flavour of every tunnel; `None` detects it per tunnel with a harmless request.
    pub flavour: Option<Flavour>,
    /// Per-tunnel flavours, winning over `flavour`.
    pub flavours: BTreeMap<TunnelId, Flavour>,
    /// Where tunnel unit files are written.
    pub unit_dir: PathBuf,
    /// Where tunnel units append their core's output (`xray-{id}.log`).
    pub log_dir: PathBuf,
    /// The core binary units run, and that tests configs (`xray run -test` / `v2ray -test`).
    pub core_binary: PathBuf,
    /// User and group tunnel units and config tests run as; the group may read the tunnel's
    /// config file, which is root's.
    pub user: String,
    pub group: String,
    /// A unit template file replacing the built-in one; `None` uses the built-in template.
    pub unit_template: Option<PathBuf>,
    /// How long a tunnel's unit must stay active, on the same main process, after a create or
    /// replace starts it, before the operation counts as done.
    pub start_settle: Duration,
    /// Where tunnel configs may send traffic (`[tunnels.policy]`).
    pub policy: TargetPolicy,
}

impl TunnelsConfig {
    /// The configured flavour of tunnel `id`, `None` to detect it.
    pub fn flavour_of(&self, id: &TunnelId) -> Option<Flavour> {
        self.flavours.get(id).copied().or(self.flavour)
    }
}

/// Where the desired users come from and how they are synced.
#[derive(Debug, Clone, PartialEq)]
pub struct UsersConfig {
    /// `None` turns user sync off.
    pub source: Option<UserSource>,
    /// File holding a bearer token sent to an https source.
    pub token_file: Option<PathBuf>,
    /// Deadline of one fetch of the source.
    pub timeout: Duration,
    /// Period of the reconcile loop (SIGHUP, the API and tunnel restarts also trigger it).
    pub interval: Duration,
    /// A sync that would remove more than this fraction of a tunnel's users removes nobody.
    pub max_remove_fraction: f64,
    /// Where the warden records what it applied and the last good desired set.
    pub state_dir: PathBuf,
    /// gRPC calls in flight per tunnel.
    pub concurrency: usize,
    /// Deadline of every gRPC call.
    pub call_timeout: Duration,
    /// Period of reading each core's traffic counters (StatsService QueryStats).
    pub traffic_interval: Duration,
    /// Export per-user traffic counters (one series pair per user).
    pub per_user_traffic: bool,
    /// Export, on Xray, each online user's number of addresses (one series per online user).
    pub per_user_online_ips: bool,
    /// Cap on the series per tunnel of each per-user family (traffic, online addresses).
    pub max_user_series: usize,
}

/// A source of the desired users document.
#[derive(Debug, Clone, PartialEq)]
pub enum UserSource {
    File(PathBuf),
    Https(String),
}

impl UserSource {
    fn parse(text: &str) -> Result<Option<Self>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        if let Some(path) = text.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err("a file:// source needs an absolute path (file:///etc/...)".into());
            }
            return Ok(Some(Self::File(path.into())));
        }
        if !text.starts_with("https://") && !text.starts_with("http://") {
            return Err(
                "must start with file:/// or https:// (plain http only to loopback)".into(),
            );
        }
        let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
        crate::domain::check_source_url(&url).map_err(|e| e.to_string())?;
        Ok(Some(Self::Https(text.to_owned())))
    }
}

/// Health checks of every tunnel and the orphan scan of the node.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Period of a health pass (checks of every tunnel, then the orphan scan).
    pub interval: Duration,
    /// A tunnel restarted automatically `crash_threshold` times or more within `crash_window`
    /// is crash-looping.
    pub crash_window: Duration,
    pub crash_threshold: usize,
    /// A unit failed for longer than this is an orphan.
    pub failed_threshold: Duration,
    /// The JSON inventory of tunnel ids (`{"tunnels": ["id", ...]}`); `None` turns the
    /// not-in-inventory orphans off.
    pub inventory: Option<PathBuf>,
}

impl HealthConfig {
    fn parse_inventory(text: &str) -> Result<Option<PathBuf>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        match text.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => Ok(Some(path.into())),
            Some(_) => Err("a file:// inventory needs an absolute path (file:///etc/...)".into()),
            None => Err("must be empty or start with file:///".into()),
        }
    }
}

/// The management API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// File holding the bearer token `/api` routes require; `None` turns `/api` off.
    pub token_file: Option<PathBuf>,
    /// Where every mutating API call is appended as a JSON line; `None` keeps no log.
    pub audit_log: Option<PathBuf>,
    /// Most HTTP connections open at once (on every route, `/live` included); at the cap the
    /// oldest connection with no request in progress is closed to make room. Lowered at start
    /// to fit the process's open-file limit.
    pub max_connections: usize,
    /// Longest a handler may take before the request is answered 503 `request_timeout` (an
    /// operation already started still runs to its end).
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's whole body (408 `body_timeout`).
    pub body_timeout: Duration,
}

/// How the warden talks to systemd.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemdConfig {
    /// D-Bus address of systemd's bus; `None` means the default system bus.
    pub bus_address: Option<String>,
    /// Deadline of every D-Bus call.
    pub call_timeout: Duration,
    /// First delay before reconnecting to a lost bus; doubles up to `reconnect_max`, jittered.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Period of the safety net behind systemd's signals: a listing of the units' states (and
    /// of the unit files only if systemd reloaded unseen), every `domain::resync::FULL_EVERY`
    /// rounds a read of every loaded unit.
    pub resync_interval: Duration,
    /// How many units are read from systemd at once.
    pub concurrency: usize,
}

/// How per-tunnel resources are sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Period of a resource sampling pass over every running tunnel.
    pub interval: Duration,
    /// How old a reading of a tunnel's processes (RSS, open fds) may get before a pass reads the
    /// known ones again (listing the cgroup every fourth time); a change of main PID or task
    /// count lists them at once.
    pub process_interval: Duration,
    /// Where procfs is mounted.
    pub proc_root: PathBuf,
    /// Where the cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9550)),
            shutdown_grace: Duration::from_secs(10),
            log_filter: "info".into(),
            systemd: SystemdConfig {
                bus_address: None,
                call_timeout: Duration::from_secs(5),
                reconnect_min: Duration::from_millis(200),
                reconnect_max: Duration::from_secs(30),
                resync_interval: Duration::from_secs(300),
                concurrency: 16,
            },
            sampler: SamplerConfig {
                // The usual scrape interval of a Prometheus job: a pass between two scrapes is
                // never seen (docs/benchmarks.md, steady state).
                interval: Duration::from_secs(15),
                process_interval: Duration::from_secs(300),
                proc_root: "/proc".into(),
                cgroup_root: "/sys/fs/cgroup".into(),
            },
            tunnels: TunnelsConfig {
                config_dir: "/etc/raptor-tunnel".into(),
                flavour: None,
                flavours: BTreeMap::new(),
                unit_dir: "/etc/systemd/system".into(),
                log_dir: "/var/log/raptor-tunnel".into(),
                core_binary: "/usr/local/bin/xray".into(),
                user: "raptor-tunnel".into(),
                group: "raptor-tunnel".into(),
                unit_template: None,
                start_settle: Duration::from_millis(1500),
                policy: TargetPolicy::default(),
            },
            users: UsersConfig {
                source: None,
                token_file: None,
                timeout: Duration::from_secs(10),
                interval: Duration::from_secs(60),
                max_remove_fraction: 0.5,
                state_dir: "/var/lib/xray-warden".into(),
                concurrency: 16,
                call_timeout: Duration::from_secs(5),
                traffic_interval: Duration::from_secs(15),
                per_user_traffic: false,
                per_user_online_ips: false,
                max_user_series: 10_000,
            },
            health: HealthConfig {
                interval: Duration::from_secs(15),
                crash_window: Duration::from_secs(600),
                crash_threshold: 5,
                failed_threshold: Duration::from_secs(600),
                inventory: None,
            },
            api: ApiConfig {
                token_file: None,
                audit_log: Some("/var/log/xray-warden/audit.log".into()),
                max_connections: 1000,
                request_timeout: Duration::from_secs(180),
                body_timeout: Duration::from_secs(10),
            },
            remediation: RemediationConfig {
                enabled: true,
                dry_run: false,
                node: None,
                node_label: "instance".into(),
                min_orphan_age: Duration::from_secs(300),
                cooldown: Duration::from_secs(1800),
                max_actions_per_hour: 10,
                max_orphan_fraction: 0.5,
                max_orphans_per_pass: 5,
            },
        }
    }
}

/// Values given on the command line; each one wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
}

/// Every problem found in a configuration, reported together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration{}:\n  - {}", source_suffix(.source_name), .problems.join("\n  - "))]
pub struct ConfigError {
    pub source_name: Option<String>,
    pub problems: Vec<String>,
}

fn source_suffix(name: &Option<String>) -> String {
    name.as_ref()
        .map(|n| format!(" in {n}"))
        .unwrap_or_default()
}

impl Config {
    /// Loads `path` (or only the defaults when `None`) and applies `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Self::from_toml("", overrides);
        };
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            source_name: Some(path.display().to_string()),
            problems: vec![format!("cannot read the file: {err}")],
        })?;
        Self::from_toml(&text, overrides).map_err(|mut err| {
            err.source_name = Some(path.display().to_string());
            err
        })
    }

    /// Parses a TOML document and applies `overrides`.
    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Self, ConfigError> {
        let fail = |problems| ConfigError {
            source_name: None,
            problems,
        };
        let (file, unknown) = FileConfig::parse(text).map_err(|err| fail(vec![err]))?;
        let mut problems: Vec<String> = unknown
            .into_iter()
            .map(|key| format!("unknown key `{key}`"))
            .collect();
        match file.validate(overrides) {
            Ok(config) if problems.is_empty() => Ok(config),
            Ok(_) => Err(fail(problems)),
            Err(more) => {
                problems.extend(more);
                Err(fail(problems))
            }
        }
    }
}

/// Secrets the configuration points at, read once at start-up.
#[derive(Clone, Default)]
pub struct Secrets {
    /// The `/api` bearer token; `None` when no token file is configured.
    pub api_token: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

impl Secrets {
    /// Reads the token files. An unreadable or empty token file is a configuration error.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let Some(path) = &config.api.token_file else {
            return Ok(Self::default());
        };
        let fail = |problem: String| ConfigError {
            source_name: None,
            problems: vec![problem],
        };
        let token = std::fs::read_to_string(path)
            .map_err(|err| fail(format!("`api.token_file` {}: {err}", path.display())))?;
        let token = token.trim();
        if token.len() < 16 {
            return Err(fail(format!(
                "`api.token_file` {}: the token must be at least 16 characters",
                path.display()
            )));
        }
        Ok(Self {
            api_token: Some(token.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests;

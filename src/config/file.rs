//! The raw shape of the TOML file and its validation into [`Config`].

use serde::Deserialize;

use super::check::{Checker, Lenient};
use super::{Config, Overrides};
use std::collections::BTreeMap;

use crate::domain::{Flavour, TunnelId};

/// The configuration file as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FileConfig {
    listen: Option<Lenient<String>>,
    shutdown_grace: Option<Lenient<String>>,
    log_filter: Option<Lenient<String>>,
    systemd: FileSystemd,
    sampler: FileSampler,
    tunnels: FileTunnels,
    users: FileUsers,
    api: FileApi,
    health: FileHealth,
    remediation: FileRemediation,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileRemediation {
    enabled: Option<Lenient<bool>>,
    dry_run: Option<Lenient<bool>>,
    node: Option<Lenient<String>>,
    node_label: Option<Lenient<String>>,
    min_orphan_age: Option<Lenient<String>>,
    cooldown: Option<Lenient<String>>,
    max_actions_per_hour: Option<Lenient<i64>>,
    max_orphan_fraction: Option<Lenient<f64>>,
    max_orphans_per_pass: Option<Lenient<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileTunnels {
    config_dir: Option<Lenient<String>>,
    flavour: Option<Lenient<String>>,
    flavours: Option<Lenient<BTreeMap<String, String>>>,
    unit_dir: Option<Lenient<String>>,
    log_dir: Option<Lenient<String>>,
    core_binary: Option<Lenient<String>>,
    user: Option<Lenient<String>>,
    group: Option<Lenient<String>>,
    unit_template: Option<Lenient<String>>,
    start_settle: Option<Lenient<String>>,
    policy: super::policy::FilePolicy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileUsers {
    source: Option<Lenient<String>>,
    token_file: Option<Lenient<String>>,
    timeout: Option<Lenient<String>>,
    interval: Option<Lenient<String>>,
    max_remove_fraction: Option<Lenient<f64>>,
    state_dir: Option<Lenient<String>>,
    concurrency: Option<Lenient<i64>>,
    call_timeout: Option<Lenient<String>>,
    per_user_traffic: Option<Lenient<bool>>,
    per_user_online_ips: Option<Lenient<bool>>,
    traffic_interval: Option<Lenient<String>>,
    max_user_series: Option<Lenient<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileHealth {
    interval: Option<Lenient<String>>,
    crash_window: Option<Lenient<String>>,
    crash_threshold: Option<Lenient<i64>>,
    failed_threshold: Option<Lenient<String>>,
    inventory: Option<Lenient<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileApi {
    token_file: Option<Lenient<String>>,
    audit_log: Option<Lenient<String>>,
    max_connections: Option<Lenient<i64>>,
    request_timeout: Option<Lenient<String>>,
    body_timeout: Option<Lenient<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileSystemd {
    bus_address: Option<Lenient<String>>,
    call_timeout: Option<Lenient<String>>,
    reconnect_min: Option<Lenient<String>>,
    reconnect_max: Option<Lenient<String>>,
    resync_interval: Option<Lenient<String>>,
    concurrency: Option<Lenient<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileSampler {
    interval: Option<Lenient<String>>,
    process_interval: Option<Lenient<String>>,
    proc_root: Option<Lenient<String>>,
    cgroup_root: Option<Lenient<String>>,
}

impl FileConfig {
    /// Parses `text`, returning the file and the dotted paths of every unknown key.
    pub fn parse(text: &str) -> Result<(Self, Vec<String>), String> {
        let deserializer = toml::Deserializer::parse(text).map_err(|err| err.to_string())?;
        let mut unknown = Vec::new();
        let file = serde_ignored::deserialize(deserializer, |path| unknown.push(path.to_string()))
            .map_err(|err: toml::de::Error| err.to_string())?;
        Ok((file, unknown))
    }

    /// Checks every value; returns the config or every problem found.
    pub fn validate(self, overrides: &Overrides) -> Result<Config, Vec<String>> {
        let d = Config::default();
        let mut c = Checker::default();
        let listen = c.addr("listen", self.listen, d.listen);
        let config = Config {
            listen: overrides.listen.unwrap_or(listen),
            shutdown_grace: c.duration("shutdown_grace", self.shutdown_grace, d.shutdown_grace),
            log_filter: c.log_filter("log_filter", self.log_filter, d.log_filter),
            systemd: self.systemd.validate(&mut c, d.systemd),
            sampler: self.sampler.validate(&mut c, d.sampler),
            tunnels: self.tunnels.validate(&mut c, d.tunnels),
            users: self.users.validate(&mut c, d.users),
            health: self.health.validate(&mut c, d.health),
            remediation: self.remediation.validate(&mut c, d.remediation),
            api: self.api.validate(&mut c, d.api),
        };
        if config.systemd.reconnect_min > config.systemd.reconnect_max {
            c.problems
                .push("systemd.reconnect_min must not be larger than systemd.reconnect_max".into());
        }
        if c.problems.is_empty() {
            Ok(config)
        } else {
            Err(c.problems)
        }
    }
}

impl FileApi {
    fn validate(self, c: &mut Checker, d: super::ApiConfig) -> super::ApiConfig {
        super::ApiConfig {
            token_file: c.opt_abs_path("api.token_file", self.token_file),
            audit_log: match self.audit_log {
                None => d.audit_log,
                given => c.opt_abs_path("api.audit_log", given),
            },
            max_connections: c.count_up_to(
                "api.max_connections",
                self.max_connections,
                d.max_connections,
                MAX_CONNECTIONS,
            ),
            request_timeout: c.duration(
                "api.request_timeout",
                self.request_timeout,
                d.request_timeout,
            ),
            body_timeout: c.duration("api.body_timeout", self.body_timeout, d.body_timeout),
        }
    }
}

/// Upper bound of `api.max_connections`: the unit's LimitNOFILE, less room for everything else.
const MAX_CONNECTIONS: usize = 60_000;

impl FileSystemd {
    fn validate(self, c: &mut Checker, d: super::SystemdConfig) -> super::SystemdConfig {
        let bus_address = c.value("systemd.bus_address", self.bus_address, String::new());
        super::SystemdConfig {
            bus_address: (!bus_address.is_empty()).then_some(bus_address),
            call_timeout: c.duration("systemd.call_timeout", self.call_timeout, d.call_timeout),
            reconnect_min: c.duration("systemd.reconnect_min", self.reconnect_min, d.reconnect_min),
            reconnect_max: c.duration("systemd.reconnect_max", self.reconnect_max, d.reconnect_max),
            resync_interval: c.duration(
                "systemd.resync_interval",
                self.resync_interval,
                d.resync_interval,
            ),
            concurrency: c.count("systemd.concurrency", self.concurrency, d.concurrency),
        }
    }
}

impl FileTunnels {
    fn validate(self, c: &mut Checker, d: super::TunnelsConfig) -> super::TunnelsConfig {
        super::TunnelsConfig {
            config_dir: c.abs_path("tunnels.config_dir", self.config_dir, d.config_dir),
            unit_dir: c.abs_path("tunnels.unit_dir", self.unit_dir, d.unit_dir),
            log_dir: c.abs_path("tunnels.log_dir", self.log_dir, d.log_dir),
            core_binary: c.abs_path("tunnels.core_binary", self.core_binary, d.core_binary),
            user: c.value("tunnels.user", self.user, d.user),
            group: c.value("tunnels.group", self.group, d.group),
            unit_template: c.opt_abs_path("tunnels.unit_template", self.unit_template),
            start_settle: c.duration("tunnels.start_settle", self.start_settle, d.start_settle),
            policy: self.policy.validate(c),
            flavour: c.parsed("tunnels.flavour", self.flavour, d.flavour, parse_flavour),
            flavours: c
                .value("tunnels.flavours", self.flavours, BTreeMap::new())
                .into_iter()
                .filter_map(|(id, flavour)| {
                    let key = format!("tunnels.flavours.{id}");
                    let id = TunnelId::new(&id)
                        .map_err(|err| c.problems.push(format!("`{key}`: {err}")))
                        .ok()?;
                    match parse_flavour(&flavour) {
                        Ok(flavour) => flavour.map(|f| (id, f)),
                        Err(err) => {
                            c.problems.push(format!("`{key}` = {flavour:?}: {err}"));
                            None
                        }
                    }
                })
                .collect(),
        }
    }
}

fn parse_flavour(text: &str) -> Result<Option<Flavour>, String> {
    match text {
        "auto" => Ok(None),
        "xray" => Ok(Some(Flavour::Xray)),
        "v2ray" => Ok(Some(Flavour::V2ray)),
        _ => Err("must be \"auto\", \"xray\" or \"v2ray\"".into()),
    }
}

impl FileUsers {
    fn validate(self, c: &mut Checker, d: super::UsersConfig) -> super::UsersConfig {
        let fraction = c.value(
            "users.max_remove_fraction",
            self.max_remove_fraction,
            d.max_remove_fraction,
        );
        if !(0.0..=1.0).contains(&fraction) {
            c.problems.push(format!(
                "`users.max_remove_fraction` = {fraction}: must be between 0 and 1"
            ));
        }
        super::UsersConfig {
            source: c.parsed(
                "users.source",
                self.source,
                d.source,
                super::UserSource::parse,
            ),
            token_file: c.opt_abs_path("users.token_file", self.token_file),
            timeout: c.duration("users.timeout", self.timeout, d.timeout),
            interval: c.duration("users.interval", self.interval, d.interval),
            max_remove_fraction: fraction,
            state_dir: c.abs_path("users.state_dir", self.state_dir, d.state_dir),
            concurrency: c.count("users.concurrency", self.concurrency, d.concurrency),
            call_timeout: c.duration("users.call_timeout", self.call_timeout, d.call_timeout),
            traffic_interval: c.duration(
                "users.traffic_interval",
                self.traffic_interval,
                d.traffic_interval,
            ),
            per_user_traffic: c.value(
                "users.per_user_traffic",
                self.per_user_traffic,
                d.per_user_traffic,
            ),
            per_user_online_ips: c.value(
                "users.per_user_online_ips",
                self.per_user_online_ips,
                d.per_user_online_ips,
            ),
            max_user_series: c.count_up_to(
                "users.max_user_series",
                self.max_user_series,
                d.max_user_series,
                1_000_000,
            ),
        }
    }
}

impl FileHealth {
    fn validate(self, c: &mut Checker, d: super::HealthConfig) -> super::HealthConfig {
        super::HealthConfig {
            interval: c.duration("health.interval", self.interval, d.interval),
            crash_window: c.duration("health.crash_window", self.crash_window, d.crash_window),
            crash_threshold: c.count_up_to(
                "health.crash_threshold",
                self.crash_threshold,
                d.crash_threshold,
                1_000_000,
            ),
            failed_threshold: c.duration(
                "health.failed_threshold",
                self.failed_threshold,
                d.failed_threshold,
            ),
            inventory: c.parsed(
                "health.inventory",
                self.inventory,
                d.inventory,
                super::HealthConfig::parse_inventory,
            ),
        }
    }
}

impl FileSampler {
    fn validate(self, c: &mut Checker, d: super::SamplerConfig) -> super::SamplerConfig {
        super::SamplerConfig {
            interval: c.duration("sampler.interval", self.interval, d.interval),
            process_interval: c.duration(
                "sampler.process_interval",
                self.process_interval,
                d.process_interval,
            ),
            proc_root: c.abs_path("sampler.proc_root", self.proc_root, d.proc_root),
            cgroup_root: c.abs_path("sampler.cgroup_root", self.cgroup_root, d.cgroup_root),
        }
    }
}

impl FileRemediation {
    fn validate(self, c: &mut Checker, d: super::RemediationConfig) -> super::RemediationConfig {
        let node = c.value("remediation.node", self.node, String::new());
        let node_label = c.value("remediation.node_label", self.node_label, d.node_label);
        if !is_label_name(&node_label) {
            c.problems.push(format!(
                "`remediation.node_label` = {node_label:?}: not a Prometheus label name"
            ));
        }
        let fraction = c.value(
            "remediation.max_orphan_fraction",
            self.max_orphan_fraction,
            d.max_orphan_fraction,
        );
        if !(fraction > 0.0 && fraction <= 1.0) {
            c.problems.push(format!(
                "`remediation.max_orphan_fraction` = {fraction}: must be above 0 and at most 1"
            ));
        }
        super::RemediationConfig {
            enabled: c.value("remediation.enabled", self.enabled, d.enabled),
            dry_run: c.value("remediation.dry_run", self.dry_run, d.dry_run),
            node: (!node.is_empty()).then_some(node),
            node_label,
            min_orphan_age: c.duration(
                "remediation.min_orphan_age",
                self.min_orphan_age,
                d.min_orphan_age,
            ),
            cooldown: c.duration("remediation.cooldown", self.cooldown, d.cooldown),
            max_actions_per_hour: c.count_up_to(
                "remediation.max_actions_per_hour",
                self.max_actions_per_hour,
                d.max_actions_per_hour,
                10_000,
            ),
            max_orphan_fraction: fraction,
            max_orphans_per_pass: c.count_up_to(
                "remediation.max_orphans_per_pass",
                self.max_orphans_per_pass,
                d.max_orphans_per_pass,
                10_000,
            ),
        }
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, Prometheus's label name grammar.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

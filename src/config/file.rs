//! The raw shape of the TOML file and its validation into [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{Config, Overrides};

/// The configuration file as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FileConfig {
    listen: Option<Lenient<String>>,
    shutdown_grace: Option<Lenient<String>>,
    log_filter: Option<Lenient<String>>,
    systemd: FileSystemd,
    sampler: FileSampler,
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
    proc_root: Option<Lenient<String>>,
    cgroup_root: Option<Lenient<String>>,
}

/// A leaf value that never fails deserialization: a wrong type is kept as a message, so that
/// serde goes on and every other problem in the file is found too.
#[derive(Debug)]
pub struct Lenient<T>(Result<T, String>);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(deserializer)?;
        Ok(Self(
            T::deserialize(value).map_err(|err| err.message().to_owned()),
        ))
    }
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

impl FileSampler {
    fn validate(self, c: &mut Checker, d: super::SamplerConfig) -> super::SamplerConfig {
        super::SamplerConfig {
            interval: c.duration("sampler.interval", self.interval, d.interval),
            proc_root: c.abs_path("sampler.proc_root", self.proc_root, d.proc_root),
            cgroup_root: c.abs_path("sampler.cgroup_root", self.cgroup_root, d.cgroup_root),
        }
    }
}

/// Collects problems while reading values, substituting the default for a bad one.
#[derive(Default)]
struct Checker {
    problems: Vec<String>,
}

impl Checker {
    fn value<T>(&mut self, key: &str, value: Option<Lenient<T>>, default: T) -> T {
        match value {
            None => default,
            Some(Lenient(Ok(value))) => value,
            Some(Lenient(Err(err))) => {
                self.problems.push(format!("`{key}`: {err}"));
                default
            }
        }
    }

    /// Reads a value given as a string and converted by `parse`.
    fn parsed<T>(
        &mut self,
        key: &str,
        value: Option<Lenient<String>>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        let text = match value {
            None => return default,
            Some(Lenient(Ok(text))) => text,
            Some(Lenient(Err(err))) => {
                self.problems.push(format!("`{key}`: {err}"));
                return default;
            }
        };
        parse(&text).unwrap_or_else(|err| {
            self.problems.push(format!("`{key}` = {text:?}: {err}"));
            default
        })
    }

    fn duration(&mut self, key: &str, v: Option<Lenient<String>>, default: Duration) -> Duration {
        self.parsed(key, v, default, |text| {
            let duration = humantime::parse_duration(text)
                .map_err(|err| format!("not a duration like \"5s\" or \"250ms\" ({err})"))?;
            if duration.is_zero() {
                return Err("must be longer than zero".into());
            }
            Ok(duration)
        })
    }

    fn addr(&mut self, key: &str, v: Option<Lenient<String>>, default: SocketAddr) -> SocketAddr {
        self.parsed(key, v, default, |text| {
            text.parse()
                .map_err(|_| "not an IP address and port like \"127.0.0.1:9550\"".into())
        })
    }

    fn abs_path(&mut self, key: &str, v: Option<Lenient<String>>, default: PathBuf) -> PathBuf {
        self.parsed(key, v, default, |text| {
            let path = PathBuf::from(text);
            if path.is_absolute() {
                Ok(path)
            } else {
                Err("must be an absolute path".into())
            }
        })
    }

    fn log_filter(&mut self, key: &str, v: Option<Lenient<String>>, default: String) -> String {
        self.parsed(key, v, default, |text| {
            tracing_subscriber::EnvFilter::builder()
                .parse(text)
                .map(|_| text.to_owned())
                .map_err(|err| err.to_string())
        })
    }

    fn count(&mut self, key: &str, v: Option<Lenient<i64>>, default: usize) -> usize {
        let value = self.value(key, v, default as i64);
        match usize::try_from(value) {
            Ok(n) if (1..=1024).contains(&n) => n,
            _ => {
                self.problems
                    .push(format!("`{key}` = {value}: must be between 1 and 1024"));
                default
            }
        }
    }
}

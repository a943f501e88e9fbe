//! Reading file values leniently and collecting every problem found.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration a key takes: far beyond any sensible period, far below an overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Collects problems while reading values, substituting the default for a bad one.
#[derive(Default)]
pub struct Checker {
    pub problems: Vec<String>,
}

impl Checker {
    pub fn value<T>(&mut self, key: &str, value: Option<Lenient<T>>, default: T) -> T {
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
    pub fn parsed<T>(
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

    pub fn duration(
        &mut self,
        key: &str,
        v: Option<Lenient<String>>,
        default: Duration,
    ) -> Duration {
        self.parsed(key, v, default, |text| {
            let duration = humantime::parse_duration(text)
                .map_err(|err| format!("not a duration like \"5s\" or \"250ms\" ({err})"))?;
            if duration.is_zero() {
                return Err("must be longer than zero".into());
            }
            // humantime reads up to u64::MAX seconds, but a tokio interval adds its period to
            // the clock at the first tick and panics when that overflows.
            if duration > MAX_DURATION {
                return Err("must be at most 10 years".into());
            }
            Ok(duration)
        })
    }

    pub fn addr(
        &mut self,
        key: &str,
        v: Option<Lenient<String>>,
        default: SocketAddr,
    ) -> SocketAddr {
        self.parsed(key, v, default, |text| {
            text.parse()
                .map_err(|_| "not an IP address and port like \"127.0.0.1:9550\"".into())
        })
    }

    pub fn abs_path(&mut self, key: &str, v: Option<Lenient<String>>, default: PathBuf) -> PathBuf {
        self.parsed(key, v, default, |text| {
            let path = PathBuf::from(text);
            if path.is_absolute() {
                Ok(path)
            } else {
                Err("must be an absolute path".into())
            }
        })
    }

    /// An optional absolute path; empty means none.
    pub fn opt_abs_path(&mut self, key: &str, v: Option<Lenient<String>>) -> Option<PathBuf> {
        match v {
            Some(Lenient(Ok(text))) if text.is_empty() => None,
            v => Some(self.abs_path(key, v, PathBuf::new())).filter(|p| p.is_absolute()),
        }
    }

    pub fn log_filter(&mut self, key: &str, v: Option<Lenient<String>>, default: String) -> String {
        self.parsed(key, v, default, |text| {
            tracing_subscriber::EnvFilter::builder()
                .parse(text)
                .map(|_| text.to_owned())
                .map_err(|err| err.to_string())
        })
    }

    pub fn count(&mut self, key: &str, v: Option<Lenient<i64>>, default: usize) -> usize {
        self.count_up_to(key, v, default, 1024)
    }

    pub fn count_up_to(
        &mut self,
        key: &str,
        v: Option<Lenient<i64>>,
        default: usize,
        max: usize,
    ) -> usize {
        let value = self.value(key, v, default as i64);
        match usize::try_from(value) {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                self.problems
                    .push(format!("`{key}` = {value}: must be between 1 and {max}"));
                default
            }
        }
    }
}

/// A leaf value that never fails deserialization: a wrong type is kept as a message, so that
/// serde goes on and every other problem in the file is found too.
#[derive(Debug)]
pub struct Lenient<T>(pub Result<T, String>);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(deserializer)?;
        Ok(Self(
            T::deserialize(value).map_err(|err| err.message().to_owned()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::config::{Config, Overrides};

    /// The reproducer of fuzz/regressions/config_toml/ (docs/fuzzing.md): such a file loaded,
    /// and a tokio interval of that period panics at its first tick (`overflow when adding
    /// duration to instant`), e.g. the health task's.
    #[test]
    fn durations_that_overflow_the_clock_are_refused() {
        // 300,000,000,000 humantime years (365.25 days): past the monotonic clock's i64 seconds.
        let years = std::time::Duration::from_secs(300_000_000_000 * 31_557_600);
        assert!(Instant::now().checked_add(years).is_none());
        let huge = "[health]\ninterval = \"300000000000y\"\n";
        let err = Config::from_toml(huge, &Overrides::default()).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.problems[0].contains("`health.interval`"), "{err}");
        assert!(err.problems[0].contains("at most 10 years"), "{err}");

        let longest = "[remediation]\ncooldown = \"3650d\"\n";
        let config = Config::from_toml(longest, &Overrides::default()).unwrap();
        let cooldown = config.remediation.cooldown;
        assert!(Instant::now().checked_add(cooldown * 2).is_some());
    }
}

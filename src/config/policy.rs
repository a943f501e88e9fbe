//! `[tunnels.policy]`: where tunnel configs may send traffic beyond the default policy of
//! [`crate::domain::config_policy`].

use serde::Deserialize;

use super::check::{Checker, Lenient};
use crate::domain::config_policy::{AllowedTarget, TargetPolicy};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FilePolicy {
    allow_targets: Option<Lenient<Vec<String>>>,
}

impl FilePolicy {
    pub fn validate(self, c: &mut Checker) -> TargetPolicy {
        let key = "tunnels.policy.allow_targets";
        let allow = c
            .value(key, self.allow_targets, Vec::new())
            .into_iter()
            .filter_map(|entry| {
                AllowedTarget::parse(&entry)
                    .map_err(|err| c.problems.push(format!("`{key}` entry {entry:?}: {err}")))
                    .ok()
            })
            .collect();
        TargetPolicy { allow }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Overrides};
    use crate::domain::config_policy::{AllowedTarget, TargetPolicy};

    fn load(text: &str) -> Result<Config, Vec<String>> {
        Config::from_toml(text, &Overrides::default()).map_err(|e| e.problems)
    }

    #[test]
    fn allow_targets_are_read_and_checked() {
        let config =
            load("[tunnels.policy]\nallow_targets = [\"127.0.0.1:8080\", \"/dev/shm/h1.sock\"]\n")
                .unwrap();
        let expected = ["127.0.0.1:8080", "/dev/shm/h1.sock"]
            .map(|t| AllowedTarget::parse(t).unwrap())
            .to_vec();
        assert_eq!(config.tunnels.policy, TargetPolicy { allow: expected });
        assert_eq!(load("").unwrap().tunnels.policy, TargetPolicy::default());

        let problems = load(
            "[tunnels]\nstart_settle = \"0s\"\n\
             [tunnels.policy]\nallow_targets = [\"127.0.0.1:0\", \"\", \"ok:1\"]\nextra = 1\n",
        )
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("tunnels.policy.extra"), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"127.0.0.1:0\"")));
        assert!(problems.iter().any(|p| p.contains("tunnels.start_settle")));
        let wrong_type = load("[tunnels.policy]\nallow_targets = \"127.0.0.1\"\n").unwrap_err();
        assert!(wrong_type[0].contains("allow_targets"), "{wrong_type:?}");
    }
}

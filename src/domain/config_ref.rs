//! Which config file a core runs, read from its command line (a unit's ExecStart, a process's
//! argv) — or why that cannot be known.
//!
//! Only a path the warden can trust is [`ConfigRef::Known`]: exactly one `-config`, absolute,
//! lexically clean and inside `tunnels.config_dir` (the directory the warden manages and sees
//! with its own eyes). Everything else is [`ConfigRef::Unknown`], and an unknown config is never
//! taken as missing: a relative path resolves against a working directory the warden does not
//! know, `-confdir` reads files the warden does not list, a path outside the config dir may be
//! hidden from the warden's own sandbox (ProtectHome=, PrivateTmp=), and a unit systemd has
//! unloaded shows an empty ExecStart.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The config a command line runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigRef {
    /// One config file inside the config dir, normalised (no `.`, no repeated `/`).
    Known(PathBuf),
    Unknown(UnknownReason),
}

/// Why a command line's config is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnknownReason {
    /// No command at all: a unit systemd has not loaded (or unloaded) has an empty ExecStart.
    NoCommand,
    /// No `-config`/`--config`/`-c`: the core falls back to paths of its own.
    NoConfigFlag,
    /// A `-config` without a value.
    MissingValue,
    /// `-confdir` (or V2Ray 5's `-d`/`--config-directory`): the core reads a whole directory.
    ConfigDir,
    /// More than one `-config`: the core merges them.
    Several,
    /// A path that is not absolute (also `stdin:` and URLs).
    Relative,
    /// An absolute path with a `..` component.
    NotClean,
    /// An absolute path outside `tunnels.config_dir`.
    OutsideConfigDir,
}

impl UnknownReason {
    /// Every reason, in `reason` label order.
    pub const ALL: [UnknownReason; 8] = [
        Self::NoCommand,
        Self::NoConfigFlag,
        Self::MissingValue,
        Self::ConfigDir,
        Self::Several,
        Self::Relative,
        Self::NotClean,
        Self::OutsideConfigDir,
    ];

    /// The stable `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCommand => "no_command",
            Self::NoConfigFlag => "no_config_flag",
            Self::MissingValue => "missing_value",
            Self::ConfigDir => "confdir",
            Self::Several => "several_configs",
            Self::Relative => "relative_path",
            Self::NotClean => "not_clean",
            Self::OutsideConfigDir => "outside_config_dir",
        }
    }
}

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoCommand => "no ExecStart (the unit is not loaded)",
            Self::NoConfigFlag => "no -config on the command line",
            Self::MissingValue => "-config without a value",
            Self::ConfigDir => "runs a config directory (-confdir)",
            Self::Several => "several -config files",
            Self::Relative => "a relative config path",
            Self::NotClean => "a config path with '..'",
            Self::OutsideConfigDir => "a config outside tunnels.config_dir",
        })
    }
}

/// A tunnel whose config is unknown, as the health pass reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownConfig {
    pub tunnel: super::TunnelId,
    pub reason: UnknownReason,
}

/// Flag names, without their leading dashes (Go's flag package takes `-x` and `--x` alike).
const CONFIG_FLAGS: [&str; 2] = ["config", "c"];
const CONFIG_DIR_FLAGS: [&str; 3] = ["confdir", "config-directory", "d"];

impl ConfigRef {
    /// The config `argv` (program first, as in ExecStart) runs, judged against `config_dir`.
    /// Understands `-config F`, `--config F`, `-c F` and their `=F` forms; `-confdir` anywhere
    /// makes it unknown. Scanning stops at `--`, where Go's flag parsing stops.
    pub fn parse(argv: &[String], config_dir: &Path) -> ConfigRef {
        let Some((_program, args)) = argv.split_first() else {
            return ConfigRef::Unknown(UnknownReason::NoCommand);
        };
        let mut configs: Vec<Option<&str>> = Vec::new();
        let mut confdir = false;
        let mut args = args.iter().map(String::as_str);
        while let Some(arg) = args.next() {
            if arg == "--" {
                break;
            }
            let Some((name, inline)) = flag(arg) else {
                continue;
            };
            if CONFIG_FLAGS.contains(&name) {
                let value = match inline {
                    Some(v) => Some(v).filter(|v| !v.is_empty()),
                    None => args.next(),
                };
                configs.push(value);
            } else if CONFIG_DIR_FLAGS.contains(&name) {
                confdir = true;
            }
        }
        let reason = match configs.as_slice() {
            _ if confdir => UnknownReason::ConfigDir,
            [] => UnknownReason::NoConfigFlag,
            [_, _, ..] => UnknownReason::Several,
            [None] => UnknownReason::MissingValue,
            [Some(path)] => return Self::judge(Path::new(path), config_dir),
        };
        ConfigRef::Unknown(reason)
    }

    /// `Known` when `path` is absolute, has no `..` and lies inside `config_dir` (itself
    /// absolute and clean; otherwise nothing is inside it).
    fn judge(path: &Path, config_dir: &Path) -> ConfigRef {
        if !path.is_absolute() {
            return ConfigRef::Unknown(UnknownReason::Relative);
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return ConfigRef::Unknown(UnknownReason::NotClean);
        }
        let dir_clean =
            config_dir.is_absolute() && !config_dir.components().any(|c| c == Component::ParentDir);
        let normal: PathBuf = path.components().collect();
        if !dir_clean || !normal.starts_with(config_dir) || normal == config_dir {
            return ConfigRef::Unknown(UnknownReason::OutsideConfigDir);
        }
        ConfigRef::Known(normal)
    }

    /// The path, when known.
    pub fn known(&self) -> Option<&Path> {
        match self {
            ConfigRef::Known(path) => Some(path),
            ConfigRef::Unknown(_) => None,
        }
    }
}

/// `(name, inline value)` of a flag argument (`-name`, `--name`, `-name=value`); `None` for
/// positional arguments (a subcommand such as `run`, a value of another flag).
fn flag(arg: &str) -> Option<(&str, Option<&str>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if body.is_empty() || body.starts_with('-') {
        return None;
    }
    Some(match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/etc/t";

    fn parse(args: &[&str]) -> ConfigRef {
        let argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        ConfigRef::parse(&argv, Path::new(DIR))
    }

    fn known(path: &str) -> ConfigRef {
        ConfigRef::Known(path.into())
    }

    fn unknown(reason: UnknownReason) -> ConfigRef {
        ConfigRef::Unknown(reason)
    }

    #[test]
    fn every_spelling_of_one_config_inside_the_dir_is_known() {
        let expected = known("/etc/t/xray-a.json");
        for args in [
            &["/usr/bin/xray", "run", "-config", "/etc/t/xray-a.json"][..],
            &["/usr/bin/xray", "run", "--config", "/etc/t/xray-a.json"],
            &["/usr/bin/xray", "run", "-c", "/etc/t/xray-a.json"],
            &["/usr/bin/xray", "run", "-c=/etc/t/xray-a.json"],
            &["/usr/bin/v2ray", "--config=/etc/t/xray-a.json"],
            &[
                "/usr/bin/v2ray",
                "-format",
                "json",
                "-config",
                "/etc/t//./xray-a.json",
            ],
        ] {
            assert_eq!(parse(args), expected, "{args:?}");
        }
        assert_eq!(
            parse(&["/usr/bin/xray", "-c", "/etc/t/sub/custom.json"]),
            known("/etc/t/sub/custom.json"),
            "subdirectories are inside too"
        );
    }

    #[test]
    fn anything_else_is_unknown_and_says_why() {
        use UnknownReason::*;
        let cases: [(&[&str], UnknownReason); 14] = [
            (&[], NoCommand),
            (&["/usr/bin/xray", "run"], NoConfigFlag),
            (&["/usr/bin/xray", "api", "statsquery"], NoConfigFlag),
            (&["/usr/bin/xray", "run", "-config"], MissingValue),
            (&["/usr/bin/xray", "run", "-config="], MissingValue),
            (&["/usr/bin/xray", "run", "-confdir", "/etc/t"], ConfigDir),
            (
                &[
                    "/usr/bin/xray",
                    "-c",
                    "/etc/t/xray-a.json",
                    "--confdir=/etc/t/d",
                ],
                ConfigDir,
            ),
            (&["/usr/bin/v2ray", "run", "-d", "/etc/t"], ConfigDir),
            (
                &["/x", "-c", "/etc/t/a.json", "-c", "/etc/t/b.json"],
                Several,
            ),
            (&["/x", "-config", "xray-a.json"], Relative),
            (&["/x", "-config", "stdin:"], Relative),
            (&["/x", "-config", "/etc/t/../shadow.json"], NotClean),
            (&["/x", "-config", "/root/xray-a.json"], OutsideConfigDir),
            (
                &["/x", "-config", "/etc/tunnels/xray-a.json"],
                OutsideConfigDir,
            ),
        ];
        for (args, reason) in cases {
            assert_eq!(parse(args), unknown(reason), "{args:?}");
        }
        assert_eq!(
            parse(&["/x", "-config", "/etc/t"]),
            unknown(OutsideConfigDir)
        );
        assert_eq!(
            parse(&["/x", "--", "-config", "/etc/t/xray-a.json"]),
            unknown(NoConfigFlag),
            "after -- nothing is a flag"
        );
    }

    #[test]
    fn nothing_is_inside_a_relative_or_unclean_config_dir() {
        let argv: Vec<String> = ["/x", "-c", "/etc/t/xray-a.json"]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        for dir in ["etc/t", "/etc/x/../t", ""] {
            assert_eq!(
                ConfigRef::parse(&argv, Path::new(dir)),
                unknown(UnknownReason::OutsideConfigDir),
                "{dir:?}"
            );
        }
    }

    #[test]
    fn reasons_have_distinct_labels() {
        let mut labels: Vec<&str> = UnknownReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), UnknownReason::ALL.len());
        assert_eq!(
            UnknownReason::ConfigDir.to_string(),
            "runs a config directory (-confdir)"
        );
    }
}

//! The monitoring stack of the loop proofs and of the demo (examples/demo_stack.rs), derived MECHANICALLY from the files the repository
//! ships: the rules of `alerts/*.yml` with every duration divided by [`SPEEDUP`], and the configs
//! of Prometheus and Alertmanager from `deploy/prometheus.example.yml` and
//! `deploy/alertmanager.example.yml` with their hosts, ports and paths replaced by the test's
//! loopback ones and their timings shortened. Nothing here is a hand-kept copy: a change to a
//! shipped file reaches the test, and a shape the derivation does not expect fails it loudly.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

// `super` is tests/support/prom.rs in the tests and the crate root in examples/demo_stack.rs,
// which both declare `mod speedup` beside this module.
use super::speedup::{FastRules, format_duration, parse_duration, replace_key, speed_up_rules};

/// Every duration of the shipped rules is divided by this: `for: 5m` becomes `for: 10s`.
pub const SPEEDUP: u64 = 30;
/// Scrape and evaluation interval of the test's Prometheus.
pub const INTERVAL: &str = "1s";
/// Alertmanager's `group_wait` and `group_interval` in the fast variant.
pub const FAST_GROUP_WAIT: &str = "1s";
pub const FAST_GROUP_INTERVAL: &str = "2s";

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Where the example puts the rule files, relative to prometheus.yml (its `rule_files` glob).
const RULES_DIR: &str = "xray-warden";
const PROMETHEUS_EXAMPLE: &str = "deploy/prometheus.example.yml";
const ALERTMANAGER_EXAMPLE: &str = "deploy/alertmanager.example.yml";

/// The shipped rule files: every `*.yml` directly in alerts/ (alerts/tests holds promtool
/// tests, not rules), as (file name, text).
pub fn shipped_rules() -> Vec<(String, String)> {
    let dir = Path::new(REPO).join("alerts");
    let mut files: Vec<(String, String)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yml") || name.ends_with(".yaml"))
        .map(|name| {
            let text = fs::read_to_string(dir.join(&name)).unwrap();
            (name, text)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule files in {}", dir.display());
    files
}

/// The fast variant of every shipped rule file, keyed by file name.
pub fn fast_rules() -> BTreeMap<String, FastRules> {
    shipped_rules()
        .into_iter()
        .map(|(name, text)| {
            let fast = speed_up_rules(&text, SPEEDUP);
            // Every `for:` of the file must have been rewritten.
            let fors = text
                .lines()
                .filter(|l| l.trim_start().starts_with("for:"))
                .count();
            assert!(
                fast.keys >= fors,
                "{name}: {} of {fors} for: rewritten",
                fast.keys
            );
            (name, fast)
        })
        .collect()
}

/// Writes the fast rules where the example's `rule_files` glob finds them, next to
/// prometheus.yml in `dir`; returns their paths relative to `dir`.
pub fn write_fast_rules(dir: &Path) -> Vec<String> {
    let rules = dir.join(RULES_DIR);
    fs::create_dir_all(&rules).unwrap();
    fast_rules()
        .into_iter()
        .map(|(name, fast)| {
            fs::write(rules.join(&name), fast.text).unwrap();
            format!("{RULES_DIR}/{name}")
        })
        .collect()
}

/// One `targets: [...]` entry of the example Prometheus config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleTarget {
    /// The top-level key it is under: `alerting` or `scrape_configs`.
    pub section: String,
    /// Its `host:port`.
    pub target: String,
    /// The `node` label the entry gives it (scrape targets), else empty.
    pub node: String,
}

/// Every `targets:` entry of deploy/prometheus.example.yml, in order. Each holds one address.
pub fn example_targets() -> Vec<ExampleTarget> {
    let text = read(PROMETHEUS_EXAMPLE);
    let lines: Vec<&str> = text.lines().collect();
    let mut section = String::new();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with([' ', '-', '#']) && line.ends_with(':') {
            section = line.trim_end_matches(':').to_owned();
        }
        let Some(list) = list_of_targets(line) else {
            continue;
        };
        assert!(!list.contains(','), "one address per entry: {line}");
        // A scrape entry's `labels:` and `node: x` follow it.
        let node = lines[i + 1..]
            .iter()
            .take(2)
            .find_map(|l| l.trim().strip_prefix("node:"))
            .map(|n| n.trim().to_owned());
        found.push(ExampleTarget {
            section: section.clone(),
            target: list.to_owned(),
            node: node.unwrap_or_default(),
        });
    }
    found
}

/// The address of a line `- targets: ["host:port"]`.
fn list_of_targets(line: &str) -> Option<&str> {
    let item = line.trim_start().trim_start_matches("- ");
    let list = item.strip_prefix("targets:")?.trim();
    Some(list.trim_matches(['[', ']']).trim_matches('"'))
}

/// deploy/prometheus.example.yml for the test: scrape and evaluation intervals [`INTERVAL`],
/// and every target replaced by `addrs[its example address]` (the Alertmanager and the
/// wardens). Its `rule_files` glob, job, labels and relabelling stay as shipped. Panics if an
/// address has no replacement or a key the derivation needs is missing.
pub fn prometheus_config(addrs: &BTreeMap<String, SocketAddr>) -> String {
    prometheus_config_from(read(PROMETHEUS_EXAMPLE), addrs)
}

/// [`prometheus_config`] for a stack that plays only some of the example's nodes: the
/// `targets:` entries (with their labels) that `addrs` has no address for are left out.
pub fn prometheus_config_for(addrs: &BTreeMap<String, SocketAddr>) -> String {
    let text = drop_list_items(&read(PROMETHEUS_EXAMPLE), |item| {
        list_of_targets(item).is_some_and(|old| !addrs.contains_key(old))
    });
    prometheus_config_from(text, addrs)
}

fn prometheus_config_from(mut text: String, addrs: &BTreeMap<String, SocketAddr>) -> String {
    for key in ["scrape_interval", "evaluation_interval", "scrape_timeout"] {
        let (t, n) = replace_key(&text, key, |_| INTERVAL.to_owned());
        assert!(n > 0, "{PROMETHEUS_EXAMPLE} has no {key}");
        text = t;
    }
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match list_of_targets(line) {
            Some(old) => {
                let addr = addrs
                    .get(old)
                    .unwrap_or_else(|| panic!("no replacement for the example's target {old}"));
                out.push_str(&line.replacen(old, &addr.to_string(), 1));
            }
            None => out.push_str(line),
        }
    }
    assert!(
        out.contains(RULES_DIR),
        "{PROMETHEUS_EXAMPLE} loads no {RULES_DIR}/ rules"
    );
    out
}

fn read(path: &str) -> String {
    let full = PathBuf::from(REPO).join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The shipped `group_wait`s of the example's routes, for the figures.
pub fn shipped_group_waits() -> Vec<String> {
    let mut waits = Vec::new();
    replace_key(&read(ALERTMANAGER_EXAMPLE), "group_wait", |old| {
        waits.push(old.to_owned());
        old.to_owned()
    });
    waits
}

/// deploy/alertmanager.example.yml for the test: every webhook `url`'s `scheme://host:port`
/// replaced by `urls[host:port]` (the path kept), every `credentials_file` by `token_file`, and
/// with `fast`, `group_wait`/`group_interval` shortened. Panics on a URL without replacement.
pub fn alertmanager_config(
    urls: &BTreeMap<String, SocketAddr>,
    token_file: &Path,
    fast: bool,
) -> String {
    let text = read(ALERTMANAGER_EXAMPLE);
    let config = alertmanager_config_from(&text, urls, token_file, fast);
    let (_, n) = replace_key(&text, "url", |old| old.to_owned());
    assert_eq!(n, urls.len(), "URLs of {ALERTMANAGER_EXAMPLE}");
    config
}

/// [`alertmanager_config`] for a stack that plays only some of the example's receivers: the
/// webhooks (`- url:` entries with their settings) whose `host:port` `urls` has no address for
/// are left out, so a receiver may end up with none (Alertmanager then only shows its alerts).
pub fn alertmanager_config_for(
    urls: &BTreeMap<String, SocketAddr>,
    token_file: &Path,
    fast: bool,
) -> String {
    let text = drop_list_items(&read(ALERTMANAGER_EXAMPLE), |item| {
        let url = item.strip_prefix("url:").map(str::trim);
        url.is_some_and(|u| !urls.contains_key(&authority(u)))
    });
    alertmanager_config_from(&text, urls, token_file, fast)
}

fn alertmanager_config_from(
    text: &str,
    urls: &BTreeMap<String, SocketAddr>,
    token_file: &Path,
    fast: bool,
) -> String {
    let (text, _) = replace_key(text, "url", |old| {
        let rest = old
            .strip_prefix("http://")
            .expect("http:// URLs in the example");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr = urls
            .get(authority)
            .unwrap_or_else(|| panic!("no replacement for the example's URL {old}"));
        format!("http://{addr}{path}")
    });
    let (mut text, n) = replace_key(&text, "credentials_file", |_| {
        token_file.display().to_string()
    });
    assert!(n > 0, "{ALERTMANAGER_EXAMPLE} sends no bearer token");
    if fast {
        for (key, value) in [
            ("group_wait", FAST_GROUP_WAIT),
            ("group_interval", FAST_GROUP_INTERVAL),
        ] {
            let (t, n) = replace_key(&text, key, |old| {
                assert!(parse_duration(old).is_some(), "{key}: {old}");
                value.to_owned()
            });
            assert!(n > 0, "{ALERTMANAGER_EXAMPLE} has no {key}");
            text = t;
        }
    }
    text
}

/// The `host:port` of every webhook URL of the example, in order.
pub fn example_webhook_authorities() -> Vec<String> {
    let mut found = Vec::new();
    replace_key(&read(ALERTMANAGER_EXAMPLE), "url", |old| {
        found.push(authority(old));
        old.to_owned()
    });
    found
}

/// The `host:port` of a URL `scheme://host:port/path`.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or_default().to_owned()
}

/// `yaml` without the list items whose text after `- ` satisfies `drop`: the item's line and
/// every following line indented deeper than its dash (the item's own keys and comments).
pub fn drop_list_items(yaml: &str, drop: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(yaml.len());
    let mut dropping: Option<usize> = None;
    for line in yaml.split_inclusive('\n') {
        let indent = line.len() - line.trim_start().len();
        if let Some(dash) = dropping {
            if indent > dash && !line.trim().is_empty() {
                continue;
            }
            dropping = None;
        }
        match line.trim_start().strip_prefix("- ") {
            Some(item) if drop(item.trim_end()) => dropping = Some(indent),
            _ => out.push_str(line),
        }
    }
    out
}

/// A duration of the shipped files, e.g. the example's `group_wait: 10s`, in the fast variant.
pub fn fast(duration: &str) -> String {
    let ms = parse_duration(duration).unwrap_or_else(|| panic!("{duration} is no duration"));
    format_duration(ms / SPEEDUP)
}

/// The lines of the rule `- alert: NAME` in a rule file, up to the next rule.
pub fn alert_block(text: &str, name: &str) -> String {
    let start = text
        .find(&format!("- alert: {name}\n"))
        .unwrap_or_else(|| panic!("no alert {name}"));
    let rest = &text[start + 1..];
    let end = rest
        .find("- alert:")
        .or_else(|| rest.find("- record:"))
        .unwrap_or(rest.len());
    text[start..start + 1 + end].to_owned()
}

/// The `for:` value of a rule's lines.
pub fn for_of(block: &str) -> String {
    block
        .lines()
        .find_map(|l| l.trim().strip_prefix("for:"))
        .unwrap_or_else(|| panic!("no for: in {block}"))
        .trim()
        .to_owned()
}

/// The fast variant's `for:` of the action alert, XrayTunnelOrphaned.
pub fn action_alert_for() -> Duration {
    let rules = &fast_rules()["orphans.rules.yml"].text;
    let ms = parse_duration(&for_of(&alert_block(rules, "XrayTunnelOrphaned"))).unwrap();
    Duration::from_millis(ms)
}

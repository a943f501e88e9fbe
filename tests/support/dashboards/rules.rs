//! What the dashboards are checked against: the metrics of docs/metrics.md and the rules of
//! alerts/ (recording rules, threshold series, and which metric each alert compares with which
//! threshold), read from the files themselves.

use super::{promql, repo};
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

/// The names a query may read: every metric of docs/metrics.md (a histogram's _bucket, _sum and
/// _count series), every recording rule of alerts/, and Prometheus' own `up`.
pub fn known_metrics() -> BTreeSet<String> {
    let doc = fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let mut names = BTreeSet::from(["up".to_owned()]);
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        if cells.get(2) == Some(&"histogram") {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name);
    }
    names.extend(recording_rules(None));
    names
}

fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo().join("alerts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .collect();
    files.sort();
    files
}

/// `record:` names of every rule file, or of the one named.
pub fn recording_rules(only: Option<&str>) -> BTreeSet<String> {
    let files = rule_files();
    let files = files.iter().filter(|f| only.is_none_or(|o| f.ends_with(o)));
    files
        .flat_map(|f| {
            fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| {
            l.trim()
                .strip_prefix("- record:")
                .map(|n| n.trim().to_owned())
        })
        .collect()
}

/// The threshold series of alerts/settings.rules.yml.
pub fn threshold_series() -> BTreeSet<String> {
    recording_rules(Some("settings.rules.yml"))
        .into_iter()
        .filter(|n| n.starts_with("xray_warden:threshold_"))
        .collect()
}

/// Every alert expression of alerts/ (`expr:` inline or as a `|` block).
pub fn alert_exprs() -> Vec<String> {
    let mut out = Vec::new();
    for f in rule_files() {
        let text = fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.trim().strip_prefix("expr:") else {
                continue;
            };
            if rest.trim() != "|" {
                out.push(rest.trim().to_owned());
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            out.push(block.join(" "));
        }
    }
    out
}

/// (metric, threshold) for every alert that compares `metric` with a threshold series: the
/// metrics on the compared side of `... > on () group_left () xray_warden:threshold_...:const`.
pub fn thresholded_metrics() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for expr in alert_exprs() {
        for threshold in threshold_series() {
            let Some(at) = expr.find(&threshold) else {
                continue;
            };
            let before = &expr[..at];
            let cut = [" and ", " unless "]
                .iter()
                .filter_map(|k| before.rfind(k))
                .max();
            let side = &before[cut.unwrap_or(0)..];
            for name in promql::metric_names(side).unwrap_or_default() {
                out.insert((name, threshold.clone()));
            }
        }
    }
    out
}

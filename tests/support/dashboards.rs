//! The Grafana dashboards of dashboards/: a model shared by the static checks (tests/dashboards.rs)
//! and the live check against a Prometheus that scraped the demo ([`assert_every_panel_returns_data`]).
//!
//! Every check returns the problems it found (empty = fine), so that a test can prove each one
//! fails on a mutated copy of a dashboard.

pub mod lint;
pub mod live;
pub mod promql;
pub mod rules;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

pub use live::assert_every_panel_returns_data;
pub use rules::{known_metrics, recording_rules, threshold_series, thresholded_metrics};

/// The marker of a panel that shows nothing on a healthy node: its description starts with it.
pub const EMPTY_BY_DESIGN: &str = "Empty by design when ";

/// The one datasource every panel, target and variable query must name.
pub const DATASOURCE_UID: &str = "${datasource}";

/// Grafana's global variables a query or text may use.
const BUILT_INS: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
    "__name",
    "__org",
    "__user",
    "__timeFilter",
    "timeFilter",
    "__all",
    "__series",
    "__field",
    "__value",
    "__data",
    "__cell",
];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub file: String,
    pub json: Value,
}

/// One panel, rows and the panels nested in collapsed rows included.
#[derive(Debug, Clone)]
pub struct Panel<'a> {
    pub json: &'a Value,
}

/// One query of a panel.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub panel: Panel<'a>,
    pub idx: usize,
    pub json: &'a Value,
}

impl Dashboard {
    pub fn parse(file: &str, text: &str) -> Result<Dashboard, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        if !json.is_object() || !json["panels"].is_array() {
            return Err(format!("{file}: not a dashboard (no panels array)"));
        }
        Ok(Dashboard {
            file: file.to_owned(),
            json,
        })
    }

    pub fn title(&self) -> &str {
        self.json["title"].as_str().unwrap_or("")
    }

    pub fn panels(&self) -> Vec<Panel<'_>> {
        fn walk<'a>(list: &'a Value, out: &mut Vec<Panel<'a>>) {
            for p in list.as_array().into_iter().flatten() {
                out.push(Panel { json: p });
                walk(&p["panels"], out);
            }
        }
        let mut out = Vec::new();
        walk(&self.json["panels"], &mut out);
        out
    }

    /// Panels that query (every panel but rows).
    pub fn query_panels(&self) -> Vec<Panel<'_>> {
        self.panels()
            .into_iter()
            .filter(|p| p.kind() != "row")
            .collect()
    }

    pub fn targets(&self) -> Vec<Target<'_>> {
        let mut out = Vec::new();
        for panel in self.query_panels() {
            for (idx, json) in panel.json["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                out.push(Target {
                    panel: panel.clone(),
                    idx,
                    json,
                });
            }
        }
        out
    }

    pub fn variables(&self) -> Vec<&Value> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .collect()
    }

    pub fn variable(&self, name: &str) -> Option<&Value> {
        self.variables().into_iter().find(|v| v["name"] == name)
    }
}

impl<'a> Panel<'a> {
    pub fn title(&self) -> &'a str {
        self.json["title"].as_str().unwrap_or("")
    }
    pub fn kind(&self) -> &'a str {
        self.json["type"].as_str().unwrap_or("")
    }
    pub fn description(&self) -> &'a str {
        self.json["description"].as_str().unwrap_or("")
    }
    pub fn empty_by_design(&self) -> bool {
        self.description().starts_with(EMPTY_BY_DESIGN)
    }
}

impl<'a> Target<'a> {
    pub fn expr(&self) -> &'a str {
        self.json["expr"].as_str().unwrap_or("")
    }
}

/// The text of a variable's query (Grafana writes it as a string or as `{query: ...}`).
pub fn variable_query(v: &Value) -> &str {
    v["query"]["query"]
        .as_str()
        .or(v["query"].as_str())
        .unwrap_or("")
}

/// Every dashboard of dashboards/.
pub fn load_all() -> Vec<Dashboard> {
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            Dashboard::parse(&name, &fs::read_to_string(p).unwrap())
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

/// Panel ids that appear more than once (nested row panels included), or panels without an id.
pub fn check_panel_ids(d: &Dashboard) -> Vec<String> {
    let mut seen = BTreeMap::new();
    let mut problems = Vec::new();
    for p in d.panels() {
        match p.json["id"].as_u64() {
            None => problems.push(format!("{}: panel '{}' has no id", d.file, p.title())),
            Some(id) => {
                if let Some(first) = seen.insert(id, p.title()) {
                    problems.push(format!(
                        "{}: id {id} of '{}' is also '{first}'",
                        d.file,
                        p.title()
                    ));
                }
            }
        }
    }
    problems
}

/// Every string of the dashboard, with a path for messages.
fn strings<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| strings(x, format!("{path}[{i}]"), out)),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| strings(x, format!("{path}.{k}"), out)),
        _ => {}
    }
}

/// `$var`/`${var}`/`[[var]]` references anywhere that name neither a variable of the dashboard
/// nor a Grafana built-in.
pub fn check_variables(d: &Dashboard) -> Vec<String> {
    let defined: BTreeSet<&str> = d
        .variables()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mut all = Vec::new();
    strings(&d.json, String::new(), &mut all);
    let mut problems = Vec::new();
    for (path, text) in all {
        for name in promql::variable_refs(text) {
            if !defined.contains(name.as_str()) && !BUILT_INS.contains(&name.as_str()) {
                problems.push(format!(
                    "{}{path}: ${name} is not a variable of the dashboard",
                    d.file
                ));
            }
        }
    }
    problems
}

/// Every `datasource` anywhere must be the `datasource` variable (a Prometheus one), which must
/// exist as a variable of type datasource.
pub fn check_datasources(d: &Dashboard) -> Vec<String> {
    let mut problems = Vec::new();
    match d.variable("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => problems.push(format!(
            "{}: no variable `datasource` of type datasource, query prometheus",
            d.file
        )),
    }
    fn walk(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| walk(x, format!("{path}[{i}]"), out)),
            Value::Object(o) => {
                for (k, x) in o {
                    if k == "datasource" {
                        out.push((format!("{path}.{k}"), x.clone()));
                    }
                    walk(x, format!("{path}.{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(&d.json, String::new(), &mut refs);
    for (path, ds) in refs {
        if ds["uid"] != DATASOURCE_UID || ds["type"] != "prometheus" {
            problems.push(format!(
                "{}{path}: {ds} is not {{type: prometheus, uid: {DATASOURCE_UID}}}",
                d.file
            ));
        }
    }
    for p in d.query_panels() {
        if p.json["datasource"].is_null() {
            problems.push(format!(
                "{}: panel '{}' names no datasource",
                d.file,
                p.title()
            ));
        }
        for t in p.json["targets"].as_array().into_iter().flatten() {
            if t["datasource"].is_null() {
                problems.push(format!(
                    "{}: a target of '{}' names no datasource",
                    d.file,
                    p.title()
                ));
            }
        }
    }
    problems
}

/// Names in queries (targets and variables) that are not metrics, and unknown functions.
pub fn check_metrics(d: &Dashboard, known: &BTreeSet<String>) -> Vec<String> {
    let mut queries: Vec<(String, String)> = d
        .targets()
        .iter()
        .map(|t| (format!("panel '{}'", t.panel.title()), t.expr().to_owned()))
        .collect();
    for v in d.variables().into_iter().filter(|v| v["type"] == "query") {
        let q = variable_query(v);
        let inner = q
            .split_once('(')
            .map_or(q, |(_, r)| r.trim_end_matches(')'));
        let inner = inner.rsplit_once(',').map_or(inner, |(m, _)| m);
        queries.push((format!("variable {}", v["name"]), inner.to_owned()));
    }
    let mut problems = Vec::new();
    for (place, expr) in queries {
        match promql::metric_names(&expr) {
            Err(e) => problems.push(format!("{}: {place}: {e}", d.file)),
            Ok(names) => {
                for n in names.iter().filter(|n| !known.contains(*n)) {
                    problems.push(format!(
                        "{}: {place}: {n} is no metric of docs/metrics.md nor a recording rule",
                        d.file
                    ));
                }
            }
        }
    }
    problems
}

/// Threshold series that settings.rules.yml does not define, and panels that plot a metric an
/// alert compares with a threshold without drawing that threshold.
pub fn check_thresholds(
    d: &Dashboard,
    thresholds: &BTreeSet<String>,
    pairs: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for p in d.query_panels() {
        let exprs: Vec<&str> = p.json["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str())
            .collect();
        let names: BTreeSet<String> = exprs
            .iter()
            .flat_map(|e| promql::metric_names(e).unwrap_or_default())
            .collect();
        for n in names
            .iter()
            .filter(|n| n.starts_with("xray_warden:threshold_"))
        {
            if !thresholds.contains(n) {
                problems.push(format!(
                    "{}: panel '{}' reads {n}, which alerts/settings.rules.yml does not define",
                    d.file,
                    p.title()
                ));
            }
        }
        for (metric, threshold) in pairs {
            if names.contains(metric) && !names.contains(threshold) {
                problems.push(format!(
                    "{}: panel '{}' plots {metric} but not its alert threshold {threshold}",
                    d.file,
                    p.title()
                ));
            }
        }
    }
    problems
}

/// Descriptions that mention the marker without starting with it (a marker the live check
/// would not see).
pub fn check_marker(d: &Dashboard) -> Vec<String> {
    d.query_panels()
        .iter()
        .filter(|p| p.description().to_lowercase().contains("empty by design") && !p.empty_by_design())
        .map(|p| format!("{}: panel '{}' mentions 'empty by design' but does not start with \"{EMPTY_BY_DESIGN}\"", d.file, p.title()))
        .collect()
}

/// The dashboards directory (where the lint exclusions file `.lint` lives).
pub fn dir() -> PathBuf {
    repo().join("dashboards")
}

/// Every target of `d`, variables substituted as the live check does, parsed by promtool (as
/// recording rules of a scratch rule file): the PromQL parser of the Prometheus that runs them.
pub fn check_promql_with_promtool(d: &Dashboard) -> Vec<String> {
    let scratch = crate::support::prom::Scratch::new("dashboards");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, t) in d.targets().iter().enumerate() {
        let expr = serde_json::to_string(&promql::substitute(t.expr())).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:q{i}:expr\n        expr: {expr}\n"
        ));
    }
    let file = scratch.path.join("queries.rules.yml");
    fs::write(&file, rules).unwrap();
    let out = std::process::Command::new(crate::support::prom::PROMTOOL)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool (scripts/install-deps.sh): {e}"));
    if out.status.success() {
        return Vec::new();
    }
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    vec![format!("{}: promtool rejects a query: {text}", d.file)]
}

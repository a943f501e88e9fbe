//! grafana/dashboard-linter's Prometheus rules, re-implemented from its lint/*.go (the pinned
//! linter cannot be had from this machine's Go module proxy: scripts/install-dashboard-linter.sh),
//! under the same rule names, reading the same exclusions file (`dashboards/.lint`). Where the
//! linter limits a rule to some panel types this port applies it to every panel that queries,
//! and it asks `$__rate_interval` of `increase` too: stricter, never laxer.

use super::promql::{self, Selector};
use super::{DATASOURCE_UID, Dashboard};
use serde_json::Value;

/// One finding, located as the linter locates it (dashboard title, panel title, target index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static str,
    pub dashboard: String,
    pub panel: Option<String>,
    pub target: Option<usize>,
    pub message: String,
}

/// The units dashboard-linter's panel-units-rule accepts that a dashboard of ours may use (a
/// subset of Grafana's list: another valid unit is flagged, the safe direction).
const UNITS: &[&str] = &[
    "none",
    "short",
    "percent",
    "percentunit",
    "bytes",
    "decbytes",
    "bits",
    "Bps",
    "bps",
    "binBps",
    "ns",
    "µs",
    "ms",
    "s",
    "m",
    "h",
    "d",
    "dtdurations",
    "ops",
    "reqps",
    "rps",
    "cps",
    "cpm",
    "iops",
    "bool",
    "bool_yes_no",
    "bool_on_off",
    "dateTimeAsIso",
    "dateTimeFromNow",
];

struct Ctx<'a> {
    d: &'a Dashboard,
    out: Vec<Finding>,
}

impl Ctx<'_> {
    fn add(
        &mut self,
        rule: &'static str,
        panel: Option<&str>,
        target: Option<usize>,
        message: String,
    ) {
        let dashboard = self.d.title().to_owned();
        let panel = panel.map(str::to_owned);
        self.out.push(Finding {
            rule,
            dashboard,
            panel,
            target,
            message,
        });
    }
}

/// Every finding of the rules on `d`, before exclusions.
pub fn lint(d: &Dashboard) -> Vec<Finding> {
    let mut c = Ctx { d, out: Vec::new() };
    dashboard_rules(&mut c);
    for p in d.query_panels() {
        let title = Some(p.title());
        if p.title().is_empty() || p.description().is_empty() {
            c.add(
                "panel-title-description-rule",
                title,
                None,
                "missing title or description".into(),
            );
        }
        if p.json["datasource"]["uid"] != DATASOURCE_UID {
            let uid = p.json["datasource"]["uid"].to_string();
            c.add(
                "panel-datasource-rule",
                title,
                None,
                format!("does not use the templated datasource: {uid}"),
            );
        }
        let unit = p.json["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or("");
        if !UNITS.contains(&unit) {
            c.add(
                "panel-units-rule",
                title,
                None,
                format!("no or invalid unit: '{unit}'"),
            );
        }
        if p.json["targets"].as_array().is_none_or(Vec::is_empty) {
            c.add(
                "panel-no-targets-rule",
                title,
                None,
                "has no targets".into(),
            );
        }
    }
    for t in d.targets() {
        let (title, idx) = (Some(t.panel.title()), Some(t.idx));
        let selectors = match promql::selectors(t.expr()) {
            Ok(s) => s,
            Err(e) => {
                c.add("target-promql-rule", title, idx, e);
                continue;
            }
        };
        for s in &selectors {
            target_rules(&mut c, s, t.panel.title(), t.idx);
        }
    }
    c.out
}

fn dashboard_rules(c: &mut Ctx) {
    let d = c.d;
    if d.json["editable"] != Value::Bool(false) {
        c.add(
            "uneditable-dashboard-rule",
            None,
            None,
            "is editable, it should be set to 'editable: false'".into(),
        );
    }
    let sources: Vec<&Value> = d
        .variables()
        .into_iter()
        .filter(|v| v["type"] == "datasource")
        .collect();
    match sources.as_slice() {
        [v] if v["name"] == "datasource"
            && v["label"] == "Data source"
            && v["query"] == "prometheus" => {}
        _ => c.add(
            "template-datasource-rule",
            None,
            None,
            "needs one datasource variable `datasource`, label 'Data source', query prometheus"
                .into(),
        ),
    }
    for (name, label) in [("job", "Job"), ("instance", "Instance")] {
        let rule = if name == "job" {
            "template-job-rule"
        } else {
            "template-instance-rule"
        };
        let Some(v) = d.variable(name) else {
            c.add(rule, None, None, format!("is missing the {name} template"));
            continue;
        };
        let uid = v["datasource"]["uid"]
            .as_str()
            .or(v["datasource"].as_str())
            .unwrap_or("");
        let ok = ["$datasource", DATASOURCE_UID].contains(&uid)
            && v["type"] == "query"
            && v["label"] == label
            && v["multi"] == true
            && v["allValue"] == ".+";
        if !ok {
            c.add(rule, None, None, format!("{name} template must use $datasource, be a query labelled '{label}', multi-select, allValue '.+'"));
        }
    }
    for v in d.variables().into_iter().filter(|v| v["type"] == "query") {
        let q = super::variable_query(v);
        let function = q.split('(').next().unwrap_or("").trim();
        let known = ["label_names", "label_values", "metrics", "query_result"].contains(&function);
        if !known || !q.trim_end().ends_with(')') {
            c.add(
                "template-label-promql-rule",
                None,
                None,
                format!("template {} has an invalid query '{q}'", v["name"]),
            );
        }
        if v["refresh"] != 2 {
            c.add(
                "template-on-time-change-reload",
                None,
                None,
                format!(
                    "template {} must refresh on time range change (2)",
                    v["name"]
                ),
            );
        }
    }
}

fn target_rules(c: &mut Ctx, s: &Selector, panel: &str, idx: usize) {
    let (title, idx) = (Some(panel), Some(idx));
    let matchers = s.matchers.as_deref().unwrap_or("").replace(' ', "");
    for (rule, label) in [
        ("target-job-rule", "job"),
        ("target-instance-rule", "instance"),
    ] {
        let wanted = [
            format!("{label}=~\"${label}\""),
            format!("{label}=~\"${{{label}}}\""),
        ];
        if !matchers.split(',').any(|m| wanted.contains(&m.to_owned())) {
            c.add(
                rule,
                title,
                idx,
                format!("selector {} has no {label}=~\"${label}\" matcher", s.name),
            );
        }
    }
    let counting = ["rate", "irate", "increase"];
    let in_counting = s
        .enclosing
        .as_deref()
        .is_some_and(|f| counting.contains(&f));
    if s.name.ends_with("_total") && !(in_counting && s.range.is_some()) {
        c.add(
            "target-counter-agg-rule",
            title,
            idx,
            format!(
                "counter {} is not aggregated with rate, irate or increase",
                s.name
            ),
        );
    }
    if in_counting && s.range.as_deref() != Some("$__rate_interval") {
        let range = s.range.clone().unwrap_or_default();
        c.add(
            "target-rate-interval-rule",
            title,
            idx,
            format!("{}[{range}] should use $__rate_interval", s.name),
        );
    }
}

/// The exclusions of dashboard-linter's `.lint` file: per rule, a reason and entries that each
/// name a dashboard, a panel and optionally a target index. Written as JSON, which is YAML too,
/// so the Go linter reads the same file.
#[derive(Debug, Clone)]
pub struct Exclusions(pub Value);

impl Exclusions {
    pub fn load() -> Exclusions {
        let path = super::dir().join(".lint");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Exclusions(
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
    }

    fn entries(&self, rule: &str) -> impl Iterator<Item = &Value> {
        self.0["exclusions"][rule]["entries"]
            .as_array()
            .into_iter()
            .flatten()
    }

    /// Exclusion entries without a reason (the rule's or their own).
    pub fn unexplained(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (rule, body) in self.0["exclusions"].as_object().into_iter().flatten() {
            let rule_reason = body["reason"]
                .as_str()
                .is_some_and(|r| !r.trim().is_empty());
            for e in self.entries(rule) {
                if !rule_reason && e["reason"].as_str().is_none_or(|r| r.trim().is_empty()) {
                    out.push(format!("{rule}: {e} has no reason"));
                }
            }
            if self.entries(rule).next().is_none() {
                out.push(format!(
                    "{rule}: excluded everywhere (no entries): name each finding"
                ));
            }
        }
        out
    }

    fn matches(e: &Value, f: &Finding) -> bool {
        e["dashboard"] == f.dashboard.as_str()
            && f.panel.as_ref().is_none_or(|p| e["panel"] == p.as_str())
            && match (f.target, e["targetIdx"].as_str()) {
                (Some(i), Some(want)) if !want.is_empty() => want == i.to_string(),
                _ => true,
            }
    }

    pub fn excludes(&self, f: &Finding) -> bool {
        self.entries(f.rule).any(|e| Self::matches(e, f))
    }

    /// Entries that no finding of `findings` uses (stale: the problem went away).
    pub fn unused(&self, findings: &[Finding]) -> Vec<String> {
        let mut out = Vec::new();
        for (rule, _) in self.0["exclusions"].as_object().into_iter().flatten() {
            for e in self.entries(rule) {
                if !findings
                    .iter()
                    .any(|f| f.rule == rule && Self::matches(e, f))
                {
                    out.push(format!("{rule}: {e} matches no finding"));
                }
            }
        }
        out
    }
}

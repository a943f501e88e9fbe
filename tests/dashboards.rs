//! The Grafana dashboards of dashboards/, checked without a Grafana: they parse as dashboards
//! Grafana imports, panel ids are unique, every variable and datasource reference resolves, every
//! query reads only metrics that exist and parses with promtool, the alert thresholds are drawn
//! from alerts/settings.rules.yml, and grafana/dashboard-linter's rules (the real linter when
//! DASHBOARD_LINTER names it, and always the port in support/dashboards/lint.rs) report nothing
//! beyond dashboards/.lint. Each check also runs on a mutated copy, to prove it can fail.
//! The live half (every panel returns data from a Prometheus that scraped the demo) is
//! `support::dashboards::assert_every_panel_returns_data`, called by the demo's scenario test.

mod support;

use serde_json::{Value, json};
use std::process::Command;
use support::dashboards::lint::{self, Exclusions};
use support::dashboards::{self as dash, Dashboard, promql};

const FILES: [&str; 3] = [
    "fleet-overview.json",
    "tunnel-detail.json",
    "usersync-actions.json",
];

fn all_problems(check: impl Fn(&Dashboard) -> Vec<String>) -> Vec<String> {
    dash::load_all().iter().flat_map(check).collect()
}

fn assert_none(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

/// The tunnel detail dashboard, changed by `f`.
fn mutated(f: impl FnOnce(&mut Value)) -> Dashboard {
    let mut d = dash::load_all()
        .into_iter()
        .find(|d| d.file == "tunnel-detail.json")
        .unwrap();
    f(&mut d.json);
    d
}

/// The first timeseries panel (with a threshold target) of the tunnel detail dashboard.
fn memory_panel(json: &mut Value) -> &mut Value {
    let panels = json["panels"].as_array_mut().unwrap();
    panels.iter_mut().find(|p| p["title"] == "Memory").unwrap()
}

#[test]
fn dashboards_parse_and_are_importable() {
    let dashboards = dash::load_all();
    let files: Vec<&str> = dashboards.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(files, FILES);
    let mut uids = Vec::new();
    for d in &dashboards {
        let schema = d.json["schemaVersion"].as_u64().unwrap_or(0);
        assert!(
            (36..=39).contains(&schema),
            "{}: schemaVersion {schema}",
            d.file
        );
        assert!(
            d.json["id"].is_null(),
            "{}: an import must not carry a database id",
            d.file
        );
        let uid = d.json["uid"].as_str().unwrap_or("");
        assert!(
            !uid.is_empty() && uid.len() <= 40,
            "{}: uid '{uid}'",
            d.file
        );
        uids.push(uid);
        assert!(!d.title().is_empty(), "{}: no title", d.file);
        assert!(!d.targets().is_empty(), "{}: no queries", d.file);
    }
    uids.dedup();
    assert_eq!(uids.len(), FILES.len(), "dashboard uids must differ");
    assert!(Dashboard::parse("x.json", "{\"panels\": [").is_err());
    assert!(Dashboard::parse("x.json", "{\"title\": \"no panels\"}").is_err());
}

#[test]
fn panel_ids_are_unique() {
    assert_none("duplicate panel ids", all_problems(dash::check_panel_ids));
    let dup = mutated(|j| j["panels"][2]["id"] = j["panels"][1]["id"].clone());
    assert_eq!(dash::check_panel_ids(&dup).len(), 1);
    // A panel nested in a collapsed row counts too.
    let nested = mutated(|j| {
        let id = j["panels"][1]["id"].clone();
        j["panels"][0]["panels"] = json!([{"id": id, "type": "timeseries", "title": "nested"}]);
    });
    assert_eq!(dash::check_panel_ids(&nested).len(), 1);
}

#[test]
fn variables_resolve() {
    assert_none("unresolved variables", all_problems(dash::check_variables));
    let typo = mutated(|j| {
        let p = memory_panel(j);
        p["targets"][0]["expr"] = json!("xray_tunnel_memory_rss_bytes{tunnel=~\"${tunel}\"}");
    });
    let problems = dash::check_variables(&typo);
    assert!(
        problems.len() == 1 && problems[0].contains("$tunel"),
        "{problems:?}"
    );
    let old_style = mutated(|j| memory_panel(j)["title"] = json!("Memory of [[tunnels]]"));
    assert_eq!(dash::check_variables(&old_style).len(), 1);
}

#[test]
fn datasources_resolve_to_the_variable() {
    assert_none(
        "datasource references",
        all_problems(dash::check_datasources),
    );
    let hard = mutated(|j| memory_panel(j)["datasource"]["uid"] = json!("P1809F7CD0C75ACF3"));
    assert_eq!(dash::check_datasources(&hard).len(), 1);
    let missing = mutated(|j| {
        memory_panel(j)["targets"][0]
            .as_object_mut()
            .unwrap()
            .remove("datasource");
    });
    assert_eq!(dash::check_datasources(&missing).len(), 1);
    let no_var = mutated(|j| j["templating"]["list"][0]["name"] = json!("ds"));
    assert!(!dash::check_datasources(&no_var).is_empty());
}

#[test]
fn queries_read_only_metrics_that_exist() {
    let known = dash::known_metrics();
    // The parse of docs/metrics.md and of the rule files found what it should.
    for name in [
        "xray_tunnel_up",
        "xray_usersync_duration_seconds_bucket",
        "instance_tunnel:xray_tunnel_cpu_seconds:rate5m",
        "xray_warden:threshold_tunnel_memory_bytes:const",
    ] {
        assert!(
            known.contains(name),
            "{name} missing from the known metrics"
        );
    }
    assert_none(
        "unknown metrics",
        all_problems(|d| dash::check_metrics(d, &known)),
    );
    let typo = mutated(|j| {
        memory_panel(j)["targets"][0]["expr"] =
            json!("xray_tunnel_memroy_rss_bytes{job=~\"$job\"}");
    });
    let problems = dash::check_metrics(&typo, &known);
    assert!(
        problems.len() == 1 && problems[0].contains("xray_tunnel_memroy_rss_bytes"),
        "{problems:?}"
    );
    let var_typo = mutated(|j| {
        j["templating"]["list"][3]["query"]["query"] = json!("label_values(xray_tunel_up, tunnel)");
    });
    assert_eq!(dash::check_metrics(&var_typo, &known).len(), 1);
}

#[test]
fn the_promql_reader_catches_typos() {
    let names = |e: &str| promql::metric_names(e);
    assert_eq!(
        names("sum by (job, instance) (rate(a_total{job=~\"$job\", x=\"b c\"}[$__rate_interval])) / on () group_left () b:c:d").unwrap(),
        ["a_total", "b:c:d"]
    );
    assert_eq!(
        names("topk(5, x) > bool 0.5e3 or vector(1) unless y offset 5m").unwrap(),
        ["x", "y"]
    );
    assert_eq!(names("time() - last{a=\"}\"}").unwrap(), ["last"]);
    assert!(
        names("rat(x[1m])")
            .unwrap_err()
            .contains("unknown function rat()")
    );
    assert!(names("sum(rate(x[1m])").is_err());
    assert!(names("{job=\"a\"}").is_err());
    let s = &promql::selectors("sum(increase(x_total{job=~\"$job\"}[5m]))").unwrap()[0];
    assert_eq!(
        (s.range.as_deref(), s.enclosing.as_deref()),
        (Some("5m"), Some("increase"))
    );
    assert_eq!(
        promql::variable_refs("a $x ${y} ${z:csv} [[w]] $__rate_interval"),
        ["x", "y", "z", "w", "__rate_interval"]
    );
    assert_eq!(
        promql::substitute("rate(a{tunnel=~\"$tunnel\"}[$__rate_interval]) and b[$__range]"),
        "rate(a{tunnel=~\".+\"}[1m]) and b[2m]"
    );
}

#[test]
fn every_query_parses_with_promtool() {
    assert_none("PromQL", all_problems(dash::check_promql_with_promtool));
    let broken = mutated(|j| memory_panel(j)["targets"][0]["expr"] = json!("sum by (job (x)"));
    assert_eq!(dash::check_promql_with_promtool(&broken).len(), 1);
}

#[test]
fn alert_thresholds_come_from_settings_and_are_drawn() {
    let thresholds = dash::threshold_series();
    assert_eq!(thresholds.len(), 6, "{thresholds:?}");
    let pairs = dash::thresholded_metrics();
    for (metric, threshold) in [
        (
            "xray_tunnel_memory_rss_bytes",
            "xray_warden:threshold_tunnel_memory_bytes:const",
        ),
        (
            "instance_tunnel:xray_tunnel_cpu_seconds:rate5m",
            "xray_warden:threshold_tunnel_cpu_cores:const",
        ),
        (
            "instance_tunnel:xray_tunnel_auto_restarts:increase10m",
            "xray_warden:threshold_tunnel_auto_restarts:const",
        ),
        (
            "xray_usersync_last_success_timestamp_seconds",
            "xray_warden:threshold_usersync_stale_seconds:const",
        ),
    ] {
        assert!(
            pairs.contains(&(metric.into(), threshold.into())),
            "{metric} / {threshold} not derived from alerts/"
        );
    }
    // `and on (...) min_over_time(xray_tunnel_up[5m]) == 1` is a condition, not the compared side.
    assert!(
        !pairs.iter().any(|(m, _)| m == "xray_tunnel_up"),
        "{pairs:?}"
    );
    assert_none(
        "thresholds",
        all_problems(|d| dash::check_thresholds(d, &thresholds, &pairs)),
    );
    // Every threshold series is drawn somewhere.
    let drawn: Vec<String> = dash::load_all()
        .iter()
        .flat_map(|d| {
            d.targets()
                .iter()
                .map(|t| t.expr().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    for t in &thresholds {
        assert!(
            drawn.iter().any(|e| e.contains(t.as_str())),
            "{t} is drawn by no panel"
        );
    }
    let unknown = mutated(|j| {
        memory_panel(j)["targets"][1]["expr"] = json!("xray_warden:threshold_tunnel_memory:const")
    });
    let problems = dash::check_thresholds(&unknown, &thresholds, &pairs);
    assert_eq!(problems.len(), 2, "{problems:?}"); // an unknown series, and so no threshold drawn
    let undrawn = mutated(|j| {
        memory_panel(j)["targets"].as_array_mut().unwrap().pop();
    });
    let problems = dash::check_thresholds(&undrawn, &thresholds, &pairs);
    assert!(
        problems.len() == 1 && problems[0].contains("not its alert threshold"),
        "{problems:?}"
    );
}

#[test]
fn the_empty_by_design_marker_is_exact() {
    assert_none("markers", all_problems(dash::check_marker));
    let count: usize = dash::load_all()
        .iter()
        .map(|d| {
            d.query_panels()
                .iter()
                .filter(|p| p.empty_by_design())
                .count()
        })
        .sum();
    assert!(count >= 3, "only {count} panels empty by design");
    let sloppy =
        mutated(|j| memory_panel(j)["description"] = json!("Memory. empty by design when idle."));
    assert_eq!(dash::check_marker(&sloppy).len(), 1);
}

/// A change to a dashboard's JSON.
type Mutation = Box<dyn Fn(&mut Value)>;

/// The findings of the linter port that dashboards/.lint does not exclude.
fn unexcluded(d: &Dashboard, exclusions: &Exclusions) -> Vec<String> {
    lint::lint(d)
        .into_iter()
        .filter(|f| !exclusions.excludes(f))
        .map(|f| format!("{f:?}"))
        .collect()
}

#[test]
fn dashboard_linter_rules_report_only_excluded_findings() {
    let exclusions = Exclusions::load();
    assert_none("exclusions without a reason", exclusions.unexplained());
    assert_none(
        "dashboard-linter rules (port)",
        all_problems(|d| unexcluded(d, &exclusions)),
    );
    let findings: Vec<lint::Finding> = dash::load_all().iter().flat_map(lint::lint).collect();
    assert_none("stale exclusions", exclusions.unused(&findings));
}

#[test]
fn each_dashboard_linter_rule_can_fail() {
    let exclusions = Exclusions::load();
    let rules_of = |d: &Dashboard| -> Vec<&'static str> {
        let mut r: Vec<&str> = lint::lint(d)
            .into_iter()
            .filter(|f| !exclusions.excludes(f))
            .map(|f| f.rule)
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    };
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "uneditable-dashboard-rule",
            Box::new(|j| j["editable"] = json!(true)),
        ),
        (
            "template-datasource-rule",
            Box::new(|j| j["templating"]["list"][0]["label"] = json!("Prometheus")),
        ),
        (
            "template-job-rule",
            Box::new(|j| j["templating"]["list"][1]["allValue"] = json!(".*")),
        ),
        (
            "template-instance-rule",
            Box::new(|j| j["templating"]["list"][2]["multi"] = json!(false)),
        ),
        (
            "template-label-promql-rule",
            Box::new(|j| j["templating"]["list"][3]["query"]["query"] = json!("xray_tunnel_up")),
        ),
        (
            "template-on-time-change-reload",
            Box::new(|j| j["templating"]["list"][3]["refresh"] = json!(1)),
        ),
        (
            "panel-title-description-rule",
            Box::new(|j| memory_panel(j)["description"] = json!("")),
        ),
        (
            "panel-datasource-rule",
            Box::new(|j| memory_panel(j)["datasource"]["uid"] = json!("abc")),
        ),
        (
            "panel-units-rule",
            Box::new(|j| memory_panel(j)["fieldConfig"]["defaults"]["unit"] = json!("megabytes")),
        ),
        (
            "panel-no-targets-rule",
            Box::new(|j| memory_panel(j)["targets"] = json!([])),
        ),
        (
            "target-promql-rule",
            Box::new(|j| memory_panel(j)["targets"][0]["expr"] = json!("rat(x[1m])")),
        ),
        (
            "target-job-rule",
            Box::new(|j| {
                memory_panel(j)["targets"][0]["expr"] =
                    json!("xray_tunnel_memory_rss_bytes{instance=~\"$instance\"}")
            }),
        ),
        (
            "target-instance-rule",
            Box::new(|j| {
                memory_panel(j)["targets"][0]["expr"] =
                    json!("xray_tunnel_memory_rss_bytes{job=~\"$job\"}")
            }),
        ),
        (
            "target-counter-agg-rule",
            Box::new(|j| {
                memory_panel(j)["targets"][0]["expr"] =
                    json!("xray_tunnel_cpu_seconds_total{job=~\"$job\", instance=~\"$instance\"}")
            }),
        ),
        (
            "target-rate-interval-rule",
            Box::new(|j| {
                memory_panel(j)["targets"][0]["expr"] = json!(
                    "rate(xray_tunnel_cpu_seconds_total{job=~\"$job\", instance=~\"$instance\"}[5m])"
                )
            }),
        ),
    ];
    for (rule, change) in cases {
        let d = mutated(change);
        assert_eq!(rules_of(&d), [rule], "mutation for {rule}");
    }
}

/// The real grafana/dashboard-linter, strict, when scripts/test.sh could install it
/// (scripts/install-dashboard-linter.sh; DASHBOARD_LINTER names the binary).
#[test]
fn the_pinned_dashboard_linter_reports_nothing() {
    let Ok(linter) = std::env::var("DASHBOARD_LINTER") else {
        println!(
            "SKIPPED: grafana/dashboard-linter (DASHBOARD_LINTER unset: scripts/install-dashboard-linter.sh could not install it); its rules ran as the port above"
        );
        return;
    };
    for file in FILES {
        let path = dash::dir().join(file);
        let out = Command::new(&linter)
            .args(["lint", "--strict"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "dashboard-linter lint --strict {file}:\n{text}"
        );
    }
}

/// Development aid: the live check against a Prometheus given by XW_DEMO_PROMETHEUS
/// (http://127.0.0.1:PORT) that scraped the demo; the demo's scenario test runs it for real.
#[test]
#[ignore]
fn live_against_a_demo_prometheus() {
    let url =
        std::env::var("XW_DEMO_PROMETHEUS").expect("XW_DEMO_PROMETHEUS=http://127.0.0.1:PORT");
    dash::assert_every_panel_returns_data(&url);
    dash::live::assert_the_check_can_fail(&url);
}

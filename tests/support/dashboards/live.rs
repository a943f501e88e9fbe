//! Every panel query of dashboards/, run as Grafana would run it against a live Prometheus.

use super::{Dashboard, load_all, promql};
use crate::support::warden::http_get;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The window of the range queries: what Grafana asks for when the dashboard shows the last two
/// minutes.
const WINDOW_SECONDS: u64 = 120;
const STEP_SECONDS: u64 = 5;

/// What one query answered.
#[derive(Debug)]
pub enum Answer {
    Series(usize),
    Error(String),
}

/// Runs `expr` (variables substituted) as a range query over the last two minutes.
pub fn range_query(prometheus: SocketAddr, expr: &str) -> Answer {
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let query: String =
        url::form_urlencoded::byte_serialize(promql::substitute(expr).as_bytes()).collect();
    let path = format!(
        "/api/v1/query_range?query={query}&start={}&end={end}&step={STEP_SECONDS}",
        end - WINDOW_SECONDS
    );
    let (status, body) = match http_get(prometheus, &path) {
        Ok(answer) => answer,
        Err(e) => return Answer::Error(format!("GET {path}: {e}")),
    };
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if status != 200 || json["status"] != "success" {
        return Answer::Error(format!(
            "HTTP {status}: {}",
            json["error"].as_str().unwrap_or(&body)
        ));
    }
    Answer::Series(json["data"]["result"].as_array().map_or(0, Vec::len))
}

/// What the live check found: the panels and queries it ran, and what failed.
#[derive(Debug, Default)]
pub struct Report {
    pub panels: usize,
    pub queries: usize,
    pub by_design: usize,
    /// Panels empty by design that returned no series this time.
    pub by_design_empty: Vec<String>,
    pub failures: Vec<String>,
}

/// Runs every query of `dashboards` against the Prometheus at `prometheus` (see
/// [`assert_every_panel_returns_data`]).
pub fn check(prometheus: SocketAddr, dashboards: &[Dashboard]) -> Report {
    let mut r = Report::default();
    for d in dashboards {
        for p in d.query_panels() {
            r.panels += 1;
            r.by_design += usize::from(p.empty_by_design());
            let mut empty = false;
            for t in p.json["targets"].as_array().into_iter().flatten() {
                r.queries += 1;
                let expr = t["expr"].as_str().unwrap_or("");
                let place = format!(
                    "{} / {} [{}]",
                    d.title(),
                    p.title(),
                    t["refId"].as_str().unwrap_or("?")
                );
                match range_query(prometheus, expr) {
                    Answer::Error(e) => r
                        .failures
                        .push(format!("{place}: query error: {e}\n    {expr}")),
                    Answer::Series(0) if p.empty_by_design() => empty = true,
                    Answer::Series(0) => r.failures.push(format!("{place}: no series\n    {expr}")),
                    Answer::Series(_) => {}
                }
            }
            if empty {
                r.by_design_empty
                    .push(format!("{} / {}", d.title(), p.title()));
            }
        }
    }
    r
}

/// `http://IP:PORT` as an address.
pub fn address(base: &str) -> SocketAddr {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    host.parse()
        .unwrap_or_else(|e| panic!("{base}: not http://IP:PORT ({e})"))
}

/// For every panel of every dashboard, runs each query as a range query over the last two minutes
/// against `prometheus` (a base URL such as `http://127.0.0.1:9090`), with every label variable
/// at "All" (`.+`) and `$__rate_interval` at 1m. Panics listing the panels whose query errors, or
/// returns no series unless the panel's description starts with [`super::EMPTY_BY_DESIGN`] (its
/// query must still be valid). Prints a one-line summary.
pub fn assert_every_panel_returns_data(prometheus: &str) {
    let r = check(address(prometheus), &load_all());
    println!(
        "dashboards live check: {} panels, {} queries, {} empty by design ({} of them empty now: {}), {} failing",
        r.panels,
        r.queries,
        r.by_design,
        r.by_design_empty.len(),
        r.by_design_empty.join("; "),
        r.failures.len()
    );
    assert!(
        r.failures.is_empty(),
        "{} dashboard queries failed against {prometheus}:\n  {}",
        r.failures.len(),
        r.failures.join("\n  ")
    );
}

/// The live check can fail, shown on the tunnel detail dashboard's memory panel against the same
/// Prometheus: a metric typo returns no series; the empty-by-design marker excuses only an empty
/// answer; a broken query fails even on a panel marked empty by design.
pub fn assert_the_check_can_fail(prometheus: &str) {
    let addr = address(prometheus);
    let marked = format!("{}a test says so.", super::EMPTY_BY_DESIGN);
    let memory = |expr: &str, description: Option<&str>| {
        let mut d = load_all()
            .into_iter()
            .find(|d| d.file == "tunnel-detail.json")
            .expect("tunnel-detail.json");
        let panel = d.json["panels"]
            .as_array_mut()
            .and_then(|ps| ps.iter_mut().find(|p| p["title"] == "Memory"))
            .expect("the tunnel detail's Memory panel");
        panel["targets"][0]["expr"] = Value::from(expr);
        if let Some(text) = description {
            panel["description"] = Value::from(text);
        }
        d
    };
    let typo = check(addr, &[memory("xray_tunnel_memroy_rss_bytes", None)]);
    assert!(
        typo.failures.len() == 1 && typo.failures[0].contains("no series"),
        "a typo passed: {typo:?}"
    );
    let excused = check(
        addr,
        &[memory("xray_tunnel_memroy_rss_bytes", Some(&marked))],
    );
    assert!(excused.failures.is_empty(), "{excused:?}");
    let broken = check(addr, &[memory("sum by (job (x)", Some(&marked))]);
    assert!(
        broken.failures.len() == 1 && broken.failures[0].contains("query error"),
        "a broken query passed: {broken:?}"
    );
}

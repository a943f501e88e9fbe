//! The webhook in-process, on port 0, with the real router, operations service and worker;
//! systemd is "down" here (no bus), which is what the failure path needs. The actions
//! themselves are proven against a real systemd, Prometheus and Alertmanager in
//! tests/loop_proof.rs.

use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::super::ApiState;
use crate::config::{Config, RemediationConfig};
use crate::domain::{Orphan, OrphanKind};
use crate::http::{AppState, serve};
use crate::metrics::Metrics;
use crate::ops::remediate::Worker;
use crate::ops::{Audit, OpLock, Operations, Parts};
use crate::state::SharedState;

const TOKEN: &str = "0123456789abcdef-test";

struct Node {
    base: String,
    metrics: Metrics,
    state: SharedState,
    stop: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn node(name: &str, remediation: RemediationConfig) -> Node {
    let mut config = Config::default();
    config.users.state_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/unit-scratch/alerts")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&config.users.state_dir);
    let state = SharedState::default();
    let metrics = Metrics::new(state.clone());
    let ops = Operations::new(Parts {
        client: watch::channel(None).1,
        tunnels: config.tunnels.clone(),
        health: crate::health::Settings::from_config(&config),
        ledger: Default::default(),
        state: state.clone(),
        sync: None,
        audit: Audit::new(None, metrics.registry()),
        lock: OpLock::default(),
        tracker: TaskTracker::new(),
    });
    let (worker, alerts, queue) =
        Worker::new(ops.clone(), &remediation, &config.users, metrics.registry());
    let stop = CancellationToken::new();
    tokio::spawn(worker.run(queue, stop.clone()));
    let app = AppState {
        metrics: metrics.clone(),
        state: state.clone(),
        shutdown: stop.clone(),
        api: Some(ApiState {
            token: std::sync::Arc::new(TOKEN.into()),
            state: state.clone(),
            ops,
            alerts,
        }),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/v1/alerts", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, app, crate::http::Limits::default()));
    Node {
        base,
        metrics,
        state,
        stop,
    }
}

fn policy() -> RemediationConfig {
    RemediationConfig {
        node: Some("node-a".into()),
        ..Config::default().remediation
    }
}

async fn post(node: &Node, token: Option<&str>, body: impl Into<reqwest::Body>) -> u16 {
    let mut request = reqwest::Client::new().post(&node.base).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

fn alert(status: &str, instance: &str, tunnel: &str, fingerprint: &str) -> serde_json::Value {
    serde_json::json!({
        "status": status,
        "labels": {"alertname": "XrayTunnelOrphaned", "warden_action": "cleanup_orphan",
                   "instance": instance, "tunnel": tunnel, "kind": "unit_without_config"},
        "annotations": {}, "startsAt": "2026-11-30T14:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "", "fingerprint": fingerprint,
    })
}

fn payload(alerts: Vec<serde_json::Value>) -> String {
    serde_json::json!({"version": "4", "status": "firing", "receiver": "warden", "groupKey": "{}",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "", "alerts": alerts})
    .to_string()
}

/// `xray_warden_alert_actions_total{action="cleanup_orphan",result}`, read off a scrape.
fn count(node: &Node, result: &str) -> u64 {
    let text = String::from_utf8(node.metrics.render().unwrap()).unwrap();
    let series = format!(
        "xray_warden_alert_actions_total{{action=\"cleanup_orphan\",result=\"{result}\"}} "
    );
    let line = text.lines().find_map(|l| l.strip_prefix(series.as_str()));
    line.expect("every result is exported from the start")
        .parse()
        .unwrap()
}

async fn wait_for(node: &Node, result: &str, n: u64) {
    for _ in 0..200 {
        if count(node, result) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{result} never reached {n} (now {})", count(node, result));
}

fn total(node: &Node) -> u64 {
    crate::domain::remediation::AlertResult::ALL
        .iter()
        .map(|r| count(node, r.as_str()))
        .sum()
}

#[tokio::test]
async fn without_the_token_nothing_is_queued() {
    let node = node("token", policy()).await;
    let body = payload(vec![alert("firing", "node-a", "eu1", "f1")]);
    assert_eq!(post(&node, None, body.clone()).await, 401);
    assert_eq!(post(&node, Some("wrong-token-of-length"), body).await, 401);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(total(&node), 0);
}

#[tokio::test]
async fn bad_bodies_get_a_4xx_and_change_nothing() {
    let node = node("bodies", policy()).await;
    assert_eq!(post(&node, Some(TOKEN), "not json").await, 400);
    let v3 = payload(vec![]).replace(r#""version":"4""#, r#""version":"3""#);
    assert_eq!(post(&node, Some(TOKEN), v3).await, 400);
    let huge = payload(vec![alert("firing", "node-a", &"x".repeat(2 << 20), "f")]);
    assert_eq!(post(&node, Some(TOKEN), huge).await, 413);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(total(&node), 0);
}

#[tokio::test]
async fn each_alert_is_judged_on_its_own() {
    let node = node("judged", policy()).await;
    let body = payload(vec![
        alert("resolved", "node-a", "eu1", "f1"),
        alert("firing", "node-b", "eu1", "f2"),
        alert("firing", "node-a", "eu1", "f3"),
        alert("firing", "node-a", "../etc", "f4"),
    ]);
    assert_eq!(post(&node, Some(TOKEN), body).await, 202);
    wait_for(&node, "refused_not_orphan", 1).await;
    wait_for(&node, "ignored_invalid", 1).await;
    assert_eq!(count(&node, "ignored_resolved"), 1);
    assert_eq!(count(&node, "ignored_other_node"), 1);
    assert_eq!(total(&node), 4);
}

fn orphan_since(node: &Node, tunnel: &str, since: SystemTime) {
    node.state.update(|s| {
        s.orphans.push(Orphan {
            tunnel: tunnel.into(),
            kind: OrphanKind::UnitWithoutConfig,
            since,
            detail: "config is missing".into(),
            pid: None,
        })
    });
}

/// `n` tunnel units beside the orphans, so that the guard (its own tests are in domain) allows
/// acting.
fn healthy_tunnels(node: &Node, n: usize) {
    node.state.update(|s| {
        s.listed = true;
        s.systemd_up = true;
        for i in 0..n {
            let id = crate::domain::TunnelId::new(&format!("ok{i}")).unwrap();
            let unit = id.unit_name();
            s.tunnels
                .insert(id, crate::state::Tunnel::new(unit, Default::default()));
        }
    });
}

#[tokio::test]
async fn the_guard_refuses_when_most_tunnels_look_orphaned() {
    let node = node("guard", policy()).await;
    // Three orphaned tunnels of five known: more than half.
    for old in ["old1", "old2", "old3"] {
        orphan_since(&node, old, SystemTime::now() - Duration::from_secs(3600));
    }
    healthy_tunnels(&node, 2);
    let body = payload(vec![alert("firing", "node-a", "old1", "f1")]);
    assert_eq!(post(&node, Some(TOKEN), body).await, 202);
    wait_for(&node, "refused_guard", 1).await;
}

#[tokio::test]
async fn a_young_orphan_waits_and_an_old_one_fails_without_systemd() {
    let node = node("young", policy()).await;
    orphan_since(&node, "young1", SystemTime::now());
    orphan_since(&node, "old1", SystemTime::now() - Duration::from_secs(3600));
    healthy_tunnels(&node, 8);
    let body = payload(vec![
        alert("firing", "node-a", "young1", "f1"),
        alert("firing", "node-a", "old1", "f2"),
    ]);
    assert_eq!(post(&node, Some(TOKEN), body).await, 202);
    wait_for(&node, "refused_too_young", 1).await;
    // Acting needs systemd's bus; without it the action fails and nothing is remembered, so
    // a re-send is tried again rather than called a duplicate.
    wait_for(&node, "failed", 1).await;
    let again = payload(vec![alert("firing", "node-a", "old1", "f2")]);
    assert_eq!(post(&node, Some(TOKEN), again).await, 202);
    wait_for(&node, "failed", 2).await;
    assert_eq!(count(&node, "duplicate"), 0);
}

#[tokio::test]
async fn disabled_refuses_everything_for_this_node() {
    let off = RemediationConfig {
        enabled: false,
        ..policy()
    };
    let node = node("disabled", off).await;
    orphan_since(&node, "old1", SystemTime::now() - Duration::from_secs(3600));
    let body = payload(vec![alert("firing", "node-a", "old1", "f1")]);
    assert_eq!(post(&node, Some(TOKEN), body).await, 202);
    wait_for(&node, "refused_disabled", 1).await;
}

/// The label values of `metric`'s `label` in a scrape.
fn label_values(node: &Node, metric: &str, label: &str) -> std::collections::BTreeSet<String> {
    let text = String::from_utf8(node.metrics.render().unwrap()).unwrap();
    let key = format!("{label}=\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            let rest = &l[l.find(&key)? + key.len()..];
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

/// Free text in every place a request names an action — the legacy contract's `action`, a
/// tunnel verb, a tunnel id, an alert's `warden_action` — never becomes a label value: the
/// action counters only ever carry names of the closed set.
#[tokio::test]
async fn action_labels_come_from_a_closed_set_whatever_the_request_says() {
    let node = node("labels", policy()).await;
    let root = node.base.trim_end_matches("/api/v1/alerts").to_owned();
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method, path: String, body: String| {
        let request = client
            .request(method, format!("{root}{path}"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    use reqwest::Method;
    for i in 0..20 {
        let free = format!("evil-{i}-{}", "x".repeat(i * 10));
        let legacy = serde_json::json!({ "action": free }).to_string();
        assert_eq!(
            send(Method::POST, "/api/services".into(), legacy).await,
            400
        );
        let query = format!("/api/services?action={free}");
        assert_eq!(send(Method::GET, query, String::new()).await, 400);
        let verb = format!("/api/v1/tunnels/eu1/{free}");
        assert_eq!(send(Method::POST, verb, String::new()).await, 404);
        let put = format!("/api/v1/tunnels/{free}.{i}");
        assert_eq!(send(Method::PUT, put, "{}".into()).await, 400);
        let mut alert = alert("firing", "node-a", "eu1", &format!("f{i}"));
        alert["labels"]["warden_action"] = free.clone().into();
        assert_eq!(post(&node, Some(TOKEN), payload(vec![alert])).await, 202);
    }
    wait_for(&node, "ignored_unknown_action", 20).await;
    let known: Vec<&str> = crate::ops::Action::ALL.iter().map(|a| a.as_str()).collect();
    let actions = label_values(&node, "xray_warden_actions_total", "action");
    // Every alert is counted under the one action the worker knows, refusals included.
    assert_eq!(
        actions.iter().collect::<Vec<_>>(),
        ["alert.cleanup_orphan", "tunnel.put"]
    );
    assert!(actions.iter().all(|a| known.contains(&a.as_str())));
    let results = label_values(&node, "xray_warden_actions_total", "result");
    assert_eq!(
        results.iter().collect::<Vec<_>>(),
        ["ignored_unknown_action", "invalid_id"]
    );
    let alert_actions = label_values(&node, "xray_warden_alert_actions_total", "action");
    assert_eq!(alert_actions.iter().collect::<Vec<_>>(), ["cleanup_orphan"]);
}

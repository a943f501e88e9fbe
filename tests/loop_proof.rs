//! Proof tier for the whole loop: Prometheus scrapes the wardens, the SHIPPED alert rules decide
//! that something is an orphan, Alertmanager tells the wardens, and the right warden cleans up,
//! after checking for itself, without touching anything healthy. Every component is real and on
//! loopback: Debian's Prometheus 2.42 and Alertmanager 0.25, two sandboxed systemds (one per
//! node), the real warden binary in each, real V2Ray cores. Prometheus evaluates a fast variant
//! of alerts/*.yml and both servers run configs derived from deploy/*.example.yml, mechanically
//! (tests/loop_proof/stack.rs); nothing is a hand-kept copy.
//!
//! What each test reads back comes from the peers: systemd (`systemctl show`, the unit dir), the
//! sandbox's /proc, Prometheus's and Alertmanager's APIs, the warden's /metrics and audit log.
//! Figures are printed, never asserted on. Needs root: `cargo test --test loop_proof`.

mod support;

#[path = "loop_proof/node.rs"]
mod node;
#[path = "loop_proof/payload.rs"]
mod payload;
#[path = "loop_proof/stack.rs"]
mod stack;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use node::{Node, TOKEN, delta};
use payload::{Alert, body, fingerprint, orphan_labels};
use serde_json::Value;
use support::prom::{
    Alertmanager, Prometheus, Scratch, Sink, format_duration, parse_duration, promtool,
    speed_up_rules,
};

const WAIT: Duration = Duration::from_secs(60);
const UNIT_WITHOUT_CONFIG: &str = "unit_without_config";
const STRAY: &str = "stray_process";

// ---------------------------------------------------------------------------------------------
// The derivation itself
// ---------------------------------------------------------------------------------------------

#[test]
fn durations_of_a_rule_file_scale_by_one_factor() {
    assert_eq!(parse_duration("5m"), Some(300_000));
    assert_eq!(parse_duration("1h30m"), Some(5_400_000));
    assert_eq!(parse_duration("250ms"), Some(250));
    assert_eq!(parse_duration("1m30s500ms"), Some(90_500));
    for no in ["0-9", "5", "m", "30s5m", ""] {
        assert_eq!(parse_duration(no), None, "{no}");
    }
    assert_eq!(format_duration(10_000), "10s");
    assert_eq!(format_duration(1_500), "1500ms");

    let yaml = "groups:\n- name: g\n  interval: 1m\n  rules:\n  - alert: A\n    expr: |\n      \
                max_over_time(x{a=~\"[0-9]+\"}[5m]) == 1 and y offset 10m\n    for: 15m # why\n    \
                keep_firing_for: \"3m\"\n    annotations:\n      summary: rate[1h:5m]\n";
    let fast = speed_up_rules(yaml, 30);
    assert_eq!((fast.keys, fast.ranges), (3, 3), "{}", fast.text);
    assert!(fast.text.contains("  interval: 2s\n"), "{}", fast.text);
    assert!(
        fast.text
            .contains("[0-9]+\"}[10s]) == 1 and y offset 20s\n")
    );
    assert!(fast.text.contains("    for: 30s # why\n"));
    assert!(fast.text.contains("keep_firing_for: 6s\n"));
    assert!(fast.text.contains("rate[120s:10s]"));
}

/// The fast variant of the shipped rules is valid, keeps every alert, and the derived configs of
/// both servers pass their own checkers.
#[test]
fn the_shipped_files_derive_into_a_valid_fast_stack() {
    let dir = Scratch::new("derive");
    let files = stack::write_fast_rules(&dir.path);
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    let checked = promtool(&dir.path, &args);
    eprintln!("promtool on the fast rules:\n{checked}");

    let fast = stack::fast_rules();
    let shipped = stack::shipped_rules();
    for (name, text) in &shipped {
        let alerts = |t: &str| t.matches("- alert:").count();
        assert_eq!(alerts(text), alerts(&fast[name].text), "{name}");
    }
    let orphans = &fast["orphans.rules.yml"].text;
    let action = alert_block(orphans, "XrayTunnelOrphaned");
    let shipped_for = for_of(&alert_block(
        &shipped_text(&shipped, "orphans.rules.yml"),
        "XrayTunnelOrphaned",
    ));
    assert_eq!(for_of(&action), stack::fast(&shipped_for), "{action}");
    assert!(action.contains("warden_action: cleanup_orphan"), "{action}");

    // Both derived configs, checked by the servers' own tools.
    let mut addrs = BTreeMap::new();
    for t in stack::example_targets() {
        addrs.insert(t.target, "127.0.0.1:1".parse().unwrap());
    }
    let prom = stack::prometheus_config(&addrs);
    std::fs::write(dir.path.join("prometheus.yml"), &prom).unwrap();
    promtool(&dir.path, &["check", "config", "prometheus.yml"]);
    let urls = stack::example_webhook_authorities()
        .into_iter()
        .map(|a| (a, "127.0.0.1:1".parse().unwrap()))
        .collect();
    std::fs::write(dir.path.join("xray-warden.token"), TOKEN).unwrap();
    for fast in [true, false] {
        let am = stack::alertmanager_config(&urls, std::path::Path::new("xray-warden.token"), fast);
        std::fs::write(dir.path.join("alertmanager.yml"), &am).unwrap();
        amtool_check(&dir.path);
    }
}

fn shipped_text(files: &[(String, String)], name: &str) -> String {
    files.iter().find(|(n, _)| n == name).unwrap().1.clone()
}

/// The lines of the rule `- alert: NAME`, up to the next rule.
fn alert_block(text: &str, name: &str) -> String {
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

fn for_of(block: &str) -> String {
    block
        .lines()
        .find_map(|l| l.trim().strip_prefix("for:"))
        .unwrap_or_else(|| panic!("no for: in {block}"))
        .trim()
        .to_owned()
}

fn amtool_check(dir: &std::path::Path) {
    let out = std::process::Command::new("amtool")
        .args(["check-config", "alertmanager.yml"])
        .current_dir(dir)
        .output()
        .expect("amtool (Debian package prometheus-alertmanager)");
    assert!(
        out.status.success(),
        "amtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The loop, end to end
// ---------------------------------------------------------------------------------------------

/// Prometheus and Alertmanager, configured from the shipped files for these nodes. The
/// example's nodes that the test has no node for are played by `spare`, a plain receiver that
/// also serves an empty scrape; the people's receiver is `operators`.
struct Stack {
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    urls: BTreeMap<String, SocketAddr>,
    operators: Sink,
    spare: Sink,
}

impl Stack {
    fn start(nodes: &[&Node]) -> Stack {
        let (operators, spare) = (Sink::start(), Sink::start());
        let targets = stack::example_targets();
        let node_addr = |name: &str| {
            let node = nodes.iter().find(|n| n.name == name);
            node.map_or(spare.addr, |n| n.warden().addr)
        };
        // A webhook URL of the example goes to the node scraped at the same address.
        let mut urls = BTreeMap::new();
        for authority in stack::example_webhook_authorities() {
            let scraped = targets.iter().find(|t| t.target == authority);
            let addr = scraped.map_or(operators.addr, |t| node_addr(&t.node));
            urls.insert(authority, addr);
        }
        let token = [("xray-warden.token".to_owned(), TOKEN.to_owned())];
        let token_file = std::path::Path::new("xray-warden.token");
        let am_config = stack::alertmanager_config(&urls, token_file, true);
        let alertmanager = Alertmanager::start(&am_config, &token);

        let mut addrs = BTreeMap::new();
        for t in &targets {
            let addr = match t.section.as_str() {
                "alerting" => alertmanager.server.addr,
                _ => node_addr(&t.node),
            };
            addrs.insert(t.target.clone(), addr);
        }
        let config = stack::prometheus_config(&addrs);
        let scratch = Scratch::new("fast-rules");
        let rules: Vec<(String, String)> = stack::write_fast_rules(&scratch.path)
            .into_iter()
            .map(|f| {
                let text = std::fs::read_to_string(scratch.path.join(&f)).unwrap();
                (f, text)
            })
            .collect();
        let prometheus = Prometheus::start(&config, &rules);
        Stack {
            prometheus,
            alertmanager,
            urls,
            operators,
            spare,
        }
    }

    /// Reloads Alertmanager with the example's own timings (group_wait, group_interval).
    fn shipped_timings(&self) {
        let config = stack::alertmanager_config(
            &self.urls,
            std::path::Path::new("xray-warden.token"),
            false,
        );
        self.alertmanager.reload(&config);
    }

    /// Prometheus's XrayTunnelOrphaned alert for `tunnel` on `node`, if pending or firing.
    fn orphan_alert(&self, node: &str, tunnel: &str) -> Option<Value> {
        self.prometheus.alerts().into_iter().find(|a| {
            let l = &a["labels"];
            l["alertname"] == "XrayTunnelOrphaned" && l["instance"] == node && l["tunnel"] == tunnel
        })
    }

    /// Alertmanager's alert for `tunnel` on `node`, if it holds one.
    fn am_alert(&self, node: &str, tunnel: &str) -> Option<Value> {
        self.alertmanager.alerts().into_iter().find(|a| {
            let l = &a["labels"];
            l["alertname"] == "XrayTunnelOrphaned" && l["instance"] == node && l["tunnel"] == tunnel
        })
    }
}

/// What a watch of the loop saw, per tunnel: when Prometheus first showed the alert firing, and
/// the last view Alertmanager gave of it.
#[derive(Default)]
struct Seen {
    firing: BTreeMap<String, Instant>,
    prometheus: BTreeMap<String, Value>,
    am: BTreeMap<String, Value>,
}

impl Seen {
    fn look(&mut self, stack: &Stack, node: &str, tunnels: &[&str]) {
        for tunnel in tunnels {
            if let Some(alert) = stack.orphan_alert(node, tunnel) {
                if alert["state"] == "firing" && !self.firing.contains_key(*tunnel) {
                    self.firing.insert((*tunnel).to_owned(), Instant::now());
                }
                self.prometheus.insert((*tunnel).to_owned(), alert);
            }
            if let Some(a) = stack.am_alert(node, tunnel) {
                self.am.insert((*tunnel).to_owned(), a);
            }
        }
    }
}

#[test]
fn alertmanager_drives_the_cleanup_on_the_right_node_only() {
    // Node A: two healthy tunnels, an orphaned unit, a stray core, and a core that belongs to a
    // unit that is no tunnel's (its config in config_dir too). Node B: one healthy tunnel.
    let mut a = Node::boot("loop-a", "node-a");
    let mut b = Node::boot("loop-b", "node-b");
    a.tunnels(&["alpha", "beta", "ghost"]);
    a.foreign_service("svc");
    let stray = a.stray("stray");
    b.tunnel("gamma");
    a.delete_config("ghost");
    let remediation = "min_orphan_age = \"3s\"\n";
    a.start_warden(remediation);
    b.start_warden(remediation);
    let stray_pid = a.manual[stray].pid;
    let healthy = |n: &Node, units: &[&str]| -> Vec<(String, String)> {
        units.iter().map(|u| n.pid_and_restarts(u)).collect()
    };
    let a_units = [
        "xray-tunnel-alpha.service",
        "xray-tunnel-beta.service",
        "xray.service",
    ];
    let before_a = healthy(&a, &a_units);
    let before_b = healthy(&b, &["xray-tunnel-gamma.service"]);
    let svc_pid = before_a[2].0.clone();
    a.warden().wait_for("both orphans seen", WAIT, |s| {
        s.value(
            "xray_tunnel_orphaned",
            &[("tunnel", "ghost"), ("kind", UNIT_WITHOUT_CONFIG)],
        ) == Some(1.0)
            && s.value(
                "xray_tunnel_orphaned",
                &[("tunnel", "stray"), ("kind", STRAY)],
            ) == Some(1.0)
    });

    let stack = Stack::start(&[&a, &b]);
    let started = Instant::now();
    let mut seen = Seen::default();
    a.wait(
        "the orphan unit removed and the stray stopped",
        WAIT,
        || {
            seen.look(&stack, "node-a", &["ghost", "stray"]);
            a.unit_gone("ghost") && a.manual[stray].exited()
        },
    );
    let closed = started.elapsed();
    let gone = Instant::now();
    for tunnel in ["ghost", "stray"] {
        a.wait_audited(tunnel, "done", WAIT);
        b.wait_audited(tunnel, "ignored_other_node", WAIT);
    }
    eprintln!(
        "loop closed {closed:.1?} after Prometheus started; firing -> both gone: {:?} (fast group_wait {})",
        seen.firing.values().map(|t| gone - *t).collect::<Vec<_>>(),
        stack::FAST_GROUP_WAIT
    );
    assert!(
        a.sandbox
            .read_file(&format!("/proc/{stray_pid}/stat"))
            .is_err(),
        "the stray's PID is gone inside the sandbox"
    );

    // Nothing else moved: the healthy tunnels, the foreign core, node B.
    assert_eq!(
        healthy(&a, &a_units),
        before_a,
        "node A's healthy units untouched"
    );
    assert_eq!(healthy(&b, &["xray-tunnel-gamma.service"]), before_b);
    a.assert_running(&["alpha", "beta"]);
    b.assert_running(&["gamma"]);
    let svc_state = a
        .sandbox
        .read_file(&format!("/proc/{svc_pid}/comm"))
        .unwrap();
    assert_eq!(svc_state.trim(), "v2ray", "xray.service's core still runs");
    assert!(a.config_path("svc").exists() && a.config_path("alpha").exists());
    let counts_a = a.action_counts();
    let counts_b = b.action_counts();
    assert!(counts_a["done"] >= 2.0, "{counts_a:?}");
    assert_eq!(counts_b["done"], 0.0, "{counts_b:?}");
    assert!(counts_b["ignored_other_node"] >= 2.0, "{counts_b:?}");
    assert!(b.audited("ghost").iter().all(|r| r == "ignored_other_node"));

    // Every node's webhook got the action alert with the token, and the people got it too.
    let orphan_alert = |r: &support::prom::Received| r.body.contains("XrayTunnelOrphaned");
    let spare = stack.spare.wait_for("the action alert", WAIT, orphan_alert);
    assert_eq!(
        spare.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    stack
        .operators
        .wait_for("the action alert", WAIT, orphan_alert);

    // A replay of the very incident Alertmanager delivered: a duplicate, nothing happens.
    let delivered = seen
        .am
        .get("ghost")
        .expect("Alertmanager showed the ghost's alert");
    let replay = Alert::from_alertmanager(delivered);
    assert_eq!(
        fingerprint(&replay.labels),
        replay.fingerprint,
        "the test's fingerprint is Alertmanager's"
    );
    let before = a.action_counts();
    assert_eq!(a.post(Some(TOKEN), &body(&[replay])), 202);
    a.wait_audited("ghost", "duplicate", WAIT);
    assert_eq!(delta(&before, &a.action_counts()), one("duplicate"));

    // The shipped Alertmanager timings, measured once: firing in Prometheus -> orphan gone.
    stack.shipped_timings();
    a.tunnel("late");
    a.delete_config("late");
    let mut seen = Seen::default();
    a.wait("the late orphan removed", Duration::from_secs(90), || {
        seen.look(&stack, "node-a", &["late"]);
        a.unit_gone("late")
    });
    let (gone, gone_at) = (Instant::now(), SystemTime::now());
    let firing = seen
        .firing
        .get("late")
        .expect("Prometheus showed the alert firing");
    // The rule's own account: pending since activeAt, firing once `for:` has passed.
    let active_at = seen.prometheus["late"]["activeAt"]
        .as_str()
        .unwrap()
        .to_owned();
    let active_at = humantime::parse_rfc3339(&active_at).expect("activeAt is RFC 3339");
    let fired_at = active_at + orphan_rule_for();
    eprintln!(
        "FIGURE alert firing in Prometheus -> orphan unit gone, Alertmanager example's group_wait \
         {:?}: {:.1?} from activeAt + for, {:.1?} from the first poll that showed it firing",
        stack::shipped_group_waits(),
        gone_at.duration_since(fired_at).unwrap_or_default(),
        gone - *firing
    );
    a.wait_audited("late", "done", WAIT);
    assert_eq!(healthy(&a, &a_units), before_a);
    assert_eq!(healthy(&b, &["xray-tunnel-gamma.service"]), before_b);
}

/// The fast variant's `for:` of the action alert.
fn orphan_rule_for() -> Duration {
    let rules = &stack::fast_rules()["orphans.rules.yml"].text;
    let ms = parse_duration(&for_of(&alert_block(rules, "XrayTunnelOrphaned"))).unwrap();
    Duration::from_millis(ms)
}

fn one(result: &str) -> BTreeMap<String, f64> {
    BTreeMap::from([(result.to_owned(), 1.0)])
}

// ---------------------------------------------------------------------------------------------
// The harness on its own
// ---------------------------------------------------------------------------------------------

/// Prometheus evaluates a fast rule and Alertmanager delivers it with the bearer token to a
/// local listener; both stop by PID and leave no directory behind.
#[test]
fn the_servers_deliver_to_a_local_listener_and_stop_by_pid() {
    let sink = Sink::start();
    let am_config = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n\
         receivers:\n- name: hook\n  webhook_configs:\n  - url: {}\n    http_config:\n      \
         authorization:\n        type: Bearer\n        credentials_file: token\n",
        sink.url("/api/v1/alerts")
    );
    let am = Alertmanager::start(&am_config, &[("token".into(), TOKEN.into())]);
    let rules = "groups:\n- name: g\n  rules:\n  - alert: Up\n    expr: max_over_time(up[1m]) == 1\n    \
                 for: 2m\n    labels:\n      warden_action: none\n";
    let fast = speed_up_rules(rules, 60);
    let prom_config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules/*.yml]\n\
         alerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['{}']\n\
         scrape_configs:\n- job_name: sink\n  static_configs:\n  - targets: ['{}']\n",
        am.server.addr, sink.addr
    );
    let prom = Prometheus::start(&prom_config, &[("rules/fast.yml".into(), fast.text)]);
    let got = sink.wait_for("a firing Up", WAIT, |r| r.body.contains("\"Up\""));
    assert_eq!(
        got.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let payload: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(payload["version"], "4");
    assert_eq!(payload["alerts"][0]["status"], "firing");

    let pids = [prom.server.pid(), am.server.pid()];
    let dirs = [prom.dir.path.clone(), am.dir.path.clone()];
    drop((prom, am));
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} runs"
        );
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

// ---------------------------------------------------------------------------------------------
// The webhook's own checks, by direct posts
// ---------------------------------------------------------------------------------------------

/// A firing action alert for `tunnel` (kind unit_without_config) on `node`, started now.
fn orphan_alert(node: &str, tunnel: &str) -> Alert {
    Alert::firing(orphan_labels(node, tunnel, UNIT_WITHOUT_CONFIG))
}

/// Posts `alert`, waits for its audit line, and returns what the counters did meanwhile.
fn decide(node: &Node, alert: &Alert, expect: &str) -> BTreeMap<String, f64> {
    let tunnel = alert.labels["tunnel"].as_str().unwrap().to_owned();
    let before = node.action_counts();
    let audited = node.audited(&tunnel).len();
    assert_eq!(
        node.post(Some(TOKEN), &body(std::slice::from_ref(alert))),
        202
    );
    node.wait(&format!("a decision on {tunnel}"), WAIT, || {
        node.audited(&tunnel).len() > audited
    });
    let last = node.audited(&tunnel).pop().unwrap();
    let log = node.warden().log();
    let about: Vec<&str> = log.lines().filter(|l| l.contains(&tunnel)).collect();
    assert_eq!(
        last,
        expect,
        "decision on {tunnel}; log:\n{}",
        about.join("\n")
    );
    let moved = delta(&before, &node.action_counts());
    assert_eq!(moved, one(expect), "counters for {tunnel}");
    moved
}

#[test]
fn the_webhook_acts_only_on_what_it_can_verify() {
    let mut n = Node::boot("loop-hook", "node-h");
    n.tunnels(&["alpha", "beta", "o1"]);
    n.delete_config("o1");
    let age = Duration::from_secs(2);
    let config = "min_orphan_age = \"2s\"\nmax_actions_per_hour = 100\n";
    n.start_warden(config);
    let healthy_before = n.pid_and_restarts("xray-tunnel-alpha.service");
    n.wait_orphan_aged("o1", UNIT_WITHOUT_CONFIG, age);
    let o1 = orphan_alert(&n.name, "o1");

    // No token, a wrong token: 401, and nothing is decided, counted or changed.
    let before = n.action_counts();
    let payload = body(std::slice::from_ref(&o1));
    assert_eq!(n.post(None, &payload), 401);
    assert_eq!(n.post(Some("not-the-token"), &payload), 401);
    // Malformed and oversized bodies: 4xx (Alertmanager does not retry those).
    let malformed = n.post(Some(TOKEN), "{\"version\": \"4\", \"alerts\": 5}");
    assert!((400..500).contains(&malformed), "malformed: {malformed}");
    let oversized = format!("{{\"pad\": \"{}\"}}", "x".repeat(1 << 20));
    let status = n.post(Some(TOKEN), &oversized);
    assert!((400..500).contains(&status), "oversized: {status}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(n.action_counts(), before);
    assert!(n.alert_audit().is_empty(), "{:?}", n.alert_audit());
    n.assert_running(&["o1"]);

    // Alerts the warden must not act on, each for its own reason.
    decide(&n, &o1.resolved(), "ignored_resolved");
    decide(
        &n,
        &orphan_alert("node-elsewhere", "o1"),
        "ignored_other_node",
    );
    let mut reboot = orphan_alert(&n.name, "o1");
    reboot
        .labels
        .insert("warden_action".into(), "reboot".into());
    decide(&n, &reboot, "ignored_unknown_action");
    decide(&n, &orphan_alert(&n.name, "alpha"), "refused_not_orphan");
    n.assert_running(&["o1", "alpha"]);
    assert_eq!(
        n.pid_and_restarts("xray-tunnel-alpha.service"),
        healthy_before
    );

    // An orphan the warden has seen for less than min_orphan_age.
    n.tunnel("young");
    n.delete_config("young");
    let young = [("tunnel", "young"), ("kind", UNIT_WITHOUT_CONFIG)];
    n.warden().wait_for("young seen", WAIT, |s| {
        s.value("xray_tunnel_orphaned", &young) == Some(1.0)
    });
    decide(&n, &orphan_alert(&n.name, "young"), "refused_too_young");
    n.assert_running(&["young"]);

    // The real thing, then its replay.
    decide(&n, &o1, "done");
    assert!(n.unit_gone("o1"));
    decide(&n, &o1, "duplicate");
    // Remembered across a restart of the warden (the record lives in users.state_dir).
    n.start_warden(config);
    decide(&n, &o1, "duplicate");
    // The same tunnel orphaned again within the cooldown: a new incident, refused.
    n.tunnel("o1");
    n.delete_config("o1");
    n.wait_orphan_aged("o1", UNIT_WITHOUT_CONFIG, age);
    decide(&n, &orphan_alert(&n.name, "o1"), "refused_cooldown");
    n.assert_running(&["o1"]);
    assert_eq!(
        n.pid_and_restarts("xray-tunnel-alpha.service"),
        healthy_before
    );

    // Figure: webhook received -> orphan unit gone, one orphan at a time.
    for id in ["o1", "young"] {
        n.sandbox.systemctl(&["stop", &node::unit(id)]);
        n.sandbox.remove_unit(&node::unit(id));
    }
    n.sandbox.systemctl(&["daemon-reload"]);
    let mut took = Vec::new();
    for i in 0..10 {
        let id = format!("fig{i}");
        n.tunnel(&id);
        n.delete_config(&id);
        n.wait_orphan_aged(&id, UNIT_WITHOUT_CONFIG, age);
        let alert = orphan_alert(&n.name, &id);
        let posted = Instant::now();
        assert_eq!(n.post(Some(TOKEN), &body(&[alert])), 202);
        n.wait(&format!("{id} gone"), WAIT, || n.unit_gone(&id));
        took.push(posted.elapsed());
        n.wait_audited(&id, "done", WAIT);
    }
    took.sort();
    eprintln!(
        "FIGURE webhook received -> orphan unit gone (file removed, unit not loaded), median of 10: \
         {:.0?} (min {:.0?}, max {:.0?})",
        took[4] + (took[5] - took[4]) / 2,
        took[0],
        took[9]
    );
    n.assert_running(&["alpha", "beta"]);
    assert_eq!(
        n.pid_and_restarts("xray-tunnel-alpha.service"),
        healthy_before
    );
}

// ---------------------------------------------------------------------------------------------
// Guard, dry run, disabled
// ---------------------------------------------------------------------------------------------

#[test]
fn guard_dry_run_disabled_and_budget_refuse() {
    let mut n = Node::boot("loop-guard", "node-g");
    let ids = ["t1", "t2", "t3", "t4"];
    n.tunnels(&ids);
    let before: Vec<_> = ids
        .iter()
        .map(|id| n.pid_and_restarts(&node::unit(id)))
        .collect();
    let after = |n: &Node| -> Vec<_> {
        ids.iter()
            .map(|id| n.pid_and_restarts(&node::unit(id)))
            .collect()
    };
    // Three of four configs gone at once: what a broken config_dir looks like.
    for id in &ids[..3] {
        n.delete_config(id);
    }
    let age = Duration::from_secs(1);
    n.start_warden("min_orphan_age = \"1s\"\n");
    n.warden().wait_for("the guard tripped", WAIT, |s| {
        s.value("xray_warden_orphan_guard_tripped", &[]) == Some(1.0)
    });
    n.wait_orphan_aged("t1", UNIT_WITHOUT_CONFIG, age);
    decide(&n, &orphan_alert(&n.name, "t1"), "refused_guard");
    decide(&n, &orphan_alert(&n.name, "t2"), "refused_guard");
    n.assert_running(&ids);
    assert_eq!(after(&n), before, "no tunnel restarted");

    // One orphan of four: a dry run only reports; disabled refuses.
    for id in &ids[1..3] {
        std::fs::write(n.config_path(id), "{}").unwrap();
    }
    n.start_warden("min_orphan_age = \"1s\"\ndry_run = true\n");
    n.wait_orphan_aged("t1", UNIT_WITHOUT_CONFIG, age);
    decide(&n, &orphan_alert(&n.name, "t1"), "dry_run");
    n.start_warden("min_orphan_age = \"1s\"\nenabled = false\n");
    n.wait_orphan_aged("t1", UNIT_WITHOUT_CONFIG, age);
    decide(&n, &orphan_alert(&n.name, "t1"), "refused_disabled");
    n.assert_running(&ids);
    assert_eq!(after(&n), before, "no tunnel restarted");

    // The hourly budget: one action allowed, the next orphan refused.
    n.start_warden("min_orphan_age = \"1s\"\nmax_actions_per_hour = 1\n");
    n.wait_orphan_aged("t1", UNIT_WITHOUT_CONFIG, age);
    decide(&n, &orphan_alert(&n.name, "t1"), "done");
    assert!(n.unit_gone("t1"));
    n.delete_config("t2");
    n.wait_orphan_aged("t2", UNIT_WITHOUT_CONFIG, age);
    decide(&n, &orphan_alert(&n.name, "t2"), "refused_budget");
    n.assert_running(&ids[1..]);
    assert_eq!(after(&n)[1..], before[1..], "no other tunnel restarted");
}

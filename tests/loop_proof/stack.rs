//! The running monitoring stack of the loop proof: one Prometheus and one Alertmanager for every
//! node, configured from the shipped files (derive.rs), and what a watch of them saw.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::derive;
use crate::node::{Node, TOKEN};
use crate::support::prom::{Alertmanager, Prometheus, Scratch, Sink};

/// Where the derived Alertmanager config finds the token: next to alertmanager.yml, which
/// Alertmanager resolves relative paths against.
const TOKEN_FILE: &str = "xray-warden.token";

/// Prometheus and Alertmanager for these nodes. The example's nodes the test has no node for
/// are played by `spare`, a plain receiver that also serves an empty scrape; the people's
/// receiver is `operators`. Fields drop in order: the servers before the receivers.
pub struct Stack {
    pub prometheus: Prometheus,
    pub alertmanager: Alertmanager,
    urls: BTreeMap<String, SocketAddr>,
    pub operators: Sink,
    pub spare: Sink,
}

impl Stack {
    /// Starts Alertmanager (fast timings) and Prometheus (fast rules) for `nodes`, whose
    /// wardens must run: the example's targets and webhooks are matched to them by node name.
    pub fn start(nodes: &[&Node]) -> Stack {
        let (operators, spare) = (Sink::start(), Sink::start());
        let targets = derive::example_targets();
        let node_addr = |name: &str| {
            let node = nodes.iter().find(|n| n.name == name);
            node.map_or(spare.addr, |n| n.warden().addr)
        };
        // A webhook of the example goes to the node scraped at the same address; any other
        // URL is the people's.
        let mut urls = BTreeMap::new();
        for authority in derive::example_webhook_authorities() {
            let scraped = targets.iter().find(|t| t.target == authority);
            let addr = scraped.map_or(operators.addr, |t| node_addr(&t.node));
            urls.insert(authority, addr);
        }
        let am_config = derive::alertmanager_config(&urls, Path::new(TOKEN_FILE), true);
        let token = [(TOKEN_FILE.to_owned(), TOKEN.to_owned())];
        let alertmanager = Alertmanager::start(&am_config, &token);

        let mut addrs = BTreeMap::new();
        for t in &targets {
            let addr = match t.section.as_str() {
                "alerting" => alertmanager.server.addr,
                _ => node_addr(&t.node),
            };
            addrs.insert(t.target.clone(), addr);
        }
        let prometheus = Prometheus::start(&derive::prometheus_config(&addrs), &fast_rule_files());
        Stack {
            prometheus,
            alertmanager,
            urls,
            operators,
            spare,
        }
    }

    /// Reloads Alertmanager with the example's own timings (group_wait, group_interval).
    pub fn shipped_timings(&self) {
        let config = derive::alertmanager_config(&self.urls, Path::new(TOKEN_FILE), false);
        self.alertmanager.reload(&config);
    }

    /// Prometheus's XrayTunnelOrphaned alert for `tunnel` on `node`, if pending or firing.
    pub fn orphan_alert(&self, node: &str, tunnel: &str) -> Option<Value> {
        self.prometheus.alerts().into_iter().find(|a| {
            let l = &a["labels"];
            l["alertname"] == "XrayTunnelOrphaned" && l["instance"] == node && l["tunnel"] == tunnel
        })
    }
}

/// The fast rules as (path relative to prometheus.yml, text).
fn fast_rule_files() -> Vec<(String, String)> {
    let scratch = Scratch::new("fast-rules");
    let files = derive::write_fast_rules(&scratch.path);
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(scratch.path.join(&f)).unwrap();
            (f, text)
        })
        .collect()
}

/// What a watch of the loop saw, per tunnel: when Prometheus first showed its action alert
/// firing, and the last view of that alert.
#[derive(Default)]
pub struct Seen {
    pub firing: BTreeMap<String, Instant>,
    pub alerts: BTreeMap<String, Value>,
}

impl Seen {
    pub fn look(&mut self, stack: &Stack, node: &str, tunnels: &[&str]) {
        for tunnel in tunnels {
            if let Some(alert) = stack.orphan_alert(node, tunnel) {
                if alert["state"] == "firing" && !self.firing.contains_key(*tunnel) {
                    self.firing.insert((*tunnel).to_owned(), Instant::now());
                }
                self.alerts.insert((*tunnel).to_owned(), alert);
            }
        }
    }
}

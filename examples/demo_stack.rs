//! Writes the demo's monitoring stack (scripts/demo.sh) into a directory, derived MECHANICALLY
//! from the files the repository ships, by the same code as the loop proof
//! (tests/support/prom/derive.rs and speedup.rs, included below by path):
//!
//! - `DIR/xray-warden/*.rules.yml`: alerts/*.yml with every duration divided by `SPEEDUP` (30);
//! - `DIR/prometheus.yml`: deploy/prometheus.example.yml scraping only its first node, played by
//!   the demo's warden, and sending to the demo's Alertmanager, every second;
//! - `DIR/alertmanager.yml`: deploy/alertmanager.example.yml with only that node's webhook (the
//!   other nodes' and the people's are left out) and fast `group_wait`/`group_interval`;
//! - `DIR/tunnel.service.template`: deploy/tunnel.service.template with `RestartSec` divided by
//!   the same factor, so a tunnel can crash-loop within the fast rules' crash window.
//!
//! It prints what the warden's config must agree with, one `key=value` a line: `node` (its
//! `[remediation] node`, the name the example gives the scraped node), `crash_window` (its
//! `[health] crash_window`, the example config's divided by the factor).
//!
//! `demo_stack DIR WARDEN_ADDR ALERTMANAGER_ADDR TOKEN_FILE`, e.g.
//! `demo_stack target/demo/run-x/stack 127.0.0.1:9550 127.0.0.1:9593 /abs/api-token`.
//!
//! Why an example and not product code: it reads the repository's own alerts/ and deploy/ (at
//! the path the crate was built from), panics on any shape it does not expect, and only makes a
//! fast throwaway stack for the demo; operators install the shipped files as they are
//! (deploy/*.example.yml say how). Being a target of this crate lets it reuse the tests'
//! derivation instead of a second copy in shell.

#[allow(dead_code)]
#[path = "../tests/support/prom/derive.rs"]
mod derive;
#[allow(dead_code)]
#[path = "../tests/support/prom/speedup.rs"]
mod speedup;

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: demo_stack DIR WARDEN_ADDR ALERTMANAGER_ADDR TOKEN_FILE";
const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, warden, alertmanager, token] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let (Ok(warden), Ok(alertmanager)) = (warden.parse(), alertmanager.parse()) else {
        eprintln!("WARDEN_ADDR and ALERTMANAGER_ADDR are addresses like 127.0.0.1:9550\n{USAGE}");
        return ExitCode::from(2);
    };
    let token = PathBuf::from(token);
    if !token.is_absolute() {
        eprintln!("TOKEN_FILE must be an absolute path\n{USAGE}");
        return ExitCode::from(2);
    }
    let dir = Path::new(dir);
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let node = write_stack(dir, warden, alertmanager, &token);
    println!("node={node}");
    println!(
        "crash_window={}",
        derive::fast(&example_setting("crash_window"))
    );
    ExitCode::SUCCESS
}

/// Writes the stack's files into `dir`; returns the name of the node the warden plays.
fn write_stack(dir: &Path, warden: SocketAddr, alertmanager: SocketAddr, token: &Path) -> String {
    let targets = derive::example_targets();
    let node = targets
        .iter()
        .find(|t| t.section == "scrape_configs")
        .expect("deploy/prometheus.example.yml scrapes no node");
    let mut addrs = BTreeMap::new();
    addrs.insert(node.target.clone(), warden);
    for t in targets.iter().filter(|t| t.section == "alerting") {
        addrs.insert(t.target.clone(), alertmanager);
    }
    derive::write_fast_rules(dir);
    write(
        dir,
        "prometheus.yml",
        &derive::prometheus_config_for(&addrs),
    );

    // The node's webhook is the one at the address it is scraped at (as in the loop proof).
    let urls: BTreeMap<String, SocketAddr> = derive::example_webhook_authorities()
        .into_iter()
        .filter(|a| *a == node.target)
        .map(|a| (a, warden))
        .collect();
    assert_eq!(
        urls.len(),
        1,
        "no webhook of the example is {}",
        node.target
    );
    write(
        dir,
        "alertmanager.yml",
        &derive::alertmanager_config_for(&urls, token, true),
    );
    write(dir, "tunnel.service.template", &fast_unit_template());
    node.node.clone()
}

/// deploy/tunnel.service.template with its `RestartSec=` (seconds) divided by the factor.
fn fast_unit_template() -> String {
    let path = Path::new(REPO).join("deploy/tunnel.service.template");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut found = 0;
    let out: String = text
        .split_inclusive('\n')
        .map(|line| match line.strip_prefix("RestartSec=") {
            Some(value) => {
                let seconds: u64 = value.trim().parse().unwrap_or_else(|_| {
                    panic!("{}: RestartSec={value} is not in seconds", path.display())
                });
                found += 1;
                format!("RestartSec={}ms\n", seconds * 1000 / derive::SPEEDUP)
            }
            None => line.to_owned(),
        })
        .collect();
    assert_eq!(found, 1, "{}: one RestartSec= expected", path.display());
    out
}

/// The value of `key = "value"` in deploy/config.example.toml (one such key in the file).
fn example_setting(key: &str) -> String {
    let path = Path::new(REPO).join("deploy/config.example.toml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let values: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .collect();
    let [value] = values.as_slice() else {
        panic!("{}: {key} {} times", path.display(), values.len());
    };
    (*value).to_owned()
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

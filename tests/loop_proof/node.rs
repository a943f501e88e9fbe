//! One node of the loop proofs: a sandboxed systemd with V2Ray tunnels whose configs live in
//! `<state dir>/node/etc`, and the real warden inside it with a `[remediation]` section. What
//! the assertions read comes from the peers: systemd (`systemctl show`), the sandbox's /proc,
//! the unit directory, the warden's /metrics and its audit log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::cores::{Core, TunnelPorts, V2RAY, tunnel_config, tunnel_unit};
use crate::support::manual::Manual;
use crate::support::sandbox::Sandbox;
use crate::support::warden::{Scrape, Warden, http_post};

pub const TOKEN: &str = "loop-proof-token-0123456789abcdef";
pub const WEBHOOK: &str = "/api/v1/alerts";
const POLL: Duration = Duration::from_millis(20);

/// Fields drop in order: the warden and the hand-started processes before the sandbox halts.
pub struct Node {
    pub warden: Option<Warden>,
    pub manual: Vec<Manual>,
    /// The node's name: `[remediation] node`, and the `instance` label Prometheus gives it.
    pub name: String,
    pub dir: PathBuf,
    pub etc: PathBuf,
    pub sandbox: Sandbox,
}

impl Node {
    /// Boots a sandbox (named `sandbox`) for the node `name`; no warden yet.
    pub fn boot(sandbox: &str, name: &str) -> Node {
        let sandbox = Sandbox::boot(sandbox);
        let dir = sandbox.state_dir().join("node");
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        Node {
            warden: None,
            manual: Vec::new(),
            name: name.to_owned(),
            dir,
            etc,
            sandbox,
        }
    }

    /// Starts the warden with `remediation` as its `[remediation]` section (node = the node's
    /// name unless given) and a health pass every second, after stopping a running one.
    pub fn start_warden(&mut self, remediation: &str) {
        self.start_warden_with("1s", remediation);
    }

    /// [`Node::start_warden`] with a health pass (and orphan scan) every `health_interval`.
    pub fn start_warden_with(&mut self, health_interval: &str, remediation: &str) {
        if let Some(old) = self.warden.take() {
            assert!(old.stop().success(), "the previous warden failed");
        }
        let node_line = if remediation.contains("node =") {
            String::new()
        } else {
            format!("node = \"{}\"\n", self.name)
        };
        let config = format!(
            "[tunnels]\nconfig_dir = \"{etc}\"\nlog_dir = \"{d}/log\"\ncore_binary = \"{V2RAY}\"\n\
             user = \"nobody\"\ngroup = \"nogroup\"\n\
             [users]\nstate_dir = \"{d}/state\"\n\
             [api]\ntoken_file = \"{d}/token\"\naudit_log = \"{d}/audit.log\"\n\
             [health]\ninterval = \"{health_interval}\"\n[sampler]\ninterval = \"1s\"\n\
             [remediation]\n{node_line}{remediation}\n",
            etc = self.etc.display(),
            d = self.dir.display(),
        );
        let warden = Warden::start(&self.sandbox, &config);
        warden.wait_ready();
        self.warden = Some(warden);
    }

    pub fn warden(&self) -> &Warden {
        self.warden.as_ref().expect("the node's warden runs")
    }

    pub fn config_path(&self, id: &str) -> PathBuf {
        self.etc.join(format!("xray-{id}.json"))
    }

    /// A V2Ray tunnel `id` with its config in config_dir, installed, started, and serving (so
    /// its core has read its config).
    pub fn tunnel(&self, id: &str) {
        self.tunnels(&[id]);
    }

    /// Tunnels, installed with one daemon-reload, started, and serving.
    pub fn tunnels(&self, ids: &[&str]) {
        let ports: Vec<TunnelPorts> = ids.iter().map(|id| self.install(id)).collect();
        self.sandbox.systemctl(&["daemon-reload"]);
        let units: Vec<String> = ids.iter().map(|id| unit(id)).collect();
        let mut args = vec!["start"];
        args.extend(units.iter().map(String::as_str));
        self.sandbox.systemctl(&args);
        for p in ports {
            wait_listening(p.api);
        }
    }

    fn install(&self, id: &str) -> TunnelPorts {
        let path = self.config_path(id);
        let ports = TunnelPorts::free();
        std::fs::write(&path, tunnel_config(ports)).unwrap();
        self.sandbox
            .write_unit(&unit(id), &tunnel_unit(Core::V2ray, &path));
        ports
    }

    /// The app deletes the tunnel's config while its unit runs: the classic orphan.
    pub fn delete_config(&self, id: &str) {
        std::fs::remove_file(self.config_path(id)).unwrap();
    }

    /// A V2Ray core on a config in config_dir, started by hand in the sandbox's namespaces but
    /// in no unit (it stays in the test's cgroups): a stray. Returns its index in `manual`.
    pub fn stray(&mut self, id: &str) -> usize {
        let path = self.config_path(id);
        let ports = TunnelPorts::free();
        std::fs::write(&path, tunnel_config(ports)).unwrap();
        let config = path.to_str().unwrap().to_owned();
        let core = Manual::start(&self.sandbox, V2RAY, &["-config", &config]);
        self.manual.push(core);
        wait_listening(ports.api);
        self.manual.len() - 1
    }

    /// A core run by `xray.service`, a unit that is no tunnel's, on a config in config_dir (as
    /// a distro's own xray would be).
    pub fn foreign_service(&self, config_id: &str) {
        let path = self.config_path(config_id);
        let ports = TunnelPorts::free();
        std::fs::write(&path, tunnel_config(ports)).unwrap();
        let unit = format!(
            "[Unit]\nDescription=a core that is no tunnel\n[Service]\n\
             ExecStart={V2RAY} -config {}\nRestart=always\n",
            path.display()
        );
        self.sandbox.write_unit("xray.service", &unit);
        self.sandbox.systemctl(&["daemon-reload"]);
        self.sandbox.systemctl(&["start", "xray.service"]);
        wait_listening(ports.api);
    }

    /// (MainPID, NRestarts) of a unit, as systemd tells them.
    pub fn pid_and_restarts(&self, unit: &str) -> (String, String) {
        let p = self.sandbox.show(unit, &["MainPID", "NRestarts"]);
        (p["MainPID"].clone(), p["NRestarts"].clone())
    }

    /// Whether the tunnel's unit file is gone and systemd no longer has the unit loaded.
    pub fn unit_gone(&self, id: &str) -> bool {
        let file = self.sandbox.state_dir().join("units").join(unit(id));
        if file.exists() {
            return false;
        }
        let p = self.sandbox.show(&unit(id), &["LoadState", "ActiveState"]);
        p["LoadState"] == "not-found" && p["ActiveState"] == "inactive"
    }

    /// Whether the tunnel's unit file exists and its unit is loaded and active.
    pub fn unit_running(&self, id: &str) -> bool {
        let file = self.sandbox.state_dir().join("units").join(unit(id));
        let p = self.sandbox.show(&unit(id), &["LoadState", "ActiveState"]);
        file.exists() && p["LoadState"] == "loaded" && p["ActiveState"] == "active"
    }

    /// Asserts that each tunnel of `ids` is installed, loaded and active.
    pub fn assert_running(&self, ids: &[&str]) {
        for id in ids {
            let p = self
                .sandbox
                .show(&unit(id), &["LoadState", "ActiveState", "SubState"]);
            assert!(
                self.unit_running(id),
                "{}: {id} is not running: {p:?}\n--- audit: {:#?}\n--- log:\n{}",
                self.name,
                self.alert_audit(),
                self.warden.as_ref().map(Warden::log).unwrap_or_default()
            );
        }
    }

    /// Posts `body` to the webhook with `token`; returns the status.
    pub fn post(&self, token: Option<&str>, body: &str) -> u16 {
        let addr = self.warden().addr;
        http_post(addr, WEBHOOK, token, body)
            .unwrap_or_else(|e| panic!("POST {WEBHOOK} to {}: {e}", self.name))
            .0
    }

    /// The audit log's complete lines about alerts, oldest first; a line still being appended
    /// (no newline yet) is left for the next read.
    pub fn alert_audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .filter(|v: &Value| v["action"] == "alert.cleanup_orphan")
            .collect()
    }

    /// The results audited for `tunnel`, oldest first.
    pub fn audited(&self, tunnel: &str) -> Vec<String> {
        let lines = self.alert_audit();
        let about = lines.iter().filter(|l| l["target"] == tunnel);
        about
            .map(|l| l["result"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Polls the audit log until `tunnel` has a line with `result`; panics after `timeout`.
    pub fn wait_audited(&self, tunnel: &str, result: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.audited(tunnel).iter().any(|r| r == result) {
            assert!(
                Instant::now() < deadline,
                "{}: no audit line {result} for {tunnel}; audit: {:#?}\n--- log:\n{}",
                self.name,
                self.alert_audit(),
                self.warden().log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// `xray_warden_alert_actions_total{action="cleanup_orphan"}` by result.
    pub fn action_counts(&self) -> BTreeMap<String, f64> {
        action_counts(&self.warden().scrape())
    }

    /// Polls until `cond` holds; panics naming `what` (with the warden's log) after `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "{}: timed out after {timeout:?} waiting for {what}\n--- audit: {:#?}\n--- log:\n{}",
                self.name,
                self.alert_audit(),
                self.warden.as_ref().map(Warden::log).unwrap_or_default()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the warden has reported `tunnel` as an orphan of `kind` for `age`.
    pub fn wait_orphan_aged(&self, tunnel: &str, kind: &str, age: Duration) {
        let labels = [("tunnel", tunnel), ("kind", kind)];
        let what = format!("{tunnel} an orphan ({kind}) for {age:?}");
        let scrape = self.warden().wait_for(&what, Duration::from_secs(30), |s| {
            s.value("xray_tunnel_orphaned", &labels) == Some(1.0)
        });
        let since = scrape
            .value("xray_tunnel_orphaned_since_seconds", &labels)
            .unwrap_or_else(|| panic!("no orphaned_since for {tunnel}:\n{}", scrape.0));
        let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs_f64();
        let left = age.as_secs_f64() - (now - since);
        if left > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(left + 0.2));
        }
    }
}

/// `xray-tunnel-{id}.service`.
pub fn unit(id: &str) -> String {
    format!("xray-tunnel-{id}.service")
}

/// `xray_warden_alert_actions_total{action="cleanup_orphan"}` by result, from one scrape.
pub fn action_counts(scrape: &Scrape) -> BTreeMap<String, f64> {
    let prefix = "xray_warden_alert_actions_total{";
    let mut counts = BTreeMap::new();
    for line in scrape.0.lines().filter(|l| l.starts_with(prefix)) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !series.contains("action=\"cleanup_orphan\"") {
            continue;
        }
        let result = series
            .split("result=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        if let (Some(result), Ok(value)) = (result, value.parse()) {
            counts.insert(result.to_owned(), value);
        }
    }
    counts
}

/// What changed between two counter readings, results that did not move left out.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(POLL);
    }
}

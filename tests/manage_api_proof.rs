//! Proof tier for tunnel management over the HTTP API: the real warden in the systemd sandbox
//! creates, restarts and deletes REAL tunnels through systemd's D-Bus API, once per real core
//! (Xray-core and V2Ray 4.34), a REAL client of the same core connects through them, and bad
//! requests change nothing. Needs root:
//! `cargo test --test manage_api_proof`.

mod support;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use support::cores::{Core, Origin, VlessClient, fetch_via, free_port};
use support::node::{Node, TOKEN};
use support::warden::http_call;
use xray_warden::contract::{
    ActionName, BulkItem, BulkResults, CleanupResults, ErrorBody, HealthReport, LogsView,
    OrphanList, OutcomeView, TunnelList, TunnelView, UsageList,
};

per_core!(
    tunnels_are_created_served_restarted_and_deleted,
    bad_requests_change_nothing,
    orphans_are_reported_and_cleaned_up_without_touching_healthy_tunnels,
    a_started_mutation_outlives_a_client_that_hangs_up,
);

const ALICE: &str = "0f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f";
const WAIT: Duration = Duration::from_secs(20);
/// Fast health passes and samples, for the proofs that wait on them.
const MANAGE: &str = "[health]\ninterval = \"300ms\"\n[sampler]\ninterval = \"1s\"\n";

/// `answer` read as the contract type `T`; an answer of another shape fails the test.
fn read<T: DeserializeOwned>(answer: &Value) -> T {
    T::deserialize(answer).unwrap_or_else(|err| panic!("{err}: {answer}"))
}

/// A V2Ray server config with one VLESS inbound holding alice.
fn tunnel_json(port: u16) -> String {
    format!(
        r#"{{"log": {{"loglevel": "warning"}},
 "inbounds": [{{"tag": "vless-in", "listen": "127.0.0.1", "port": {port}, "protocol": "vless",
   "settings": {{"clients": [{{"id": "{ALICE}", "email": "alice@example.com"}}], "decryption": "none"}}}}],
 "outbounds": [{{"protocol": "freedom"}}]}}"#
    )
}

fn fetch_ok(client: &VlessClient, origin: &Origin) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match fetch_via(client.socks, origin) {
            Ok(body) => return assert_eq!(body, "through a managed tunnel"),
            Err(err) if std::time::Instant::now() > deadline => panic!("no connection: {err}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn tunnels_are_created_served_restarted_and_deleted(core: Core) {
    let node = Node::boot_on("manage-life", core, MANAGE);
    let origin = Origin::start("through a managed tunnel");
    let port = free_port();

    let (status, answer) = node.call("PUT", "/api/v1/tunnels/edge", &tunnel_json(port));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(read::<OutcomeView>(&answer).action, ActionName::Created);
    let client = VlessClient::start(core, &node.dir, "alice", port, ALICE);
    fetch_ok(&client, &origin);
    let (status, shown) = node.call("GET", "/api/v1/tunnels/edge", "");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(read::<TunnelView>(&shown).unit, "xray-tunnel-edge.service");

    // Restart: a new main process; the tunnel serves again.
    let before = main_pid(&node, "edge");
    let (status, answer) = node.call("POST", "/api/v1/tunnels/edge/restart", "");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(read::<OutcomeView>(&answer).action, ActionName::Restarted);
    assert_ne!(main_pid(&node, "edge"), before);
    fetch_ok(&client, &origin);

    // Restart-all restarts each tunnel.
    let second = free_port();
    assert_eq!(
        node.call("PUT", "/api/v1/tunnels/second", &tunnel_json(second))
            .0,
        200
    );
    let pids = (main_pid(&node, "edge"), main_pid(&node, "second"));
    let (status, answer) = node.call("POST", "/api/v1/tunnels/restart-all", "");
    assert_eq!(status, 200, "{answer}");
    let restarted: Vec<_> = read::<BulkResults>(&answer)
        .results
        .into_iter()
        .map(|item| match item {
            BulkItem::Done(o) => (o.id, o.action),
            BulkItem::Failed(f) => panic!("{} failed: {}", f.id, f.message),
        })
        .collect();
    assert_eq!(
        restarted,
        [
            ("edge", ActionName::Restarted),
            ("second", ActionName::Restarted)
        ]
        .map(|(id, action)| (id.to_owned(), action))
    );
    assert_ne!(main_pid(&node, "edge"), pids.0);
    assert_ne!(main_pid(&node, "second"), pids.1);

    // The web app's existing contract, on the same token.
    let services = |action: &str| {
        let (status, answer) = node.call("GET", &format!("/api/services?action={action}"), "");
        assert_eq!(status, 200, "{action}: {answer}");
        answer
    };
    // The snapshot may lag systemd by a moment: read the shapes, not the states.
    read::<TunnelList>(&services("list"));
    read::<UsageList>(&services("resource-usage"));
    read::<HealthReport>(&services("health-check"));
    let logs = read::<LogsView>(&services("logs&tunnelId=edge&lines=3"));
    assert!(logs.id == "edge" && logs.lines.len() <= 3, "{logs:?}");
    assert_eq!(node.call("GET", "/api/services?action=explode", "").0, 400);
    assert_eq!(
        node.call("DELETE", "/api/services", "").0,
        400,
        "needs confirm=true"
    );
    let (status, answer) = node.call(
        "POST",
        "/api/services",
        r#"{"action": "cleanup-orphaned", "dryRun": true}"#,
    );
    assert_eq!(status, 200, "{answer}");
    assert!(read::<CleanupResults>(&answer).dry_run, "{answer}");

    // The CLI reaches the same API through the daemon's config.
    let cli_config = node.dir.join("cli.toml");
    let text = format!(
        "listen = \"{}\"\n[api]\ntoken_file = \"{}\"\n",
        node.warden.addr,
        node.dir.join("token").display()
    );
    std::fs::write(&cli_config, text).unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xray-warden"))
            .args(args)
            .arg("--config")
            .arg(&cli_config)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    assert!(cli(&["tunnels", "list"]).contains("edge"));
    let listed: TunnelList = serde_json::from_str(&cli(&["tunnels", "list", "--json"])).unwrap();
    assert!(listed.tunnels.iter().any(|t| t.id == "edge"));
    assert!(cli(&["tunnels", "show", "edge"]).contains("xray-tunnel-edge.service"));
    assert!(cli(&["health"]).starts_with("systemd: up"));
    cli(&["orphans", "list"]);

    // Logs are bounded.
    let (status, answer) = node.call("GET", "/api/v1/tunnels/edge/logs?lines=5", "");
    assert_eq!(status, 200, "{answer}");
    assert!(read::<LogsView>(&answer).lines.len() <= 5, "{answer}");
    assert_eq!(
        node.call("GET", "/api/v1/tunnels/edge/logs?lines=1000000", "")
            .0,
        400
    );

    // Delete leaves no unit and no config.
    let (status, answer) = node.call("DELETE", "/api/v1/tunnels/edge", "");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(read::<OutcomeView>(&answer).action, ActionName::Deleted);
    let load = node
        .sandbox
        .show("xray-tunnel-edge.service", &["LoadState"]);
    assert_eq!(load["LoadState"], "not-found");
    assert!(!node.dir.join("etc/xray-edge.json").exists());
    assert!(
        !node
            .sandbox
            .state_dir()
            .join("units/xray-tunnel-edge.service")
            .exists()
    );
    assert!(fetch_via(client.socks, &origin).is_err());
    assert_eq!(node.call("DELETE", "/api/v1/tunnels/edge", "").0, 404);

    // Every mutating call was audited.
    let audit = std::fs::read_to_string(node.dir.join("audit.log")).unwrap();
    for action in [
        "tunnel.put",
        "tunnel.restart",
        "tunnels.restart_all",
        "tunnel.delete",
    ] {
        assert!(
            audit.contains(&format!("\"action\":\"{action}\"")),
            "{action} missing:\n{audit}"
        );
    }
}

fn bad_requests_change_nothing(core: Core) {
    let node = Node::boot_on("manage-bad", core, MANAGE);
    let port = free_port();
    assert_eq!(
        node.call("PUT", "/api/v1/tunnels/keep", &tunnel_json(port))
            .0,
        200
    );
    let before = node.footprint();
    let pid = main_pid(&node, "keep");

    let long = "x".repeat(65);
    for id in ["..%2Fx", "a%20b", long.as_str(), "x%3Brm", "-lead"] {
        let (status, answer) = node.call(
            "PUT",
            &format!("/api/v1/tunnels/{id}"),
            &tunnel_json(free_port()),
        );
        assert_eq!(status, 400, "{id}: {answer}");
        assert_eq!(
            read::<ErrorBody>(&answer).error,
            "invalid_id",
            "{id}: {answer}"
        );
        assert_eq!(
            node.call("DELETE", &format!("/api/v1/tunnels/{id}"), "").0,
            400,
            "{id}"
        );
        assert_eq!(
            node.call("POST", &format!("/api/v1/tunnels/{id}/stop"), "")
                .0,
            400,
            "{id}"
        );
    }
    let (status, answer) = node.call("PUT", "/api/v1/tunnels/fresh", "{ not json");
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = node.call(
        "PUT",
        "/api/v1/tunnels/fresh",
        r#"{"inbounds": [{"protocol": "no-such"}]}"#,
    );
    assert_eq!(status, 422, "{answer}");
    // A replace with a config the core rejects keeps the old tunnel as it was.
    let (status, _) = node.call(
        "PUT",
        "/api/v1/tunnels/keep",
        r#"{"inbounds": [{"protocol": "no-such"}]}"#,
    );
    assert_eq!(status, 422);
    assert_eq!(
        node.call("DELETE", "/api/v1/tunnels", "").0,
        400,
        "emergency cleanup needs confirm=true"
    );
    assert_eq!(node.call("POST", "/api/v1/tunnels/keep/explode", "").0, 404);

    // Without the token, or with a wrong one: 401 and nothing changes.
    for token in [None, Some("wrong-token-0123456789abcdef")] {
        for (method, path) in [
            ("DELETE", "/api/v1/tunnels/keep"),
            ("POST", "/api/v1/tunnels/keep/stop"),
            ("DELETE", "/api/v1/tunnels?confirm=true"),
        ] {
            let (status, _) = http_call(node.warden.addr, method, path, token, "").unwrap();
            assert_eq!(status, 401, "{method} {path}");
        }
    }
    assert_eq!(node.footprint(), before);
    assert_eq!(main_pid(&node, "keep"), pid);
}

fn orphans_are_reported_and_cleaned_up_without_touching_healthy_tunnels(core: Core) {
    // Three tunnels look orphaned beside four units: relax the guard, which has its own proof
    // (tests/health_proof.rs), so that this test shows the cleanup itself.
    let node = Node::boot_on(
        "manage-orphans",
        core,
        &format!("{MANAGE}[remediation]\nmax_orphan_fraction = 1.0\nmax_orphans_per_pass = 10\n"),
    );
    let port = free_port();
    assert_eq!(
        node.call("PUT", "/api/v1/tunnels/healthy", &tunnel_json(port))
            .0,
        200
    );
    // Two more healthy tunnels: three orphans among four units stay under the (relaxed) guard.
    for extra in ["healthy2", "healthy3"] {
        let path = format!("/api/v1/tunnels/{extra}");
        assert_eq!(node.call("PUT", &path, &tunnel_json(free_port())).0, 200);
    }
    let steady = node
        .sandbox
        .show("xray-tunnel-healthy.service", &["MainPID", "NRestarts"]);

    // A unit whose config the app deleted while it runs, a config without unit, and a stray
    // core started by hand (outside every unit) on a config in config_dir.
    assert_eq!(
        node.call("PUT", "/api/v1/tunnels/noconf", &tunnel_json(free_port()))
            .0,
        200
    );
    std::fs::remove_file(node.dir.join("etc/xray-noconf.json")).unwrap();
    let units = node.sandbox.state_dir().join("units");
    std::fs::write(
        node.dir.join("etc/xray-nounit.json"),
        tunnel_json(free_port()),
    )
    .unwrap();
    let stray_config = node.dir.join("etc/xray-ghost.json");
    std::fs::write(&stray_config, tunnel_json(free_port())).unwrap();
    let mut stray = node
        .sandbox
        .command(&core.bin_str())
        .args(core.args(&["-config", stray_config.to_str().unwrap()]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let kinds = |answer: &Value| -> Vec<String> {
        let mut kinds: Vec<String> = read::<OrphanList>(answer)
            .orphans
            .iter()
            .map(|o| format!("{}:{}", o.kind, o.tunnel))
            .collect();
        kinds.sort();
        kinds
    };
    let deadline = std::time::Instant::now() + WAIT;
    let found = loop {
        let (_, answer) = node.call("GET", "/api/v1/orphans", "");
        let k = kinds(&answer);
        if k.contains(&"stray_process:ghost".to_owned())
            && k.contains(&"unit_without_config:noconf".to_owned())
            && k.contains(&"config_without_unit:nounit".to_owned())
        {
            break k;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "orphans not reported: {answer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!found.iter().any(|k| k.ends_with(":healthy")), "{found:?}");

    // Dry run first: nothing changes.
    let (status, answer) = node.call("POST", "/api/v1/orphans/cleanup", r#"{"dry_run": true}"#);
    assert_eq!(status, 200, "{answer}");
    assert!(read::<CleanupResults>(&answer).dry_run, "{answer}");
    assert!(node.dir.join("etc/xray-nounit.json").exists());
    assert!(
        stray.try_wait().unwrap().is_none(),
        "a dry run stopped the stray core"
    );

    let (status, answer) = node.call("POST", "/api/v1/orphans/cleanup", r#"{"dry_run": false}"#);
    assert_eq!(status, 200, "{answer}");
    assert!(!read::<CleanupResults>(&answer).dry_run, "{answer}");
    assert!(!node.dir.join("etc/xray-nounit.json").exists(), "{answer}");
    assert!(
        !units.join("xray-tunnel-noconf.service").exists(),
        "{answer}"
    );
    let deadline = std::time::Instant::now() + WAIT;
    while stray.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stray core was not stopped: {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The healthy tunnel was not touched.
    let after = node
        .sandbox
        .show("xray-tunnel-healthy.service", &["MainPID", "NRestarts"]);
    assert_eq!(after, steady);
    assert!(node.dir.join("etc/xray-healthy.json").exists());
}

/// A client that sends a create and hangs up at once: the operation still runs to its end in
/// the daemon (config installed, unit started) and writes exactly one audit line. Before the
/// operations service, hyper dropped the handler half-way.
fn a_started_mutation_outlives_a_client_that_hangs_up(core: Core) {
    use std::io::Write;
    let node = Node::boot_on("manage-hangup", core, MANAGE);
    let body = tunnel_json(free_port());
    let mut stream = std::net::TcpStream::connect(node.warden.addr).unwrap();
    write!(
        stream,
        "PUT /api/v1/tunnels/hangup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    // Give the request time to reach the handler, then leave while the create is in flight
    // (the core's config test alone takes longer than this).
    std::thread::sleep(Duration::from_millis(50));
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);

    node.sandbox
        .wait_for("the abandoned create to finish", WAIT, || {
            node.sandbox
                .show("xray-tunnel-hangup.service", &["ActiveState"])["ActiveState"]
                == "active"
        });
    let audit_lines = || -> Vec<Value> {
        std::fs::read_to_string(node.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|l: &Value| l["target"] == "hangup")
            .collect()
    };
    node.sandbox
        .wait_for("the audit line", WAIT, || !audit_lines().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let lines = audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["action"], "tunnel.put");
    assert_eq!(lines[0]["result"], "ok");
    assert!(node.dir.join("etc/xray-hangup.json").exists());
}

fn main_pid(node: &Node, id: &str) -> String {
    node.show(id, "MainPID")
}

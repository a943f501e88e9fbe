//! Proof tier for the tunnel lifecycle, once per real core (Xray-core and V2Ray 4.34): the
//! library creates, replaces, restarts, deletes and cleans up REAL tunnels as units of a REAL
//! systemd (the namespace sandbox) over D-Bus, and a REAL client (a second process of the same
//! core, VLESS outbound) fetches a page through them.
//! `systemctl` inside the sandbox is used only as ground truth. Needs root:
//! `cargo test --test lifecycle_proof`.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::cores::{Core, Origin, TunnelPorts, VlessClient, fetch_via, tunnel_config};
use support::sandbox::Sandbox;
use xray_warden::config::{Config, TunnelsConfig};
use xray_warden::domain::TunnelId;
use xray_warden::domain::config_policy::AllowedTarget;
use xray_warden::lifecycle::template::{self, UnitValues};
use xray_warden::lifecycle::{Action, Lifecycle, LifecycleError, Outcome};
use xray_warden::systemd::{Client, JobResult};

per_core!(
    create_installs_a_hardened_unit_that_serves_a_real_client,
    replace_restart_stop_start_and_delete_leave_no_trace,
    restart_all_restarts_every_tunnel,
    bad_ids_bad_configs_and_failed_starts_change_nothing,
    emergency_cleanup_needs_confirmation_and_then_removes_everything,
    a_core_that_dies_right_after_its_start_is_rolled_back_with_its_own_complaint,
);

const ALICE: &str = "0f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f";
const PAGE: &str = "hello through a managed tunnel";
const NOBODY: u32 = 65534;

/// A sandbox, a runtime and a [`Lifecycle`] whose unit dir is the sandbox's
/// /etc/systemd/system and whose config and log dirs are in its state dir.
struct Node {
    core: Core,
    lifecycle: Lifecycle,
    client: Client,
    tunnels: TunnelsConfig,
    rt: tokio::runtime::Runtime,
    scratch: PathBuf,
    sandbox: Sandbox,
}

impl Node {
    fn boot(name: &str, core: Core) -> Node {
        Self::boot_allowing(name, core, &[])
    }

    /// Boots with `allow` as `[tunnels.policy] allow_targets`.
    fn boot_allowing(name: &str, core: Core, allow: &[String]) -> Node {
        let sandbox = Sandbox::boot(&format!("{name}-{core}"));
        let state = sandbox.state_dir().to_owned();
        let mut tunnels = Config::default().tunnels;
        tunnels.unit_dir = state.join("units");
        tunnels.config_dir = state.join("tunnels");
        tunnels.log_dir = state.join("log");
        tunnels.core_binary = core.bin();
        tunnels.user = "nobody".into();
        tunnels.group = "nogroup".into();
        tunnels.policy.allow = allow
            .iter()
            .map(|t| AllowedTarget::parse(t).unwrap())
            .collect();
        let mut systemd = Config::default().systemd;
        systemd.bus_address = Some(sandbox.bus_address());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(Client::connect(&systemd)).unwrap();
        let lifecycle = Lifecycle::new(client.clone(), tunnels.clone());
        let scratch = state.join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        Node {
            core,
            lifecycle,
            client,
            tunnels,
            rt,
            scratch,
            sandbox,
        }
    }

    fn create(&self, id: &TunnelId, config: &str) -> Result<Outcome, LifecycleError> {
        self.rt
            .block_on(self.lifecycle.create(id, config.as_bytes()))
    }

    fn show(&self, id: &TunnelId, prop: &str) -> String {
        self.sandbox
            .show(&id.unit_name(), &[prop])
            .remove(prop)
            .unwrap_or_default()
    }

    fn main_pid(&self, id: &TunnelId) -> u32 {
        let pid = self.show(id, "MainPID").parse().unwrap();
        assert_ne!(pid, 0, "{id} has no main process");
        pid
    }

    /// `systemctl list-units --all` of the tunnel units, as systemd inside sees them.
    fn listed_units(&self) -> String {
        self.sandbox.systemctl(&[
            "list-units",
            "--all",
            "--no-legend",
            "--plain",
            "xray-tunnel-*",
        ])
    }

    /// Every file under the unit, config and log dirs (recursively) with its content (a
    /// symlink's target), logs without theirs: they grow while tunnels run.
    fn files(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        for dir in [
            &self.tunnels.unit_dir,
            &self.tunnels.config_dir,
            &self.tunnels.log_dir,
        ] {
            walk(dir, &mut out);
        }
        out
    }
}

fn walk(path: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let content = if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            walk(&entry.unwrap().path(), out);
        }
        return;
    } else if meta.is_symlink() {
        format!("-> {}", std::fs::read_link(path).unwrap().display())
    } else if is_log(path) {
        String::new()
    } else {
        String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
    };
    out.insert(path.to_owned(), content);
}

fn is_log(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "log")
}

/// `files` without the logs, which stay by design.
fn without_logs(mut files: BTreeMap<PathBuf, String>) -> BTreeMap<PathBuf, String> {
    files.retain(|path, _| !is_log(path));
    files
}

fn id(text: &str) -> TunnelId {
    TunnelId::new(text).unwrap()
}

/// A V2Ray server config with the VLESS inbound holding one client, ALICE.
fn config_with_alice(ports: TunnelPorts, extra_inbound: Option<String>) -> String {
    let mut json: serde_json::Value = serde_json::from_str(&tunnel_config(ports)).unwrap();
    let inbounds = json["inbounds"].as_array_mut().unwrap();
    let vless = inbounds
        .iter_mut()
        .find(|i| i["tag"] == "vless-in")
        .unwrap();
    vless["settings"]["clients"] = serde_json::json!([{"id": ALICE, "email": "alice@example.com"}]);
    if let Some(inbound) = extra_inbound {
        inbounds.push(serde_json::from_str(&inbound).unwrap());
    }
    serde_json::to_string_pretty(&json).unwrap()
}

fn wait_fetch(client: &VlessClient, origin: &Origin) {
    let started = Instant::now();
    loop {
        match fetch_via(client.socks, origin) {
            Ok(body) => return assert_eq!(body, PAGE),
            Err(err) if started.elapsed() > Duration::from_secs(10) => {
                panic!("no page through the tunnel: {err}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A port below 1024 that nothing on 127.0.0.1 listens on (the sandbox shares the host's
/// network namespace).
fn free_low_port() -> u16 {
    (900..1024)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024")
}

/// `systemd-analyze security --offline=true FILE` on the host; the overall exposure figure.
fn exposure(unit_file: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_file)
        .output()
        .expect("running systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    let figure = line.rsplit(':').next().unwrap().split_whitespace().next();
    figure.unwrap().parse().unwrap()
}

/// A status line of /proc/PID/status inside the sandbox.
fn proc_status(node: &Node, pid: u32, key: &str) -> String {
    let status = node
        .sandbox
        .read_file(&format!("/proc/{pid}/status"))
        .unwrap();
    let line = status.lines().find(|l| l.starts_with(key));
    line.unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))[key.len()..]
        .trim()
        .to_owned()
}

fn create_installs_a_hardened_unit_that_serves_a_real_client(core: Core) {
    let origin = Origin::start(PAGE);
    // The extra inbound forwards to the origin on loopback, which the policy opens only here.
    let node = Node::boot_allowing("lc-create", core, &[format!("127.0.0.1:{}", origin.port)]);
    let edge = id("edge");
    let ports = TunnelPorts::free();
    let low = free_low_port();
    let low_inbound = format!(
        r#"{{"tag": "low", "listen": "127.0.0.1", "port": {low}, "protocol": "dokodemo-door",
            "settings": {{"address": "127.0.0.1", "port": {}}}}}"#,
        origin.port
    );
    let config = config_with_alice(ports, Some(low_inbound));

    let done = node.create(&edge, &config).unwrap();
    assert_eq!(done.action, Action::Created);
    assert_eq!(done.job, JobResult::Done);
    assert_eq!(done.unit, "xray-tunnel-edge.service");

    // A real VLESS client gets the page through the tunnel; the port below 1024 serves too.
    let alice = VlessClient::start(node.core, &node.scratch, "alice", ports.vless, ALICE);
    wait_fetch(&alice, &origin);
    std::net::TcpStream::connect(("127.0.0.1", low)).expect("the core binds a port below 1024");

    // systemd's view: loaded from our file, enabled, running the core as nobody.
    let paths = node.lifecycle.paths(&edge);
    assert_eq!(node.show(&edge, "ActiveState"), "active");
    assert_eq!(node.show(&edge, "UnitFileState"), "enabled");
    assert_eq!(
        node.show(&edge, "FragmentPath"),
        "/etc/systemd/system/xray-tunnel-edge.service"
    );
    let pid = node.main_pid(&edge);
    assert!(proc_status(&node, pid, "Uid:").starts_with(&format!("{NOBODY}\t")));
    assert_eq!(proc_status(&node, pid, "NoNewPrivs:"), "1");
    assert_eq!(proc_status(&node, pid, "Seccomp:"), "2");
    // CAP_NET_BIND_SERVICE (bit 10) and nothing else.
    assert_eq!(proc_status(&node, pid, "CapEff:"), "0000000000000400");
    let limits = node
        .sandbox
        .read_file(&format!("/proc/{pid}/limits"))
        .unwrap();
    let nofile: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    // Go raises its soft fd limit at start: V2Ray 4.34 to the hard limit, Xray 26.3.27 to one
    // below it (seen live: 19999 of 20000).
    let (soft, hard): (u64, u64) = (nofile[3].parse().unwrap(), nofile[4].parse().unwrap());
    assert!(
        soft + 1 >= hard,
        "the core did not raise its soft fd limit: {limits}"
    );

    // The config: exactly what was given, 0640, root's and readable by nogroup (the tunnel
    // cannot change it), in a 0750 dir.
    assert_eq!(std::fs::read_to_string(&paths.config).unwrap(), config);
    let meta = std::fs::metadata(&paths.config).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (0, NOBODY));
    let dir = std::fs::metadata(&node.tunnels.config_dir).unwrap();
    assert_eq!(
        (dir.permissions().mode() & 0o7777, dir.gid()),
        (0o750, NOBODY)
    );

    // The unit: the built-in template rendered for this tunnel, nothing else.
    let unit = std::fs::read_to_string(&paths.unit).unwrap();
    let values = UnitValues {
        id: &edge,
        core_binary: &core.bin(),
        config: &paths.config,
        log: &paths.log,
        user: "nobody",
        group: "nogroup",
    };
    assert_eq!(unit, template::render(template::BUILT_IN, &values).unwrap());
    let exec = format!("ExecStart={}\n", core.exec_start(&paths.config));
    assert!(unit.contains(&exec), "{unit}");
    let figure = exposure(&paths.unit);
    eprintln!("systemd-analyze security --offline=true: overall exposure {figure}");
    assert!(figure <= 2.0, "exposure {figure}");

    // The core's output lands in the log, and the tail is readable through the library.
    let lines = node.rt.block_on(node.lifecycle.logs(&edge, 50)).unwrap();
    assert!(lines.iter().any(|l| l.contains(core.banner())), "{lines:?}");
    let missing = node.rt.block_on(node.lifecycle.logs(&id("nope"), 5));
    assert!(
        matches!(missing, Err(LifecycleError::NotFound { .. })),
        "{missing:?}"
    );
}

fn replace_restart_stop_start_and_delete_leave_no_trace(core: Core) {
    let node = Node::boot("lc-restart", core);
    let origin = Origin::start(PAGE);
    let edge = id("edge");
    let before_any = node.files();
    let units_before = node.listed_units();
    node.create(&edge, &config_with_alice(TunnelPorts::free(), None))
        .unwrap();

    // Replace: a new config on new ports; the unit restarts and serves on them.
    let ports = TunnelPorts::free();
    let pid = node.main_pid(&edge);
    let done = node.create(&edge, &config_with_alice(ports, None)).unwrap();
    assert_eq!((done.action, done.job), (Action::Replaced, JobResult::Done));
    assert_ne!(node.main_pid(&edge), pid, "replace restarts the core");
    let alice = VlessClient::start(node.core, &node.scratch, "alice", ports.vless, ALICE);
    wait_fetch(&alice, &origin);

    let pid = node.main_pid(&edge);
    let done = node.rt.block_on(node.lifecycle.restart(&edge)).unwrap();
    assert_eq!(done.action, Action::Restarted);
    assert_eq!(node.show(&edge, "ActiveState"), "active");
    assert_ne!(
        node.main_pid(&edge),
        pid,
        "restart gives a new main process"
    );
    wait_fetch(&alice, &origin);

    node.rt.block_on(node.lifecycle.stop(&edge)).unwrap();
    assert_eq!(node.show(&edge, "ActiveState"), "inactive");
    assert_eq!(node.show(&edge, "MainPID"), "0");
    node.rt.block_on(node.lifecycle.start(&edge)).unwrap();
    assert_eq!(node.show(&edge, "ActiveState"), "active");
    wait_fetch(&alice, &origin);

    let paths = node.lifecycle.paths(&edge);
    let done = node.rt.block_on(node.lifecycle.delete(&edge)).unwrap();
    assert_eq!((done.action, done.job), (Action::Deleted, JobResult::Done));
    assert!(!paths.unit.exists() && !paths.config.exists());
    assert_eq!(node.show(&edge, "LoadState"), "not-found");
    assert_eq!(node.show(&edge, "ActiveState"), "inactive");
    assert_eq!(node.listed_units(), units_before);
    assert!(
        fetch_via(alice.socks, &origin).is_err(),
        "nothing serves any more"
    );
    // No trace but the log, which stays by design (an empty config dir remains too).
    assert!(paths.log.exists(), "the log file stays");
    assert_eq!(
        without_logs(node.files()),
        before_any,
        "only the log is left"
    );

    // Deleting again, and acting on a deleted tunnel, is NotFound and touches nothing.
    for result in [
        node.rt.block_on(node.lifecycle.delete(&edge)),
        node.rt.block_on(node.lifecycle.start(&edge)),
        node.rt.block_on(node.lifecycle.restart(&edge)),
    ] {
        assert!(
            matches!(result, Err(LifecycleError::NotFound { .. })),
            "{result:?}"
        );
    }
    assert_eq!(node.listed_units(), units_before);
}

fn restart_all_restarts_every_tunnel(core: Core) {
    let node = Node::boot("lc-restart-all", core);
    let ids = [id("a"), id("b-2"), id("c_3")];
    for tunnel in &ids {
        node.create(tunnel, &config_with_alice(TunnelPorts::free(), None))
            .unwrap();
    }
    let pids: Vec<u32> = ids.iter().map(|t| node.main_pid(t)).collect();
    let results = node.rt.block_on(node.lifecycle.restart_all()).unwrap();
    let restarted: Vec<&TunnelId> = results.iter().map(|(t, _)| t).collect();
    assert_eq!(restarted, ids.iter().collect::<Vec<_>>());
    for ((tunnel, result), old) in results.iter().zip(pids) {
        let done = result.as_ref().unwrap();
        assert_eq!(
            (done.action, &done.job),
            (Action::Restarted, &JobResult::Done)
        );
        assert_eq!(node.show(tunnel, "ActiveState"), "active");
        assert_ne!(
            node.main_pid(tunnel),
            old,
            "{tunnel} got a new main process"
        );
    }
}

fn bad_ids_bad_configs_and_failed_starts_change_nothing(core: Core) {
    let node = Node::boot("lc-refuse", core);
    let origin = Origin::start(PAGE);
    let (empty, no_units) = (node.files(), node.listed_units());
    for bad in [
        "../x",
        "a b",
        &"x".repeat(65),
        "x;rm",
        "",
        "-x",
        "a/b",
        "x.service",
    ] {
        let refused = Lifecycle::parse_id(bad);
        assert!(
            matches!(refused, Err(LifecycleError::InvalidId(_))),
            "{bad:?}: {refused:?}"
        );
    }
    // On an empty node too, a config the core rejects installs nothing.
    let rejected = r#"{"inbounds": [{"port": 1, "protocol": "no-such-protocol"}]}"#;
    let new = id("new");
    let refused = node.create(&new, rejected);
    assert!(
        matches!(refused, Err(LifecycleError::CoreRejected { .. })),
        "{refused:?}"
    );
    assert_eq!((node.files(), node.listed_units()), (empty, no_units));

    let good = id("good");
    let ports = TunnelPorts::free();
    let good_config = config_with_alice(ports, None);
    node.create(&good, &good_config).unwrap();
    let alice = VlessClient::start(node.core, &node.scratch, "alice", ports.vless, ALICE);
    wait_fetch(&alice, &origin);
    let files = node.files();
    let units = node.listed_units();
    let pid = node.main_pid(&good);
    let unchanged = |what: &str| {
        assert_eq!(node.files(), files, "{what}: files changed");
        assert_eq!(
            node.listed_units(),
            units,
            "{what}: systemd's units changed"
        );
        assert_eq!(
            node.main_pid(&good),
            pid,
            "{what}: the good tunnel was restarted"
        );
    };

    for (config, what) in [("{not json", "not JSON"), ("[1, 2]", "not an object")] {
        for tunnel in [&new, &good] {
            let refused = node.create(tunnel, config);
            assert!(
                matches!(refused, Err(LifecycleError::InvalidConfig { .. })),
                "{what}: {refused:?}"
            );
            unchanged(what);
        }
    }
    for tunnel in [&new, &good] {
        match node.create(tunnel, rejected) {
            Err(LifecycleError::CoreRejected { reason }) => eprintln!("core rejected: {reason}"),
            other => panic!("{other:?}"),
        }
        unchanged("a config the core rejects");
    }

    // A unit whose start fails (via a template override): the job's result is reported and the
    // old files come back; the replaced tunnel runs its old config again.
    let template = node.scratch.join("failing.template");
    let failing = template::BUILT_IN.replace("Type=exec\n", "Type=exec\nExecStartPre=/bin/false\n");
    std::fs::write(&template, failing).unwrap();
    let mut tunnels = node.tunnels.clone();
    tunnels.unit_template = Some(template);
    let failing = Lifecycle::new(node.client.clone(), tunnels);
    let other_config = config_with_alice(TunnelPorts::free(), None);
    for tunnel in [&new, &good] {
        match node
            .rt
            .block_on(failing.create(tunnel, other_config.as_bytes()))
        {
            Err(LifecycleError::JobFailed { result, job, .. }) => {
                assert_eq!(result, JobResult::Failed);
                assert!(job == "start" || job == "restart", "{job}");
            }
            other => panic!("{other:?}"),
        }
        // The failed start's log stays, like every log.
        let after = without_logs(node.files());
        assert_eq!(
            after,
            without_logs(files.clone()),
            "{tunnel}: files after a failed start"
        );
    }
    assert_eq!(node.show(&good, "ActiveState"), "active");
    assert_eq!(node.show(&new, "LoadState"), "not-found");
    assert_eq!(node.show(&new, "UnitFileState"), "");
    assert_eq!(
        std::fs::read_to_string(node.lifecycle.paths(&good).config).unwrap(),
        good_config
    );
    wait_fetch(&alice, &origin);
}

fn emergency_cleanup_needs_confirmation_and_then_removes_everything(core: Core) {
    let node = Node::boot("lc-cleanup", core);
    let before = node.files();
    let units_before = node.listed_units();
    let ids = [id("one"), id("two")];
    for tunnel in &ids {
        node.create(tunnel, &config_with_alice(TunnelPorts::free(), None))
            .unwrap();
    }
    // A stray config without a unit is swept too.
    let stray = node.tunnels.config_dir.join("xray-stray.json");
    std::fs::write(&stray, "{}").unwrap();
    let files = node.files();

    let refused = node.rt.block_on(node.lifecycle.emergency_cleanup(false));
    assert!(
        matches!(refused, Err(LifecycleError::ConfirmationRequired)),
        "{refused:?}"
    );
    assert_eq!(node.files(), files);
    for tunnel in &ids {
        assert_eq!(node.show(tunnel, "ActiveState"), "active");
    }

    let results = node
        .rt
        .block_on(node.lifecycle.emergency_cleanup(true))
        .unwrap();
    let swept: Vec<String> = results.iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(swept, ["one", "stray", "two"]);
    for (tunnel, result) in &results {
        assert_eq!(result.as_ref().unwrap().action, Action::Deleted, "{tunnel}");
        assert_eq!(node.show(tunnel, "LoadState"), "not-found");
    }
    assert_eq!(node.listed_units(), units_before);
    assert_eq!(without_logs(node.files()), before, "only logs are left");
}

fn a_core_that_dies_right_after_its_start_is_rolled_back_with_its_own_complaint(core: Core) {
    let node = Node::boot("lc-settle", core);
    let origin = Origin::start(PAGE);
    let edge = id("edge");
    let ports = TunnelPorts::free();
    let old_config = config_with_alice(ports, None);
    node.create(&edge, &old_config).unwrap();
    let alice = VlessClient::start(node.core, &node.scratch, "alice", ports.vless, ALICE);
    wait_fetch(&alice, &origin);
    let paths = node.lifecycle.paths(&edge);
    let files = without_logs(node.files());
    let units = node.listed_units();

    // A new config whose VLESS port is held by a listener of this test: the core passes its
    // config test, is exec'd (the restart job is done), then cannot bind and exits.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut new_ports = TunnelPorts::free();
    new_ports.vless = taken.local_addr().unwrap().port();
    let started = Instant::now();
    match node.create(&edge, &config_with_alice(new_ports, None)) {
        Err(LifecycleError::StartFailed { job, reason, .. }) => {
            assert_eq!(job, "restart");
            assert!(reason.contains("address already in use"), "{reason}");
            eprintln!("refused after {:?}: {reason}", started.elapsed());
        }
        other => panic!("a core that cannot bind must not count as replaced: {other:?}"),
    }
    // The old config is back byte for byte, the unit runs it again and it serves.
    assert_eq!(std::fs::read_to_string(&paths.config).unwrap(), old_config);
    assert_eq!(without_logs(node.files()), files);
    assert_eq!(node.listed_units(), units);
    assert_eq!(node.show(&edge, "ActiveState"), "active");
    let pid = node.main_pid(&edge);
    let cmdline = node
        .sandbox
        .read_file(&format!("/proc/{pid}/cmdline"))
        .unwrap();
    assert!(
        cmdline.contains(&paths.config.display().to_string()),
        "{cmdline}"
    );
    wait_fetch(&alice, &origin);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node.main_pid(&edge), pid, "the restored core keeps running");
    assert_eq!(node.show(&edge, "NRestarts"), "0");

    // A new tunnel on a taken port: refused, and nothing but its log is left.
    let fresh = id("fresh");
    let mut fresh_ports = TunnelPorts::free();
    fresh_ports.vless = taken.local_addr().unwrap().port();
    match node.create(&fresh, &config_with_alice(fresh_ports, None)) {
        Err(LifecycleError::StartFailed { job, reason, .. }) => {
            assert_eq!(job, "start");
            assert!(reason.contains("address already in use"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(without_logs(node.files()), files);
    assert_eq!(node.listed_units(), units);
    assert_eq!(node.show(&fresh, "LoadState"), "not-found");
    drop(taken);

    // The same config without a policy entry for its loopback forward is refused up front.
    let forward = format!(
        r#"{{"tag": "fwd", "listen": "127.0.0.1", "port": {}, "protocol": "dokodemo-door",
            "settings": {{"address": "127.0.0.1", "port": {}}}}}"#,
        support::cores::free_port(),
        origin.port
    );
    let refused = node.create(
        &fresh,
        &config_with_alice(TunnelPorts::free(), Some(forward)),
    );
    assert!(
        matches!(&refused, Err(LifecycleError::PolicyRefused { reasons }) if reasons.len() == 1),
        "{refused:?}"
    );
    assert_eq!(without_logs(node.files()), files);
}

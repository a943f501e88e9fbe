//! Proof tier for what the warden reads, runs and writes as root (issue 8, items 1 and 2): the
//! real warden in the systemd sandbox, driven through its HTTP API.
//!
//! - The core's config test runs as the tunnel user in a sandboxed transient unit, both for a
//!   PUT and for the health pass's re-test of a changed config: a fake core records its uid
//!   and tries to write the file its config's `log.error` names, in a root-only directory.
//! - A planted symlink is neither written through nor chowned; a symlinked log is not served; a
//!   FIFO as the log answers at once; a config dir the tunnel user owns is refused.
//!
//! Needs root: `cargo test --test hardening_files`.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::node::{Node, TOKEN, node_dir};
use support::sandbox::Sandbox;
use support::warden::http_call;
use xray_warden::contract::HealthReport;

const NOBODY: u32 = 65534;

/// In `-test` mode: prints its uid, tries to append to the file named by the config's
/// `"error"`, and rejects configs that contain "reject". Otherwise it runs like a core (sleeps).
const FAKE_CORE: &str = r#"#!/bin/sh
for config; do :; done
case " $* " in
  *" -test "*) ;;
  *) exec sleep 100000 ;;
esac
log=$(sed -n 's/.*"error": *"\([^"]*\)".*/\1/p' "$config")
if [ -n "$log" ]; then
  if { echo pwned >> "$log"; } 2>/dev/null; then echo "wrote $log"; else echo "cannot write $log"; fi
fi
echo "uid=$(id -u) gid=$(id -g)"
if grep -q reject "$config"; then echo "rejected by the fake core"; exit 1; fi
exit 0
"#;

/// A node whose tunnels' core is [`FAKE_CORE`], with a root-only directory beside it.
fn boot(name: &str) -> Node {
    let sandbox = Sandbox::boot(name);
    let dir = node_dir(&sandbox);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let core = dir.join("bin/xray");
    std::fs::write(&core, FAKE_CORE).unwrap();
    std::fs::set_permissions(&core, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Where no test may write: root's, closed to everyone else.
    std::fs::create_dir_all(dir.join("rootonly")).unwrap();
    std::fs::set_permissions(dir.join("rootonly"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let fast = "[health]\ninterval = \"300ms\"\n[sampler]\ninterval = \"1s\"\n";
    Node::start(sandbox, &core.display().to_string(), fast)
}

fn root_only(node: &Node, name: &str) -> PathBuf {
    node.dir.join("rootonly").join(name)
}

/// The `config_valid` check of tunnel `id`, once it satisfies `cond`.
fn wait_config_check(node: &Node, id: &str, cond: impl Fn(bool, &str) -> bool) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = node.call("GET", "/api/v1/health", "");
        assert_eq!(status, 200, "{body}");
        let report: HealthReport = serde_json::from_value(body).unwrap();
        let check = report
            .tunnels
            .iter()
            .filter(|t| t.id == id)
            .flat_map(|t| &t.checks)
            .find(|c| c.check == "config_valid")
            .map(|c| (c.ok, c.detail.clone()));
        if let Some((ok, detail)) = &check
            && cond(*ok, detail)
        {
            return (*ok, detail.clone());
        }
        assert!(
            Instant::now() < deadline,
            "config_valid of {id} never held: {check:?}\n{}",
            node.warden.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config_logging_to(path: &Path, reject: bool) -> String {
    let extra = if reject { r#", "reject": true"# } else { "" };
    format!(
        r#"{{"log": {{"loglevel": "warning", "error": "{}"}}, "outbounds": [{{"protocol": "freedom"}}]{extra}}}"#,
        path.display()
    )
}

fn owner_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

#[test]
fn config_tests_run_as_the_tunnel_user_and_cannot_write_root_files() {
    let node = boot("harden-test-uid");

    // Through PUT: the fake core reports its uid in the rejection the API passes on.
    let target = root_only(&node, "from-put");
    let (status, answer) = node.put("probe", &config_logging_to(&target, true));
    assert_eq!(status, 422, "{answer}");
    let reason = answer.to_string();
    assert!(reason.contains(&format!("uid={NOBODY} ")), "{reason}");
    assert!(reason.contains("cannot write"), "{reason}");
    assert!(!target.exists(), "the config test created a root-only file");
    assert!(!node.dir.join("etc/xray-probe.json").exists());

    // An accepted config is installed root-owned and readable by the tunnel group only.
    let benign = root_only(&node, "never-written-by-a-passing-test");
    let (status, answer) = node.put("h", &config_logging_to(&benign, false));
    assert_eq!(status, 200, "{answer}\n{}", node.warden.log());
    assert!(!benign.exists());
    let config = node.dir.join("etc/xray-h.json");
    assert_eq!(owner_mode(&config), (0, NOBODY, 0o640));
    assert_eq!(owner_mode(&node.dir.join("etc")), (0, NOBODY, 0o750));
    wait_config_check(&node, "h", |ok, _| ok);

    // Through the health pass: the file changes under the running tunnel (as a tunnel user
    // who owned it could do before); the re-test runs as that user too.
    let target = root_only(&node, "from-health");
    std::fs::write(&config, config_logging_to(&target, true)).unwrap();
    let (ok, detail) = wait_config_check(&node, "h", |ok, _| !ok);
    assert!(!ok);
    assert!(detail.contains(&format!("uid={NOBODY} ")), "{detail}");
    assert!(detail.contains("cannot write"), "{detail}");
    assert!(
        !target.exists(),
        "the health re-test created a root-only file"
    );

    // A core systemd cannot start is "could not run", not a rejection of the config.
    let mut systemd = xray_warden::config::Config::default().systemd;
    systemd.bus_address = Some(node.sandbox.bus_address());
    let tester = xray_warden::core::Tester {
        core_binary: node.dir.join("bin/missing-xray"),
        user: "nobody".into(),
        group: "nogroup".into(),
        log_dir: node.dir.join("log"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(async {
        let client = xray_warden::systemd::Client::connect(&systemd)
            .await
            .unwrap();
        tester.test(&client, &config).await.unwrap_err()
    });
    assert!(
        matches!(
            err,
            xray_warden::core::CoreTestError::NotRun { status: 203, .. }
        ),
        "{err}"
    );

    // No test unit is left behind.
    let left = node.sandbox.systemctl(&[
        "list-units",
        "--all",
        "--plain",
        "--no-legend",
        "xray-warden-config-test-*",
    ]);
    assert!(left.trim().is_empty(), "{left}");
}

#[test]
fn planted_symlinks_fifos_and_foreign_dirs_are_refused() {
    let node = boot("harden-links");
    let (status, answer) = node.put("a", r#"{"outbounds": [{"protocol": "freedom"}]}"#);
    assert_eq!(status, 200, "{answer}\n{}", node.warden.log());
    let unit_a = node.sandbox.state_dir().join("units/xray-tunnel-a.service");
    let unit_before = std::fs::read_to_string(&unit_a).unwrap();
    let owner_before = owner_mode(&unit_a);

    // A planted `xray-c.json -> xray-tunnel-a.service`: not written through, not chowned.
    let planted = node.dir.join("etc/xray-c.json");
    std::os::unix::fs::symlink(&unit_a, &planted).unwrap();
    let (status, answer) = node.put("c", r#"{"outbounds": [{"protocol": "freedom"}]}"#);
    assert_eq!(status, 500, "{answer}");
    assert!(answer.to_string().contains("is a symlink"), "{answer}");
    assert_eq!(std::fs::read_to_string(&unit_a).unwrap(), unit_before);
    assert_eq!(owner_mode(&unit_a), owner_before);
    assert!(std::fs::symlink_metadata(&planted).unwrap().is_symlink());
    assert!(
        !node
            .sandbox
            .state_dir()
            .join("units/xray-tunnel-c.service")
            .exists()
    );

    // A log that is a symlink to a root-only file is not served.
    let secret = root_only(&node, "shadow");
    std::fs::write(&secret, "root:$6$SECRET-HASH:19000:0:99999:7:::\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log_a = node.dir.join("log/xray-a.log");
    let _ = std::fs::remove_file(&log_a);
    std::os::unix::fs::symlink(&secret, &log_a).unwrap();
    let (status, answer) = node.call("GET", "/api/v1/tunnels/a/logs?lines=5", "");
    assert_eq!(status, 500, "{answer}");
    assert!(!answer.to_string().contains("SECRET-HASH"), "{answer}");

    // A FIFO as the log answers at once, with an error.
    let fifo = node.dir.join("log/xray-f.log");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let addr = node.warden.addr;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(http_call(
            addr,
            "GET",
            "/api/v1/tunnels/f/logs",
            Some(TOKEN),
            "",
        ));
    });
    let answer = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("GET logs on a FIFO hangs")
        .unwrap();
    assert_eq!(answer.0, 500, "{answer:?}");
    assert!(answer.1.contains("FIFO"), "{answer:?}");

    // A config dir the tunnel user owns is refused, and nothing is written.
    let etc = node.dir.join("etc");
    std::os::unix::fs::chown(&etc, Some(NOBODY), None).unwrap();
    let (status, answer) = node.put("d", r#"{"outbounds": [{"protocol": "freedom"}]}"#);
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer.to_string().contains("owned by uid 65534"),
        "{answer}"
    );
    assert!(!etc.join("xray-d.json").exists());
    assert!(
        !node
            .sandbox
            .state_dir()
            .join("units/xray-tunnel-d.service")
            .exists()
    );
    std::os::unix::fs::chown(&etc, Some(0), None).unwrap();
}

//! Proof tier for the shipped deploy/xray-warden.service (issue 8, item 13): run as a unit of
//! the sandbox's systemd on a fresh host (no /etc/raptor-tunnel, /var/log/raptor-tunnel or
//! /var/lib/xray-warden), with only its ExecStart paths substituted, the first PUT creates a
//! tunnel.
//!
//! The sandbox shares the host's root filesystem, so /etc, /var/log and /var/lib are overlaid
//! (inside the sandbox's mount namespace only) with empty upper layers in its state dir: what
//! the unit creates there never reaches the host. Needs root:
//! `cargo test --test hardening_unit`.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::cores::free_port;
use support::sandbox::Sandbox;
use support::warden::{http_call, http_get};

const BIN: &str = env!("CARGO_BIN_EXE_xray-warden");
const UNIT: &str = include_str!("../deploy/xray-warden.service");
const TOKEN: &str = "fresh-host-token-0123456789abcdef";

/// Overlays /etc, /var/log and /var/lib inside the sandbox with empty layers under `layers`,
/// and binds the sandbox's unit dir back over /etc/systemd/system.
fn fresh_host(sandbox: &Sandbox, layers: &Path) {
    let units = sandbox.state_dir().join("units");
    let mut script = String::from("set -e\n");
    for dir in ["/etc", "/var/log", "/var/lib"] {
        let name = dir.trim_start_matches('/').replace('/', "-");
        let (up, work) = (
            layers.join(&name).join("up"),
            layers.join(&name).join("work"),
        );
        script += &format!(
            "mkdir -p {up} {work}\nmount -t overlay overlay -o lowerdir={dir},upperdir={up},workdir={work} {dir}\n",
            up = up.display(),
            work = work.display(),
        );
    }
    script += &format!("mount --bind {} /etc/systemd/system\n", units.display());
    let out = sandbox
        .command("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped unit with the binary and config paths of this test, listening on `port`.
fn unit_text(config: &Path, port: u16) -> String {
    let exec = "ExecStart=/usr/bin/xray-warden run --config /etc/xray-warden/config.toml";
    assert!(UNIT.contains(exec), "the shipped ExecStart changed");
    let ours = format!(
        "ExecStart={BIN} run --config {} --listen 127.0.0.1:{port}",
        config.display()
    );
    UNIT.replace(exec, &ours)
}

/// A stat of `path` inside the sandbox.
fn stat_inside(sandbox: &Sandbox, path: &str) -> (u32, u32, u32) {
    let meta = std::fs::metadata(format!("/proc/{}/root{path}", sandbox.systemd_pid()))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

#[test]
fn the_shipped_unit_creates_its_dirs_and_the_first_put_works() {
    let sandbox = Sandbox::boot("harden-unit");
    let node = sandbox.state_dir().join("node");
    std::fs::create_dir_all(&node).unwrap();
    fresh_host(&sandbox, &node.join("layers"));
    for dir in [
        "/etc/raptor-tunnel",
        "/var/log/raptor-tunnel",
        "/var/lib/xray-warden",
    ] {
        let seen = format!("/proc/{}/root{dir}", sandbox.systemd_pid());
        assert!(!Path::new(&seen).exists(), "{dir} exists: not a fresh host");
    }
    std::fs::write(node.join("token"), TOKEN).unwrap();
    let config = node.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[tunnels]\ncore_binary = \"/usr/bin/v2ray\"\nuser = \"nobody\"\ngroup = \"nogroup\"\n\
             [api]\ntoken_file = \"{}\"\n",
            node.join("token").display()
        ),
    )
    .unwrap();
    let port = free_port();
    sandbox.write_unit("xray-warden.service", &unit_text(&config, port));
    sandbox.systemctl(&["daemon-reload"]);
    // Type=notify: `systemctl start` returns once the daemon sent READY=1, which it does only
    // after its first listing of units, so /ready answers 200 at once (with Type=exec the
    // start returned as soon as the process ran, long before).
    sandbox.systemctl(&["start", "xray-warden.service"]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let ready = http_get(addr, "/ready");
    assert!(
        matches!(ready, Ok((200, _))),
        "active before ready: {ready:?}\n{}",
        journal(&sandbox)
    );
    let shown = sandbox.show(
        "xray-warden.service",
        &["ActiveState", "StatusText", "WatchdogUSec", "Type"],
    );
    assert_eq!(shown["Type"], "notify");
    assert_eq!(shown["ActiveState"], "active");
    assert_eq!(shown["WatchdogUSec"], "30s");
    assert_eq!(shown["StatusText"], "0 tunnels: 0 active, 0 failed");

    let tunnel_port = free_port();
    let tunnel = format!(
        r#"{{"inbounds": [{{"listen": "127.0.0.1", "port": {tunnel_port}, "protocol": "socks", "settings": {{}}}}],
 "outbounds": [{{"protocol": "freedom"}}]}}"#
    );
    let (status, body) =
        http_call(addr, "PUT", "/api/v1/tunnels/fresh", Some(TOKEN), &tunnel).unwrap();
    assert_eq!(status, 200, "{body}");
    let active = sandbox.show("xray-tunnel-fresh.service", &["ActiveState"]);
    assert_eq!(active["ActiveState"], "active");

    // Root's, closed to others; the config dir has the tunnel group.
    assert_eq!(
        stat_inside(&sandbox, "/etc/raptor-tunnel"),
        (0, 65534, 0o750)
    );
    assert_eq!(
        stat_inside(&sandbox, "/etc/raptor-tunnel/xray-fresh.json"),
        (0, 65534, 0o640)
    );
    assert_eq!(
        stat_inside(&sandbox, "/var/log/raptor-tunnel"),
        (0, 0, 0o750)
    );
    assert_eq!(stat_inside(&sandbox, "/var/lib/xray-warden"), (0, 0, 0o700));
    let limits = sandbox.show("xray-warden.service", &["LimitNOFILE"]);
    assert_eq!(limits["LimitNOFILE"], "65536");
    // The STATUS= line follows the tunnels within its 15 s period.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = sandbox.show("xray-warden.service", &["StatusText"]);
        if status["StatusText"] == "1 tunnels: 1 active, 0 failed" {
            break;
        }
        assert!(Instant::now() < deadline, "status: {status:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    // ProtectProc=invisible leaves the tunnel's /proc entries readable: its fds and memory are
    // sampled (every 5 s) although the core runs as another user.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = http_get(addr, "/metrics").map(|(_, body)| body);
        let scrape = scrape.unwrap_or_default();
        let fds = sample(&scrape, "xray_tunnel_open_fds{tunnel=\"fresh\"}");
        let rss = sample(&scrape, "xray_tunnel_memory_rss_bytes{tunnel=\"fresh\"}");
        if fds.is_some_and(|v| v > 0.0) && rss.is_some_and(|v| v > 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no procfs samples: {fds:?} {rss:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    sandbox.systemctl(&["stop", "xray-warden.service", "xray-tunnel-fresh.service"]);
}

/// The warden's journal inside the sandbox, for a failure message.
fn journal(sandbox: &Sandbox) -> String {
    let out = sandbox
        .command("journalctl")
        .args(["-u", "xray-warden.service", "--no-pager"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the sample SERIES (name and labels, exactly as rendered) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

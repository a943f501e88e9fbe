//! Proof tier for online users and outbound traffic (issue 9 §4) on REAL cores: Xray-core's
//! online API read by the client and compared with `xray api` (the core's own CLI client) at
//! the same moment, V2Ray 4.34 answering without an online API, and the real warden in a
//! sandbox systemd exporting both from real traffic through a real VLESS client.
//!
//! Xray never records the client address 127.0.0.1 (or ::1) as online
//! (app/stats/online_map.go of v1.260327.0 compares the address with exactly those two), so
//! the client that must be seen online connects from 127.0.0.2, and one from 127.0.0.1 shows
//! the exclusion. Every test ends by checking that each core is still alive.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::cores::{Core, Origin, TunnelPorts, VlessClient, fetch_via, tunnel_config};
use xray_warden::domain::Flavour;
use xray_warden::xray::ApiClient;

const ALICE: &str = "0f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f";
const BOB: &str = "6d1e2f3a-4b5c-4d6e-8f70-81a2b3c4d5e6";
/// Case kept on purpose: online map names carry the email exactly as configured.
const ALICE_EMAIL: &str = "Alice@example.com";
const BOB_EMAIL: &str = "bob@example.com";
const TIMEOUT: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(15);

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("xray_online")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The shared tunnel config plus what this feature needs: `statsUserOnline` on level 0 (Xray
/// only; V2Ray 4.34 ignores the key), outbound counters in `policy.system`, and two users.
fn server_config(ports: TunnelPorts) -> String {
    let mut config: serde_json::Value = serde_json::from_str(&tunnel_config(ports)).unwrap();
    config["policy"]["levels"]["0"]["statsUserOnline"] = true.into();
    config["policy"]["system"]["statsOutboundUplink"] = true.into();
    config["policy"]["system"]["statsOutboundDownlink"] = true.into();
    let vless = config["inbounds"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|i| i["tag"] == "vless-in")
        .unwrap();
    vless["settings"]["clients"] = serde_json::json!([
        {"id": ALICE, "email": ALICE_EMAIL},
        {"id": BOB, "email": BOB_EMAIL},
    ]);
    serde_json::to_string_pretty(&config).unwrap()
}

/// A core running [`server_config`] as a child process, killed by PID on drop.
struct Server {
    core: Core,
    child: Child,
    ports: TunnelPorts,
    dir: PathBuf,
}

impl Server {
    fn start(core: Core, name: &str) -> Server {
        let dir = scratch(&format!("{name}-{core}"));
        let ports = TunnelPorts::free();
        let config = dir.join("server.json");
        std::fs::write(&config, server_config(ports)).unwrap();
        let child = core.command(&config).spawn().unwrap();
        for port in [ports.api, ports.vless] {
            let deadline = Instant::now() + TIMEOUT;
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "{core} does not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Server {
            core,
            child,
            ports,
            dir,
        }
    }

    fn api(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.api))
    }

    fn assert_alive(&mut self) {
        let exited = self.child.try_wait().unwrap();
        assert_eq!(exited, None, "the {} core exited", self.core);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An origin that accepts connections and keeps them open, so the user stays online.
struct Hold {
    port: u16,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Hold {
    fn start() -> Hold {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                keep.lock().unwrap().push(stream);
            }
        });
        Hold { port, _held: held }
    }
}

/// Opens a connection to `port` through the SOCKS5 proxy `socks` and sends a few bytes, so the
/// tunnel's core dispatches it; the connection stays up until the stream is dropped.
fn connect_via(socks: u16, port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", socks)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(&[5, 1, 0]).unwrap();
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [5, 0], "SOCKS5 greeting");
    let [hi, lo] = port.to_be_bytes();
    stream
        .write_all(&[5, 1, 0, 1, 127, 0, 0, 1, hi, lo])
        .unwrap();
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 0, "SOCKS5 connect refused: {reply:?}");
    stream.write_all(b"hold the line\n").unwrap();
    stream
}

/// `xray api SUBCOMMAND --server=API ARGS...`, its JSON answer.
fn cli(xray: &Path, api: SocketAddr, subcommand: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(xray)
        .args(["api", subcommand, &format!("--server={api}")])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xray api {subcommand}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The CLI prints protojson, which leaves zero values out.
fn json_i64(value: &serde_json::Value) -> i64 {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

async fn wait_online(client: &ApiClient, want: &[&str]) -> Vec<String> {
    let want: BTreeSet<String> = want
        .iter()
        .map(|email| format!("user>>>{email}>>>online"))
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let online = client.online_users().await.unwrap().expect("Xray answers");
        if online.iter().cloned().collect::<BTreeSet<_>>() == want {
            return online;
        }
        assert!(
            Instant::now() < deadline,
            "online {online:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn outbound_bytes(client: &ApiClient) -> Vec<(String, i64)> {
    let mut stats = client.query_stats("outbound>>>", false).await.unwrap();
    stats.sort();
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xray_online_users_and_ips_match_the_cli_and_loopback_is_not_counted() {
    if !Core::xray_enabled("xray_online_users_and_ips_match_the_cli_and_loopback_is_not_counted") {
        return;
    }
    let mut server = Server::start(Core::Xray, "online");
    let (xray, api) = (Core::Xray.bin(), server.api());
    let client = ApiClient::new(api, Flavour::Xray, TIMEOUT);
    let origin = Origin::start("hello through the tunnel");
    let hold = Hold::start();
    let vless = server.ports.vless;
    let alice =
        VlessClient::start_from(Core::Xray, &server.dir, "alice", vless, ALICE, "127.0.0.2");
    let bob = VlessClient::start(Core::Xray, &server.dir, "bob", vless, BOB);

    // Real traffic: the outbound counters move, as the core's CLI also reports.
    assert_eq!(
        fetch_via(alice.socks, &origin).unwrap(),
        "hello through the tunnel"
    );
    assert_eq!(
        fetch_via(bob.socks, &origin).unwrap(),
        "hello through the tunnel"
    );
    let ours = outbound_bytes(&client).await;
    let names: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "outbound>>>direct>>>traffic>>>downlink",
            "outbound>>>direct>>>traffic>>>uplink"
        ]
    );
    assert!(ours.iter().all(|(_, bytes)| *bytes > 0), "{ours:?}");
    let theirs = cli(&xray, api, "statsquery", &["-pattern", "outbound>>>"]);
    let mut theirs: Vec<(String, i64)> = theirs["stat"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                json_i64(&s["value"]),
            )
        })
        .collect();
    theirs.sort();
    assert_eq!(ours, theirs, "the client reads what the core's CLI reads");

    // Both hold a connection open: Alice (from 127.0.0.2) is online, Bob (127.0.0.1) is not.
    let alice_conn = connect_via(alice.socks, hold.port);
    let bob_conn = connect_via(bob.socks, hold.port);
    let online = wait_online(&client, &[ALICE_EMAIL]).await;
    let cli_online = cli(&xray, api, "statsgetallonlineusers", &[]);
    let cli_online: Vec<String> = serde_json::from_value(cli_online["users"].clone()).unwrap();
    assert_eq!(online, cli_online);
    eprintln!("online users (API = CLI): {online:?}");

    let count = client.online_ip_count(ALICE_EMAIL).await.unwrap();
    let cli_count = cli(&xray, api, "statsonline", &["-email", ALICE_EMAIL]);
    assert_eq!(count, Some(1));
    assert_eq!(json_i64(&cli_count["stat"]["value"]), 1);
    let ips = client.online_ips(ALICE_EMAIL).await.unwrap().unwrap();
    let cli_ips = cli(&xray, api, "statsonlineiplist", &["-email", ALICE_EMAIL]);
    let cli_ips: BTreeSet<&String> = cli_ips["ips"].as_object().unwrap().keys().collect();
    assert_eq!(ips.keys().collect::<BTreeSet<_>>(), cli_ips);
    assert_eq!(ips.keys().collect::<Vec<_>>(), ["127.0.0.2"]);

    // Bob is connected (his online map exists) from 127.0.0.1, which Xray never records.
    assert_eq!(client.online_ip_count(BOB_EMAIL).await.unwrap(), Some(0));
    let cli_bob = cli(&xray, api, "statsonline", &["-email", BOB_EMAIL]);
    assert_eq!(json_i64(&cli_bob["stat"]["value"]), 0);
    assert!(
        client
            .online_ips(BOB_EMAIL)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );

    // Online means connected now: Alice's connection closes, she goes offline.
    drop(alice_conn);
    wait_online(&client, &[]).await;
    assert!(cli(&xray, api, "statsgetallonlineusers", &[])["users"].is_null());
    drop(bob_conn);

    client.uptime().await.expect("the core still answers");
    server.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_has_no_online_api_and_no_error_but_outbound_counters() {
    let mut server = Server::start(Core::V2ray, "no-online");
    let origin = Origin::start("hello through the tunnel");
    let client = VlessClient::start(Core::V2ray, &server.dir, "alice", server.ports.vless, ALICE);
    assert_eq!(
        fetch_via(client.socks, &origin).unwrap(),
        "hello through the tunnel"
    );
    let v2ray = ApiClient::new(server.api(), Flavour::V2ray, TIMEOUT);
    assert_eq!(v2ray.online_users().await.unwrap(), None);
    assert_eq!(v2ray.online_ip_count(ALICE_EMAIL).await.unwrap(), None);
    assert_eq!(v2ray.online_ips(ALICE_EMAIL).await.unwrap(), None);
    // Asked on the wire anyway (Xray's service path), 4.34 answers UNIMPLEMENTED: still None.
    let asked = ApiClient::new(server.api(), Flavour::Xray, TIMEOUT);
    assert_eq!(asked.online_users().await.unwrap(), None);
    assert_eq!(asked.online_ips(ALICE_EMAIL).await.unwrap(), None);
    let outbound = outbound_bytes(&v2ray).await;
    assert_eq!(outbound.len(), 2, "{outbound:?}");
    assert!(outbound.iter().all(|(_, bytes)| *bytes > 0), "{outbound:?}");
    v2ray.uptime().await.expect("the core still answers");
    server.assert_alive();
}

/// The real warden in a sandbox systemd, one tunnel unit per core: the traffic tick exports
/// outbound counters for both, online users and per-user addresses for Xray only (opt-in,
/// `users.per_user_online_ips`), and no online series for V2Ray. Needs root.
#[test]
fn the_warden_exports_online_users_and_outbound_traffic_per_core() {
    use support::cores::tunnel_unit;
    use support::sandbox::Sandbox;
    use support::warden::{Scrape, Warden};

    let cores = Core::all();
    let sandbox = Sandbox::boot("online");
    let dir = sandbox.state_dir().join("online");
    std::fs::create_dir_all(&dir).unwrap();
    let mut tunnels = Vec::new();
    for core in &cores {
        let id = format!("on-{core}");
        let ports = TunnelPorts::free();
        let config = dir.join(format!("xray-{id}.json"));
        std::fs::write(&config, server_config(ports)).unwrap();
        let unit = format!("xray-tunnel-{id}.service");
        sandbox.write_unit(&unit, &tunnel_unit(*core, &config));
        tunnels.push((*core, id, unit, ports));
    }
    sandbox.systemctl(&["daemon-reload"]);
    for (_, _, unit, _) in &tunnels {
        sandbox.systemctl(&["start", unit]);
    }
    let token = dir.join("token");
    std::fs::write(&token, "online-proof-token-0123456789").unwrap();
    let warden = Warden::start(
        &sandbox,
        &format!(
            "[users]\nstate_dir = \"{}\"\ntraffic_interval = \"300ms\"\n\
             per_user_online_ips = true\n\
             [api]\ntoken_file = \"{}\"\naudit_log = \"{}\"\n",
            dir.join("state").display(),
            token.display(),
            dir.join("audit.log").display()
        ),
    );
    warden.wait_ready();
    let restarts_and_pid = |unit: &str| sandbox.show(unit, &["NRestarts", "MainPID"]);
    let before: Vec<_> = tunnels.iter().map(|t| restarts_and_pid(&t.2)).collect();

    // Alice sends real traffic through every tunnel, then holds a connection open from
    // 127.0.0.2.
    let origin = Origin::start("hello through the tunnel");
    let hold = Hold::start();
    let mut held = Vec::new();
    let mut clients = Vec::new();
    for (core, id, _, ports) in &tunnels {
        let client = VlessClient::start_from(*core, &dir, id, ports.vless, ALICE, "127.0.0.2");
        let deadline = Instant::now() + WAIT;
        while fetch_via(client.socks, &origin).is_err() {
            assert!(Instant::now() < deadline, "no connection through {id}");
            std::thread::sleep(Duration::from_millis(100));
        }
        held.push(connect_via(client.socks, hold.port));
        clients.push(client);
    }
    let outbound = |s: &Scrape, id: &str, direction: &str| {
        let labels = [
            ("tunnel", id),
            ("outbound", "direct"),
            ("direction", direction),
        ];
        s.value("xray_tunnel_outbound_traffic_bytes_total", &labels)
    };
    let online = |s: &Scrape, id: &str| s.tunnel("xray_tunnel_online_users", id);
    let alice_ips = |s: &Scrape, id: &str| {
        let labels = [("tunnel", id), ("user", ALICE_EMAIL)];
        s.value("xray_tunnel_user_online_ips", &labels)
    };
    let scrape = warden.wait_for("outbound traffic and online users", WAIT, |s| {
        tunnels.iter().all(|(core, id, _, _)| {
            let moved = ["uplink", "downlink"]
                .iter()
                .all(|d| outbound(s, id, d).is_some_and(|b| b > 0.0));
            moved && (*core != Core::Xray || online(s, id) == Some(1.0))
        })
    });
    for (core, id, _, ports) in &tunnels {
        match core {
            Core::Xray => {
                assert_eq!(alice_ips(&scrape, id), Some(1.0), "{}", scrape.0);
                let api = SocketAddr::from(([127, 0, 0, 1], ports.api));
                let cli = cli(&Core::Xray.bin(), api, "statsgetallonlineusers", &[]);
                assert_eq!(
                    cli["users"],
                    serde_json::json!([format!("user>>>{ALICE_EMAIL}>>>online")])
                );
            }
            Core::V2ray => {
                assert_eq!(
                    online(&scrape, id),
                    None,
                    "no online series on V2Ray, not 0"
                );
                assert!(
                    !scrape
                        .0
                        .contains(&format!("xray_tunnel_user_online_ips{{tunnel=\"{id}\""))
                );
                assert!(
                    scrape
                        .tunnel("xray_tunnel_inbound_traffic_bytes_total", id)
                        .is_some()
                );
            }
        }
    }
    scrape.assert_promtool_clean();
    eprintln!(
        "{}",
        scrape
            .0
            .lines()
            .filter(|l| {
                [
                    "xray_tunnel_outbound",
                    "xray_tunnel_online",
                    "xray_tunnel_user_online",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Connections closed: Xray's users go offline, the series stays at 0.
    drop(held);
    if cores.contains(&Core::Xray) {
        let id = "on-xray";
        let scrape = warden.wait_for("Alice offline", WAIT, |s| online(s, id) == Some(0.0));
        assert_eq!(
            alice_ips(&scrape, id),
            None,
            "only online users have address series"
        );
    }
    assert!(
        !warden.log().contains("no online users"),
        "{}",
        warden.log()
    );

    // Nothing of it restarted a core.
    let after: Vec<_> = tunnels.iter().map(|t| restarts_and_pid(&t.2)).collect();
    assert_eq!(before, after);
    for (_, _, unit, _) in &tunnels {
        let state = sandbox.show(unit, &["ActiveState"]);
        assert_eq!(state["ActiveState"], "active", "{unit}");
    }
}

//! Proof tier for the xray API client, once per real core (tests/support/cores.rs: Xray-core
//! and Debian's V2Ray 4.34, narrowed by WARDEN_TEST_CORES), the same assertions on each: a core
//! on loopback, started per test as a child process and killed by PID when the test ends.
//! Xray-only behaviour (Shadowsocks-2022, listing, crash cases) is in tests/xray_live.rs.
//!
//! Every test ends by checking that the core never exited: the client must never send a
//! request that crashes it (facts P1).

mod support;

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use serde_json::json;
use support::cores::{Core, free_port};
use xray_warden::domain::{Credential, Flavour, Protocol, User};
use xray_warden::xray::{ApiClient, ApiError, Detected};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A running core with an API inbound and one inbound per protocol, each on a free port.
struct Running {
    core: Core,
    child: Child,
    api: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Running {
    fn start(core: Core, name: &str) -> Running {
        Running::start_on(core, name, loopback(free_port()))
    }

    fn start_on(core: Core, name: &str, api: SocketAddr) -> Running {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("xray_api")
            .join(format!("{name}-{core}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let inbound = |tag: &str, protocol: &str, settings| {
            json!({"tag": tag, "listen": "127.0.0.1", "port": free_port(),
                   "protocol": protocol, "settings": settings})
        };
        // facts §9.1: the API behind a dokodemo-door inbound routed to the "api" outbound; both
        // cores load this form.
        let config = json!({
            "log": {"loglevel": "warning"},
            "api": {"tag": "api", "services": ["HandlerService", "StatsService"]},
            "stats": {},
            "policy": {
                "levels": {"0": {"statsUserUplink": true, "statsUserDownlink": true}},
                "system": {"statsInboundUplink": true, "statsInboundDownlink": true,
                           "statsOutboundUplink": true, "statsOutboundDownlink": true}
            },
            "inbounds": [
                {"tag": "api", "listen": "127.0.0.1", "port": api.port(),
                 "protocol": "dokodemo-door", "settings": {"address": "127.0.0.1"}},
                inbound("vless-in", "vless", json!({"clients": [], "decryption": "none"})),
                inbound("vmess-in", "vmess", json!({"clients": []})),
                inbound("trojan-in", "trojan", json!({"clients": []})),
                inbound("ss-in", "shadowsocks",
                        json!({"method": "aes-128-gcm", "password": "ss-secret"})),
            ],
            "outbounds": [{"tag": "direct", "protocol": "freedom"}],
            "routing": {"rules": [{"type": "field", "inboundTag": ["api"], "outboundTag": "api"}]}
        });
        let file = dir.join("config.json");
        fs::write(&file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = dir.join("core.log");
        let out = fs::File::create(&log).unwrap();
        let child = core
            .command(&file)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{core}: starting {}: {e}", core.bin().display()));
        let mut running = Running {
            core,
            child,
            api,
            dir,
            log,
        };
        running.wait_for_api();
        running
    }

    fn wait_for_api(&mut self) {
        let core = self.core;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.api).is_err() {
            self.assert_alive();
            assert!(
                Instant::now() < deadline,
                "{core}: API port never opened\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The dokodemo-door port can accept before the API behind it answers: wait for a real
        // call (on a thread of its own, since tests call this from inside their runtime).
        let api = self.api;
        let flavour = core.flavour();
        let answers = move || {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let client = ApiClient::new(api, flavour, Duration::from_secs(1));
                    client.uptime().await.is_ok()
                })
            })
            .join()
            .unwrap_or(false)
        };
        while !answers() {
            self.assert_alive();
            assert!(
                Instant::now() < deadline,
                "{core}: API never answered\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_alive(&mut self) {
        let status = self.child.try_wait().unwrap();
        assert!(
            status.is_none(),
            "{} exited: {status:?}\n{}",
            self.core,
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(self.api, self.core.flavour(), TIMEOUT)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // std's kill signals exactly this child's PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test keeps its config and log for reading.
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn id_user(email: &str, n: u64) -> User {
    User {
        email: email.to_owned(),
        credential: Credential::Id(format!("0000000a-0000-4000-8000-{n:012x}")),
        flow: String::new(),
        level: 0,
    }
}

fn password_user(email: &str, password: &str) -> User {
    User {
        email: email.to_owned(),
        credential: Credential::Password(password.to_owned()),
        flow: String::new(),
        level: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_added_and_removed_and_nothing_crashes_the_core() {
    for core in Core::all() {
        lifecycle(core).await;
    }
}

async fn lifecycle(core: Core) {
    let mut running = Running::start(core, "lifecycle");
    let detected = ApiClient::detect(running.api, TIMEOUT).await.unwrap();
    assert_eq!(
        detected,
        Detected {
            flavour: core.flavour(),
            // Xray >= v24.11.5 lists users; 4.34 has no GetInboundUsers (facts §2).
            can_list_users: core == Core::Xray,
        },
        "{core}: detection"
    );

    let api = running.client();
    let alice = id_user("alice@x", 1);
    assert_eq!(
        api.add_user("vless-in", &Protocol::Vless, &alice).await,
        Ok(()),
        "{core}: add alice"
    );
    assert_eq!(
        api.add_user("vless-in", &Protocol::Vless, &alice).await,
        Err(ApiError::AlreadyExists),
        "{core}: add alice again"
    );
    assert_eq!(
        api.add_user("vless-in", &Protocol::Vless, &id_user("ALICE@x", 1))
            .await,
        Err(ApiError::AlreadyExists),
        "{core}: emails match in any case on add"
    );
    assert_eq!(
        api.remove_user("vless-in", "alice@x").await,
        Ok(()),
        "{core}: remove alice"
    );
    assert_eq!(
        api.remove_user("vless-in", "alice@x").await,
        Err(ApiError::NotFound),
        "{core}: remove alice again"
    );

    assert_eq!(
        api.add_user("vmess-in", &Protocol::Vmess, &id_user("v@x", 2))
            .await,
        Ok(()),
        "{core}: add to vmess"
    );
    let trojan = password_user("t@x", "trojan-secret");
    assert_eq!(
        api.add_user("trojan-in", &Protocol::Trojan, &trojan).await,
        Ok(()),
        "{core}: add to trojan"
    );
    assert_eq!(
        api.remove_user("vmess-in", "V@X").await,
        Ok(()),
        "{core}: emails match in any case on remove"
    );
    assert_eq!(
        api.remove_user("trojan-in", "t@x").await,
        Ok(()),
        "{core}: remove from trojan"
    );

    // Requests that would crash the core or could never be undone are not sent.
    let refusals = [
        ("vless-in", Protocol::Vless, password_user("p@x", "pw")),
        ("ss-in", Protocol::Shadowsocks, password_user("s@x", "pw")),
        ("vless-in", Protocol::Vless, id_user("", 3)),
        (
            "vless-in",
            Protocol::Vless,
            User {
                credential: Credential::Id("hello".into()),
                ..id_user("u@x", 0)
            },
        ),
        ("api", Protocol::parse("dokodemo-door"), id_user("d@x", 9)),
        ("trojan-in", Protocol::Trojan, password_user("e@x", "")),
    ];
    for (tag, protocol, user) in refusals {
        let result = api.add_user(tag, &protocol, &user).await;
        assert!(
            matches!(result, Err(ApiError::Refused(_))),
            "{core}: {tag} {user:?}: {result:?}"
        );
        running.assert_alive();
    }
    // The caller's tag -> protocol map is wrong: the core itself says which proxy serves the
    // tag, and nothing crash-prone is sent (a VMess account to a VLESS inbound exits the core).
    // Xray's AEAD shadowsocks inbound takes users (as "shadowsocks"); 4.34's does not.
    let ss_inbound = match core {
        Core::Xray => "served by \"shadowsocks\", not trojan",
        Core::V2ray => "takes no users",
    };
    let misdirected = [
        (
            "vless-in",
            Protocol::Vmess,
            id_user("m1@x", 5),
            "served by \"vless\", not vmess",
        ),
        (
            "vmess-in",
            Protocol::Vless,
            id_user("m2@x", 6),
            "served by \"vmess\", not vless",
        ),
        (
            "vless-in",
            Protocol::Trojan,
            password_user("m3@x", "pw"),
            "served by \"vless\"",
        ),
        (
            "trojan-in",
            Protocol::Vless,
            id_user("m4@x", 7),
            "served by \"trojan\"",
        ),
        (
            "ss-in",
            Protocol::Trojan,
            password_user("m5@x", "pw"),
            ss_inbound,
        ),
        ("api", Protocol::Vless, id_user("m6@x", 8), "takes no users"),
    ];
    for (tag, protocol, user, why) in misdirected {
        match api.add_user(tag, &protocol, &user).await {
            Err(ApiError::Refused(text)) => {
                assert!(text.contains(why), "{core}: {tag}: {text}")
            }
            other => panic!("{core}: {tag} as {protocol}: {other:?}"),
        }
        running.assert_alive();
    }
    assert_eq!(
        api.add_user("vless-in", &Protocol::Vless, &alice).await,
        Ok(()),
        "{core}: core still answers"
    );

    match api
        .add_user("nope-tag", &Protocol::Vless, &id_user("n@x", 4))
        .await
    {
        Err(ApiError::Core(text)) => {
            assert!(
                text.contains("handler not found: nope-tag"),
                "{core}: {text}"
            )
        }
        other => panic!("{core}: unknown tag: {other:?}"),
    }
    let listed = api.inbound_users("vless-in").await;
    match core {
        Core::V2ray => assert_eq!(listed, Ok(None), "{core}: 4.34 cannot list users"),
        Core::Xray => assert_eq!(listed, Ok(Some(vec![alice.clone()])), "{core}: listed"),
    }
    assert!(api.uptime().await.is_ok(), "{core}: GetSysStats answers");
    running.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_adds_sixteen_in_flight() {
    for core in Core::all() {
        bulk(core).await;
    }
}

async fn bulk(core: Core) {
    let mut running = Running::start(core, "bulk");
    let api = running.client();
    let users: Vec<User> = (0..1000)
        .map(|n| id_user(&format!("user{n}@bulk"), n))
        .collect();

    let started = Instant::now();
    let added: Vec<_> = stream::iter(&users)
        .map(|user| api.add_user("vless-in", &Protocol::Vless, user))
        .buffer_unordered(16)
        .collect()
        .await;
    let add_time = started.elapsed();
    assert!(
        added.iter().all(Result::is_ok),
        "{core}: {:?}",
        added.iter().find(|r| r.is_err())
    );
    if core == Core::Xray {
        let listed = api.inbound_users("vless-in").await.unwrap().unwrap();
        assert_eq!(listed.len(), 1000, "{core}: all listed");
    }

    let started = Instant::now();
    let removed: Vec<_> = stream::iter(&users)
        .map(|user| api.remove_user("vless-in", &user.email))
        .buffer_unordered(16)
        .collect()
        .await;
    let remove_time = started.elapsed();
    assert!(
        removed.iter().all(Result::is_ok),
        "{core}: {:?}",
        removed.iter().find(|r| r.is_err())
    );
    eprintln!("{core}: 1000 VLESS adds, 16 in flight: {add_time:?}; 1000 removes: {remove_time:?}");
    running.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_uptime_are_read() {
    for core in Core::all() {
        stats(core).await;
    }
}

async fn stats(core: Core) {
    let mut running = Running::start(core, "stats");
    let api = running.client();
    let uptime = api.uptime().await.unwrap();
    assert!(uptime < Duration::from_secs(60), "{core}: {uptime:?}");
    // The calls above went through the API's dokodemo-door inbound, so it has counted bytes.
    let stats = api.query_stats("inbound>>>", false).await.unwrap();
    let api_uplink = stats
        .iter()
        .find(|(name, _)| name == "inbound>>>api>>>traffic>>>uplink");
    assert!(
        matches!(api_uplink, Some((_, bytes)) if *bytes > 0),
        "{core}: {stats:?}"
    );
    assert!(
        stats.iter().all(|(name, _)| name.contains("inbound>>>")),
        "{core}: {stats:?}"
    );
    let reset = api
        .query_stats("inbound>>>vless-in>>>", true)
        .await
        .unwrap();
    assert_eq!(reset.len(), 2, "{core}: uplink and downlink: {reset:?}");
    running.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reaches_a_restarted_core_and_sees_it_restarted() {
    for core in Core::all() {
        restart(core).await;
    }
}

async fn restart(core: Core) {
    let first = Running::start(core, "restart-1");
    let addr = first.api;
    let api = first.client();
    let alice = id_user("alice@x", 1);
    assert_eq!(
        api.add_user("vless-in", &Protocol::Vless, &alice).await,
        Ok(()),
        "{core}: add alice"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = api.uptime().await.unwrap();
    drop(first);
    let down = api.uptime().await.unwrap_err();
    assert!(down.is_retryable(), "{core}: {down:?}");

    let mut second = Running::start_on(core, "restart-2", addr);
    let after = api.uptime().await.expect("the same client reconnects");
    assert!(
        after < before,
        "{core}: uptime {before:?} -> {after:?} shows the restart (facts P4)"
    );
    // Users added through the API died with the first process.
    assert_eq!(
        api.remove_user("vless-in", "alice@x").await,
        Err(ApiError::NotFound),
        "{core}: alice died with the first process"
    );
    assert_eq!(
        api.add_user("vless-in", &Protocol::Vless, &alice).await,
        Ok(()),
        "{core}: add alice to the new process"
    );
    second.assert_alive();
}

#[tokio::test]
async fn an_absent_or_silent_core_fails_fast_and_retryably() {
    let closed = loopback(free_port());
    let refused = ApiClient::detect(closed, TIMEOUT).await.unwrap_err();
    assert!(matches!(refused, ApiError::Transport(_)), "{refused:?}");

    // A listener that completes TCP handshakes but never speaks HTTP/2.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let api = ApiClient::new(
        silent.local_addr().unwrap(),
        Flavour::V2ray,
        Duration::from_millis(300),
    );
    let started = Instant::now();
    let result = api.remove_user("vless-in", "a@x").await;
    assert_eq!(result, Err(ApiError::Timeout));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(result.unwrap_err().is_retryable());
}

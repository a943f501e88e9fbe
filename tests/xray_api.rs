//! Proof tier for the xray API client: a REAL V2Ray 4.34 (Debian's `v2ray`, /usr/bin/v2ray) on
//! loopback, started per test as a child process and killed by PID when the test ends.
//!
//! Every test ends by checking that the core never exited: the client must never send a
//! request that crashes it (facts P1).

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use serde_json::json;
use xray_warden::domain::{Credential, Flavour, Protocol, User};
use xray_warden::xray::{ApiClient, ApiError, Detected};

const V2RAY: &str = "/usr/bin/v2ray";
const TIMEOUT: Duration = Duration::from_secs(5);

/// A running V2Ray with an API inbound and one inbound per protocol, each on a free port.
struct Core {
    child: Child,
    api: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
}

impl Core {
    fn start(name: &str) -> Core {
        Core::start_on(name, free_port())
    }

    fn start_on(name: &str, api: SocketAddr) -> Core {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("xray_api")
            .join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let inbound = |tag: &str, protocol: &str, settings| {
            json!({"tag": tag, "listen": "127.0.0.1", "port": free_port().port(),
                   "protocol": protocol, "settings": settings})
        };
        // facts §9.1: the API behind a dokodemo-door inbound routed to the "api" outbound.
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
        let log = dir.join("v2ray.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(V2RAY)
            .arg("-config")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{V2RAY} (Debian package v2ray) must be installed: {e}"));
        let mut core = Core {
            child,
            api,
            dir,
            log,
        };
        core.wait_for_api();
        core
    }

    fn wait_for_api(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.api).is_err() {
            self.assert_alive();
            assert!(
                Instant::now() < deadline,
                "API port never opened\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The dokodemo-door port can accept before the API behind it answers: wait for a real
        // call (on a thread of its own, since tests call this from inside their runtime).
        let api = self.api;
        let answers = move || {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let client = ApiClient::new(api, Flavour::V2ray, Duration::from_secs(1));
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
                "API never answered\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_alive(&mut self) {
        let status = self.child.try_wait().unwrap();
        assert!(
            status.is_none(),
            "v2ray exited: {status:?}\n{}",
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(self.api, Flavour::V2ray, TIMEOUT)
    }
}

impl Drop for Core {
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

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
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
    let mut core = Core::start("lifecycle");
    let detected = ApiClient::detect(core.api, TIMEOUT).await.unwrap();
    assert_eq!(
        detected,
        Detected {
            flavour: Flavour::V2ray,
            can_list_users: false
        }
    );

    let api = core.client();
    let alice = id_user("alice@x", 1);
    assert_eq!(
        api.add_user("vless-in", &Protocol::Vless, &alice).await,
        Ok(())
    );
    let again = api.add_user("vless-in", &Protocol::Vless, &alice).await;
    assert_eq!(again, Err(ApiError::AlreadyExists));
    assert_eq!(api.remove_user("vless-in", "alice@x").await, Ok(()));
    assert_eq!(
        api.remove_user("vless-in", "alice@x").await,
        Err(ApiError::NotFound)
    );

    assert_eq!(
        api.add_user("vmess-in", &Protocol::Vmess, &id_user("v@x", 2))
            .await,
        Ok(())
    );
    let trojan = password_user("t@x", "trojan-secret");
    assert_eq!(
        api.add_user("trojan-in", &Protocol::Trojan, &trojan).await,
        Ok(())
    );
    assert_eq!(
        api.remove_user("vmess-in", "V@X").await,
        Ok(()),
        "emails match in any case"
    );
    assert_eq!(api.remove_user("trojan-in", "t@x").await, Ok(()));

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
            "{tag} {user:?}: {result:?}"
        );
        core.assert_alive();
    }
    // The caller's tag -> protocol map is wrong: the core itself says which proxy serves the
    // tag, and nothing crash-prone is sent (a VMess account to a VLESS inbound exits 4.34).
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
            "takes no users",
        ),
        ("api", Protocol::Vless, id_user("m6@x", 8), "takes no users"),
    ];
    for (tag, protocol, user, why) in misdirected {
        match api.add_user(tag, &protocol, &user).await {
            Err(ApiError::Refused(text)) => assert!(text.contains(why), "{tag}: {text}"),
            other => panic!("{tag} as {protocol}: {other:?}"),
        }
        core.assert_alive();
    }
    assert_eq!(
        api.add_user("vless-in", &Protocol::Vless, &alice).await,
        Ok(()),
        "core still answers"
    );

    match api
        .add_user("nope-tag", &Protocol::Vless, &id_user("n@x", 4))
        .await
    {
        Err(ApiError::Core(text)) => {
            assert!(text.contains("handler not found: nope-tag"), "{text}")
        }
        other => panic!("unknown tag: {other:?}"),
    }
    assert_eq!(
        api.inbound_users("vless-in").await,
        Ok(None),
        "4.34 cannot list users"
    );
    core.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_adds_sixteen_in_flight() {
    let mut core = Core::start("bulk");
    let api = core.client();
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
        "{:?}",
        added.iter().find(|r| r.is_err())
    );

    let started = Instant::now();
    let removed: Vec<_> = stream::iter(&users)
        .map(|user| api.remove_user("vless-in", &user.email))
        .buffer_unordered(16)
        .collect()
        .await;
    let remove_time = started.elapsed();
    assert!(
        removed.iter().all(Result::is_ok),
        "{:?}",
        removed.iter().find(|r| r.is_err())
    );
    eprintln!("1000 VLESS adds, 16 in flight: {add_time:?}; 1000 removes: {remove_time:?}");
    core.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_uptime_are_read() {
    let mut core = Core::start("stats");
    let api = core.client();
    let uptime = api.uptime().await.unwrap();
    assert!(uptime < Duration::from_secs(60), "{uptime:?}");
    // The calls above went through the API's dokodemo-door inbound, so it has counted bytes.
    let stats = api.query_stats("inbound>>>", false).await.unwrap();
    let api_uplink = stats
        .iter()
        .find(|(name, _)| name == "inbound>>>api>>>traffic>>>uplink");
    assert!(
        matches!(api_uplink, Some((_, bytes)) if *bytes > 0),
        "{stats:?}"
    );
    assert!(
        stats.iter().all(|(name, _)| name.contains("inbound>>>")),
        "{stats:?}"
    );
    let reset = api
        .query_stats("inbound>>>vless-in>>>", true)
        .await
        .unwrap();
    assert_eq!(reset.len(), 2, "uplink and downlink: {reset:?}");
    core.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reaches_a_restarted_core_and_sees_it_restarted() {
    let first = Core::start("restart-1");
    let addr = first.api;
    let api = first.client();
    let alice = id_user("alice@x", 1);
    assert_eq!(
        api.add_user("vless-in", &Protocol::Vless, &alice).await,
        Ok(())
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = api.uptime().await.unwrap();
    drop(first);
    let down = api.uptime().await.unwrap_err();
    assert!(down.is_retryable(), "{down:?}");

    let mut second = Core::start_on("restart-2", addr);
    let after = api.uptime().await.expect("the same client reconnects");
    assert!(
        after < before,
        "uptime {before:?} -> {after:?} shows the restart (facts P4)"
    );
    // Users added through the API died with the first process.
    assert_eq!(
        api.remove_user("vless-in", "alice@x").await,
        Err(ApiError::NotFound)
    );
    assert_eq!(
        api.add_user("vless-in", &Protocol::Vless, &alice).await,
        Ok(())
    );
    second.assert_alive();
}

#[tokio::test]
async fn an_absent_or_silent_core_fails_fast_and_retryably() {
    let closed = free_port();
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

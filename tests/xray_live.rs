//! Xray-only live proofs of the API client (issue 9 §2): a REAL Xray-core (tests/support/cores.rs,
//! `Core::Xray`) per test, started as a child process and killed by PID when the test ends.
//! Skipped, saying so, when WARDEN_TEST_CORES excludes Xray.
//!
//! Every test checks after each refused or probing request that the core still answers
//! GetSysStats and has not exited; only the throwaway core of
//! `a_mismatched_account_crashes_a_throwaway_core_and_the_client_never_sends_one` is meant to die.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cores::{Core, Origin, TunnelPorts, VlessClient, fetch_via, free_port, tunnel_config};
use xray_warden::domain::{Credential, Flavour, Protocol, User};
use xray_warden::xray::{ApiClient, ApiError, Detected};

const TIMEOUT: Duration = Duration::from_secs(5);
const VISION: &str = "xtls-rprx-vision";
/// A fixed x25519 private key for the REALITY inbound (made with `xray x25519`; test-only).
const REALITY_KEY: &str = "6FHkv7N-z9HWlAW7z7QdyOVNawyZoWpof-UHU6Eamn8";
/// Shadowsocks-2022 keys: standard base64 of 16 bytes (aes-128) and of 32 bytes.
const SS_SERVER_KEY: &str = "MJ9QkBrSWyAaPAfiK+aDnQ==";
const SS_SEED_KEY: &str = "9d8DIYyImXoN6uulv39YxQ==";
const SS_UNNAMED_KEY: &str = "RLKYIMBbftGAiK1lTjaqDw==";
const SS_KEY_32: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A running Xray on `config`, its API at `api`.
struct Xray {
    child: Child,
    api: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
}

impl Xray {
    /// Starts Xray on `config` (the API at `api_port`) and waits until the port accepts.
    fn start(name: &str, config: &Value, api_port: u16) -> Xray {
        let text = serde_json::to_string_pretty(config).unwrap();
        Xray::start_text(name, &text, api_port)
    }

    fn start_text(name: &str, config: &str, api_port: u16) -> Xray {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("xray_live")
            .join(format!("{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        fs::write(&file, config).unwrap();
        let log = dir.join("xray.log");
        let out = fs::File::create(&log).unwrap();
        let child = Core::Xray
            .command(&file)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting xray");
        let mut xray = Xray {
            child,
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(xray.api).is_err() {
            xray.assert_alive("starting");
            assert!(
                Instant::now() < deadline,
                "API never opened\n{}",
                xray.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        xray
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(self.api, Flavour::Xray, TIMEOUT)
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    fn assert_alive(&mut self, after: &str) {
        let status = self.exited();
        assert!(
            status.is_none(),
            "xray exited after {after}: {status:?}\n{}",
            self.log_text()
        );
    }

    /// GetSysStats answers and the process has not exited.
    async fn assert_answers(&mut self, after: &str) {
        let uptime = self.client().uptime().await;
        assert!(uptime.is_ok(), "GetSysStats after {after}: {uptime:?}");
        self.assert_alive(after);
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `xray api <args> --server=API`: the core's own CLI client, for the exact texts.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(Core::Xray.bin())
            .arg("api")
            .arg(args[0])
            // Go's flag parsing stops at the first argument that is not a flag.
            .arg(format!("--server={}", self.api))
            .args(&args[1..])
            .output()
            .expect("running xray api");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Xray {
    fn drop(&mut self) {
        // std's kill signals exactly this child's PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn inbound(tag: &str, protocol: &str, settings: Value) -> Value {
    json!({"tag": tag, "listen": "127.0.0.1", "port": free_port(),
           "protocol": protocol, "settings": settings})
}

/// A config with the API on `api.listen` (facts §9.2) serving `services`, and `inbounds`.
fn config(api_port: u16, services: &[&str], inbounds: Vec<Value>) -> Value {
    json!({
        "log": {"loglevel": "warning"},
        "api": {"tag": "api", "listen": format!("127.0.0.1:{api_port}"), "services": services},
        "stats": {},
        "inbounds": inbounds,
        "outbounds": [{"tag": "direct", "protocol": "freedom"}]
    })
}

/// One inbound per protocol the API manages, plus the ones it must refuse.
fn every_protocol(api_port: u16) -> Value {
    let reality = json!({"network": "tcp", "security": "reality", "realitySettings": {
        "dest": "127.0.0.1:9", "serverNames": ["example.com"],
        "privateKey": REALITY_KEY, "shortIds": [""]}});
    let mut vision = inbound(
        "vless-vision",
        "vless",
        json!({"clients": [], "decryption": "none"}),
    );
    vision["streamSettings"] = reality;
    config(
        api_port,
        &["HandlerService", "StatsService"],
        vec![
            inbound(
                "vless-in",
                "vless",
                json!({"clients": [], "decryption": "none"}),
            ),
            vision,
            inbound("vmess-in", "vmess", json!({"clients": []})),
            inbound("trojan-in", "trojan", json!({"clients": []})),
            // Multi-user Shadowsocks-2022: a non-empty clients list and an aes method (facts
            // §3.5); one client without email, which Xray names unnamed-user-1-<uuid>.
            inbound(
                "ss22-in",
                "shadowsocks",
                json!({
                "method": "2022-blake3-aes-128-gcm", "password": SS_SERVER_KEY,
                "clients": [{"password": SS_SEED_KEY, "email": "seed@x"},
                            {"password": SS_UNNAMED_KEY}]}),
            ),
            // Single-user Shadowsocks-2022: not a user manager (semantics §2).
            inbound(
                "ss22-single",
                "shadowsocks",
                json!({
                "method": "2022-blake3-aes-128-gcm", "password": SS_SERVER_KEY}),
            ),
            // AEAD shadowsocks: a user manager on Xray that keeps duplicate emails (semantics §1).
            inbound(
                "ss-aead",
                "shadowsocks",
                json!({
                "clients": [{"password": "pw", "method": "aes-128-gcm", "email": "aead@x"}]}),
            ),
        ],
    )
}

fn id_user(email: &str, n: u64, flow: &str) -> User {
    User {
        email: email.to_owned(),
        credential: Credential::Id(format!("0000000b-0000-4000-8000-{n:012x}")),
        flow: flow.to_owned(),
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
async fn flavour_detection_tells_what_the_api_serves() {
    if !Core::xray_enabled("flavour_detection_tells_what_the_api_serves") {
        return;
    }
    let cases: [(&str, &[&str], Result<Detected, ()>); 4] = [
        ("all", &["HandlerService", "StatsService"], Ok(xray(true))),
        ("handler", &["HandlerService"], Ok(xray(true))),
        ("stats", &["StatsService"], Ok(xray(false))),
        ("neither", &["LoggerService"], Err(())),
    ];
    for (name, services, expected) in cases {
        let port = free_port();
        let vless = inbound(
            "vless-in",
            "vless",
            json!({"clients": [], "decryption": "none"}),
        );
        let mut core = Xray::start(
            &format!("detect-{name}"),
            &config(port, services, vec![vless]),
            port,
        );
        let detected = detect_until_answered(core.api).await;
        match (&detected, expected) {
            (Ok(found), Ok(want)) => assert_eq!(*found, want, "{name}"),
            (Err(ApiError::NoServices(text)), Err(())) => {
                assert!(
                    text.contains("neither HandlerService nor StatsService"),
                    "{text}"
                );
                assert!(text.contains("api.services"), "{text}");
            }
            other => panic!("{name}: {other:?}"),
        }
        if services.contains(&"StatsService") {
            core.assert_answers(name).await;
        }
        core.assert_alive(name);
    }
}

fn xray(can_list_users: bool) -> Detected {
    Detected {
        flavour: Flavour::Xray,
        can_list_users,
    }
}

/// `api.listen` accepts before the gRPC server is up on a slow machine: retry transport errors.
async fn detect_until_answered(api: SocketAddr) -> Result<Detected, ApiError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ApiClient::detect(api, TIMEOUT).await {
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            answer => return answer,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_for_every_protocol_are_listed_with_their_credentials() {
    if !Core::xray_enabled("adds_for_every_protocol_are_listed_with_their_credentials") {
        return;
    }
    let port = free_port();
    let mut core = Xray::start("adds", &every_protocol(port), port);
    detect_until_answered(core.api).await.unwrap();
    let api = core.client();
    let sam = password_user("sam@x", "AAECAwQFBgcICQoLDA0ODw==");
    let desired: [(&str, Protocol, Vec<User>); 5] = [
        (
            "vless-in",
            Protocol::Vless,
            vec![id_user("plain@x", 1, ""), id_user("vis@x", 2, VISION)],
        ),
        // A vision flow needs TCP with TLS or REALITY for a client to use it; the API takes it
        // on any VLESS inbound (above) and on this REALITY one alike.
        (
            "vless-vision",
            Protocol::Vless,
            vec![id_user("real@x", 3, VISION)],
        ),
        ("vmess-in", Protocol::Vmess, vec![id_user("vm@x", 4, "")]),
        (
            "trojan-in",
            Protocol::Trojan,
            vec![password_user("tro@x", "trojan-secret")],
        ),
        ("ss22-in", Protocol::Shadowsocks, vec![sam.clone()]),
    ];
    for (tag, protocol, users) in &desired {
        for user in users {
            let added = api.add_user(tag, protocol, user).await;
            assert_eq!(added, Ok(()), "{tag} {}", user.email);
        }
        core.assert_answers(tag).await;
    }
    for (tag, _, users) in &desired {
        let mut want: BTreeSet<User> = users.iter().cloned().collect();
        if *tag == "ss22-in" {
            // The config's named client; the one without email is left out of the listing.
            want.insert(password_user("seed@x", SS_SEED_KEY));
        }
        let listed = api
            .inbound_users(tag)
            .await
            .unwrap()
            .expect("Xray lists users");
        let listed: BTreeSet<User> = listed.into_iter().collect();
        // Equal sets, credentials and flows included: a second sync has nothing to do.
        assert_eq!(listed, want, "{tag}");
    }
    // The core holds the unnamed client; the listing leaves it out (semantics §8).
    let raw = core.cli(&["inbounduser", "-tag", "ss22-in"]);
    assert!(raw.contains("unnamed-user-1-"), "{raw}");
    core.assert_answers("listing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exists_and_not_found_in_any_letter_case_are_idempotent_outcomes() {
    if !Core::xray_enabled("exists_and_not_found_in_any_letter_case_are_idempotent_outcomes") {
        return;
    }
    let port = free_port();
    let mut core = Xray::start("texts", &every_protocol(port), port);
    detect_until_answered(core.api).await.unwrap();
    let api = core.client();
    let cases = [
        (
            "vless-in",
            Protocol::Vless,
            id_user("alice@x", 1, ""),
            "proxy/vless",
        ),
        (
            "vmess-in",
            Protocol::Vmess,
            id_user("alice@x", 2, ""),
            "proxy/vmess/inbound",
        ),
        (
            "trojan-in",
            Protocol::Trojan,
            password_user("alice@x", "pw"),
            "proxy/trojan",
        ),
        (
            "ss22-in",
            Protocol::Shadowsocks,
            password_user("alice@x", "AAECAwQFBgcICQoLDA0ODw=="),
            "proxy/shadowsocks_2022",
        ),
    ];
    for (tag, protocol, user, package) in cases {
        assert_eq!(api.add_user(tag, &protocol, &user).await, Ok(()), "{tag}");
        assert_eq!(
            api.add_user(tag, &protocol, &user).await,
            Err(ApiError::AlreadyExists),
            "{tag}: the same email"
        );
        // Shadowsocks-2022's own check is case-sensitive (facts P7): the client asks first.
        let upper = User {
            email: "ALICE@x".into(),
            ..user.clone()
        };
        assert_eq!(
            api.add_user(tag, &protocol, &upper).await,
            Err(ApiError::AlreadyExists),
            "{tag}: another letter case"
        );
        let listed = api.inbound_users(tag).await.unwrap().unwrap();
        let alices = listed
            .iter()
            .filter(|u| u.email.eq_ignore_ascii_case("alice@x"))
            .count();
        assert_eq!(alices, 1, "{tag}: {listed:?}");
        // The exact text the core sends for a missing user, through its own CLI.
        let text = core.cli(&["rmu", &format!("-tag={tag}"), "Nobody@X"]);
        let lowered = format!("{package}: User nobody@x not found.");
        let kept = format!("{package}: User Nobody@X not found.");
        assert!(
            text.contains(&lowered) || text.contains(&kept),
            "{tag}: {text}"
        );
        assert_eq!(
            api.remove_user(tag, "nobody@x").await,
            Err(ApiError::NotFound),
            "{tag}: missing"
        );
        assert_eq!(
            api.remove_user(tag, "ALICE@X").await,
            Ok(()),
            "{tag}: remove in another case"
        );
        assert_eq!(
            api.remove_user(tag, "alice@x").await,
            Err(ApiError::NotFound),
            "{tag}: removed already"
        );
        core.assert_answers(tag).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_and_every_refused_request_leave_the_core_alive() {
    if !Core::xray_enabled("the_probe_and_every_refused_request_leave_the_core_alive") {
        return;
    }
    let port = free_port();
    let mut core = Xray::start("refusals", &every_protocol(port), port);
    detect_until_answered(core.api).await.unwrap();
    let api = core.client();
    let key = "AAECAwQFBgcICQoLDA0ODw==";
    let refusals = [
        // Wrong protocol for the inbound: each would crash the core if sent (facts P1).
        (
            "vless-in",
            Protocol::Vmess,
            id_user("m1@x", 1, ""),
            "served by \"vless\"",
        ),
        (
            "vmess-in",
            Protocol::Vless,
            id_user("m2@x", 2, ""),
            "served by \"vmess\"",
        ),
        (
            "trojan-in",
            Protocol::Shadowsocks,
            password_user("m3@x", key),
            "served by \"trojan\"",
        ),
        (
            "ss22-in",
            Protocol::Trojan,
            password_user("m4@x", "pw"),
            "served by \"shadowsocks_2022\"",
        ),
        (
            "ss22-in",
            Protocol::Vless,
            id_user("m5@x", 5, ""),
            "served by \"shadowsocks_2022\"",
        ),
        (
            "ss-aead",
            Protocol::Trojan,
            password_user("m6@x", "pw"),
            "served by \"shadowsocks\"",
        ),
        // What the client will not send to a matching inbound.
        (
            "ss-aead",
            Protocol::Shadowsocks,
            password_user("m7@x", key),
            "AEAD",
        ),
        (
            "ss22-single",
            Protocol::Shadowsocks,
            password_user("m8@x", key),
            "takes no users",
        ),
        (
            "ss22-in",
            Protocol::Shadowsocks,
            password_user("m9@x", SS_KEY_32),
            "32 bytes",
        ),
        (
            "ss22-in",
            Protocol::Shadowsocks,
            password_user("m10@x", "pw"),
            "base64",
        ),
        (
            "ss22-in",
            Protocol::Shadowsocks,
            password_user("", key),
            "empty email",
        ),
        (
            "vless-in",
            Protocol::Vless,
            id_user("", 11, ""),
            "empty email",
        ),
        (
            "vless-in",
            Protocol::Vless,
            password_user("m12@x", "pw"),
            "does not fit",
        ),
    ];
    for (tag, protocol, user, why) in refusals {
        match api.add_user(tag, &protocol, &user).await {
            Err(ApiError::Refused(text)) => assert!(text.contains(why), "{tag}: {text}"),
            other => panic!("{tag} as {protocol}: {other:?}"),
        }
        core.assert_answers(&format!("{tag} as {protocol}")).await;
    }
    // A new client probes each inbound again: the probes alone, on every inbound.
    let fresh = core.client();
    for (tag, protocol) in [
        ("vless-in", Protocol::Vless),
        ("vless-vision", Protocol::Vless),
        ("vmess-in", Protocol::Vmess),
        ("trojan-in", Protocol::Trojan),
        ("ss22-in", Protocol::Shadowsocks),
    ] {
        let user = match protocol {
            Protocol::Vless | Protocol::Vmess => id_user("p@x", 20, ""),
            _ => password_user("p@x", key),
        };
        assert_eq!(fresh.add_user(tag, &protocol, &user).await, Ok(()), "{tag}");
        core.assert_answers(&format!("probing {tag}")).await;
    }
    assert!(matches!(
        api.inbound_users("ss22-single").await,
        Err(ApiError::CannotHoldUsers(_))
    ));
    core.assert_answers("listing a single-user inbound").await;
}

/// Messages shaped like Xray's, declared here so the test can send what the client never
/// would (facts §1.2, §3.2, §3.5 numbers).
mod raw {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypedMessage {
        #[prost(string, tag = "1")]
        pub r#type: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct User {
        #[prost(uint32, tag = "1")]
        pub level: u32,
        #[prost(string, tag = "2")]
        pub email: String,
        #[prost(message, optional, tag = "3")]
        pub account: Option<TypedMessage>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VmessAccount {
        #[prost(string, tag = "1")]
        pub id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AddUserOperation {
        #[prost(message, optional, tag = "1")]
        pub user: Option<User>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AlterInboundRequest {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(message, optional, tag = "2")]
        pub operation: Option<TypedMessage>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AlterInboundResponse {}
}

/// Sends an AlterInbound adding a VMess account to the inbound `tag`, bypassing the client.
async fn send_vmess_account(api: SocketAddr, tag: &str) -> Result<(), tonic::Status> {
    use prost::Message;
    let account = raw::VmessAccount {
        id: "0000000b-0000-4000-8000-00000000abcd".into(),
    };
    let user = raw::User {
        level: 0,
        email: "crash@x".into(),
        account: Some(raw::TypedMessage {
            r#type: "xray.proxy.vmess.Account".into(),
            value: account.encode_to_vec(),
        }),
    };
    let operation = raw::AddUserOperation { user: Some(user) };
    let request = raw::AlterInboundRequest {
        tag: tag.into(),
        operation: Some(raw::TypedMessage {
            r#type: "xray.app.proxyman.command.AddUserOperation".into(),
            value: operation.encode_to_vec(),
        }),
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{api}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/xray.app.proxyman.command.HandlerService/AlterInbound",
    );
    let codec =
        tonic_prost::ProstCodec::<raw::AlterInboundRequest, raw::AlterInboundResponse>::default();
    grpc.unary(tonic::Request::new(request), path, codec)
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_account_crashes_a_throwaway_core_and_the_client_never_sends_one() {
    if !Core::xray_enabled(
        "a_mismatched_account_crashes_a_throwaway_core_and_the_client_never_sends_one",
    ) {
        return;
    }
    let port = free_port();
    let vless = inbound(
        "vless-in",
        "vless",
        json!({"clients": [], "decryption": "none"}),
    );
    let config = config(port, &["HandlerService", "StatsService"], vec![vless]);
    let mut core = Xray::start("throwaway", &config, port);
    detect_until_answered(core.api).await.unwrap();
    // The client: asked to add a VMess user to what is a VLESS inbound, it refuses.
    let api = core.client();
    let result = api
        .add_user("vless-in", &Protocol::Vmess, &id_user("crash@x", 9, ""))
        .await;
    assert!(
        matches!(result, Err(ApiError::Refused(ref t)) if t.contains("served by \"vless\"")),
        "{result:?}"
    );
    core.assert_answers("the client's refusal").await;
    // The same account sent raw: the core dies (no panic recovery in its gRPC server).
    let sent = send_vmess_account(core.api, "vless-in").await;
    assert!(
        sent.is_err(),
        "the core answered a mismatched account: {sent:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = core.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "xray still runs after a mismatched account"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.success(), "{status:?}");
    let log = core.log_text();
    assert!(log.contains("panic"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_inbound_counters_count_real_traffic() {
    if !Core::xray_enabled("user_and_inbound_counters_count_real_traffic") {
        return;
    }
    let ports = TunnelPorts::free();
    let mut core = Xray::start_text("stats", &tunnel_config(ports), ports.api);
    let dir = core.dir.clone();
    let api = core.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.uptime().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "API never answered\n{}",
            core.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let carol = id_user("Carol@X", 7, "");
    assert_eq!(
        api.add_user("vless-in", &Protocol::Vless, &carol).await,
        Ok(())
    );
    let Credential::Id(id) = &carol.credential else {
        unreachable!()
    };
    let client = VlessClient::start(Core::Xray, &dir, "carol", ports.vless, id);
    let origin = Origin::start("counted");
    assert_eq!(fetch_via(client.socks, &origin).as_deref(), Ok("counted"));
    drop(client);

    // Counters are named with the email exactly as added (facts §4.3); they are updated as
    // the bytes pass, so wait a little for the last ones.
    let wanted = [
        "user>>>Carol@X>>>traffic>>>uplink",
        "user>>>Carol@X>>>traffic>>>downlink",
        "inbound>>>vless-in>>>traffic>>>uplink",
    ];
    // Seen on Xray 26.3.27: inbound>>>vless-in>>>traffic>>>downlink is listed but stays 0 for
    // this plain VLESS (raw TCP) fetch while the user's downlink counts the reply, so only its
    // presence is required here (it is printed for the record).
    let listed_only = "inbound>>>vless-in>>>traffic>>>downlink";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stats = api.query_stats("user>>>Carol@X>>>", false).await.unwrap();
        stats.extend(
            api.query_stats("inbound>>>vless-in>>>", false)
                .await
                .unwrap(),
        );
        let value = |name: &str| stats.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        if wanted.iter().all(|name| value(name).is_some_and(|v| v > 0))
            && value(listed_only).is_some()
        {
            eprintln!("counters: {stats:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    core.assert_answers("reading stats").await;
}

//! Proofs of the user sync against a REAL Xray-core (issue 9 §3, §4): where Xray's semantics
//! differ from V2Ray's, the warden must neither lose users nor churn them. Each test starts its
//! own Xray as a child process on a config it writes, drives the sync engine against it, and
//! reads the ground truth from the core (GetInboundUsers, `xray api`, `xray run -test`), never
//! from the code under test alone. Each ends by checking that the core is still alive.
//!
//! `cargo test --test usersync_xray` (no root needed). Xray-only: skipped, saying so, when
//! WARDEN_TEST_CORES excludes Xray.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::Value;
use support::cores::{Core, free_port};
use xray_warden::domain::{Credential, Flavour, TunnelId, User};
use xray_warden::users::Document;
use xray_warden::usersync::clock::CoreClock;
use xray_warden::usersync::engine::{Engine, Outcome, Target};
use xray_warden::xray::ApiClient;

const VISION: &str = "xtls-rprx-vision";
const A_ID: &str = "0f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f";
const B_ID: &str = "1f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f";
const C_ID: &str = "2f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f";
/// Shadowsocks-2022 keys (16 bytes, base64) for 2022-blake3-aes-128-gcm.
const SS_KEY: &str = "mv9WcpkziE0g18O3LK2n2g==";
const SS_USER_KEY: &str = "ArEeA70sG+og/qULmABPFA==";
/// Another user key of the same length (16 bytes, base64).
const SS_NEW_USER_KEY: &str = "YWJjZGVmZ2hpamtsbW5vcA==";

/// A core that never restarts during these syncs.
struct SteadyClock;

impl CoreClock for SteadyClock {
    fn start_usec<'a>(&'a self, _: &'a TunnelId) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async { Some(1) })
    }
}

/// One Xray tunnel: its config file, its process (killed by PID on drop), an engine syncing it.
struct Tunnel {
    dir: PathBuf,
    config: PathBuf,
    api: SocketAddr,
    core: Child,
    engine: Engine,
    registry: prometheus::Registry,
    target: Target,
    /// The last document text and its parse.
    doc: Option<(String, Arc<Document>)>,
}

impl Tunnel {
    /// The users of inbound `tag` as the core's own CLI (`xray api inbounduser`) lists them.
    fn cli_users(&self, tag: &str) -> Vec<Value> {
        let out = Command::new(Core::Xray.bin())
            .args(["api", "inbounduser"])
            .arg(format!("--server={}", self.api))
            .args(["-tag", tag])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
        answer["users"].as_array().cloned().unwrap_or_default()
    }

    /// Writes a config with `api.listen` and `inbounds` (a JSON array text, `{port}` placeholders
    /// filled with free ports) and starts Xray on it. `None` when the run excludes Xray.
    fn start(test: &str, inbounds: &str) -> Option<Tunnel> {
        if !Core::xray_enabled(test) {
            return None;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("usersync-xray-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut inbounds = inbounds.to_owned();
        while inbounds.contains("{port}") {
            inbounds = inbounds.replacen("{port}", &free_port().to_string(), 1);
        }
        let config = dir.join("xray-edge.json");
        let text = format!(
            r#"{{"log": {{"loglevel": "warning"}},
  "api": {{"tag": "api", "listen": "{api}", "services": ["HandlerService", "StatsService"]}},
  "inbounds": {inbounds},
  "outbounds": [{{"protocol": "freedom"}}]}}"#
        );
        std::fs::write(&config, text).unwrap();
        assert_config_loads(&config);
        let core = spawn(&config, api);
        let (engine, registry) = support::engine::engine(&dir.join("state"), Arc::new(SteadyClock));
        let target = Target {
            id: TunnelId::new("edge").unwrap(),
            config_path: config.clone(),
            core_start_usec: 1,
        };
        Some(Tunnel {
            dir,
            config,
            api,
            core,
            engine,
            registry,
            target,
            doc: None,
        })
    }

    /// One round with the document `doc`; the same text gives the same parsed document, as
    /// the daemon's loop keeps it while its source is unchanged.
    async fn sync(&mut self, doc: &str) -> Outcome {
        self.round(doc, false).await
    }

    /// A forced round (`POST /api/v1/sync {"force": true}`).
    async fn sync_forced(&mut self, doc: &str) -> Outcome {
        self.round(doc, true).await
    }

    async fn round(&mut self, text: &str, force: bool) -> Outcome {
        let doc = match &self.doc {
            Some((last, doc)) if last == text => doc.clone(),
            _ => {
                let doc = Arc::new(xray_warden::users::parse_document(text.as_bytes()).unwrap());
                self.doc = Some((text.to_owned(), doc.clone()));
                doc
            }
        };
        let result = self.engine.sync(&self.target, &doc, true, force).await;
        result.unwrap_or_else(|e| panic!("sync failed: {e}"))
    }

    /// The users the core lists for `tag` (GetInboundUsers, the ground truth).
    async fn live(&self, tag: &str) -> Vec<User> {
        let client = ApiClient::new(self.api, Flavour::Xray, Duration::from_secs(5));
        let mut users = client.inbound_users(tag).await.unwrap().unwrap();
        users.sort();
        users
    }

    /// `xray api <args> --server=API`.
    fn xray_api(&self, args: &[&str]) -> String {
        let out = Command::new(Core::Xray.bin())
            .arg("api")
            .arg(args[0])
            .arg(format!("--server={}", self.api))
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "xray api {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn file(&self) -> Value {
        serde_json::from_slice(&std::fs::read(&self.config).unwrap()).unwrap()
    }

    /// The value of a gauge series with these label values, if exported.
    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = self
            .registry
            .gather()
            .into_iter()
            .find(|f| f.name() == name)?;
        let series = family.get_metric().iter().find(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })?;
        Some(series.get_gauge().get_value())
    }

    /// Restarts the core on the config file as it is now (what systemd's restart does).
    fn restart(&mut self) {
        self.stop();
        self.core = spawn(&self.config, self.api);
        self.target.core_start_usec += 1;
    }

    /// Every test ends here: the core never crashed.
    fn assert_alive(&mut self) {
        assert!(
            self.core.try_wait().unwrap().is_none(),
            "the core exited (log in {})",
            self.dir.display()
        );
        self.xray_api(&["statssys"]);
    }

    fn stop(&mut self) {
        let _ = self.core.kill();
        let _ = self.core.wait();
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(config: &Path, api: SocketAddr) -> Child {
    let log = std::fs::File::create(config.with_extension("log")).unwrap();
    let child = Command::new(Core::Xray.bin())
        .args(Core::Xray.run_args(config))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting xray");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(api).is_err() {
        assert!(Instant::now() < deadline, "the core's API never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// `xray run -test -config F`: the core's own verdict on a config file.
fn assert_config_loads(config: &Path) {
    let out = Command::new(Core::Xray.bin())
        .args(["run", "-test", "-config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xray -test refuses {}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

fn user(email: &str, credential: Credential, flow: &str) -> User {
    User {
        email: email.into(),
        credential,
        flow: flow.into(),
        level: 0,
    }
}

fn id(text: &str) -> Credential {
    Credential::Id(text.into())
}

fn pw(text: &str) -> Credential {
    Credential::Password(text.into())
}

fn emails(users: &[User]) -> Vec<&str> {
    users.iter().map(|u| u.email.as_str()).collect()
}

#[path = "usersync_xray/changes.rs"]
mod changes;
#[path = "usersync_xray/quiet.rs"]
mod quiet;
#[path = "usersync_xray/shapes.rs"]
mod shapes;

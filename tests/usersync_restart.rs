//! Proof for a core that restarts in the middle of a user sync (issue 8, item 8), once per real
//! core: V2Ray 4.34, which cannot list its users, so the warden's record of what it holds is all
//! there is, and Xray-core, whose live list the engine reads instead. The core is restarted by the test between the API calls and the writing of the
//! config file — the moment the engine asks for the core's start time — so the new process
//! runs the old config, without the user just added. The next sync must add her again; the
//! ground truth is a REAL VLESS client getting through the tunnel with her id.
//!
//! `cargo test --test usersync_restart` (no root needed: the core is a child process).

mod support;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use support::cores::{Core, Origin, TunnelPorts, VlessClient, fetch_via, tunnel_config};
use xray_warden::domain::TunnelId;
use xray_warden::usersync::clock::CoreClock;
use xray_warden::usersync::engine::{SyncError, Target};

const ALICE: &str = "0f8c7a52-3e7b-4c1e-9d0a-1a2b3c4d5e6f";

/// The tunnel's core, started by hand; killed by PID on drop.
struct Running {
    core: Core,
    child: Child,
    config: PathBuf,
    api: u16,
}

impl Running {
    fn start(core: Core, config: &Path, api: u16) -> Running {
        let child = core
            .command(config)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {core}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
            assert!(Instant::now() < deadline, "the core's API never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Running {
            core,
            child,
            config: config.to_owned(),
            api,
        }
    }

    /// What systemd's Restart= does: the old process goes, a new one reads the config file.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Running::start(self.core, &self.config.clone(), self.api);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clock whose first reading restarts the core and reports start time 2 (the sync began
/// with start time 1); later readings report 2.
struct RestartingClock {
    core: Arc<Mutex<Running>>,
    readings: Mutex<u32>,
}

impl CoreClock for RestartingClock {
    fn start_usec<'a>(&'a self, _: &'a TunnelId) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async move {
            let first = {
                let mut n = self.readings.lock().unwrap();
                *n += 1;
                *n == 1
            };
            if first {
                let core = self.core.clone();
                tokio::task::spawn_blocking(move || core.lock().unwrap().restart())
                    .await
                    .unwrap();
            }
            Some(2)
        })
    }
}

fn scratch(core: Core) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("usersync-restart-{core}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait_fetch(client: &VlessClient, origin: &Origin) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fetch_via(client.socks, origin) {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() > deadline => return Err(err),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

per_core!(a_core_restarted_mid_sync_gets_its_additions_again);

fn a_core_restarted_mid_sync_gets_its_additions_again(core: Core) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(restarted_mid_sync(core));
}

async fn restarted_mid_sync(kind: Core) {
    let dir = scratch(kind);
    let ports = TunnelPorts::free();
    let config = dir.join("xray-edge.json");
    std::fs::write(&config, tunnel_config(ports)).unwrap();
    let core = Arc::new(Mutex::new(Running::start(kind, &config, ports.api)));
    let clock = Arc::new(RestartingClock {
        core: core.clone(),
        readings: Mutex::new(0),
    });
    let (mut engine, _registry) = support::engine::engine(&dir.join("state"), clock);
    let doc = Arc::new(
        xray_warden::users::parse_document(
            format!(r#"{{"users": [{{"email": "alice@example.com", "id": "{ALICE}"}}]}}"#)
                .as_bytes(),
        )
        .unwrap(),
    );
    let mut target = Target {
        id: TunnelId::new("edge").unwrap(),
        config_path: config.clone(),
        core_start_usec: 1,
    };

    // Alice is added through the API, then the core restarts before anything is written.
    let first = engine.sync(&target, &doc, true, false).await;
    assert!(
        matches!(
            first,
            Err(SyncError::CoreRestarted {
                before: 1,
                now: Some(2)
            })
        ),
        "{first:?}"
    );

    // The next sync, of the new process, sends her again.
    target.core_start_usec = 2;
    let second = engine.sync(&target, &doc, true, false).await.unwrap();
    assert_eq!(second.added, 1, "{second:?}");

    // Ground truth: the running core lets her in.
    let origin = Origin::start("through the restarted core");
    let alice = tokio::task::spawn_blocking(move || {
        let client = VlessClient::start(kind, &dir, "alice", ports.vless, ALICE);
        wait_fetch(&client, &origin)
    });
    alice
        .await
        .unwrap()
        .expect("alice gets through the restarted core");
    drop(core);
}

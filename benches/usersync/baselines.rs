//! Baselines A and B (plain gRPC calls) and C (one process per user: `xray api adu` on Xray,
//! `examples/add_user` on V2Ray 4.34, which has no `adu`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use tokio::runtime::Runtime;
use xray_warden::domain::{Credential, Protocol, User};
use xray_warden::xray::ApiClient;

use crate::adds::{Adds, held};
use crate::cores::Core;
use crate::live::{CpuMark, LiveCore};
use crate::{CALL_TIMEOUT, RSS_SETTLE, TAG, target_dir};

/// Baselines A and B: `ApiClient::add_user` per user, `width` calls in flight.
pub async fn bench_grpc(kind: Core, dir: &Path, list: &[User], width: usize) -> Adds {
    let mut core = LiveCore::start(kind, dir);
    let client = ApiClient::new(core.api, kind.flavour(), CALL_TIMEOUT);
    let core_rss_idle = core.rss_kib();
    let mark = CpuMark::now(core.pid());
    let started = Instant::now();
    let results = if width == 1 {
        let mut results = Vec::with_capacity(list.len());
        for user in list {
            results.push(client.add_user(TAG, &Protocol::Vless, user).await);
        }
        results
    } else {
        let calls = list
            .iter()
            .map(|u| client.add_user(TAG, &Protocol::Vless, u));
        stream::iter(calls).buffer_unordered(width).collect().await
    };
    let took = started.elapsed();
    let cpu = mark.since();
    core.assert_alive();
    tokio::time::sleep(RSS_SETTLE).await;
    let core_rss_after = core.rss_kib();
    let first_error = results.iter().find_map(|r| r.as_ref().err());
    let held = held(&core, list).await;
    core.assert_alive();
    Adds {
        tried: list.len(),
        ok: results.iter().filter(|r| r.is_ok()).count(),
        held,
        first_error: first_error.map(ToString::to_string),
        took,
        cpu,
        core_rss_idle,
        core_rss_after,
        total: list.len(),
        skipped: None,
    }
}

/// What baseline C runs per user on each core.
enum Spawner {
    /// `xray api adu --server=ADDR FILE`: FILE is a config with the inbound and one client.
    Adu(PathBuf),
    /// `examples/add_user ADDR TAG EMAIL UUID`.
    AddUser(PathBuf),
}

impl Spawner {
    fn of(kind: Core) -> Result<Spawner, String> {
        if kind == Core::Xray {
            return Ok(Spawner::Adu(kind.bin()));
        }
        let exe = target_dir().join("release/examples/add_user");
        match exe.exists() {
            true => Ok(Spawner::AddUser(exe)),
            false => Err(format!(
                "{} is missing: build it with `cargo build --release --example add_user`",
                exe.display()
            )),
        }
    }

    /// Adds `user` in one process; the error text when it did not.
    fn add(&self, core: &LiveCore, files: &Path, user: &User) -> Result<(), String> {
        let Credential::Id(id) = &user.credential else {
            unreachable!("the document holds VLESS ids only")
        };
        let addr = core.api.to_string();
        match self {
            Spawner::AddUser(exe) => {
                let out = run(Command::new(exe).args([addr.as_str(), TAG, &user.email, id]));
                match out.status.success() {
                    true => Ok(()),
                    false => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
                }
            }
            Spawner::Adu(xray) => {
                // What the seed's agent would write: the inbound as in the config, one client.
                let file = files.join(format!("{}.json", user.email));
                let inbound = serde_json::json!({"inbounds": [{
                    "tag": TAG, "listen": "127.0.0.1", "port": core.vless_port, "protocol": "vless",
                    "settings": {"clients": [{"id": id, "email": user.email}], "decryption": "none"},
                }]});
                fs::write(&file, inbound.to_string()).expect("writing an adu file");
                let server = format!("--server={addr}");
                let out = run(Command::new(xray)
                    .args(["api", "adu", server.as_str()])
                    .arg(&file));
                // adu exits 0 whatever happened; its last line counts the users it added.
                let stdout = String::from_utf8_lossy(&out.stdout);
                match out.status.success() && stdout.contains("Added 1 user(s)") {
                    true => Ok(()),
                    false => {
                        let why = stdout
                            .lines()
                            .find(|l| l.contains("error") || l.contains("fail"));
                        let stderr = String::from_utf8_lossy(&out.stderr);
                        Err(why.unwrap_or(stderr.trim()).to_owned())
                    }
                }
            }
        }
    }
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("running a per-user process")
}

/// Baseline C: one process per user, one after another, for the first `count` users.
pub fn bench_spawn(kind: Core, runtime: &Runtime, dir: &Path, list: &[User], count: usize) -> Adds {
    let spawner = match Spawner::of(kind) {
        Ok(spawner) => spawner,
        Err(why) => {
            eprintln!("bench: {kind}: C skipped: {why}");
            return Adds::skipped(why);
        }
    };
    eprintln!("bench: {kind}: C, one process per user, {count} users");
    let mut core = LiveCore::start(kind, dir);
    let files = dir.join("adu");
    fs::create_dir_all(&files).expect("creating the adu dir");
    let core_rss_idle = core.rss_kib();
    let mut adds = Adds::default();
    let mark = CpuMark::now(core.pid());
    let started = Instant::now();
    for user in &list[..count] {
        adds.tried += 1;
        match spawner.add(&core, &files, user) {
            Ok(()) => adds.ok += 1,
            Err(why) => {
                adds.first_error.get_or_insert(why);
            }
        }
    }
    let took = started.elapsed();
    let cpu = mark.since();
    core.assert_alive();
    std::thread::sleep(RSS_SETTLE);
    let core_rss_after = core.rss_kib();
    let held = runtime.block_on(held(&core, &list[..count]));
    core.assert_alive();
    Adds {
        held,
        took,
        cpu,
        core_rss_idle,
        core_rss_after,
        total: list.len(),
        ..adds
    }
}

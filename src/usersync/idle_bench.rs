//! The loop's idle cost over 1,000 tunnels whose cores have no reachable API: CPU per `watch`
//! and per `traffic` tick, printed. Ignored by default (a measurement, not a check):
//! `cargo test --lib usersync::idle_bench -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use super::*;
use crate::domain::{ActiveState, UnitStatus};
use crate::state::Tunnel;

const UNITS: usize = 1000;

/// The process's CPU time so far (every thread), from `/proc/self/stat`.
fn cpu() -> Duration {
    let stat = procfs::process::Process::myself().unwrap().stat().unwrap();
    let ticks = stat.utime + stat.stime;
    Duration::from_secs_f64(ticks as f64 / procfs::ticks_per_second() as f64)
}

/// `UNITS` running tunnels whose `-config` is in `dir`; with `configs`, each file exists and
/// names no API (otherwise none exists).
fn fleet(dir: &Path, configs: bool) -> SharedState {
    let state = SharedState::default();
    state.update(|s| {
        for n in 0..UNITS {
            let id = TunnelId::new(&format!("t{n}")).unwrap();
            let path = dir.join(id.config_file_name());
            if configs {
                std::fs::write(&path, r#"{"inbounds": [{"tag": "in", "protocol": "vless", "port": 1, "settings": {"clients": []}}]}"#).unwrap();
            }
            let status = UnitStatus {
                active_state: Some(ActiveState::Active),
                exec_main_start_usec: 1_000 + n as u64,
                exec_start: ["/usr/bin/xray", "run", "-config"]
                    .iter()
                    .map(|a| (*a).to_owned())
                    .chain([path.display().to_string()])
                    .collect(),
                ..UnitStatus::default()
            };
            s.tunnels.insert(id, Tunnel::new(format!("xray-tunnel-t{n}.service"), status));
        }
    });
    state
}

fn a_loop(dir: &Path, state: SharedState, source: bool) -> Loop {
    let mut users = crate::config::Config::default().users;
    users.state_dir = dir.join("state");
    if source {
        let file = dir.join("users.json");
        std::fs::write(&file, r#"{"users": []}"#).unwrap();
        users.source = Some(crate::config::UserSource::File(file));
    }
    let mut tunnels = crate::config::Config::default().tunnels;
    tunnels.config_dir = dir.to_owned();
    let metrics = SyncMetrics::new(&prometheus::Registry::new());
    let (_, systemd) = watch::channel(None);
    Loop::new(&users, tunnels, state, metrics, Default::default(), systemd)
}

/// Runs `ticks` calls of `tick` and prints the CPU and wall time per call.
async fn measure<F: AsyncFnMut()>(what: &str, ticks: u32, mut tick: F) {
    let (cpu0, wall0) = (cpu(), Instant::now());
    for _ in 0..ticks {
        tick().await;
    }
    let (cpu1, wall1) = (cpu(), Instant::now());
    println!(
        "{what}: {:>9.1} us CPU/tick, {:>9.1} us wall/tick ({ticks} ticks, {UNITS} tunnels)",
        (cpu1 - cpu0).as_secs_f64() * 1e6 / f64::from(ticks),
        (wall1 - wall0).as_secs_f64() * 1e6 / f64::from(ticks),
    );
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn idle_cost_at_1000_tunnels() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for configs in [false, true] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/unit-scratch/usersync-idle-bench")
                .join(if configs { "configs" } else { "none" });
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let label = if configs {
                "configs without API"
            } else {
                "no configs"
            };
            let state = fleet(&dir, configs);

            let mut off = a_loop(&dir, state.clone(), false);
            let name = format!("watch,   no source, {label}");
            measure(&name, 200, async || off.watch().await).await;
            off.traffic().await; // the first tick reads what a cache would keep
            let name = format!("traffic, no source, {label}");
            measure(&name, 20, async || off.traffic().await).await;

            let mut on = a_loop(&dir, state.clone(), true);
            on.watch().await; // the first tick reads the source and syncs everything once
            let name = format!("watch,   a source,  {label}");
            measure(&name, 20, async || on.watch().await).await;
        }
    });
}

//! The loop while nothing happens: what its `watch` tick skips, and (ignored by default, a
//! measurement rather than a check) its cost over 1,000 tunnels whose cores have no reachable
//! API, CPU per `watch` and per `traffic` tick:
//! `cargo test --lib usersync::idle_tests -- --ignored --nocapture`.

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
    fleet_of(dir, configs, UNITS)
}

fn fleet_of(dir: &Path, configs: bool, units: usize) -> SharedState {
    let state = SharedState::default();
    state.update(|s| {
        for n in 0..units {
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
    a_loop_in(dir, state, source, &prometheus::Registry::new())
}

fn a_loop_in(
    dir: &Path,
    state: SharedState,
    source: bool,
    registry: &prometheus::Registry,
) -> Loop {
    let mut users = crate::config::Config::default().users;
    users.state_dir = dir.join("state");
    if source {
        let file = dir.join("users.json");
        std::fs::write(&file, r#"{"users": []}"#).unwrap();
        users.source = Some(crate::config::UserSource::File(file));
    }
    let mut tunnels = crate::config::Config::default().tunnels;
    tunnels.config_dir = dir.to_owned();
    let metrics = SyncMetrics::new(registry);
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
                .join("target/unit-scratch/usersync-idle")
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
            println!(
                "configs parsed by the traffic ticks: {}",
                off.configs.parses()
            );
        }
    });
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/unit-scratch/usersync-idle")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Tunnel syncs tried so far (the duration histogram's count).
fn syncs(registry: &prometheus::Registry) -> u64 {
    (registry.gather().iter())
        .find(|f| f.name() == "xray_usersync_duration_seconds")
        .map_or(0, |f| f.get_metric()[0].get_histogram().get_sample_count())
}

#[test]
fn without_a_source_the_watch_tick_does_not_even_look_at_the_tunnels() {
    let dir = scratch("no-source");
    let state = fleet_of(&dir, false, 3);
    let mut sync = a_loop(&dir, state.clone(), false);
    // The snapshot stays write-locked meanwhile: a tick that reads it never ends.
    let finished = state.update(|_| {
        let (tx, rx) = std::sync::mpsc::channel();
        let tick = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(sync.watch());
            let _ = tx.send(());
            sync
        });
        let finished = rx.recv_timeout(Duration::from_secs(2)).is_ok();
        (finished, tick)
    });
    let (finished, tick) = finished;
    let sync = tick.join().unwrap();
    assert!(finished, "the watch tick read the tunnels without a source");
    assert!(sync.synced_starts.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_tunnel_is_tried_again_after_a_wait_and_a_restarted_one_at_once() {
    let dir = scratch("retries");
    // Three running tunnels whose configs do not exist: every sync fails.
    let state = fleet_of(&dir, false, 3);
    let registry = prometheus::Registry::new();
    let mut sync = a_loop_in(&dir, state.clone(), true, &registry);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        sync.watch().await; // the source is new: a round over every tunnel
        assert_eq!(syncs(&registry), 3);
        for _ in 0..3 {
            sync.watch().await;
        }
        assert_eq!(syncs(&registry), 3, "tried again within the first wait");

        // A core restarts: synced on the next tick, alone.
        state.update(|s| {
            let first = s.tunnels.values_mut().next().unwrap();
            Arc::make_mut(&mut first.status).exec_main_start_usec += 1_000_000;
        });
        sync.watch().await;
        assert_eq!(syncs(&registry), 4, "the restarted core");

        // Once the first wait is over, all three are tried again; then the wait is longer.
        tokio::time::sleep(restarts::FIRST_RETRY + Duration::from_millis(100)).await;
        sync.watch().await;
        assert_eq!(syncs(&registry), 7);
        sync.watch().await;
        assert_eq!(syncs(&registry), 7);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

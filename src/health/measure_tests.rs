//! A measurement, not a proof (`#[ignore]`d): the CPU of the health pass's inputs and of a
//! steady pass over 1,000 units, on the kernel's procfs. Run alone:
//! `cargo test --release --lib health::measure -- --ignored --nocapture`.
//!
//! Each unit has a config with one inbound and no API, and a (fixture) cgroup holding this
//! test process, so a full read readlinks this process's fds once per unit, as it would a
//! core's. "before" repeats what the inputs were before the census and netlink (a stat per
//! config, /proc/net/tcp and tcp6, /proc/loadavg) and, since a moving last PID made every pass
//! a full read on a live node, a full read per pass.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::census::ProcCensus;
use super::gather::{UnitPaths, gather_blocking};
use super::scan::ProcScan;
use super::trigger::{self, UnitInput};
use super::verdicts::FileStamp;
use super::*;
use crate::config::Config;
use crate::domain::{ActiveState, GuardLimits, UnitStatus};
use crate::procfs::ProcfsReader;
use crate::state::Tunnel;

const UNITS: usize = 1000;
const ROUNDS: u32 = 40;

/// The CPU time of this whole process so far (every thread: the blocking pool's too).
fn cpu() -> Duration {
    let stat = procfs::process::Process::myself().unwrap().stat().unwrap();
    let ticks = (stat.utime + stat.stime) as f64;
    Duration::from_secs_f64(ticks / procfs::ticks_per_second() as f64)
}

/// Runs `f` `ROUNDS` times and prints the CPU and wall time per round.
fn measure(what: &str, mut f: impl FnMut()) -> Duration {
    f();
    let (cpu0, wall0) = (cpu(), Instant::now());
    for _ in 0..ROUNDS {
        f();
    }
    let per = (cpu() - cpu0) / ROUNDS;
    let wall = wall0.elapsed() / ROUNDS;
    eprintln!("{what:<48} cpu {per:>10.3?}/pass  wall {wall:>10.3?}/pass");
    per
}

struct Fleet {
    root: PathBuf,
    statuses: Vec<(TunnelId, UnitStatus)>,
}

fn fleet() -> Fleet {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-scratch/health-measure");
    let _ = std::fs::remove_dir_all(&root);
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let mut statuses = Vec::new();
    for i in 0..UNITS {
        let id = TunnelId::new(&format!("u{i}")).unwrap();
        let config = etc.join(id.config_file_name());
        let port = 30000 + i;
        let text = format!(
            r#"{{"inbounds": [{{"tag": "in", "port": {port}, "protocol": "vless", "settings": {{"clients": [], "decryption": "none"}}}}], "outbounds": [{{"protocol": "freedom"}}]}}"#
        );
        std::fs::write(&config, text).unwrap();
        let cgroup = format!("/system.slice/{}", id.unit_name());
        let dir = root.join("cgroup/unified").join(&cgroup[1..]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("cgroup.procs"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let status = UnitStatus {
            active_state: Some(ActiveState::Active),
            sub_state: "running".into(),
            control_group: cgroup,
            main_pid: std::process::id(),
            exec_start: ["/usr/bin/xray", "run", "-config", config.to_str().unwrap()]
                .map(str::to_owned)
                .to_vec(),
            ..UnitStatus::default()
        };
        statuses.push((id, status));
    }
    Fleet { root, statuses }
}

impl Fleet {
    fn settings(&self) -> Settings {
        Settings {
            health: Config::default().health,
            config_dir: self.root.join("etc"),
            core_binary: "/nonexistent/xray".into(),
            config_test: verdicts::ConfigTester::Local("/bin/true".into()),
            unit_dir: self.root.join("units"),
            proc_root: "/proc".into(),
            cgroup_root: self.root.join("cgroup"),
            api_timeout: Duration::from_millis(200),
            guard: GuardLimits::default(),
        }
    }

    fn config(&self, id: &TunnelId) -> PathBuf {
        self.root.join("etc").join(id.config_file_name())
    }

    fn inputs(&self) -> Vec<UnitInput> {
        let unit = |(id, status): &(TunnelId, UnitStatus)| {
            (id.clone(), Arc::new(status.clone()), Some(self.config(id)))
        };
        self.statuses.iter().map(unit).collect()
    }
}

#[test]
#[ignore = "a measurement: run alone, in release"]
fn inputs_and_full_read_at_1000_units() {
    let fleet = fleet();
    let settings = fleet.settings();
    let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let files = ProcScan::files_only("/proc");
    let scan = ProcScan::new("/proc");
    eprintln!("listener source on /proc: {:?}", scan.listener_source());

    let old_inputs = || {
        for (id, _) in &fleet.statuses {
            let _ = FileStamp::stat(&fleet.config(id));
        }
        let _ = FileStamp::stat(&settings.config_dir);
        let _ = files.listeners();
        let _ = std::fs::read_to_string("/proc/loadavg");
    };
    measure("before: inputs (stat, /proc/net/tcp*, loadavg)", old_inputs);
    measure("  of which /proc/net/tcp and tcp6", || {
        let _ = files.listeners();
    });
    measure("after: the same via netlink", || {
        let _ = scan.listeners();
    });
    let mut census = ProcCensus::default();
    let core_binary = settings.core_binary.clone();
    measure("after: census (steady)", || {
        let _ = census.read(&scan, &core_binary);
    });
    measure("after: read_inputs (steady)", || {
        let units = fleet.inputs();
        let _ = trigger::read_inputs(
            &scan,
            &mut census,
            &core_binary,
            &settings.config_dir,
            units,
        );
    });
    let cgroups = ProcfsReader::new("/proc", &settings.cgroup_root);
    let units: Vec<UnitPaths> = fleet
        .statuses
        .iter()
        .map(|(id, s)| (Some(fleet.config(id)), s.control_group.clone()))
        .collect();
    let full = measure("before: a full read (every pass on a live node)", || {
        let g = gather_blocking(
            &files,
            &cgroups,
            &units,
            &settings.config_dir,
            &core_binary,
            None,
        );
        assert_eq!(g.ports.len(), UNITS);
    });
    eprintln!(
        "full read every {} s (safety net) = {:.3?}/s",
        (settings.health.interval * crate::domain::health_trigger::SAFETY_NET_PASSES).as_secs(),
        full / (15 * crate::domain::health_trigger::SAFETY_NET_PASSES)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run alone, in release"]
async fn a_steady_pass_at_1000_units() {
    let fleet = fleet();
    let state = SharedState::default();
    state.update(|s| {
        s.listed = true;
        s.systemd_up = true;
        for (id, status) in &fleet.statuses {
            let tunnel = Tunnel::new(id.unit_name(), status.clone());
            s.tunnels.insert(id.clone(), tunnel);
        }
    });
    let mut task = HealthTask::new(fleet.settings(), state, Ledger::default());
    let first = Instant::now();
    task.pass().await.unwrap();
    eprintln!("first pass (1,000 config tests): {:.3?}", first.elapsed());
    task.pass().await.unwrap();
    let (cpu0, wall0) = (cpu(), Instant::now());
    for _ in 0..ROUNDS {
        let report = task.pass().await.unwrap();
        assert_eq!(report.checks.len(), UNITS);
    }
    let per = (cpu() - cpu0) / ROUNDS;
    let wall = wall0.elapsed() / ROUNDS;
    eprintln!(
        "after: a whole steady pass (no change)     cpu {per:>10.3?}/pass  wall {wall:>10.3?}/pass"
    );
}

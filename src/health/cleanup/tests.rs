use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::*;
use crate::config::Config;
use crate::domain::{ActiveState, UnitStatus};
use crate::health::orphans::{Found, OrphanKey};
use crate::health::scan::ProcScan;
use crate::health::{Ledger, Settings};
use crate::state::{SharedState, Tunnel};

fn id(s: &str) -> TunnelId {
    TunnelId::new(s).unwrap()
}

fn orphan(tunnel: &str, kind: OrphanKind, pid: Option<u32>) -> Orphan {
    Orphan {
        tunnel: tunnel.into(),
        kind,
        since: UNIX_EPOCH + Duration::from_secs(100),
        detail: String::new(),
        pid,
    }
}

#[test]
fn one_action_per_tunnel_config_and_process() {
    let plan = plan_cleanup(&[
        orphan("pid-9", OrphanKind::StrayProcess, Some(9)),
        orphan("b", OrphanKind::FailedTooLong, None),
        orphan("lonely", OrphanKind::ConfigWithoutUnit, None),
        orphan("b", OrphanKind::UnitWithoutConfig, None),
        orphan("a", OrphanKind::NotInInventory, None),
        orphan("../etc", OrphanKind::UnitWithoutConfig, None),
        orphan("pid-?", OrphanKind::StrayProcess, None),
    ]);
    let since = UNIX_EPOCH + Duration::from_secs(100);
    assert_eq!(
        plan,
        [
            CleanupAction::RemoveTunnel {
                tunnel: id("a"),
                reasons: vec![OrphanKind::NotInInventory]
            },
            CleanupAction::RemoveTunnel {
                tunnel: id("b"),
                reasons: vec![OrphanKind::UnitWithoutConfig, OrphanKind::FailedTooLong]
            },
            CleanupAction::RemoveConfig {
                tunnel: id("lonely")
            },
            CleanupAction::StopProcess { pid: 9, since },
        ]
    );
    assert!(plan_cleanup(&[]).is_empty());
}

#[test]
fn results_serialise_flat() {
    let result = CleanupResult {
        action: CleanupAction::RemoveTunnel {
            tunnel: id("b"),
            reasons: vec![OrphanKind::FailedTooLong],
        },
        outcome: CleanupOutcome::Skipped("no longer an orphan".into()),
    };
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"action": "remove_tunnel", "tunnel": "b", "reasons": ["failed_too_long"],
                           "outcome": "skipped", "detail": "no longer an orphan"})
    );
    let stop = CleanupAction::StopProcess {
        pid: 9,
        since: UNIX_EPOCH + Duration::from_millis(1500),
    };
    assert_eq!(serde_json::to_value(&stop).unwrap()["since"], 1.5);
}

/// Records what it was asked to delete; fails for tunnel `broken`.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl RemoveTunnel for &Recorder {
    type Error = String;

    async fn remove_tunnel(&self, id: &TunnelId) -> Result<(), String> {
        self.0.lock().unwrap().push(id.to_string());
        match id.as_str() {
            "broken" => Err("unit is busy".into()),
            _ => Ok(()),
        }
    }
}

/// A scratch config dir and unit dir, a snapshot with tunnels `noconf`, `fine`, `broken` (no
/// config) and `shares` (runs `xray-shared.json`).
struct Scene {
    dir: PathBuf,
    state: SharedState,
    settings: Settings,
}

impl Scene {
    fn new(name: &str) -> Scene {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/unit-scratch")
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::create_dir_all(dir.join("units")).unwrap();
        for file in [
            "xray-fine.json",
            "xray-lonely.json",
            "xray-shared.json",
            "xray-ghost.json",
        ] {
            std::fs::write(dir.join("etc").join(file), "{}").unwrap();
        }
        std::fs::write(dir.join("units/xray-tunnel-ghost.service"), "").unwrap();
        let settings = Settings {
            health: Config::default().health,
            config_dir: dir.join("etc"),
            core_binary: "/bin/true".into(),
            unit_dir: dir.join("units"),
            proc_root: "/proc".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            api_timeout: Duration::from_secs(1),
        };
        let state = SharedState::default();
        let shared = dir.join("etc/xray-shared.json").display().to_string();
        state.update(|s| {
            s.listed = true;
            s.systemd_up = true;
            for (name, exec) in [
                ("noconf", vec![]),
                ("fine", vec![]),
                ("broken", vec![]),
                (
                    "shares",
                    vec!["/usr/bin/xray".to_owned(), "-c".to_owned(), shared.clone()],
                ),
            ] {
                let status = UnitStatus {
                    active_state: Some(ActiveState::Active),
                    exec_start: exec,
                    ..UnitStatus::default()
                };
                s.tunnels
                    .insert(id(name), Tunnel::new(id(name).unit_name(), status));
            }
        });
        Scene {
            dir,
            state,
            settings,
        }
    }

    fn cleaner<'r>(&self, recorder: &'r Recorder) -> Cleaner<&'r Recorder> {
        Cleaner::new(
            self.settings.clone(),
            self.state.clone(),
            Ledger::default(),
            recorder,
        )
    }
}

fn remove(tunnel: &str, reason: OrphanKind) -> CleanupAction {
    CleanupAction::RemoveTunnel {
        tunnel: id(tunnel),
        reasons: vec![reason],
    }
}

fn outcomes(results: &[CleanupResult]) -> Vec<&CleanupOutcome> {
    results.iter().map(|r| &r.outcome).collect()
}

#[tokio::test]
async fn tunnels_are_deleted_only_while_still_orphans() {
    let scene = Scene::new("health-cleanup-tunnels");
    let recorder = Recorder::default();
    let cleaner = scene.cleaner(&recorder);
    let plan = [
        remove("noconf", OrphanKind::UnitWithoutConfig),
        remove("fine", OrphanKind::UnitWithoutConfig),
        remove("vanished", OrphanKind::UnitWithoutConfig),
        remove("fine", OrphanKind::FailedTooLong),
        remove("noconf", OrphanKind::NotInInventory),
        remove("broken", OrphanKind::UnitWithoutConfig),
    ];
    let dry = cleaner.execute(&plan, true).await;
    assert!(
        recorder.0.lock().unwrap().is_empty(),
        "a dry run deletes nothing"
    );
    assert_eq!(
        dry[0].outcome,
        CleanupOutcome::WouldDo("would delete the tunnel (unit_without_config)".into())
    );

    let done = cleaner.execute(&plan, false).await;
    let o = outcomes(&done);
    assert_eq!(
        *o[0],
        CleanupOutcome::Done("deleted the tunnel (unit_without_config)".into())
    );
    assert_eq!(
        *o[1],
        CleanupOutcome::Skipped("no longer an orphan".into()),
        "its config is there"
    );
    assert_eq!(*o[2], CleanupOutcome::Skipped("the unit is gone".into()));
    assert_eq!(
        *o[3],
        CleanupOutcome::Skipped("no longer an orphan".into()),
        "it is active"
    );
    assert_eq!(
        *o[4],
        CleanupOutcome::Skipped("no longer an orphan".into()),
        "no inventory configured"
    );
    assert_eq!(
        *o[5],
        CleanupOutcome::Failed("deleting the tunnel: unit is busy".into())
    );
    assert_eq!(*recorder.0.lock().unwrap(), ["noconf", "broken"]);

    scene.state.update(|s| s.systemd_up = false);
    let blind = cleaner.execute(&plan[..1], false).await;
    assert!(
        matches!(blind[0].outcome, CleanupOutcome::Skipped(_)),
        "{blind:?}"
    );
    assert_eq!(recorder.0.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn config_files_are_removed_only_without_any_unit() {
    let scene = Scene::new("health-cleanup-configs");
    let recorder = Recorder::default();
    let cleaner = scene.cleaner(&recorder);
    let etc = scene.dir.join("etc");
    let plan: Vec<CleanupAction> = ["lonely", "fine", "shared", "ghost", "absent"]
        .into_iter()
        .map(|t| CleanupAction::RemoveConfig { tunnel: id(t) })
        .collect();
    let dry = cleaner.execute(&plan[..1], true).await;
    assert!(matches!(dry[0].outcome, CleanupOutcome::WouldDo(_)));
    assert!(etc.join("xray-lonely.json").exists());

    let done = cleaner.execute(&plan, false).await;
    let o = outcomes(&done);
    assert!(matches!(o[0], CleanupOutcome::Done(_)), "{o:?}");
    assert!(!etc.join("xray-lonely.json").exists());
    assert!(matches!(o[1], CleanupOutcome::Skipped(w) if w.contains("a unit exists")));
    assert!(matches!(o[2], CleanupOutcome::Skipped(w) if w.contains("runs this file")));
    assert!(
        matches!(o[3], CleanupOutcome::Skipped(w) if w.contains("xray-tunnel-ghost.service exists"))
    );
    assert!(matches!(o[4], CleanupOutcome::Skipped(w) if w.contains("is gone")));
    for kept in ["xray-fine.json", "xray-shared.json", "xray-ghost.json"] {
        assert!(etc.join(kept).exists(), "{kept}");
    }
}

/// Starts a process whose comm is `xray` (a copy of sleep), not a child of this test (so not
/// excluded as the warden's own config test), optionally ignoring SIGTERM. Returns its pid.
fn start_stray(dir: &Path, ignore_term: bool) -> u32 {
    let core = dir.join("xray");
    if !core.exists() {
        std::fs::copy("/bin/sleep", &core).unwrap();
    }
    let trap = if ignore_term { "trap '' TERM; " } else { "" };
    for _ in 0..50 {
        let script = format!("{trap}\"$0\" 30 >/dev/null 2>&1 & echo $!");
        let out = Command::new("/bin/sh")
            .args(["-c", &script])
            .arg(&core)
            .output()
            .unwrap();
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let scan = ProcScan::new("/proc");
        for _ in 0..100 {
            if scan.stray(pid, std::process::id()).is_some() {
                return pid;
            }
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break; // exec failed (ETXTBSY while another thread forked): try again
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("cannot start a stray process");
}

#[tokio::test]
async fn stray_processes_are_stopped_by_pid_while_they_are_the_same_process() {
    let scene = Scene::new("health-cleanup-strays");
    let recorder = Recorder::default();
    let scan = ProcScan::new("/proc");
    let (polite, stubborn) = (
        start_stray(&scene.dir, false),
        start_stray(&scene.dir, true),
    );
    let ledger = Ledger::default();
    let t0 = SystemTime::now();
    let found: Vec<Found> = [polite, stubborn]
        .iter()
        .map(|pid| Found {
            key: OrphanKey::Process(scan.stray(*pid, std::process::id()).unwrap().key),
            detail: String::new(),
        })
        .collect();
    ledger.stamp(found, t0);
    let cleaner = Cleaner::new(
        scene.settings.clone(),
        scene.state.clone(),
        ledger,
        &recorder,
    )
    .with_grace(Duration::from_millis(300));
    let stop = |pid, since| CleanupAction::StopProcess { pid, since };

    let later = t0 + Duration::from_secs(1);
    let skipped = cleaner.execute(&[stop(polite, later)], false).await;
    assert!(
        matches!(skipped[0].outcome, CleanupOutcome::Skipped(_)),
        "another sighting: {skipped:?}"
    );
    let dry = cleaner.execute(&[stop(polite, t0)], true).await;
    assert!(matches!(dry[0].outcome, CleanupOutcome::WouldDo(_)));
    let start = |pid: u32| {
        scan.stray(pid, std::process::id())
            .map(|s| s.key.start_ticks)
    };
    assert!(start(polite).is_some(), "a dry run signals nothing");

    let done = cleaner
        .execute(&[stop(polite, t0), stop(stubborn, t0)], false)
        .await;
    assert_eq!(
        done[0].outcome,
        CleanupOutcome::Done(format!("stopped pid {polite} with SIGTERM"))
    );
    assert!(
        matches!(&done[1].outcome, CleanupOutcome::Done(w) if w.contains("SIGKILL")),
        "{done:?}"
    );
    assert!(start(polite).is_none() && start(stubborn).is_none());

    // A proc root that is not this process's PID namespace is never acted on.
    let mut foreign = scene.settings.clone();
    foreign.proc_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/health/proc");
    let blind = Cleaner::new(foreign, scene.state.clone(), Ledger::default(), &recorder);
    let out = blind.execute(&[stop(200, t0)], false).await;
    assert!(matches!(&out[0].outcome, CleanupOutcome::Skipped(w) if w.contains("namespace")));
}

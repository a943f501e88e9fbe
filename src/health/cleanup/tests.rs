use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::config::Config;
use crate::domain::orphans::{Found, OrphanKey, in_systemd_unit, stray_tunnel};
use crate::domain::{ActiveState, GuardLimits, Orphan, OrphanKind};
use crate::health::scan::ProcScan;
use crate::health::{Ledger, Settings};
use crate::state::{SharedState, Tunnel};

fn id(s: &str) -> TunnelId {
    TunnelId::new(s).unwrap()
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
}

/// Answers fresh unit reads from `units` (a unit it does not know reads as not-found, unit
/// `unreadable` fails) and records what it was asked to delete; deleting `broken` fails.
#[derive(Default)]
struct Recorder {
    units: HashMap<String, UnitStatus>,
    deleted: Mutex<Vec<String>>,
}

impl TunnelControl for &Recorder {
    type Error = String;

    async fn remove_tunnel(&self, id: &TunnelId) -> Result<(), String> {
        self.deleted.lock().unwrap().push(id.to_string());
        match id.as_str() {
            "broken" => Err("unit is busy".into()),
            _ => Ok(()),
        }
    }

    async fn read_unit(&self, id: &TunnelId) -> Result<UnitStatus, String> {
        if id.as_str() == "unreadable" {
            return Err("the bus timed out".into());
        }
        let not_found = UnitStatus {
            load_state: "not-found".into(),
            active_state: Some(ActiveState::Inactive),
            ..UnitStatus::default()
        };
        Ok(self.units.get(id.as_str()).cloned().unwrap_or(not_found))
    }
}

impl Recorder {
    fn deleted(&self) -> Vec<String> {
        self.deleted.lock().unwrap().clone()
    }
}

/// A scratch config dir and unit dir, and a snapshot of tunnels `noconf`, `broken`, `stale`,
/// `unloaded`, `unreadable` (each running its missing `xray-{id}.json`), `fine` (running its
/// present one) and `shares` (running `xray-shared.json`).
struct Scene {
    dir: PathBuf,
    state: SharedState,
    settings: Settings,
}

const TUNNELS: [&str; 7] = [
    "noconf",
    "broken",
    "stale",
    "unloaded",
    "unreadable",
    "fine",
    "shares",
];

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
            core_binary: "/nonexistent/core".into(),
            config_test: crate::health::verdicts::ConfigTester::Local("/nonexistent/core".into()),
            unit_dir: dir.join("units"),
            proc_root: "/proc".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            api_timeout: Duration::from_secs(1),
            // These tests are about the re-checks; the guard has tests of its own.
            guard: GuardLimits {
                max_fraction: 1.0,
                max_per_pass: 100,
            },
        };
        let scene = Scene {
            dir,
            state: SharedState::default(),
            settings,
        };
        scene.state.update(|s| {
            s.listed = true;
            s.systemd_up = true;
            for name in TUNNELS {
                let status = scene.status(name);
                s.tunnels
                    .insert(id(name), Tunnel::new(id(name).unit_name(), status));
            }
        });
        scene
    }

    /// An active unit running `xray-{config}.json` in the scene's config dir.
    fn running(&self, config: &str) -> UnitStatus {
        let path = self.dir.join("etc").join(format!("xray-{config}.json"));
        UnitStatus {
            load_state: "loaded".into(),
            active_state: Some(ActiveState::Active),
            exec_start: vec![
                "/usr/bin/xray".into(),
                "-c".into(),
                path.display().to_string(),
            ],
            ..UnitStatus::default()
        }
    }

    fn status(&self, name: &str) -> UnitStatus {
        self.running(if name == "shares" { "shared" } else { name })
    }

    /// What systemd says now: like the snapshot, except `stale` now runs a config directory
    /// and `unloaded` lost its unit file while running (empty ExecStart).
    fn recorder(&self) -> Recorder {
        let mut units: HashMap<String, UnitStatus> = TUNNELS
            .iter()
            .map(|name| ((*name).to_owned(), self.status(name)))
            .collect();
        let etc = self.dir.join("etc").display().to_string();
        units.get_mut("stale").unwrap().exec_start =
            vec!["/usr/bin/xray".into(), "-confdir".into(), etc];
        let unloaded = units.get_mut("unloaded").unwrap();
        unloaded.load_state = "not-found".into();
        unloaded.exec_start.clear();
        Recorder {
            units,
            ..Recorder::default()
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
async fn tunnels_are_deleted_only_while_a_fresh_read_says_orphan() {
    let scene = Scene::new("health-cleanup-tunnels");
    let recorder = scene.recorder();
    let cleaner = scene.cleaner(&recorder);
    let plan = [
        remove("noconf", OrphanKind::UnitWithoutConfig),
        remove("fine", OrphanKind::UnitWithoutConfig),
        remove("vanished", OrphanKind::UnitWithoutConfig),
        remove("fine", OrphanKind::FailedTooLong),
        remove("noconf", OrphanKind::NotInInventory),
        remove("broken", OrphanKind::UnitWithoutConfig),
        remove("stale", OrphanKind::UnitWithoutConfig),
        remove("unloaded", OrphanKind::UnitWithoutConfig),
        remove("unreadable", OrphanKind::UnitWithoutConfig),
    ];
    let dry = cleaner.execute(&plan, true).await;
    assert!(recorder.deleted().is_empty(), "a dry run deletes nothing");
    assert_eq!(
        dry[0].outcome,
        CleanupOutcome::WouldDo("would delete the tunnel (unit_without_config)".into())
    );

    let done = cleaner.execute(&plan, false).await;
    let o = outcomes(&done);
    let skipped = |why: &str| CleanupOutcome::Skipped(why.into());
    assert_eq!(
        *o[0],
        CleanupOutcome::Done("deleted the tunnel (unit_without_config)".into())
    );
    assert_eq!(*o[1], skipped("no longer an orphan"), "its config is there");
    assert_eq!(*o[2], skipped("the unit is gone"));
    assert_eq!(*o[3], skipped("no longer an orphan"), "it is active");
    assert_eq!(
        *o[4],
        skipped("no longer an orphan"),
        "no inventory configured"
    );
    assert_eq!(
        *o[5],
        CleanupOutcome::Failed("deleting the tunnel: unit is busy".into())
    );
    // The snapshot says these run a missing file; systemd, asked now, says otherwise.
    assert_eq!(*o[6], skipped("no longer an orphan"), "now a config dir");
    assert_eq!(*o[7], skipped("no longer an orphan"), "unloaded: unknown");
    assert_eq!(
        *o[8],
        skipped("cannot read the unit now: the bus timed out")
    );
    assert_eq!(recorder.deleted(), ["noconf", "broken"]);

    scene.state.update(|s| s.systemd_up = false);
    let blind = cleaner.execute(&plan[..1], false).await;
    assert!(
        matches!(blind[0].outcome, CleanupOutcome::Skipped(_)),
        "{blind:?}"
    );
    assert_eq!(recorder.deleted().len(), 2);
}

#[tokio::test]
async fn a_unit_that_cannot_be_read_fresh_is_never_removed() {
    /// A control whose unit reads fail (the bus dropped between plan and action).
    struct Blind;
    impl TunnelControl for Blind {
        type Error = String;
        async fn remove_tunnel(&self, _: &TunnelId) -> Result<(), String> {
            panic!("never called")
        }
        async fn read_unit(&self, _: &TunnelId) -> Result<UnitStatus, String> {
            Err("the bus dropped".into())
        }
    }
    let scene = Scene::new("health-cleanup-remove-only");
    let cleaner = Cleaner::new(
        scene.settings.clone(),
        scene.state.clone(),
        Ledger::default(),
        Blind,
    );
    let out = cleaner
        .execute(&[remove("noconf", OrphanKind::UnitWithoutConfig)], false)
        .await;
    assert!(
        matches!(&out[0].outcome, CleanupOutcome::Skipped(w) if w.contains("cannot read the unit")),
        "{out:?}"
    );
}

#[tokio::test]
async fn config_files_are_removed_only_without_any_unit() {
    let scene = Scene::new("health-cleanup-configs");
    let recorder = scene.recorder();
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

#[tokio::test]
async fn the_guard_refuses_the_whole_plan() {
    let mut scene = Scene::new("health-cleanup-guard");
    scene.settings.guard = GuardLimits::default();
    let recorder = scene.recorder();
    let cleaner = scene.cleaner(&recorder);
    let etc = scene.dir.join("etc");
    // Five tunnels of the eight known (seven units and lonely's config): more than half.
    let plan = [
        remove("noconf", OrphanKind::UnitWithoutConfig),
        remove("unloaded", OrphanKind::UnitWithoutConfig),
        remove("broken", OrphanKind::UnitWithoutConfig),
        remove("stale", OrphanKind::UnitWithoutConfig),
        CleanupAction::RemoveConfig {
            tunnel: id("lonely"),
        },
    ];
    for dry_run in [true, false] {
        let refused = cleaner.execute(&plan, dry_run).await;
        assert_eq!(refused.len(), plan.len());
        for r in &refused {
            assert!(
                matches!(&r.outcome, CleanupOutcome::Skipped(w)
                    if w.starts_with("refused by the orphan guard: 5 of 8 tunnels")),
                "{r:?}"
            );
        }
    }
    assert!(recorder.deleted().is_empty());
    assert!(etc.join("xray-lonely.json").exists());
    // Three of seven is allowed...
    let allowed = cleaner.execute(&plan[..3], true).await;
    assert!(matches!(allowed[0].outcome, CleanupOutcome::WouldDo(_)));
    // ...unless the last pass saw most of the node orphaned: then even one action is refused.
    let orphan = |t: &str| Orphan {
        tunnel: t.into(),
        kind: OrphanKind::UnitWithoutConfig,
        since: UNIX_EPOCH,
        detail: String::new(),
        pid: None,
    };
    scene.state.update(|s| {
        s.orphans = ["noconf", "broken", "stale", "unloaded"]
            .map(orphan)
            .to_vec()
    });
    let one = cleaner.execute(&plan[..1], true).await;
    assert!(
        matches!(&one[0].outcome, CleanupOutcome::Skipped(w) if w.contains("orphan guard")),
        "{one:?}"
    );
}

/// Starts a process whose comm is `xray` (a copy of perl) running `xray-ghost.json` of `etc`,
/// not a child of this test (so not excluded as the warden's own config test), optionally
/// ignoring SIGTERM. Returns its pid.
fn start_stray(dir: &Path, etc: &Path, ignore_term: bool) -> u32 {
    let core = dir.join("xray");
    if !core.exists() {
        std::fs::copy("/usr/bin/perl", &core).unwrap();
    }
    let code = if ignore_term {
        "$SIG{TERM} = 'IGNORE'; sleep 30"
    } else {
        "sleep 30"
    };
    let config = etc.join("xray-ghost.json");
    let scan = ProcScan::new("/proc");
    for _ in 0..50 {
        // After -e's code, "run" ends perl's switches: the rest is the core's command line.
        let script = "\"$0\" -e \"$1\" run -config \"$2\" >/dev/null 2>&1 & echo $!";
        let out = Command::new("/bin/sh")
            .args(["-c", script])
            .arg(&core)
            .arg(code)
            .arg(&config)
            .output()
            .unwrap();
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        for _ in 0..100 {
            let parsed = scan
                .core(pid, std::process::id(), Path::new("/nonexistent"))
                .filter(|c| c.argv.len() > 3);
            if parsed.is_some() {
                // perl has parsed its switches (its $SIG{TERM} is set soon after).
                std::thread::sleep(Duration::from_millis(100));
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
async fn stray_processes_are_stopped_through_a_pidfd_while_they_are_the_same_process() {
    let scene = Scene::new("health-cleanup-strays");
    let recorder = scene.recorder();
    let scan = ProcScan::new("/proc");
    let etc = &scene.settings.config_dir;
    let (polite, stubborn) = (
        start_stray(&scene.dir, etc, false),
        start_stray(&scene.dir, etc, true),
    );
    let core = |pid| scan.core(pid, std::process::id(), Path::new("/nonexistent"));
    let ledger = Ledger::default();
    let t0 = SystemTime::now();
    let found: Vec<Found> = [polite, stubborn]
        .iter()
        .map(|pid| Found {
            key: OrphanKey::Stray(id("ghost"), core(*pid).unwrap().key),
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
    let stop = |pid, since| CleanupAction::StopProcess {
        tunnel: id("ghost"),
        pid,
        since,
    };
    let later = t0 + Duration::from_secs(1);
    let skipped = cleaner.execute(&[stop(polite, later)], false).await;
    assert!(
        matches!(skipped[0].outcome, CleanupOutcome::Skipped(_)),
        "another sighting: {skipped:?}"
    );

    // This test's own processes are strays only where it runs outside every systemd unit
    // (as on the project's machines); inside one (a login session), they must be left alone.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    if in_systemd_unit(&own) {
        let out = cleaner.execute(&[stop(polite, t0)], false).await;
        assert!(
            matches!(out[0].outcome, CleanupOutcome::Skipped(_)),
            "{out:?}"
        );
        assert!(core(polite).is_some());
        for pid in [polite, stubborn] {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        return;
    }
    let strays_of = |pid| stray_tunnel(&core(pid).unwrap(), etc, &[]).map(|(t, _)| t);
    assert_eq!(strays_of(polite), Some(id("ghost")));

    let dry = cleaner.execute(&[stop(polite, t0)], true).await;
    assert!(matches!(dry[0].outcome, CleanupOutcome::WouldDo(_)));
    assert!(core(polite).is_some(), "a dry run signals nothing");

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
    assert!(core(polite).is_none() && core(stubborn).is_none());

    // A proc root that is not this process's PID namespace is never acted on.
    let mut foreign = scene.settings.clone();
    foreign.proc_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/health/proc");
    let blind = Cleaner::new(foreign, scene.state.clone(), Ledger::default(), &recorder);
    let out = blind.execute(&[stop(200, t0)], false).await;
    assert!(matches!(&out[0].outcome, CleanupOutcome::Skipped(w) if w.contains("namespace")));
}

#[tokio::test]
async fn a_process_that_is_no_stray_is_never_signalled() {
    let scene = Scene::new("health-cleanup-not-stray");
    let recorder = scene.recorder();
    // A core running a config outside the config dir: never a stray, whatever the ledger says.
    let outside = scene.dir.join("xray-ghost.json");
    std::fs::write(&outside, "{}").unwrap();
    let pid = start_stray(&scene.dir, &scene.dir, false);
    let scan = ProcScan::new("/proc");
    let key = scan
        .core(pid, std::process::id(), Path::new("/nonexistent"))
        .unwrap()
        .key;
    let ledger = Ledger::default();
    let t0 = SystemTime::now();
    ledger.stamp(
        vec![Found {
            key: OrphanKey::Stray(id("ghost"), key),
            detail: String::new(),
        }],
        t0,
    );
    let cleaner = Cleaner::new(
        scene.settings.clone(),
        scene.state.clone(),
        ledger,
        &recorder,
    );
    let stop = CleanupAction::StopProcess {
        tunnel: id("ghost"),
        pid,
        since: t0,
    };
    let out = cleaner.execute(&[stop], false).await;
    assert!(
        matches!(&out[0].outcome, CleanupOutcome::Skipped(w) if w.contains("no longer that stray")),
        "{out:?}"
    );
    assert!(scan.alive(pid, key.start_ticks), "left alone");
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

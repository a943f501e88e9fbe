//! The per-unit cache over a scratch copy of the procfs fixture (pure cgroup v2): what a pass
//! reads again and what it reuses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const CG: &str = "/system.slice/xray-tunnel-a.service";

/// A fresh copy of the fixture's `proc/` and `cgroup2/` under target/unit-scratch.
fn scratch(name: &str) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/procfs");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/unit-scratch/sampler")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    for part in ["proc", "cgroup2"] {
        copy_tree(&fixture.join(part), &dir.join(part));
    }
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn target(main_pid: u32) -> Target {
    Target {
        id: TunnelId::new("a").unwrap(),
        status: Arc::new(UnitStatus {
            control_group: CG.into(),
            main_pid,
            ..UnitStatus::default()
        }),
    }
}

fn sampled(readings: Vec<(Reading, u64)>) -> Resources {
    match readings.into_iter().next().unwrap().0 {
        Reading::Sampled(r) => r,
        Reading::NotFound => panic!("not found"),
        Reading::Failed(e) => panic!("{e}"),
    }
}

fn cgroup_file(dir: &Path, name: &str) -> PathBuf {
    dir.join("cgroup2")
        .join(CG.trim_start_matches('/'))
        .join(name)
}

#[test]
fn counters_every_pass_processes_only_when_something_changed() {
    let dir = scratch("changes");
    let reader = ProcfsReader::with_units(dir.join("proc"), dir.join("cgroup2"), 100, 4096);
    let mut units = Units::with_budget(Duration::from_secs(3600), 1000);
    let first = sampled(units.read_all(&reader, &[target(100)]));
    assert_eq!((first.processes, first.tasks), (1, 3));
    assert_eq!(first.cpu_seconds, 2.5);
    assert_eq!(first.memory_current_bytes, Some(1_048_576));
    assert_eq!(
        units.files(),
        HeldFiles {
            held: CGROUP_FDS + 1,
            limit: 1000,
            units_by_path: 0
        },
        "the cgroup's files and one stat held"
    );

    // The counters move and a process joins without the task count moving: the counters are
    // read again through the held files, the process list is reused.
    std::fs::write(cgroup_file(&dir, "cpu.stat"), "usage_usec 4000000\n").unwrap();
    std::fs::write(cgroup_file(&dir, "cgroup.procs"), "100\n101\n").unwrap();
    let second = sampled(units.read_all(&reader, &[target(100)]));
    assert_eq!(second.cpu_seconds, 4.0);
    assert_eq!(
        second.processes, 1,
        "no listing while nothing says it changed"
    );

    // The task count moves: the processes are listed again.
    std::fs::write(cgroup_file(&dir, "pids.current"), "5\n").unwrap();
    let third = sampled(units.read_all(&reader, &[target(100)]));
    assert_eq!(third.processes, 2);
    assert_eq!(units.fds, CGROUP_FDS + 2);

    // A new main PID lists again too.
    std::fs::write(cgroup_file(&dir, "cgroup.procs"), "101\n").unwrap();
    let fourth = sampled(units.read_all(&reader, &[target(101)]));
    assert_eq!(fourth.processes, 1);
}

#[test]
fn an_old_reading_reads_the_held_processes_and_lists_the_cgroup_every_fourth_time() {
    use crate::domain::sampling::LIST_EVERY;
    let dir = scratch("refresh");
    let reader = ProcfsReader::with_units(dir.join("proc"), dir.join("cgroup2"), 100, 4096);
    let mut units = Units::with_budget(Duration::ZERO, 1000);
    let first = sampled(units.read_all(&reader, &[target(100)]));
    assert_eq!((first.processes, first.open_fds), (1, 4));
    // A process joins without the task count moving (which only a listing sees), and process
    // 100 opens a file (which a reading of the held process sees).
    std::fs::write(cgroup_file(&dir, "cgroup.procs"), "100\n101\n").unwrap();
    std::fs::write(dir.join("proc/100/fd/4"), "").unwrap();
    for _ in 1..LIST_EVERY {
        let refreshed = sampled(units.read_all(&reader, &[target(100)]));
        assert_eq!((refreshed.processes, refreshed.open_fds), (1, 5));
    }
    let listed = sampled(units.read_all(&reader, &[target(100)]));
    assert_eq!(
        listed.processes, 2,
        "listed on the {LIST_EVERY}th old reading"
    );
}

#[test]
fn over_the_budget_files_are_read_by_path() {
    let dir = scratch("budget");
    let reader = ProcfsReader::with_units(dir.join("proc"), dir.join("cgroup2"), 100, 4096);
    let mut units = Units::with_budget(Duration::from_secs(3600), 0);
    let first = sampled(units.read_all(&reader, &[target(100)]));
    assert_eq!((first.processes, first.cpu_seconds), (1, 2.5));
    let by_path = HeldFiles {
        held: 0,
        limit: 0,
        units_by_path: 1,
    };
    assert_eq!(units.files(), by_path);
    std::fs::write(cgroup_file(&dir, "cpu.stat"), "usage_usec 4000000\n").unwrap();
    assert_eq!(
        sampled(units.read_all(&reader, &[target(100)])).cpu_seconds,
        4.0
    );
    assert_eq!(units.files(), by_path);

    // Room for the cgroup's files but not its process's: still read by path, in part.
    let mut units = Units::with_budget(Duration::from_secs(3600), CGROUP_FDS);
    assert_eq!(
        sampled(units.read_all(&reader, &[target(100)])).processes,
        1
    );
    let cgroup_only = HeldFiles {
        held: CGROUP_FDS,
        limit: CGROUP_FDS,
        units_by_path: 1,
    };
    assert_eq!(units.files(), cgroup_only);
}

#[test]
fn a_unit_without_a_cgroup_is_not_found_and_holds_nothing() {
    let dir = scratch("missing");
    let reader = ProcfsReader::with_units(dir.join("proc"), dir.join("cgroup2"), 100, 4096);
    let mut units = Units::with_budget(Duration::from_secs(3600), 1000);
    let mut gone = target(100);
    Arc::make_mut(&mut gone.status).control_group = "/system.slice/xray-tunnel-zz.service".into();
    let readings = units.read_all(&reader, &[gone]);
    assert!(matches!(readings[0].0, Reading::NotFound));
    assert_eq!(units.fds, 0);
}

#[test]
fn a_listing_finds_sub_cgroups_and_reads_a_still_listed_process_through_its_held_file() {
    let dir = scratch("relist");
    let reader = ProcfsReader::with_units(dir.join("proc"), dir.join("cgroup2"), 100, 4096);
    let mut units = Units::with_budget(Duration::from_secs(3600), 1000);
    let first = sampled(units.read_all(&reader, &[target(100)]));
    assert_eq!((first.processes, first.rss_bytes), (1, 2560 * 4096));

    // A delegated sub-cgroup gains process 101; the task count moves, so the processes are
    // listed again. Process 100's `stat` is replaced by a new file (which procfs never does):
    // what the listing reads shows whether it went through the held file or opened it anew.
    let sub = cgroup_file(&dir, "worker");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("cgroup.procs"), "101\n").unwrap();
    let stat = dir.join("proc/100/stat");
    let grown = std::fs::read_to_string(&stat)
        .unwrap()
        .replace(" 734003200 2560 ", " 734003200 3000 ");
    std::fs::write(dir.join("proc/100/stat.new"), grown).unwrap();
    std::fs::rename(dir.join("proc/100/stat.new"), &stat).unwrap();
    std::fs::write(cgroup_file(&dir, "pids.current"), "5\n").unwrap();
    let second = sampled(units.read_all(&reader, &[target(100)]));
    assert_eq!(second.processes, 2, "the sub-cgroup's process is listed");
    let own = units.by_id[&TunnelId::new("a").unwrap()]
        .processes
        .as_ref()
        .unwrap();
    let rss_of_100 = own.sample.processes[0].rss_bytes;
    assert_eq!(
        rss_of_100,
        2560 * 4096,
        "read through the held file, not opened again"
    );
    assert_eq!(units.fds, CGROUP_FDS + 2);
}

#[test]
fn after_a_pass_units_not_read_close_their_files_and_unknown_ones_are_forgotten() {
    let dir = scratch("retain");
    let reader = ProcfsReader::with_units(dir.join("proc"), dir.join("cgroup2"), 100, 4096);
    let mut units = Units::with_budget(Duration::from_secs(3600), 1000);
    sampled(units.read_all(&reader, &[target(100)]));
    let a = TunnelId::new("a").unwrap();
    // Read this pass: kept with its files, whatever `known` says (the next pass decides).
    units.retain(|_| false);
    assert_eq!(units.files().held, CGROUP_FDS + 1);
    // Not read by the next pass (stopped) but known: its files close, its CPU account stays.
    units.read_all(&reader, &[]);
    units.retain(|id| *id == a);
    assert!(units.by_id.contains_key(&a));
    assert_eq!(units.files().held, 0);
    // Not read and no longer known: forgotten.
    units.read_all(&reader, &[]);
    units.retain(|_| false);
    assert!(units.by_id.is_empty());
}

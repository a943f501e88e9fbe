use super::*;
use crate::domain::Accounting;

fn fixture() -> ProcfsReader {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/procfs");
    ProcfsReader::with_units(root.join("proc"), root.join("cgroup"), 100, 4096)
}

#[test]
fn parses_cgroup_procs() {
    assert_eq!(parse_pids("1\n 22\n\n333\n"), Ok(vec![1, 22, 333]));
    assert_eq!(parse_pids(""), Ok(vec![]));
    assert_eq!(parse_pids("1\nx\n"), Err("x".to_owned()));
}

#[test]
fn finds_the_cgroup_in_each_hierarchy_layout() {
    let reader = fixture();
    let a = reader
        .cgroup_dir("/system.slice/xray-tunnel-a.service")
        .unwrap();
    assert!(a.ends_with("unified/system.slice/xray-tunnel-a.service"));
    let b = reader
        .cgroup_dir("/system.slice/xray-tunnel-b.service")
        .unwrap();
    assert!(b.ends_with("systemd/system.slice/xray-tunnel-b.service"));
    assert!(matches!(
        reader.cgroup_dir("/system.slice/xray-tunnel-zz.service"),
        Err(ProcfsError::CgroupNotFound(_))
    ));
}

#[test]
fn includes_sub_cgroups() {
    let pids = fixture()
        .cgroup_pids("/system.slice/xray-tunnel-a.service")
        .unwrap();
    assert_eq!(pids, vec![100, 101, 103]);
}

#[test]
fn samples_every_process_and_skips_vanished_ones() {
    let sample = fixture()
        .sample_cgroup("/system.slice/xray-tunnel-a.service")
        .unwrap();
    assert_eq!(
        sample.vanished, 1,
        "pid 103 is listed but has no /proc entry"
    );
    let main = &sample.processes[0];
    assert_eq!(
        main.key,
        ProcessKey {
            pid: 100,
            start_ticks: 5000
        }
    );
    assert_eq!(main.cpu_seconds, 3.0);
    assert_eq!(main.rss_bytes, 2560 * 4096);
    assert_eq!(main.threads, 7);
    assert_eq!(main.open_fds, 4);
    // A comm with spaces and parentheses must not shift the fields.
    let child = &sample.processes[1];
    assert_eq!(child.cpu_seconds, 1.0);
    assert_eq!(child.key.start_ticks, 6000);
    assert_eq!(sample.rss_bytes(), (2560 + 256) * 4096);
    assert_eq!(sample.threads(), 8);
    assert_eq!(sample.open_fds(), 6);
}

#[test]
fn empty_cgroup_has_no_processes() {
    let sample = fixture()
        .sample_cgroup("/system.slice/xray-tunnel-b.service")
        .unwrap();
    assert_eq!(sample, CgroupSample::default());
}

#[test]
fn reads_the_real_procfs() {
    let reader = ProcfsReader::new("/proc", "/sys/fs/cgroup");
    let me = reader.process(std::process::id()).unwrap();
    assert!(me.threads >= 1);
    assert!(me.open_fds >= 3);
    assert!(me.rss_bytes > 0);
}

#[test]
fn reads_the_accounting_files_of_each_layout() {
    // Hybrid: v1 controllers beside `unified/`; no cpuacct hierarchy, so the CPU figure is
    // the unit's `cpu.stat` in the v2 tree, read by path and through held files alike.
    let a = "/system.slice/xray-tunnel-a.service";
    let hybrid = fixture().accounting(a).unwrap();
    assert_eq!(hybrid.memory_current, Some(8_388_608));
    assert_eq!(hybrid.tasks_current, Some(4));
    assert_eq!(hybrid.cpu_usage_nsec, Some(1_500_000_000));
    let held = fixture().hold(a).unwrap();
    assert_eq!(held.accounting(&mut Vec::new()).unwrap(), hybrid);
    assert!(held.complete());
    // A unit without the controllers enabled, nor a directory in the v2 tree, has no figures,
    // and that is no error.
    let b = fixture()
        .accounting("/system.slice/xray-tunnel-b.service")
        .unwrap();
    assert_eq!(b, Accounting::default());
    // The v2 tree is found by its root's `cgroup.controllers`.
    let layout = CgroupLayout::PerController {
        cpuacct: None,
        hybrid: true,
    };
    assert_eq!(fixture().layout, layout);

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/procfs");
    let v2 = ProcfsReader::with_units(root.join("proc"), root.join("cgroup2"), 100, 4096);
    let unified = v2.accounting(a).unwrap();
    assert_eq!(unified.cpu_usage_nsec, Some(2_500_000_000));
    assert_eq!(unified.memory_current, Some(1_048_576));
    assert_eq!(unified.tasks_current, Some(3));
    assert_eq!(v2.cgroup_pids(a).unwrap(), vec![100]);
}

#[test]
fn the_few_stat_fields_match_the_procfs_crate() {
    use procfs::FromRead;
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/procfs/proc/100/stat"),
    )
    .unwrap();
    // A command name with spaces and parentheses of its own.
    let tricky = text.replacen("(xray)", "(x ) (y)", 1);
    for text in [text, tricky] {
        let full = Stat::from_read(text.as_bytes()).unwrap();
        let few = StatFigures::parse(&text).unwrap();
        assert_eq!(few.utime, full.utime);
        assert_eq!(few.stime, full.stime);
        assert_eq!(few.num_threads as i64, full.num_threads);
        assert_eq!(few.starttime, full.starttime);
        assert_eq!(few.rss, full.rss);
    }
    assert_eq!(StatFigures::parse("12 (x) S 1 2"), None);
    let own = std::fs::read_to_string("/proc/self/stat").unwrap();
    let full = Stat::from_read(own.as_bytes()).unwrap();
    assert_eq!(StatFigures::parse(&own).unwrap().starttime, full.starttime);
}

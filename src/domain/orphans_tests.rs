use super::*;
use crate::domain::UnknownReason;

const DIR: &str = "/etc/t";

fn id(s: &str) -> TunnelId {
    TunnelId::new(s).unwrap()
}

fn unit(name: &str, exists: bool, state: ActiveState, changed_secs_ago: u64) -> UnitFacts {
    let now_usec = now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
    UnitFacts {
        id: id(name),
        config: ConfigRef::Known(format!("{DIR}/xray-{name}.json").into()),
        config_exists: exists,
        active_state: state,
        state_change_usec: now_usec - changed_secs_ago * 1_000_000,
    }
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn facts(units: Vec<UnitFacts>) -> Facts {
    Facts {
        now: now(),
        units,
        config_files: Vec::new(),
        inventory: None,
        cores: Vec::new(),
        config_dir: DIR.into(),
        failed_threshold: Duration::from_secs(600),
    }
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn core(pid: u32, args: &[&str], in_unit: bool) -> CoreProcess {
    CoreProcess {
        key: ProcessKey {
            pid,
            start_ticks: u64::from(pid) * 10,
        },
        comm: "xray".into(),
        argv: argv(args),
        in_unit,
    }
}

fn kinds(found: &[Found]) -> Vec<(OrphanKind, String)> {
    let mut out: Vec<_> = found
        .iter()
        .map(|f| match &f.key {
            OrphanKey::Tunnel(kind, id) => (*kind, id.to_string()),
            OrphanKey::Stray(id, p) => (OrphanKind::StrayProcess, format!("{id}/{}", p.pid)),
        })
        .collect();
    out.sort();
    out
}

#[test]
fn healthy_units_are_no_orphans() {
    let f = facts(vec![unit("a", true, ActiveState::Active, 5000)]);
    assert!(find(&f).is_empty());
}

#[test]
fn a_unit_without_its_known_config_is_an_orphan() {
    let f = facts(vec![unit("a", false, ActiveState::Active, 5)]);
    let found = find(&f);
    assert_eq!(kinds(&found), [(OrphanKind::UnitWithoutConfig, "a".into())]);
    assert_eq!(found[0].detail, "config /etc/t/xray-a.json is missing");
}

#[test]
fn a_unit_whose_config_is_unknown_is_never_without_config() {
    for reason in UnknownReason::ALL {
        let mut u = unit("a", false, ActiveState::Active, 5);
        u.config = ConfigRef::Unknown(reason);
        assert!(find(&facts(vec![u])).is_empty(), "{reason:?}");
    }
    // An unloaded unit (empty ExecStart) that failed long ago is still failed too long.
    let mut u = unit("gone", false, ActiveState::Failed, 10_000);
    u.config = ConfigRef::Unknown(UnknownReason::NoCommand);
    assert_eq!(
        kinds(&find(&facts(vec![u]))),
        [(OrphanKind::FailedTooLong, "gone".into())]
    );
}

#[test]
fn the_inventory_decides_only_when_read() {
    let mut f = facts(vec![
        unit("a", true, ActiveState::Active, 5),
        unit("b", true, ActiveState::Active, 5),
    ]);
    assert!(
        find(&f).is_empty(),
        "no inventory: nobody is absent from it"
    );
    f.inventory = Some(HashSet::from(["a".to_owned()]));
    assert_eq!(kinds(&find(&f)), [(OrphanKind::NotInInventory, "b".into())]);
    f.inventory = Some(HashSet::new());
    assert_eq!(
        find(&f).len(),
        2,
        "an empty inventory is still an inventory"
    );
}

#[test]
fn failed_longer_than_the_threshold() {
    let mut f = facts(vec![
        unit("old", true, ActiveState::Failed, 601),
        unit("new", true, ActiveState::Failed, 599),
        unit("up", true, ActiveState::Active, 10_000),
        unit("inactive", true, ActiveState::Inactive, 10_000),
    ]);
    let found = find(&f);
    assert_eq!(kinds(&found), [(OrphanKind::FailedTooLong, "old".into())]);
    assert_eq!(found[0].detail, "failed for 10m 1s");
    f.units[0].state_change_usec = 0;
    assert!(find(&f).is_empty(), "an unknown change time proves nothing");
}

#[test]
fn a_config_without_unit_unless_a_unit_or_a_core_runs_it() {
    let mut f = facts(vec![unit("a", true, ActiveState::Active, 5)]);
    let file = |name: &str| ConfigFile {
        id: id(name),
        path: format!("{DIR}/xray-{name}.json").into(),
    };
    f.config_files = ["a", "lonely", "shared", "distro"].map(file).to_vec();
    f.units[0].config = ConfigRef::Known("/etc/t/xray-shared.json".into());
    // The distro's xray.service runs xray-distro.json: in use, though no tunnel unit names it.
    f.cores = vec![core(
        7,
        &["/usr/bin/xray", "-c", "/etc/t//xray-distro.json"],
        true,
    )];
    let found = find(&f);
    assert_eq!(
        kinds(&found),
        [
            (OrphanKind::ConfigWithoutUnit, "lonely".into()),
            // a's own default-named file is not what a runs, but a's unit exists.
        ]
    );
    assert_eq!(
        found[0].detail,
        "/etc/t/xray-lonely.json has no unit xray-tunnel-lonely.service"
    );
}

#[test]
fn a_stray_is_a_core_outside_every_unit_running_a_tunnel_config() {
    let mut f = facts(vec![unit("custom", true, ActiveState::Active, 5)]);
    f.units[0].config = ConfigRef::Known("/etc/t/sub/custom.json".into());
    f.cores = vec![
        core(
            10,
            &["/usr/bin/xray", "run", "-c", "/etc/t/xray-ghost.json"],
            false,
        ),
        core(
            11,
            &["/usr/bin/v2ray", "-config=/etc/t/xray-ghost.json"],
            false,
        ),
        core(
            12,
            &["/usr/bin/xray", "-c", "/etc/t/sub/custom.json"],
            false,
        ),
        // Never strays: in a unit, elsewhere, unknown, not a tunnel's file, a config test.
        core(20, &["/usr/bin/xray", "-c", "/etc/t/xray-ghost.json"], true),
        core(21, &["/usr/bin/xray", "-c", "/root/xray-ghost.json"], false),
        core(22, &["/usr/bin/xray", "-confdir", "/etc/t"], false),
        core(23, &["/usr/bin/xray", "-c", "xray-ghost.json"], false),
        core(24, &["/usr/bin/xray", "-c", "/etc/t/other.json"], false),
        core(
            25,
            &["/usr/bin/xray", "-c", "/etc/t/sub/xray-x.json"],
            false,
        ),
        core(
            26,
            &["/usr/bin/xray", "run", "-test", "-c", "/etc/t/xray-a.json"],
            false,
        ),
        core(27, &["/usr/bin/xray", "api", "statsquery"], false),
    ];
    let found = find(&f);
    assert_eq!(
        kinds(&found),
        [
            (OrphanKind::StrayProcess, "custom/12".into()),
            (OrphanKind::StrayProcess, "ghost/10".into()),
            (OrphanKind::StrayProcess, "ghost/11".into()),
        ]
    );
    assert_eq!(
        found[0].detail,
        "pid 10 (xray) runs /etc/t/xray-ghost.json outside every systemd unit: \
         /usr/bin/xray run -c /etc/t/xray-ghost.json"
    );
}

#[test]
fn systemd_units_in_every_hierarchy_layout() {
    for inside in [
        "0::/system.slice/xray-tunnel-a.service\n",
        "0::/system.slice/xray.service\n",
        "0::/system.slice/x-ui.service/sub\n",
        "0::/user.slice/user-0.slice/session-4.scope\n",
        "12:pids:/system.slice/panel.service\n1:name=systemd:/\n0::/\n",
        "",
    ] {
        assert!(in_systemd_unit(inside), "{inside:?}");
    }
    for outside in [
        "0::/\n",
        "0::/../..\n",
        "9:name=systemd:/\n4:memory:/process_api/ed30\n0::/\n",
        "0::/system.slice\n",
        "0::/docker/4f2a\n",
    ] {
        assert!(!in_systemd_unit(outside), "{outside:?}");
    }
}

#[test]
fn cores_by_name_or_by_binary() {
    let bin = Path::new("/opt/xray/xray-core");
    assert!(is_core("xray", None, bin));
    assert!(is_core("v2ray", Some(Path::new("/usr/bin/v2ray")), bin));
    assert!(is_core("xray-core", Some(bin), bin));
    assert!(is_core(
        "xray-core",
        Some(Path::new("/opt/xray/xray-core (deleted)")),
        bin
    ));
    assert!(!is_core(
        "xray-helper",
        Some(Path::new("/usr/bin/helper")),
        bin
    ));
    assert!(!is_core("nginx", None, bin));
}

#[test]
fn command_lines_are_readable() {
    assert_eq!(render_argv(&argv(&["a", "b c"])), "a b c");
    let long = "x".repeat(300);
    assert_eq!(render_argv(&argv(&[&long])).len(), 203);
}

#[test]
fn since_is_the_first_sighting_and_a_recycled_pid_is_new() {
    let t0 = now();
    let t1 = t0 + Duration::from_secs(15);
    let t2 = t1 + Duration::from_secs(15);
    let stray = |start_ticks| Found {
        key: OrphanKey::Stray(
            id("ghost"),
            ProcessKey {
                pid: 42,
                start_ticks,
            },
        ),
        detail: String::new(),
    };
    let unit = Found {
        key: OrphanKey::Tunnel(OrphanKind::UnitWithoutConfig, id("a")),
        detail: String::new(),
    };
    let mut book = Book::new();
    let first = stamp(&mut book, vec![stray(7), unit.clone()], t0);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|o| o.since == t0));
    assert_eq!(
        first[0].kind,
        OrphanKind::UnitWithoutConfig,
        "sorted by kind"
    );
    assert_eq!(
        (first[1].tunnel.as_str(), first[1].pid),
        ("ghost", Some(42))
    );

    let again = stamp(&mut book, vec![stray(7), unit.clone()], t1);
    assert!(again.iter().all(|o| o.since == t0), "{again:?}");

    // Same PID, another process: a new orphan; the unit orphan was resolved and forgotten.
    let reused = stamp(&mut book, vec![stray(9)], t2);
    assert_eq!(reused[0].since, t2);
    assert_eq!(book.len(), 1);
    let back = stamp(&mut book, vec![unit], t2 + Duration::from_secs(1));
    assert_eq!(back[0].since, t2 + Duration::from_secs(1));
}

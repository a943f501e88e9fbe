use super::*;

fn id(s: &str) -> TunnelId {
    TunnelId::new(s).unwrap()
}

fn unit(name: &str, exists: bool, state: ActiveState, changed_secs_ago: u64) -> UnitFacts {
    let now_usec = now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
    UnitFacts {
        id: id(name),
        config_path: format!("/etc/t/xray-{name}.json").into(),
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
        strays: Vec::new(),
        failed_threshold: Duration::from_secs(600),
    }
}

fn kinds(found: &[Found]) -> Vec<(OrphanKind, String)> {
    let mut out: Vec<_> = found
        .iter()
        .map(|f| match &f.key {
            OrphanKey::Tunnel(kind, id) => (*kind, id.to_string()),
            OrphanKey::Process(p) => (OrphanKind::StrayProcess, stray_name(p.pid)),
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
fn a_unit_without_its_config_is_an_orphan() {
    let f = facts(vec![unit("a", false, ActiveState::Active, 5)]);
    let found = find(&f);
    assert_eq!(kinds(&found), [(OrphanKind::UnitWithoutConfig, "a".into())]);
    assert_eq!(found[0].detail, "config /etc/t/xray-a.json is missing");
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
fn a_config_without_unit_unless_another_unit_runs_it() {
    let mut f = facts(vec![unit("a", true, ActiveState::Active, 5)]);
    f.config_files = vec![
        ConfigFile {
            id: id("a"),
            path: "/etc/t/xray-a.json".into(),
        },
        ConfigFile {
            id: id("lonely"),
            path: "/etc/t/xray-lonely.json".into(),
        },
        ConfigFile {
            id: id("shared"),
            path: "/etc/t/xray-shared.json".into(),
        },
    ];
    f.units[0].config_path = "/etc/t/xray-shared.json".into();
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
fn stray_processes_are_keyed_by_pid_and_start() {
    let mut f = facts(Vec::new());
    let key = ProcessKey {
        pid: 42,
        start_ticks: 7,
    };
    f.strays = vec![StrayProcess {
        key,
        comm: "v2ray".into(),
        cmdline: "/usr/bin/v2ray -config /x.json".into(),
    }];
    let found = find(&f);
    assert_eq!(found[0].key, OrphanKey::Process(key));
    assert_eq!(
        found[0].detail,
        "pid 42 (v2ray) runs outside every tunnel unit: /usr/bin/v2ray -config /x.json"
    );
}

#[test]
fn since_is_the_first_sighting_and_a_recycled_pid_is_new() {
    let t0 = now();
    let t1 = t0 + Duration::from_secs(15);
    let t2 = t1 + Duration::from_secs(15);
    let stray = |start_ticks| Found {
        key: OrphanKey::Process(ProcessKey {
            pid: 42,
            start_ticks,
        }),
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
        ("pid-42", Some(42))
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

use super::*;

fn id(s: &str) -> TunnelId {
    TunnelId::new(s).unwrap()
}

fn since() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(100)
}

fn orphan(tunnel: &str, kind: OrphanKind, pid: Option<u32>) -> Orphan {
    Orphan {
        tunnel: tunnel.into(),
        kind,
        since: since(),
        detail: String::new(),
        pid,
    }
}

#[test]
fn one_action_per_tunnel_config_and_process() {
    let plan = plan_cleanup(&[
        orphan("ghost", OrphanKind::StrayProcess, Some(9)),
        orphan("ghost", OrphanKind::StrayProcess, Some(8)),
        orphan("b", OrphanKind::FailedTooLong, None),
        orphan("lonely", OrphanKind::ConfigWithoutUnit, None),
        orphan("b", OrphanKind::UnitWithoutConfig, None),
        orphan("a", OrphanKind::NotInInventory, None),
        orphan("../etc", OrphanKind::UnitWithoutConfig, None),
        orphan("../x", OrphanKind::StrayProcess, Some(7)),
        orphan("ghost", OrphanKind::StrayProcess, None),
    ]);
    let stop = |pid| CleanupAction::StopProcess {
        tunnel: id("ghost"),
        pid,
        since: since(),
    };
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
            stop(8),
            stop(9),
        ]
    );
    assert!(plan_cleanup(&[]).is_empty());
}

#[test]
fn actions_serialise_flat() {
    let remove = CleanupAction::RemoveTunnel {
        tunnel: id("b"),
        reasons: vec![OrphanKind::FailedTooLong],
    };
    assert_eq!(
        serde_json::to_value(&remove).unwrap(),
        serde_json::json!({"action": "remove_tunnel", "tunnel": "b", "reasons": ["failed_too_long"]})
    );
    let stop = CleanupAction::StopProcess {
        tunnel: id("ghost"),
        pid: 9,
        since: UNIX_EPOCH + Duration::from_millis(1500),
    };
    assert_eq!(
        serde_json::to_value(&stop).unwrap(),
        serde_json::json!({"action": "stop_process", "tunnel": "ghost", "pid": 9, "since": 1.5})
    );
}

#[test]
fn the_guard_allows_exactly_the_limits() {
    let limits = GuardLimits::default();
    assert_eq!(limits.max_fraction, 0.5);
    assert_eq!(limits.max_per_pass, 5);
    assert!(
        limits.check(0, 0, 0).is_ok(),
        "nothing orphaned, nothing to refuse"
    );
    assert!(limits.check(0, 10, 0).is_ok());
    assert!(
        limits.check(0, 0, 3).is_ok(),
        "three strays on a node without tunnels"
    );
    assert!(limits.check(2, 4, 2).is_ok(), "exactly half");
    assert!(
        limits.check(5, 10, 5).is_ok(),
        "exactly half and exactly the per-pass cap"
    );
    assert!(limits.check(5, 100, 5).is_ok());
    let over_half = limits.check(3, 4, 3).unwrap_err();
    assert!(over_half.over_fraction && !over_half.over_per_pass);
    let over_cap = limits.check(2, 100, 6).unwrap_err();
    assert!(!over_cap.over_fraction && over_cap.over_per_pass);
    let both = limits.check(7, 10, 7).unwrap_err();
    assert!(both.over_fraction && both.over_per_pass);
}

#[test]
fn the_guard_refuses_an_empty_listing_and_a_lone_orphaned_tunnel() {
    let limits = GuardLimits::default();
    let none: [&TunnelId; 0] = [];
    // No tunnel units but configs without unit: the listing is suspect, all looks orphaned.
    let configs = [
        orphan("a", OrphanKind::ConfigWithoutUnit, None),
        orphan("b", OrphanKind::ConfigWithoutUnit, None),
    ];
    assert!(
        limits
            .check_orphans(&configs, none)
            .unwrap_err()
            .over_fraction
    );
    // One tunnel, and it is orphaned: everything looks orphaned. Refused by default...
    let lone = [orphan("a", OrphanKind::UnitWithoutConfig, None)];
    let a = id("a");
    assert!(limits.check_orphans(&lone, [&a]).is_err());
    // ...and allowed when the operator says a whole node may be cleaned.
    let whole = GuardLimits {
        max_fraction: 1.0,
        ..limits
    };
    assert!(whole.check_orphans(&lone, [&a]).is_ok());
}

#[test]
fn the_guard_compares_tunnels_with_tunnels() {
    let limits = GuardLimits::default();
    let units: Vec<TunnelId> = ["alpha", "beta", "gone"].into_iter().map(id).collect();
    // The node: two healthy tunnels, one unit without config, one stray core whose
    // config belongs to no unit. One of four tunnels is orphaned; two things to act on.
    let node = [
        orphan("gone", OrphanKind::UnitWithoutConfig, None),
        orphan("ghost", OrphanKind::StrayProcess, Some(7)),
    ];
    assert!(limits.check_orphans(&node, &units).is_ok());
    // Right after "gone" was deleted the units are two, but the last pass still lists it:
    // it still counts among the known tunnels, so the ratio does not jump.
    let after: Vec<TunnelId> = ["alpha", "beta"].into_iter().map(id).collect();
    assert!(limits.check_orphans(&node, &after).is_ok());
    // Strays alone never make a fraction, only the per-pass cap counts them.
    let strays: Vec<Orphan> = (0..6)
        .map(|i| orphan(&format!("s{i}"), OrphanKind::StrayProcess, Some(i)))
        .collect();
    let trip = limits.check_orphans(&strays, &units).unwrap_err();
    assert!(trip.over_per_pass && !trip.over_fraction, "{trip}");
}

#[test]
fn the_guard_counts_distinct_tunnels_and_says_why() {
    let limits = GuardLimits::default();
    let orphans = [
        orphan("a", OrphanKind::UnitWithoutConfig, None),
        orphan("a", OrphanKind::NotInInventory, None),
        orphan("ghost", OrphanKind::StrayProcess, Some(1)),
        orphan("ghost", OrphanKind::StrayProcess, Some(2)),
        orphan("ghost", OrphanKind::ConfigWithoutUnit, None),
    ];
    // Two tunnels (a, ghost's config) among units a, b, c: 2 of 4 known, exactly half.
    let four: Vec<TunnelId> = ["a", "b", "c"].into_iter().map(id).collect();
    assert!(limits.check_orphans(&orphans, &four).is_ok());
    let two: Vec<TunnelId> = ["a", "b"].into_iter().map(id).collect();
    let trip = limits.check_orphans(&orphans, &two).unwrap_err();
    assert_eq!((trip.orphaned, trip.tunnels, trip.acted_on), (2, 3, 2));
    assert_eq!(
        trip.to_string(),
        "2 of 3 tunnels look orphaned (2 to act on, strays included) at once: more than \
         max_orphan_fraction 0.5 of the tunnels; acting on none (a broken inventory, control \
         plane or listing looks like this)"
    );
    let many: Vec<Orphan> = (0..6)
        .map(|i| orphan(&format!("t{i}"), OrphanKind::UnitWithoutConfig, None))
        .collect();
    let hundred: Vec<TunnelId> = (0..100).map(|i| id(&format!("t{i}"))).collect();
    let trip = limits.check_orphans(&many, &hundred).unwrap_err();
    assert!(
        trip.to_string()
            .contains("more than max_orphans_per_pass 5"),
        "{trip}"
    );
}

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
        limits.check(0, 0).is_ok(),
        "nothing orphaned, nothing to refuse"
    );
    assert!(limits.check(0, 10).is_ok());
    assert!(limits.check(2, 4).is_ok(), "exactly half");
    assert!(
        limits.check(5, 10).is_ok(),
        "exactly half and exactly the per-pass cap"
    );
    assert!(limits.check(5, 100).is_ok());
    let over_half = limits.check(3, 4).unwrap_err();
    assert!(over_half.over_fraction && !over_half.over_per_pass);
    let over_cap = limits.check(6, 100).unwrap_err();
    assert!(!over_cap.over_fraction && over_cap.over_per_pass);
    let both = limits.check(7, 10).unwrap_err();
    assert!(both.over_fraction && both.over_per_pass);
}

#[test]
fn the_guard_refuses_a_node_without_units_and_a_lone_orphaned_tunnel() {
    let limits = GuardLimits::default();
    // No tunnel units but orphans (configs without unit, strays): the listing is suspect.
    let empty = limits.check(1, 0).unwrap_err();
    assert!(empty.over_fraction);
    // One tunnel, and it is orphaned: everything looks orphaned. Refused by default...
    assert!(limits.check(1, 1).is_err());
    // ...and allowed when the operator says a whole node may be cleaned.
    let whole = GuardLimits {
        max_fraction: 1.0,
        ..limits
    };
    assert!(whole.check(1, 1).is_ok());
    assert!(whole.check(1, 0).is_err(), "still nothing to compare with");
}

#[test]
fn the_guard_counts_distinct_tunnels_strays_included() {
    let limits = GuardLimits::default();
    let orphans = [
        orphan("a", OrphanKind::UnitWithoutConfig, None),
        orphan("a", OrphanKind::NotInInventory, None),
        orphan("ghost", OrphanKind::StrayProcess, Some(1)),
        orphan("ghost", OrphanKind::StrayProcess, Some(2)),
        orphan("ghost", OrphanKind::ConfigWithoutUnit, None),
    ];
    // Two tunnels (a, ghost) out of four units: exactly half.
    assert!(limits.check_orphans(&orphans, 4).is_ok());
    let trip = limits.check_orphans(&orphans, 3).unwrap_err();
    assert_eq!((trip.orphaned, trip.tunnels), (2, 3));
    assert_eq!(
        trip.to_string(),
        "2 of 3 tunnels look orphaned at once: more than max_orphan_fraction 0.5 of the tunnel \
         units; acting on none (a broken inventory, control plane or listing looks like this)"
    );
    let many: Vec<Orphan> = (0..6)
        .map(|i| orphan(&format!("t{i}"), OrphanKind::UnitWithoutConfig, None))
        .collect();
    let trip = limits.check_orphans(&many, 100).unwrap_err();
    assert!(
        trip.to_string()
            .contains("more than max_orphans_per_pass 5"),
        "{trip}"
    );
}

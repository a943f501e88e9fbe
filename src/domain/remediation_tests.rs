use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn me() -> NodeIdentity {
    NodeIdentity {
        node: "node-a".into(),
        node_label: "instance".into(),
    }
}

fn orphan_labels() -> BTreeMap<String, String> {
    labels(&[
        ("alertname", "XrayTunnelOrphaned"),
        ("warden_action", "cleanup_orphan"),
        ("instance", "node-a"),
        ("tunnel", "eu1"),
        ("kind", "unit_without_config"),
    ])
}

fn view<'a>(status: &'a str, labels: &'a BTreeMap<String, String>) -> AlertView<'a> {
    AlertView {
        status,
        labels,
        fingerprint: "a1b2c3d4e5f60718",
        starts_at: "2026-11-30T14:00:00Z",
    }
}

fn refused(result: Result<CleanupRequest, Refusal>) -> AlertResult {
    result.unwrap_err().result
}

#[test]
fn a_firing_orphan_alert_for_this_node_is_a_request() {
    let l = orphan_labels();
    let request = triage(view("firing", &l), &me()).unwrap();
    assert_eq!(request.tunnel.as_str(), "eu1");
    assert_eq!(request.kind, Some(OrphanKind::UnitWithoutConfig));
    assert_eq!(request.incident, "a1b2c3d4e5f60718@2026-11-30T14:00:00Z");
}

#[test]
fn triage_ignores_what_is_not_for_this_node_or_not_an_action() {
    let l = orphan_labels();
    assert_eq!(
        refused(triage(view("resolved", &l), &me())),
        AlertResult::IgnoredResolved
    );
    let mut other = orphan_labels();
    other.insert("instance".into(), "node-b".into());
    assert_eq!(
        refused(triage(view("firing", &other), &me())),
        AlertResult::IgnoredOtherNode
    );
    let mut no_node = orphan_labels();
    no_node.remove("instance");
    assert_eq!(
        refused(triage(view("firing", &no_node), &me())),
        AlertResult::IgnoredOtherNode
    );
    let mut reboot = orphan_labels();
    reboot.insert("warden_action".into(), "reboot_node".into());
    assert_eq!(
        refused(triage(view("firing", &reboot), &me())),
        AlertResult::IgnoredUnknownAction
    );
    let mut plain = orphan_labels();
    plain.remove("warden_action");
    assert_eq!(
        refused(triage(view("firing", &plain), &me())),
        AlertResult::IgnoredUnknownAction
    );
}

#[test]
fn triage_refuses_bad_ids_and_kinds_never_cleaned_automatically() {
    for bad in ["../etc", "", "a b", "x/y"] {
        let mut l = orphan_labels();
        l.insert("tunnel".into(), bad.into());
        assert_eq!(
            refused(triage(view("firing", &l), &me())),
            AlertResult::IgnoredInvalid,
            "{bad:?}"
        );
    }
    for kind in [
        "config_without_unit",
        "not_in_inventory",
        "failed_too_long",
        "what",
    ] {
        let mut l = orphan_labels();
        l.insert("kind".into(), kind.into());
        assert_eq!(
            refused(triage(view("firing", &l), &me())),
            AlertResult::IgnoredInvalid,
            "{kind}"
        );
    }
    let l = orphan_labels();
    let mut no_fp = view("firing", &l);
    no_fp.fingerprint = "";
    assert_eq!(refused(triage(no_fp, &me())), AlertResult::IgnoredInvalid);
}

#[test]
fn the_node_label_is_configurable() {
    let mut l = orphan_labels();
    l.insert("node".into(), "edge-7".into());
    let me = NodeIdentity {
        node: "edge-7".into(),
        node_label: "node".into(),
    };
    assert!(triage(view("firing", &l), &me).is_ok());
}

const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn orphan(tunnel: &str, kind: OrphanKind, since: u64) -> Orphan {
    Orphan {
        tunnel: tunnel.into(),
        kind,
        since: at(since),
        detail: String::new(),
        pid: None,
    }
}

fn policy() -> Policy {
    Policy {
        enabled: true,
        dry_run: false,
        min_orphan_age: Duration::from_secs(300),
        cooldown: Duration::from_secs(1800),
        max_actions_per_hour: 10,
    }
}

fn request(kind: Option<OrphanKind>) -> CleanupRequest {
    CleanupRequest {
        tunnel: TunnelId::new("eu1").unwrap(),
        kind,
        incident: "f@t".into(),
    }
}

fn moment(orphans: &[Orphan]) -> Moment<'_> {
    Moment {
        now: at(T0 + 600),
        orphans,
        duplicate: false,
        last_action: None,
        actions_last_hour: 0,
        guard: Ok(()),
    }
}

fn refusal(r: Result<Go, Refusal>) -> AlertResult {
    r.unwrap_err().result
}

#[test]
fn acts_on_an_old_enough_orphan_of_the_alerts_kind_only() {
    let orphans = [
        orphan("eu1", OrphanKind::UnitWithoutConfig, T0),
        orphan("eu1", OrphanKind::StrayProcess, T0),
        orphan("eu1", OrphanKind::FailedTooLong, T0),
        orphan("us2", OrphanKind::UnitWithoutConfig, T0),
    ];
    let go = decide(
        &request(Some(OrphanKind::UnitWithoutConfig)),
        &policy(),
        &moment(&orphans),
    )
    .unwrap();
    assert_eq!(go.orphans, vec![orphans[0].clone()]);
    assert!(!go.dry_run);
    let any = decide(&request(None), &policy(), &moment(&orphans)).unwrap();
    assert_eq!(any.orphans, vec![orphans[0].clone(), orphans[1].clone()]);
}

#[test]
fn refuses_a_tunnel_that_is_no_orphan_or_only_of_another_kind() {
    let healthy: [Orphan; 0] = [];
    assert_eq!(
        refusal(decide(&request(None), &policy(), &moment(&healthy))),
        AlertResult::RefusedNotOrphan
    );
    let failed = [orphan("eu1", OrphanKind::FailedTooLong, T0)];
    assert_eq!(
        refusal(decide(&request(None), &policy(), &moment(&failed))),
        AlertResult::RefusedNotOrphan
    );
}

#[test]
fn refuses_an_orphan_younger_than_min_age_exactly_at_the_edge_acts() {
    let young = [orphan("eu1", OrphanKind::UnitWithoutConfig, T0 + 301)];
    assert_eq!(
        refusal(decide(&request(None), &policy(), &moment(&young))),
        AlertResult::RefusedTooYoung
    );
    let edge = [orphan("eu1", OrphanKind::UnitWithoutConfig, T0 + 300)];
    assert!(decide(&request(None), &policy(), &moment(&edge)).is_ok());
}

#[test]
fn disabled_duplicate_guard_cooldown_and_budget_each_refuse() {
    let orphans = [orphan("eu1", OrphanKind::UnitWithoutConfig, T0)];
    let r = request(None);
    let off = Policy {
        enabled: false,
        ..policy()
    };
    assert_eq!(
        refusal(decide(&r, &off, &moment(&orphans))),
        AlertResult::RefusedDisabled
    );
    let dup = Moment {
        duplicate: true,
        ..moment(&orphans)
    };
    assert_eq!(refusal(decide(&r, &policy(), &dup)), AlertResult::Duplicate);
    let guard = Moment {
        guard: Err("6 of 8 tunnels look orphaned".into()),
        ..moment(&orphans)
    };
    assert_eq!(
        refusal(decide(&r, &policy(), &guard)),
        AlertResult::RefusedGuard
    );
    let recent = Moment {
        last_action: Some(at(T0 + 600 - 1799)),
        ..moment(&orphans)
    };
    assert_eq!(
        refusal(decide(&r, &policy(), &recent)),
        AlertResult::RefusedCooldown
    );
    let cooled = Moment {
        last_action: Some(at(T0 + 600 - 1800)),
        ..moment(&orphans)
    };
    assert!(decide(&r, &policy(), &cooled).is_ok());
    let spent = Moment {
        actions_last_hour: 10,
        ..moment(&orphans)
    };
    assert_eq!(
        refusal(decide(&r, &policy(), &spent)),
        AlertResult::RefusedBudget
    );
    let left = Moment {
        actions_last_hour: 9,
        ..moment(&orphans)
    };
    assert!(decide(&r, &policy(), &left).is_ok());
}

#[test]
fn dry_run_decides_the_same_but_says_so() {
    let orphans = [orphan("eu1", OrphanKind::UnitWithoutConfig, T0)];
    let dry = Policy {
        dry_run: true,
        ..policy()
    };
    assert!(
        decide(&request(None), &dry, &moment(&orphans))
            .unwrap()
            .dry_run
    );
}

#[test]
fn result_names_are_unique() {
    let names: std::collections::HashSet<_> = AlertResult::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), AlertResult::ALL.len());
}

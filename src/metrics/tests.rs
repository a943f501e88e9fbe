use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::domain::{
    ActiveState, Check, Online, Orphan, OrphanKind, Resources, RestartCounts, Traffic,
    TrafficCounter, TunnelId, UnitStatus, UserIps,
};
use crate::state::{COLLECTOR_SAMPLER, COLLECTOR_SYSTEMD, CollectorRun, HeldFiles, Tunnel};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/metrics.golden.prom"
);

fn tunnel(id: &str, state: ActiveState, sub: &str) -> (TunnelId, Tunnel) {
    let id = TunnelId::new(id).unwrap();
    let status = UnitStatus {
        description: format!("Tunnel \"{id}\""),
        load_state: "loaded".into(),
        active_state: Some(state),
        sub_state: sub.into(),
        unit_file_state: "enabled".into(),
        ..UnitStatus::default()
    };
    let tunnel = Tunnel::new(id.unit_name(), status);
    (id, tunnel)
}

fn fixture() -> SharedState {
    let state = SharedState::default();
    state.update(|s| {
        let (id, mut running) = tunnel("eu1", ActiveState::Active, "running");
        Arc::make_mut(&mut running.status).main_pid = 42;
        Arc::make_mut(&mut running.status).n_restarts = 3;
        Arc::make_mut(&mut running.status).exec_main_start_usec = 1_700_000_000_500_000;
        Arc::make_mut(&mut running.status).result = "success".into();
        running.restarts = RestartCounts { auto: 3, manual: 1 };
        let counter = |name: &str, direction, bytes| TrafficCounter {
            name: name.into(),
            direction,
            bytes,
        };
        running.traffic = Some(Traffic {
            inbounds: vec![
                counter("vless-in", "uplink", 1024),
                counter("vless-in", "downlink", 4096),
            ],
            outbounds: vec![
                counter("direct", "uplink", 900),
                counter("direct", "downlink", 3900),
            ],
            users: vec![counter("a@example.com", "downlink", 4000)],
            users_dropped: 0,
            online: Some(Online {
                users: 1,
                user_ips: vec![UserIps {
                    user: "a@example.com".into(),
                    ips: 2,
                }],
                users_dropped: 0,
            }),
        });
        running.health = vec![
            Check {
                name: "active",
                ok: true,
                detail: String::new(),
            },
            Check {
                name: "ports_owned",
                ok: false,
                detail: "port 443 held by pid 9 (nginx)".into(),
            },
        ];
        s.orphans = vec![Orphan {
            tunnel: "ghost".into(),
            kind: OrphanKind::ConfigWithoutUnit,
            since: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            detail: "/etc/raptor-tunnel/xray-ghost.json".into(),
            pid: None,
        }];
        running.resources = Some(Resources {
            cpu_seconds: 12.5,
            cpu_from_cgroup: false,
            rss_bytes: 31_457_280,
            memory_current_bytes: Some(40_000_000),
            tasks: 9,
            processes: 2,
            open_fds: 17,
        });
        s.tunnels.insert(id, running);
        let (id, mut failed) = tunnel("us2", ActiveState::Failed, "failed");
        Arc::make_mut(&mut failed.status).unit_file_state = "disabled".into();
        Arc::make_mut(&mut failed.status).exec_main_code = 2;
        Arc::make_mut(&mut failed.status).exec_main_status = 9;
        Arc::make_mut(&mut failed.status).result = "signal".into();
        s.tunnels.insert(id, failed);
        s.systemd_up = true;
        s.listed = true;
        s.held_files = HeldFiles {
            held: 5,
            limit: 512,
            units_by_path: 1,
        };
        let run = |ms| CollectorRun {
            success: true,
            duration: Duration::from_millis(ms),
        };
        s.collectors.insert(COLLECTOR_SYSTEMD, run(12));
        s.collectors.insert(COLLECTOR_SAMPLER, run(3));
    });
    state
}

fn render(state: &SharedState) -> String {
    String::from_utf8(Metrics::new(state.clone()).render().unwrap()).unwrap()
}

#[test]
fn scrape_matches_the_golden_file() {
    let state = fixture();
    state.update(|_| {});
    let text = render(&state)
        .lines()
        .filter(|l| !l.starts_with("xray_warden_last_refresh_timestamp_seconds "))
        .map(|l| l.replace(env!("CARGO_PKG_VERSION"), "VERSION") + "\n")
        .collect::<String>();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &text).unwrap();
    }
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    assert_eq!(
        text, golden,
        "run with UPDATE_GOLDEN=1 to accept a deliberate change"
    );
}

#[test]
fn stopped_units_keep_their_state_series_and_removed_ones_lose_them() {
    let state = fixture();
    let text = render(&state);
    assert!(text.contains("xray_tunnel_state{tunnel=\"us2\",state=\"failed\"} 1"));
    assert!(text.contains("xray_tunnel_up{tunnel=\"us2\"} 0"));
    assert!(text.contains("xray_tunnel_last_exit_signal{tunnel=\"us2\"} 9"));
    state.update(|s| s.tunnels.remove(&TunnelId::new("us2").unwrap()));
    let text = render(&state);
    assert!(!text.contains("us2"), "{text}");
    assert!(text.contains("xray_warden_tunnels 1"));
}

/// Without an open-file limit the sampler has no budget: no limit series rather than a huge
/// number or `inf`.
#[test]
fn an_unlimited_file_budget_publishes_no_limit() {
    let state = fixture();
    let limit = "\nxray_warden_sampler_held_files_limit ";
    assert!(render(&state).contains(limit));
    state.update(|s| s.held_files.limit = u64::MAX);
    let text = render(&state);
    assert!(!text.contains(limit), "{text}");
    assert!(text.contains("\nxray_warden_sampler_held_files 5\n"));
}

#[test]
fn refresh_time_is_exported() {
    let state = fixture();
    let text = render(&state);
    let line = text
        .lines()
        .find(|l| l.starts_with("xray_warden_last_refresh_timestamp_seconds "))
        .unwrap();
    let value: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let now = UNIX_EPOCH.elapsed().unwrap().as_secs_f64();
    assert!((now - value).abs() < 60.0, "{line}");
}

#[test]
fn every_family_has_a_valid_unique_name() {
    let specs: Vec<_> = tunnels::specs().chain(exporter::SPECS.iter()).collect();
    for spec in &specs {
        // Desc::new checks the metric and label names the way the registry would.
        prometheus::core::Desc::new(
            spec.name.into(),
            spec.help.into(),
            spec.labels.iter().map(|l| (*l).to_owned()).collect(),
            Default::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        assert!(!spec.help.contains(['\\', '\n']), "{}", spec.name);
    }
    let mut names: Vec<_> = specs.iter().map(|s| s.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), specs.len(), "duplicate family names");
}

#[test]
fn a_core_without_online_api_has_no_online_series_not_a_zero() {
    let state = fixture();
    state.update(|s| {
        for tunnel in s.tunnels.values_mut() {
            if let Some(traffic) = &mut tunnel.traffic {
                traffic.online = None;
            }
        }
    });
    let text = render(&state);
    assert!(text.contains("xray_tunnel_inbound_traffic_bytes_total{tunnel=\"eu1\""));
    assert!(text.contains("xray_tunnel_outbound_traffic_bytes_total{tunnel=\"eu1\""));
    assert!(!text.contains("xray_tunnel_online_users"), "{text}");
    assert!(!text.contains("xray_tunnel_user_online_ips"), "{text}");
}

#[test]
fn per_tunnel_series_are_rendered_once_per_snapshot_version() {
    let state = fixture();
    let metrics = Metrics::new(state.clone());
    let cpu = |m: &Metrics| {
        let body = String::from_utf8(m.render().unwrap()).unwrap();
        let line = body
            .lines()
            .find(|l| l.starts_with("xray_tunnel_cpu_seconds_total{tunnel=\"eu1\"}"))
            .unwrap()
            .to_owned();
        (line, body)
    };
    assert!(cpu(&metrics).0.ends_with(" 12.5"));
    let set_cpu = |s: &mut Snapshot, v: f64| {
        let id = TunnelId::new("eu1").unwrap();
        s.tunnels
            .get_mut(&id)
            .unwrap()
            .resources
            .as_mut()
            .unwrap()
            .cpu_seconds = v;
    };
    // An update that leaves the version alone (meant for the collectors' runs only) is not
    // rendered again: the kept rendering is served, while the warden's own series are fresh.
    state.update_runs(|s| {
        set_cpu(s, 30.0);
        let run = CollectorRun {
            success: true,
            duration: Duration::from_millis(99),
        };
        s.collectors.insert(COLLECTOR_SAMPLER, run);
    });
    let (line, body) = cpu(&metrics);
    assert!(line.ends_with(" 12.5"), "{line}");
    assert!(body.contains("xray_warden_collector_duration_seconds{collector=\"sampler\"} 0.099"));
    // A versioned update renders again.
    state.update(|s| set_cpu(s, 20.0));
    assert!(cpu(&metrics).0.ends_with(" 20"));
    // An update of the samples renders their families again and keeps the status families
    // as they were rendered (a status change slipped into it stays unseen, by contract)...
    let sub_state =
        |body: &str| body.contains("xray_tunnel_sub_state{tunnel=\"eu1\",sub_state=\"running\"} 1");
    state.update_samples(|s| {
        set_cpu(s, 25.0);
        let id = TunnelId::new("eu1").unwrap();
        Arc::make_mut(&mut s.tunnels.get_mut(&id).unwrap().status).sub_state = "reloading".into();
    });
    let (line, body) = cpu(&metrics);
    assert!(line.ends_with(" 25"), "{line}");
    assert!(sub_state(&body), "{body}");
    // ...until an update that may change them.
    state.update(|_| {});
    let (line, body) = cpu(&metrics);
    assert!(line.ends_with(" 25"), "{line}");
    assert!(
        !sub_state(&body) && body.contains("sub_state=\"reloading\"} 1"),
        "{body}"
    );
}

//! The user sync's metrics, registered in the warden's registry.
//!
//! Cardinality: `tunnel` x `inbound` (a handful of inbounds per tunnel); `op` is add/remove and
//! `result` ok/error/refused. Series of a tunnel that disappears are removed by [`SyncMetrics::retain`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

use crate::domain::TunnelId;

#[derive(Clone)]
pub struct SyncMetrics {
    desired: GaugeVec,
    applied: GaugeVec,
    drift: GaugeVec,
    cannot_hold: GaugeVec,
    operations: IntCounterVec,
    duration: Histogram,
    last_success: GaugeVec,
    last_full: GaugeVec,
    guard_tripped: GaugeVec,
    api_up: GaugeVec,
    pub source_up: Gauge,
    pub source_configured: Gauge,
    pub invalid_users: Gauge,
    /// (tunnel, inbound) pairs with series, to remove them when the tunnel goes.
    inbounds: Arc<Mutex<BTreeSet<(String, String)>>>,
    tunnels: Arc<Mutex<BTreeSet<String>>>,
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let vec = GaugeVec::new(Opts::new(name, help), labels).expect("static metric spec");
    registry
        .register(Box::new(vec.clone()))
        .expect("registered once");
    vec
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    let gauge = Gauge::new(name, help).expect("static metric spec");
    registry
        .register(Box::new(gauge.clone()))
        .expect("registered once");
    gauge
}

impl SyncMetrics {
    pub fn new(registry: &Registry) -> Self {
        let operations = IntCounterVec::new(
            Opts::new("xray_usersync_operations_total", "User operations sent to the cores, by result (ok, error, refused: not sent because it was malformed or could crash the core)."),
            &["tunnel", "op", "result"],
        )
        .expect("static metric spec");
        registry
            .register(Box::new(operations.clone()))
            .expect("registered once");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "xray_usersync_duration_seconds",
                "Duration of one tunnel's user sync.",
            )
            .buckets(vec![
                0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("static metric spec");
        registry
            .register(Box::new(duration.clone()))
            .expect("registered once");
        let ti = &["tunnel", "inbound"];
        let t = &["tunnel"];
        Self {
            desired: gauge_vec(
                registry,
                "xray_usersync_desired_users",
                "Users the source wants on the inbound.",
                ti,
            ),
            applied: gauge_vec(
                registry,
                "xray_usersync_applied_users",
                "Users the inbound holds after the last sync.",
                ti,
            ),
            drift: gauge_vec(
                registry,
                "xray_usersync_drift_users",
                "Users by which the inbound's live users (GetInboundUsers) differed from the desired set before the last sync repaired them: missing, extra or with another credential. Only for cores that list their users (Xray).",
                ti,
            ),
            cannot_hold: gauge_vec(
                registry,
                "xray_usersync_inbound_cannot_hold_users",
                "1 for an inbound the last sync skipped because its proxy cannot hold users (a single-user or relay Shadowsocks-2022 inbound).",
                ti,
            ),
            operations,
            duration,
            last_success: gauge_vec(
                registry,
                "xray_usersync_last_success_timestamp_seconds",
                "Unix time of the tunnel's last completed user sync.",
                t,
            ),
            last_full: gauge_vec(
                registry,
                "xray_usersync_last_full_round_timestamp_seconds",
                "Unix time of the tunnel's last full user sync: config and record read and, on cores that list users, every user compared with the desired set. Rounds in between, with nothing changed since, only count the core's users; a full round runs at least every 5 minutes and on every forced sync.",
                t,
            ),
            guard_tripped: gauge_vec(
                registry,
                "xray_usersync_removal_guard_tripped",
                "1 if the tunnel's last sync skipped its removals because they exceeded users.max_remove_fraction.",
                t,
            ),
            api_up: gauge_vec(
                registry,
                "xray_tunnel_api_up",
                "1 if the tunnel's core API answered during the last sync.",
                t,
            ),
            source_up: gauge(
                registry,
                "xray_usersync_source_up",
                "1 if the last fetch of the users source succeeded and parsed.",
            ),
            source_configured: gauge(
                registry,
                "xray_usersync_source_configured",
                "1 if a users source is configured (user sync is on); 0 when it is off, where source_up means nothing.",
            ),
            invalid_users: gauge(
                registry,
                "xray_usersync_invalid_users",
                "Entries of the users document rejected by validation.",
            ),
            inbounds: Arc::default(),
            tunnels: Arc::default(),
        }
    }

    pub fn set_users(&self, tunnel: &TunnelId, inbound: &str, desired: usize, current: usize) {
        self.desired
            .with_label_values(&[tunnel.as_str(), inbound])
            .set(desired as f64);
        self.set_applied(tunnel, inbound, current);
    }

    pub fn set_applied(&self, tunnel: &TunnelId, inbound: &str, users: usize) {
        self.applied
            .with_label_values(&[tunnel.as_str(), inbound])
            .set(users as f64);
        let mut known = self.inbounds.lock().unwrap_or_else(|p| p.into_inner());
        known.insert((tunnel.to_string(), inbound.to_owned()));
    }

    pub fn set_drift(&self, tunnel: &TunnelId, inbound: &str, users: usize) {
        self.drift
            .with_label_values(&[tunnel.as_str(), inbound])
            .set(users as f64);
        self.known(tunnel, inbound);
    }

    pub fn set_cannot_hold(&self, tunnel: &TunnelId, inbound: &str) {
        self.cannot_hold
            .with_label_values(&[tunnel.as_str(), inbound])
            .set(1.0);
        self.known(tunnel, inbound);
    }

    fn known(&self, tunnel: &TunnelId, inbound: &str) {
        let mut known = self.inbounds.lock().unwrap_or_else(|p| p.into_inner());
        known.insert((tunnel.to_string(), inbound.to_owned()));
    }

    pub fn count_op(&self, tunnel: &TunnelId, op: &str, result: &str) {
        self.operations
            .with_label_values(&[tunnel.as_str(), op, result])
            .inc();
    }

    pub fn observe_duration(&self, took: Duration) {
        self.duration.observe(took.as_secs_f64());
    }

    pub fn set_api_up(&self, tunnel: &TunnelId, up: bool) {
        // Every operation series of a synced tunnel exists from its first round, at 0, so that
        // rate() and increase() see the first error (a series born at 1 has no increase).
        for op in ["add", "remove"] {
            for result in ["ok", "error", "refused"] {
                self.operations
                    .with_label_values(&[tunnel.as_str(), op, result]);
            }
        }
        self.api_up
            .with_label_values(&[tunnel.as_str()])
            .set(if up { 1.0 } else { 0.0 });
        self.tunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tunnel.to_string());
    }

    pub fn record_success(&self, tunnel: &TunnelId, guard_tripped: bool) {
        let now = UNIX_EPOCH.elapsed().unwrap_or_default().as_secs_f64();
        self.last_success
            .with_label_values(&[tunnel.as_str()])
            .set(now);
        self.guard_tripped
            .with_label_values(&[tunnel.as_str()])
            .set(if guard_tripped { 1.0 } else { 0.0 });
    }

    /// A full round of `tunnel` ended (see [`super::quiet`]).
    pub fn record_full(&self, tunnel: &TunnelId) {
        let now = UNIX_EPOCH.elapsed().unwrap_or_default().as_secs_f64();
        self.last_full
            .with_label_values(&[tunnel.as_str()])
            .set(now);
    }

    /// Drops every series of tunnels not in `alive`.
    pub fn retain(&self, alive: &[TunnelId]) {
        let alive: std::collections::HashSet<&str> = alive.iter().map(TunnelId::as_str).collect();
        let is_alive = |t: &str| alive.contains(t);
        let mut inbounds = self.inbounds.lock().unwrap_or_else(|p| p.into_inner());
        inbounds.retain(|(t, i)| {
            let keep = is_alive(t);
            if !keep {
                let _ = self.desired.remove_label_values(&[t, i]);
                let _ = self.applied.remove_label_values(&[t, i]);
                let _ = self.drift.remove_label_values(&[t, i]);
                let _ = self.cannot_hold.remove_label_values(&[t, i]);
            }
            keep
        });
        let mut tunnels = self.tunnels.lock().unwrap_or_else(|p| p.into_inner());
        tunnels.retain(|t| {
            let keep = is_alive(t);
            if !keep {
                for vec in [
                    &self.last_success,
                    &self.last_full,
                    &self.guard_tripped,
                    &self.api_up,
                ] {
                    let _ = vec.remove_label_values(&[t]);
                }
                for op in ["add", "remove"] {
                    for result in ["ok", "error", "refused"] {
                        let _ = self.operations.remove_label_values(&[t, op, result]);
                    }
                }
            }
            keep
        });
    }
}

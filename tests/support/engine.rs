//! The user-sync engine as the daemon builds it for one tunnel, for the proofs that drive it
//! directly against a real core (no systemd): flavour detected, 4 calls in flight, a 5 s call
//! timeout, the default removal guard, and a registry of its own.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use xray_warden::config::Config;
use xray_warden::usersync::clock::CoreClock;
use xray_warden::usersync::engine::{Engine, Settings};
use xray_warden::usersync::metrics::SyncMetrics;

/// An engine keeping its records in `state_dir`, told core start times by `clock`.
pub fn engine(state_dir: &Path, clock: Arc<dyn CoreClock>) -> (Engine, prometheus::Registry) {
    let mut flavours = Config::default().tunnels;
    flavours.flavour = None;
    let settings = Settings {
        max_remove_fraction: 0.5,
        concurrency: 4,
        call_timeout: Duration::from_secs(5),
        flavours,
        state_dir: state_dir.to_owned(),
    };
    let registry = prometheus::Registry::new();
    let engine = Engine::new(settings, SyncMetrics::new(&registry), clock);
    (engine, registry)
}

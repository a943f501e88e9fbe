//! Prometheus exposition: an owned registry whose collectors read the snapshot at scrape time,
//! so a scrape makes no D-Bus call and a vanished unit's series vanish with it.
//!
//! Every family is documented in docs/metrics.md.

mod exporter;
mod family;
mod tunnels;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};

use crate::state::{SharedState, Snapshot};
use family::Spec;

/// The registry behind `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    pub fn new(state: SharedState) -> Self {
        let registry = Registry::new();
        let tunnels = SnapshotCollector::new(state.clone(), &tunnels::SPECS, tunnels::build);
        let exporter = SnapshotCollector::new(state, &exporter::SPECS, exporter::build);
        for collector in [tunnels, exporter] {
            registry
                .register(Box::new(collector))
                .expect("each collector registers once, with valid static specs");
        }
        Self { registry }
    }

    /// Renders every family in the Prometheus text format.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let families = self.registry.gather();
        let mut buf = Vec::with_capacity(64 * 1024);
        TextEncoder::new().encode(&families, &mut buf)?;
        Ok(buf)
    }
}

/// A collector that builds its families from the snapshot at scrape time.
struct SnapshotCollector {
    state: SharedState,
    descs: Vec<Desc>,
    build: fn(&Snapshot) -> Vec<MetricFamily>,
}

impl SnapshotCollector {
    fn new(state: SharedState, specs: &[Spec], build: fn(&Snapshot) -> Vec<MetricFamily>) -> Self {
        let descs = specs.iter().map(Spec::desc).collect();
        Self {
            state,
            descs,
            build,
        }
    }
}

impl Collector for SnapshotCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        (self.build)(&self.state.read())
    }
}

#[cfg(test)]
mod tests;

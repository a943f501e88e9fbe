//! Prometheus exposition, read from the snapshot at scrape time, so a scrape makes no D-Bus call
//! and a vanished unit's series vanish with it.
//!
//! The warden's own families go through an owned `prometheus::Registry`; the per-tunnel families,
//! whose number grows with the node, are written straight into the body ([`text`]).
//!
//! Every family is documented in docs/metrics.md.

mod exporter;
mod family;
mod text;
mod tunnels;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Registry, TextEncoder};

use crate::state::{SharedState, Snapshot};
use family::Spec;

/// The registry behind `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    state: SharedState,
    /// Size of the last body, to allocate the next one at once.
    last_len: Arc<AtomicUsize>,
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    pub fn new(state: SharedState) -> Self {
        let registry = Registry::new();
        let exporter = SnapshotCollector::new(state.clone(), &exporter::SPECS, exporter::build);
        registry
            .register(Box::new(exporter))
            .expect("the collector registers once, with valid static specs");
        Self {
            registry,
            state,
            last_len: Arc::default(),
        }
    }

    /// The registry other parts of the warden register their own metrics in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every family in the Prometheus text format.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut body = String::with_capacity(self.last_len.load(Ordering::Relaxed) + 4096);
        TextEncoder::new().encode_utf8(&self.registry.gather(), &mut body)?;
        tunnels::write(&self.state.read(), &mut text::TextWriter::new(&mut body));
        self.last_len.store(body.len(), Ordering::Relaxed);
        Ok(body.into_bytes())
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

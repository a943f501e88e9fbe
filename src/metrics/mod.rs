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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// The per-tunnel series as rendered at a snapshot version.
    tunnels: Arc<Mutex<Option<Rendered>>>,
}

/// The per-tunnel part of a body and the snapshot version it was rendered at.
struct Rendered {
    version: u64,
    text: String,
}

/// How long the pre-rendering waits after an update for the next one (a pass publishes in a
/// burst) before rendering.
const SETTLE: Duration = Duration::from_millis(200);

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
            tunnels: Arc::default(),
        }
    }

    /// The registry other parts of the warden register their own metrics in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every family in the Prometheus text format. The warden's own families are
    /// rendered afresh; the per-tunnel ones come from the pre-rendering while the snapshot has
    /// not changed since, so a scrape mostly copies bytes ([`Metrics::prerender`]).
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut body = String::with_capacity(self.last_len.load(Ordering::Relaxed) + 4096);
        TextEncoder::new().encode_utf8(&self.registry.gather(), &mut body)?;
        self.with_tunnels(|text| body.push_str(text));
        self.last_len.store(body.len(), Ordering::Relaxed);
        Ok(body.into_bytes())
    }

    /// Renders the per-tunnel series now unless the last rendering is of the current snapshot.
    pub fn refresh_tunnels(&self) {
        self.with_tunnels(|_| ());
    }

    /// Runs `use_text` on the per-tunnel series of the current snapshot, rendering them first
    /// if the kept rendering is of an older one.
    fn with_tunnels(&self, use_text: impl FnOnce(&str)) {
        let mut kept = self
            .tunnels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let snapshot = self.state.read();
        if kept.as_ref().is_none_or(|r| r.version != snapshot.version) {
            let capacity = kept.as_ref().map_or(0, |r| r.text.len());
            let mut text = String::with_capacity(capacity + 4096);
            tunnels::write(&snapshot, &mut text::TextWriter::new(&mut text));
            *kept = Some(Rendered {
                version: snapshot.version,
                text,
            });
        }
        drop(snapshot);
        use_text(&kept.as_ref().expect("rendered above").text);
    }

    /// Renders the per-tunnel series after each change of the snapshot, once it settles, so
    /// that scrapes find them ready. Runs until `shutdown`. One rendering per sampler pass in
    /// a steady fleet: the health pass and the traffic poll leave the version alone when they
    /// find nothing new.
    pub async fn prerender(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.state.changed() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SETTLE) => {}
            }
            let metrics = self.clone();
            let _ = tokio::task::spawn_blocking(move || metrics.refresh_tunnels()).await;
        }
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

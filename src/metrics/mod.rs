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

use axum::body::Bytes;
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

/// The per-tunnel parts of a body and the snapshot versions they were rendered at.
#[derive(Clone)]
struct Rendered {
    /// [`Snapshot::status_version`] of `status`.
    status_version: u64,
    /// The families of the units' status, health checks and orphans.
    status: Bytes,
    /// [`Snapshot::version`] of `samples`.
    version: u64,
    /// The families of the sampler's and the traffic poll's readings.
    samples: Bytes,
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

    /// Renders every family in the Prometheus text format, in one buffer.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        Ok(self.render_parts()?.concat())
    }

    /// The body in three parts: the warden's own families, rendered afresh, and the per-tunnel
    /// ones of the units' status and of the readings, each shared with the pre-rendering while
    /// what it is drawn from has not changed since (so a scrape copies nothing:
    /// [`Metrics::prerender`]). Each family's lines are in one part.
    pub fn render_parts(&self) -> Result<[Bytes; 3], prometheus::Error> {
        let mut own = String::with_capacity(self.last_len.load(Ordering::Relaxed) + 1024);
        TextEncoder::new().encode_utf8(&self.registry.gather(), &mut own)?;
        self.last_len.store(own.len(), Ordering::Relaxed);
        let tunnels = self.tunnels_text();
        Ok([Bytes::from(own), tunnels.status, tunnels.samples])
    }

    /// Renders the per-tunnel series now unless the last rendering is of the current snapshot.
    pub fn refresh_tunnels(&self) {
        self.tunnels_text();
    }

    /// The per-tunnel series of the current snapshot: each part rendered first if the kept
    /// one is of an older snapshot.
    fn tunnels_text(&self) -> Rendered {
        let mut kept = self
            .tunnels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let snapshot = self.state.read();
        if let Some(r) = kept.as_ref().filter(|r| r.version == snapshot.version) {
            return r.clone();
        }
        let render = |before: Option<&Bytes>, write: fn(&Snapshot, &mut text::TextWriter<'_>)| {
            let mut text = String::with_capacity(before.map_or(0, Bytes::len) + 4096);
            write(&snapshot, &mut text::TextWriter::new(&mut text));
            Bytes::from(text)
        };
        let status = match kept.as_ref() {
            Some(r) if r.status_version == snapshot.status_version => r.status.clone(),
            before => render(before.map(|r| &r.status), tunnels::write_status),
        };
        let rendered = Rendered {
            status_version: snapshot.status_version,
            status,
            version: snapshot.version,
            samples: render(kept.as_ref().map(|r| &r.samples), tunnels::write_samples),
        };
        *kept = Some(rendered.clone());
        rendered
    }

    /// Renders the per-tunnel series after each change of the snapshot, once it settles, so
    /// that scrapes find them ready. Runs until `shutdown`. In a steady fleet, one rendering
    /// of the readings' families per sampler pass (and traffic poll), and none of the status
    /// families: the health pass leaves the versions alone when it finds nothing new.
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

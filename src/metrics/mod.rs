//! Prometheus exposition: an owned registry whose collectors read the snapshot at scrape time,
//! so a scrape makes no D-Bus call and a vanished unit's series vanish with it.
//!
//! Every family is documented in docs/metrics.md.

mod exporter;
mod family;
mod tunnels;

use prometheus::{Encoder, Registry, TextEncoder};

use crate::state::SharedState;

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
        registry
            .register(Box::new(tunnels::TunnelCollector::new(state.clone())))
            .expect("tunnel collector registers once");
        registry
            .register(Box::new(exporter::ExporterCollector::new(state)))
            .expect("exporter collector registers once");
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

#[cfg(test)]
mod tests;

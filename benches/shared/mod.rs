//! Helpers the sandbox benchmarks share (`scrape` and `steady`): the fleet of bench units, the
//! CPU and RSS of host processes, node_exporter run inside the sandbox, and report formatting.
//! Each bench uses part of them; the rest would warn as dead code there.
#![allow(dead_code)]

pub mod fleet;
pub mod node_exporter;
pub mod procstat;

/// A latency or CPU figure in ms, with the precision its size deserves.
pub fn ms(value: f64) -> String {
    if value >= 10.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.3} ms")
    }
}

/// `<= LIMIT UNIT PASS|MISS`: a mark beside a figure, never a failure.
pub fn target(value: f64, limit: f64, unit: &str) -> String {
    let mark = if value <= limit { "PASS" } else { "MISS" };
    format!("<= {limit} {unit} {mark}")
}

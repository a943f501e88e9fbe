//! Helpers shared by the integration tests (`mod support;` in each test crate).

// Each test crate uses only part of the helpers; the rest would warn as dead code there.
#![allow(dead_code, unused_imports)]

pub mod cores;
pub mod dashboards;
pub mod engine;
pub mod manual;
pub mod node;
pub mod prom;
pub mod sandbox;
pub mod signal;
pub mod warden;

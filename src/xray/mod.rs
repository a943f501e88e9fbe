//! The gRPC client of a core's management API (Xray, or V2Ray 4.34): add and remove inbound
//! users, list them where the core can, read traffic counters.
//!
//! The two cores share message layouts under different package names; the messages are the
//! project's own, in `proto/` (written from shared/xray-api-facts.md, compiled by build.rs),
//! and only method paths and type strings differ per [`Flavour`](crate::domain::Flavour).
//! Generated types stay in this module; callers see domain types and [`ApiError`].
//!
//! Never crash the core: a malformed AlterInbound or an account that does not fit the inbound
//! panics the core, and it has no panic recovery (facts P1). Such requests are refused here
//! ([`ApiError::Refused`]): from the request alone before anything is sent, and, before each
//! add, from the core's own answer to a request that changes nothing and names the proxy
//! serving the inbound (see [`ApiClient::add_user`]).

mod client;
mod detect;
mod error;
mod inbound;
mod online;
mod ss2022;
mod types;
mod wire;

#[allow(clippy::all, clippy::pedantic)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/xraywarden.api.rs"));
}

pub use client::{ApiClient, Detected};
pub use error::ApiError;

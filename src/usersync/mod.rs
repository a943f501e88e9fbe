//! Keeps each tunnel's users in sync with the desired set, through the core's gRPC API.

pub mod plan;

//! Randomised histories against the real implementation (prune_model) and heartbeats. Kept apart: both set CAIRN_HEARTBEAT_SECS for the whole process.
//!
//! One test binary for several files, so CI links fewer binaries.

#[path = "../common/mod.rs"]
mod common;

mod heartbeat;
mod model;

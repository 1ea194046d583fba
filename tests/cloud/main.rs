//! The same scenarios on every object store (local, S3 via moto, Azure via Azurite, GCS via a fake).
//!
//! One test binary for several files, so CI links fewer binaries.

#[path = "../common/mod.rs"]
mod common;

mod fleet;
mod objectlock;
mod putonly;
mod s3;
mod stores;

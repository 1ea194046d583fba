//! The repository: opening and creating one, keys, locks, the in-memory master
//! index and the blob saver that fills and uploads packs. It builds on `storage`
//! and `format` and never imports an operation or the CLI.

pub mod blobs;
pub mod cache;
pub mod gc;
pub mod index;
pub mod ledger;
pub mod lock;
mod repository;
pub mod saver;
pub mod session;
pub mod unlock;

pub use repository::*;

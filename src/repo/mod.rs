//! The repository: opening and creating one, keys, locks, the in-memory master
//! index, the blob saver that fills and uploads packs, the blob reader that
//! reads them back ([`blobs`]) and the tree view over snapshots ([`tree`]).
//! It builds on `storage` and `format` and never imports an operation or the
//! CLI.

pub mod blobs;
pub mod cache;
pub mod gc;
pub mod index;
mod indexed;
pub mod ledger;
pub mod lock;
mod repository;
pub mod saver;
pub mod session;
pub mod tree;
pub mod unlock;

pub use indexed::IndexedRepository;
pub use repository::*;

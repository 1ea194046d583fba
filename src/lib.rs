//! cairn: a content-addressed, deduplicating, encrypted backup engine.
//!
//! Layers, each using only those below it:
//! - pure format and crypto: [`id`], [`crypto`], [`chunker`], [`blob`], [`pack`],
//!   [`format`], [`index`], [`tree`], [`snapshot`]
//! - storage: [`backend`] (the only module that knows object_store and tokio)
//! - the repository: [`repo`], [`saver`], [`lock`]
//! - operations: [`archiver`] (backup), [`restorer`] (restore, dump), [`checker`],
//!   [`stats`]
//!
//! The on-disk format is specified in `repo-format.md`.

pub mod archiver;
pub mod backend;
pub mod blob;
pub mod checker;
pub mod chunker;
pub mod crypto;
pub mod error;
pub mod forget;
pub mod format;
pub mod id;
pub mod index;
pub mod lock;
pub mod pack;
pub mod repo;
pub mod restorer;
pub mod saver;
pub mod snapshot;
pub mod stats;
pub mod tree;

pub use backend::Backend;
pub use error::{Error, Result};
pub use repo::{InitOptions, Repository, SnapshotFilter};

//! cairn: a content-addressed, deduplicating, encrypted backup engine.
//!
//! The source tree is layered; each folder is one layer:
//!
//! | layer | folder | what lives there |
//! | --- | --- | --- |
//! | 0 | [`format`] | pure code: typed IDs, crypto, chunker, the byte formats of every stored object |
//! | 1 | [`error`] | the library's error type (wraps the format errors) |
//! | 2 | [`storage`] | the object_store backend: the only place that knows object_store and tokio |
//! | 3 | [`repo`] | open/init, keys, locks, the master index, the blob saver, the blob reader ([`repo::blobs`]) and the tree view ([`repo::tree`]) |
//! | 3 | [`source`] | where backups read from: the one `Source` type (paths, stdin, dump commands), excludes, file metadata as nodes |
//! | 4 | [`ops`] | the operations, one module a verb: backup, restore, check, forget, stats |
//! | 5 | `cli/` (in the binary) | argument parsing and printing |
//!
//! **The rule: a file may import from its own layer and the layers below it,
//! never from a layer above.** `tests/engine/layering.rs` reads every `use crate::`
//! path in `src/` and fails when the rule is broken.
//!
//! The on-disk format is specified in `repo-format.md`.

pub mod error;
pub mod format;
pub mod ops;
pub mod repo;
pub mod source;
pub mod storage;

pub use error::{Error, Result};
pub use repo::{InitOptions, Repository, SnapshotFilter};
pub use storage::Backend;

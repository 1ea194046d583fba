//! cairn: a content-addressed, deduplicating, encrypted backup engine.
//!
//! The source tree is layered; each folder is one layer:
//!
//! | layer | folder | what lives there |
//! | --- | --- | --- |
//! | 0 | `format` | pure code: typed IDs, crypto, chunker, the byte formats of every stored object |
//! | 1 | `error` | the library's error type (wraps the format errors) |
//! | 2 | `storage` | the object_store backend: the only place that knows object_store and tokio |
//! | 3 | `repo` | open/init, keys, locks, the master index, the blob saver, the blob reader (`repo::blobs`) and the tree view (`repo::tree`) |
//! | 3 | `database` | database engines: dump with a record of tables, row counts and schema fingerprints; load; inspect to verify |
//! | 3 | `source` | where backups read from: the one `Source` type (paths, stdin, dump commands), excludes, file metadata as nodes |
//! | 4 | `ops` | the operations, one module a verb: backup, restore, check, copy, drill, forget, health, prune, stats, schedule |
//! | 5 | `cli/` (crate-private; `src/main.rs` only calls its entry point) | argument parsing and printing |
//!
//! **The rule: a file may import from its own layer and the layers below it,
//! never from a layer above.** `tests/engine/layering.rs` reads every `use crate::`
//! path in `src/` and fails when the rule is broken.
//!
//! The on-disk format is specified in `repo-format.md`.
//!
//! # Embedding cairn
//!
//! A program that backs up with cairn needs only what the crate root
//! re-exports: open or create a [`Repository`] on a [`Backend`], back up a
//! [`Source`] with [`backup`], open it for reading ([`Repository::into_indexed`])
//! and [`restore`], [`check`], apply a retention [`Policy`] with
//! [`forget_plan`], [`prune`], [`copy`] and [`drill`]. Errors are one
//! [`Error`] enum (non-exhaustive). That is the whole documented API.
//!
//! The layer modules are hidden from the documentation and are not a stable
//! interface. They stay reachable, rather than crate-private, for one reason:
//! the integration tests in `tests/` (fault-injecting stores, the prune
//! schedules, the format fuzzers) drive the engine's layers directly, and an
//! integration test sees only what a dependent crate sees.

#[doc(hidden)]
pub mod database;
#[doc(hidden)]
pub mod error;
#[doc(hidden)]
pub mod format;
#[doc(hidden)]
pub mod ops;
#[doc(hidden)]
pub mod repo;
#[doc(hidden)]
pub mod source;
#[doc(hidden)]
pub mod storage;

mod cli;

pub use error::{Error, Result};
pub use format::crypto::KdfParams;
pub use format::id::{BlobId, SnapshotId};
pub use format::snapshot::Snapshot;
pub use ops::backup::{backup, BackupOptions, BackupOutcome, NoProgress};
pub use ops::check::{check, CheckReport, ReadData};
pub use ops::copy::{copy, CopyOutcome};
pub use ops::drill::{drill, DrillOptions, DrillReport};
pub use ops::forget::{plan as forget_plan, Policy};
pub use ops::prune::{prune, PruneOptions, PruneOutcome};
pub use ops::restore::{restore, RestoreOptions, RestoreOutcome};
pub use repo::{IndexedRepository, InitOptions, Repository, SnapshotFilter};
pub use source::Source;
pub use storage::Backend;

/// The `cairn` command line, for `src/main.rs`: parses the process's
/// arguments, runs the command and returns the exit code. Not part of the API.
#[doc(hidden)]
pub fn cli_main() -> i32 {
    cli::main()
}

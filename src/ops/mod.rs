//! The operations, one module a verb: backup, restore (and dump), check, forget,
//! prune, stats, schedule (jobs from the config file) (and `reach`, the tree walk check and prune share). Each uses the repository below it; none imports another layer above,
//! and the CLI is the only caller that prints.

pub mod backup;
pub mod check;
pub mod copy;
pub mod drill;
pub mod dump;
pub mod find;
pub mod forget;
pub mod group;
pub mod health;
pub mod mount;
pub mod pitr;
pub mod prune;
pub mod reach;
pub mod repair;
pub mod restore;
pub mod restore_db;
pub mod rewrite;
pub mod rollback;
pub mod schedule;
pub mod stats;
pub mod tag;
pub mod wal;

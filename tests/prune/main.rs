//! Prune beside running backups: black-box commands, readers during a prune, and forced schedules.
//!
//! One test binary for several files, so CI links fewer binaries.

#[path = "../common/mod.rs"]
mod common;

mod commands;
mod readers;
mod schedules;

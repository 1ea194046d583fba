//! Command-line tests: the binary driven through assert_cmd, as users run it.
//!
//! One test binary for several files, so CI links fewer binaries.

#[path = "../common/mod.rs"]
mod common;

mod alerts;
mod basic;
mod cache;
mod copy;
mod databases;
mod errors;
mod hardening;
mod health;
mod mount;
mod operations;
mod pitr;
mod restore;
mod restore_safety;
mod robustness;
mod rollback;
mod schedule;
mod stdin;
mod usage;

//! Library tests: the engine driven directly, fault-injecting stores, parser fuzzing, and the layering rule.
//!
//! One test binary for several files, so CI links fewer binaries.

#[path = "../common/mod.rs"]
mod common;

mod faults;
mod fuzz_parsers;
mod layering;
mod library;
mod locks;

//! The corrected protocol (`Rules::new()`): every reachable state is explored
//! (no state or depth bound) and no invariant is violated.
//!
//! The default tests check configurations that finish in CI within seconds;
//! the larger ones are `#[ignore]`d: `cargo test -p gc-model -- --ignored NAME`.
//! Measured on the 2-core machine (2 checker threads; release build of the
//! `explore` example, `cargo run --release -p gc-model --example explore --
//! new W C`; the tests' opt-level-3 dev build is about as fast), with dead-value
//! normalisation, symmetry and partial-order reduction (crate docs):
//! - 1 writer, 2 collectors: 157,484 states, max depth 51, 0.7 s (16 MB);
//! - 2 writers, 1 collector: 30,435 states, max depth 35, 0.1 s;
//! - 2 writers, 2 collectors: 6,747,568 states, max depth 59, 40–58 s
//!   (0.5 GB) (ignored);
//! - 1 writer, 3 collectors: 18,036,962 states, max depth 75, 157 s (1.8 GB)
//!   (ignored);
//! - 2 writers, 3 collectors: not finished; at ~40x the 1x3 count (the ratio
//!   of 2x2 to 1x2) it would need ~800M states and ~60 GB (ignored).

mod common;

use common::explore_all;
use gc_model::{GcModel, Rules};

fn new(writers: usize, collectors: usize) -> GcModel {
    GcModel::new(Rules::new(), writers, collectors)
}

#[test]
fn new_rules_one_writer_two_collectors_is_safe() {
    explore_all(new(1, 2));
}

#[test]
fn new_rules_two_writers_one_collector_is_safe() {
    explore_all(new(2, 1));
}

/// Crash as its own action adds no store state (it equals a pause forever);
/// checked here once on a small configuration.
#[test]
fn new_rules_with_crashes_is_safe() {
    let mut m = new(1, 2);
    m.crash = true;
    explore_all(m);
}

#[test]
#[ignore = "2.5 minutes, 2 GB: run with --ignored"]
fn new_rules_one_writer_three_collectors_is_safe() {
    explore_all(new(1, 3));
}

#[test]
#[ignore = "minutes: run with --ignored"]
fn new_rules_two_writers_two_collectors_is_safe() {
    explore_all(new(2, 2));
}

#[test]
#[ignore = "not finished: an estimated 800M states, ~60 GB"]
fn new_rules_two_writers_three_collectors_is_safe() {
    explore_all(new(2, 3));
}

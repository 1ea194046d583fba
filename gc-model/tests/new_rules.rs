//! The corrected protocol (`Rules::new()`): every reachable state is explored
//! (no state or depth bound) and no invariant is violated.
//!
//! The default tests check configurations that finish in CI within seconds;
//! the larger ones are `#[ignore]`d: `cargo test -p gc-model -- --ignored NAME`.
//! Measured on the 2-core machine (dev profile, opt-level 3 for this crate):
//! - 1 writer, 2 collectors: 296,672 states, 2 s; with crashes 540,803, 4 s;
//! - 2 writers, 1 collector: 62,111 states, 0.4 s;
//! - 2 writers, 2 collectors: 21,821,611 states, 185 s (ignored);
//! - 1 writer, 3 collectors: not finished (15.8M states at depth 37 after
//!   330 s on one thread, still growing); 2 writers, 3 collectors likewise.

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
#[ignore = "not finished in our runs: tens of GiB"]
fn new_rules_one_writer_three_collectors_is_safe() {
    explore_all(new(1, 3));
}

#[test]
#[ignore = "minutes: run with --ignored"]
fn new_rules_two_writers_two_collectors_is_safe() {
    explore_all(new(2, 2));
}

#[test]
#[ignore = "the full configuration: hours and tens of GiB"]
fn new_rules_two_writers_three_collectors_is_safe() {
    explore_all(new(2, 3));
}

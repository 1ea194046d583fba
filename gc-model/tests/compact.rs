//! The compact explorer (`src/compact.rs`), used for 2 writers × 3
//! collectors, visits exactly the states stateright's checker visits, and
//! finds the old rules' violations with a trace that replays.

mod common;

use common::{holds, replay, threads};
use gc_model::{compact, GcModel, Rules, INVARIANTS};
use stateright::{Checker, Model};

/// `same_count`: stateright stops once every property has a discovery,
/// which the old rules reach before the end.
fn compare(model: GcModel, same_count: bool) {
    let label = format!(
        "{:?} w={} c={}",
        model.rules, model.writers, model.collectors
    );
    let bfs = model
        .clone()
        .checker()
        .threads(threads())
        .spawn_bfs()
        .join();
    let dfs = compact::explore(&model, &compact::Options::bits(22), |_| {})
        .expect("the table holds the states");
    if same_count {
        assert_eq!(dfs.unique as usize, bfs.unique_state_count(), "{label}");
    }
    let bfs_found: Vec<&str> = INVARIANTS
        .iter()
        .copied()
        .filter(|n| bfs.discovery(n).is_some())
        .collect();
    let mut dfs_found: Vec<&str> = dfs.violations.iter().map(|(n, _)| *n).collect();
    dfs_found.sort_by_key(|n| INVARIANTS.iter().position(|i| i == n));
    assert_eq!(dfs_found, bfs_found, "{label}");
}

#[test]
fn visits_the_same_states_as_stateright_new_rules() {
    compare(GcModel::new(Rules::new(), 1, 2), true);
    compare(GcModel::new(Rules::new(), 2, 1), true);
}

#[test]
fn finds_the_same_violations_as_stateright_old_rules() {
    compare(GcModel::new(Rules::old(), 1, 2), false);
}

/// Its traces are real: each violation replays from the initial state
/// (symmetry renames actors along the way, so the trace is replayed on a
/// model without symmetry, where every canonical step is also a step).
#[test]
fn old_rules_violations_come_with_a_trace_that_replays() {
    let mut model = GcModel::new(Rules::old(), 1, 2);
    model.symmetry = false;
    let report = compact::explore(&model, &compact::Options::bits(22), |_| {}).expect("fits");
    assert!(!report.violations.is_empty(), "the old rules lose data");
    for (name, path) in &report.violations {
        let trace = replay(model.clone(), path);
        assert!(
            !holds(&model, name, trace.last()),
            "{name}: the trace ends in a violation"
        );
    }
}

#[test]
fn a_full_table_stops_the_search_instead_of_looping() {
    let model = GcModel::new(Rules::new(), 1, 2);
    match compact::explore(
        &model,
        &compact::Options {
            max_load: 0.5,
            ..compact::Options::bits(12)
        },
        |_| {},
    ) {
        Err(compact::Stopped::TableFull { unique, slots }) => {
            assert_eq!(slots, 4096);
            assert!(unique > 2048);
        }
        Ok(r) => panic!("157,484 states cannot fit 4,096 slots, got {}", r.unique),
    }
}

/// Threads sharing the table visit the same states as one thread, and
/// their violations' traces, stitched from handed-over work, replay.
#[test]
fn threads_sharing_the_table_visit_the_same_states() {
    let threads = compact::Options {
        threads: 3,
        ..compact::Options::bits(22)
    };
    let model = GcModel::new(Rules::new(), 1, 2);
    let one = compact::explore(&model, &compact::Options::bits(22), |_| {}).expect("fits");
    let many = compact::explore(&model, &threads, |_| {}).expect("fits");
    assert_eq!(many.unique, one.unique);
    assert_eq!(many.generated, one.generated);
    assert!(many.violations.is_empty());

    let mut old = GcModel::new(Rules::old(), 1, 2);
    old.symmetry = false;
    let report = compact::explore(&old, &threads, |_| {}).expect("fits");
    assert!(!report.violations.is_empty(), "the old rules lose data");
    for (name, path) in &report.violations {
        let trace = replay(old.clone(), path);
        assert!(
            !holds(&old, name, trace.last()),
            "{name}: the trace replays"
        );
    }
}

//! Helpers shared by the model-check tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gc_model::{Action, GcModel, State, EX_COLLECTOR_FENCED, EX_TWO_GENERATIONS, INVARIANTS};
use stateright::{Checker, HasDiscoveries, Model};

/// Threads for the checker: the CI machine has two cores.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// A counterexample: the actions taken and the states before and after them
/// (`states.len() == actions.len() + 1`; the last state violates the property).
pub struct Trace {
    pub actions: Vec<Action>,
    pub states: Vec<State>,
}

impl Trace {
    /// Whether some step of the trace has the given step name.
    pub fn has_step(&self, name: &str) -> bool {
        self.actions.iter().any(|a| match a {
            Action::Collector(_, n, ..) | Action::Writer(_, n, _) => *n == name,
            Action::Crash(_) => false,
        })
    }

    pub fn last(&self) -> &State {
        self.states.last().expect("a trace has a state")
    }
}

/// Breadth-first search until `property` is violated: the shortest
/// counterexample (no symmetry, so actor numbers stay put along the path).
pub fn shortest_violation(mut model: GcModel, property: &'static str) -> Trace {
    model.symmetry = false;
    let label = format!("w={} c={}", model.writers, model.collectors);
    let t = Instant::now();
    let checker = model
        .checker()
        .threads(threads())
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
        .spawn_bfs()
        .join();
    let path = checker
        .discovery(property)
        .unwrap_or_else(|| panic!("no violation of {property:?} ({label})"));
    let (states, actions): (Vec<State>, Vec<Option<Action>>) = path.into_vec().into_iter().unzip();
    let actions: Vec<Action> = actions.into_iter().flatten().collect();
    eprintln!(
        "{property} ({label}): {} steps, found after {} unique states in {:.1?}",
        actions.len(),
        checker.unique_state_count(),
        t.elapsed()
    );
    for (i, a) in actions.iter().enumerate() {
        eprintln!("  {:2}. {a:?}", i + 1);
    }
    Trace { actions, states }
}

/// Replays `actions` from the initial state (no symmetry), failing on a step
/// that is not enabled.
pub fn replay(mut model: GcModel, actions: &[Action]) -> Trace {
    model.symmetry = false;
    let mut states = model.init_states();
    for a in actions {
        let last = states.last().expect("a state");
        let next = model
            .next_state(last, a.clone())
            .unwrap_or_else(|| panic!("{a:?} is not enabled in {last:#?}"));
        states.push(next);
    }
    Trace {
        actions: actions.to_vec(),
        states,
    }
}

/// Whether `property` holds in `state`.
pub fn holds(model: &GcModel, property: &'static str, state: &State) -> bool {
    (model.property(property).condition)(model, state)
}

/// Explores the whole state space and asserts that no property is violated.
/// Returns (unique states, time).
pub fn explore_all(model: GcModel) -> (usize, Duration) {
    let label = format!(
        "writers={} collectors={} symmetry={} forget={} crash={}",
        model.writers, model.collectors, model.symmetry, model.forget, model.crash
    );
    let collectors = model.collectors;
    let t = Instant::now();
    let checker = model.checker().threads(threads()).spawn_bfs().join();
    let elapsed = t.elapsed();
    eprintln!(
        "complete exploration, {label}: {} unique states ({} generated), max depth {}, {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        elapsed
    );
    assert!(checker.is_done(), "exploration did not finish ({label})");
    let found = checker.discoveries();
    for name in INVARIANTS {
        if let Some(path) = found.get(name) {
            panic!("{name} violated ({label}):\n{path}");
        }
    }
    for p in checker.model().properties() {
        // Two generations, or a fenced collector, need a second collector.
        let needs_two = p.name == EX_TWO_GENERATIONS || p.name == EX_COLLECTOR_FENCED;
        let skipped = INVARIANTS.contains(&p.name) || (needs_two && collectors < 2);
        if !skipped {
            assert!(
                found.contains_key(p.name),
                "never reached: {} ({label})",
                p.name
            );
        }
    }
    (checker.unique_state_count(), elapsed)
}

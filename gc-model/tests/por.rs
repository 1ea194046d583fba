//! The partial-order reduction is only as sound as the footprints it is
//! computed from (`src/por.rs`). This test checks every claim they make on
//! whole state spaces, without reduction and without symmetry, for the old
//! and the new rules (the old rules reach violating states, where the
//! "preserving step" claim has teeth):
//! - two steps of different actors whose footprints do not conflict commute:
//!   each stays enabled, with the same choices, after the other, and both
//!   orders reach the same state;
//! - an actor's current step, and every future its steps lead to, lie within
//!   the future footprint announced now, and another actor's step does not
//!   change that future;
//! - a step announced as preserving (taken without `forget`) never turns a
//!   state that violates an invariant into one that satisfies it.

mod common;

use std::collections::{HashSet, VecDeque};

use common::holds;
use gc_model::{Action, GcModel, Rules, State, INVARIANTS};
use stateright::Model;

fn moves_of(m: &GcModel, s: &State, a: usize) -> Vec<(Action, State)> {
    let mut out = Vec::new();
    m.actor_moves(s, a, &mut out);
    for (_, t) in out.iter_mut() {
        m.normalize(t);
    }
    out
}

fn forgot(a: &Action) -> u8 {
    match a {
        Action::Collector(_, _, _, f) => *f,
        _ => 0,
    }
}

fn check(mut m: GcModel) -> usize {
    m.symmetry = false;
    m.por = false;
    let actors = m.writers + m.collectors;
    let mut seen = HashSet::new();
    let mut todo = VecDeque::new();
    for s in m.init_states() {
        seen.insert(s);
        todo.push_back(s);
    }
    let mut pairs = 0usize;
    while let Some(s) = todo.pop_front() {
        let moves: Vec<Vec<(Action, State)>> = (0..actors).map(|a| moves_of(&m, &s, a)).collect();
        for a in 0..actors {
            let fut = m.future_footprint(&s, a);
            let step = m.step_footprint(&s, a);
            assert!(fut.covers(step), "step outside future: actor {a} in {s:?}");
            for (x, t) in &moves[a] {
                let next = m.future_footprint(t, a);
                assert!(fut.covers(next), "future grew: actor {a}, {x:?} in {s:?}");
                for b in (0..actors).filter(|&b| b != a) {
                    assert_eq!(
                        m.future_footprint(t, b),
                        m.future_footprint(&s, b),
                        "{x:?} changed actor {b}'s future"
                    );
                }
                if m.has_preserving_step(&s, a) && forgot(x) == 0 && !matches!(x, Action::Crash(_))
                {
                    for p in INVARIANTS {
                        assert!(
                            holds(&m, p, &s) || !holds(&m, p, t),
                            "{x:?} repairs {p} in {s:?}"
                        );
                    }
                }
            }
            for b in (a + 1..actors).filter(|&b| !step.conflicts(m.step_footprint(&s, b))) {
                for (x, sx) in &moves[a] {
                    let after_x = moves_of(&m, sx, b);
                    let labels = |v: &[(Action, State)]| -> HashSet<Action> {
                        v.iter().map(|(l, _)| l.clone()).collect()
                    };
                    assert_eq!(
                        labels(&after_x),
                        labels(&moves[b]),
                        "{x:?} changes actor {b}'s choices in {s:?}"
                    );
                    for (y, sy) in &moves[b] {
                        pairs += 1;
                        let xy = &after_x.iter().find(|(l, _)| l == y).unwrap().1;
                        let after_y = moves_of(&m, sy, a);
                        let yx = &after_y
                            .iter()
                            .find(|(l, _)| l == x)
                            .unwrap_or_else(|| panic!("{y:?} disables {x:?} in {s:?}"))
                            .1;
                        assert_eq!(xy, yx, "{x:?} and {y:?} do not commute in {s:?}");
                    }
                }
            }
        }
        for t in moves.into_iter().flatten().map(|(_, t)| t) {
            if seen.insert(t) {
                todo.push_back(t);
            }
        }
    }
    eprintln!(
        "footprints checked: {} states, {pairs} independent pairs ({:?} rules, {}x{}, crash={})",
        seen.len(),
        if m.rules == Rules::new() {
            "new"
        } else {
            "old"
        },
        m.writers,
        m.collectors,
        m.crash
    );
    seen.len()
}

#[test]
fn por_footprints_are_sound_new_rules() {
    check(GcModel::new(Rules::new(), 2, 1));
    check(GcModel::new(Rules::new(), 1, 2));
}

#[test]
#[ignore = "10 s: run with --ignored"]
fn por_footprints_are_sound_with_crashes() {
    let mut m = GcModel::new(Rules::new(), 1, 2);
    m.crash = true;
    check(m);
}

#[test]
fn por_footprints_are_sound_old_rules() {
    check(GcModel::new(Rules::old(), 2, 1));
    check(GcModel::new(Rules::old(), 1, 2));
}

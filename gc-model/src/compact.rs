//! A depth-first explorer that keeps only a 64-bit fingerprint per state.
//!
//! stateright's checkers keep, per unique state, a fingerprint, its parent's
//! fingerprint and a concurrent hash map's overhead (about 100 bytes a state
//! for this model), and the breadth-first one also keeps the whole frontier.
//! 2 writers × 3 collectors reach hundreds of millions of states, which does
//! not fit. This explorer visits the same reduced state graph (the successors
//! of a state are exactly those of [`Model::actions`] + [`Model::next_state`]:
//! the ample actor's moves when partial-order reduction finds one, else every
//! move, each made canonical), but stores only 8 bytes per state in one
//! open-addressing table, and keeps the path to the current state on its
//! stack, so a violation comes with its trace.
//!
//! Depth-first search needs no cycle proviso for the reduction here: the
//! state graph is acyclic (crate docs).
//!
//! Fingerprints are 64-bit, as in stateright: two distinct states with the
//! same fingerprint would hide the second one's future. With `n` states the
//! chance of any such collision is about `n² / 2⁶⁵` (about 2% at 10⁹ states);
//! the reports say so.

use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use stateright::{Expectation, Model};

use crate::{Action, GcModel, State};

/// What one exploration found.
#[derive(Debug, Default)]
pub struct Report {
    /// Distinct states visited (up to fingerprint collisions).
    pub unique: u64,
    /// Successors generated, counting repeats.
    pub generated: u64,
    /// The longest path on the search stack, in steps (depth-first: the
    /// path on which a state was first reached, not its shortest one).
    pub max_depth: usize,
    /// Each violated `always` property, with the actions leading to it.
    pub violations: Vec<(&'static str, Vec<Action>)>,
    /// The `sometimes` properties reached.
    pub reached: Vec<&'static str>,
    pub elapsed: Duration,
    /// Slots in the fingerprint table.
    pub table_slots: u64,
}

/// Progress, reported about every `PROGRESS_EVERY` new states.
pub struct Progress {
    pub unique: u64,
    pub generated: u64,
    pub depth: usize,
    pub max_depth: usize,
    pub elapsed: Duration,
    pub load: f64,
    /// The `always` properties violated so far (a long run shows them
    /// before it ends).
    pub violated: Vec<&'static str>,
}

const PROGRESS_EVERY: u64 = 1 << 24;

/// Why an exploration stopped early.
#[derive(Debug)]
pub enum Stopped {
    /// The table is fuller than the load limit: rerun with more bits.
    TableFull { unique: u64, slots: u64 },
}

/// Open addressing with linear probing; 0 marks an empty slot.
struct FingerprintSet {
    slots: Vec<u64>,
    mask: u64,
    shift: u32,
    len: u64,
}

impl FingerprintSet {
    fn new(bits: u32) -> FingerprintSet {
        FingerprintSet {
            // vec![0; n] is calloc'ed: pages are touched only when used.
            slots: vec![0; 1usize << bits],
            mask: (1u64 << bits) - 1,
            shift: 64 - bits,
            len: 0,
        }
    }

    /// Inserts `fp` (non-zero); false when it was already there.
    fn insert(&mut self, fp: u64) -> bool {
        // The high bits pick the slot: the low bits of the same hash are
        // what distinguishes fingerprints within a run of slots.
        let mut i = fp >> self.shift;
        loop {
            let slot = &mut self.slots[i as usize];
            if *slot == fp {
                return false;
            }
            if *slot == 0 {
                *slot = fp;
                self.len += 1;
                return true;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn load(&self) -> f64 {
        self.len as f64 / self.slots.len() as f64
    }
}

fn fingerprint(s: &State) -> u64 {
    let mut bytes = ByteSink::default();
    s.hash(&mut bytes);
    // SipHash with fixed keys over the whole encoding in one call: stable
    // across runs and well mixed in all bits.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x6361_6972_6e67_636d, 0x6d6f_6465_6c21_0001);
    h.write(&bytes.buf[..bytes.len]);
    h.finish().max(1)
}

/// Collects the bytes `Hash` feeds in: a derived `Hash` makes one call per
/// small field, and SipHash's per-call cost was a third of the search.
struct ByteSink {
    buf: [u8; 512],
    len: usize,
}

impl Default for ByteSink {
    fn default() -> ByteSink {
        ByteSink {
            buf: [0; 512],
            len: 0,
        }
    }
}

impl Hasher for ByteSink {
    fn write(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        assert!(
            end <= self.buf.len(),
            "a state encodes in at most 512 bytes"
        );
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }
    fn finish(&self) -> u64 {
        unreachable!("only the bytes are used")
    }
}

/// The successors the stateright checkers explore from `s` (what
/// [`Model::actions`] and [`Model::next_state`] give), with the actions that
/// lead to them, computed in one pass: `next_state` recomputes its actor's
/// moves for each action, which made the search several times slower.
pub fn successors(model: &GcModel, s: &State) -> Vec<(Action, State)> {
    let mut moves = Vec::new();
    if let Some(a) = model.por.then(|| model.ample_actor(s)).flatten() {
        model.actor_moves(s, a, &mut moves);
    }
    if moves.is_empty() {
        moves = model.moves(s);
    }
    for (_, t) in moves.iter_mut() {
        *t = model.canonical(*t);
    }
    moves
}

/// Explores every reachable state depth-first with a table of `2^bits`
/// fingerprints (8 bytes each), refusing to fill it beyond `max_load`.
pub fn explore(
    model: &GcModel,
    bits: u32,
    max_load: f64,
    mut progress: impl FnMut(&Progress),
) -> Result<Report, Stopped> {
    let started = Instant::now();
    let properties = model.properties();
    let mut seen = FingerprintSet::new(bits);
    let mut report = Report {
        table_slots: 1 << bits,
        ..Report::default()
    };
    let limit = (max_load * (1u64 << bits) as f64) as u64;

    // Each frame: the state, the action that led to it, its successors and
    // the next one to visit.
    struct Frame {
        action: Option<Action>,
        next: Vec<(Action, State)>,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let visit =
        |state: &State, action: Option<Action>, stack: &mut Vec<Frame>, report: &mut Report| {
            for p in &properties {
                let holds = (p.condition)(model, state);
                match p.expectation {
                    Expectation::Always
                        if !holds && !report.violations.iter().any(|(n, _)| *n == p.name) =>
                    {
                        let mut path: Vec<Action> =
                            stack.iter().filter_map(|f| f.action.clone()).collect();
                        path.extend(action.clone());
                        report.violations.push((p.name, path));
                    }
                    Expectation::Sometimes if holds && !report.reached.contains(&p.name) => {
                        report.reached.push(p.name);
                    }
                    _ => {}
                }
            }
            let mut next = successors(model, state);
            next.reverse(); // visit in the checker's order, popping from the end
            stack.push(Frame { action, next });
            report.max_depth = report.max_depth.max(stack.len() - 1);
        };

    for init in model.init_states() {
        if !seen.insert(fingerprint(&init)) {
            continue;
        }
        visit(&init, None, &mut stack, &mut report);
        while let Some(frame) = stack.last_mut() {
            let Some((action, state)) = frame.next.pop() else {
                stack.pop();
                continue;
            };
            report.generated += 1;
            if !seen.insert(fingerprint(&state)) {
                continue;
            }
            if seen.len > limit {
                return Err(Stopped::TableFull {
                    unique: seen.len,
                    slots: 1 << bits,
                });
            }
            if seen.len % PROGRESS_EVERY == 0 {
                progress(&Progress {
                    unique: seen.len,
                    generated: report.generated,
                    depth: stack.len(),
                    max_depth: report.max_depth,
                    elapsed: started.elapsed(),
                    load: seen.load(),
                    violated: report.violations.iter().map(|(n, _)| *n).collect(),
                });
            }
            visit(&state, Some(action), &mut stack, &mut report);
        }
    }
    report.unique = seen.len;
    report.elapsed = started.elapsed();
    Ok(report)
}

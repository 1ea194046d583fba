//! Partial-order reduction: ample sets computed from footprints.
//!
//! See the module documentation of the crate ("Partial-order reduction") for
//! the argument; this file holds the footprints it relies on. Every claim
//! made here is also checked by the `por_footprints_are_sound` test on whole
//! (unreduced) state spaces: independent steps commute, a step stays within
//! its actor's announced future, and a future only shrinks.

use crate::{Action, CPc, Collector, GcModel, State, Then, WPc, MAX_COLLECTORS, MAX_SESSIONS};

/// A set of shared variables, one bit each:
/// - bits 0..9: gc record `(n, kind)` at `(n - 1) * 3 + kind` (kind 0 mark,
///   1 sweep, 2 done; with the I2 history of that key);
/// - bits 9..14: session `i`'s *blocking status* (`.start`, `.saw`, and
///   whether `.end` is absent), which is what `SweepListSessions` reads;
/// - bits 14..19: session `i`'s `.end` value;
/// - bits 19..22: snapshot slot `i`;
/// - bits 22..28: index entry of pack `p`;
/// - bits 28..34: pack `p` (whether it exists, and its contents).
pub(crate) type Vars = u64;

const ALL_GENS: Vars = (1 << 9) - 1;
const MARKS: Vars = 0b001_001_001;
const SWEEPS: Vars = MARKS << 1;
const DONES: Vars = MARKS << 2;
const BLOCK0: u32 = 9;
const END0: u32 = 14;
const SNAP0: u32 = 19;
const INDEX0: u32 = 22;
const LIVE0: u32 = 28;
const BLOCK_ALL: Vars = 0x1f << BLOCK0;
const END_ALL: Vars = 0x1f << END0;
const SNAPS: Vars = 0x7 << SNAP0;
const INDEX_ALL: Vars = 0x3f << INDEX0;
const LIVE_ALL: Vars = 0x3f << LIVE0;

fn gen_var(n: u8, kind: u32) -> Vars {
    if (1..=MAX_COLLECTORS as u8).contains(&n) {
        1 << ((n as u32 - 1) * 3 + kind)
    } else {
        0 // beyond the model's bound: that step touches no record
    }
}
fn block(i: usize) -> Vars {
    1 << (BLOCK0 + i as u32)
}
fn end(i: usize) -> Vars {
    1 << (END0 + i as u32)
}
fn snap(i: usize) -> Vars {
    1 << (SNAP0 + i as u32)
}
fn index(p: usize) -> Vars {
    1 << (INDEX0 + p as u32)
}
fn live(p: usize) -> Vars {
    1 << (LIVE0 + p as u32)
}
fn packs(mask: u8, base: u32) -> Vars {
    (mask as Vars) << base
}

/// What a step (or a set of steps) may read and write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub reads: Vars,
    pub writes: Vars,
}

impl Footprint {
    fn new(reads: Vars, writes: Vars) -> Footprint {
        Footprint { reads, writes }
    }
    fn union(self, o: Footprint) -> Footprint {
        Footprint::new(self.reads | o.reads, self.writes | o.writes)
    }
    /// Whether a step with footprint `self` may fail to commute with a step
    /// with footprint `o` (one writes what the other reads or writes).
    pub fn conflicts(self, o: Footprint) -> bool {
        self.writes & (o.reads | o.writes) != 0 || self.reads & o.writes != 0
    }
    /// Whether `self` covers `o`.
    pub fn covers(self, o: Footprint) -> bool {
        o.reads & !self.reads == 0 && o.writes & !self.writes == 0
    }
}

const WRITER_PCS: [WPc; 9] = [
    WPc::Idle,
    WPc::ListGc,
    WPc::ReadGc,
    WPc::CreateSaw,
    WPc::LoadIndex,
    WPc::Upload,
    WPc::WriteIndex,
    WPc::Commit,
    WPc::DeleteIndex,
];

/// A collector's possible next program counters (`then` known: the branch
/// after `SweepDone`; unknown: every branch).
fn collector_next(pc: CPc, then: Option<Then>) -> &'static [CPc] {
    use CPc::*;
    match pc {
        Idle => &[Start, ReadGc, SweepListSessions],
        Start => &[ReadGc],
        ReadGc => &[CreateSaw],
        CreateSaw => &[End, SweepListSessions, ListSnapshots],
        ListSnapshots => &[Plan],
        Plan => &[End, EndThenCleanUp, RepackPack, FenceCheckMark, CreateMark],
        RepackPack => &[RepackIndex],
        RepackIndex => &[FenceCheckMark, CreateMark],
        FenceCheckMark => &[Stopped, CreateMark],
        CreateMark => &[End, Relist, SweepListSessions],
        Relist => &[End, SweepListSessions],
        SweepListSessions => &[SweepCompute, SweepFence],
        SweepFence => &[SweepFence, SweepCompute, End, Stopped],
        SweepCompute => &[Stopped, SweepCreate],
        SweepCreate => &[SweepFenceCheck, SweepCompact],
        SweepFenceCheck => &[Stopped, SweepCompact],
        SweepCompact => &[SweepDelete],
        SweepDelete => &[SweepDone],
        SweepDone => match then {
            Some(Then::End) => &[End],
            Some(Then::Start) => &[Start],
            Some(Then::Plan) => &[ListSnapshots, End],
            None => &[End, Start, ListSnapshots],
        },
        End => &[Stopped],
        EndThenCleanUp => &[CleanUp],
        CleanUp => &[Stopped],
        Stopped => &[],
    }
}

impl GcModel {
    /// The footprint of writer `w`'s step at `pc`.
    fn writer_pc_footprint(&self, w: usize, pc: WPc) -> Footprint {
        let (wp, ws) = (self.writer_pack(w), self.writer_snap(w));
        match pc {
            WPc::Idle | WPc::CreateSaw => Footprint::new(0, block(w)),
            WPc::ListGc | WPc::ReadGc => Footprint::new(ALL_GENS, 0),
            WPc::LoadIndex => Footprint::new(INDEX_ALL | LIVE_ALL, 0),
            WPc::Upload => Footprint::new(0, live(wp)),
            WPc::WriteIndex | WPc::DeleteIndex => Footprint::new(0, index(wp)),
            WPc::Commit => Footprint::new(end(w) | live(wp), snap(ws) | end(w) | block(w)),
            WPc::Done | WPc::Failed => Footprint::default(),
        }
    }

    /// Clean-up (rule 9) and `forget`, as folded into collector steps.
    ///
    /// Clean-up resets `.start`/`.saw` of *ended* sessions only: that changes
    /// no session's blocking status (an ended session does not block, and a
    /// cleaned one has no `.start`), and the owner of a session writes its
    /// `.start`/`.saw` only before it ends, so those writes commute with it.
    /// Its resets of `.end` (closed, or committed with the snapshot gone) are
    /// writes of `.end`.
    fn clean_up_footprint(&self) -> Footprint {
        let gens = if self.rules.keep_gc_claims {
            0
        } else {
            ALL_GENS
        };
        Footprint::new(END_ALL | SNAPS, END_ALL | gens)
    }

    fn forget_footprint(&self) -> Footprint {
        let writers_ends = (1 << (END0 + self.writers as u32)) - (1 << END0);
        let w = if self.forget { SNAPS } else { 0 };
        Footprint::new(SNAPS | writers_ends, w)
    }

    /// The footprint of collector `c`'s step at `pc`; `me` gives the
    /// generation, the blocking sessions and `D` when known (the current
    /// step), else every one is assumed (a future step).
    fn collector_pc_footprint(&self, c: usize, pc: CPc, me: Option<&Collector>) -> Footprint {
        let sid = self.collector_sess(c);
        let cp = self.collector_pack(c);
        let gen = |kind: u32, all: Vars| me.map_or(all, |m| gen_var(m.n, kind));
        let f = Footprint::new;
        match pc {
            CPc::Idle if self.rules.collector_session_first => f(0, block(sid)),
            CPc::Idle | CPc::ReadGc | CPc::Relist => f(ALL_GENS, 0),
            CPc::Start | CPc::CreateSaw => f(0, block(sid)),
            CPc::ListSnapshots => self.forget_footprint(),
            CPc::Plan => f(INDEX_ALL | LIVE_ALL, 0),
            CPc::RepackPack => f(0, live(cp)),
            CPc::RepackIndex => f(0, index(cp)),
            CPc::FenceCheckMark | CPc::SweepFenceCheck => f(end(sid), 0),
            CPc::CreateMark => {
                let g = gen(0, MARKS);
                f(g, g)
            }
            CPc::SweepListSessions => f(BLOCK_ALL & !block(sid), 0),
            CPc::SweepFence => {
                let i = me.map_or(BLOCK_ALL >> BLOCK0, |m| m.blocking as Vars);
                let i = i & !(1 << sid);
                let x = (i << BLOCK0) | (i << END0);
                f(x, x)
            }
            CPc::SweepCompute => f(gen(0, MARKS) | LIVE_ALL, 0).union(self.forget_footprint()),
            CPc::SweepCreate => {
                let g = gen(1, SWEEPS);
                f(g, g)
            }
            CPc::SweepCompact => f(INDEX_ALL | LIVE_ALL, INDEX_ALL),
            CPc::SweepDelete => f(0, me.map_or(LIVE_ALL, |m| packs(m.d, LIVE0))),
            CPc::SweepDone => {
                let g = gen(2, DONES);
                f(g, g)
                    .union(self.clean_up_footprint())
                    .union(self.forget_footprint())
            }
            CPc::End | CPc::EndThenCleanUp => f(end(sid), end(sid) | block(sid)),
            CPc::CleanUp => self.clean_up_footprint().union(self.forget_footprint()),
            CPc::Stopped => Footprint::default(),
        }
    }

    /// The footprint of actor `a`'s current step (every choice it has).
    pub fn step_footprint(&self, s: &State, a: usize) -> Footprint {
        if a < self.writers {
            self.writer_pc_footprint(a, s.writers[a].pc)
        } else {
            let c = a - self.writers;
            let me = &s.collectors[c];
            self.collector_pc_footprint(c, me.pc, Some(me))
        }
    }

    /// Everything actor `a` may still read or write, from `s` on (its
    /// current step included). It depends on the actor's own state only.
    pub fn future_footprint(&self, s: &State, a: usize) -> Footprint {
        if a < self.writers {
            let pc = s.writers[a].pc;
            WRITER_PCS
                .iter()
                .filter(|&&p| p >= pc)
                .fold(Footprint::default(), |f, &p| {
                    f.union(self.writer_pc_footprint(a, p))
                })
        } else {
            let c = a - self.writers;
            let me = &s.collectors[c];
            // `then` is decided by `ReadGc` (and reset by old `Start`).
            let then = match me.pc {
                CPc::Idle | CPc::Start | CPc::ReadGc => None,
                _ => Some(me.then),
            };
            let mut seen = 0u32;
            let mut todo = vec![me.pc];
            let mut f = Footprint::default();
            while let Some(pc) = todo.pop() {
                if seen & (1 << pc as u32) != 0 {
                    continue;
                }
                seen |= 1 << pc as u32;
                f = f.union(self.collector_pc_footprint(c, pc, None));
                todo.extend_from_slice(collector_next(pc, then));
            }
            f
        }
    }

    /// Whether some step of actor `a` now is invisible to the invariants in
    /// the sense the reduction needs: it never turns a state that violates an
    /// invariant into one that satisfies it. Only adding a pack or an index
    /// entry can repair a violation (and forgetting, which every step that
    /// folds it also offers to do nothing).
    pub fn has_preserving_step(&self, s: &State, a: usize) -> bool {
        if a < self.writers {
            !matches!(s.writers[a].pc, WPc::Upload | WPc::WriteIndex)
        } else {
            !matches!(
                s.collectors[a - self.writers].pc,
                CPc::RepackPack | CPc::RepackIndex
            )
        }
    }

    /// Every move of actor `a` (in the session numbering), its crash included.
    pub fn actor_moves(&self, s: &State, a: usize, out: &mut Vec<(Action, State)>) {
        if a < self.writers {
            self.writer_moves(s, a, out);
        } else {
            self.collector_moves(s, a - self.writers, out);
        }
        if self.crash {
            let mut all = Vec::new();
            self.crash_moves(s, &mut all);
            out.extend(all.into_iter().filter(|(x, _)| *x == Action::Crash(a)));
        }
    }

    /// The actor whose moves alone form an ample set at `s`, if any.
    pub fn ample_actor(&self, s: &State) -> Option<usize> {
        let actors = self.writers + self.collectors;
        let mut futures = [Footprint::default(); MAX_SESSIONS];
        for (a, f) in futures.iter_mut().enumerate().take(actors) {
            *f = self.future_footprint(s, a);
        }
        (0..actors).find(|&a| {
            let enabled = if a < self.writers {
                !matches!(s.writers[a].pc, WPc::Done | WPc::Failed)
            } else {
                s.collectors[a - self.writers].pc != CPc::Stopped
            };
            if !enabled || !self.has_preserving_step(s, a) {
                return false;
            }
            let step = self.step_footprint(s, a);
            (0..actors).all(|b| b == a || !step.conflicts(futures[b]))
        })
    }
}

//! An exhaustive model of cairn's lock-free prune protocol
//! (`shared/gc-protocol.md`, issue 16), checked with [`stateright`].
//!
//! # What is modelled
//!
//! The store holds, as small bit sets:
//! - **packs**, one slot per creator: slot 0 is the initial pack `X = {k, g}`
//!   (blob `k` is used by the initial snapshot `S0`, `g` is garbage, so `X` is
//!   "partly used" and a prune may repack it); slot `1 + w` is writer `w`'s
//!   upload; slot `1 + W + c` is collector `c`'s repack output. Each actor runs
//!   once, so each writes at most one pack.
//! - **index objects**: every index object in this model names exactly one pack
//!   (writers, repackers and the initial index each write one object per pack,
//!   and compaction of a one-pack object deletes it), so the index is the set of
//!   packs some index object names.
//! - **snapshots**: `S0` (written before the protocol: always valid while it
//!   exists) and one per writer, valid while it exists and its session's `.end`
//!   says `committed`.
//! - **session records** per actor: `.start`, `.saw.<g>`, `.end` ∈ {committed,
//!   closed (a collector's commit without snapshot, or an abort), fenced}.
//! - **gc records** per generation `n ∈ 1..=collectors`: `mark` (`A_n`, `C_n`),
//!   `sweep` (`D_n`), `done`. Generation 0 counts as finished.
//!
//! Actors are small program counters; **every step is one atomic store
//! operation** (a Create, a delete, or a listing-and-read the real code does in
//! one go). A pause is simply not scheduling an actor: pauses are unbounded.
//!
//! # Abstractions (and why they are sound for these safety properties)
//! - **Time and heartbeats.** A sweeper may fence *any* session it found
//!   blocking, at any time, or postpone: since pauses are unbounded, a session
//!   can always look stale. Heartbeats therefore add no behaviour and are not
//!   modelled.
//! - **Crash** is "never scheduled again". For `always` properties that adds no
//!   reachable store state, so it is off by default ([`GcModel::crash`]).
//! - **Prune policy.** A partly used pack may be kept or repacked (prunes run
//!   with different `--max-unused`/`--max-repack-size`), and when a live blob has
//!   several indexed copies any one of them may be the one the plan counts as
//!   used (index order is by hash).
//! - Compaction of the index and deletion of `D_n` are one step each; auto-indexing
//!   of unindexed packs by writers (`adopt_unindexed_packs`) is not modelled.
//! - **Commit.** A writer's snapshot object is written in the same step as its
//!   `Create(.end)` (and, when fenced, deleted in it): a snapshot object whose
//!   session has no `committed` end is looked at by no actor and no invariant,
//!   so the states in between are indistinguishable from their neighbours.
//! - **Forget, scheduled lazily.** `forget` (delete any valid snapshot) is
//!   folded into the steps that read `snapshots/` (a collector's snapshot
//!   listing, the sweep's walk, and clean-up): before such a step any subset of
//!   the valid snapshots may be forgotten. A forget commutes with every other
//!   step, and delaying it only keeps more snapshots valid, which can only make
//!   the invariants (over valid snapshots) harder to satisfy, so no violation
//!   is hidden.
//! - Each actor runs one command (one backup, one prune); there are as many
//!   generations as collectors.
//!
//! # Reductions (and why they hide no violation)
//! The exploration is exact up to three reductions, each of which keeps every
//! reachable violation of the `always` properties reachable. The old-rules
//! tests (`tests/old_rules.rs`) still find or replay every counterexample with
//! all three on, and `tests/por.rs` checks the footprint claims below on whole
//! unreduced state spaces.
//!
//! **Dead values** ([`GcModel::normalize`], applied to every successor).
//! States that differ only in values no actor and no property reads again have
//! identical futures, so one of them stands for all:
//! - index entries of packs that are gone (every reader intersects the index
//!   with the live packs, and a pack slot is written once);
//! - `.start`/`.saw` of a session with an `.end` (only the sweep's session
//!   listing reads them, and only when `.end` is absent; clean-up clears them);
//! - the blobs of a finished writer without a snapshot that no plan holds in
//!   its `A_n` (read only through that snapshot: a plan reads the trees of
//!   the snapshots it listed even if they are forgotten meanwhile);
//! - a collector's local state at `End` (that step reads none), and all but
//!   `saw` at old `EndThenCleanUp`/`CleanUp`;
//! - new rules only: the contents (`A_m`, `C_m`, and `D_m` for `m < h`) of
//!   the records of generations `m ≤ h`, the highest finished one, unless a
//!   collector still works on `m`. Every collector picks `n > h` when it
//!   reads `gc/` (`h` only grows), so only one already holding `n = m` reads
//!   them; a writer's view (rule 2) reads `D_h` and nothing below `h`. Their
//!   existence is kept: Create, void and re-list decisions read it.
//!
//! **Symmetry.** Writers are interchangeable, and so are collectors. stateright
//! 0.31's BFS checker ignores `CheckerBuilder::symmetry`, so with
//! [`GcModel::symmetry`] the model itself returns the canonical representative
//! (least state over all writer and collector permutations, by precomputed
//! bit-renaming tables) from `next_state`. The invariants are symmetric.
//!
//! **Partial-order reduction** ([`GcModel::por`], `src/por.rs`). In a state
//! `s`, if some actor `P` satisfies
//! 1. (independence) the footprint of `P`'s current step (every choice of
//!    it, with any folded `forget`) conflicts with nothing any other actor `Q`
//!    may still read or write (`Q`'s *future footprint*, computed from `Q`'s
//!    own program counter along its control-flow graph, so no other actor's
//!    step changes it), and
//! 2. (invisibility) `P`'s step without `forget` never turns a state violating
//!    an invariant into one satisfying it (all steps except adding a pack or
//!    an index entry: the invariants only get harder as packs, index entries
//!    and recorded keys disappear and as committed snapshots and failures
//!    appear),
//!
//! then only `P`'s moves (its crash included) are explored from `s` (an
//! *ample set*). Soundness, by induction on the height of `s` in the state
//! graph, which is acyclic (every step advances its actor's program counter
//! or generation, clears a blocking session, or is a `forget`, which only
//! removes): let a violating state be reachable from `s` by a path `π`. If `π`
//! contains a move of `P`, the first one was already enabled at `s` (nothing
//! before it wrote what it reads, nor `P`'s state) and commutes to the front
//! (it writes nothing the others read or write). Otherwise every step of `π`
//! is another actor's, independent of each of `P`'s moves, so `P`'s
//! invisible move `a` (taken after `π`) keeps the end state violating and
//! commutes to the front. Either way a violating state is reachable from a
//! successor of `s` that the reduced search explores, which has a smaller
//! height. Renamings are automorphisms of the state graph preserving the
//! invariants and the height, so this composes with symmetry. The claims
//! used — independent steps commute, steps stay within their future
//! footprint, futures only shrink and are untouched by others, invisible
//! steps preserve violations — are asserted state by state in `tests/por.rs`.
//! The footprint variables are the gc records (per generation and kind), per
//! session its *blocking status* (`.start`, `.saw`, `.end` absent) and its
//! `.end` value, the snapshot objects, and per pack its index entry and its
//! existence. Two semantic facts refine them: clean-up's resets of `.start`
//! and `.saw` of ended sessions change no blocking status, and a writer's
//! blob choice is read only through its (later) snapshot.
//!
//! The `sometimes` examples are reachability checks of the model, not
//! verdicts; the reduction need not preserve them, but the tests check that
//! they are still reached.
//!
//! # Rules
//! [`Rules::old`] is what `src/ops/prune.rs`, `src/repo/session.rs` and
//! `src/repo/gc.rs` do today; [`Rules::new`] switches on every fix of
//! gc-protocol.md rules 1, 3, 4, 11, 13, 14, 15 with the implementation decision
//! that the claim records `gc/<n>.mark|sweep|done` are never deleted. Each fix is
//! a separate flag so that one can be switched off at a time.

use stateright::{Model, Property};

pub mod compact;
mod por;
pub use por::Footprint;

/// Blob `k`: the initial snapshot's only blob.
pub const K: u8 = 1;
/// Blob `j`: new data that only writers back up.
pub const J: u8 = 2;
/// Blob `g`: garbage that shares the initial pack with `k`.
pub const GARBAGE: u8 = 4;

/// The protocol's fixes, one flag each (all false: the current code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rules {
    /// Rule 4 (implementation decision): `gc/<n>.mark|sweep|done` are never
    /// deleted, so a late Create of a stale generation's record fails.
    pub keep_gc_claims: bool,
    /// Rule 4: every record of a generation below the highest finished one `h`
    /// is void; only `h+1` is resumed; writers' views (rule 2) ignore void
    /// generations and exclude `D_m` once swept, `C_m` before.
    pub void_records: bool,
    /// Rule 1 for collectors: the session starts before `gc/` is read and
    /// before an unfinished generation is swept.
    pub collector_session_first: bool,
    /// Rule 4: a collector reads its own `.end` right before `Create(mark)`
    /// and, as a sweeper, after creating/adopting `.sweep`; fenced → deletes nothing.
    pub fence_checks: bool,
    /// Rule 4: after `Create(mark n)`, list `gc/` again and abandon if any
    /// record of a generation above `n` exists.
    pub relist_after_mark: bool,
    /// Rule 3: a fenced writer deletes its snapshot object only (today it also
    /// deletes its index objects: schedule 4).
    pub fenced_writer_keeps_index: bool,
    /// Rule 11: a plan aborts when a valid snapshot reaches a blob no live index
    /// entry lists (today `plan()` ignores such blobs).
    pub plan_aborts_unindexed: bool,
    /// Rule 15: compaction drops index entries of packs that are gone (loads
    /// already keep only listed packs today).
    pub compact_drops_absent: bool,
    /// Rule 11 (review L1): a gc record listed but gone when read → list
    /// again (today the backup fails: schedule 5).
    pub relist_vanished: bool,
}

impl Rules {
    /// The current implementation.
    pub const fn old() -> Rules {
        Rules {
            keep_gc_claims: false,
            void_records: false,
            collector_session_first: false,
            fence_checks: false,
            relist_after_mark: false,
            fenced_writer_keeps_index: false,
            plan_aborts_unindexed: false,
            compact_drops_absent: false,
            relist_vanished: false,
        }
    }

    /// The corrected protocol.
    pub const fn new() -> Rules {
        Rules {
            keep_gc_claims: true,
            void_records: true,
            collector_session_first: true,
            fence_checks: true,
            relist_after_mark: true,
            fenced_writer_keeps_index: true,
            plan_aborts_unindexed: true,
            compact_drops_absent: true,
            relist_vanished: true,
        }
    }
}

impl Default for Rules {
    /// The corrected protocol.
    fn default() -> Rules {
        Rules::new()
    }
}

/// A session's `.end` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum End {
    #[default]
    None,
    /// A writer's commit naming its snapshot.
    Committed,
    /// A collector's commit (no snapshot) or an abort: clean-up deletes it.
    Closed,
    /// Written by a sweeper (rule 7); never deleted.
    Fenced,
}

/// `sessions/<sid>.*` of one actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Sess {
    pub start: bool,
    pub saw: Option<u8>,
    pub end: End,
}

/// The records of one generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Gen {
    /// `gc/<n>.mark`: (analysed snapshots `A_n`, condemned packs `C_n`).
    pub mark: Option<(u8, u8)>,
    /// `gc/<n>.sweep`: `D_n`.
    pub sweep: Option<u8>,
    /// `gc/<n>.done`.
    pub done: bool,
}

/// A writer's (backup's) program counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum WPc {
    #[default]
    Idle,
    ListGc,
    ReadGc,
    CreateSaw,
    LoadIndex,
    Upload,
    WriteIndex,
    /// Write the snapshot object, then Create `.end` (see [`GcModel`] docs:
    /// a snapshot object without a committed `.end` is seen by no one).
    Commit,
    DeleteIndex,
    /// Finished: committed, fenced or crashed.
    Done,
    /// Failed for a reason other than a fence (property I3).
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Writer {
    pub pc: WPc,
    /// The blobs this backup stores (chosen at start; kept for its snapshot).
    pub blobs: u8,
    /// Old rules: the gc keys listed before they are read (bit per key).
    pub listed: u16,
    pub saw: u8,
    /// Packs left out of the dedup view (rule 2).
    pub excl: u8,
    /// Blobs not found in the view: uploaded in one new pack.
    pub upload: u8,
}

/// A collector's (prune's) program counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum CPc {
    /// Old: read gc/ without a session. New: create `.start`.
    #[default]
    Idle,
    /// Old: create `.start` (after finishing an earlier generation).
    Start,
    ReadGc,
    CreateSaw,
    ListSnapshots,
    Plan,
    RepackPack,
    RepackIndex,
    FenceCheckMark,
    CreateMark,
    Relist,
    SweepListSessions,
    SweepFence,
    SweepCompute,
    SweepCreate,
    SweepFenceCheck,
    SweepCompact,
    SweepDelete,
    /// Create `.done`, then clean up (one step).
    SweepDone,
    /// Create own `.end` (commit or abort), then stop.
    End,
    /// Create own `.end`, then clean up (nothing to collect).
    EndThenCleanUp,
    CleanUp,
    Stopped,
}

/// Where a collector goes after a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Then {
    /// Its own generation: end the session.
    #[default]
    End,
    /// Old: an earlier generation finished without a session: now start one.
    Start,
    /// New: an earlier generation finished: plan the next one.
    Plan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Collector {
    pub pc: CPc,
    /// The generation being swept or marked.
    pub n: u8,
    pub saw: u8,
    /// `A_n`: the snapshots analysed.
    pub analysed: u8,
    /// `C_n`.
    pub condemned: u8,
    /// Blobs copied into this collector's repack output.
    pub out: u8,
    /// `D_n` as computed or adopted.
    pub d: u8,
    /// Sessions found blocking and not yet fenced.
    pub blocking: u8,
    pub then: Then,
}

/// The most writers and collectors a configuration may have (fixed-size
/// arrays keep [`State`] `Copy`: no allocation per explored state).
pub const MAX_WRITERS: usize = 2;
pub const MAX_COLLECTORS: usize = 3;
const MAX_PACKS: usize = 1 + MAX_WRITERS + MAX_COLLECTORS;
const MAX_SESSIONS: usize = MAX_WRITERS + MAX_COLLECTORS;

/// The whole system: the store plus every actor's local state. Entries of
/// absent actors stay at their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    /// Contents (blob bits) of each pack slot; 0 = never written.
    pub pack_blobs: [u8; MAX_PACKS],
    /// Packs that exist.
    pub live: u8,
    /// Packs named by some index object.
    pub index: u8,
    /// Snapshot objects that exist (bit 0: S0, bit 1+w: writer w's).
    pub snaps: u8,
    /// Writers' sessions, then collectors'.
    pub sessions: [Sess; MAX_SESSIONS],
    /// Generations 1..=collectors.
    pub gens: [Gen; MAX_COLLECTORS],
    /// Gc keys ever created (I2 history variable), and whether one was created twice.
    pub gc_created: u16,
    pub gc_twice: bool,
    pub writers: [Writer; MAX_WRITERS],
    pub collectors: [Collector; MAX_COLLECTORS],
}

/// Who acts, and which step.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Writer index, step, detail (blob set or nothing).
    Writer(usize, &'static str, u8),
    /// Collector index, step, detail (generation, fenced session, plan
    /// choice), and the snapshots `forget` deleted just before this step (bits).
    Collector(usize, &'static str, u8, u8),
    /// An actor stops forever (index in the session numbering).
    Crash(usize),
}

/// The model's configuration.
#[derive(Clone, Debug)]
pub struct GcModel {
    pub rules: Rules,
    pub writers: usize,
    pub collectors: usize,
    /// The blob sets a writer may back up (one is chosen at its start).
    pub writer_choices: Vec<u8>,
    pub forget: bool,
    pub crash: bool,
    pub symmetry: bool,
    /// Partial-order reduction (ample sets, see the module docs).
    pub por: bool,
    /// All (writer, collector) permutations except the identity, with their
    /// bit-renaming tables, for the representative.
    perms: Vec<Perm>,
}

/// Property names.
pub const LOST_S0: &str = "I1: blob of the initial snapshot lost";
pub const LOST_W: &str = "I1: blob of a writer's valid snapshot lost";
pub const UNINDEXED: &str = "I1b: blob of a valid snapshot in no indexed pack";
pub const GC_TWICE: &str = "I2: a gc/ key created twice";
pub const SPURIOUS: &str = "I3: a writer failed without being fenced";
/// Examples that must be reachable (`sometimes`), so that a clean run means something.
pub const EX_TWO_GENERATIONS: &str = "example: generation 2 finished";
pub const EX_PACK_DELETED: &str = "example: a pack was deleted";
pub const EX_WRITER_FENCED: &str = "example: a writer was fenced";
pub const EX_COLLECTOR_FENCED: &str = "example: a collector was fenced";
/// The `always` properties (the invariants).
pub const INVARIANTS: [&str; 5] = [LOST_S0, LOST_W, UNINDEXED, GC_TWICE, SPURIOUS];

fn bit(i: usize) -> u8 {
    1 << i
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for pos in 0..n {
            let mut q = p.clone();
            q.insert(pos, n - 1);
            out.push(q);
        }
    }
    out
}

/// A renaming of writers and collectors, with lookup tables that rename the
/// bit sets of packs, snapshots and sessions.
#[derive(Clone, Debug)]
struct Perm {
    wp: [u8; MAX_WRITERS],
    cp: [u8; MAX_COLLECTORS],
    pack: [u8; MAX_PACKS],
    sess: [u8; MAX_SESSIONS],
    pack_bits: Box<[u8; 256]>,
    snap_bits: Box<[u8; 256]>,
    sess_bits: Box<[u8; 256]>,
}

impl Perm {
    fn new(wp: &[usize], cp: &[usize], nw: usize) -> Perm {
        // Slots of absent actors map to themselves.
        let mut pack: Vec<usize> = (0..MAX_PACKS).collect();
        let mut snap: Vec<usize> = (0..8).collect();
        let mut sess: Vec<usize> = (0..MAX_SESSIONS).collect();
        for (w, &to) in wp.iter().enumerate() {
            pack[1 + w] = 1 + to;
            snap[1 + w] = 1 + to;
            sess[w] = to;
        }
        for (c, &to) in cp.iter().enumerate() {
            pack[1 + nw + c] = 1 + nw + to;
            sess[nw + c] = nw + to;
        }
        let table = |map: &[usize]| {
            let mut t = Box::new([0u8; 256]);
            for (m, x) in t.iter_mut().enumerate() {
                *x = remap(m as u8, map);
            }
            t
        };
        let mut p = Perm {
            wp: [0; MAX_WRITERS],
            cp: [0; MAX_COLLECTORS],
            pack: [0; MAX_PACKS],
            sess: [0; MAX_SESSIONS],
            pack_bits: table(&pack),
            snap_bits: table(&snap),
            sess_bits: table(&sess),
        };
        for (i, &x) in wp.iter().enumerate() {
            p.wp[i] = x as u8;
        }
        for (i, &x) in cp.iter().enumerate() {
            p.cp[i] = x as u8;
        }
        for (to, &x) in p.pack.iter_mut().zip(&pack) {
            *to = x as u8;
        }
        for (to, &x) in p.sess.iter_mut().zip(&sess) {
            *to = x as u8;
        }
        p
    }
}

/// Maps each set bit `i` of `mask` to bit `map[i]` (bits beyond `map` stay).
fn remap(mask: u8, map: &[usize]) -> u8 {
    (0..8)
        .filter(|&i| mask & bit(i) != 0)
        .fold(0, |m, i| m | bit(map.get(i).copied().unwrap_or(i)))
}

impl GcModel {
    /// `writers` backups (each backs up `{j}` or `{k}`), `collectors` prunes,
    /// forget on, crash off, symmetry on.
    pub fn new(rules: Rules, writers: usize, collectors: usize) -> GcModel {
        assert!(writers <= MAX_WRITERS && collectors <= MAX_COLLECTORS);
        let mut perms = Vec::new();
        for wp in permutations(writers) {
            for cp in permutations(collectors) {
                let identity = wp.iter().enumerate().all(|(i, &x)| i == x)
                    && cp.iter().enumerate().all(|(i, &x)| i == x);
                if !identity {
                    perms.push(Perm::new(&wp, &cp, writers));
                }
            }
        }
        GcModel {
            rules,
            writers,
            collectors,
            writer_choices: vec![J, K],
            forget: true,
            crash: false,
            symmetry: true,
            por: true,
            perms,
        }
    }

    // ---- numbering ---------------------------------------------------------

    fn writer_pack(&self, w: usize) -> usize {
        1 + w
    }
    fn collector_pack(&self, c: usize) -> usize {
        1 + self.writers + c
    }
    fn writer_snap(&self, w: usize) -> usize {
        1 + w
    }
    fn collector_sess(&self, c: usize) -> usize {
        self.writers + c
    }
    fn gens(&self) -> u8 {
        self.collectors as u8
    }

    // ---- what the store says ------------------------------------------------

    /// The blobs of snapshot slot `i`.
    fn snap_blobs(&self, s: &State, i: usize) -> u8 {
        if i == 0 {
            K
        } else {
            s.writers[i - 1].blobs
        }
    }

    /// Valid snapshots: exist, and (writers') session `.end` says committed.
    fn valid_snaps(&self, s: &State) -> u8 {
        (0..=self.writers)
            .filter(|&i| s.snaps & bit(i) != 0)
            .filter(|&i| i == 0 || s.sessions[i - 1].end == End::Committed)
            .fold(0, |m, i| m | bit(i))
    }

    /// Blobs referenced by the snapshots in `snaps`.
    fn blobs_of(&self, s: &State, snaps: u8) -> u8 {
        (0..=self.writers)
            .filter(|&i| snaps & bit(i) != 0)
            .fold(0, |m, i| m | self.snap_blobs(s, i))
    }

    /// Packs (from `packs`) holding any blob of `blobs`.
    fn holders(&self, s: &State, packs: u8, blobs: u8) -> u8 {
        (0..s.pack_blobs.len())
            .filter(|&p| packs & bit(p) != 0 && s.pack_blobs[p] & blobs != 0)
            .fold(0, |m, p| m | bit(p))
    }

    /// Blobs held by the packs in `packs`.
    fn contents(&self, s: &State, packs: u8) -> u8 {
        (0..s.pack_blobs.len())
            .filter(|&p| packs & bit(p) != 0)
            .fold(0, |m, p| m | s.pack_blobs[p])
    }

    fn gen(&self, s: &State, n: u8) -> Gen {
        if n == 0 || n > self.gens() {
            Gen::default()
        } else {
            s.gens[n as usize - 1]
        }
    }

    /// The highest finished generation (0 counts as finished).
    fn highest_done(gens: &[Gen]) -> u8 {
        (1..=gens.len() as u8)
            .filter(|&n| gens[n as usize - 1].done)
            .max()
            .unwrap_or(0)
    }

    /// The highest generation with a mark (0 when none): old `GcState::latest`.
    fn latest_mark(gens: &[Gen]) -> u8 {
        (1..=gens.len() as u8)
            .filter(|&n| gens[n as usize - 1].mark.is_some())
            .max()
            .unwrap_or(0)
    }

    /// The generation a reader must finish before marking another: old
    /// `GcState::unfinished` (any mark without done), or with void records
    /// only `h+1`.
    fn unfinished(&self, gens: &[Gen]) -> Option<u8> {
        if self.rules.void_records {
            let u = Self::highest_done(gens) + 1;
            let marked = (u as usize) <= gens.len() && gens[u as usize - 1].mark.is_some();
            marked.then_some(u)
        } else {
            (1..=gens.len() as u8)
                .filter(|&n| gens[n as usize - 1].mark.is_some() && !gens[n as usize - 1].done)
                .max()
        }
    }

    /// The generation a reader records in `.saw`: the highest (non-void) mark.
    fn seen(&self, gens: &[Gen]) -> u8 {
        if self.rules.void_records {
            self.unfinished(gens)
                .unwrap_or_else(|| Self::highest_done(gens))
        } else {
            Self::latest_mark(gens)
        }
    }

    /// Rule 2: the packs a writer that read `gens` leaves out of its view.
    fn excluded(&self, gens: &[Gen]) -> u8 {
        let saw = self.seen(gens);
        let from = if self.rules.void_records {
            Self::highest_done(gens).max(1) // void generations are ignored
        } else {
            1
        };
        (from..=saw).map(|m| gens[m as usize - 1]).fold(0, |x, g| {
            x | match (self.rules.void_records, g.sweep, g.mark) {
                (true, Some(d), _) => d,
                (_, _, Some((_, c))) => c,
                _ => 0,
            }
        })
    }

    /// Index entries that a load keeps: named packs that a listing shows (rule 15).
    fn live_index(&self, s: &State) -> u8 {
        s.index & s.live
    }

    fn gc_key(n: u8, kind: usize) -> u16 {
        1 << ((n as usize - 1) * 3 + kind)
    }

    /// Records a successful Create of a gc key (I2).
    fn created_gc(s: &mut State, n: u8, kind: usize) {
        let k = Self::gc_key(n, kind);
        if s.gc_created & k != 0 {
            s.gc_twice = true;
        }
        s.gc_created |= k;
    }

    /// Bits of the gc keys that exist.
    fn gc_keys(&self, s: &State) -> u16 {
        let mut keys = 0;
        for n in 1..=self.gens() {
            let g = self.gen(s, n);
            if g.mark.is_some() {
                keys |= Self::gc_key(n, 0);
            }
            if g.sweep.is_some() {
                keys |= Self::gc_key(n, 1);
            }
            if g.done {
                keys |= Self::gc_key(n, 2);
            }
        }
        keys
    }

    // ---- clean-up (rule 9) ---------------------------------------------------

    /// After generation `below` is done: old rules delete every gc record of
    /// generations below it; both delete `.start`/`.saw` of ended sessions and
    /// the `.end` of closed sessions and of committed ones whose snapshot is gone
    /// (fences stay).
    fn clean_up(&self, s: &mut State, below: u8) {
        if !self.rules.keep_gc_claims {
            for m in 1..below.min(self.gens() + 1) {
                s.gens[m as usize - 1] = Gen::default();
            }
        }
        for i in 0..s.sessions.len() {
            let sess = &mut s.sessions[i];
            if sess.end == End::None {
                continue;
            }
            sess.start = false;
            sess.saw = None;
            let snapshot_gone = i < self.writers && s.snaps & bit(self.writer_snap(i)) == 0;
            if sess.end == End::Closed || (sess.end == End::Committed && snapshot_gone) {
                sess.end = End::None;
            }
        }
    }

    // ---- writers (rules 1, 2, 3, 11, 15) -------------------------------------

    fn writer_moves(&self, s: &State, w: usize, out: &mut Vec<(Action, State)>) {
        let me = s.writers[w];
        let mut next = *s;
        let step = |name: &'static str, arg: u8| Action::Writer(w, name, arg);
        match me.pc {
            WPc::Idle => {
                // Rule 1: announce the session before reading anything.
                for &blobs in &self.writer_choices {
                    let mut n = *s;
                    n.sessions[w].start = true;
                    n.writers[w].blobs = blobs;
                    n.writers[w].pc = if self.rules.relist_vanished {
                        WPc::ReadGc
                    } else {
                        WPc::ListGc
                    };
                    out.push((step("start", blobs), n));
                }
                return;
            }
            WPc::ListGc => {
                // Old: `GcState::load` lists gc/ ...
                next.writers[w].listed = self.gc_keys(s);
                next.writers[w].pc = WPc::ReadGc;
                out.push((step("list gc/", 0), next));
                return;
            }
            WPc::ReadGc => {
                let gens = if self.rules.relist_vanished {
                    // New: a listed record that is gone when read → list again
                    // (a read that succeeds sees what one listing showed).
                    s.gens
                } else {
                    // ... then reads each listed mark and sweep: one that
                    // clean-up deleted meanwhile fails the backup (schedule 5).
                    let mut view = s.gens;
                    for (i, g) in view.iter_mut().enumerate() {
                        let n = i as u8 + 1;
                        let listed = |k| me.listed & Self::gc_key(n, k) != 0;
                        let vanished =
                            (listed(0) && g.mark.is_none()) || (listed(1) && g.sweep.is_none());
                        if vanished {
                            next.writers[w].pc = WPc::Failed;
                            out.push((step("read gc/: listed record gone", n), next));
                            return;
                        }
                        if !listed(0) {
                            g.mark = None;
                        }
                        if !listed(1) {
                            g.sweep = None;
                        }
                        g.done = listed(2);
                    }
                    view
                };
                next.writers[w].saw = self.seen(&gens);
                next.writers[w].excl = self.excluded(&gens);
                next.writers[w].listed = 0;
                next.writers[w].pc = WPc::CreateSaw;
            }
            WPc::CreateSaw => {
                next.sessions[w].saw = Some(me.saw);
                next.writers[w].saw = 0;
                next.writers[w].pc = WPc::LoadIndex;
            }
            WPc::LoadIndex => {
                // Dedup view: listed, indexed packs minus the excluded ones.
                let view = self.live_index(s) & !me.excl;
                let missing = me.blobs & !self.contents(s, view);
                next.writers[w].upload = missing;
                next.writers[w].excl = 0;
                next.writers[w].pc = if missing != 0 {
                    WPc::Upload
                } else {
                    WPc::Commit
                };
            }
            WPc::Upload => {
                let p = self.writer_pack(w);
                next.pack_blobs[p] = me.upload;
                next.live |= bit(p);
                next.writers[w].upload = 0;
                next.writers[w].pc = WPc::WriteIndex;
            }
            WPc::WriteIndex => {
                next.index |= bit(self.writer_pack(w));
                next.writers[w].pc = WPc::Commit;
            }
            WPc::Commit => {
                // Rule 3: packs → index → snapshot → the one Create of `.end`
                // that decides. The snapshot write and, when fenced, its
                // deletion are folded into this step: until `.end` says
                // committed, no actor and no invariant looks at it.
                if s.sessions[w].end == End::None {
                    next.snaps |= bit(self.writer_snap(w));
                    next.sessions[w].end = End::Committed;
                    self.writer_finish(&mut next, w);
                } else if self.rules.fenced_writer_keeps_index
                    || s.pack_blobs[self.writer_pack(w)] == 0
                {
                    self.writer_finish(&mut next, w);
                } else {
                    next.writers[w].pc = WPc::DeleteIndex;
                }
            }
            WPc::DeleteIndex => {
                // Old: a fenced writer deletes its index objects (schedule 4).
                next.index &= !bit(self.writer_pack(w));
                self.writer_finish(&mut next, w);
            }
            WPc::Done | WPc::Failed => return,
        }
        out.push((step(wpc_name(me.pc), 0), next));
    }

    fn writer_finish(&self, s: &mut State, w: usize) {
        let blobs = s.writers[w].blobs;
        s.writers[w] = Writer {
            pc: WPc::Done,
            blobs,
            ..Writer::default()
        };
    }

    // ---- collectors (rules 4–9, 11, 15) --------------------------------------

    /// A collector's next step, preceded by any `forget` of valid snapshots
    /// when that step reads `snapshots/` (see the module docs: forget is
    /// scheduled lazily, right before the next step that can observe it).
    fn collector_moves(&self, s: &State, c: usize, out: &mut Vec<(Action, State)>) {
        let reads_snapshots = matches!(
            s.collectors[c].pc,
            CPc::ListSnapshots | CPc::SweepCompute | CPc::SweepDone | CPc::CleanUp
        );
        if !(self.forget && reads_snapshots) {
            return self.collector_step(s, c, 0, out);
        }
        let valid = self.valid_snaps(s);
        for forgot in (0..=valid).filter(|f| f & !valid == 0) {
            let mut t = *s;
            t.snaps &= !forgot;
            self.collector_step(&t, c, forgot, out);
        }
    }

    fn collector_step(&self, s: &State, c: usize, forgot: u8, out: &mut Vec<(Action, State)>) {
        let me = s.collectors[c];
        let sid = self.collector_sess(c);
        let mut next = *s;
        let step = |name: &'static str, arg: u8| Action::Collector(c, name, arg, forgot);
        let mut arg = 0;
        {
            let cn = &mut next.collectors[c];
            match me.pc {
                CPc::Idle if self.rules.collector_session_first => {
                    next.sessions[sid].start = true;
                    next.collectors[c].pc = CPc::ReadGc;
                }
                CPc::Idle => {
                    // Old: reads gc/ without a session and first finishes an
                    // unfinished generation.
                    match self.unfinished(&s.gens) {
                        Some(u) => {
                            cn.n = u;
                            cn.then = Then::Start;
                            cn.pc = CPc::SweepListSessions;
                            arg = u;
                        }
                        None => cn.pc = CPc::Start,
                    }
                }
                CPc::Start => {
                    next.sessions[sid].start = true;
                    *cn = Collector {
                        pc: CPc::ReadGc,
                        ..Collector::default()
                    };
                }
                CPc::ReadGc => {
                    cn.saw = self.seen(&s.gens);
                    cn.pc = CPc::CreateSaw;
                    match self.unfinished(&s.gens) {
                        // New: resume h+1 first, with the session open.
                        Some(u) if self.rules.collector_session_first => {
                            cn.n = u;
                            cn.then = Then::Plan;
                        }
                        // Old: another prune marked meanwhile: abort.
                        Some(_) => cn.n = 0,
                        None => {
                            cn.n = cn.saw + 1;
                            cn.then = Then::End;
                        }
                    }
                    arg = cn.n;
                }
                CPc::CreateSaw => {
                    next.sessions[sid].saw = Some(me.saw);
                    let cn = &mut next.collectors[c];
                    if self.rules.keep_gc_claims {
                        cn.saw = 0; // only old clean-up uses it later
                    }
                    cn.pc = if me.n == 0 || me.n > self.gens() {
                        CPc::End // aborted, or beyond the model's bound
                    } else if me.then == Then::Plan {
                        CPc::SweepListSessions
                    } else {
                        CPc::ListSnapshots
                    };
                }
                CPc::ListSnapshots => {
                    cn.analysed = self.valid_snaps(s);
                    cn.pc = CPc::Plan;
                }
                CPc::Plan => {
                    // Labelled by the condemned packs, plus bit 7 if it repacks
                    // (next_state finds a step by its label: labels must differ).
                    let first = out.len();
                    for n in self.plans(s, c) {
                        let p = n.collectors[c];
                        let label = p.condemned | if p.out != 0 { 0x80 } else { 0 };
                        assert!(
                            out[first..].iter().all(|(a, _)| *a != step("plan", label)),
                            "two plans share the label {label:#x}"
                        );
                        out.push((step("plan", label), n));
                    }
                    return;
                }
                CPc::RepackPack => {
                    let p = self.collector_pack(c);
                    next.pack_blobs[p] = me.out;
                    next.live |= bit(p);
                    next.collectors[c].out = 0;
                    next.collectors[c].pc = CPc::RepackIndex;
                }
                CPc::RepackIndex => {
                    // Copies are indexed before their sources are condemned (rule 5).
                    next.index |= bit(self.collector_pack(c));
                    next.collectors[c].pc = self.before_mark();
                }
                CPc::FenceCheckMark => {
                    // Rule 4: a fenced collector publishes nothing, deletes nothing.
                    if s.sessions[sid].end == End::Fenced {
                        self.collector_stop(&mut next, c);
                    } else {
                        cn.pc = CPc::CreateMark;
                    }
                }
                CPc::CreateMark => {
                    let n = me.n;
                    arg = n;
                    (cn.analysed, cn.condemned) = (0, 0);
                    if self.gen(s, n).mark.is_some() {
                        cn.pc = CPc::End; // lost the race: delete nothing
                    } else {
                        next.gens[n as usize - 1].mark = Some((me.analysed, me.condemned));
                        Self::created_gc(&mut next, n, 0);
                        let cn = &mut next.collectors[c];
                        cn.then = Then::End;
                        cn.pc = if self.rules.relist_after_mark {
                            CPc::Relist
                        } else {
                            CPc::SweepListSessions
                        };
                    }
                }
                CPc::Relist => {
                    let above = (me.n + 1..=self.gens()).any(|m| {
                        let g = self.gen(s, m);
                        g.mark.is_some() || g.sweep.is_some() || g.done
                    });
                    cn.pc = if above {
                        CPc::End
                    } else {
                        CPc::SweepListSessions
                    };
                }
                CPc::SweepListSessions => {
                    // Rule 6: sessions with no `.end` that saw less than n.
                    let n = me.n;
                    arg = n;
                    cn.blocking = (0..s.sessions.len())
                        .filter(|&i| i != sid)
                        .filter(|&i| {
                            let x = s.sessions[i];
                            x.start && x.end == End::None && x.saw.is_none_or(|g| g < n)
                        })
                        .fold(0, |m, i| m | bit(i));
                    cn.pc = if cn.blocking == 0 {
                        CPc::SweepCompute
                    } else {
                        CPc::SweepFence
                    };
                }
                CPc::SweepFence => {
                    // Rule 7: fence a blocking session (it may always look
                    // stale), or postpone the sweep.
                    let i = me.blocking.trailing_zeros() as usize;
                    let mut f = *s;
                    if f.sessions[i].end == End::None {
                        f.sessions[i].end = End::Fenced;
                    }
                    f.collectors[c].blocking &= !bit(i);
                    if f.collectors[c].blocking == 0 {
                        f.collectors[c].pc = CPc::SweepCompute;
                    }
                    out.push((step("fence", i as u8), f));
                    if me.then == Then::Start {
                        self.collector_stop(&mut next, c); // old: no session to end
                    } else {
                        cn.pc = CPc::End;
                    }
                    out.push((step("postpone", 0), next));
                    return;
                }
                CPc::SweepCompute => {
                    // Rule 8.2: spare condemned packs that hold a blob of a valid
                    // snapshot not in A_n.
                    match self.gen(s, me.n).mark {
                        None => self.collector_stop(&mut next, c), // old: "not found" error
                        Some((a, cond)) => {
                            let newer = self.valid_snaps(s) & !a;
                            let spared = self.holders(s, cond & s.live, self.blobs_of(s, newer));
                            cn.d = cond & !spared;
                            cn.pc = CPc::SweepCreate;
                            arg = cn.d;
                        }
                    }
                }
                CPc::SweepCreate => {
                    // Rule 8.3: Create(sweep = D_n), or adopt the winner's.
                    let n = me.n;
                    match self.gen(s, n).sweep {
                        Some(d) => cn.d = d,
                        None => {
                            next.gens[n as usize - 1].sweep = Some(me.d);
                            Self::created_gc(&mut next, n, 1);
                        }
                    }
                    let cn = &mut next.collectors[c];
                    arg = cn.d;
                    cn.pc = if self.rules.fence_checks {
                        CPc::SweepFenceCheck
                    } else {
                        CPc::SweepCompact
                    };
                }
                CPc::SweepFenceCheck => {
                    if s.sessions[sid].end == End::Fenced {
                        self.collector_stop(&mut next, c);
                    } else {
                        cn.pc = CPc::SweepCompact;
                    }
                }
                CPc::SweepCompact => {
                    next.index &= !me.d;
                    if self.rules.compact_drops_absent {
                        next.index &= s.live;
                    }
                    next.collectors[c].pc = CPc::SweepDelete;
                }
                CPc::SweepDelete => {
                    next.live &= !me.d;
                    next.collectors[c].d = 0;
                    arg = me.d;
                    next.collectors[c].pc = CPc::SweepDone;
                }
                CPc::SweepDone => {
                    let n = me.n;
                    arg = n;
                    if !self.gen(s, n).done {
                        next.gens[n as usize - 1].done = true;
                        Self::created_gc(&mut next, n, 2);
                    }
                    self.clean_up(&mut next, n);
                    let cn = &mut next.collectors[c];
                    match me.then {
                        Then::End => cn.pc = CPc::End,
                        Then::Start => cn.pc = CPc::Start,
                        Then::Plan => {
                            let saw = cn.saw;
                            *cn = Collector {
                                pc: if n < self.gens() {
                                    CPc::ListSnapshots
                                } else {
                                    CPc::End
                                },
                                n: n + 1,
                                saw,
                                ..Collector::default()
                            };
                        }
                    }
                }
                CPc::End | CPc::EndThenCleanUp => {
                    if s.sessions[sid].end == End::None {
                        next.sessions[sid].end = End::Closed;
                    }
                    if me.pc == CPc::End {
                        self.collector_stop(&mut next, c);
                    } else {
                        next.collectors[c].pc = CPc::CleanUp;
                    }
                }
                CPc::CleanUp => {
                    self.clean_up(&mut next, me.saw);
                    self.collector_stop(&mut next, c);
                }
                CPc::Stopped => return,
            }
        }
        out.push((step(cpc_name(me.pc), arg), next));
    }

    /// Where a collector goes once its plan (and repack) is ready to publish.
    fn before_mark(&self) -> CPc {
        if self.rules.fence_checks {
            CPc::FenceCheckMark
        } else {
            CPc::CreateMark
        }
    }

    fn collector_stop(&self, s: &mut State, c: usize) {
        s.collectors[c] = Collector {
            pc: CPc::Stopped,
            ..Collector::default()
        };
    }

    /// Rule 5: every plan a collector may make now (one successor each).
    fn plans(&self, s: &State, c: usize) -> Vec<State> {
        let me = s.collectors[c];
        let indexed = self.live_index(s);
        let reached = self.blobs_of(s, me.analysed);
        let mut out = Vec::new();
        // Rule 11: a reachable blob that no live index entry lists aborts.
        if self.rules.plan_aborts_unindexed && reached & !self.contents(s, indexed) != 0 {
            let mut n = *s;
            n.collectors[c].pc = CPc::End;
            return vec![n];
        }
        // Which copy serves each reached blob (old: one copy counts as used;
        // unindexed blobs are ignored).
        let blobs: Vec<u8> = [K, J].into_iter().filter(|b| reached & b != 0).collect();
        let choices: Vec<Vec<usize>> = blobs
            .iter()
            .map(|&b| {
                let h = self.holders(s, indexed, b);
                (0..8).filter(|&p| h & bit(p) != 0).collect()
            })
            .collect();
        let mut serve = vec![0usize; blobs.len()];
        loop {
            let mut used = [0u8; MAX_PACKS];
            for (i, &b) in blobs.iter().enumerate() {
                if let Some(&p) = choices[i].get(serve[i]) {
                    used[p] |= b;
                }
            }
            self.decide(s, c, indexed, &used, &mut out);
            // Next combination of served copies.
            let mut i = 0;
            while i < serve.len() {
                serve[i] += 1;
                if serve[i] < choices[i].len() {
                    break;
                }
                serve[i] = 0;
                i += 1;
            }
            if i == serve.len() {
                break;
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Per listed pack: unindexed or unused → condemned; partly used → kept or
    /// repacked (policy); fully used → kept.
    #[allow(clippy::needless_range_loop)]
    fn decide(&self, s: &State, c: usize, indexed: u8, used: &[u8], out: &mut Vec<State>) {
        let mut must = 0u8;
        let mut partly = Vec::new();
        for p in 0..s.pack_blobs.len() {
            if s.live & bit(p) == 0 {
                continue;
            }
            if indexed & bit(p) == 0 || used[p] == 0 {
                must |= bit(p);
            } else if used[p] != s.pack_blobs[p] {
                partly.push(p);
            }
        }
        for policy in 0..(1u32 << partly.len()) {
            let mut cond = must;
            let mut copy = 0u8;
            for (i, &p) in partly.iter().enumerate() {
                if policy & (1 << i) != 0 {
                    cond |= bit(p);
                    copy |= used[p];
                }
            }
            let mut n = *s;
            let cn = &mut n.collectors[c];
            if cond == 0 {
                // Nothing to collect: no generation is spent.
                cn.pc = CPc::EndThenCleanUp;
            } else {
                cn.condemned = cond;
                cn.out = copy;
                cn.pc = if copy != 0 {
                    CPc::RepackPack
                } else {
                    self.before_mark()
                };
            }
            out.push(n);
        }
    }

    // ---- crash --------------------------------------------------

    fn crash_moves(&self, s: &State, out: &mut Vec<(Action, State)>) {
        if self.crash {
            for w in 0..self.writers {
                if !matches!(s.writers[w].pc, WPc::Done | WPc::Failed) {
                    let mut n = *s;
                    self.writer_finish(&mut n, w);
                    out.push((Action::Crash(w), n));
                }
            }
            for c in 0..self.collectors {
                if s.collectors[c].pc != CPc::Stopped {
                    let mut n = *s;
                    self.collector_stop(&mut n, c);
                    out.push((Action::Crash(self.collector_sess(c)), n));
                }
            }
        }
    }

    /// Every step the system can take from `s`.
    pub fn moves(&self, s: &State) -> Vec<(Action, State)> {
        let mut out = Vec::new();
        for w in 0..self.writers {
            self.writer_moves(s, w, &mut out);
        }
        for c in 0..self.collectors {
            self.collector_moves(s, c, &mut out);
        }
        self.crash_moves(s, &mut out);
        out
    }

    // ---- symmetry ------------------------------------------------------------

    /// `s` with its actors renamed by `p`.
    fn permute(&self, s: &State, p: &Perm) -> State {
        let packs = |m: u8| p.pack_bits[m as usize];
        let snaps = |m: u8| p.snap_bits[m as usize];
        let mut t = *s;
        for i in 0..MAX_PACKS {
            t.pack_blobs[p.pack[i] as usize] = s.pack_blobs[i];
        }
        t.live = packs(s.live);
        t.index = packs(s.index);
        t.snaps = snaps(s.snaps);
        for i in 0..MAX_SESSIONS {
            t.sessions[p.sess[i] as usize] = s.sessions[i];
        }
        for (g, h) in t.gens.iter_mut().zip(&s.gens) {
            g.mark = h.mark.map(|(a, c)| (snaps(a), packs(c)));
            g.sweep = h.sweep.map(packs);
        }
        for w in 0..self.writers {
            let mut x = s.writers[w];
            x.excl = packs(x.excl);
            t.writers[p.wp[w] as usize] = x;
        }
        for c in 0..self.collectors {
            let mut x = s.collectors[c];
            x.analysed = snaps(x.analysed);
            x.condemned = packs(x.condemned);
            x.d = packs(x.d);
            x.blocking = p.sess_bits[x.blocking as usize];
            t.collectors[p.cp[c] as usize] = x;
        }
        t
    }

    /// The least state among all renamings of writers and of collectors.
    pub fn representative(&self, s: &State) -> State {
        let mut best = *s;
        for p in &self.perms {
            let t = self.permute(s, p);
            if t < best {
                best = t;
            }
        }
        best
    }

    /// Forgets values that no actor and no property will read again (see
    /// "Dead values" in the module docs): states that differ only in them
    /// have the same futures.
    pub fn normalize(&self, s: &mut State) {
        // Index entries of packs that are gone: every reader intersects the
        // index with the live packs, and a pack slot is written only once.
        s.index &= s.live;
        for i in 0..MAX_SESSIONS {
            // `.start`/`.saw` of an ended session: only `SweepListSessions`
            // reads them, after `.end`; clean-up clears them anyway.
            if s.sessions[i].end != End::None {
                s.sessions[i].start = false;
                s.sessions[i].saw = None;
            }
        }
        for c in 0..self.collectors {
            // `End` reads no local state; old `EndThenCleanUp`/`CleanUp`
            // read `saw` only.
            let x = &mut s.collectors[c];
            match x.pc {
                CPc::End => {
                    *x = Collector {
                        pc: CPc::End,
                        ..Collector::default()
                    }
                }
                CPc::EndThenCleanUp | CPc::CleanUp => {
                    *x = Collector {
                        pc: x.pc,
                        saw: x.saw,
                        ..Collector::default()
                    }
                }
                _ => {}
            }
        }
        let analysed = s.collectors.iter().fold(0, |m, x| m | x.analysed);
        for w in 0..self.writers {
            // A finished writer's blobs are read only through its snapshot,
            // while it exists or while a plan holds it in `A_n`.
            let snap = bit(self.writer_snap(w));
            if matches!(s.writers[w].pc, WPc::Done | WPc::Failed)
                && (s.snaps | analysed) & snap == 0
            {
                s.writers[w].blobs = 0;
            }
        }
        if self.rules.void_records && self.rules.keep_gc_claims {
            // Records of generations up to the highest finished one `h`: a
            // collector reads generation `m`'s contents only while it works
            // on `m` (`n == m`), and every collector picks `n > h`; writers'
            // views read only `D_h`. Their existence still matters.
            let h = Self::highest_done(&s.gens);
            for m in 1..=h {
                let busy = s.collectors[..self.collectors]
                    .iter()
                    .any(|x| x.n == m && !matches!(x.pc, CPc::End | CPc::Stopped));
                if busy {
                    continue;
                }
                let g = &mut s.gens[m as usize - 1];
                g.mark = g.mark.map(|_| (0, 0));
                if m < h {
                    g.sweep = g.sweep.map(|_| 0);
                }
            }
        }
    }

    fn canonical(&self, mut s: State) -> State {
        self.normalize(&mut s);
        if self.symmetry {
            self.representative(&s)
        } else {
            s
        }
    }

    /// The initial repository: `S0 = {k}` in pack `X = {k, g}`, indexed.
    pub fn initial(&self) -> State {
        let mut pack_blobs = [0; MAX_PACKS];
        pack_blobs[0] = K | GARBAGE;
        State {
            pack_blobs,
            live: 1,
            index: 1,
            snaps: 1,
            sessions: [Sess::default(); MAX_SESSIONS],
            gens: [Gen::default(); MAX_COLLECTORS],
            gc_created: 0,
            gc_twice: false,
            writers: [Writer::default(); MAX_WRITERS],
            collectors: [Collector::default(); MAX_COLLECTORS],
        }
    }

    // ---- invariants ------------------------------------------------------------

    /// Whether every blob of the valid snapshots in `which` is in some pack of `packs`.
    fn held(&self, s: &State, which: u8, packs: u8) -> bool {
        let needed = self.blobs_of(s, self.valid_snaps(s) & which);
        needed & !self.contents(s, packs) == 0
    }
}

fn wpc_name(pc: WPc) -> &'static str {
    match pc {
        WPc::Idle => "start",
        WPc::ListGc => "list gc/",
        WPc::ReadGc => "read gc/",
        WPc::CreateSaw => "create saw",
        WPc::LoadIndex => "load index",
        WPc::Upload => "upload pack",
        WPc::WriteIndex => "write index",
        WPc::Commit => "write snapshot, commit",
        WPc::DeleteIndex => "fenced: delete own index",
        WPc::Done => "done",
        WPc::Failed => "failed",
    }
}

fn cpc_name(pc: CPc) -> &'static str {
    match pc {
        CPc::Idle => "begin",
        CPc::Start => "start session",
        CPc::ReadGc => "read gc/",
        CPc::CreateSaw => "create saw",
        CPc::ListSnapshots => "list snapshots",
        CPc::Plan => "plan",
        CPc::RepackPack => "repack: write pack",
        CPc::RepackIndex => "repack: write index",
        CPc::FenceCheckMark => "check own fence",
        CPc::CreateMark => "create mark",
        CPc::Relist => "re-list gc/",
        CPc::SweepListSessions => "sweep: list sessions",
        CPc::SweepFence => "sweep: fence",
        CPc::SweepCompute => "sweep: compute D",
        CPc::SweepCreate => "sweep: create/adopt sweep",
        CPc::SweepFenceCheck => "sweep: check own fence",
        CPc::SweepCompact => "sweep: compact index",
        CPc::SweepDelete => "sweep: delete packs",
        CPc::SweepDone => "sweep: create done, clean up",
        CPc::End => "end session",
        CPc::EndThenCleanUp => "end session (nothing to do)",
        CPc::CleanUp => "clean up",
        CPc::Stopped => "stopped",
    }
}

impl Model for GcModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.canonical(self.initial())]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let mut moves = Vec::new();
        if let Some(a) = self.por.then(|| self.ample_actor(state)).flatten() {
            self.actor_moves(state, a, &mut moves);
        }
        if moves.is_empty() {
            moves = self.moves(state);
        }
        actions.extend(moves.into_iter().map(|(a, _)| a));
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        let mut out = Vec::new();
        match action {
            Action::Writer(w, ..) => self.writer_moves(state, w, &mut out),
            Action::Collector(c, ..) => self.collector_moves(state, c, &mut out),
            _ => self.crash_moves(state, &mut out),
        }
        out.into_iter()
            .find(|(a, _)| *a == action)
            .map(|(_, s)| self.canonical(s))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(LOST_S0, |m, s| m.held(s, 1, s.live)),
            Property::always(LOST_W, |m, s| m.held(s, !1, s.live)),
            Property::always(UNINDEXED, |m, s| m.held(s, !0, s.live & s.index)),
            Property::always(GC_TWICE, |_, s: &State| !s.gc_twice),
            Property::always(SPURIOUS, |_, s: &State| {
                s.writers.iter().all(|w| w.pc != WPc::Failed)
            }),
            // Reachability examples: the exploration is not vacuous.
            Property::sometimes(EX_TWO_GENERATIONS, |m, s: &State| {
                m.collectors >= 2 && s.gens[1].done
            }),
            Property::sometimes(EX_PACK_DELETED, |_, s: &State| {
                (0..MAX_PACKS).any(|p| s.pack_blobs[p] != 0 && s.live & bit(p) == 0)
            }),
            Property::sometimes(EX_WRITER_FENCED, |m, s: &State| {
                (0..m.writers).any(|w| s.sessions[w].end == End::Fenced)
            }),
            Property::sometimes(EX_COLLECTOR_FENCED, |m, s: &State| {
                (0..m.collectors).any(|c| s.sessions[m.collector_sess(c)].end == End::Fenced)
            }),
        ]
    }
}

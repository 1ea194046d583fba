//! A depth-first explorer that keeps only a 64-bit fingerprint per state.
//!
//! stateright's checkers keep, per unique state, a fingerprint, its parent's
//! fingerprint and a concurrent hash map's overhead (about 100 bytes a state
//! for this model), and the breadth-first one also keeps the whole frontier.
//! 2 writers × 3 collectors reach billions of states, which does not fit.
//! This explorer visits the same reduced state graph (the successors of a
//! state are exactly those of [`Model::actions`] + [`Model::next_state`]:
//! the ample actor's moves when partial-order reduction finds one, else every
//! move, each made canonical), but stores only 8 bytes per state in one
//! open-addressing table, and keeps the path to the current state on its
//! stack, so a violation comes with its trace.
//!
//! Depth-first search needs no cycle proviso for the reduction here: the
//! state graph is acyclic (crate docs). For the same reason the search can
//! be split between threads that share the table: which thread first reaches
//! a state, and on which path, changes nothing about the set of states
//! visited. An idle thread gets work from a busy one, which hands over the
//! unvisited successors of the shallowest state on its stack (the largest
//! pieces of work it has), each with the path that leads to it.
//!
//! Fingerprints are 64-bit, as in stateright and TLC: two distinct states
//! with the same fingerprint would hide the second one's future. With `n`
//! states the chance of any such collision is about `n² / 2⁶⁵` (about 3% at
//! 10⁹ states, 11% at 2·10⁹); [`Report::collision_odds`] says it for a run.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use stateright::{Expectation, Model, Property};

use crate::{Action, GcModel, State};

/// How to explore.
#[derive(Clone, Debug)]
pub struct Options {
    /// Slots in the fingerprint table (8 bytes each); any number, not only
    /// powers of two, so a table can take what memory the machine has.
    pub slots: u64,
    /// Refuse to fill the table beyond this fraction (linear probing slows
    /// down sharply near full).
    pub max_load: f64,
    /// Threads sharing the search.
    pub threads: usize,
}

impl Options {
    /// A table of `2^bits` slots, filled to at most 90%, on one thread.
    pub fn bits(bits: u32) -> Options {
        Options {
            slots: 1 << bits,
            max_load: 0.9,
            threads: 1,
        }
    }
}

/// What one exploration found.
#[derive(Debug, Default)]
pub struct Report {
    /// Distinct states visited (up to fingerprint collisions).
    pub unique: u64,
    /// Successors generated, counting repeats.
    pub generated: u64,
    /// The longest path explored, in steps (depth-first: the path on which a
    /// state was first reached, not its shortest one).
    pub max_depth: usize,
    /// Each violated `always` property, with the actions leading to it.
    pub violations: Vec<(&'static str, Vec<Action>)>,
    /// The `sometimes` properties reached.
    pub reached: Vec<&'static str>,
    pub elapsed: Duration,
    /// Slots in the fingerprint table.
    pub table_slots: u64,
}

impl Report {
    /// The chance that two of the states visited share a fingerprint
    /// (`n² / 2⁶⁵`): the probability that the search missed anything.
    pub fn collision_odds(&self) -> f64 {
        let n = self.unique as f64;
        n * n / 2f64.powi(65)
    }
}

/// Progress, reported about every `PROGRESS_EVERY` new states.
pub struct Progress {
    pub unique: u64,
    pub generated: u64,
    /// The depth of the reporting thread's current state.
    pub depth: usize,
    pub max_depth: usize,
    pub elapsed: Duration,
    pub load: f64,
    /// The `always` properties violated so far (a long run shows them
    /// before it ends).
    pub violated: Vec<&'static str>,
}

const PROGRESS_EVERY: u64 = 1 << 24;
/// Threads add their counts to the shared ones this often (a shared counter
/// bumped per state would bounce a cache line between cores).
const FLUSH_EVERY: u64 = 1 << 12;

/// Why an exploration stopped early.
#[derive(Debug)]
pub enum Stopped {
    /// The table is fuller than the load limit: rerun with more slots.
    TableFull { unique: u64, slots: u64 },
}

/// Open addressing with linear probing; 0 marks an empty slot. Slots are
/// atomics so that threads can share the table: a slot goes from 0 to a
/// fingerprint once and never changes again.
struct FingerprintSet {
    slots: Table,
    len: AtomicU64,
}

impl FingerprintSet {
    fn new(slots: u64) -> FingerprintSet {
        FingerprintSet {
            slots: Table::zeroed(slots as usize),
            len: AtomicU64::new(0),
        }
    }

    /// Inserts `fp` (non-zero); false when it was already there.
    fn insert(&self, fp: u64) -> bool {
        let slots = self.slots.as_slice();
        // The high bits pick the slot (multiply-shift, so any table size
        // works); the rest of the same hash is what distinguishes
        // fingerprints within a run of slots.
        let mut i = ((fp as u128 * slots.len() as u128) >> 64) as usize;
        loop {
            let slot = &slots[i];
            let current = slot.load(Relaxed);
            if current == fp {
                return false;
            }
            if current == 0 {
                match slot.compare_exchange(0, fp, Relaxed, Relaxed) {
                    Ok(_) => return true,
                    // Another thread filled the slot first: with this
                    // fingerprint, or with another one (probe on).
                    Err(other) if other == fp => return false,
                    Err(_) => {}
                }
            }
            i += 1;
            if i == slots.len() {
                i = 0;
            }
        }
    }
}

/// The table's memory. On Linux it is mapped directly and marked for huge
/// pages: a table of many GiB is read at random, and with 4 KiB pages nearly
/// every probe also missed the TLB (2×3 ran at half the speed of 2×2).
struct Table {
    ptr: *mut AtomicU64,
    len: usize,
}

// SAFETY: the table is a slice of atomics, which may be shared and sent.
unsafe impl Sync for Table {}
unsafe impl Send for Table {}

impl Table {
    #[cfg(target_os = "linux")]
    fn zeroed(len: usize) -> Table {
        let bytes = len * 8;
        // SAFETY: an anonymous private mapping, zero-filled by the kernel,
        // checked for failure; it is only ever used as `len` atomics and
        // unmapped once, in `drop`.
        unsafe {
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            assert!(ptr != libc::MAP_FAILED, "cannot map a {bytes}-byte table");
            // Advice only: without transparent huge pages it changes nothing.
            libc::madvise(ptr, bytes, libc::MADV_HUGEPAGE);
            Table {
                ptr: ptr.cast(),
                len,
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn zeroed(len: usize) -> Table {
        let slots: Box<[AtomicU64]> = (0..len).map(|_| AtomicU64::new(0)).collect();
        Table {
            len,
            ptr: Box::into_raw(slots).cast(),
        }
    }

    fn as_slice(&self) -> &[AtomicU64] {
        // SAFETY: `ptr` points at `len` initialised (zeroed) atomics that
        // live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: the mapping (or box) made in `zeroed`, released once.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::munmap(self.ptr.cast(), self.len * 8);
        }
        #[cfg(not(target_os = "linux"))]
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.ptr, self.len,
            )));
        }
    }
}

fn fingerprint(s: &State) -> u64 {
    let mut bytes = ByteSink::default();
    s.hash(&mut bytes);
    // One call over the whole encoding, with fixed seeds: a derived `Hash`
    // makes one call per small field, which cost a third of the search.
    let seeds = ahash::RandomState::with_seeds(
        0x6361_6972_6e67_636d,
        0x6d6f_6465_6c21_0001,
        0x6669_6e67_6572_7072,
        0x696e_7473_2121_0002,
    );
    seeds.hash_one(&bytes.buf[..bytes.len]).max(1)
}

/// Collects the bytes `Hash` feeds in.
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

/// A piece of work: a state not yet known to be visited, and the path from
/// an initial state to it.
struct Work {
    path: Vec<Action>,
    state: State,
}

/// What the threads share.
struct Search<'m> {
    model: &'m GcModel,
    properties: Vec<Property<GcModel>>,
    seen: FingerprintSet,
    limit: u64,
    generated: AtomicU64,
    max_depth: AtomicUsize,
    violations: Mutex<Vec<(&'static str, Vec<Action>)>>,
    reached: Mutex<Vec<&'static str>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Threads waiting for work (read without the lock by busy threads).
    hungry: AtomicUsize,
    full: AtomicBool,
    threads: usize,
    started: Instant,
}

struct Queue {
    work: Vec<Work>,
    idle: usize,
    done: bool,
}

impl Search<'_> {
    /// The next piece of work, waiting for one while another thread is busy;
    /// `None` once every thread is idle and nothing is left.
    fn take(&self) -> Option<Work> {
        let mut q = self.queue.lock().unwrap();
        loop {
            if let Some(w) = q.work.pop() {
                return Some(w);
            }
            if q.done || self.full.load(Relaxed) {
                return None;
            }
            q.idle += 1;
            if q.idle == self.threads {
                q.done = true;
                self.wake.notify_all();
                return None;
            }
            self.hungry.store(q.idle, Relaxed);
            q = self.wake.wait(q).unwrap();
            q.idle -= 1;
            self.hungry.store(q.idle, Relaxed);
        }
    }

    fn give(&self, work: Vec<Work>) {
        let mut q = self.queue.lock().unwrap();
        q.work.extend(work);
        // Whoever wakes sets it again if it is still hungry.
        self.hungry.store(0, Relaxed);
        self.wake.notify_all();
    }

    fn check(&self, state: &State, path: impl Fn() -> Vec<Action>) {
        for p in &self.properties {
            let holds = (p.condition)(self.model, state);
            match p.expectation {
                Expectation::Always if !holds => {
                    let mut v = self.violations.lock().unwrap();
                    if !v.iter().any(|(n, _)| *n == p.name) {
                        v.push((p.name, path()));
                    }
                }
                Expectation::Sometimes if holds => {
                    let mut r = self.reached.lock().unwrap();
                    if !r.contains(&p.name) {
                        r.push(p.name);
                    }
                }
                _ => {}
            }
        }
    }

    fn worker(&self, progress: &(impl Fn(&Progress) + Sync)) {
        let mut counts = Counts::default();
        while let Some(work) = self.take() {
            self.depth_first(work, &mut counts, progress);
            if self.full.load(Relaxed) {
                // Wake the others so that they see it too.
                self.give(Vec::new());
                break;
            }
        }
        counts.flush(self, progress, 0);
    }

    /// Explores everything reachable from `work` that no thread has visited.
    fn depth_first(&self, work: Work, counts: &mut Counts, progress: &(impl Fn(&Progress) + Sync)) {
        // Each frame: the action that led to its state and that state's
        // successors still to visit (in the checker's order, popped from
        // the end).
        struct Frame {
            action: Option<Action>,
            next: Vec<(Action, State)>,
        }
        let Work { path: base, state } = work;
        let mut stack: Vec<Frame> = Vec::new();
        let path_to = |stack: &[Frame], last: Option<&Action>| -> Vec<Action> {
            let mut p = base.clone();
            p.extend(stack.iter().filter_map(|f| f.action.clone()));
            p.extend(last.cloned());
            p
        };
        let enter = |state: &State, action: Option<Action>, stack: &mut Vec<Frame>| {
            self.check(state, || path_to(&stack[..], action.as_ref()));
            let mut next = successors(self.model, state);
            next.reverse();
            stack.push(Frame { action, next });
        };

        counts.generated += 1;
        if !self.seen.insert(fingerprint(&state)) {
            return;
        }
        enter(&state, None, &mut stack);
        counts.new_states(self, progress, base.len());
        let mut steps = 0u32;
        while let Some(frame) = stack.last_mut() {
            let Some((action, state)) = frame.next.pop() else {
                stack.pop();
                continue;
            };
            counts.generated += 1;
            if !self.seen.insert(fingerprint(&state)) {
                continue;
            }
            enter(&state, Some(action), &mut stack);
            if counts.new_states(self, progress, base.len() + stack.len() - 1) {
                return;
            }
            steps = steps.wrapping_add(1);
            if steps.is_multiple_of(1024) && self.hungry.load(Relaxed) > 0 {
                // Hand over the successors of the shallowest state that
                // still has some: the biggest pieces of work this thread has.
                if let Some(k) = stack.iter().position(|f| !f.next.is_empty()) {
                    let next = std::mem::take(&mut stack[k].next);
                    let prefix = path_to(&stack[..=k], None);
                    let work = next
                        .into_iter()
                        .map(|(a, s)| {
                            let mut path = prefix.clone();
                            path.push(a);
                            Work { path, state: s }
                        })
                        .collect();
                    self.give(work);
                }
            }
        }
    }
}

/// One thread's counts, added to the shared ones every `FLUSH_EVERY` states.
#[derive(Default)]
struct Counts {
    new: u64,
    generated: u64,
    max_depth: usize,
}

impl Counts {
    /// Counts a new state; true when the table is full and the search must
    /// stop.
    fn new_states(
        &mut self,
        search: &Search,
        progress: &(impl Fn(&Progress) + Sync),
        depth: usize,
    ) -> bool {
        self.new += 1;
        self.max_depth = self.max_depth.max(depth);
        if self.new == FLUSH_EVERY {
            self.flush(search, progress, depth);
        }
        search.full.load(Relaxed)
    }

    fn flush(&mut self, search: &Search, progress: &(impl Fn(&Progress) + Sync), depth: usize) {
        let before = search.seen.len.fetch_add(self.new, Relaxed);
        let unique = before + self.new;
        let generated = search.generated.fetch_add(self.generated, Relaxed) + self.generated;
        let max_depth = search
            .max_depth
            .fetch_max(self.max_depth, Relaxed)
            .max(self.max_depth);
        *self = Counts::default();
        if unique > search.limit {
            search.full.store(true, Relaxed);
        }
        if before / PROGRESS_EVERY != unique / PROGRESS_EVERY {
            progress(&Progress {
                unique,
                generated,
                depth,
                max_depth,
                elapsed: search.started.elapsed(),
                load: unique as f64 / search.seen.slots.len as f64,
                violated: search
                    .violations
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(n, _)| *n)
                    .collect(),
            });
        }
    }
}

/// Explores every reachable state depth-first, on `options.threads` threads
/// sharing a table of `options.slots` fingerprints, refusing to fill it
/// beyond `options.max_load`.
pub fn explore(
    model: &GcModel,
    options: &Options,
    progress: impl Fn(&Progress) + Sync,
) -> Result<Report, Stopped> {
    let threads = options.threads.max(1);
    let search = Search {
        model,
        properties: model.properties(),
        seen: FingerprintSet::new(options.slots),
        limit: (options.max_load * options.slots as f64) as u64,
        generated: AtomicU64::new(0),
        max_depth: AtomicUsize::new(0),
        violations: Mutex::new(Vec::new()),
        reached: Mutex::new(Vec::new()),
        queue: Mutex::new(Queue {
            // Popped from the end: the first initial state first.
            work: model
                .init_states()
                .into_iter()
                .rev()
                .map(|state| Work {
                    path: Vec::new(),
                    state,
                })
                .collect(),
            idle: 0,
            done: false,
        }),
        wake: Condvar::new(),
        hungry: AtomicUsize::new(0),
        full: AtomicBool::new(false),
        threads,
        started: Instant::now(),
    };
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| search.worker(&progress));
        }
    });
    let unique = search.seen.len.load(Relaxed);
    if search.full.load(Relaxed) {
        return Err(Stopped::TableFull {
            unique,
            slots: options.slots,
        });
    }
    let mut violations = search.violations.into_inner().unwrap();
    // Report in the properties' order, whichever thread found one first.
    let order: Vec<&str> = search.properties.iter().map(|p| p.name).collect();
    violations.sort_by_key(|(n, _)| order.iter().position(|o| o == n));
    Ok(Report {
        unique,
        generated: search.generated.load(Relaxed),
        max_depth: search.max_depth.load(Relaxed),
        violations,
        reached: search.reached.into_inner().unwrap(),
        elapsed: search.started.elapsed(),
        table_slots: options.slots,
    })
}

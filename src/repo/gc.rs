//! The state of garbage collection as the repository records it under `gc/`
//! (repo-format.md §15): which generations were marked, swept and finished, and
//! so which packs a writer must not reuse.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::error::{Error, Result};
use crate::format::id::PackId;
use crate::format::records::{self, GcMark, GcSweep, GC_DIR};
use crate::repo::Repository;

/// Every generation's records, read in full: a writer or collector that cannot
/// read a record it listed must not go on (its view of condemned data would be
/// wrong), so any unreadable record is an error here.
#[derive(Debug, Default, Clone)]
pub struct GcState {
    pub marks: BTreeMap<u64, GcMark>,
    pub sweeps: BTreeMap<u64, GcSweep>,
    pub done: BTreeSet<u64>,
}

impl GcState {
    pub fn load(repo: &Repository) -> Result<GcState> {
        let mut state = GcState::default();
        for l in repo.backend().list(GC_DIR)? {
            let Some((n, what)) = records::parse_gc_key(&l.key) else {
                continue; // probes and strays
            };
            match what {
                "mark" => {
                    state.marks.insert(n, read_record(repo, &l.key)?);
                }
                "sweep" => {
                    state.sweeps.insert(n, read_record(repo, &l.key)?);
                }
                "done" => {
                    state.done.insert(n);
                }
                _ => {}
            }
        }
        Ok(state)
    }

    /// The highest generation marked so far (0 when none).
    pub fn latest(&self) -> u64 {
        self.marks.keys().next_back().copied().unwrap_or(0)
    }

    /// The generation that is marked but not finished, if any (at most one:
    /// generation n+1 is only ever marked once n is done).
    pub fn unfinished(&self) -> Option<u64> {
        self.marks
            .keys()
            .copied()
            .filter(|n| !self.done.contains(n))
            .max()
    }

    /// Packs a writer that saw generation `g` must not reuse: every pack
    /// condemned by a recorded generation up to `g` (rule 2). Packs a sweep
    /// later spared stay excluded until the records go: that only costs dedup.
    pub fn condemned_up_to(&self, g: u64) -> HashSet<PackId> {
        self.marks
            .range(..=g)
            .flat_map(|(_, m)| m.condemned.iter().copied())
            .collect()
    }

    /// Every pack any recorded generation condemned: never re-indexed by the
    /// adoption of unindexed packs.
    pub fn all_condemned(&self) -> HashSet<PackId> {
        self.condemned_up_to(u64::MAX)
    }

    /// Packs already deleted by finished sweeps (a reader that misses one of
    /// these is looking at an old index, not at damage).
    pub fn deleted(&self) -> HashSet<PackId> {
        self.sweeps
            .values()
            .flat_map(|s| s.deleted.iter().copied())
            .collect()
    }
}

pub(crate) fn read_record<T: for<'de> serde::Deserialize<'de>>(
    repo: &Repository,
    key: &str,
) -> Result<T> {
    let bytes = repo.backend().get(key)?;
    records::open_record(repo.cipher(), key, &bytes).map_err(|e| Error::format(key.to_string(), e))
}

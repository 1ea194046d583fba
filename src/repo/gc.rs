//! The state of garbage collection as the repository records it under `gc/`
//! (repo-format.md §15): the highest finished generation, the one generation
//! that may be open above it, and so which packs a writer must not reuse.
//!
//! Decisions come from records that were read, authenticated against their
//! own names and bounded in size; a name alone decides nothing. Records of
//! generations below the highest finished one are void: nobody reads them.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::error::{Error, Result};
use crate::format::id::PackId;
use crate::format::records::{
    self, gc_key, GcDone, GcMark, GcRecord, GcSweep, GC_DIR, MAX_GC_BODY_LEN, MAX_SMALL_RECORD_LEN,
};
use crate::repo::{is_content_error, Repository};

/// How often a reader lists `gc/` again when a record it listed is gone by
/// the time it reads it (a clean-up in between): each retry sees a newer
/// state, so a handful is plenty.
const RELISTS: usize = 8;

/// A record that could not be read or authenticated, or a name cairn never
/// writes: `check` reports these (exit 1); every other command errs on the
/// safe side and goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordProblem {
    pub key: String,
    pub message: String,
}

/// What the open generation's sweep record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepState {
    /// No sweeper has published D_n yet.
    Absent,
    /// D_n, the packs that generation deletes.
    Decided(BTreeSet<PackId>),
    /// A sweep claim exists but cannot be read: D_n is taken as empty (the
    /// generation deletes nothing), which is always safe.
    Unreadable,
}

/// The generation above the highest finished one, once it is marked.
#[derive(Debug, Clone)]
pub struct OpenGeneration {
    pub n: u64,
    /// The mark with its sets, or None when it cannot be read: then nobody
    /// knows what it condemned, and its sweep deletes nothing.
    pub mark: Option<GcMark>,
    pub sweep: SweepState,
}

#[derive(Debug, Default, Clone)]
pub struct GcState {
    /// The highest generation whose `.done` authenticates (0: none).
    pub finished: u64,
    /// Generation `finished + 1`, if it has a mark.
    pub open: Option<OpenGeneration>,
    pub problems: Vec<RecordProblem>,
}

impl GcState {
    /// Lists `gc/` and reads the records that matter. A record listed but gone
    /// when read was cleaned up meanwhile: the listing is taken again.
    pub fn load(repo: &Repository) -> Result<GcState> {
        let mut last = None;
        for _ in 0..RELISTS {
            match Self::load_once(repo) {
                Err(Error::MissingObject(k)) => last = Some(k),
                other => return other,
            }
        }
        Err(Error::MissingObject(last.unwrap_or_default()))
    }

    fn load_once(repo: &Repository) -> Result<GcState> {
        let mut state = GcState::default();
        let mut generations: BTreeMap<u64, Vec<GcRecordKey>> = BTreeMap::new();
        for l in repo.backend().list(GC_DIR)? {
            match classify(&l.key) {
                Some(Listed::Record(n, r)) => generations.entry(n).or_default().push(r),
                Some(Listed::Probe) => {}
                None => state.problem(&l.key, "not a record cairn writes"),
            }
        }
        state.finished = state.highest_done(repo, &generations)?;
        let n = state.finished + 1;
        if let Some(recs) = generations.get(&n) {
            if recs.contains(&GcRecordKey::Mark) {
                state.open = Some(state.read_open(repo, n, recs)?);
            }
        }
        for (&m, recs) in generations.range(n + 1..) {
            for r in recs.iter().filter(|r| r.is_claim()) {
                state.problem(
                    &r.key(m),
                    format!("generation {m} recorded while generation {n} is not finished: not written by cairn"),
                );
            }
        }
        Ok(state)
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(RecordProblem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// The highest generation whose `.done` reads back; planted or damaged
    /// ones are reported and passed over.
    fn highest_done(
        &mut self,
        repo: &Repository,
        generations: &BTreeMap<u64, Vec<GcRecordKey>>,
    ) -> Result<u64> {
        for (&n, recs) in generations.iter().rev() {
            if !recs.contains(&GcRecordKey::Done) {
                continue;
            }
            let key = gc_key(n, "done");
            match read_record::<GcDone>(repo, &key, MAX_SMALL_RECORD_LEN) {
                Ok(_) => return Ok(n),
                Err(e) if is_content_error(&e) => self.problem(&key, e.to_string()),
                Err(e) => return Err(e),
            }
        }
        Ok(0)
    }

    fn read_open(
        &mut self,
        repo: &Repository,
        n: u64,
        recs: &[GcRecordKey],
    ) -> Result<OpenGeneration> {
        let mark = match read_mark(repo, n) {
            Ok(m) => Some(m),
            Err(e) if is_content_error(&e) => {
                self.problem(&gc_key(n, "mark"), e.to_string());
                None
            }
            Err(e) => return Err(e),
        };
        let sweep = if !recs.contains(&GcRecordKey::Sweep) {
            SweepState::Absent
        } else {
            match read_sweep(repo, n) {
                Ok(d) => SweepState::Decided(d),
                Err(e) if is_content_error(&e) => {
                    self.problem(&gc_key(n, "sweep"), e.to_string());
                    SweepState::Unreadable
                }
                Err(e) => return Err(e),
            }
        };
        Ok(OpenGeneration { n, mark, sweep })
    }

    /// The highest generation whose condemned set a writer starting now must
    /// respect: the open one if its mark reads, else the finished one.
    pub fn latest(&self) -> u64 {
        match &self.open {
            Some(OpenGeneration {
                n, mark: Some(_), ..
            }) => *n,
            _ => self.finished,
        }
    }

    /// The generation that is marked but not finished, if any.
    pub fn unfinished(&self) -> Option<u64> {
        self.open.as_ref().map(|o| o.n)
    }

    /// Packs a writer that saw generation `g` must not reuse (rule 2): those
    /// the open generation condemned, if `g` reaches it. Packs of finished
    /// generations are either deleted (no listing shows them, and index loads
    /// keep only listed packs) or were spared by the sweep and are live again.
    pub fn condemned_up_to(&self, g: u64) -> HashSet<PackId> {
        match &self.open {
            Some(OpenGeneration {
                n, mark: Some(m), ..
            }) if *n <= g => m.condemned.iter().copied().collect(),
            _ => HashSet::new(),
        }
    }

    /// Every pack the open generation condemned: not re-indexed by the
    /// adoption of unindexed packs, not counted as live by verification.
    pub fn all_condemned(&self) -> HashSet<PackId> {
        self.condemned_up_to(u64::MAX)
    }
}

/// A gc key as listed: which generation, which record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GcRecordKey {
    Mark,
    Sweep,
    Done,
    Plan(String),
    Deleted(String),
}

impl GcRecordKey {
    fn is_claim(&self) -> bool {
        matches!(
            self,
            GcRecordKey::Mark | GcRecordKey::Sweep | GcRecordKey::Done
        )
    }

    fn key(&self, n: u64) -> String {
        match self {
            GcRecordKey::Mark => gc_key(n, "mark"),
            GcRecordKey::Sweep => gc_key(n, "sweep"),
            GcRecordKey::Done => gc_key(n, "done"),
            GcRecordKey::Plan(nonce) => plan_key(n, nonce),
            GcRecordKey::Deleted(nonce) => deleted_key(n, nonce),
        }
    }
}

enum Listed {
    Record(u64, GcRecordKey),
    Probe,
}

fn classify(key: &str) -> Option<Listed> {
    if key
        .strip_prefix(GC_DIR)
        .and_then(|k| k.strip_prefix("/probe-"))
        .is_some_and(|p| p.len() == 16 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Some(Listed::Probe);
    }
    let (n, what) = records::parse_gc_key(key)?;
    let r = match records::parse_gc_record(what)? {
        GcRecord::Mark => GcRecordKey::Mark,
        GcRecord::Sweep => GcRecordKey::Sweep,
        GcRecord::Done => GcRecordKey::Done,
        GcRecord::Plan(nonce) => GcRecordKey::Plan(nonce.to_string()),
        GcRecord::Deleted(nonce) => GcRecordKey::Deleted(nonce.to_string()),
    };
    Some(Listed::Record(n, r))
}

/// Whether a listed `gc/` key is a probe (`gc/probe-<16 hex>`).
pub fn is_probe(key: &str) -> bool {
    matches!(classify(key), Some(Listed::Probe))
}

/// The generation of a listed plan or delete-set body, for clean-up.
pub fn body_generation(key: &str) -> Option<u64> {
    match classify(key)? {
        Listed::Record(n, GcRecordKey::Plan(_) | GcRecordKey::Deleted(_)) => Some(n),
        _ => None,
    }
}

/// `gc/<n>.plan.<nonce>`: the sets of a detached mark.
pub fn plan_key(n: u64, nonce: &str) -> String {
    gc_key(n, &format!("plan.{nonce}"))
}

/// `gc/<n>.deleted.<nonce>`: the set of a detached sweep.
pub fn deleted_key(n: u64, nonce: &str) -> String {
    gc_key(n, &format!("deleted.{nonce}"))
}

/// Reads generation `n`'s mark with its sets (from its body when detached).
pub fn read_mark(repo: &Repository, n: u64) -> Result<GcMark> {
    let claim: GcMark = read_record(repo, &gc_key(n, "mark"), MAX_GC_BODY_LEN)?;
    if !claim.detached {
        return Ok(claim);
    }
    let key = plan_key(n, &claim.nonce);
    let body: GcMark = read_record(repo, &key, MAX_GC_BODY_LEN)?;
    if body.detached || body.nonce != claim.nonce {
        return Err(Error::corrupt(key, "does not belong to its mark"));
    }
    Ok(body)
}

/// Reads generation `n`'s delete set D_n (from its body when detached).
pub fn read_sweep(repo: &Repository, n: u64) -> Result<BTreeSet<PackId>> {
    let claim: GcSweep = read_record(repo, &gc_key(n, "sweep"), MAX_GC_BODY_LEN)?;
    if !claim.detached {
        return Ok(claim.deleted);
    }
    let key = deleted_key(n, &claim.nonce);
    let body: GcSweep = read_record(repo, &key, MAX_GC_BODY_LEN)?;
    if body.detached || body.nonce != claim.nonce {
        return Err(Error::corrupt(key, "does not belong to its sweep"));
    }
    Ok(body.deleted)
}

/// Reads a sealed record: at most `max` bytes, opened with its own key as
/// associated data (so a record moved under another name does not open).
pub fn read_record<T: for<'de> serde::Deserialize<'de>>(
    repo: &Repository,
    key: &str,
    max: u64,
) -> Result<T> {
    let bytes = repo.backend().get_bounded(key, max)?;
    records::open_record(repo.cipher(), key, &bytes).map_err(|e| Error::format(key.to_string(), e))
}

//! Prune: delete what no snapshot needs, without a lock (repo-format.md §15).
//!
//! One prune is one generation `n` of the protocol: **plan** (walk the valid
//! snapshots, decide per pack: keep, repack or delete), then, unless it is a
//! dry run, **mark** (repack, then publish `gc/<n>.mark` with one Create) and
//! **sweep** (once every writer that could still reuse a condemned pack has
//! ended: spare the packs snapshots committed meanwhile need, publish
//! `gc/<n>.sweep`, compact the index, delete, `gc/<n>.done`). When a writer is
//! still running the sweep is left for the next prune, which finishes it first.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob::BlobType;
use crate::format::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::format::objects::IndexedPack;
use crate::format::pack::{self, PackBuilder, PackEntry};
use crate::format::records::{
    self, gc_key, seal_record, session_key, GcDone, GcMark, GcSweep, SessionEnd, SessionKind,
    SessionStart, MAX_GC_BODY_LEN, MAX_SMALL_RECORD_LEN,
};
use crate::ops::reach::{reach, Reached};
use crate::repo::gc::{deleted_key, plan_key, read_mark, read_record, read_sweep, GcState};
use crate::repo::session::{survey, EndState, Session, SessionRecords};
use crate::repo::{id_from_key, is_content_error, pack_key, Repository, INDEX_DIR};
use crate::storage::Created;

/// How much unused space a pack may hold before it is repacked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnused {
    /// A share of the pack, 0.0..=1.0.
    Fraction(f64),
    /// Never repack; delete only packs nothing uses.
    Unlimited,
}

impl std::str::FromStr for MaxUnused {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        let p = s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<f64>().ok())
            .filter(|p| (0.0..=100.0).contains(p))
            .ok_or_else(|| format!("'{s}' is not a share: use a percentage (5%) or 'unlimited'"))?;
        Ok(MaxUnused::Fraction(p / 100.0))
    }
}

#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub max_unused: MaxUnused,
    /// At most this many bytes of packs are rewritten (None: no bound).
    pub max_repack_bytes: Option<u64>,
    pub dry_run: bool,
    /// A writer silent for longer than this (by the store's clock) may be fenced.
    pub stale_after: Duration,
    /// Proceed even when no snapshot exists but the index is not empty.
    pub allow_empty: bool,
    /// A blocking writer alive (heartbeating) for longer than this may be
    /// fenced too: one that is stuck but not silent (rule 14).
    pub fence_older_than: Option<Duration>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: MaxUnused::Fraction(0.05),
            max_repack_bytes: None,
            dry_run: false,
            stale_after: Duration::from_secs(30 * 60),
            allow_empty: false,
            fence_older_than: None,
        }
    }
}

/// What happens to one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Keep,
    Repack,
    Delete,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PackDecision {
    pub pack: PackId,
    pub kind: BlobType,
    /// Stored size of the pack.
    pub size: u64,
    /// Stored bytes of blobs a snapshot needs (counted in this copy).
    pub used: u64,
    pub action: Action,
    pub reason: &'static str,
}

/// The plan a prune carries out, and what `--dry-run` prints.
#[derive(Debug, Default, serde::Serialize)]
pub struct PrunePlan {
    pub generation: u64,
    pub snapshots: usize,
    pub decisions: Vec<PackDecision>,
    pub packs_delete: usize,
    pub packs_repack: usize,
    pub packs_keep: usize,
    /// Bytes of the packs that go away (deleted and repacked).
    pub bytes_removed: u64,
    /// Bytes written again by repacking (the used blobs of repacked packs).
    pub bytes_rewritten: u64,
    /// Space freed: removed minus rewritten.
    pub bytes_freed: u64,
    pub bytes_unused_kept: u64,
    /// Packs that would go but are younger than the repository's minimum
    /// retention (`init --min-retention`): kept, to go in a later prune.
    pub packs_locked: usize,
    pub bytes_locked: u64,
    /// When the last of them leaves its retention.
    pub locked_until: Option<chrono::DateTime<chrono::Utc>>,
    /// No snapshot is committed yet, but backups are running: nothing to
    /// collect (their checkpoints are in the index).
    pub waiting_for_first_snapshot: bool,
    #[serde(skip)]
    analysed: BTreeSet<SnapshotId>,
    /// What the snapshots reach, over the index the plan was made from
    /// (nothing changes the index between planning and repacking).
    #[serde(skip)]
    reached: Reached,
}

/// How a prune ended.
#[derive(Debug, Default, serde::Serialize)]
pub struct PruneOutcome {
    pub plan: PrunePlan,
    /// The generation swept before planning (a prune interrupted earlier, or
    /// one whose sweep had to wait), if any.
    pub finished_earlier: Option<u64>,
    /// False when the sweep must wait for running writers (`sessions_pending`).
    pub swept: bool,
    pub sessions_pending: usize,
    pub sessions_fenced: usize,
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    /// Packs the sweep meant to delete but the store refused (locked): they
    /// stay, in no index, until a later prune deletes them.
    pub packs_refused: usize,
    pub bytes_refused: u64,
    pub packs_written: usize,
    /// Another prune published generation n first (or finished it while this
    /// one was paused); this one changed nothing but harmless copies.
    pub lost_race: bool,
    /// The sessions the sweep waits for: host, pid and how long ago they last
    /// proved alive (by the store's clock).
    pub pending_sessions: Vec<PendingSession>,
    /// This prune's own session was fenced after its delete set was final.
    pub fenced_late: bool,
}

/// A running writer a sweep waits for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PendingSession {
    pub session: String,
    pub hostname: Option<String>,
    pub pid: Option<u32>,
    pub kind: Option<String>,
    pub silent_secs: i64,
}

/// Plans, and unless `dry_run`, marks and sweeps.
pub fn prune(repo: &mut Repository, opts: &PruneOptions) -> Result<PruneOutcome> {
    prune_with_progress(repo, opts, &|_| {})
}

/// `prune`, telling `phase` what it is doing ("planning", "repacking",
/// "deleting"...), for a progress display.
///
/// The collector opens its own session before it reads `gc/` (rule 1), so
/// that a sweeper of another generation can fence it if it pauses; it then
/// finishes the open generation, if any, and marks the next one. Before it
/// publishes a mark and before it deletes anything it reads its own `.end`:
/// a fenced collector deletes nothing (rule 4).
pub fn prune_with_progress(
    repo: &mut Repository,
    opts: &PruneOptions,
    phase: &dyn Fn(&str),
) -> Result<PruneOutcome> {
    phase("reading the collection state");
    if opts.dry_run {
        return dry_run(repo, opts, phase);
    }
    // Before any work: a put-only credential would otherwise publish a mark
    // it can never sweep, and fail on its first delete.
    repo.backend().check_delete()?;
    let session = Session::start(repo, SessionKind::Prune)?;
    let deleting = Deleting::default();
    match collect(repo, opts, phase, &session, &deleting) {
        Ok((mut out, Ending::Commit)) => {
            end_session(repo, session, &mut out);
            Ok(out)
        }
        Ok((out, Ending::Abort)) => {
            session.abort();
            Ok(out)
        }
        Err(e) => Err(explain_failure(e, &session, &deleting)),
    }
}

/// What a collector has deleted so far, for a truthful account if it fails.
#[derive(Default)]
struct Deleting {
    /// Between a sweep's first compaction write and its `.done`.
    now: Cell<bool>,
    /// Packs deleted by sweeps this collector finished.
    finished: Cell<usize>,
}

/// How the collector's session ends when its work went through.
enum Ending {
    Commit,
    /// Nothing was marked: the session leaves no trace.
    Abort,
}

/// Finishes the open generation, if any, then plans, marks and sweeps the next.
fn collect(
    repo: &mut Repository,
    opts: &PruneOptions,
    phase: &dyn Fn(&str),
    session: &Session,
    deleting: &Deleting,
) -> Result<(PruneOutcome, Ending)> {
    let mut out = PruneOutcome::default();
    let mut n = session.gc().finished + 1;
    if let Some(u) = session.gc().unfinished() {
        phase("finishing an earlier prune");
        let s = sweep(repo, u, session, opts, deleting)?;
        out.add_sweep(&s);
        if !s.done {
            // Generation u must finish before u+1 is marked.
            return Ok((out, Ending::Commit));
        }
        out.finished_earlier = Some(u);
        n = u + 1;
    }
    phase("planning: reading snapshots, trees and the index");
    let mut plan = plan(repo, n, opts)?;
    if plan.packs_delete + plan.packs_repack == 0 {
        // Nothing to collect: no generation is spent, only old records go.
        if n > 1 {
            clean_up(repo, n - 1)?;
        }
        out.plan = plan;
        out.swept = true;
        return Ok((out, Ending::Abort));
    }
    phase("repacking");
    let (written, spared) = repack(repo, &mut plan, session)?;
    out.packs_written = written.len();
    let mark = GcMark {
        analysed: plan.analysed.clone(),
        condemned: plan
            .decisions
            .iter()
            .filter(|d| d.action != Action::Keep && !spared.contains(&d.pack))
            .map(|d| d.pack)
            .collect(),
        repacked_into: written,
        nonce: hex::encode(rand::random::<[u8; 16]>()),
        detached: false,
    };
    out.plan = plan;
    if session.fenced_now()? {
        return Err(Error::Fenced);
    }
    if !publish_mark(repo, n, &mark)? {
        out.lost_race = true;
        return Ok((out, Ending::Commit));
    }
    // A second line of defence against a collector that paused between its
    // fence check and its Create: its mark is void unless n is still open.
    let now = GcState::load(repo)?;
    if now.finished >= n || now.unfinished() != Some(n) {
        out.lost_race = true;
        repo.warn(format!(
            "generation {n} was finished by another prune while this one was paused: its mark is void and nothing was deleted"
        ));
        return Ok((out, Ending::Commit));
    }
    phase("deleting unused packs");
    let s = sweep(repo, n, session, opts, deleting)?;
    out.add_sweep(&s);
    Ok((out, Ending::Commit))
}

/// A collector that fails after it was fenced failed because it was fenced
/// (another sweep deleted what it was reading): it says so, and that it
/// deleted nothing, rather than a backup's "nothing was saved" or a missing
/// object. Once it has begun deleting, the error is reported as it is.
fn explain_failure(e: Error, session: &Session, deleting: &Deleting) -> Error {
    let fenced = Error::PruneFenced {
        generation: session.saw() + 1,
        deleted_before: deleting.finished.get(),
    };
    match e {
        Error::PruneFenced { .. } => e,
        _ if deleting.now.get() => e,
        Error::Fenced => fenced,
        _ if session.fenced_now().unwrap_or(false) => fenced,
        e => e,
    }
}

/// `--dry-run`: the plan for the next generation, writing nothing.
fn dry_run(
    repo: &mut Repository,
    opts: &PruneOptions,
    phase: &dyn Fn(&str),
) -> Result<PruneOutcome> {
    let gc = GcState::load(repo)?;
    let n = gc.unfinished().unwrap_or(gc.finished) + 1;
    phase("planning: reading snapshots, trees and the index");
    Ok(PruneOutcome {
        finished_earlier: gc.unfinished(),
        plan: plan(repo, n, opts)?,
        ..Default::default()
    })
}

/// Commits the collector's session. A fence that lands after the delete set
/// was published changes nothing (D_n is final, rule 8) but is reported.
fn end_session(repo: &Repository, session: Session, out: &mut PruneOutcome) {
    if let Err(e) = session.commit(None) {
        out.fenced_late = true;
        repo.warn(format!(
            "this prune's session ended badly after its work was done ({e}); what it deleted was final and safe to delete"
        ));
    }
}

/// Publishes generation `n`'s mark: its body first (a fresh key), then the
/// claim with one Create. False when another collector's claim is there.
fn publish_mark(repo: &Repository, n: u64, mark: &GcMark) -> Result<bool> {
    let body = plan_key(n, &mark.nonce);
    repo.backend()
        .create(&body, seal_record(repo.cipher(), &body, mark))?;
    let claim = GcMark {
        nonce: mark.nonce.clone(),
        detached: true,
        ..Default::default()
    };
    let key = gc_key(n, "mark");
    match create_arbiter(repo, &key, seal_record(repo.cipher(), &key, &claim))? {
        Created::New => Ok(true),
        // Ours after all when a retried Create finds its own first attempt.
        Created::AlreadyExisted => Ok(matches!(
            read_record::<GcMark>(repo, &key, MAX_GC_BODY_LEN),
            Ok(m) if m.nonce == mark.nonce
        )),
    }
}

/// Creates an arbiter record (a claim, a fence, a `.done`). On a conflict the
/// key is looked up: an S3 409 can report a conflict and store nothing, so an
/// absent key means try again (rule 14).
fn create_arbiter(repo: &Repository, key: &str, bytes: Vec<u8>) -> Result<Created> {
    for _ in 0..5 {
        match repo.backend().create(key, bytes.clone())? {
            Created::New => return Ok(Created::New),
            Created::AlreadyExisted if repo.backend().exists(key)? => {
                return Ok(Created::AlreadyExisted)
            }
            Created::AlreadyExisted => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Err(Error::corrupt(
        key.to_string(),
        "the store reports it exists but it cannot be found",
    ))
}

impl PruneOutcome {
    fn add_sweep(&mut self, s: &SweepOutcome) {
        self.swept = s.done;
        self.sessions_pending = s.pending;
        self.pending_sessions = s.pending_sessions.clone();
        self.sessions_fenced += s.fenced;
        self.packs_deleted += s.packs_deleted;
        self.packs_refused += s.packs_refused;
        self.bytes_refused += s.bytes_refused;
        self.bytes_deleted += s.bytes_deleted;
    }
}

/// Decides per pack, from the valid snapshots and the whole index.
pub fn plan(repo: &mut Repository, generation: u64, opts: &PruneOptions) -> Result<PrunePlan> {
    let snapshots = repo.list_snapshots()?;
    repo.load_index()?;
    if snapshots.is_empty() && repo.index().blob_count() > 0 && !opts.allow_empty {
        // A new repository whose first backups are still running: their
        // checkpoints are indexed, no snapshot is committed yet. Nothing to do.
        // (Asked in this order: a backup that commits after the survey is
        // seen by the second listing.)
        if writers_running(repo, opts)? || !repo.list_snapshots()?.is_empty() {
            return Ok(PrunePlan {
                generation,
                waiting_for_first_snapshot: true,
                ..Default::default()
            });
        }
        return Err(Error::InvalidArgument(
            "no snapshots, but the index is not empty: refusing to delete everything (give --allow-empty if that is meant)".into(),
        ));
    }
    let reached = reach(repo, snapshots.iter().map(|(_, s)| s.tree), &mut |id, e| {
        Err(Error::corrupt(
            format!("tree {id}"),
            format!("{e}; prune needs every tree readable (run check)"),
        ))
    })?;
    refuse_unindexed(&reached)?;
    let mut plan = PrunePlan {
        generation,
        snapshots: snapshots.len(),
        analysed: snapshots.iter().map(|(id, _)| *id).collect(),
        ..Default::default()
    };
    let (used_bytes, blob_bytes) = usage(repo, &reached);
    repo.index().check_io()?;
    let mut repack_candidates = Vec::new();
    for &(id, kind, size) in repo.listed_packs() {
        let used = used_bytes.get(&id).copied().unwrap_or(0);
        let (action, reason) = if !repo.index().has_pack(&id) {
            (
                Action::Delete,
                "in no index (left by an interrupted backup)",
            )
        } else if used == 0 {
            (Action::Delete, "no snapshot needs any of its blobs")
        } else if too_unused(
            blob_bytes.get(&id).copied().unwrap_or(0),
            used,
            opts.max_unused,
        ) {
            repack_candidates.push(plan.decisions.len());
            (Action::Repack, "mostly unused")
        } else {
            (Action::Keep, "in use")
        };
        plan.decisions.push(PackDecision {
            pack: id,
            kind,
            size,
            used,
            action,
            reason,
        });
    }
    keep_packs_under_retention(repo, &mut plan, chrono::Utc::now())?;
    repack_candidates.retain(|&i| plan.decisions[i].action == Action::Repack);
    limit_repacking(&mut plan, repack_candidates, opts.max_repack_bytes);
    plan.total();
    plan.reached = reached;
    Ok(plan)
}

/// Whether sessions other than this prune's own are running: announced, not
/// ended, and heard from within `--stale-after` (a backup that crashed long
/// ago does not count). Another collector counts too: that errs towards
/// doing nothing. Judged by this machine's clock: either answer is safe.
fn writers_running(repo: &Repository, opts: &PruneOptions) -> Result<bool> {
    let (sessions, _) = survey(repo, false)?;
    let now = chrono::Utc::now();
    let stale = chrono::Duration::from_std(opts.stale_after).unwrap_or(chrono::Duration::MAX);
    let running = sessions
        .iter()
        .filter(|s| s.announced && !matches!(s.end, EndState::Ended(_)))
        .filter(|s| s.newest.is_some_and(|t| now - t <= stale))
        .count();
    Ok(running > usize::from(!opts.dry_run))
}

/// With a minimum retention recorded (`init --min-retention`), a pack the
/// store would still refuse to delete is neither deleted nor repacked (a copy
/// whose source cannot go only grows the bucket): it is kept and counted, and
/// a later prune takes it. Judged by this machine's clock against the store's
/// write times; a delete the store still refuses is counted at the sweep.
fn keep_packs_under_retention(
    repo: &Repository,
    plan: &mut PrunePlan,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let Some(secs) = repo.config().min_retention_secs else {
        return Ok(());
    };
    if plan.decisions.iter().all(|d| d.action == Action::Keep) {
        return Ok(());
    }
    let retention = chrono::Duration::seconds(secs.min(i64::MAX as u64) as i64);
    let written = pack_write_times(repo)?;
    for d in plan
        .decisions
        .iter_mut()
        .filter(|d| d.action != Action::Keep)
    {
        // A pack gone from the listing since the index was loaded needs no
        // decision of ours; one whose time is unknown is treated as new.
        let until = written.get(&d.pack).copied().unwrap_or(now) + retention;
        if until > now {
            d.action = Action::Keep;
            d.reason = "under the repository's minimum retention";
            plan.packs_locked += 1;
            plan.bytes_locked += d.size;
            plan.locked_until = plan.locked_until.max(Some(until));
        }
    }
    Ok(())
}

/// When the store wrote each pack, from one listing of the pack folders.
fn pack_write_times(repo: &Repository) -> Result<HashMap<PackId, chrono::DateTime<chrono::Utc>>> {
    Ok(repo
        .list_pack_objects()?
        .into_iter()
        .map(|(id, _, l)| (id, l.last_modified))
        .collect())
}

/// Whether the unused blobs exceed the allowed share of the pack's blobs (the
/// header and trailer are not waste: every pack has them).
fn too_unused(blob_bytes: u64, used: u64, max: MaxUnused) -> bool {
    match max {
        MaxUnused::Unlimited => false,
        MaxUnused::Fraction(f) => (blob_bytes.saturating_sub(used)) as f64 > f * blob_bytes as f64,
    }
}

/// The bytes of each pack's needed blobs, and of all its blobs. A blob
/// stored twice (after concurrent backups or a lost repacking race) counts in
/// the one copy the index serves (the position `reach` marked).
fn usage(repo: &Repository, reached: &Reached) -> (HashMap<PackId, u64>, HashMap<PackId, u64>) {
    let mut used: HashMap<PackId, u64> = HashMap::new();
    let mut blob_bytes: HashMap<PackId, u64> = HashMap::new();
    for (pos, (_, loc)) in repo.index().iter().enumerate() {
        *blob_bytes.entry(loc.pack).or_default() += loc.length as u64;
        if reached.marks.contains(pos) {
            *used.entry(loc.pack).or_default() += loc.length as u64;
        }
    }
    (used, blob_bytes)
}

/// The needed blobs of the given packs, from one pass over the index.
fn needed_entries(
    repo: &Repository,
    reached: &Reached,
    packs: &HashSet<PackId>,
) -> HashMap<PackId, Vec<PackEntry>> {
    let mut out: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for (pos, (id, loc)) in repo.index().iter().enumerate() {
        if packs.contains(&loc.pack) && reached.marks.contains(pos) {
            out.entry(loc.pack).or_default().push(PackEntry {
                id,
                offset: loc.offset,
                length: loc.length,
                raw_length: 0,
            });
        }
    }
    out
}

/// Repacks the most wasteful packs first, within the byte bound; the rest keep.
fn limit_repacking(plan: &mut PrunePlan, mut candidates: Vec<usize>, max_bytes: Option<u64>) {
    candidates.sort_by_key(|&i| {
        let d = &plan.decisions[i];
        std::cmp::Reverse(d.size - d.used)
    });
    let mut budget = max_bytes.unwrap_or(u64::MAX);
    for i in candidates {
        let d = &mut plan.decisions[i];
        if d.size <= budget {
            budget -= d.size;
        } else {
            d.action = Action::Keep;
            d.reason = "mostly unused, beyond --max-repack-size";
        }
    }
}

impl PrunePlan {
    fn total(&mut self) {
        for d in &self.decisions {
            match d.action {
                Action::Delete => {
                    self.packs_delete += 1;
                    self.bytes_removed += d.size;
                }
                Action::Repack => {
                    self.packs_repack += 1;
                    self.bytes_removed += d.size;
                    self.bytes_rewritten += d.used;
                }
                Action::Keep => {
                    self.packs_keep += 1;
                    self.bytes_unused_kept += d.size - d.used.min(d.size);
                }
            }
        }
        self.bytes_freed = self.bytes_removed.saturating_sub(self.bytes_rewritten);
    }
}

/// Copies the needed blobs of the packs to repack into new packs (sealed blobs
/// move as they are: each is bound to its ID, not to its pack), verifying each,
/// and indexes the new packs before any source is condemned. Returns the new
/// packs and the sources that must be spared (a blob failed to verify).
fn repack(
    repo: &Repository,
    plan: &mut PrunePlan,
    session: &Session,
) -> Result<(BTreeSet<PackId>, HashSet<PackId>)> {
    let sources: Vec<&PackDecision> = plan
        .decisions
        .iter()
        .filter(|d| d.action == Action::Repack)
        .collect();
    let mut written = BTreeSet::new();
    let mut spared = HashSet::new();
    if sources.is_empty() {
        return Ok((written, spared));
    }
    let used = needed_entries(
        repo,
        &plan.reached,
        &sources.iter().map(|d| d.pack).collect(),
    );
    let target = repo.config().pack_size as usize;
    let mut new_packs: Vec<IndexedPack> = Vec::new();
    let mut builders: HashMap<BlobType, PackBuilder> = HashMap::new();
    for d in sources {
        session.check()?;
        let key = pack_key(d.kind, &d.pack);
        let bytes = repo.get_named(&key)?;
        let entries = used.get(&d.pack).map(Vec::as_slice).unwrap_or_default();
        let copies: Vec<Option<(BlobId, &[u8], u32)>> = entries
            .par_iter()
            .map(|e| {
                let sealed = bytes.get(e.offset as usize..(e.offset + e.length) as usize)?;
                let plain = repo.decode_blob(&e.id, sealed, None).ok()?;
                Some((e.id, sealed, plain.len() as u32))
            })
            .collect();
        if copies.iter().any(Option::is_none) {
            repo.warn(format!(
                "pack {} holds a damaged blob: kept as it is (run check --read-data)",
                d.pack
            ));
            spared.insert(d.pack);
            continue;
        }
        for (id, sealed, raw) in copies.into_iter().flatten() {
            let b = builders
                .entry(d.kind)
                .or_insert_with(|| PackBuilder::new(d.kind, target + target / 8));
            b.add(id, sealed, raw);
            if b.len() >= target {
                let full = builders.remove(&d.kind).expect("just used");
                new_packs.push(write_pack(repo, full)?);
            }
        }
    }
    for (_, b) in builders.drain() {
        if !b.is_empty() {
            new_packs.push(write_pack(repo, b)?);
        }
    }
    if !new_packs.is_empty() {
        repo.save_index(&new_packs)?;
    }
    written.extend(new_packs.iter().map(|p| p.id));
    Ok((written, spared))
}

pub(crate) fn write_pack(repo: &Repository, b: PackBuilder) -> Result<IndexedPack> {
    let (bytes, kind, blobs) = b.finish(repo.cipher(), repo.trailer());
    let id = PackId(crate::format::id::storage_hash(&bytes));
    // Decode as a reader would before uploading (verify before upload).
    let (k, read) = pack::read_header(repo.cipher(), repo.trailer(), &bytes)
        .map_err(|e| Error::corrupt(format!("new pack {id}"), e))?;
    if k != kind || read != blobs {
        return Err(Error::corrupt(
            format!("new pack {id}"),
            "header does not list what was packed",
        ));
    }
    repo.backend().create(&pack_key(kind, &id), bytes)?;
    Ok(IndexedPack { id, kind, blobs })
}

#[derive(Debug, Default)]
struct SweepOutcome {
    done: bool,
    pending: usize,
    pending_sessions: Vec<PendingSession>,
    fenced: usize,
    packs_deleted: usize,
    bytes_deleted: u64,
    packs_refused: usize,
    bytes_refused: u64,
}

/// Sweeps generation `n` if its preconditions hold (rules 6–8), as `session`
/// (whose own records never block it).
fn sweep(
    repo: &mut Repository,
    n: u64,
    session: &Session,
    opts: &PruneOptions,
    deleting: &Deleting,
) -> Result<SweepOutcome> {
    let mut out = SweepOutcome::default();
    let (sessions, _) = survey(repo, false)?;
    let blocking: Vec<&SessionRecords> = sessions
        .iter()
        .filter(|s| s.sid != session.id() && s.blocks(n))
        .collect();
    if !blocking.is_empty() {
        let pending = fence_stale(repo, n, &blocking, opts)?;
        out.fenced = blocking.len() - pending.len();
        if !pending.is_empty() {
            out.pending = pending.len();
            out.pending_sessions = pending;
            return Ok(out);
        }
    }
    let mark = match read_mark(repo, n) {
        Ok(m) => Some(m),
        Err(e) if is_content_error(&e) => {
            repo.warn(format!(
                "the mark of generation {n} cannot be read ({e}): that generation is finished deleting nothing"
            ));
            None
        }
        // Bodies go only once their generation is finished: another prune
        // finished this one meanwhile.
        Err(Error::MissingObject(_)) if finished_elsewhere(repo, n)? => {
            out.done = true;
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    let deleted = match decide_deletions(repo, n, mark.as_ref()) {
        Err(Error::MissingObject(_)) if finished_elsewhere(repo, n)? => {
            out.done = true;
            return Ok(out);
        }
        other => other?,
    };
    // A sweeper fenced while it paused deletes nothing (rule 4).
    if session.fenced_now()? {
        return Err(Error::Fenced);
    }
    let kinds: HashMap<PackId, (BlobType, u64)> = repo
        .list_packs()?
        .into_iter()
        .map(|(id, k, s)| (id, (k, s)))
        .collect();
    deleting.now.set(true);
    compact_index(repo, &deleted)?;
    for id in &deleted {
        if let Some((kind, size)) = kinds.get(id) {
            if !delete_unless_locked(repo, &pack_key(*kind, id))? {
                // Still stored, in no index: a later prune deletes it once
                // the lock ends, and a writer may adopt it meanwhile.
                out.packs_refused += 1;
                out.bytes_refused += size;
                continue;
            }
            if let Some(c) = repo.cache() {
                c.forget(&pack_key(*kind, id));
            }
            out.packs_deleted += 1;
            out.bytes_deleted += size;
        }
    }
    publish_done(repo, n)?;
    deleting.now.set(false);
    deleting
        .finished
        .set(deleting.finished.get() + out.packs_deleted);
    out.done = true;
    clean_up(repo, n)?;
    Ok(out)
}

/// Whether generation `n` is finished (by another sweeper): its `.done`
/// reads back.
fn finished_elsewhere(repo: &Repository, n: u64) -> Result<bool> {
    match read_record::<GcDone>(repo, &gc_key(n, "done"), MAX_SMALL_RECORD_LEN) {
        Ok(_) => Ok(true),
        Err(Error::MissingObject(_)) => Ok(false),
        Err(e) if is_content_error(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates `gc/<n>.done`. An object already there that does not read back
/// (planted or damaged) would hold the generation open forever: a `.done`
/// carries nothing, so it is replaced.
fn publish_done(repo: &Repository, n: u64) -> Result<()> {
    let key = gc_key(n, "done");
    let bytes = seal_record(repo.cipher(), &key, &GcDone {});
    if create_arbiter(repo, &key, bytes.clone())? == Created::New {
        return Ok(());
    }
    match read_record::<GcDone>(repo, &key, MAX_SMALL_RECORD_LEN) {
        Ok(_) => Ok(()),
        Err(e) if is_content_error(&e) => {
            repo.warn(format!(
                "{key} was not a record cairn wrote ({e}): replaced"
            ));
            repo.backend().delete(&key)?;
            create_arbiter(repo, &key, bytes).map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Fences the blocking sessions silent for longer than `stale_after` (or
/// alive for longer than `fence_older_than`), judged against a probe object
/// written just now, so that only the store's clock is ever compared with
/// itself (rule 7). Returns the sessions still pending.
fn fence_stale(
    repo: &Repository,
    n: u64,
    blocking: &[&SessionRecords],
    opts: &PruneOptions,
) -> Result<Vec<PendingSession>> {
    let now = store_now(repo)?;
    let stale = chrono::Duration::from_std(opts.stale_after).unwrap_or(chrono::Duration::MAX);
    let too_old = opts
        .fence_older_than
        .map(|d| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
    let mut pending = Vec::new();
    for s in blocking {
        let silent = now - s.newest.unwrap_or(now);
        let age = now - s.started.unwrap_or(now);
        if silent <= stale && too_old.is_none_or(|t| age <= t) {
            pending.push(describe_pending(repo, s, silent));
            continue;
        }
        let key = session_key(&s.sid, "end");
        let end = SessionEnd::Fenced { generation: n };
        // AlreadyExisted: it has just ended (or its `.end` is damaged and it
        // can never commit): either way it no longer blocks.
        create_arbiter(repo, &key, seal_record(repo.cipher(), &key, &end))?;
    }
    Ok(pending)
}

/// "Now" by the store's clock: the `last_modified` of a probe created now.
/// A probe removed by another collector's clean-up before it was read is
/// simply made again.
fn store_now(repo: &Repository) -> Result<chrono::DateTime<chrono::Utc>> {
    let mut last = None;
    for _ in 0..5 {
        let probe = format!(
            "{}/probe-{}",
            records::GC_DIR,
            hex::encode(rand::random::<[u8; 8]>())
        );
        repo.backend().create(&probe, Vec::new())?;
        let now = repo.backend().last_modified(&probe);
        let _ = repo.backend().delete(&probe);
        match now {
            Ok(t) => return Ok(t),
            Err(e @ Error::MissingObject(_)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("five attempts"))
}

/// Host, pid and kind from a pending session's `.start` (when it reads).
fn describe_pending(
    repo: &Repository,
    s: &SessionRecords,
    silent: chrono::Duration,
) -> PendingSession {
    let start: Option<SessionStart> =
        read_record(repo, &session_key(&s.sid, "start"), MAX_SMALL_RECORD_LEN).ok();
    PendingSession {
        session: s.sid.clone(),
        hostname: start.as_ref().map(|st| st.hostname.clone()),
        pid: start.as_ref().map(|st| st.pid),
        kind: start
            .as_ref()
            .map(|st| format!("{:?}", st.kind).to_lowercase()),
        silent_secs: silent.num_seconds(),
    }
}

/// D_n: the condemned packs that no snapshot committed after the mark needs
/// (rule 8), published with one Create; a sweep record already there wins. An
/// unreadable mark or sweep record means D_n is empty: deleting nothing is
/// always safe.
fn decide_deletions(
    repo: &mut Repository,
    n: u64,
    mark: Option<&GcMark>,
) -> Result<BTreeSet<PackId>> {
    let key = gc_key(n, "sweep");
    if repo.backend().exists(&key)? {
        return adopt_sweep(repo, n);
    }
    let deleted = match mark {
        Some(m) => still_unneeded(repo, m)?,
        None => BTreeSet::new(),
    };
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let body_key = deleted_key(n, &nonce);
    let body = GcSweep {
        deleted: deleted.clone(),
        nonce: nonce.clone(),
        detached: false,
    };
    repo.backend()
        .create(&body_key, seal_record(repo.cipher(), &body_key, &body))?;
    let claim = GcSweep {
        nonce,
        detached: true,
        ..Default::default()
    };
    match create_arbiter(repo, &key, seal_record(repo.cipher(), &key, &claim))? {
        Created::New => Ok(deleted),
        Created::AlreadyExisted => adopt_sweep(repo, n),
    }
}

/// Another sweeper's D_n (or ours, found by a retried Create).
fn adopt_sweep(repo: &Repository, n: u64) -> Result<BTreeSet<PackId>> {
    match read_sweep(repo, n) {
        Ok(d) => Ok(d),
        Err(e) if is_content_error(&e) => {
            repo.warn(format!(
                "the sweep record of generation {n} cannot be read ({e}): that generation deletes nothing"
            ));
            Ok(BTreeSet::new())
        }
        Err(e) => Err(e),
    }
}

/// The condemned packs no valid snapshot outside `A_n` needs.
fn still_unneeded(repo: &mut Repository, mark: &GcMark) -> Result<BTreeSet<PackId>> {
    let newer: Vec<BlobId> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(id, _)| !mark.analysed.contains(id))
        .map(|(_, s)| s.tree)
        .collect();
    let mut deleted = mark.condemned.clone();
    if !newer.is_empty() {
        repo.load_index()?;
        let reached = reach(repo, newer, &mut |id, e| {
            Err(Error::corrupt(format!("tree {id}"), e))
        })?;
        refuse_unindexed(&reached)?;
        let needed: HashSet<PackId> = spared_packs(repo, &mark.condemned, &reached)?;
        deleted.retain(|p| !needed.contains(p));
    }
    Ok(deleted)
}

/// A valid snapshot that reaches a blob no index lists means something is
/// already wrong; deleting "unindexed" packs then could make it permanent
/// (rule 11). `check` says what, `repair index` is the way out.
fn refuse_unindexed(reached: &Reached) -> Result<()> {
    match reached.unindexed_data.iter().next() {
        None => Ok(()),
        Some(id) => Err(Error::corrupt(
            format!("blob {id}"),
            format!(
                "a snapshot needs it ({} such blobs) but no index lists it; prune stops rather than delete its pack (run check)",
                reached.unindexed_data.len()
            ),
        )),
    }
}

/// The condemned packs holding any blob `reached` names: from the index, or
/// for unindexed packs from their headers.
fn spared_packs(
    repo: &Repository,
    condemned: &BTreeSet<PackId>,
    reached: &Reached,
) -> Result<HashSet<PackId>> {
    let mut needed = HashSet::new();
    for (pos, (id, loc)) in repo.index().iter().enumerate() {
        // Any copy of a reached blob: the newer snapshot may use either.
        if condemned.contains(&loc.pack)
            && (reached.marks.contains(pos) || reached.contains(repo, &id))
        {
            needed.insert(loc.pack);
        }
    }
    // The caller loaded the index just now: its listing is current enough.
    for &(id, kind, size) in repo.listed_packs() {
        if condemned.contains(&id) && !repo.index().has_pack(&id) && !needed.contains(&id) {
            let header = match repo.read_pack_header(&id, kind, size) {
                Ok(h) => h,
                // Deleted since the listing by another sweeper of this
                // generation (its D_n is final): nothing left to spare.
                Err(Error::MissingObject(_)) => continue,
                Err(e) => return Err(e),
            };
            if header.blobs.iter().any(|b| reached.contains(repo, &b.id)) {
                needed.insert(id);
            }
        }
    }
    Ok(needed)
}

/// Rewrites every index object that names a deleted pack: the replacement
/// first, then the old object goes (readers see one or the other, or both).
fn compact_index(repo: &Repository, deleted: &BTreeSet<PackId>) -> Result<()> {
    for l in repo.backend().list(INDEX_DIR)? {
        if id_from_key::<IndexId>(&l.key).is_none() {
            continue;
        }
        let packs = match repo.read_index_object(&l.key) {
            Ok(p) => p,
            Err(Error::MissingObject(_)) => continue, // another sweeper's work
            Err(e) => return Err(e),
        };
        if !packs.iter().any(|p| deleted.contains(&p.id)) {
            continue;
        }
        let kept: Vec<IndexedPack> = packs
            .into_iter()
            .filter(|p| !deleted.contains(&p.id))
            .collect();
        if !kept.is_empty() {
            repo.save_index(&kept)?;
        }
        // A locked old object stays beside its replacement: index loads
        // ignore entries for packs no longer stored, and read the others twice.
        if !delete_unless_locked(repo, &l.key)? {
            continue;
        }
        if let Some(c) = repo.cache() {
            c.forget(&l.key);
        }
    }
    Ok(())
}

/// After generation `n` is done (rule 9): the bodies of void generations and
/// leftover probes go (claims stay forever: they are what makes a paused
/// collector's late Create fail); so do the start, saw and heartbeat records
/// of ended sessions, the ends of aborted ones and the ends of committed ones
/// whose snapshot was forgotten. (Forget leaves the `.end` to this: deleting
/// it first would make a finished session look running.) Fences stay forever.
/// Only records that authenticate decide what goes.
fn clean_up(repo: &Repository, n: u64) -> Result<()> {
    for l in repo.backend().list(records::GC_DIR)? {
        let void_body = crate::repo::gc::body_generation(&l.key).is_some_and(|m| m < n);
        if void_body || crate::repo::gc::is_probe(&l.key) {
            delete_unless_locked(repo, &l.key)?;
        }
    }
    let snapshots_of: HashSet<String> = repo
        .list_all_snapshots()?
        .into_iter()
        .filter_map(|(_, s)| s.session)
        .collect();
    let (sessions, _) = survey(repo, false)?;
    for s in sessions {
        let end_key = session_key(&s.sid, "end");
        let end = match s.end {
            EndState::Ended(end) => end,
            // Never read (cleaned up before; only its `.end` is left): read it
            // only if no snapshot names the session, so forgotten ones go.
            EndState::Absent if !s.announced && !snapshots_of.contains(&s.sid) => {
                match read_record::<SessionEnd>(repo, &end_key, MAX_SMALL_RECORD_LEN) {
                    Ok(end) => end,
                    Err(_) => continue,
                }
            }
            _ => continue,
        };
        let end_goes = match end {
            SessionEnd::Aborted { .. } | SessionEnd::Committed { snapshot: None, .. } => true,
            SessionEnd::Committed {
                snapshot: Some(id), ..
            } => !repo
                .backend()
                .exists(&format!("{}/{id}", crate::repo::SNAPSHOTS_DIR))?,
            SessionEnd::Fenced { .. } => false,
        };
        // The `.end` goes last, and only after every other record went: a
        // session whose `.start` a lock kept would otherwise look running.
        let mut all_gone = true;
        for k in s.keys.iter().filter(|k| **k != end_key) {
            all_gone &= delete_unless_locked(repo, k)?;
        }
        if end_goes && all_gone && s.keys.contains(&end_key) {
            delete_unless_locked(repo, &end_key)?;
        }
    }
    Ok(())
}

/// Deletes `key`; false when the store refuses because the object is locked
/// (`check_delete` passed, so the credential may delete): what a lock keeps
/// stays, and a later prune tries again once the lock ends.
fn delete_unless_locked(repo: &Repository, key: &str) -> Result<bool> {
    match repo.backend().delete_unless_refused(key)? {
        crate::storage::Deletion::Deleted => Ok(true),
        crate::storage::Deletion::Refused(_) => Ok(false),
    }
}

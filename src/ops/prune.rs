//! Prune: delete what no snapshot needs, without a lock (repo-format.md §15).
//!
//! One prune is one generation `n` of the protocol: **plan** (walk the valid
//! snapshots, decide per pack: keep, repack or delete), then, unless it is a
//! dry run, **mark** (repack, then publish `gc/<n>.mark` with one Create) and
//! **sweep** (once every writer that could still reuse a condemned pack has
//! ended: spare the packs snapshots committed meanwhile need, publish
//! `gc/<n>.sweep`, compact the index, delete, `gc/<n>.done`). When a writer is
//! still running the sweep is left for the next prune, which finishes it first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob::BlobType;
use crate::format::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::format::objects::IndexedPack;
use crate::format::pack::{self, PackBuilder, PackEntry};
use crate::format::records::{
    self, gc_key, open_record, parse_session_key, seal_record, session_key, GcDone, GcMark,
    GcSweep, SessionEnd, SessionKind,
};
use crate::ops::reach::{reach, Reached};
use crate::repo::gc::{read_record, GcState};
use crate::repo::session::Session;
use crate::repo::{id_from_key, pack_key, Repository, INDEX_DIR};
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
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: MaxUnused::Fraction(0.05),
            max_repack_bytes: None,
            dry_run: false,
            stale_after: Duration::from_secs(30 * 60),
            allow_empty: false,
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
    pub packs_written: usize,
    /// Another prune published generation n first; this one changed nothing
    /// but harmless copies.
    pub lost_race: bool,
}

/// Plans, and unless `dry_run`, marks and sweeps.
pub fn prune(repo: &mut Repository, opts: &PruneOptions) -> Result<PruneOutcome> {
    prune_with_progress(repo, opts, &|_| {})
}

/// `prune`, telling `phase` what it is doing ("planning", "repacking",
/// "deleting"...), for a progress display.
pub fn prune_with_progress(
    repo: &mut Repository,
    opts: &PruneOptions,
    phase: &dyn Fn(&str),
) -> Result<PruneOutcome> {
    let mut out = PruneOutcome::default();
    phase("reading the collection state");
    let gc = GcState::load(repo)?;
    if let Some(n) = gc.unfinished() {
        if opts.dry_run {
            out.finished_earlier = Some(n);
        } else {
            phase("finishing an earlier prune");
            let s = sweep(repo, n, None, opts)?;
            out.add_sweep(&s);
            if !s.done {
                return Ok(out); // generation n must finish before n+1 is marked
            }
            out.finished_earlier = Some(n);
        }
    }
    phase("planning: reading snapshots, trees and the index");
    if opts.dry_run {
        out.plan = plan(repo, gc.latest() + 1, opts)?;
        return Ok(out);
    }
    let session = Session::start(repo, SessionKind::Prune)?;
    if let Some(m) = session.gc().unfinished() {
        // Another prune marked generation m since we looked: n may only be
        // marked once m is done (rule 4), so leave it to the next prune.
        session.abort();
        out.finished_earlier = None;
        out.swept = false;
        out.sessions_pending = out.sessions_pending.max(1);
        repo.warn(format!(
            "another prune marked generation {m} meanwhile: nothing new is marked; the next prune finishes it"
        ));
        return Ok(out);
    }
    let n = session.saw() + 1;
    let mut plan = plan(repo, n, opts)?;
    if plan.packs_delete + plan.packs_repack == 0 {
        // Nothing to collect: no generation is spent, only old records go.
        session.abort();
        if gc.unfinished().is_none() && gc.latest() > 0 {
            clean_up(repo, gc.latest())?;
        }
        out.plan = plan;
        out.swept = true;
        return Ok(out);
    }
    phase("repacking");
    let (written, spared) = repack(repo, &mut plan, &session)?;
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
    };
    let key = gc_key(n, "mark");
    if repo
        .backend()
        .create(&key, seal_record(repo.cipher(), &key, &mark))?
        == Created::AlreadyExisted
    {
        out.lost_race = true;
        out.plan = plan;
        session.commit(None)?;
        return Ok(out);
    }
    out.plan = plan;
    phase("deleting unused packs");
    let s = sweep(repo, n, Some(session.id()), opts)?;
    out.add_sweep(&s);
    session.commit(None)?;
    Ok(out)
}

impl PruneOutcome {
    fn add_sweep(&mut self, s: &SweepOutcome) {
        self.swept = s.done;
        self.sessions_pending = s.pending;
        self.sessions_fenced += s.fenced;
        self.packs_deleted += s.packs_deleted;
        self.bytes_deleted += s.bytes_deleted;
    }
}

/// Decides per pack, from the valid snapshots and the whole index.
pub fn plan(repo: &mut Repository, generation: u64, opts: &PruneOptions) -> Result<PrunePlan> {
    let snapshots = repo.list_snapshots()?;
    repo.load_index()?;
    if snapshots.is_empty() && repo.index().blob_count() > 0 && !opts.allow_empty {
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
    limit_repacking(&mut plan, repack_candidates, opts.max_repack_bytes);
    plan.total();
    plan.reached = reached;
    Ok(plan)
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

fn write_pack(repo: &Repository, b: PackBuilder) -> Result<IndexedPack> {
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
    fenced: usize,
    packs_deleted: usize,
    bytes_deleted: u64,
}

/// What `sessions/` says about each session.
#[derive(Debug, Default)]
struct SessionInfo {
    started: bool,
    ended: bool,
    saw: Option<u64>,
    newest: Option<chrono::DateTime<chrono::Utc>>,
    keys: Vec<String>,
}

fn sessions(repo: &Repository) -> Result<HashMap<String, SessionInfo>> {
    let mut out: HashMap<String, SessionInfo> = HashMap::new();
    for l in repo.backend().list(records::SESSIONS_DIR)? {
        let Some((sid, what)) = parse_session_key(&l.key) else {
            continue;
        };
        let s = out.entry(sid.to_string()).or_default();
        s.keys.push(l.key.clone());
        match what {
            "start" => s.started = true,
            "end" => s.ended = true,
            _ => {}
        }
        if let Some(g) = what.strip_prefix("saw.").and_then(|g| g.parse().ok()) {
            s.saw = Some(s.saw.map_or(g, |old: u64| old.max(g)));
        }
        if what == "start" || what.starts_with("saw.") || what.starts_with("hb.") {
            s.newest = Some(s.newest.map_or(l.last_modified, |t| t.max(l.last_modified)));
        }
    }
    Ok(out)
}

/// Sweeps generation `n` if its preconditions hold (rules 6–8).
fn sweep(
    repo: &mut Repository,
    n: u64,
    own_session: Option<&str>,
    opts: &PruneOptions,
) -> Result<SweepOutcome> {
    let mut out = SweepOutcome::default();
    let blocking = blocking_sessions(repo, n, own_session)?;
    if !blocking.is_empty() {
        let (fenced, pending) = fence_stale(repo, n, &blocking, opts.stale_after)?;
        out.fenced = fenced;
        if pending > 0 {
            out.pending = pending;
            return Ok(out);
        }
    }
    let mark: GcMark = read_record(repo, &gc_key(n, "mark"))?;
    let deleted = decide_deletions(repo, n, &mark)?;
    let kinds: HashMap<PackId, (BlobType, u64)> = repo
        .list_packs()?
        .into_iter()
        .map(|(id, k, s)| (id, (k, s)))
        .collect();
    compact_index(repo, &deleted.deleted)?;
    for id in &deleted.deleted {
        if let Some((kind, size)) = kinds.get(id) {
            repo.backend().delete(&pack_key(*kind, id))?;
            if let Some(c) = repo.cache() {
                c.forget(&pack_key(*kind, id));
            }
            out.packs_deleted += 1;
            out.bytes_deleted += size;
        }
    }
    let done = gc_key(n, "done");
    repo.backend()
        .create(&done, seal_record(repo.cipher(), &done, &GcDone {}))?;
    out.done = true;
    clean_up(repo, n)?;
    Ok(out)
}

/// Sessions that could still reuse a pack condemned by generation `n`: no
/// `.end` yet, and saw an older generation (or has not said which).
fn blocking_sessions(
    repo: &Repository,
    n: u64,
    own_session: Option<&str>,
) -> Result<Vec<(String, SessionInfo)>> {
    Ok(sessions(repo)?
        .into_iter()
        .filter(|(sid, s)| {
            Some(sid.as_str()) != own_session
                && s.started
                && !s.ended
                && s.saw.is_none_or(|g| g < n)
        })
        .collect())
}

/// Fences the blocking sessions silent for longer than `stale_after`, judged
/// against a probe object written just now, so that only the store's clock is
/// ever compared with itself (rule 7). Returns (fenced, still pending).
fn fence_stale(
    repo: &Repository,
    n: u64,
    blocking: &[(String, SessionInfo)],
    stale_after: Duration,
) -> Result<(usize, usize)> {
    let probe = format!(
        "{}/probe-{}",
        records::GC_DIR,
        hex::encode(rand::random::<[u8; 8]>())
    );
    repo.backend().create(&probe, Vec::new())?;
    let now = repo.backend().last_modified(&probe);
    let _ = repo.backend().delete(&probe);
    let now = now?;
    let stale = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    let (mut fenced, mut pending) = (0, 0);
    for (sid, s) in blocking {
        let silent_since = s.newest.unwrap_or(now);
        if now - silent_since <= stale {
            pending += 1;
            continue;
        }
        let key = session_key(sid, "end");
        let end = SessionEnd::Fenced { generation: n };
        match repo
            .backend()
            .create(&key, seal_record(repo.cipher(), &key, &end))?
        {
            Created::New => fenced += 1,
            Created::AlreadyExisted => {} // it just committed or aborted: fine
        }
    }
    Ok((fenced, pending))
}

/// D_n: the condemned packs that no snapshot committed after the mark needs
/// (rule 8), published with one Create; a sweep record already there wins.
fn decide_deletions(repo: &mut Repository, n: u64, mark: &GcMark) -> Result<GcSweep> {
    let key = gc_key(n, "sweep");
    if repo.backend().exists(&key)? {
        return read_record(repo, &key);
    }
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
        let needed: HashSet<PackId> = spared_packs(repo, &mark.condemned, &reached)?;
        deleted.retain(|p| !needed.contains(p));
    }
    let sweep = GcSweep { deleted };
    match repo
        .backend()
        .create(&key, seal_record(repo.cipher(), &key, &sweep))?
    {
        Created::New => Ok(sweep),
        Created::AlreadyExisted => read_record(repo, &key),
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
            let header = repo.read_pack_header(&id, kind, size)?;
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
        repo.backend().delete(&l.key)?;
        if let Some(c) = repo.cache() {
            c.forget(&l.key);
        }
    }
    Ok(())
}

/// After generation `n` is done: the records of older generations go (rule 9),
/// and so do the start, saw and heartbeat records of ended sessions, the ends
/// of aborted ones and the ends of committed ones whose snapshot was
/// forgotten. (Forget leaves the `.end` to this: deleting it first would make
/// a finished session look like a running one.) Fences stay forever.
fn clean_up(repo: &Repository, n: u64) -> Result<()> {
    for l in repo.backend().list(records::GC_DIR)? {
        if matches!(records::parse_gc_key(&l.key), Some((m, _)) if m < n) {
            repo.backend().delete(&l.key)?;
        }
    }
    for (sid, s) in sessions(repo)? {
        if !s.ended {
            continue;
        }
        let end_key = session_key(&sid, "end");
        let end = match repo.backend().get(&end_key) {
            Ok(b) => open_record::<SessionEnd>(repo.cipher(), &end_key, &b).ok(),
            Err(_) => None,
        };
        let end_goes = match end {
            Some(SessionEnd::Aborted { .. })
            | Some(SessionEnd::Committed { snapshot: None, .. }) => true,
            Some(SessionEnd::Committed {
                snapshot: Some(id), ..
            }) => !repo
                .backend()
                .exists(&format!("{}/{id}", crate::repo::SNAPSHOTS_DIR))?,
            _ => false,
        };
        for k in &s.keys {
            if *k != end_key || end_goes {
                repo.backend().delete(k)?;
            }
        }
    }
    Ok(())
}

//! Check: is the repository whole? Structure always; pack contents on request.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob::{self, BlobType};
use crate::format::id::{storage_hash, BlobId, PackId, SnapshotId};
use crate::format::pack;
use crate::format::records::VerifyRecord;
use crate::format::snapshot::Snapshot;
use crate::ops::reach::Reached;
use crate::repo::ledger::{self, PackVerification};
use crate::repo::{pack_key, Repository, INDEX_DIR};

/// How far back a verification counts towards coverage.
pub const COVERAGE_WINDOW_DAYS: i64 = 30;

/// Limits of a verification pass (`--max-duration`, `--max-bytes`): the packs
/// verified least recently are read first, until a limit is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    pub max_duration: Option<Duration>,
    pub max_bytes: Option<u64>,
}

impl Budget {
    pub fn is_limited(&self) -> bool {
        self.max_duration.is_some() || self.max_bytes.is_some()
    }
}

/// Which packs `--read-data` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// A random share, 0 < f <= 1.
    Fraction(f64),
    /// Slice n of m (1-based): the packs whose ID falls in the n-th of m equal
    /// ranges of the ID space, so m runs cover every pack exactly once.
    Slice(u32, u32),
}

impl std::str::FromStr for ReadData {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let err = || format!("'{s}' is not a subset: use a percentage (10%) or a slice (3/7)");
        if let Some(p) = s.strip_suffix('%') {
            let f: f64 = p.trim().parse().map_err(|_| err())?;
            if !(f > 0.0 && f <= 100.0) {
                return Err(err());
            }
            return Ok(ReadData::Fraction(f / 100.0));
        }
        if let Some((n, m)) = s.split_once('/') {
            let (n, m): (u32, u32) = (
                n.trim().parse().map_err(|_| err())?,
                m.trim().parse().map_err(|_| err())?,
            );
            if m == 0 || n == 0 || n > m {
                return Err(err());
            }
            return Ok(ReadData::Slice(n, m));
        }
        Err(err())
    }
}

/// One problem found, named by the object it concerns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub object: String,
    pub message: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub trees: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs_indexed: usize,
    pub errors: Vec<Problem>,
    /// Not damage, but worth knowing (e.g. packs no index lists).
    pub warnings: Vec<Problem>,
    /// Information only: data no snapshot needs (a prune frees it),
    /// snapshots whose backup has not committed.
    pub info: Vec<Problem>,
    /// Packs holding no blob any snapshot needs, and their bytes.
    pub unused_packs: usize,
    pub unused_bytes: u64,
    /// Files hurt by damaged blobs: snapshot short ID and path.
    pub damaged_files: Vec<(String, String)>,
    /// Damaged or lost packs, each with the snapshots and files needing it.
    pub damaged_packs: Vec<DamagedPack>,
    /// Bytes of packs read whole by this check.
    pub bytes_read: u64,
    /// With a budget: whether it ran out before every chosen pack was read.
    pub budget_exhausted: bool,
    /// Coverage after this check (only when pack contents were read): bytes
    /// of live packs verified intact within 30 days ÷ bytes of live packs.
    pub coverage_30d: Option<f64>,
    pub covered_bytes_30d: u64,
    pub live_bytes: u64,
    /// The oldest last verification of any live pack; null when some live
    /// pack was never verified (`packs_never_verified`).
    pub oldest_verification: Option<chrono::DateTime<chrono::Utc>>,
    pub packs_never_verified: usize,
    /// The ledger record this check wrote (`verify/...`), if any.
    pub recorded: Option<String>,
}

/// A pack found damaged or missing, and what depends on it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DamagedPack {
    pub pack: String,
    pub snapshots: Vec<String>,
    /// (snapshot short ID, path)
    pub files: Vec<(String, String)>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

struct Checker<'a> {
    repo: &'a Repository,
    errors: Mutex<Vec<Problem>>,
}

impl Checker<'_> {
    fn error(&self, object: impl Into<String>, message: impl std::fmt::Display) {
        self.errors.lock().unwrap().push(Problem {
            object: object.into(),
            message: message.to_string(),
        });
    }
}

/// Runs a check. Loads the index itself (reporting unreadable index objects).
pub fn check(repo: &mut Repository, read: ReadData) -> Result<CheckReport> {
    check_with_budget(repo, read, Budget::default())
}

/// [`check`] with a verification budget: the packs verified least recently
/// (by the ledger) are read first, until the budget is spent. Every pack read
/// is recorded in the ledger (`verify/`), unless the repository is read-only
/// (format 1).
pub fn check_with_budget(
    repo: &mut Repository,
    read: ReadData,
    budget: Budget,
) -> Result<CheckReport> {
    check_with_progress(repo, read, budget, &|_| {})
}

/// [`check_with_budget`], telling `phase` what it is doing ("walking
/// snapshots", "reading packs: 3/40"...), for a progress display.
pub fn check_with_progress(
    repo: &mut Repository,
    read: ReadData,
    budget: Budget,
    phase: &dyn Fn(&str),
) -> Result<CheckReport> {
    let mut found = structure(repo, phase)?;
    if !found.errors.is_empty() {
        // A repository in use changes while it is checked (a backup commits,
        // another host's prune sweeps): a problem is reported only if a
        // second look, from a fresh listing and index, finds it too.
        phase("looking again: the repository may have changed meanwhile");
        found = structure(repo, phase)?;
    }
    let Structure {
        mut report,
        errors,
        stored,
        gc,
        lost_packs,
        snapshots,
        reached,
    } = found;
    let repo: &Repository = repo;
    let c = Checker {
        repo,
        errors: Mutex::new(errors),
    };

    // Which pack each damaged blob was found in (for naming packs' dependants).
    let mut bad: HashMap<BlobId, PackId> = HashMap::new();
    if read != ReadData::None {
        // Packs the open generation condemned are garbage, not data: skipped.
        // (Packs a finished sweep spared are live again and verified.)
        let gone = gc.all_condemned();
        let live: HashMap<PackId, (BlobType, u64)> = stored
            .iter()
            .filter(|(id, _)| !gone.contains(id))
            .map(|(id, v)| (*id, *v))
            .collect();
        let ledger = ledger::load_ledger(repo)?;
        let chosen = order_by_ledger(choose_packs(&live, read), &ledger.packs);
        let results = read_packs(&c, &chosen, budget, &mut report, phase);
        // A pack that vanished while being read: a sweep deleted it (skip) or damage.
        let vanished: Vec<PackId> = results
            .iter()
            .filter(|(_, r)| matches!(r, PackRead::Missing(_)))
            .map(|(id, _)| *id)
            .collect();
        // A pack that vanished while being read and that no listing shows now
        // was deleted by a sweep meanwhile: skipped, unless a valid snapshot
        // needs a blob that no other pack holds (then it is lost: damage).
        let now_gone: HashSet<PackId> = if vanished.is_empty() {
            HashSet::new()
        } else {
            let listed: HashSet<PackId> = repo
                .list_packs()?
                .into_iter()
                .map(|(id, _, _)| id)
                .collect();
            vanished
                .iter()
                .filter(|p| !listed.contains(p))
                .copied()
                .collect()
        };
        for pack in &now_gone {
            let needed = indexed_in(repo, pack)
                .into_iter()
                .any(|b| reached.contains(repo, &b) && !has_copy_outside(repo, &b, &now_gone));
            if needed {
                let kind = stored.get(pack).map(|(k, _)| *k).unwrap_or(BlobType::Data);
                c.error(
                    pack_key(kind, pack),
                    "pack vanished while being verified, and a snapshot needs it",
                );
                bad.extend(indexed_in(repo, pack).into_iter().map(|b| (b, *pack)));
            }
        }
        let now = chrono::Utc::now();
        let mut rec = VerifyRecord {
            time: now,
            hostname: crate::repo::hostname(),
            ..Default::default()
        };
        let mut latest = ledger.packs;
        for (id, r) in results {
            let ok = match r {
                PackRead::Ok => true,
                PackRead::Damaged(blobs) => {
                    bad.extend(blobs.into_iter().map(|b| (b, id)));
                    false
                }
                PackRead::Missing(_) if now_gone.contains(&id) => continue,
                PackRead::Missing(e) => {
                    let kind = stored.get(&id).map(|(k, _)| *k).unwrap_or(BlobType::Data);
                    c.error(pack_key(kind, &id), e);
                    bad.extend(indexed_in(repo, &id).into_iter().map(|b| (b, id)));
                    false
                }
            };
            if ok {
                rec.ok.insert(id);
            } else {
                rec.damaged.insert(id);
            }
            latest.insert(id, PackVerification { time: now, ok });
        }
        let live: HashMap<PackId, u64> = live
            .into_iter()
            .filter(|(id, _)| !now_gone.contains(id))
            .map(|(id, (_, size))| (id, size))
            .collect();
        rec.damaged_outstanding = latest
            .iter()
            .filter(|(id, v)| !v.ok && live.contains_key(*id))
            .map(|(id, _)| *id)
            .collect();
        coverage(&live, &latest, now, &mut report);
        rec.covered_bytes_30d = report.covered_bytes_30d;
        rec.live_bytes = report.live_bytes;
        rec.oldest_verification = report.oldest_verification;
        if repo.ensure_writable().is_ok() && !(rec.ok.is_empty() && rec.damaged.is_empty()) {
            match ledger::record_verification(repo, &rec) {
                Ok(key) => report.recorded = Some(key),
                Err(e) => report.warnings.push(Problem {
                    object: "verify/".into(),
                    message: format!("could not record this verification pass: {e}"),
                }),
            }
        }
    }
    // A blob is lost with a pack only if no other copy lives in a pack that is
    // there (after concurrent backups or a repack, blobs can be stored twice).
    for pack in &lost_packs {
        for b in indexed_in(repo, pack) {
            if !has_copy_outside(repo, &b, &lost_packs) {
                bad.entry(b).or_insert(*pack);
            }
        }
    }
    for id in &reached.unindexed_data {
        // Not in any index: no pack to name.
        bad.entry(*id).or_default();
    }
    if !bad.is_empty() {
        let (files, by_pack) = files_using(repo, &snapshots, &bad);
        report.damaged_files = files;
        let mut packs: Vec<DamagedPack> = by_pack
            .into_iter()
            .filter(|(p, _)| *p != PackId::default())
            .map(|(p, files)| {
                let kind = stored
                    .get(&p)
                    .map(|(k, _)| *k)
                    .or_else(|| {
                        repo.index()
                            .packs()
                            .into_iter()
                            .find(|(id, _)| *id == p)
                            .map(|(_, k)| k)
                    })
                    .unwrap_or(BlobType::Data);
                let mut snaps: Vec<String> = files.iter().map(|(s, _)| s.clone()).collect();
                snaps.sort();
                snaps.dedup();
                DamagedPack {
                    pack: pack_key(kind, &p),
                    snapshots: snaps,
                    files,
                }
            })
            .collect();
        packs.sort_by(|a, b| a.pack.cmp(&b.pack));
        report.damaged_packs = packs;
    }
    report.errors = c.errors.into_inner().unwrap();
    Ok(report)
}

/// Coverage of the live packs by verifications within the window.
fn coverage(
    live: &HashMap<PackId, u64>,
    latest: &HashMap<PackId, PackVerification>,
    now: chrono::DateTime<chrono::Utc>,
    report: &mut CheckReport,
) {
    let since = now - chrono::Duration::days(COVERAGE_WINDOW_DAYS);
    let mut oldest: Option<chrono::DateTime<chrono::Utc>> = None;
    for (id, size) in live {
        report.live_bytes += size;
        match latest.get(id) {
            Some(v) => {
                if v.ok && v.time >= since {
                    report.covered_bytes_30d += size;
                }
                oldest = Some(oldest.map_or(v.time, |o| o.min(v.time)));
            }
            None => report.packs_never_verified += 1,
        }
    }
    report.coverage_30d = Some(if report.live_bytes == 0 {
        1.0
    } else {
        report.covered_bytes_30d as f64 / report.live_bytes as f64
    });
    report.oldest_verification = if report.packs_never_verified == 0 {
        oldest
    } else {
        None
    };
}

/// Never-verified packs first (in random order), then the least recently verified.
fn order_by_ledger(
    mut packs: Vec<(PackId, BlobType, u64)>,
    ledger: &HashMap<PackId, PackVerification>,
) -> Vec<(PackId, BlobType, u64)> {
    use rand::seq::SliceRandom;
    packs.shuffle(&mut rand::thread_rng());
    packs.sort_by_key(|(id, _, _)| ledger.get(id).map(|v| v.time));
    packs
}

/// Whether a blob has a copy in a pack other than `lost` ones.
fn has_copy_outside(repo: &Repository, id: &BlobId, lost: &HashSet<PackId>) -> bool {
    repo.index()
        .locations(id)
        .iter()
        .any(|(_, l)| !lost.contains(&l.pack))
}

fn indexed_in(repo: &Repository, pack: &PackId) -> Vec<BlobId> {
    repo.index()
        .iter()
        .filter(|(_, l)| l.pack == *pack)
        .map(|(id, _)| id)
        .collect()
}

/// What the structural pass found, before any pack is read.
struct Structure {
    report: CheckReport,
    errors: Vec<Problem>,
    stored: HashMap<PackId, (BlobType, u64)>,
    gc: crate::repo::gc::GcState,
    lost_packs: HashSet<PackId>,
    snapshots: Vec<(SnapshotId, Snapshot)>,
    reached: Reached,
}

/// Lists snapshots, loads the index afresh, checks keys, records, the index
/// against storage and every snapshot's trees.
fn structure(repo: &mut Repository, phase: &dyn Fn(&str)) -> Result<Structure> {
    repo.clear_index();
    let mut report = CheckReport::default();
    // Snapshots first, then the index: a backup writes its index objects
    // before its snapshot, so every snapshot listed here has its blobs in the
    // index loaded next. (A snapshot forgotten and pruned meanwhile is
    // recognised by the second look.)
    phase("listing snapshots");
    let (listed, mut snapshot_problems, not_committed) = list_snapshots(repo)?;
    report.info.extend(not_committed);
    phase("loading the index");
    let mut index_problems = load_index_tolerant(repo)?;
    index_problems.append(&mut snapshot_problems);
    let repo: &Repository = repo;
    let c = Checker {
        repo,
        errors: Mutex::new(index_problems),
    };
    let stored: HashMap<PackId, (BlobType, u64)> = repo
        .list_packs()?
        .into_iter()
        .map(|(id, k, s)| (id, (k, s)))
        .collect();
    report.packs = stored.len();
    report.blobs_indexed = repo.index().blob_count();

    check_keys(&c)?;
    let gc = crate::repo::gc::GcState::load(repo)?;
    check_records(&c, &gc)?;
    let lost_packs = check_index_against_storage(&c, &stored, &mut report);
    phase("walking snapshots and trees");
    let (snapshots, reached) = check_snapshots(&c, listed)?;
    report_unused(repo, &stored, &reached, &mut report);
    judge_missing_packs(
        &c,
        &stored,
        &lost_packs,
        &|id| reached.contains(repo, id),
        &mut report,
    );
    report.snapshots = snapshots.len();
    report.trees = reached.trees;
    Ok(Structure {
        report,
        errors: c.errors.into_inner().unwrap(),
        stored,
        gc,
        lost_packs,
        snapshots,
        reached,
    })
}

/// Reads every index object once (in parallel), reporting the unreadable ones
/// and indexing the rest, so the check can go on past a damaged index.
fn load_index_tolerant(repo: &mut Repository) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let listed: Vec<_> = repo
        .backend()
        .list(INDEX_DIR)?
        .into_iter()
        .filter(|l| match repo.index_listing_problem(l) {
            Some(why) => {
                problems.push(Problem {
                    object: l.key.clone(),
                    message: format!("not an index object: {why}"),
                });
                false
            }
            None => true,
        })
        .collect();
    // A few objects at a time, folded in as read: the decoded form of every
    // index object never exists at once.
    for group in listed.chunks(2 * rayon::current_num_threads().max(1)) {
        let read: Vec<_> = group
            .par_iter()
            .map(|l| (l.key.clone(), repo.read_index_object(&l.key)))
            .collect();
        for (key, result) in read {
            match result {
                Ok(packs) => {
                    for p in &packs {
                        repo.index().add_pack(p)?;
                    }
                }
                Err(e) => problems.push(Problem {
                    object: key,
                    message: e.to_string(),
                }),
            }
        }
    }
    repo.index().finish_load()?;
    Ok(problems)
}

/// Every key object must match its name and parse (an edited or planted key
/// file is reported, though opening simply skips it).
fn check_keys(c: &Checker) -> Result<()> {
    for l in c.repo.backend().list(crate::repo::KEYS_DIR)? {
        match c.repo.get_named(&l.key) {
            Ok(bytes) => {
                if let Err(e) = crate::format::objects::KeyFile::parse(&bytes) {
                    c.error(&l.key, e);
                }
            }
            Err(e) => c.error(&l.key, e),
        }
    }
    Ok(())
}

/// Counts the packs no snapshot needs: information, never an error.
fn report_unused(
    repo: &Repository,
    stored: &HashMap<PackId, (BlobType, u64)>,
    reached: &Reached,
    report: &mut CheckReport,
) {
    let used: HashSet<PackId> = repo
        .index()
        .iter()
        .enumerate()
        .filter(|(pos, _)| reached.marks.contains(*pos))
        .map(|(_, (_, loc))| loc.pack)
        .collect();
    for (id, (_, size)) in stored {
        if !used.contains(id) {
            report.unused_packs += 1;
            report.unused_bytes += size;
        }
    }
    if report.unused_packs > 0 {
        report.info.push(Problem {
            object: "repository".into(),
            message: format!(
                "{} packs ({} bytes) hold no data any snapshot needs; `cairn prune` frees them",
                report.unused_packs, report.unused_bytes
            ),
        });
    }
}

/// The coordination records (repo-format.md §15): every `gc/` record that
/// feeds a decision and every session record is read and authenticated, and
/// whatever does not open, or is not a name cairn writes, is damage (rule 13).
/// The other commands err on the safe side past such records; check names them.
fn check_records(c: &Checker, gc: &crate::repo::gc::GcState) -> Result<()> {
    for p in &gc.problems {
        c.error(p.key.clone(), &p.message);
    }
    let (_, problems) = crate::repo::session::survey(c.repo, true)?;
    for p in problems {
        c.error(p.key, p.message);
    }
    Ok(())
}

/// Returns the packs the index names that storage does not hold (or holds short).
fn check_index_against_storage(
    c: &Checker,
    stored: &HashMap<PackId, (BlobType, u64)>,
    report: &mut CheckReport,
) -> HashSet<PackId> {
    let mut lost = HashSet::new();
    let trailer = c.repo.trailer().len() as u64;
    let mut ends: HashMap<PackId, u64> = HashMap::new();
    for (_, loc) in c.repo.index().iter() {
        let e = ends.entry(loc.pack).or_default();
        *e = (*e).max(loc.offset as u64 + loc.length as u64);
    }
    for (pack, kind) in c.repo.index().packs() {
        let problem = match stored.get(&pack) {
            // Judged, whatever the sweep records say, once the snapshots are walked (see `judge_missing_packs`).
            None => {
                lost.insert(pack);
                None
            }
            Some((k, _)) if *k != kind => Some("pack is stored under the wrong type".into()),
            Some((_, size)) if ends.get(&pack).copied().unwrap_or(0) + trailer > *size => Some(
                format!("pack is {size} bytes, shorter than its indexed blobs"),
            ),
            _ => None,
        };
        if let Some(p) = problem {
            c.error(pack_key(kind, &pack), p);
            lost.insert(pack);
        }
    }
    for (id, (kind, _)) in stored {
        if !c.repo.index().has_pack(id) {
            report.warnings.push(Problem {
                object: pack_key(*kind, id),
                message: "pack is not in any index (a backup still running or one interrupted; the next backup adopts it)".into(),
            });
        }
    }
    lost
}

/// A pack the index names but storage lacks is damage when a snapshot needs
/// a blob of it that no other pack holds. Otherwise it is only a stale index
/// entry (a backup fenced by a prune after writing its index): a warning.
fn judge_missing_packs(
    c: &Checker,
    stored: &HashMap<PackId, (BlobType, u64)>,
    lost: &HashSet<PackId>,
    needed: &dyn Fn(&BlobId) -> bool,
    report: &mut CheckReport,
) {
    let mut harmful: HashSet<PackId> = HashSet::new();
    if !lost.is_empty() {
        let in_lost: Vec<(BlobId, PackId)> = c
            .repo
            .index()
            .iter()
            .filter(|(_, loc)| lost.contains(&loc.pack))
            .map(|(id, loc)| (id, loc.pack))
            .collect();
        for (id, pack) in in_lost {
            if needed(&id) && !has_copy_outside(c.repo, &id, lost) {
                harmful.insert(pack);
            }
        }
    }
    for (pack, kind) in c.repo.index().packs() {
        if !lost.contains(&pack) || stored.contains_key(&pack) {
            continue;
        }
        if harmful.contains(&pack) {
            c.error(
                pack_key(kind, &pack),
                "pack is in the index but missing from storage",
            );
        } else {
            report.warnings.push(Problem {
                object: pack_key(kind, &pack),
                message: "pack is in the index but gone from storage; no snapshot needs it (an index entry left by a backup a prune invalidated)".into(),
            });
        }
    }
}

/// Valid snapshots, problems, and information (see `list_snapshots`).
type SnapshotListing = (Vec<(SnapshotId, Snapshot)>, Vec<Problem>, Vec<Problem>);

/// The valid snapshots (committed, per §15), the snapshots that do not load
/// (problems), and those whose backup has not committed (information).
fn list_snapshots(repo: &Repository) -> Result<SnapshotListing> {
    let mut snapshots = Vec::new();
    let (mut problems, mut info) = (Vec::new(), Vec::new());
    let ended = repo.ended_sessions()?;
    for id in repo.snapshot_ids()? {
        match repo.load_snapshot(&id) {
            Ok(s) if repo.snapshot_is_valid(&id, &s, &ended)? => snapshots.push((id, s)),
            Ok(_) => info.push(Problem {
                object: format!("snapshots/{id}"),
                message: "its backup has not committed (still running, interrupted or invalidated by a prune): ignored".into(),
            }),
            // Forgotten between the listing and the read: not a problem.
            Err(Error::MissingObject(_)) => {}
            Err(e) => problems.push(Problem {
                object: format!("snapshots/{id}"),
                message: e.to_string(),
            }),
        }
    }
    Ok((snapshots, problems, info))
}

/// Walks the trees of the listed snapshots once. What a walk misses is
/// reported as found; whether it was only a snapshot forgotten and collected
/// while check ran is for the second look (`check_with_progress`) to tell.
fn check_snapshots(
    c: &Checker,
    snapshots: Vec<(SnapshotId, Snapshot)>,
) -> Result<(Vec<(SnapshotId, Snapshot)>, Reached)> {
    let reached = crate::ops::reach::reach(
        c.repo,
        snapshots.iter().map(|(_, s)| s.tree),
        &mut |id, e| {
            c.error(format!("tree {id}"), e);
            Ok(())
        },
    )?;
    let mut unindexed: Vec<&BlobId> = reached.unindexed_data.iter().collect();
    unindexed.sort();
    for id in unindexed {
        c.error(
            format!("blob {id}"),
            "data blob is referenced by a snapshot but not in any index",
        );
    }
    Ok((snapshots, reached))
}

fn choose_packs(
    stored: &HashMap<PackId, (BlobType, u64)>,
    read: ReadData,
) -> Vec<(PackId, BlobType, u64)> {
    let mut all: Vec<_> = stored.iter().map(|(id, (k, s))| (*id, *k, *s)).collect();
    all.sort_by_key(|(id, _, _)| *id);
    match read {
        ReadData::None => Vec::new(),
        ReadData::All => all,
        ReadData::Fraction(f) => {
            use rand::seq::SliceRandom;
            let n = ((all.len() as f64) * f).ceil() as usize;
            all.shuffle(&mut rand::thread_rng());
            all.truncate(n.min(all.len()));
            all
        }
        ReadData::Slice(n, m) => all
            .into_iter()
            .filter(|(id, _, _)| {
                let x = u32::from_be_bytes(id.0[..4].try_into().unwrap()) as u64;
                ((x * m as u64) >> 32) as u32 == n - 1
            })
            .collect(),
    }
}

/// What reading one pack whole found.
enum PackRead {
    Ok,
    /// Damaged: the blobs lost with it (all its indexed blobs when unreadable).
    Damaged(Vec<BlobId>),
    /// Not in storage any more (a sweep, or damage: decided by the caller).
    Missing(crate::error::Error),
}

/// Downloads packs in the order given, checks their names, headers and every
/// blob, until the budget is spent (checked before each batch; the byte
/// budget always lets the first pack through).
fn read_packs(
    c: &Checker,
    packs: &[(PackId, BlobType, u64)],
    budget: Budget,
    report: &mut CheckReport,
    phase: &dyn Fn(&str),
) -> Vec<(PackId, PackRead)> {
    let started = Instant::now();
    let mut take = packs.len();
    if let Some(max) = budget.max_bytes {
        let mut sum = 0u64;
        take = packs
            .iter()
            .take_while(|(_, _, size)| {
                sum += size;
                sum <= max
            })
            .count()
            .max(1)
            .min(packs.len());
    }
    let batch = 2 * rayon::current_num_threads().max(1);
    let mut out = Vec::new();
    let total_bytes: u64 = packs[..take].iter().map(|(_, _, s)| s).sum();
    for group in packs[..take].chunks(batch) {
        if budget.max_duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        phase(&format!(
            "reading packs: {}/{} ({} of {} MB)",
            report.packs_read,
            take,
            report.bytes_read / 1_000_000,
            total_bytes / 1_000_000
        ));
        let read: Vec<(PackId, PackRead)> = group
            .par_iter()
            .map(|(id, kind, _)| (*id, read_pack(c, id, *kind)))
            .collect();
        report.packs_read += read.len();
        report.bytes_read += group.iter().map(|(_, _, s)| s).sum::<u64>();
        out.extend(read);
    }
    report.budget_exhausted = out.len() < packs.len();
    out
}

fn read_pack(c: &Checker, id: &PackId, kind: BlobType) -> PackRead {
    let key = pack_key(kind, id);
    let bytes = match c.repo.backend().get(&key) {
        Ok(b) => b,
        Err(e @ crate::error::Error::MissingObject(_)) => return PackRead::Missing(e),
        Err(e) => {
            c.error(&key, e);
            return PackRead::Damaged(indexed_in(c.repo, id));
        }
    };
    // The name check and the blob checks share the cores: a pack is a few
    // MB of independent blobs, and checking them one after another left a
    // core idle whenever the packs of a batch were uneven.
    let (name_ok, header) = rayon::join(
        || storage_hash(&bytes) == id.0,
        || pack::read_header(c.repo.cipher(), c.repo.trailer(), &bytes),
    );
    let mut damaged = false;
    if !name_ok {
        c.error(&key, "content does not match its SHA-256 name");
        damaged = true;
    }
    let entries = match header {
        Ok((_, e)) => e,
        Err(e) => {
            c.error(&key, format!("header unreadable: {e}"));
            return PackRead::Damaged(indexed_in(c.repo, id));
        }
    };
    let checked: Vec<(BlobId, bool, bool)> = entries
        .par_iter()
        .map(|e| {
            let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            let intact = blob::decode(c.repo.cipher(), &e.id, sealed, Some(e.raw_length as usize))
                .map(|p| c.repo.hasher().id(&p) == e.id)
                .unwrap_or(false);
            let misplaced = c.repo.index().lookup(&e.id).is_some_and(|loc| {
                loc.pack == *id && (loc.offset, loc.length) != (e.offset, e.length)
            });
            (e.id, intact, misplaced)
        })
        .collect();
    let mut bad = Vec::new();
    for (blob, intact, misplaced) in checked {
        if !intact {
            c.error(&key, format!("blob {blob} is damaged"));
            bad.push(blob);
        }
        if misplaced {
            c.error(
                &key,
                format!("blob {blob}: index and pack header disagree on its place"),
            );
            damaged = true;
        }
    }
    if damaged || !bad.is_empty() {
        PackRead::Damaged(bad)
    } else {
        PackRead::Ok
    }
}

/// Which snapshot files use any of the given blobs: all of them, and by the
/// pack each bad blob was found in.
#[allow(clippy::type_complexity)]
fn files_using(
    repo: &Repository,
    snaps: &[(SnapshotId, crate::format::snapshot::Snapshot)],
    bad: &HashMap<BlobId, PackId>,
) -> (
    Vec<(String, String)>,
    HashMap<PackId, Vec<(String, String)>>,
) {
    let mut out = Vec::new();
    let mut by_pack: HashMap<PackId, Vec<(String, String)>> = HashMap::new();
    for (sid, s) in snaps {
        // A tree that fails to load was reported already; list what can be reached.
        let _ = crate::repo::tree::walk_loaded(repo, &s.tree, Path::new("/"), &mut |item| {
            let packs: HashSet<PackId> = item
                .node
                .content
                .iter()
                .filter_map(|c| bad.get(&c.id).copied())
                .collect();
            if !packs.is_empty() {
                let f = (sid.short(), item.path.display().to_string());
                for p in packs {
                    by_pack.entry(p).or_default().push(f.clone());
                }
                out.push(f);
            }
            Ok(true)
        });
    }
    (out, by_pack)
}

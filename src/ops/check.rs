//! Check: is the repository whole? Structure always; pack contents on request.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::Result;
use crate::format::blob::{self, BlobType};
use crate::format::id::{storage_hash, BlobId, PackId, SnapshotId};
use crate::format::pack;
use crate::repo::{pack_key, Repository, INDEX_DIR};

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
    let mut report = CheckReport::default();
    let index_problems = load_index_tolerant(repo)?;
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
    let lost_packs = check_index_against_storage(&c, &stored, &gc.deleted(), &mut report);
    let (snapshots, trees, used, reached_trees) = check_snapshots(&c, &mut report)?;
    report_unused(repo, &stored, &used, &reached_trees, &mut report);
    judge_missing_packs(
        &c,
        &stored,
        &lost_packs,
        &|id| used.contains(id) || reached_trees.contains(id),
        &mut report,
    );
    report.snapshots = snapshots.len();
    report.trees = trees;

    let damaged_blobs = if read != ReadData::None {
        let chosen = choose_packs(&stored, read);
        report.packs_read = chosen.len();
        read_packs(&c, &chosen)
    } else {
        HashSet::new()
    };
    let mut missing_or_damaged: HashSet<BlobId> = damaged_blobs;
    missing_or_damaged.extend(used.iter().filter(|id| !repo.index().contains(id)));
    // A blob is lost with a pack only if no other copy lives in a pack that is
    // there (after concurrent backups or a repack, blobs can be stored twice).
    let alive: HashSet<BlobId> = repo
        .index()
        .iter()
        .filter(|(_, loc)| !lost_packs.contains(&loc.pack))
        .map(|(id, _)| id)
        .collect();
    missing_or_damaged.extend(
        repo.index()
            .iter()
            .filter(|(id, loc)| lost_packs.contains(&loc.pack) && !alive.contains(id))
            .map(|(id, _)| id),
    );
    if !missing_or_damaged.is_empty() {
        report.damaged_files = files_using(repo, &snapshots, &missing_or_damaged);
    }
    report.errors = c.errors.into_inner().unwrap();
    Ok(report)
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
    let read: Vec<_> = listed
        .par_iter()
        .map(|l| (l.key.clone(), repo.read_index_object(&l.key)))
        .collect();
    let mut readable = Vec::new();
    for (key, result) in read {
        match result {
            Ok(packs) => readable.extend(packs),
            Err(e) => problems.push(Problem {
                object: key,
                message: e.to_string(),
            }),
        }
    }
    repo.index_packs(&readable);
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
    data: &HashSet<BlobId>,
    trees: &HashSet<BlobId>,
    report: &mut CheckReport,
) {
    let used: HashSet<PackId> = repo
        .index()
        .iter()
        .filter(|(id, _)| data.contains(id) || trees.contains(id))
        .map(|(_, loc)| loc.pack)
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

/// Returns the packs the index names that storage does not hold (or holds short).
fn check_index_against_storage(
    c: &Checker,
    stored: &HashMap<PackId, (BlobType, u64)>,
    pruned: &HashSet<PackId>,
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
            // Deleted by a prune whose index compaction this check overlapped.
            None if pruned.contains(&pack) => None,
            // Judged once the snapshots are walked (see `judge_missing_packs`).
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
                message: "pack is not in any index (left by an interrupted backup; the next backup adopts it)".into(),
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
    let alive: HashSet<BlobId> = c
        .repo
        .index()
        .iter()
        .filter(|(_, loc)| !lost.contains(&loc.pack))
        .map(|(id, _)| id)
        .collect();
    let mut harmful: HashSet<PackId> = HashSet::new();
    for (id, loc) in c.repo.index().iter() {
        if lost.contains(&loc.pack) && needed(&id) && !alive.contains(&id) {
            harmful.insert(loc.pack);
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

/// Loads every snapshot and walks every tree once. Returns the snapshots, the
/// number of trees and every data blob referenced.
fn check_snapshots(
    c: &Checker,
    report: &mut CheckReport,
) -> Result<(
    Vec<(SnapshotId, crate::format::snapshot::Snapshot)>,
    usize,
    HashSet<BlobId>,
    HashSet<BlobId>,
)> {
    let mut snapshots = Vec::new();
    let ended = c.repo.ended_sessions()?;
    for id in c.repo.snapshot_ids()? {
        match c.repo.load_snapshot(&id) {
            Ok(s) if c.repo.snapshot_is_valid(&id, &s, &ended)? => snapshots.push((id, s)),
            Ok(_) => report.info.push(Problem {
                object: format!("snapshots/{id}"),
                message: "its backup has not committed (still running, interrupted or invalidated by a prune): ignored".into(),
            }),
            Err(e) => c.error(format!("snapshots/{id}"), e),
        }
    }
    let reached = crate::ops::reach::reach(
        c.repo,
        snapshots.iter().map(|(_, s)| s.tree),
        &mut |id, e| {
            c.error(format!("tree {id}"), e);
            Ok(())
        },
    )?;
    let data = reached.data;
    for id in &data {
        if !c.repo.index().contains(id) {
            c.error(
                format!("blob {id}"),
                "data blob is referenced by a snapshot but not in any index",
            );
        }
    }
    Ok((snapshots, reached.trees.len(), data, reached.trees))
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
                (x * m as u64 >> 32) as u32 == n - 1
            })
            .collect(),
    }
}

/// Downloads packs, checks their names, headers and every blob. Returns the
/// IDs of damaged blobs (all of a pack's indexed blobs when the pack is unreadable).
fn read_packs(c: &Checker, packs: &[(PackId, BlobType, u64)]) -> HashSet<BlobId> {
    let damaged = Mutex::new(HashSet::new());
    let indexed_in = |pack: &PackId| -> Vec<BlobId> {
        c.repo
            .index()
            .iter()
            .filter(|(_, l)| l.pack == *pack)
            .map(|(id, _)| id)
            .collect()
    };
    packs.par_iter().for_each(|(id, kind, _)| {
        let key = pack_key(*kind, id);
        let bytes = match c.repo.backend().get(&key) {
            Ok(b) => b,
            Err(e) => {
                c.error(&key, e);
                damaged.lock().unwrap().extend(indexed_in(id));
                return;
            }
        };
        if storage_hash(&bytes) != id.0 {
            c.error(&key, "content does not match its SHA-256 name");
        }
        let entries = match pack::read_header(c.repo.cipher(), c.repo.trailer(), &bytes) {
            Ok((_, e)) => e,
            Err(e) => {
                c.error(&key, format!("header unreadable: {e}"));
                damaged.lock().unwrap().extend(indexed_in(id));
                return;
            }
        };
        for e in entries {
            let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            let ok = blob::decode(c.repo.cipher(), &e.id, sealed, Some(e.raw_length as usize))
                .map(|p| c.repo.hasher().id(&p) == e.id)
                .unwrap_or(false);
            if !ok {
                c.error(&key, format!("blob {} is damaged", e.id));
                damaged.lock().unwrap().insert(e.id);
            }
            if let Some(loc) = c.repo.index().lookup(&e.id) {
                if loc.pack == *id && (loc.offset, loc.length) != (e.offset, e.length) {
                    c.error(
                        &key,
                        format!("blob {}: index and pack header disagree on its place", e.id),
                    );
                }
            }
        }
    });
    damaged.into_inner().unwrap()
}

/// Which snapshot files use any of the given blobs.
fn files_using(
    repo: &Repository,
    snaps: &[(SnapshotId, crate::format::snapshot::Snapshot)],
    bad: &HashSet<BlobId>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (sid, s) in snaps {
        // A tree that fails to load was reported already; list what can be reached.
        let _ = crate::ops::restore::walk_tree(repo, &s.tree, Path::new("/"), &mut |item| {
            if item.node.content.iter().any(|c| bad.contains(&c.id)) {
                out.push((sid.short(), item.path.display().to_string()));
            }
            Ok(true)
        });
    }
    out
}

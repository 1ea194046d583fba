//! `repair index|packs|snapshots`: heal after damage, plan then execute.
//!
//! - **index**: packs that storage holds but no index names (an index object
//!   lost or damaged, an interrupted backup) get new index objects, read from
//!   their own headers. Additive: nothing is deleted.
//! - **packs**: for each damaged pack (named, or found damaged by the latest
//!   verification), every blob that still decrypts and hashes is copied as it
//!   is into a new pack (unless an intact copy exists elsewhere), the new packs
//!   are indexed and committed in a writer session, and only then is the
//!   damaged pack deleted. Its lost blobs are then in no index, so the next
//!   backup of the intact source uploads them again (backup re-reads a file
//!   whose blobs are not all indexed), which makes every snapshot of it whole.
//!
//! - **snapshots**: a snapshot that needs data no index holds (after `repair
//!   packs`, what was lost) gets a repaired copy: files whose data is gone
//!   left out, directories whose tree is gone kept empty, tagged `repaired`;
//!   the damaged snapshot stays unless `forget` is asked for.
//!
//! Repair deletes only a pack whose readable blobs are stored again elsewhere:
//! what it deletes was already lost. Readers that loaded the index before
//! find the salvaged copies through the repository's re-resolving reader.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob::BlobType;
use crate::format::id::{BlobId, PackId, SnapshotId};
use crate::format::objects::IndexedPack;
use crate::format::pack::PackBuilder;
use crate::format::records::SessionKind;
use crate::format::snapshot::Snapshot;
use crate::ops::prune::write_pack;
use crate::ops::rewrite::{load_intact_tree, rewrite_snapshot, with_tag, Rules};
use crate::repo::session::Session;
use crate::repo::{ledger, pack_key, Repository};

/// What `repair packs` would do with one pack.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackRepair {
    pub pack: PackId,
    pub kind: BlobType,
    pub size: u64,
    /// Blobs that read intact and are stored nowhere else: copied.
    pub salvage: Vec<BlobId>,
    /// Where each of `salvage` sits in the pack (offset, length), as the
    /// plan found it: the repair reads the pack again, not the index.
    #[serde(skip)]
    places: Vec<(u32, u32)>,
    /// Blobs that read intact but have an intact copy in another pack.
    pub elsewhere: usize,
    /// Blobs that no longer decrypt or hash: gone with the pack.
    pub lost: Vec<BlobId>,
}

/// The plan: packs to salvage and delete, and packs named damaged that now
/// read intact (left alone).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PackRepairPlan {
    pub packs: Vec<PackRepair>,
    pub intact: Vec<PackId>,
    /// Named or recorded damaged, but no longer stored.
    pub missing: Vec<PackId>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PackRepairOutcome {
    pub packs_written: usize,
    pub blobs_salvaged: usize,
    pub blobs_lost: usize,
    pub packs_deleted: usize,
}

/// Pack IDs as `check` prints them (64 hex digits).
pub fn parse_packs(args: &[String]) -> std::result::Result<Vec<PackId>, String> {
    args.iter()
        .map(|p| {
            p.parse()
                .map_err(|_| format!("'{p}' is not a pack ID (64 hex digits, as check names it)"))
        })
        .collect()
}

/// The damaged packs the latest verification records: damaged by this pass
/// or still outstanding from an earlier one.
pub fn recorded_damage(repo: &Repository) -> Result<Vec<PackId>> {
    Ok(match ledger::latest_verification(repo)? {
        Some(r) => r.damaged.union(&r.damaged_outstanding).copied().collect(),
        None => Vec::new(),
    })
}

/// Reads each pack whole and sorts its blobs into salvageable and lost.
/// `repo`'s index must be loaded.
pub fn plan_packs(repo: &Repository, damaged: &[PackId]) -> Result<PackRepairPlan> {
    let stored: HashMap<PackId, (BlobType, u64)> = repo
        .list_packs()?
        .into_iter()
        .map(|(id, kind, size)| (id, (kind, size)))
        .collect();
    let damaged_set: HashSet<PackId> = damaged.iter().copied().collect();
    let mut entries_of: HashMap<PackId, Vec<(BlobId, u32, u32)>> = HashMap::new();
    for (id, loc) in repo.index().iter() {
        if damaged_set.contains(&loc.pack) {
            entries_of
                .entry(loc.pack)
                .or_default()
                .push((id, loc.offset, loc.length));
        }
    }
    let mut plan = PackRepairPlan::default();
    for pack in damaged {
        let Some(&(kind, size)) = stored.get(pack) else {
            plan.missing.push(*pack);
            continue;
        };
        // Not `get_named`: that refuses bytes that do not hash to their name,
        // and a damaged pack never does.
        let bytes = repo.backend().get(&pack_key(kind, pack))?;
        // The pack's own header lists blobs an index may lack; a damaged
        // header leaves the index's entries.
        let mut entries: Vec<(BlobId, u32, u32)> = entries_of.remove(pack).unwrap_or_default();
        let header = repo.read_pack_header(pack, kind, size);
        if let Ok(h) = &header {
            let known: HashSet<BlobId> = entries.iter().map(|e| e.0).collect();
            entries.extend(
                h.blobs
                    .iter()
                    .filter(|b| !known.contains(&b.id))
                    .map(|b| (b.id, b.offset, b.length)),
            );
        }
        // Two index objects may name the same pack: each blob once.
        entries.sort_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        let verdicts: Vec<((BlobId, u32, u32), bool)> = entries
            .into_par_iter()
            .map(|(id, offset, length)| {
                let ok = bytes
                    .get(offset as usize..(offset as usize + length as usize))
                    .is_some_and(|sealed| repo.decode_blob(&id, sealed, None).is_ok());
                ((id, offset, length), ok)
            })
            .collect();
        if verdicts.iter().all(|(_, ok)| *ok) && header.is_ok() {
            plan.intact.push(*pack);
            continue;
        }
        let mut r = PackRepair {
            pack: *pack,
            kind,
            size,
            salvage: Vec::new(),
            places: Vec::new(),
            elsewhere: 0,
            lost: Vec::new(),
        };
        for ((id, offset, length), ok) in verdicts {
            let copy_elsewhere = repo
                .index()
                .locations(&id)
                .iter()
                .any(|(_, l)| !damaged_set.contains(&l.pack) && stored.contains_key(&l.pack));
            match (ok, copy_elsewhere) {
                (_, true) => r.elsewhere += 1,
                (true, false) => {
                    r.salvage.push(id);
                    r.places.push((offset, length));
                }
                (false, false) => r.lost.push(id),
            }
        }
        plan.packs.push(r);
    }
    Ok(plan)
}

/// Carries out a pack plan: salvage, index, commit, then delete.
pub fn repair_packs(repo: &Repository, plan: &PackRepairPlan) -> Result<PackRepairOutcome> {
    let mut out = PackRepairOutcome::default();
    if plan.packs.is_empty() {
        return Ok(out);
    }
    let session = Session::start(repo, SessionKind::Repair)?;
    let written = match salvage(repo, plan, &session) {
        Ok(w) => w,
        Err(e) => {
            session.abort();
            return Err(e);
        }
    };
    if !written.is_empty() {
        repo.save_index(&written)?;
    }
    // Committed before anything is deleted: a fenced repair deletes nothing.
    session.commit(None)?;
    out.packs_written = written.len();
    for p in &plan.packs {
        repo.backend().delete(&pack_key(p.kind, &p.pack))?;
        out.packs_deleted += 1;
        out.blobs_salvaged += p.salvage.len();
        out.blobs_lost += p.lost.len();
    }
    Ok(out)
}

fn salvage(
    repo: &Repository,
    plan: &PackRepairPlan,
    session: &Session,
) -> Result<Vec<IndexedPack>> {
    let target = repo.config().pack_size as usize;
    let mut builders: HashMap<BlobType, PackBuilder> = HashMap::new();
    let mut written = Vec::new();
    for p in plan.packs.iter().filter(|p| !p.salvage.is_empty()) {
        session.check()?;
        let bytes = repo.backend().get(&pack_key(p.kind, &p.pack))?;
        for (&id, &(offset, length)) in p.salvage.iter().zip(&p.places) {
            let sealed = bytes
                .get(offset as usize..(offset as usize + length as usize))
                .ok_or_else(|| {
                    Error::corrupt(format!("pack {}", p.pack), "shorter than its index says")
                })?;
            // Verified again: the pack was read anew.
            let plain = repo.decode_blob(&id, sealed, None)?;
            let b = builders
                .entry(p.kind)
                .or_insert_with(|| PackBuilder::new(p.kind, target + target / 8));
            b.add(id, sealed, plain.len() as u32);
            if b.len() >= target {
                let full = builders.remove(&p.kind).expect("just used");
                written.push(write_pack(repo, full)?);
            }
        }
    }
    for (_, b) in builders.drain() {
        if !b.is_empty() {
            written.push(write_pack(repo, b)?);
        }
    }
    Ok(written)
}

/// What `repair index` would do.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IndexRepairPlan {
    /// Stored packs no index names.
    pub unindexed: Vec<PackId>,
    /// Of those, packs whose header cannot be read (left for `repair packs`).
    pub unreadable: Vec<PackId>,
}

/// Finds stored packs that no index names, except those a collector
/// condemned (a sweep may be about to delete them). `repo`'s index must be
/// loaded.
pub fn plan_index(repo: &Repository) -> Result<IndexRepairPlan> {
    let condemned = crate::repo::gc::GcState::load(repo)?.all_condemned();
    let mut plan = IndexRepairPlan::default();
    for (id, kind, size) in repo.listed_packs() {
        if repo.index().has_pack(id) || condemned.contains(id) {
            continue;
        }
        match repo.read_pack_header(id, *kind, *size) {
            Ok(_) => plan.unindexed.push(*id),
            Err(_) => plan.unreadable.push(*id),
        }
    }
    Ok(plan)
}

/// Writes index objects for the plan's readable unindexed packs, in a writer
/// session (so a collector sees a writer at work); returns how many.
pub fn repair_index(repo: &mut Repository, plan: &IndexRepairPlan) -> Result<usize> {
    if plan.unindexed.is_empty() {
        return Ok(0);
    }
    let session = Session::start(repo, SessionKind::Repair)?;
    let skip: HashSet<PackId> = session.condemned().clone();
    let adopted = match repo.adopt_unindexed_packs(&skip) {
        Ok(n) => n,
        Err(e) => {
            session.abort();
            return Err(e);
        }
    };
    session.commit(None)?;
    Ok(adopted)
}

/// A snapshot whose data is partly gone, and what its repair drops.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotRepair {
    pub snapshot: SnapshotId,
    /// Files with a content blob no index holds: dropped.
    pub lost_files: Vec<String>,
    /// Directories whose tree no longer loads: kept, empty.
    pub lost_dirs: Vec<String>,
    /// The repaired snapshot, once written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<SnapshotId>,
}

/// Finds the snapshots that need data the repository no longer holds (run
/// `repair packs` first: a damaged blob still indexed counts as present).
/// `repo`'s index must be loaded.
pub fn plan_snapshots(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
) -> Result<Vec<SnapshotRepair>> {
    let mut out = Vec::new();
    for (id, snap) in snapshots {
        let mut r = SnapshotRepair {
            snapshot: *id,
            lost_files: Vec::new(),
            lost_dirs: Vec::new(),
            repaired: None,
        };
        let mut pending = vec![(snap.tree, String::new())];
        while let Some((tree_id, path)) = pending.pop() {
            let Some(tree) = load_intact_tree(repo, &tree_id) else {
                r.lost_dirs
                    .push(if path.is_empty() { "/".into() } else { path });
                continue;
            };
            for node in &tree.nodes {
                let p = format!("{path}/{}", node.name);
                if let Some(sub) = node.subtree {
                    pending.push((sub, p.clone()));
                }
                if node.content.iter().any(|c| !repo.index().contains(&c.id)) {
                    r.lost_files.push(p);
                }
            }
        }
        if !r.lost_files.is_empty() || !r.lost_dirs.is_empty() {
            r.lost_files.sort();
            r.lost_dirs.sort();
            out.push(r);
        }
    }
    Ok(out)
}

/// Writes a repaired copy of each planned snapshot (lost files dropped, lost
/// directories empty, tagged `repaired`, `original` naming the damaged one),
/// each in its own writer session; with `forget`, the damaged snapshot is
/// removed once its repair has committed.
pub fn repair_snapshots(
    repo: &mut Repository,
    plan: &mut [SnapshotRepair],
    snapshots: &[(SnapshotId, Snapshot)],
    forget: bool,
) -> Result<()> {
    let rules = Rules {
        // Files whose data is gone are left out.
        keep: &|repo, _, n| n.content.iter().all(|c| repo.index().contains(&c.id)),
        lost_trees_empty: true,
        kind: SessionKind::Repair,
        tags: &|tags| with_tag(tags, "repaired"),
    };
    for r in plan.iter_mut() {
        if let Some((_, snap)) = snapshots.iter().find(|(id, _)| *id == r.snapshot) {
            r.repaired = Some(rewrite_snapshot(repo, r.snapshot, snap, &rules, forget)?);
        }
    }
    Ok(())
}

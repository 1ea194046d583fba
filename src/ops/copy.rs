//! Copy: send snapshots to another repository, uploading only what it lacks.
//!
//! The source is a reader (no session, no lock); the destination sees a writer
//! session per snapshot (repo-format.md §15), so a prune on either side never
//! waits for a copy. When both repositories share a blob-ID key (the
//! destination was made with `init --from`), blobs keep their IDs and move
//! sealed: opened with the source key and sealed again with the destination's,
//! never decompressed. Otherwise every blob is decoded, re-hashed with the
//! destination's key and stored again, and trees are rewritten bottom-up.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::format::blob::{self, BlobType};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::records::SessionKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::repo::blobs::WantedBlob;
use crate::repo::index::Marks;
use crate::repo::saver::{save_tree, BlobSaver, SaveStats};
use crate::repo::session::Session;
use crate::repo::Repository;

#[derive(Debug, Default, serde::Serialize)]
pub struct CopyOutcome {
    /// (source snapshot, new destination snapshot)
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Source snapshots the destination already holds.
    pub skipped: Vec<SnapshotId>,
    /// Source snapshots forgotten (and their data pruned) while the copy ran:
    /// another host's retention won the race, nothing is lost.
    pub forgotten_meanwhile: Vec<SnapshotId>,
    pub blobs_uploaded: u64,
    /// Stored bytes of the new blobs (what went up, before pack overhead).
    pub bytes_uploaded: u64,
    pub packs_uploaded: u64,
    /// The repositories share a blob-ID key (made with `init --from`): blobs
    /// moved sealed, without re-hashing.
    pub same_blob_ids: bool,
    pub duration_secs: f64,
}

/// The source snapshot a destination snapshot stands for.
fn origin(id: SnapshotId, s: &Snapshot) -> SnapshotId {
    s.original.unwrap_or(id)
}

/// What a copy reports as it goes (a terminal's progress line).
pub trait CopyProgress: Sync {
    /// Copying the `index`-th (from 1) of `total` snapshots starts.
    fn snapshot(&self, _index: usize, _total: usize, _id: &SnapshotId) {}
    /// One blob the destination lacked was stored (its plaintext length).
    fn blob(&self, _bytes: u64) {}
}

/// Reports nothing.
pub struct NoCopyProgress;
impl CopyProgress for NoCopyProgress {}

/// Copies `snapshots` (from `src`, oldest first) into `dst`, skipping those it
/// already holds (by their `original`).
pub fn copy(
    src: &mut Repository,
    dst: &mut Repository,
    snapshots: Vec<(SnapshotId, Snapshot)>,
) -> Result<CopyOutcome> {
    copy_with_progress(src, dst, snapshots, &NoCopyProgress)
}

/// [`copy`], reporting to `progress`.
pub fn copy_with_progress(
    src: &mut Repository,
    dst: &mut Repository,
    mut snapshots: Vec<(SnapshotId, Snapshot)>,
    progress: &dyn CopyProgress,
) -> Result<CopyOutcome> {
    let started = Instant::now();
    dst.ensure_writable()?;
    let mut out = CopyOutcome {
        same_blob_ids: src.config().blob_id_key == dst.config().blob_id_key,
        ..Default::default()
    };
    let present: HashSet<SnapshotId> = dst
        .list_snapshots()?
        .iter()
        .map(|(id, s)| origin(*id, s))
        .collect();
    snapshots.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    let (skip, todo): (Vec<_>, Vec<_>) = snapshots
        .into_iter()
        .partition(|(id, s)| present.contains(&origin(*id, s)));
    out.skipped = skip.into_iter().map(|(id, _)| id).collect();
    if todo.is_empty() {
        out.duration_secs = started.elapsed().as_secs_f64();
        return Ok(out);
    }
    src.load_index()?;
    let mut view: Option<u64> = None;
    let total = todo.len();
    for (i, (src_id, snap)) in todo.into_iter().enumerate() {
        progress.snapshot(i + 1, total, &src_id);
        let session = Session::start(dst, SessionKind::Copy)?;
        // The dedup view depends on the generation the session saw.
        if view != Some(session.saw()) {
            dst.load_index_excluding(session.condemned())?;
            view = Some(session.saw());
        }
        let moved = (|| {
            let saver = BlobSaver::new(dst, false)?;
            let tree = if out.same_blob_ids {
                copy_sealed(src, dst, &saver, &snap.tree, &session, progress)?
            } else {
                let mut map = HashMap::new();
                rekey_tree(src, &saver, &snap.tree, &mut map, &session, progress)?
            };
            let stats = saver.finish()?;
            Ok((tree, stats))
        })();
        let (tree, stats) = match moved {
            Ok(m) => m,
            // A lock-free prune may collect a snapshot's data once another
            // host forgot it; a copy that loses that race skips the snapshot.
            Err(_) if !src.snapshot_exists(&src_id)? => {
                session.abort();
                out.forgotten_meanwhile.push(src_id);
                continue;
            }
            Err(e) => return Err(e),
        };
        out.add(&stats);
        let copy = Snapshot {
            tree,
            original: Some(origin(src_id, &snap)),
            session: Some(session.id().to_string()),
            parent: None,
            ..snap
        };
        let id = session.commit_snapshot(dst, &copy)?;
        out.copied.push((src_id, id));
    }
    out.duration_secs = started.elapsed().as_secs_f64();
    Ok(out)
}

impl CopyOutcome {
    fn add(&mut self, s: &SaveStats) {
        self.blobs_uploaded += s.data_blobs + s.tree_blobs;
        self.bytes_uploaded += s.bytes_packed;
        self.packs_uploaded += s.packs;
    }
}

/// A blob to move: its ID, type, plaintext length and where the source keeps it.
/// A blob to move, tagged with its type.
type Wanted = WantedBlob<BlobType>;

/// Blobs gathered before they are moved: bounds what a copy holds in memory
/// however large the snapshot.
const COPY_BATCH: usize = 1 << 16;

/// Same blob IDs: walks the whole source tree (a tree the destination has
/// indexed is not proof that its children are there: an interrupted backup's
/// tree pack may have been adopted without its data), then moves every blob the
/// destination lacks, sealed, grouped by source pack, a batch at a time. What
/// was visited is a bitmap over the source's index positions.
fn copy_sealed(
    src: &Repository,
    dst: &Repository,
    saver: &BlobSaver<'_>,
    root: &BlobId,
    session: &Session,
    progress: &dyn CopyProgress,
) -> Result<BlobId> {
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut queue = vec![*root];
    let mut seen = Marks::new(src.index().blob_count());
    // A blob the source does not index is an error when it is wanted; visiting
    // it twice is harmless.
    let mut first_visit = |id: &BlobId| src.index().position(id).is_none_or(|p| seen.insert(p));
    let want = |id: BlobId, kind: BlobType, raw_len: u32| WantedBlob {
        id,
        raw_len: Some(raw_len),
        tag: kind,
    };
    while let Some(id) = queue.pop() {
        if !first_visit(&id) {
            continue;
        }
        let bytes = src.read_blob(&id, None)?;
        let tree = Tree::from_bytes(&bytes).map_err(|e| Error::corrupt(format!("tree {id}"), e))?;
        if !saver.has(&id) {
            wanted.push(want(id, BlobType::Tree, bytes.len() as u32));
        }
        for n in tree.nodes {
            queue.extend(n.subtree);
            for c in n.content {
                if first_visit(&c.id) && !saver.has(&c.id) {
                    wanted.push(want(c.id, BlobType::Data, c.size));
                }
            }
        }
        if wanted.len() >= COPY_BATCH {
            move_sealed(
                src,
                dst,
                saver,
                std::mem::take(&mut wanted),
                session,
                progress,
            )?;
        }
    }
    move_sealed(src, dst, saver, wanted, session, progress)?;
    Ok(*root)
}

/// Moves blobs sealed: the source reads them with few range requests, in
/// parallel; each is opened with the source key and sealed with the
/// destination's.
fn move_sealed(
    src: &Repository,
    dst: &Repository,
    saver: &BlobSaver<'_>,
    wanted: Vec<Wanted>,
    session: &Session,
    progress: &dyn CopyProgress,
) -> Result<()> {
    let padding = dst.config().padding;
    src.read_sealed_blobs(wanted, |w, sealed| {
        session.check()?;
        let moved = blob::reseal(src.cipher(), dst.cipher(), &w.id, sealed?, padding)
            .map_err(|e| Error::corrupt(format!("blob {}", w.id), e))?;
        saver.save_sealed(w.tag, w.id, moved, w.raw_len.unwrap_or(0))?;
        progress.blob(w.raw_len.unwrap_or(0) as u64);
        Ok(())
    })
}

/// Different blob IDs: rewrites a tree bottom-up under the destination's key.
fn rekey_tree(
    src: &Repository,
    saver: &BlobSaver<'_>,
    id: &BlobId,
    map: &mut HashMap<BlobId, BlobId>,
    session: &Session,
    progress: &dyn CopyProgress,
) -> Result<BlobId> {
    if let Some(done) = map.get(id) {
        return Ok(*done);
    }
    session.check()?;
    let mut tree = src.load_tree(id)?;
    for node in &mut tree.nodes {
        if let Some(sub) = node.subtree {
            node.subtree = Some(rekey_tree(src, saver, &sub, map, session, progress)?);
        }
        let ids = src.map_content(&node.content, |plain| {
            let (id, new) = saver.save(BlobType::Data, &plain)?;
            if new {
                progress.blob(plain.len() as u64);
            }
            Ok(id)
        })?;
        for (c, new) in node.content.iter_mut().zip(ids) {
            c.id = new;
        }
    }
    let new = save_tree(saver, &mut tree)?.0;
    map.insert(*id, new);
    Ok(new)
}

//! `rewrite SNAP --exclude GLOB [--forget] [--dry-run]`: a snapshot without
//! the excluded paths, as restic's `rewrite`: a new snapshot (its `original`
//! naming the first), committed in a writer session; the old one stays unless
//! `forget`. Plan, then execute.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::format::id::{BlobId, SnapshotId};
use crate::format::records::SessionKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::repo::saver::{save_tree, BlobSaver};
use crate::repo::session::Session;
use crate::repo::tree::walk_tree;
use crate::repo::{IndexedRepository, Repository};
use crate::source::Excludes;

/// What rewriting one snapshot removes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RewritePlan {
    pub snapshot: SnapshotId,
    /// Excluded entries (a folder counts once, with all below it).
    pub removed: Vec<PathBuf>,
    /// The rewritten snapshot, once written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten: Option<SnapshotId>,
}

/// Which entries of each snapshot the excludes remove; snapshots with none
/// are left out of the plan.
pub fn plan(
    repo: &IndexedRepository,
    snapshots: &[(SnapshotId, Snapshot)],
    excludes: &Excludes,
) -> Result<Vec<RewritePlan>> {
    let mut out = Vec::new();
    for (id, s) in snapshots {
        let mut removed = Vec::new();
        walk_tree(repo, &s.tree, Path::new("/"), &mut |item| {
            if excludes.is_excluded(&item.path) {
                removed.push(item.path);
                return Ok(false); // nothing below it needs looking at
            }
            Ok(true)
        })?;
        if !removed.is_empty() {
            out.push(RewritePlan {
                snapshot: *id,
                removed,
                rewritten: None,
            });
        }
    }
    Ok(out)
}

/// Writes the planned snapshots; with `forget`, removes each original once
/// its rewrite has committed.
pub fn execute(
    repo: &mut Repository,
    plans: &mut [RewritePlan],
    snapshots: &[(SnapshotId, Snapshot)],
    excludes: &Excludes,
    forget: bool,
) -> Result<()> {
    for p in plans.iter_mut() {
        let Some((_, snap)) = snapshots.iter().find(|(id, _)| *id == p.snapshot) else {
            continue;
        };
        let session = Session::start(repo, SessionKind::Rewrite)?;
        repo.load_index_excluding(session.condemned())?;
        let tree = {
            let saver = BlobSaver::new(repo, false)?;
            let tree =
                match rewrite_tree(repo, &saver, &snap.tree, Path::new("/"), excludes, &session) {
                    Ok(t) => t,
                    Err(e) => {
                        drop(saver);
                        session.abort();
                        return Err(e);
                    }
                };
            saver.finish()?;
            tree
        };
        let new = Snapshot {
            tree,
            original: Some(snap.original.unwrap_or(p.snapshot)),
            session: Some(session.id().to_string()),
            parent: None,
            ..snap.clone()
        };
        p.rewritten = Some(session.commit_snapshot(repo, &new)?);
        if forget {
            repo.delete_snapshot(&p.snapshot)?;
        }
    }
    Ok(())
}

/// The tree at `id` without the excluded entries. The trees kept are saved
/// again (deduplicated: unchanged ones cost nothing); every one must load,
/// so data a collector condemned is never reused unseen.
fn rewrite_tree(
    repo: &Repository,
    saver: &BlobSaver<'_>,
    id: &BlobId,
    path: &Path,
    excludes: &Excludes,
    session: &Session,
) -> Result<BlobId> {
    session.check()?;
    let mut tree: Tree = repo.load_tree(id)?;
    tree.nodes
        .retain(|n| !excludes.is_excluded(&path.join(n.os_name())));
    for node in &mut tree.nodes {
        for c in &node.content {
            if !repo.index().contains(&c.id) {
                return Err(crate::error::Error::BlobNotIndexed(c.id.to_hex()));
            }
        }
        if let Some(sub) = node.subtree {
            let child = path.join(node.os_name());
            node.subtree = Some(rewrite_tree(repo, saver, &sub, &child, excludes, session)?);
        }
    }
    Ok(save_tree(saver, &mut tree)?.0)
}

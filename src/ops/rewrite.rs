//! `rewrite SNAP --exclude GLOB [--forget] [--dry-run]`: a snapshot without
//! the excluded paths, as restic's `rewrite`: a new snapshot (its `original`
//! naming the first), committed in a writer session; the old one stays unless
//! `forget`. Plan, then execute.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::records::SessionKind;
use crate::format::snapshot::{Snapshot, WAL_DIR};
use crate::format::tree::{Node, Tree};
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
    let rules = Rules {
        keep: &|_, path, _| !excludes.is_excluded(path),
        lost_trees_empty: false,
        kind: SessionKind::Rewrite,
        tags: &|tags| tags.to_vec(),
    };
    for p in plans.iter_mut() {
        if let Some((_, snap)) = snapshots.iter().find(|(id, _)| *id == p.snapshot) {
            p.rewritten = Some(rewrite_snapshot(repo, p.snapshot, snap, &rules, forget)?);
        }
    }
    Ok(())
}

/// How [`rewrite_snapshot`] rewrites a tree.
pub(crate) struct Rules<'a> {
    /// Whether an entry (at its path in the snapshot) stays; the repository
    /// is the one being written, its index the session's dedup view.
    pub keep: &'a dyn Fn(&Repository, &Path, &Node) -> bool,
    /// A tree that no longer loads becomes an empty folder (repair), instead
    /// of failing the rewrite.
    pub lost_trees_empty: bool,
    /// The writer session's kind.
    pub kind: SessionKind,
    /// The new snapshot's tags, from the old one's.
    pub tags: &'a dyn Fn(&[String]) -> Vec<String>,
}

/// `tags` with `tag` added, unless it is there.
pub(crate) fn with_tag(tags: &[String], tag: &str) -> Vec<String> {
    let mut t = tags.to_vec();
    if !t.iter().any(|x| x == tag) {
        t.push(tag.to_string());
    }
    t
}

/// Saves `snap` anew with its tree rewritten by `rules`, in a writer session
/// (`original` naming the first snapshot); with `forget`, removes the old one
/// once the new one has committed. Every blob the new tree keeps must be in
/// the session's dedup view: data a collector condemned is never reused.
pub(crate) fn rewrite_snapshot(
    repo: &mut Repository,
    id: SnapshotId,
    snap: &Snapshot,
    rules: &Rules<'_>,
    forget: bool,
) -> Result<SnapshotId> {
    let session = Session::start(repo, rules.kind)?;
    repo.load_index_excluding(session.condemned())?;
    let tree = {
        let saver = BlobSaver::new(repo, false)?;
        match rewrite_tree(
            repo,
            &saver,
            Some(snap.tree),
            Path::new("/"),
            rules,
            &session,
        ) {
            Ok(t) => {
                saver.finish()?;
                t
            }
            Err(e) => {
                drop(saver);
                session.abort();
                return Err(e);
            }
        }
    };
    // A database record whose dump the rewrite left out goes with it.
    let databases = snap
        .databases
        .iter()
        .filter(|d| holds_path(repo, tree, &d.path))
        .cloned()
        .collect();
    // So does a WAL entry whose file it left out.
    let wal = snap.wal.clone().map(|mut w| {
        w.files
            .retain(|f| holds_path(repo, tree, &format!("/{WAL_DIR}/{}", f.name)));
        w
    });
    let new = Snapshot {
        tree,
        databases,
        wal,
        tags: (rules.tags)(&snap.tags),
        original: Some(snap.original.unwrap_or(id)),
        session: Some(session.id().to_string()),
        ..snap.clone()
    };
    let new_id = session.commit_snapshot(repo, &new)?;
    if forget {
        repo.delete_snapshot(&id)?;
    }
    Ok(new_id)
}

/// Whether the tree at `root` has an entry at the absolute `path`.
fn holds_path(repo: &Repository, root: BlobId, path: &str) -> bool {
    let mut tree = root;
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    while let Some(name) = parts.next() {
        let Some(t) = load_intact_tree(repo, &tree) else {
            return false;
        };
        let Some(node) = t.nodes.iter().find(|n| n.name == name) else {
            return false;
        };
        match (parts.peek(), node.subtree) {
            (None, _) => return true,
            (Some(_), Some(sub)) => tree = sub,
            (Some(_), None) => return false,
        }
    }
    true
}

/// A tree loaded only when the index holds it and it decodes.
pub(crate) fn load_intact_tree(repo: &Repository, id: &BlobId) -> Option<Tree> {
    if !repo.index().contains(id) {
        return None;
    }
    repo.load_tree(id).ok()
}

/// The tree at `id` with the entries `rules` keep, saved again (deduplicated:
/// unchanged trees cost nothing).
fn rewrite_tree(
    repo: &Repository,
    saver: &BlobSaver<'_>,
    id: Option<BlobId>,
    path: &Path,
    rules: &Rules<'_>,
    session: &Session,
) -> Result<BlobId> {
    session.check()?;
    let mut tree = match id {
        Some(id) if rules.lost_trees_empty => {
            load_intact_tree(repo, &id).unwrap_or(Tree { nodes: Vec::new() })
        }
        Some(id) => repo.load_tree(&id)?,
        None => Tree { nodes: Vec::new() },
    };
    tree.nodes
        .retain(|n| (rules.keep)(repo, &path.join(n.os_name()), n));
    for node in &mut tree.nodes {
        if let Some(c) = node.content.iter().find(|c| !repo.index().contains(&c.id)) {
            return Err(Error::BlobNotIndexed(c.id.to_hex()));
        }
        if node.subtree.is_some() {
            let child = path.join(node.os_name());
            node.subtree = Some(rewrite_tree(
                repo,
                saver,
                node.subtree,
                &child,
                rules,
                session,
            )?);
        }
    }
    Ok(save_tree(saver, &mut tree)?.0)
}

//! What the snapshots reach: every tree and data blob, walked with each tree
//! loaded once (a bounded batch at a time, in parallel). Shared by check and
//! prune.
//!
//! What was reached is a bitmap over index positions (one bit a blob), plus
//! the few reached IDs the index does not list: memory that does not grow by
//! more than a bit a blob with the repository.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::tree::NodeType;
use crate::repo::index::Marks;
use crate::repo::Repository;

/// Trees loaded at once: enough for neighbouring trees to share a read and
/// for every core to decode, few enough that the decoded trees held at once
/// stay small (a tree of 1000 files decodes to ~300 KB; most are far
/// smaller).
fn tree_batch() -> usize {
    (8 * rayon::current_num_threads()).max(32)
}

/// Valid while the repository's index is unchanged (positions move when blobs
/// are added).
#[derive(Debug, Default)]
pub struct Reached {
    /// Index positions of every reached tree and data blob (the copy a lookup
    /// serves, when a blob is stored twice).
    pub marks: Marks,
    /// Reached IDs the index does not list (damage `check` reports).
    pub unindexed_trees: HashSet<BlobId>,
    pub unindexed_data: HashSet<BlobId>,
    /// Distinct trees reached.
    pub trees: usize,
}

impl Reached {
    pub fn contains(&self, repo: &Repository, id: &BlobId) -> bool {
        match repo.index().position(id) {
            Some(p) => self.marks.contains(p),
            None => self.unindexed_trees.contains(id) || self.unindexed_data.contains(id),
        }
    }

    /// Records a reached blob; true when it was new.
    fn insert(&mut self, repo: &Repository, id: BlobId, tree: bool) -> bool {
        match repo.index().position(&id) {
            Some(p) => self.marks.insert(p),
            None if tree => self.unindexed_trees.insert(id),
            None => self.unindexed_data.insert(id),
        }
    }
}

/// Walks every tree below `roots`. A tree that cannot be loaded goes to
/// `on_error` (check reports it and goes on; prune must stop).
pub fn reach(
    repo: &Repository,
    roots: impl IntoIterator<Item = BlobId>,
    on_error: &mut dyn FnMut(BlobId, Error) -> Result<()>,
) -> Result<Reached> {
    let mut r = Reached {
        marks: Marks::new(repo.index().blob_count()),
        ..Default::default()
    };
    let mut queue: Vec<BlobId> = roots.into_iter().collect();
    while !queue.is_empty() {
        let mut batch = Vec::with_capacity(tree_batch());
        while batch.len() < tree_batch() {
            match queue.pop() {
                Some(t) if r.insert(repo, t, true) => batch.push(t),
                Some(_) => {}
                None => break,
            }
        }
        r.trees += batch.len();
        let loaded = repo.load_trees(&batch);
        for (id, tree) in batch.into_iter().zip(loaded) {
            match tree {
                Ok(t) => {
                    for n in t.nodes {
                        if let (NodeType::Dir, Some(sub)) = (n.kind, n.subtree) {
                            queue.push(sub);
                        }
                        for c in &n.content {
                            r.insert(repo, c.id, false);
                        }
                    }
                }
                Err(e) => on_error(id, e)?,
            }
        }
    }
    // A lookup that could not read the index's file would leave a blob unmarked.
    repo.index().check_io()?;
    Ok(r)
}

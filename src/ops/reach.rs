//! What the snapshots reach: every tree and data blob, walked breadth-first
//! with each tree loaded once (in parallel). Shared by check and prune.

use std::collections::HashSet;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::tree::NodeType;
use crate::repo::Repository;

#[derive(Debug, Default)]
pub struct Reached {
    pub trees: HashSet<BlobId>,
    pub data: HashSet<BlobId>,
}

impl Reached {
    pub fn contains(&self, id: &BlobId) -> bool {
        self.trees.contains(id) || self.data.contains(id)
    }
}

/// Walks every tree below `roots`. A tree that cannot be loaded goes to
/// `on_error` (check reports it and goes on; prune must stop).
pub fn reach(
    repo: &Repository,
    roots: impl IntoIterator<Item = BlobId>,
    on_error: &mut dyn FnMut(BlobId, Error) -> Result<()>,
) -> Result<Reached> {
    let mut r = Reached::default();
    let mut queue: Vec<BlobId> = roots.into_iter().collect();
    while !queue.is_empty() {
        let batch: Vec<BlobId> = queue.drain(..).filter(|t| r.trees.insert(*t)).collect();
        let loaded: Vec<_> = batch
            .par_iter()
            .map(|id| (*id, repo.load_tree(id)))
            .collect();
        for (id, tree) in loaded {
            match tree {
                Ok(t) => {
                    for n in t.nodes {
                        if let (NodeType::Dir, Some(sub)) = (n.kind, n.subtree) {
                            queue.push(sub);
                        }
                        r.data.extend(n.content.iter().map(|c| c.id));
                    }
                }
                Err(e) => on_error(id, e)?,
            }
        }
    }
    Ok(r)
}

//! `find`: which snapshots hold a path or a pattern, and which files use a
//! blob (after `check` names a damaged one).

use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{Error, Result};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Node;
use crate::repo::tree::walk_tree;
use crate::repo::IndexedRepository;

/// What to look for.
pub enum Query {
    /// A glob: without `/` it matches an entry's name, with `/` its whole
    /// path in the snapshot (as restic's `find`).
    Pattern { glob: GlobMatcher, on_path: bool },
    /// Files whose content uses this blob, or folders whose tree is it.
    Blob(BlobId),
}

impl Query {
    pub fn pattern(pattern: &str, ignore_case: bool) -> Result<Query> {
        let on_path = pattern.contains('/');
        let glob = GlobBuilder::new(pattern)
            .literal_separator(on_path)
            .case_insensitive(ignore_case)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("bad pattern '{pattern}': {e}")))?;
        Ok(Query::Pattern {
            glob: glob.compile_matcher(),
            on_path,
        })
    }

    fn matches(&self, path: &Path, node: &Node) -> bool {
        match self {
            Query::Pattern { glob, on_path } => {
                if *on_path {
                    glob.is_match(path)
                } else {
                    path.file_name().is_some_and(|n| glob.is_match(n))
                }
            }
            Query::Blob(id) => {
                node.subtree == Some(*id) || node.content.iter().any(|c| c.id == *id)
            }
        }
    }
}

/// The entries of one snapshot that matched.
pub struct Found {
    pub snapshot: SnapshotId,
    pub time: chrono::DateTime<chrono::Utc>,
    pub hits: Vec<(std::path::PathBuf, Node)>,
}

/// Looks through `snapshots` (newest first) and returns those with a match.
pub fn find(
    repo: &IndexedRepository,
    snapshots: &[(SnapshotId, Snapshot)],
    query: &Query,
) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for (id, s) in snapshots {
        let mut hits = Vec::new();
        walk_tree(repo, &s.tree, Path::new("/"), &mut |item| {
            if query.matches(&item.path, &item.node) {
                hits.push((item.path, item.node));
            }
            Ok(true)
        })?;
        if !hits.is_empty() {
            out.push(Found {
                snapshot: *id,
                time: s.time,
                hits,
            });
        }
    }
    Ok(out)
}

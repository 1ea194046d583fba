//! `tag --add/--remove/--set`: a snapshot's tags changed, as restic does it:
//! a new snapshot object with the new tags (its `original` naming the first
//! one), committed in a writer session, and then the old object removed.
//!
//! The new snapshot reuses the old one's tree, so, like any writer that
//! deduplicates, it may only rely on data in its dedup view: every blob the
//! tree reaches is checked to be indexed in a pack no collector condemned
//! (a concurrent forget and prune could otherwise collect it meanwhile).

use crate::error::Result;
use crate::format::id::SnapshotId;
use crate::format::records::SessionKind;
use crate::format::snapshot::Snapshot;
use crate::ops::rewrite::{rewrite_snapshot, Rules};
use crate::repo::Repository;

/// The change: tags to add and remove, or the whole set to replace them.
#[derive(Debug, Clone, Default)]
pub struct TagChange {
    pub add: Vec<String>,
    pub remove: Vec<String>,
    pub set: Option<Vec<String>>,
}

impl TagChange {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.set.is_none()
    }

    /// The tags after the change, in order, without duplicates.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = match &self.set {
            Some(set) => set.clone(),
            None => tags.to_vec(),
        };
        out.retain(|t| !self.remove.contains(t));
        for t in &self.add {
            out.push(t.clone());
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|t| !t.is_empty() && seen.insert(t.clone()));
        out
    }
}

/// Changes the tags of `snapshots`; returns (old, new) for each one changed.
/// The new snapshot keeps the old tree, saved through the same rewrite as
/// `rewrite` (which checks every blob it reaches is in the dedup view).
pub fn tag(
    repo: &mut Repository,
    snapshots: Vec<(SnapshotId, Snapshot)>,
    change: &TagChange,
) -> Result<Vec<(SnapshotId, SnapshotId)>> {
    repo.ensure_writable()?;
    let rules = Rules {
        keep: &|_, _, _| true,
        lost_trees_empty: false,
        kind: SessionKind::Rewrite,
        tags: &|tags| change.apply(tags),
    };
    let mut done = Vec::new();
    for (id, snap) in snapshots {
        if change.apply(&snap.tags) == snap.tags {
            continue;
        }
        done.push((id, rewrite_snapshot(repo, id, &snap, &rules, true)?));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn changes_apply_as_restic_does() {
        let add = TagChange {
            add: v(&["keep"]),
            remove: v(&["daily"]),
            set: None,
        };
        assert_eq!(add.apply(&v(&["daily", "db"])), v(&["db", "keep"]));
        let set = TagChange {
            set: Some(v(&["a", "a", "b"])),
            ..Default::default()
        };
        assert_eq!(set.apply(&v(&["x"])), v(&["a", "b"]));
        assert!(TagChange::default().is_empty());
    }
}

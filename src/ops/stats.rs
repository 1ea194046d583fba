//! Repository statistics: how much data the snapshots hold and what it costs.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::error::Result;
use crate::format::id::BlobId;
use crate::format::tree::NodeType;
use crate::repo::{Repository, SnapshotFilter};

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub snapshots_count: u64,
    /// Sum of file sizes over every selected snapshot (what restoring all would write).
    pub total_size: u64,
    pub total_file_count: u64,
    /// Distinct data blobs the snapshots reference.
    pub total_blob_count: u64,
    /// Plaintext bytes of those distinct blobs (after dedup, before compression).
    pub raw_data_size: u64,
    /// Bytes all packs take in storage (data and trees, after compression and encryption).
    pub stored_size: u64,
    pub pack_count: u64,
    /// total_size / raw_data_size.
    pub dedup_ratio: f64,
    /// raw_data_size / stored data pack bytes.
    pub compression_ratio: f64,
    /// Bytes the distinct data blobs take in packs (after compression and
    /// encryption).
    pub data_stored_size: u64,
    /// Files with distinct contents (the same blob list counts once), and
    /// their bytes (restic's `blobs-per-file`).
    pub unique_file_count: u64,
    pub unique_file_size: u64,
}

/// Per-tree totals, memoised: identical subtrees across snapshots are walked once.
#[derive(Clone, Copy, Default)]
struct TreeTotals {
    size: u64,
    files: u64,
}

struct Walker<'r> {
    repo: &'r Repository,
    totals: HashMap<BlobId, TreeTotals>,
    blobs: HashMap<BlobId, u32>,
    seen_content: HashSet<BlobId>,
    /// Distinct contents (a hash of the blob list) with their size.
    files: HashMap<[u8; 32], u64>,
}

impl Walker<'_> {
    fn tree(&mut self, id: &BlobId) -> Result<TreeTotals> {
        if let Some(t) = self.totals.get(id) {
            return Ok(*t);
        }
        let mut t = TreeTotals::default();
        for n in self.repo.load_tree(id)?.nodes {
            match (n.kind, n.subtree) {
                (NodeType::Dir, Some(sub)) => {
                    let s = self.tree(&sub)?;
                    t.size += s.size;
                    t.files += s.files;
                }
                (NodeType::File, _) => {
                    t.size += n.size;
                    t.files += 1;
                    let mut h = blake3::Hasher::new();
                    for c in &n.content {
                        h.update(&c.id.0);
                    }
                    self.files.insert(*h.finalize().as_bytes(), n.size);
                    for c in &n.content {
                        if self.seen_content.insert(c.id) {
                            self.blobs.insert(c.id, c.size);
                        }
                    }
                }
                _ => {}
            }
        }
        self.totals.insert(*id, t);
        Ok(t)
    }
}

/// Computes statistics over the snapshots the filter selects. The index must be loaded.
pub fn stats(repo: &Repository, filter: &SnapshotFilter) -> Result<Stats> {
    let snaps: Vec<_> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    let mut w = Walker {
        repo,
        totals: HashMap::new(),
        blobs: HashMap::new(),
        seen_content: HashSet::new(),
        files: HashMap::new(),
    };
    let mut st = Stats {
        snapshots_count: snaps.len() as u64,
        ..Default::default()
    };
    for (_, s) in &snaps {
        let t = w.tree(&s.tree)?;
        st.total_size += t.size;
        st.total_file_count += t.files;
    }
    st.total_blob_count = w.blobs.len() as u64;
    st.raw_data_size = w.blobs.values().map(|&s| s as u64).sum();
    let packs = repo.list_packs()?;
    st.pack_count = packs.len() as u64;
    st.stored_size = packs.iter().map(|(_, _, size)| size).sum();
    let data_stored: u64 = w
        .blobs
        .keys()
        .filter_map(|id| repo.index().lookup(id))
        .map(|l| l.length as u64)
        .sum();
    st.data_stored_size = data_stored;
    st.unique_file_count = w.files.len() as u64;
    st.unique_file_size = w.files.values().sum();
    st.dedup_ratio = ratio(st.total_size, st.raw_data_size);
    st.compression_ratio = ratio(st.raw_data_size, data_stored);
    Ok(st)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        ((a as f64 / b as f64) * 1000.0).round() / 1000.0
    }
}

//! The in-memory index: blob ID → (pack, offset, length), 44 bytes a blob.
//!
//! A sorted array of fixed-width entries searched by binary search: no per-entry
//! allocation, no hash-table slack. Packs are numbered in a side table.

use std::collections::HashMap;

use rayon::slice::ParallelSliceMut;

use crate::format::blob::BlobType;
use crate::format::id::{BlobId, PackId};
use crate::format::objects::IndexedPack;

/// One blob's location. 32 + 4 + 4 + 4 = 44 bytes, no padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct IndexEntry {
    pub id: [u8; 32],
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
}

const _: () = assert!(std::mem::size_of::<IndexEntry>() == 44);

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub kind: BlobType,
    pub offset: u32,
    pub length: u32,
}

#[derive(Default)]
pub struct MasterIndex {
    packs: Vec<(PackId, BlobType)>,
    pack_numbers: HashMap<PackId, u32>,
    /// Sorted by id once `finish` ran; new entries are appended then re-sorted.
    entries: Vec<IndexEntry>,
    sorted: bool,
}

impl MasterIndex {
    pub fn new() -> Self {
        MasterIndex {
            sorted: true,
            ..Default::default()
        }
    }

    /// Adds the blobs of one pack. A pack already known is ignored.
    pub fn add_pack(&mut self, pack: &IndexedPack) {
        if self.pack_numbers.contains_key(&pack.id) {
            return;
        }
        let n = self.packs.len() as u32;
        self.packs.push((pack.id, pack.kind));
        self.pack_numbers.insert(pack.id, n);
        self.entries.reserve(pack.blobs.len());
        for b in &pack.blobs {
            self.entries.push(IndexEntry {
                id: b.id.0,
                pack: n,
                offset: b.offset,
                length: b.length,
            });
        }
        self.sorted = false;
    }

    pub fn reserve(&mut self, blobs: usize) {
        self.entries.reserve(blobs);
    }

    /// Sorts the entries; must run after additions and before lookups.
    /// Duplicates (one blob in two packs, after concurrent backups) keep both: a
    /// lookup returns either, and both hold the same plaintext.
    pub fn finish(&mut self) {
        if !self.sorted {
            self.entries.par_sort_unstable_by(|a, b| a.id.cmp(&b.id));
            self.entries.shrink_to_fit();
            self.sorted = true;
        }
    }

    fn find(&self, id: &BlobId) -> Option<&IndexEntry> {
        debug_assert!(self.sorted, "lookup before finish()");
        self.entries
            .binary_search_by(|e| e.id.cmp(&id.0))
            .ok()
            .map(|i| &self.entries[i])
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.find(id).is_some()
    }

    pub fn lookup(&self, id: &BlobId) -> Option<BlobLocation> {
        self.find(id).map(|e| {
            let (pack, kind) = self.packs[e.pack as usize];
            BlobLocation {
                pack,
                kind,
                offset: e.offset,
                length: e.length,
            }
        })
    }

    pub fn has_pack(&self, id: &PackId) -> bool {
        self.pack_numbers.contains_key(id)
    }

    pub fn packs(&self) -> impl Iterator<Item = (PackId, BlobType)> + '_ {
        self.packs.iter().copied()
    }

    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    /// Every (blob, location) pair, in ID order.
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, BlobLocation)> + '_ {
        self.entries.iter().map(|e| {
            let (pack, kind) = self.packs[e.pack as usize];
            (
                BlobId(e.id),
                BlobLocation {
                    pack,
                    kind,
                    offset: e.offset,
                    length: e.length,
                },
            )
        })
    }

    /// Heap bytes held, for the figure in the docs.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<IndexEntry>()
            + self.packs.capacity() * std::mem::size_of::<(PackId, BlobType)>()
            + self.pack_numbers.capacity() * (std::mem::size_of::<(PackId, u32)>() + 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::PackEntry;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_added_blob_is_found(ids in proptest::collection::hash_set(any::<[u8; 32]>(), 1..200), probe in any::<[u8; 32]>()) {
            let ids: Vec<_> = ids.into_iter().collect();
            let mut idx = MasterIndex::new();
            for (p, chunk) in ids.chunks(7).enumerate() {
                idx.add_pack(&IndexedPack {
                    id: PackId([p as u8; 32]),
                    kind: BlobType::Data,
                    blobs: chunk.iter().enumerate().map(|(i, id)| PackEntry { id: BlobId(*id), offset: i as u32 * 10, length: 10, raw_length: 5 }).collect(),
                });
            }
            idx.finish();
            for (p, chunk) in ids.chunks(7).enumerate() {
                for (i, id) in chunk.iter().enumerate() {
                    let loc = idx.lookup(&BlobId(*id)).unwrap();
                    prop_assert_eq!(loc.pack, PackId([p as u8; 32]));
                    prop_assert_eq!(loc.offset, i as u32 * 10);
                }
            }
            prop_assert_eq!(idx.contains(&BlobId(probe)), ids.contains(&probe));
        }
    }
}

//! The index: blob ID → (pack, offset, length), 44 bytes a blob.
//!
//! Blobs live in sorted runs ("segments") of fixed-width entries, searched by
//! binary search: no per-entry allocation, no hash-table slack. Packs are
//! numbered in a side table.
//!
//! Memory stays flat as a repository grows: a segment larger than
//! [`SPILL_ENTRIES`] is written to an unnamed temporary file (in `$TMPDIR`)
//! and memory-mapped. Reading such a segment brings its pages into the page
//! cache, where the kernel may evict them at will; every few thousand reads the
//! mapping's pages are released from this process (`MADV_DONTNEED`), so the
//! resident set holds at most a few MB of a file index however many blobs it
//! lists. Additions (a backup's new packs) go to small in-memory segments that
//! are merged as they grow, two of a size at a time (a binary counter), so
//! each entry is rewritten O(log n) times and lookups search few segments.
//!
//! Positions: every entry has a position in `0..blob_count()`, stable until
//! the next addition. [`Marks`] is a bitmap over positions: one bit a blob for
//! the "seen" sets of check and prune.

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use rayon::slice::ParallelSliceMut;

use crate::error::{Error, Result};
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

const ENTRY_LEN: usize = 44;
const _: () = assert!(std::mem::size_of::<IndexEntry>() == ENTRY_LEN);

impl IndexEntry {
    fn to_bytes(self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[..32].copy_from_slice(&self.id);
        b[32..36].copy_from_slice(&self.pack.to_le_bytes());
        b[36..40].copy_from_slice(&self.offset.to_le_bytes());
        b[40..44].copy_from_slice(&self.length.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> IndexEntry {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        IndexEntry {
            id: b[..32].try_into().unwrap(),
            pack: u32_at(32),
            offset: u32_at(36),
            length: u32_at(40),
        }
    }
}

/// Segments of this many entries (5.8 MB) or more go to a file.
pub const SPILL_ENTRIES: usize = 1 << 17;
/// More segments than this are merged into one at the next `finish`.
const MAX_SEGMENTS: usize = 8;
/// Entry reads of a file segment between releases of its mapped pages: at
/// most this many pages (4 MB) are resident at once.
const READS_BETWEEN_RELEASES: usize = 1024;

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub kind: BlobType,
    pub offset: u32,
    pub length: u32,
}

/// A sorted, memory-mapped run of entries in an unnamed temporary file.
struct FileSegment {
    file: File,
    map: memmap2::Mmap,
    len: usize,
    /// `fanout[p]..fanout[p + 1]` holds the entries whose IDs start with the
    /// two bytes `p`: a lookup reads a few pages, not log2(n).
    fanout: Box<[u32]>,
    reads: AtomicUsize,
}

impl FileSegment {
    fn entry(&self, i: usize) -> IndexEntry {
        self.count_reads(1);
        IndexEntry::from_bytes(&self.map[i * ENTRY_LEN..(i + 1) * ENTRY_LEN])
    }

    fn id_at(&self, i: usize) -> &[u8] {
        self.count_reads(1);
        &self.map[i * ENTRY_LEN..i * ENTRY_LEN + 32]
    }

    fn count_reads(&self, n: usize) {
        let before = self.reads.fetch_add(n, Ordering::Relaxed);
        if before / READS_BETWEEN_RELEASES != (before + n) / READS_BETWEEN_RELEASES {
            self.release();
        }
    }

    /// Drops this process's mapping of the pages read so far. They stay in the
    /// page cache (the kernel's to keep or evict), and the next read maps them
    /// again from there.
    fn release(&self) {
        // SAFETY: the mapping is shared, read-only and of a file nobody else can
        // open (it has no name) and this process never writes after mapping it:
        // dropped pages are read back unchanged, so no reference sees different
        // bytes. A failure only leaves the pages resident.
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    /// The range of positions whose IDs share `id`'s first two bytes.
    fn bucket(&self, id: &[u8; 32]) -> (usize, usize) {
        let p = u16::from_be_bytes([id[0], id[1]]) as usize;
        (self.fanout[p] as usize, self.fanout[p + 1] as usize)
    }

    /// The first position holding `id`, if any.
    fn lower_bound(&self, id: &[u8; 32]) -> Option<usize> {
        let (mut lo, mut hi) = self.bucket(id);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.id_at(mid) < &id[..] {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo < self.len && self.id_at(lo) == &id[..]).then_some(lo)
    }

    /// Writes sorted entries to a new temporary file and maps it.
    fn write(entries: impl Iterator<Item = IndexEntry>) -> Result<FileSegment> {
        let io = |e| Error::io(std::env::temp_dir(), e);
        let file = tempfile::tempfile().map_err(io)?;
        let mut counts = vec![0u32; 1 << 16];
        let mut len = 0usize;
        {
            let mut w = BufWriter::with_capacity(1 << 20, &file);
            for e in entries {
                counts[u16::from_be_bytes([e.id[0], e.id[1]]) as usize] += 1;
                w.write_all(&e.to_bytes()).map_err(io)?;
                len += 1;
            }
            w.flush().map_err(io)?;
        }
        let mut fanout = Vec::with_capacity((1 << 16) + 1);
        let mut sum = 0u32;
        fanout.push(0);
        for c in counts {
            sum += c;
            fanout.push(sum);
        }
        // SAFETY: the file has no name, so nothing else can change it while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(FileSegment {
            file,
            map,
            len,
            fanout: fanout.into_boxed_slice(),
            reads: AtomicUsize::new(0),
        })
    }

    /// Reads the entries in order through the file (not the mapping), so that a
    /// merge streams through the page cache without growing the resident set.
    fn stream(&self) -> Result<impl Iterator<Item = IndexEntry>> {
        let io = |e| Error::io(std::env::temp_dir(), e);
        let mut f = self.file.try_clone().map_err(io)?;
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut r = BufReader::with_capacity(1 << 16, f);
        let mut left = self.len;
        Ok(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let mut b = [0u8; ENTRY_LEN];
            // A temporary file this process wrote cannot come back short
            // unless the disk failed; stop there rather than invent entries.
            r.read_exact(&mut b).ok()?;
            left -= 1;
            Some(IndexEntry::from_bytes(&b))
        }))
    }
}

enum Segment {
    Memory(Vec<IndexEntry>),
    File(FileSegment),
}

impl Segment {
    fn len(&self) -> usize {
        match self {
            Segment::Memory(v) => v.len(),
            Segment::File(f) => f.len,
        }
    }

    fn entry(&self, i: usize) -> IndexEntry {
        match self {
            Segment::Memory(v) => v[i],
            Segment::File(f) => f.entry(i),
        }
    }

    fn lower_bound(&self, id: &[u8; 32]) -> Option<usize> {
        match self {
            Segment::Memory(v) => {
                let i = v.partition_point(|e| e.id < *id);
                (i < v.len() && v[i].id == *id).then_some(i)
            }
            Segment::File(f) => f.lower_bound(id),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Segment::Memory(v) => v.capacity() * ENTRY_LEN,
            Segment::File(f) => f.fanout.len() * 4,
        }
    }

    /// Makes a segment of sorted entries: in memory when small, else a file.
    fn from_sorted(len: usize, entries: impl Iterator<Item = IndexEntry>) -> Result<Segment> {
        if len < SPILL_ENTRIES {
            let mut v = Vec::with_capacity(len);
            v.extend(entries);
            Ok(Segment::Memory(v))
        } else {
            Ok(Segment::File(FileSegment::write(entries)?))
        }
    }

    /// Consumes the segment as a sorted stream. A file segment's stream owns
    /// a handle of its own, so the mapping can go now.
    fn into_stream(self) -> Result<Box<dyn Iterator<Item = IndexEntry> + Send>> {
        match self {
            Segment::Memory(v) => Ok(Box::new(v.into_iter())),
            Segment::File(f) => Ok(Box::new(f.stream()?)),
        }
    }
}

/// Merges sorted streams into one sorted stream (duplicates kept).
fn merge(
    mut sources: Vec<Box<dyn Iterator<Item = IndexEntry> + Send>>,
) -> impl Iterator<Item = IndexEntry> {
    let mut heads: Vec<Option<IndexEntry>> = sources.iter_mut().map(|s| s.next()).collect();
    let mut heap: BinaryHeap<std::cmp::Reverse<([u8; 32], usize)>> = heads
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.map(|e| std::cmp::Reverse((e.id, i))))
        .collect();
    std::iter::from_fn(move || {
        let std::cmp::Reverse((_, i)) = heap.pop()?;
        let out = heads[i].take()?;
        heads[i] = sources[i].next();
        if let Some(e) = heads[i] {
            heap.push(std::cmp::Reverse((e.id, i)));
        }
        Some(out)
    })
}

#[derive(Default)]
struct Inner {
    packs: Vec<(PackId, BlobType)>,
    pack_numbers: HashMap<PackId, u32>,
    /// Oldest first; each sorted by ID.
    segments: Vec<Segment>,
    /// Added since the last `finish`: not searched yet.
    pending: Vec<IndexEntry>,
}

impl Inner {
    /// Sorts the pending entries into a segment of their own.
    fn seal_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut p = std::mem::take(&mut self.pending);
        p.par_sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let seg = if p.len() < SPILL_ENTRIES {
            p.shrink_to_fit();
            Segment::Memory(p)
        } else {
            Segment::File(FileSegment::write(p.into_iter())?)
        };
        self.segments.push(seg);
        Ok(())
    }

    /// Merges the segments from `from` on into one.
    fn merge_from(&mut self, from: usize) -> Result<()> {
        let tail: Vec<Segment> = self.segments.drain(from..).collect();
        let len = tail.iter().map(Segment::len).sum();
        let streams = tail
            .into_iter()
            .map(Segment::into_stream)
            .collect::<Result<Vec<_>>>()?;
        let merged = Segment::from_sorted(len, merge(streams))?;
        self.segments.push(merged);
        Ok(())
    }

    fn compact(&mut self) -> Result<()> {
        if self.segments.len() > MAX_SEGMENTS {
            return self.merge_from(0);
        }
        while self.segments.len() >= 2 {
            let n = self.segments.len();
            if self.segments[n - 1].len() < self.segments[n - 2].len() {
                break;
            }
            self.merge_from(n - 2)?;
        }
        Ok(())
    }

    /// The first position holding `id` and its entry.
    fn find(&self, id: &BlobId) -> Option<(usize, IndexEntry)> {
        let mut base = 0;
        for s in &self.segments {
            if let Some(i) = s.lower_bound(&id.0) {
                return Some((base + i, s.entry(i)));
            }
            base += s.len();
        }
        None
    }

    fn blob_count(&self) -> usize {
        self.segments.iter().map(Segment::len).sum()
    }

    fn location(&self, e: &IndexEntry) -> BlobLocation {
        let (pack, kind) = self.packs[e.pack as usize];
        BlobLocation {
            pack,
            kind,
            offset: e.offset,
            length: e.length,
        }
    }
}

/// The repository's index (see the module documentation). Shared between
/// threads: lookups take a read lock, additions a write lock.
pub struct MasterIndex {
    inner: RwLock<Inner>,
}

impl Default for MasterIndex {
    fn default() -> Self {
        MasterIndex::new()
    }
}

impl MasterIndex {
    pub fn new() -> Self {
        MasterIndex {
            inner: RwLock::new(Inner::default()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the blobs of one pack. A pack already known is ignored. The blobs
    /// are searchable after the next [`finish`](Self::finish).
    pub fn add_pack(&self, pack: &IndexedPack) -> Result<()> {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if g.pack_numbers.contains_key(&pack.id) {
            return Ok(());
        }
        let n = g.packs.len() as u32;
        g.packs.push((pack.id, pack.kind));
        g.pack_numbers.insert(pack.id, n);
        for b in &pack.blobs {
            g.pending.push(IndexEntry {
                id: b.id.0,
                pack: n,
                offset: b.offset,
                length: b.length,
            });
            if g.pending.len() >= SPILL_ENTRIES {
                g.seal_pending()?;
            }
        }
        Ok(())
    }

    /// Adds packs and makes them searchable.
    pub fn add_packs(&self, packs: &[IndexedPack]) -> Result<()> {
        for p in packs {
            self.add_pack(p)?;
        }
        self.finish()
    }

    /// Makes every added blob searchable; must run after additions and before
    /// lookups. Duplicates (one blob in two packs, after concurrent backups)
    /// keep both: a lookup returns the first position, and both hold the same
    /// plaintext.
    pub fn finish(&self) -> Result<()> {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        g.seal_pending()?;
        g.compact()
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.read().find(id).is_some()
    }

    pub fn lookup(&self, id: &BlobId) -> Option<BlobLocation> {
        let g = self.read();
        g.find(id).map(|(_, e)| g.location(&e))
    }

    /// The position of the copy [`lookup`](Self::lookup) returns.
    pub fn position(&self, id: &BlobId) -> Option<usize> {
        self.read().find(id).map(|(p, _)| p)
    }

    /// Every copy of a blob, with its position.
    pub fn locations(&self, id: &BlobId) -> Vec<(usize, BlobLocation)> {
        let g = self.read();
        let mut out = Vec::new();
        let mut base = 0;
        for s in &g.segments {
            if let Some(mut i) = s.lower_bound(&id.0) {
                while i < s.len() {
                    let e = s.entry(i);
                    if e.id != id.0 {
                        break;
                    }
                    out.push((base + i, g.location(&e)));
                    i += 1;
                }
            }
            base += s.len();
        }
        out
    }

    pub fn has_pack(&self, id: &PackId) -> bool {
        self.read().pack_numbers.contains_key(id)
    }

    /// Every pack the index names, with its type.
    pub fn packs(&self) -> Vec<(PackId, BlobType)> {
        self.read().packs.clone()
    }

    pub fn blob_count(&self) -> usize {
        self.read().blob_count()
    }

    /// Every (blob, location) pair, in position order (sorted within each
    /// segment). Holds the read lock while it lives.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            g: self.read(),
            seg: 0,
            i: 0,
        }
    }

    /// Heap bytes held (file segments count their fan-out tables only).
    pub fn heap_bytes(&self) -> usize {
        let g = self.read();
        g.segments.iter().map(Segment::heap_bytes).sum::<usize>()
            + g.pending.capacity() * ENTRY_LEN
            + g.packs.capacity() * std::mem::size_of::<(PackId, BlobType)>()
            + g.pack_numbers.capacity() * (std::mem::size_of::<(PackId, u32)>() + 8)
    }

    /// How many segments are files (for tests and figures).
    pub fn file_segments(&self) -> usize {
        self.read()
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::File(_)))
            .count()
    }
}

/// See [`MasterIndex::iter`].
pub struct Iter<'a> {
    g: RwLockReadGuard<'a, Inner>,
    seg: usize,
    i: usize,
}

impl Iterator for Iter<'_> {
    type Item = (BlobId, BlobLocation);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let s = self.g.segments.get(self.seg)?;
            if self.i < s.len() {
                let e = s.entry(self.i);
                self.i += 1;
                return Some((BlobId(e.id), self.g.location(&e)));
            }
            self.seg += 1;
            self.i = 0;
        }
    }
}

/// A set of index positions: one bit a blob.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    bits: Vec<u64>,
    count: usize,
}

impl Marks {
    pub fn new(positions: usize) -> Marks {
        Marks {
            bits: vec![0; positions.div_ceil(64)],
            count: 0,
        }
    }

    /// Marks a position; true when it was not marked before.
    pub fn insert(&mut self, pos: usize) -> bool {
        let (w, b) = (pos / 64, 1u64 << (pos % 64));
        let new = self.bits[w] & b == 0;
        self.bits[w] |= b;
        self.count += new as usize;
        new
    }

    pub fn contains(&self, pos: usize) -> bool {
        self.bits
            .get(pos / 64)
            .is_some_and(|w| w & (1u64 << (pos % 64)) != 0)
    }

    /// How many positions are marked.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::PackEntry;
    use proptest::prelude::*;

    fn packs_of(ids: &[[u8; 32]], per_pack: usize) -> Vec<IndexedPack> {
        ids.chunks(per_pack)
            .enumerate()
            .map(|(p, chunk)| IndexedPack {
                id: PackId({
                    let mut b = [0u8; 32];
                    b[..8].copy_from_slice(&(p as u64).to_le_bytes());
                    b
                }),
                kind: BlobType::Data,
                blobs: chunk
                    .iter()
                    .enumerate()
                    .map(|(i, id)| PackEntry {
                        id: BlobId(*id),
                        offset: i as u32 * 10,
                        length: 10,
                        raw_length: 5,
                    })
                    .collect(),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn every_added_blob_is_found(ids in proptest::collection::hash_set(any::<[u8; 32]>(), 1..200), probe in any::<[u8; 32]>()) {
            let ids: Vec<_> = ids.into_iter().collect();
            let idx = MasterIndex::new();
            let packs = packs_of(&ids, 7);
            // Added in three batches: several segments, merged as they grow.
            for part in packs.chunks(packs.len().div_ceil(3)) {
                idx.add_packs(part).unwrap();
            }
            for p in &packs {
                for e in &p.blobs {
                    let loc = idx.lookup(&e.id).unwrap();
                    prop_assert_eq!(loc.pack, p.id);
                    prop_assert_eq!(loc.offset, e.offset);
                }
            }
            prop_assert_eq!(idx.contains(&BlobId(probe)), ids.contains(&probe));
            let mut seen = Marks::new(idx.blob_count());
            for id in &ids {
                prop_assert!(seen.insert(idx.position(&BlobId(*id)).unwrap()));
            }
            prop_assert_eq!(seen.len(), ids.len());
        }
    }

    /// Enough blobs that segments go to files, added as a backup adds them
    /// (many small batches) and as a load does (one big one); duplicates kept.
    #[test]
    fn file_segments_find_everything_and_keep_duplicates() {
        let n = SPILL_ENTRIES * 2 + 1234;
        let ids: Vec<[u8; 32]> = (0..n as u64)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        let packs = packs_of(&ids, 1000);

        let loaded = MasterIndex::new();
        for p in &packs {
            loaded.add_pack(p).unwrap();
        }
        loaded.finish().unwrap();
        let grown = MasterIndex::new();
        for part in packs.chunks(40) {
            grown.add_packs(part).unwrap();
        }
        // The same blob again, in a later pack.
        let dup = packs_of(&ids[..1], 1).pop().unwrap();
        let dup = IndexedPack {
            id: PackId([0xee; 32]),
            ..dup
        };
        grown.add_packs(std::slice::from_ref(&dup)).unwrap();

        for idx in [&loaded, &grown] {
            assert!(idx.file_segments() >= 1);
            for (p, pack) in packs.iter().enumerate().step_by(7) {
                for e in &pack.blobs {
                    let loc = idx.lookup(&e.id).unwrap();
                    if e.id.0 != ids[0] {
                        assert_eq!((loc.pack, loc.offset), (pack.id, e.offset), "pack {p}");
                    }
                }
            }
            assert!(!idx.contains(&BlobId([7; 32])));
            let all: Vec<_> = idx.iter().collect();
            assert_eq!(all.len(), idx.blob_count());
        }
        assert_eq!(loaded.blob_count(), n);
        assert_eq!(grown.blob_count(), n + 1);
        let copies = grown.locations(&BlobId(ids[0]));
        assert_eq!(copies.len(), 2);
        assert!(copies.iter().any(|(_, l)| l.pack == PackId([0xee; 32])));
        assert!(grown.segment_count_for_tests() <= MAX_SEGMENTS);
    }
}

#[cfg(test)]
impl MasterIndex {
    fn segment_count_for_tests(&self) -> usize {
        self.read().segments.len()
    }
}

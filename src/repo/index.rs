//! The index: blob ID → (pack, offset, length), 44 bytes a blob.
//!
//! Blobs live in sorted runs ("segments") of fixed-width entries, searched by
//! binary search: no per-entry allocation, no hash-table slack. Packs are
//! numbered in a side table.
//!
//! Memory stays flat as a repository grows: a segment of [`SPILL_ENTRIES`]
//! or more is written to an unnamed temporary file (in `$TMPDIR`) and read
//! with positioned reads: a lookup reads the one bucket of entries that share
//! the ID's first two bytes (a few KB even at 100 million blobs). The file's
//! pages live in the kernel's page cache, which may keep or evict them; none
//! is ever resident in this process. (A memory mapping would count every page
//! touched, and the kernel maps 16 pages around each fault.) Additions (a
//! backup's new packs) go to small in-memory segments that are merged as they
//! grow, two of a size at a time (a binary counter), so each entry is
//! rewritten O(log n) times and lookups search few segments.
//!
//! Positions: every entry has a position in `0..blob_count()`, stable until
//! the next addition. [`Marks`] is a bitmap over positions: one bit a blob for
//! the "seen" sets of check and prune.

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
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
/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub kind: BlobType,
    pub offset: u32,
    pub length: u32,
}

/// A sorted run of entries in an unnamed temporary file.
struct FileSegment {
    file: File,
    len: usize,
    /// `fanout[p]..fanout[p + 1]` holds the entries whose IDs start with the
    /// two bytes `p`: a lookup reads one small bucket.
    fanout: Box<[u32]>,
    /// Set when a read failed (see [`MasterIndex::io_failed`]).
    failed: AtomicBool,
}

impl FileSegment {
    /// Reads entries `lo..hi`; empty (and `failed` set) if the read fails.
    fn read(&self, lo: usize, hi: usize) -> Vec<u8> {
        let mut buf = vec![0u8; (hi - lo) * ENTRY_LEN];
        if self
            .file
            .read_exact_at(&mut buf, (lo * ENTRY_LEN) as u64)
            .is_err()
        {
            self.failed.store(true, Ordering::Relaxed);
            buf.clear();
        }
        buf
    }

    /// Every position holding `id`, with its entry, in order. One read of
    /// the ID's bucket, into a stack buffer when it fits (buckets average
    /// n/65536 entries: 3 KB at 5 million blobs a segment).
    fn find_all(&self, id: &[u8; 32]) -> Vec<(usize, IndexEntry)> {
        let p = u16::from_be_bytes([id[0], id[1]]) as usize;
        let (lo, hi) = (self.fanout[p] as usize, self.fanout[p + 1] as usize);
        let want = (hi - lo) * ENTRY_LEN;
        let mut stack = [0u8; 8192];
        let heap;
        let bucket: &[u8] = if want <= stack.len() {
            if want > 0
                && self
                    .file
                    .read_exact_at(&mut stack[..want], (lo * ENTRY_LEN) as u64)
                    .is_err()
            {
                self.failed.store(true, Ordering::Relaxed);
                return Vec::new();
            }
            &stack[..want]
        } else {
            heap = self.read(lo, hi);
            &heap
        };
        let n = bucket.len() / ENTRY_LEN;
        let id_at = |k: usize| &bucket[k * ENTRY_LEN..k * ENTRY_LEN + 32];
        let (mut a, mut b) = (0, n);
        while a < b {
            let mid = (a + b) / 2;
            if id_at(mid) < &id[..] {
                a = mid + 1;
            } else {
                b = mid;
            }
        }
        (a..n)
            .take_while(|&k| id_at(k) == &id[..])
            .map(|k| {
                let e = IndexEntry::from_bytes(&bucket[k * ENTRY_LEN..(k + 1) * ENTRY_LEN]);
                (lo + k, e)
            })
            .collect()
    }

    /// Writes sorted entries to a new temporary file.
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
        Ok(FileSegment {
            file,
            len,
            fanout: fanout.into_boxed_slice(),
            failed: AtomicBool::new(false),
        })
    }

    /// Reads the entries in order, a chunk at a time.
    fn stream(&self) -> Result<impl Iterator<Item = IndexEntry> + Send> {
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

    /// The first position holding `id`, with its entry.
    fn find(&self, id: &[u8; 32]) -> Option<(usize, IndexEntry)> {
        match self {
            Segment::Memory(v) => {
                let i = v.partition_point(|e| e.id < *id);
                (i < v.len() && v[i].id == *id).then(|| (i, v[i]))
            }
            Segment::File(f) => f.find_all(id).into_iter().next(),
        }
    }

    /// Every position holding `id`, with its entry.
    fn find_all(&self, id: &[u8; 32]) -> Vec<(usize, IndexEntry)> {
        match self {
            Segment::Memory(v) => {
                let i = v.partition_point(|e| e.id < *id);
                v[i..]
                    .iter()
                    .take_while(|e| e.id == *id)
                    .enumerate()
                    .map(|(k, e)| (i + k, *e))
                    .collect()
            }
            Segment::File(f) => f.find_all(id),
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

fn temp_file_error() -> Error {
    Error::io(
        std::env::temp_dir(),
        std::io::Error::other("reading back the index's temporary file failed"),
    )
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
        if merged.len() != len {
            // A stream ended early: a temporary file could not be read back.
            return Err(temp_file_error());
        }
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
            if let Some((i, e)) = s.find(&id.0) {
                return Some((base + i, e));
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

    /// [`finish`](Self::finish), then merges every segment into one: after
    /// loading a whole index, so that a lookup reads one file bucket, not one
    /// per segment.
    pub fn finish_load(&self) -> Result<()> {
        self.finish()?;
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if g.segments.len() > 1 {
            g.merge_from(0)?;
        }
        Ok(())
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
            for (i, e) in s.find_all(&id.0) {
                out.push((base + i, g.location(&e)));
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
            chunk: Vec::new(),
            chunk_start: 0,
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

    /// Whether reading a temporary index file ever failed: lookups then may
    /// have missed blobs, so whatever decides from them (prune, check) must
    /// stop. Checked by [`crate::ops::reach`] and the saver.
    pub fn io_failed(&self) -> bool {
        self.read().segments.iter().any(|s| match s {
            Segment::File(f) => f.failed.load(Ordering::Relaxed),
            Segment::Memory(_) => false,
        })
    }

    /// [`io_failed`](Self::io_failed) as an error.
    pub fn check_io(&self) -> Result<()> {
        match self.io_failed() {
            true => Err(temp_file_error()),
            false => Ok(()),
        }
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
    /// Entries `chunk_start..` of a file segment, read ahead.
    chunk: Vec<u8>,
    chunk_start: usize,
}

/// Entries a file segment's iteration reads at once (176 KB).
const ITER_CHUNK: usize = 4096;

impl Iterator for Iter<'_> {
    type Item = (BlobId, BlobLocation);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let s = self.g.segments.get(self.seg)?;
            if self.i < s.len() {
                let e = match s {
                    Segment::Memory(v) => v[self.i],
                    Segment::File(f) => {
                        let end = self.chunk_start + self.chunk.len() / ENTRY_LEN;
                        if self.i < self.chunk_start || self.i >= end {
                            let hi = (self.i + ITER_CHUNK).min(f.len);
                            self.chunk = f.read(self.i, hi);
                            self.chunk_start = self.i;
                            if self.chunk.is_empty() {
                                // A failed read (recorded): end this segment.
                                self.i = s.len();
                                continue;
                            }
                        }
                        let at = (self.i - self.chunk_start) * ENTRY_LEN;
                        IndexEntry::from_bytes(&self.chunk[at..at + ENTRY_LEN])
                    }
                };
                self.i += 1;
                return Some((BlobId(e.id), self.g.location(&e)));
            }
            self.seg += 1;
            self.i = 0;
            self.chunk.clear();
            self.chunk_start = 0;
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

//! Writing blobs: dedup against the index, compress and seal, fill packs,
//! verify each full pack and upload it.
//!
//! Many threads call [`BlobSaver::save`] at once. The thread whose blob fills a
//! pack verifies it (every blob decrypted, decompressed and re-hashed, so an
//! encoder bug can never reach storage) and uploads it, while the other threads
//! go on filling the next pack: at most one pack per thread is in memory, with no
//! upload queue to hold more. Index objects are written every
//! [`CHECKPOINT_PACKS`] packs or [`CHECKPOINT_BLOBS`] blobs, so an interrupted
//! backup loses little; each checkpoint's packs then join the repository's
//! index, so that what this saver remembers itself stays bounded however many
//! blobs a backup writes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob::{self, BlobType};
use crate::format::crypto::{BlobHasher, Cipher};
use crate::format::id::{storage_hash, BlobId, IndexId, PackId};
use crate::format::objects::IndexedPack;
use crate::format::pack::{self, PackBuilder, PackEntry, Trailer};
use crate::repo::cache::Cache;
use crate::repo::index::MasterIndex;
use crate::repo::{pack_key, Repository};

/// Packs between index checkpoints.
pub const CHECKPOINT_PACKS: usize = 32;
/// Blobs between index checkpoints (packs of tiny files hold tens of thousands).
pub const CHECKPOINT_BLOBS: usize = 1 << 16;

/// Figures of what was written.
#[derive(Debug, Default, Clone)]
pub struct SaveStats {
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added: u64,
    /// Stored bytes of new blobs.
    pub bytes_packed: u64,
    pub packs: u64,
    /// The index objects this saver wrote (a writer whose commit is refused
    /// removes them, so they name no pack a sweep deletes).
    pub index_objects: Vec<IndexId>,
}

#[derive(Default)]
struct Counters {
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    bytes_added: AtomicU64,
    bytes_packed: AtomicU64,
}

/// What [`BlobSaver::save_at`] did with a blob.
#[derive(Debug, Clone, Copy)]
pub struct Saved {
    pub id: BlobId,
    /// Stored (compressed, sealed) size when the blob was new; None when deduplicated.
    pub stored: Option<usize>,
}

/// Packs uploaded that no index object names yet, and what was written.
#[derive(Default)]
struct Written {
    unindexed: Vec<IndexedPack>,
    unindexed_blobs: usize,
    packs: u64,
    index_objects: Vec<IndexId>,
}

pub struct BlobSaver<'r> {
    repo: &'r Repository,
    dry_run: bool,
    /// Blobs claimed by this saver that the repository's index does not list
    /// yet (in open packs, or in packs awaiting their index checkpoint).
    seen: Mutex<HashSet<BlobId>>,
    open: [Mutex<Option<PackBuilder>>; 2],
    written: Mutex<Written>,
    counters: Counters,
}

fn slot(kind: BlobType) -> usize {
    match kind {
        BlobType::Data => 0,
        BlobType::Tree => 1,
    }
}

impl<'r> BlobSaver<'r> {
    /// With `dry_run`, everything is encoded and verified but nothing is written.
    /// A saver for a repository this cairn may write (a dry run writes nothing,
    /// so it may run on any).
    pub fn new(repo: &'r Repository, dry_run: bool) -> Result<Self> {
        if !dry_run {
            repo.ensure_writable()?;
        }
        Ok(BlobSaver {
            repo,
            dry_run,
            seen: Mutex::new(HashSet::new()),
            open: [Mutex::new(None), Mutex::new(None)],
            written: Mutex::new(Written::default()),
            counters: Counters::default(),
        })
    }

    pub fn index(&self) -> &MasterIndex {
        self.repo.index()
    }

    /// Stores a blob unless the repository (or this session) has it. Returns its ID
    /// and whether it was new.
    pub fn save(&self, kind: BlobType, plaintext: &[u8]) -> Result<(BlobId, bool)> {
        let s = self.save_at(kind, plaintext, self.repo.config().compression)?;
        Ok((s.id, s.stored.is_some()))
    }

    /// As [`save`](Self::save), compressing at `level`; reports the stored size of a new blob.
    pub fn save_at(&self, kind: BlobType, plaintext: &[u8], level: i32) -> Result<Saved> {
        let id = self.repo.hasher().id(plaintext);
        if !self.claim(&id) {
            return Ok(Saved { id, stored: None });
        }
        let sealed = blob::encode(
            self.repo.cipher(),
            &id,
            plaintext,
            level,
            self.repo.config().padding,
        );
        self.add_sealed(kind, id, sealed, plaintext.len() as u32)
    }

    /// Stores a blob already sealed for this repository (a copy moving blobs
    /// between repositories that share a blob-ID key), unless it is present.
    pub fn save_sealed(
        &self,
        kind: BlobType,
        id: BlobId,
        sealed: Vec<u8>,
        raw_len: u32,
    ) -> Result<Saved> {
        if !self.claim(&id) {
            return Ok(Saved { id, stored: None });
        }
        self.add_sealed(kind, id, sealed, raw_len)
    }

    /// Whether this blob is new to the repository and to this session (and
    /// now claimed by the caller).
    /// The index is asked while `seen` is held: a checkpoint moves blobs from
    /// `seen` into the index (index first), so a blob is always in one of them.
    fn claim(&self, id: &BlobId) -> bool {
        let mut seen = self.seen.lock().unwrap();
        !self.repo.index().contains(id) && seen.insert(*id)
    }

    /// Whether the repository or this saver already has a blob.
    pub fn has(&self, id: &BlobId) -> bool {
        let seen = self.seen.lock().unwrap();
        seen.contains(id) || self.repo.index().contains(id)
    }

    fn add_sealed(
        &self,
        kind: BlobType,
        id: BlobId,
        sealed: Vec<u8>,
        raw_len: u32,
    ) -> Result<Saved> {
        let c = &self.counters;
        match kind {
            BlobType::Data => c.data_blobs.fetch_add(1, Ordering::Relaxed),
            BlobType::Tree => c.tree_blobs.fetch_add(1, Ordering::Relaxed),
        };
        c.bytes_added.fetch_add(raw_len as u64, Ordering::Relaxed);
        c.bytes_packed
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        let stored = Some(sealed.len());
        let full = {
            let mut open = self.open[slot(kind)].lock().unwrap();
            let target = self.repo.config().pack_size as usize;
            let builder = open.get_or_insert_with(|| PackBuilder::new(kind, target + target / 8));
            builder.add(id, &sealed, raw_len);
            if builder.len() >= target {
                open.take()
            } else {
                None
            }
        };
        if let Some(b) = full {
            self.write_pack(b)?;
        }
        Ok(Saved { id, stored })
    }

    /// Seals, verifies and uploads one pack, and writes an index checkpoint
    /// when enough packs have gone unindexed.
    fn write_pack(&self, builder: PackBuilder) -> Result<()> {
        let trailer = self.repo.trailer();
        let (bytes, kind, entries) = builder.finish(self.repo.cipher(), trailer);
        let id = verify_pack(
            self.repo.cipher(),
            trailer,
            self.repo.hasher(),
            &bytes,
            kind,
            &entries,
        )?;
        if !self.dry_run {
            let key = pack_key(kind, &id);
            // A tree pack written now is read by the next backup (its parent):
            // cache it as written, so that backup downloads nothing.
            if let Some(c) = self.repo.cache().filter(|_| Cache::caches_ranges(&key)) {
                c.put(&key, &bytes);
            }
            self.repo.backend().create(&key, bytes)?;
        }
        let checkpoint = {
            let mut w = self.written.lock().unwrap();
            w.packs += 1;
            w.unindexed_blobs += entries.len();
            w.unindexed.push(IndexedPack {
                id,
                kind,
                blobs: entries,
            });
            (w.unindexed.len() >= CHECKPOINT_PACKS || w.unindexed_blobs >= CHECKPOINT_BLOBS).then(
                || {
                    w.unindexed_blobs = 0;
                    std::mem::take(&mut w.unindexed)
                },
            )
        };
        if let Some(packs) = checkpoint {
            self.write_index(packs)?;
        }
        Ok(())
    }

    /// Writes an index object for packs, then moves their blobs from `seen`
    /// into the repository's index (see [`claim`](Self::claim)).
    fn write_index(&self, packs: Vec<IndexedPack>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        if !self.dry_run {
            let id = self.repo.save_index(&packs)?;
            self.written.lock().unwrap().index_objects.push(id);
        }
        self.repo.index_packs(&packs)?;
        let mut seen = self.seen.lock().unwrap();
        for b in packs.iter().flat_map(|p| &p.blobs) {
            seen.remove(&b.id);
        }
        if seen.is_empty() {
            // Give back the table a burst of new blobs grew.
            seen.shrink_to_fit();
        }
        Ok(())
    }

    /// Flushes open packs and writes the final index object; every pack
    /// written is in the repository's index when this returns.
    pub fn finish(self) -> Result<SaveStats> {
        for kind in [BlobType::Data, BlobType::Tree] {
            let b = self.open[slot(kind)].lock().unwrap().take();
            if let Some(b) = b.filter(|b| !b.is_empty()) {
                self.write_pack(b)?;
            }
        }
        let rest = std::mem::take(&mut self.written.lock().unwrap().unindexed);
        self.write_index(rest)?;
        self.repo.index().check_io()?;
        let written = self.written.into_inner().unwrap();
        let c = &self.counters;
        let stats = SaveStats {
            data_blobs: c.data_blobs.load(Ordering::Relaxed),
            tree_blobs: c.tree_blobs.load(Ordering::Relaxed),
            bytes_added: c.bytes_added.load(Ordering::Relaxed),
            bytes_packed: c.bytes_packed.load(Ordering::Relaxed),
            packs: written.packs,
            index_objects: written.index_objects,
        };
        Ok(stats)
    }
}

/// Decodes the finished pack as a reader would and re-hashes every blob.
fn verify_pack(
    cipher: &Cipher,
    trailer: Trailer,
    hasher: &BlobHasher,
    bytes: &[u8],
    kind: BlobType,
    entries: &[PackEntry],
) -> Result<PackId> {
    let id = PackId(storage_hash(bytes));
    let fail =
        |reason: String| Error::corrupt(format!("new pack {id} (verify before upload)"), reason);
    let (k, read) = pack::read_header(cipher, trailer, bytes).map_err(|e| fail(e.to_string()))?;
    if k != kind || read != entries {
        return Err(fail("header does not list what was packed".into()));
    }
    read.par_iter().try_for_each(|e| {
        let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
        let plain = blob::decode(&cipher, &e.id, sealed, Some(e.raw_length as usize))
            .map_err(|err| fail(format!("blob {}: {err}", e.id)))?;
        if plain.len() != e.raw_length as usize || hasher.id(&plain) != e.id {
            return Err(fail(format!("blob {} does not hash to its ID", e.id)));
        }
        Ok(())
    })?;
    Ok(id)
}

/// Saves a tree blob and returns its ID.
pub fn save_tree(
    saver: &BlobSaver<'_>,
    tree: &mut crate::format::tree::Tree,
) -> Result<(BlobId, bool)> {
    saver.save(BlobType::Tree, &tree.to_bytes())
}

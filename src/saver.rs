//! Writing blobs: dedup against the index, compress and seal, fill packs, and
//! hand full packs to an uploader thread that verifies them before upload.
//!
//! Many threads call [`BlobSaver::save`] at once. Packs are verified (every blob
//! decrypted, decompressed and re-hashed) before they leave the machine, so an
//! encoder bug can never reach storage. Index objects are written every
//! [`CHECKPOINT_PACKS`] packs, so an interrupted backup loses little.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rayon::prelude::*;

use crate::backend::Backend;
use crate::blob::{self, BlobType};
use crate::crypto::{BlobHasher, Cipher};
use crate::error::{Error, Result};
use crate::format::IndexedPack;
use crate::id::{storage_hash, BlobId, PackId};
use crate::index::MasterIndex;
use crate::pack::{self, PackBuilder, PackEntry};
use crate::repo::{pack_key, store_index, Repository};

/// Packs between index checkpoints.
pub const CHECKPOINT_PACKS: usize = 32;
/// Finished packs that may wait for the uploader (back-pressure bound on memory).
const UPLOAD_QUEUE: usize = 0;

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
}

struct Counters {
    data_blobs: AtomicU64,
    tree_blobs: AtomicU64,
    bytes_added: AtomicU64,
    bytes_packed: AtomicU64,
}

/// A verified pack ready for upload.
struct Job {
    id: PackId,
    bytes: Vec<u8>,
    kind: BlobType,
    entries: Vec<PackEntry>,
}

pub struct BlobSaver<'r> {
    repo: &'r Repository,
    seen: Mutex<HashSet<BlobId>>,
    open: [Mutex<Option<PackBuilder>>; 2],
    tx: Mutex<Option<SyncSender<Job>>>,
    uploader: Mutex<Option<JoinHandle<Result<Vec<IndexedPack>>>>>,
    counters: Counters,
}

fn slot(kind: BlobType) -> usize {
    match kind {
        BlobType::Data => 0,
        BlobType::Tree => 1,
    }
}

impl<'r> BlobSaver<'r> {
    pub fn new(repo: &'r Repository, dry_run: bool) -> Self {
        let (tx, rx) = sync_channel::<Job>(UPLOAD_QUEUE);
        let ctx = Uploader { backend: repo.backend().clone(), cipher: repo.cipher().clone(), dry_run };
        let handle = std::thread::Builder::new()
            .name("cairn-upload".into())
            .spawn(move || ctx.run(rx))
            .expect("spawning the upload thread");
        BlobSaver {
            repo,
            seen: Mutex::new(HashSet::new()),
            open: [Mutex::new(None), Mutex::new(None)],
            tx: Mutex::new(Some(tx)),
            uploader: Mutex::new(Some(handle)),
            counters: Counters {
                data_blobs: AtomicU64::new(0),
                tree_blobs: AtomicU64::new(0),
                bytes_added: AtomicU64::new(0),
                bytes_packed: AtomicU64::new(0),
            },
        }
    }

    pub fn index(&self) -> &MasterIndex {
        self.repo.index()
    }

    /// Stores a blob unless the repository (or this session) has it. Returns its ID
    /// and whether it was new.
    pub fn save(&self, kind: BlobType, plaintext: &[u8]) -> Result<(BlobId, bool)> {
        let id = self.repo.hasher().id(plaintext);
        if self.repo.index().contains(&id) || !self.seen.lock().unwrap().insert(id) {
            return Ok((id, false));
        }
        let sealed = blob::encode(self.repo.cipher(), &id, plaintext, self.repo.config().compression);
        let c = &self.counters;
        match kind {
            BlobType::Data => c.data_blobs.fetch_add(1, Ordering::Relaxed),
            BlobType::Tree => c.tree_blobs.fetch_add(1, Ordering::Relaxed),
        };
        c.bytes_added.fetch_add(plaintext.len() as u64, Ordering::Relaxed);
        c.bytes_packed.fetch_add(sealed.len() as u64, Ordering::Relaxed);
        let full = {
            let mut open = self.open[slot(kind)].lock().unwrap();
            let target = self.repo.config().pack_size as usize;
            let builder = open.get_or_insert_with(|| PackBuilder::new(kind, target + target / 8));
            builder.add(id, &sealed, plaintext.len() as u32);
            if builder.len() >= target {
                open.take()
            } else {
                None
            }
        };
        if let Some(b) = full {
            self.send(b)?;
        }
        Ok((id, true))
    }

    /// Verifies a full pack on this (rayon) thread, then queues it for upload.
    /// Verification must not happen on the upload thread: it would need rayon
    /// workers that may all be blocked here, waiting for the queue.
    fn send(&self, builder: PackBuilder) -> Result<()> {
        let (bytes, kind, entries) = builder.finish(self.repo.cipher());
        let id = verify_pack(self.repo.cipher(), self.repo.hasher(), &bytes, kind, &entries)?;
        let job = Job { id, bytes, kind, entries };
        let tx = self.tx.lock().unwrap().clone();
        match tx {
            Some(tx) if tx.send(job).is_ok() => Ok(()),
            // The uploader stopped: its error is reported by finish().
            _ => self.join_uploader().and(Err(Error::CommandFailed("upload thread stopped".into()))),
        }
    }

    fn join_uploader(&self) -> Result<Vec<IndexedPack>> {
        self.tx.lock().unwrap().take();
        match self.uploader.lock().unwrap().take() {
            Some(h) => h.join().unwrap_or_else(|_| Err(Error::CommandFailed("upload thread panicked".into()))),
            None => Ok(Vec::new()),
        }
    }

    /// Flushes open packs, waits for uploads and writes the final index object.
    /// Returns the packs written (for the caller's in-memory index) and figures.
    pub fn finish(self) -> Result<(Vec<IndexedPack>, SaveStats)> {
        for kind in [BlobType::Data, BlobType::Tree] {
            let b = self.open[slot(kind)].lock().unwrap().take();
            if let Some(b) = b.filter(|b| !b.is_empty()) {
                self.send(b)?;
            }
        }
        let packs = self.join_uploader()?;
        let c = &self.counters;
        let stats = SaveStats {
            data_blobs: c.data_blobs.load(Ordering::Relaxed),
            tree_blobs: c.tree_blobs.load(Ordering::Relaxed),
            bytes_added: c.bytes_added.load(Ordering::Relaxed),
            bytes_packed: c.bytes_packed.load(Ordering::Relaxed),
            packs: packs.len() as u64,
        };
        Ok((packs, stats))
    }
}

struct Uploader {
    backend: Backend,
    cipher: Cipher,
    dry_run: bool,
}

impl Uploader {
    /// Verifies and uploads packs until the channel closes; writes an index
    /// object every CHECKPOINT_PACKS packs and one for the rest at the end.
    fn run(self, rx: std::sync::mpsc::Receiver<Job>) -> Result<Vec<IndexedPack>> {
        let mut all = Vec::new();
        let mut unindexed = Vec::new();
        for Job { id, bytes, kind, entries } in rx {
            if !self.dry_run {
                self.backend.create(&pack_key(kind, &id), bytes)?;
            }
            unindexed.push(IndexedPack { id, kind, blobs: entries });
            if unindexed.len() >= CHECKPOINT_PACKS {
                self.write_index(&unindexed)?;
                all.append(&mut unindexed);
            }
        }
        if !unindexed.is_empty() {
            self.write_index(&unindexed)?;
            all.append(&mut unindexed);
        }
        Ok(all)
    }

    fn write_index(&self, packs: &[IndexedPack]) -> Result<()> {
        if !self.dry_run {
            store_index(&self.backend, &self.cipher, packs)?;
        }
        Ok(())
    }
}

/// Decodes the finished pack as a reader would and re-hashes every blob.
fn verify_pack(cipher: &Cipher, hasher: &BlobHasher, bytes: &[u8], kind: BlobType, entries: &[PackEntry]) -> Result<PackId> {
    let id = PackId(storage_hash(bytes));
    let fail = |reason: String| Error::corrupt(format!("new pack {id} (verify before upload)"), reason);
    let (k, read) = pack::read_header(&cipher, bytes).map_err(|e| fail(e.to_string()))?;
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
pub fn save_tree(saver: &BlobSaver<'_>, tree: &mut crate::tree::Tree) -> Result<(BlobId, bool)> {
    saver.save(BlobType::Tree, &tree.to_bytes())
}

pub type SharedSaver<'r> = Arc<BlobSaver<'r>>;

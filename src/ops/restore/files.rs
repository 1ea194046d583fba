//! Regular files: reading packs, writing blobs into temporary files, renaming
//! them into place; and the readers that check what the store returns (dump,
//! verify).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::{file_type, rel, tmp_name, Item, Restorer};
use crate::error::{Error, Result};
use crate::format::blob::BlobType;
use crate::format::id::{BlobId, PackId};
use crate::format::tree::{ContentRef, Node};
use crate::repo::{pack_key, Repository};

const BLOCK: usize = 4096;
/// Blobs of one pack closer than this are fetched in one request.
const READ_GAP: u64 = 1024 * 1024;

/// A file being restored under a temporary name.
struct PendingFile<'i> {
    item: &'i Item,
    /// Where it goes, for messages.
    dest: PathBuf,
    /// Its temporary name, relative to the target.
    tmp: PathBuf,
    /// The first error that hit this file; it is then not renamed into place.
    error: Mutex<Option<String>>,
}

impl PendingFile<'_> {
    fn fail(&self, why: impl std::fmt::Display) {
        self.error
            .lock()
            .unwrap()
            .get_or_insert_with(|| why.to_string());
    }
    fn failed(&self) -> bool {
        self.error.lock().unwrap().is_some()
    }
}

/// One blob to fetch and the (file, offset) places it goes.
struct NeededBlob {
    id: BlobId,
    loc: crate::repo::index::BlobLocation,
    size: u32,
    targets: Vec<(usize, u64)>,
}

impl Restorer<'_> {
    /// Restores regular files: every needed pack is read once (in parallel),
    /// each blob written at its offsets in every file that uses it; then each
    /// complete file gets its metadata and is renamed into place.
    pub(super) fn restore_files(&self, files: &[&Item]) {
        let mut pending = Vec::new();
        for it in files {
            let dest = self.dest(it);
            let keep = match self.existing(rel(it)) {
                Ok(st) => self.keep(st.as_ref(), |s| {
                    file_type(s) == FileType::RegularFile && self.file_unchanged(it)
                }),
                Err(e) => {
                    self.fail(&dest, e);
                    continue;
                }
            };
            self.progress.entry(&it.path, &it.node, Self::action(keep));
            if keep {
                self.skipped.fetch_add(1, Ordering::Relaxed);
            } else if self.opts.dry_run {
                self.restored.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(it.node.size, Ordering::Relaxed);
            } else {
                let rel = rel(it);
                pending.push(PendingFile {
                    item: it,
                    tmp: rel.with_file_name(tmp_name(rel.file_name().unwrap_or_default())),
                    dest,
                    error: Mutex::new(None),
                });
            }
        }
        pending.par_iter().for_each(|p| {
            let size = p.item.node.content.iter().map(|c| c.size as u64).sum();
            // The full length up front, as a hole: only non-zero blocks get written.
            let created = self
                .fs()
                .and_then(|fs| {
                    fs.open(
                        &p.tmp,
                        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                        Mode::RUSR | Mode::WUSR,
                    )
                })
                .and_then(|fd| File::from(fd).set_len(size));
            if let Err(e) = created {
                p.fail(e);
            }
        });
        let plan = self.plan_reads(&pending);
        plan.par_iter()
            .for_each(|(pack, (kind, blobs))| self.restore_pack(pack, *kind, blobs, &pending));
        pending.par_iter().for_each(|p| self.finish_file(p));
    }

    /// Groups the blobs the pending files need by pack.
    fn plan_reads(
        &self,
        pending: &[PendingFile<'_>],
    ) -> HashMap<PackId, (BlobType, Vec<NeededBlob>)> {
        let mut by_blob: HashMap<BlobId, NeededBlob> = HashMap::new();
        for (fi, p) in pending.iter().enumerate() {
            let mut offset = 0u64;
            for c in &p.item.node.content {
                match self.repo.index().lookup(&c.id) {
                    Some(loc) => by_blob
                        .entry(c.id)
                        .or_insert_with(|| NeededBlob {
                            id: c.id,
                            loc,
                            size: c.size,
                            targets: Vec::new(),
                        })
                        .targets
                        .push((fi, offset)),
                    None => p.fail(Error::BlobNotIndexed(c.id.to_hex())),
                }
                offset += c.size as u64;
            }
        }
        let mut plan: HashMap<PackId, (BlobType, Vec<NeededBlob>)> = HashMap::new();
        for (_, b) in by_blob {
            plan.entry(b.loc.pack)
                .or_insert_with(|| (b.loc.kind, Vec::new()))
                .1
                .push(b);
        }
        plan
    }

    /// Reads the needed parts of one pack (runs of blobs closer than
    /// READ_GAP are fetched in one request) and writes every blob out.
    fn restore_pack(
        &self,
        pack: &PackId,
        kind: BlobType,
        blobs: &[NeededBlob],
        pending: &[PendingFile<'_>],
    ) {
        let mut blobs: Vec<&NeededBlob> = blobs.iter().collect();
        blobs.sort_by_key(|b| b.loc.offset);
        let key = pack_key(kind, pack);
        // Runs in parallel: a pack holding one large file (a database dump)
        // is decoded on every core, not one.
        read_runs(&blobs)
            .par_iter()
            .for_each(|run| self.restore_run(pack, &key, run, pending));
    }

    /// Reads one run of a pack with one request and writes its blobs out.
    fn restore_run(
        &self,
        pack: &PackId,
        key: &str,
        run: &[&NeededBlob],
        pending: &[PendingFile<'_>],
    ) {
        let start = run[0].loc.offset as u64;
        let end = run
            .iter()
            .map(|b| b.loc.offset as u64 + b.loc.length as u64)
            .max()
            .unwrap_or(start);
        let bytes = match self.repo.backend().get_range(key, start..end) {
            Ok(b) => b,
            // Swept by a concurrent prune after repacking: read each blob
            // from where the index says it lives now.
            Err(Error::MissingObject(_)) => {
                for b in run {
                    match self.repo.read_relocated_blob(&b.id, Some(b.size as usize)) {
                        Ok(data) => self.write_blob(&data, &b.targets, pending),
                        Err(e) => {
                            let msg = e.to_string();
                            b.targets.iter().for_each(|(fi, _)| pending[*fi].fail(&msg));
                        }
                    }
                }
                return;
            }
            Err(e) => {
                let msg = e.to_string();
                run.iter()
                    .flat_map(|b| &b.targets)
                    .for_each(|(fi, _)| pending[*fi].fail(&msg));
                return;
            }
        };
        for b in run {
            let at = (b.loc.offset as u64 - start) as usize;
            let decoded = sealed_slice(&bytes, at, b.loc.length as usize, pack, &b.id)
                .and_then(|sealed| self.repo.decode_blob(&b.id, sealed, Some(b.size as usize)));
            match decoded {
                Ok(data) => self.write_blob(&data, &b.targets, pending),
                Err(e) => {
                    let msg = e.to_string();
                    b.targets.iter().for_each(|(fi, _)| pending[*fi].fail(&msg));
                }
            }
        }
    }

    fn write_blob(&self, data: &[u8], targets: &[(usize, u64)], pending: &[PendingFile<'_>]) {
        for (fi, offset) in targets {
            let p = &pending[*fi];
            if p.failed() {
                continue;
            }
            let written = self
                .fs()
                .and_then(|fs| fs.open(&p.tmp, OFlags::WRONLY, Mode::empty()))
                .and_then(|fd| write_sparse(&File::from(fd), *offset, data));
            match written {
                Ok(()) => {
                    self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    self.progress.bytes_written(data.len() as u64);
                }
                Err(e) => p.fail(e),
            }
        }
    }

    /// Metadata and rename for a complete file; removal for a failed one.
    fn finish_file(&self, p: &PendingFile<'_>) {
        let done = if p.failed() {
            Err(p.error.lock().unwrap().clone().unwrap_or_default())
        } else {
            self.rename_into_place(p).map_err(|e| e.to_string())
        };
        match done {
            Ok(()) => {
                self.restored.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if let Ok((dir, tmp)) = self.fs().and_then(|fs| fs.parent(&p.tmp)) {
                    let _ = rustix::fs::unlinkat(&dir, tmp, AtFlags::empty());
                }
                self.fail(&p.dest, e);
            }
        }
    }

    fn rename_into_place(&self, p: &PendingFile<'_>) -> io::Result<()> {
        let fs = self.fs()?;
        let fd = fs.open(&p.tmp, OFlags::WRONLY, Mode::empty())?;
        self.metadata_fd(&fd, &p.item.node)?;
        drop(fd);
        let (dir, tmp) = fs.parent(&p.tmp)?;
        let name = rel(p.item).file_name().unwrap_or_default();
        Ok(rustix::fs::renameat(&dir, tmp, &dir, name)?)
    }

    /// Under `if-changed`: whether the regular file at the entry's place
    /// already has the snapshot's content.
    fn file_unchanged(&self, it: &Item) -> bool {
        self.fs()
            .and_then(|fs| fs.open(rel(it), OFlags::RDONLY, Mode::empty()))
            .map_err(|e| Error::io(self.dest(it), e))
            .and_then(|fd| verify_open(self.repo, &it.node, File::from(fd), &self.dest(it)))
            .unwrap_or(false)
    }

    /// `--verify`: re-reads every restored file (not one that failed).
    pub(super) fn verify_files(&self, files: &[&Item]) {
        let failed: std::collections::HashSet<PathBuf> = self
            .errors
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect();
        files
            .par_iter()
            .filter(|it| !failed.contains(&self.dest(it)))
            .for_each(|it| {
                let d = self.dest(it);
                let verdict = self
                    .fs()
                    .and_then(|fs| fs.open(rel(it), OFlags::RDONLY, Mode::empty()))
                    .map_err(|e| Error::io(&d, e))
                    .and_then(|fd| verify_open(self.repo, &it.node, File::from(fd), &d));
                match verdict {
                    Ok(true) => {
                        self.verified.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => self.fail(
                        &d,
                        "verification failed: restored content differs from the snapshot",
                    ),
                    Err(e) => self.fail(&d, format!("verification failed: {e}")),
                }
            });
    }
}

/// Writes `data` at `pos`, skipping all-zero blocks so they stay holes.
fn write_sparse(f: &File, pos: u64, data: &[u8]) -> std::io::Result<()> {
    let mut i = 0;
    while i < data.len() {
        let end = (i + BLOCK).min(data.len());
        if data[i..end].iter().all(|&b| b == 0) {
            i = end;
            continue;
        }
        // Extend the run of non-zero blocks and write it in one call.
        let start = i;
        while i < data.len() {
            let e = (i + BLOCK).min(data.len());
            if data[i..e].iter().all(|&b| b == 0) {
                break;
            }
            i = e;
        }
        f.write_all_at(&data[start..i], pos + start as u64)?;
    }
    Ok(())
}

/// Re-reads a file and checks it hashes, chunk by chunk, to the node's content.
pub fn verify_file(repo: &Repository, node: &Node, path: &Path) -> Result<bool> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    verify_open(repo, node, f, path)
}

/// [`verify_file`] on a file already open (`path` names it in errors).
fn verify_open(repo: &Repository, node: &Node, mut f: File, path: &Path) -> Result<bool> {
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len != node.content.iter().map(|c| c.size as u64).sum::<u64>() {
        return Ok(false);
    }
    let mut buf = Vec::new();
    for ContentRef { id, size } in &node.content {
        buf.resize(*size as usize, 0);
        f.read_exact(&mut buf).map_err(|e| Error::io(path, e))?;
        if repo.hasher().id(&buf) != *id {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The `len` bytes at `at` of what the store returned for a read of `pack`,
/// or an error naming the pack and blob when the read came back short.
fn sealed_slice<'b>(
    bytes: &'b [u8],
    at: usize,
    len: usize,
    pack: &PackId,
    blob: &BlobId,
) -> Result<&'b [u8]> {
    at.checked_add(len)
        .and_then(|end| bytes.get(at..end))
        .ok_or_else(|| {
            Error::corrupt(
                format!("pack {pack}"),
                format!(
                    "short read: blob {blob} needs {len} bytes at offset {at} of the range read, \
                     the store returned {}",
                    bytes.len()
                ),
            )
        })
}

/// Reads one data blob, checking that the store returned all of it.
fn read_data_blob(repo: &Repository, id: &BlobId, size: u32) -> Result<Vec<u8>> {
    let loc = repo
        .index()
        .lookup(id)
        .ok_or_else(|| Error::BlobNotIndexed(id.to_hex()))?;
    let start = loc.offset as u64;
    let bytes = match repo.backend().get_range(
        &pack_key(loc.kind, &loc.pack),
        start..start + loc.length as u64,
    ) {
        // Swept by a concurrent prune after repacking (rule 10).
        Err(Error::MissingObject(_)) => return repo.read_relocated_blob(id, Some(size as usize)),
        other => other?,
    };
    let sealed = sealed_slice(&bytes, 0, loc.length as usize, &loc.pack, id)?;
    repo.decode_blob(id, sealed, Some(size as usize))
}

/// Writes a file node's content to `out`, blob by blob.
pub fn dump_file(repo: &Repository, node: &Node, out: &mut dyn Write) -> Result<u64> {
    let mut n = 0;
    for c in &node.content {
        let data = read_data_blob(repo, &c.id, c.size)?;
        out.write_all(&data).map_err(|e| Error::io("<stdout>", e))?;
        n += data.len() as u64;
    }
    out.flush().map_err(|e| Error::io("<stdout>", e))?;
    Ok(n)
}

/// The most one range read of a restore spans: bounds the bytes each thread
/// holds (a whole 16 MiB pack read at once per thread was most of restore's peak).
const MAX_RUN_BYTES: u64 = 4 << 20;

/// Splits blobs sorted by offset into runs read with one request each: blobs
/// closer than [`READ_GAP`] share a run, up to [`MAX_RUN_BYTES`].
fn read_runs<'a, 'b>(blobs: &'a [&'b NeededBlob]) -> Vec<&'a [&'b NeededBlob]> {
    let mut runs = Vec::new();
    let mut first = 0;
    for i in 1..=blobs.len() {
        let split = i == blobs.len() || {
            let (prev, next) = (&blobs[i - 1].loc, &blobs[i].loc);
            let gap_ok = (next.offset as u64) < prev.offset as u64 + prev.length as u64 + READ_GAP;
            let span = next.offset as u64 + next.length as u64 - blobs[first].loc.offset as u64;
            !gap_ok || span > MAX_RUN_BYTES
        };
        if split {
            runs.push(&blobs[first..i]);
            first = i;
        }
    }
    runs
}

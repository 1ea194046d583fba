//! Regular files: reading packs, writing blobs into temporary files, renaming
//! them into place; and the readers that check what the store returns (dump,
//! verify).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::beneath::split;
use super::{file_type, rel, tmp_name, Item, Restorer};
use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::tree::{ContentRef, Node};
use crate::repo::blobs::WantedBlob;
use crate::repo::Repository;

const BLOCK: usize = 4096;

/// A file being restored under a temporary name.
struct PendingFile<'i> {
    item: &'i Item,
    /// Where it goes, for messages.
    dest: PathBuf,
    /// Its temporary name, relative to the target.
    tmp: PathBuf,
    /// A handle on its folder, opened beneath the target once for all the
    /// batch's files in that folder: the existence check, the create and the
    /// rename then name a single entry in it, where each used to resolve the
    /// whole path below the target again (two of three `openat2` a file).
    /// None: the folder could not be opened or the handle budget is spent;
    /// the path is resolved per call, as before, and fails as before.
    folder: Option<Arc<OwnedFd>>,
    /// The first error that hit this file; it is then not renamed into place.
    error: Mutex<Option<String>>,
    /// The temporary file, kept open from its creation to its rename while
    /// the descriptor budget allows: every blob write and the metadata then
    /// reuse it instead of resolving the path again (each confined open
    /// walks the whole path below the target, most of restore's system time).
    open: OnceLock<File>,
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

/// The (file, offset) places a blob goes.
type Targets = Vec<(usize, u64)>;

impl Restorer<'_> {
    /// Restores regular files: every needed pack is read once (in parallel),
    /// each blob written at its offsets in every file that uses it; then each
    /// complete file gets its metadata and is renamed into place.
    pub(super) fn restore_files(&self, files: &[&Item]) {
        let mut pending = Vec::new();
        let mut folders = Folders::new(self, descriptor_budget() / 4);
        for it in files {
            let dest = self.dest(it);
            let folder = folders.of(rel(it));
            let existing = match &folder {
                Some(dir) => stat_in(dir, rel(it)),
                None => self.existing(rel(it)),
            };
            let keep = match existing {
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
                    folder,
                    dest,
                    error: Mutex::new(None),
                    open: OnceLock::new(),
                });
            }
        }
        let kept = AtomicUsize::new(0);
        let budget = descriptor_budget();
        // One thread creates them all. Parallel creates contend in the
        // filesystem's inode allocator: on ext4 after a large `rm -rf` (the
        // benchmark's setup, and a restore over a deleted tree), every create
        // scans past recently deleted inodes and parallel ones retry the scan
        // (`find_inode_bit`/`recently_deleted` were 25% of all samples). The
        // kernel tree (78,611 files): 13.5 s -> 4.5 s of system time, 11.0 s ->
        // 6.8 s wall.
        pending.iter().for_each(|p| {
            let size = p.item.node.content.iter().map(|c| c.size as u64).sum();
            // The full length up front, as a hole: only non-zero blocks get written.
            let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
            let created = match &p.folder {
                // A single new name in a folder opened beneath the target:
                // O_EXCL and O_NOFOLLOW refuse anything already there.
                Some(dir) => split(&p.tmp)
                    .map_err(io::Error::from)
                    .and_then(|(_, name)| {
                        rustix::fs::openat(
                            dir.as_ref(),
                            name,
                            create | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::RUSR | Mode::WUSR,
                        )
                        .map_err(io::Error::from)
                    }),
                None => self
                    .fs()
                    .and_then(|fs| fs.open(&p.tmp, create, Mode::RUSR | Mode::WUSR)),
            }
            .map(File::from)
            .and_then(|f| f.set_len(size).map(|()| f));
            match created {
                Ok(f) if kept.fetch_add(1, Ordering::Relaxed) < budget => {
                    let _ = p.open.set(f);
                }
                Ok(_) => {}
                Err(e) => p.fail(e),
            }
        });
        let wanted = self.wanted_blobs(&pending);
        let _ = self.repo.read_blobs(wanted, |w, data| {
            match data {
                Ok(data) => self.write_blob(&data, &w.tag, &pending),
                Err(e) => {
                    let msg = e.to_string();
                    w.tag.iter().for_each(|(fi, _)| pending[*fi].fail(&msg));
                }
            }
            Ok(())
        });
        pending.into_par_iter().for_each(|p| self.finish_file(p));
    }

    /// Every blob the pending files need, once, with the places it goes.
    fn wanted_blobs(&self, pending: &[PendingFile<'_>]) -> Vec<WantedBlob<Targets>> {
        let mut by_blob: HashMap<BlobId, WantedBlob<Targets>> = HashMap::new();
        for (fi, p) in pending.iter().enumerate() {
            let mut offset = 0u64;
            for c in &p.item.node.content {
                by_blob
                    .entry(c.id)
                    .or_insert_with(|| WantedBlob {
                        id: c.id,
                        raw_len: Some(c.size),
                        tag: Vec::new(),
                    })
                    .tag
                    .push((fi, offset));
                offset += c.size as u64;
            }
        }
        by_blob.into_values().collect()
    }

    fn write_blob(&self, data: &[u8], targets: &[(usize, u64)], pending: &[PendingFile<'_>]) {
        for (fi, offset) in targets {
            let p = &pending[*fi];
            if p.failed() {
                continue;
            }
            let written = match p.open.get() {
                Some(f) => write_sparse(f, *offset, data),
                None => self
                    .fs()
                    .and_then(|fs| fs.open(&p.tmp, OFlags::WRONLY, Mode::empty()))
                    .and_then(|fd| write_sparse(&File::from(fd), *offset, data)),
            };
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
    fn finish_file(&self, mut p: PendingFile<'_>) {
        let open = p.open.take();
        let done = if p.failed() {
            Err(p.error.lock().unwrap().clone().unwrap_or_default())
        } else {
            self.rename_into_place(&p, open).map_err(|e| e.to_string())
        };
        match done {
            Ok(()) => {
                self.restored.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if let Ok((dir, tmp)) = self.folder_of(&p) {
                    let _ = rustix::fs::unlinkat(dir.as_ref(), tmp, AtFlags::empty());
                }
                self.fail(&p.dest, e);
            }
        }
    }

    fn rename_into_place(&self, p: &PendingFile<'_>, open: Option<File>) -> io::Result<()> {
        let fs = self.fs()?;
        let file = match open {
            Some(f) => f,
            None => File::from(fs.open(&p.tmp, OFlags::WRONLY, Mode::empty())?),
        };
        self.metadata_fd(&file, &p.item.node)?;
        drop(file);
        let (dir, tmp) = self.folder_of(p)?;
        let name = rel(p.item).file_name().unwrap_or_default();
        Ok(rustix::fs::renameat(dir.as_ref(), tmp, dir.as_ref(), name)?)
    }

    /// The handle of a pending file's folder (the batch's, or opened now),
    /// and its temporary name.
    fn folder_of<'p>(
        &self,
        p: &'p PendingFile<'_>,
    ) -> io::Result<(Arc<OwnedFd>, &'p std::ffi::OsStr)> {
        match &p.folder {
            Some(dir) => Ok((Arc::clone(dir), split(&p.tmp)?.1)),
            None => {
                let (dir, tmp) = self.fs()?.parent(&p.tmp)?;
                Ok((Arc::new(dir), tmp))
            }
        }
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

/// The folders of one batch's files, each opened once beneath the target,
/// at most `budget` of them (the rest resolve their path per call).
struct Folders<'f, 'r> {
    restorer: &'f Restorer<'r>,
    open: HashMap<PathBuf, Option<Arc<OwnedFd>>>,
    budget: usize,
}

impl<'f, 'r> Folders<'f, 'r> {
    fn new(restorer: &'f Restorer<'r>, budget: usize) -> Self {
        Folders {
            restorer,
            open: HashMap::new(),
            budget,
        }
    }

    /// The handle of the folder holding `rel`, if it can be had.
    fn of(&mut self, rel: &Path) -> Option<Arc<OwnedFd>> {
        let (parent, _) = split(rel).ok()?;
        if let Some(dir) = self.open.get(parent) {
            return dir.clone();
        }
        if self.open.len() >= self.budget {
            return None;
        }
        let dir = self
            .restorer
            .fs()
            .and_then(|fs| fs.dir(parent))
            .ok()
            .map(Arc::new);
        self.open.insert(parent.to_path_buf(), dir.clone());
        dir
    }
}

/// What is at `rel`'s name in its folder `dir` (not following a symlink).
fn stat_in(dir: &OwnedFd, rel: &Path) -> io::Result<Option<rustix::fs::Stat>> {
    let (_, name) = split(rel)?;
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How many temporary files a batch may keep open: well below the
/// process's limit on open descriptors (reading packs, the repository's own
/// files and the directories need some too).
fn descriptor_budget() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    (soft.saturating_sub(256) / 2).min(usize::MAX as u64) as usize
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

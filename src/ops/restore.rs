//! Restore: recreate a snapshot's tree below a target directory.
//!
//! Files are written in parallel, each to a temporary name beside its final
//! place and renamed into place when complete, so a crash never leaves a
//! half-written file under the real name. All-zero 4 KiB blocks are skipped
//! (seeked over), so sparse files come back sparse. Directory modes and times
//! are applied last, deepest first, so read-only directories can be filled.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob::BlobType;
use crate::format::id::{BlobId, PackId};
use crate::format::tree::{ContentRef, Node, NodeType};
use crate::repo::{pack_key, Repository};

const BLOCK: usize = 4096;
/// Blobs of one pack closer than this are fetched in one request.
const READ_GAP: u64 = 1024 * 1024;

/// A file being restored under a temporary name.
struct PendingFile<'i> {
    item: &'i Item,
    dest: PathBuf,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overwrite {
    #[default]
    Always,
    IfChanged,
    Never,
}

#[derive(Debug, Default)]
pub struct RestoreOptions {
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
    pub verify: bool,
    pub dry_run: bool,
    pub overwrite: Overwrite,
}

#[derive(Debug, Default)]
pub struct RestoreOutcome {
    pub files_restored: u64,
    pub files_skipped: u64,
    pub dirs: u64,
    pub bytes_written: u64,
    pub files_verified: u64,
    pub errors: Vec<(PathBuf, String)>,
}

/// One entry to restore: its path inside the snapshot and its node.
#[derive(Debug, Clone)]
pub struct Item {
    /// Absolute-style path in the snapshot, e.g. `/home/ann/a.txt`.
    pub path: PathBuf,
    pub node: Node,
}

/// Walks a tree depth-first, parents before children.
pub fn walk_tree(
    repo: &Repository,
    root: &BlobId,
    base: &Path,
    out: &mut dyn FnMut(Item) -> Result<bool>,
) -> Result<()> {
    let tree = repo.load_tree(root)?;
    for node in tree.nodes {
        let path = base.join(node.os_name());
        let sub = node.subtree.filter(|_| node.kind == NodeType::Dir);
        let descend = out(Item {
            path: path.clone(),
            node,
        })?;
        if let (Some(sub), true) = (sub, descend) {
            walk_tree(repo, &sub, &path, out)?;
        }
    }
    Ok(())
}

struct Filter {
    includes: GlobSet,
    excludes: GlobSet,
    has_includes: bool,
}

fn globset(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // A pattern without a slash matches a name anywhere, as in restic.
        // A pattern not starting at the root matches a name or path ending anywhere.
        let p = p.trim_end_matches('/');
        let pat = if p.starts_with('/') {
            p.to_string()
        } else {
            format!("**/{p}")
        };
        b.add(
            Glob::new(&pat)
                .map_err(|e| Error::InvalidArgument(format!("bad pattern '{p}': {e}")))?,
        );
    }
    b.build().map_err(|e| Error::InvalidArgument(e.to_string()))
}

impl Filter {
    fn new(o: &RestoreOptions) -> Result<Filter> {
        Ok(Filter {
            includes: globset(&o.includes)?,
            excludes: globset(&o.excludes)?,
            has_includes: !o.includes.is_empty(),
        })
    }

    /// (select this item, descend into it)
    fn decide(&self, path: &Path, is_dir: bool, parent_included: bool) -> (bool, bool) {
        if self.excludes.is_match(path) {
            return (false, false);
        }
        if !self.has_includes || parent_included || self.includes.is_match(path) {
            return (true, true);
        }
        // A directory may hold included entries further down.
        (false, is_dir)
    }
}

/// What restore does (or, in a dry run, would do) with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryAction {
    /// Written (created or replaced).
    Write,
    /// Left as it is in the target, per `--overwrite`.
    Keep,
}

/// Per-entry callbacks, called from many threads (for `-v` listings and progress).
pub trait RestoreProgress: Sync {
    /// `path` is the entry's path inside the snapshot.
    fn entry(&self, _path: &Path, _node: &Node, _action: EntryAction) {}
}

pub struct NoRestoreProgress;
impl RestoreProgress for NoRestoreProgress {}

struct Restorer<'a> {
    repo: &'a Repository,
    target: PathBuf,
    opts: &'a RestoreOptions,
    progress: &'a dyn RestoreProgress,
    restored: AtomicU64,
    skipped: AtomicU64,
    bytes: AtomicU64,
    verified: AtomicU64,
    errors: Mutex<Vec<(PathBuf, String)>>,
    is_root: bool,
}

/// Restores the snapshot tree `root` into `target`.
pub fn restore(
    repo: &Repository,
    root: &BlobId,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreOutcome> {
    restore_with_progress(repo, root, target, opts, &NoRestoreProgress)
}

/// [`restore`], reporting each entry's fate to `progress`.
pub fn restore_with_progress(
    repo: &Repository,
    root: &BlobId,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    let filter = Filter::new(opts)?;
    let mut items: Vec<Item> = Vec::new();
    // Selected directories, and the ancestors an included entry needs.
    let mut included_dirs: Vec<bool> = Vec::new();
    let mut stack: Vec<(PathBuf, bool)> = Vec::new();
    walk_tree(repo, root, Path::new("/"), &mut |item| {
        while stack.last().is_some_and(|(p, _)| !item.path.starts_with(p)) {
            stack.pop();
        }
        let parent_included = stack.last().is_some_and(|(_, inc)| *inc);
        let is_dir = item.node.kind == NodeType::Dir;
        let (select, descend) = filter.decide(&item.path, is_dir, parent_included);
        if is_dir && descend {
            stack.push((item.path.clone(), select));
        }
        if select || (is_dir && descend) {
            included_dirs.push(select);
            items.push(item);
        }
        Ok(descend)
    })?;
    let items = prune_unneeded_dirs(items, included_dirs);
    let r = Restorer {
        repo,
        target: target.to_path_buf(),
        opts,
        progress,
        restored: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        verified: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        is_root: unsafe { libc::geteuid() } == 0,
    };
    let dirs = items
        .iter()
        .filter(|i| i.node.kind == NodeType::Dir)
        .count() as u64;
    if !opts.dry_run {
        std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    }
    r.run(&items)?;
    Ok(RestoreOutcome {
        files_restored: r.restored.load(Ordering::Relaxed),
        files_skipped: r.skipped.load(Ordering::Relaxed),
        dirs,
        bytes_written: r.bytes.load(Ordering::Relaxed),
        files_verified: r.verified.load(Ordering::Relaxed),
        errors: r.errors.into_inner().unwrap(),
    })
}

/// Drops directories that were only walked through but hold nothing selected.
fn prune_unneeded_dirs(items: Vec<Item>, selected: Vec<bool>) -> Vec<Item> {
    let keep_paths: Vec<PathBuf> = items
        .iter()
        .zip(&selected)
        .filter(|(_, s)| **s)
        .map(|(i, _)| i.path.clone())
        .collect();
    let keep: std::collections::HashSet<&Path> =
        keep_paths.iter().flat_map(|p| p.ancestors()).collect();
    items
        .into_iter()
        .zip(selected)
        .filter(|(i, s)| *s || keep.contains(i.path.as_path()))
        .map(|(i, _)| i)
        .collect()
}

/// Longest part of the real name kept in a temporary name.
const TMP_NAME_KEEP: usize = 200;

/// A temporary name beside `dest`: `.<name>.cairn-tmp-<16 hex>`, the name cut
/// to its first 200 bytes so the result always fits in 255 bytes.
fn tmp_name(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().as_bytes();
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(&name[..name.len().min(TMP_NAME_KEEP)]);
    tmp.extend_from_slice(format!(".cairn-tmp-{:016x}", rand::random::<u64>()).as_bytes());
    dest.with_file_name(std::ffi::OsStr::from_bytes(&tmp))
}

fn set_times(path: &Path, mtime_ns: i64, follow: bool) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000) as _,
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = [ts, ts];
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn lchown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

impl<'a> Restorer<'a> {
    fn dest(&self, item: &Item) -> PathBuf {
        self.target
            .join(item.path.strip_prefix("/").unwrap_or(&item.path))
    }

    fn fail(&self, path: &Path, why: impl std::fmt::Display) {
        self.errors
            .lock()
            .unwrap()
            .push((path.to_path_buf(), why.to_string()));
    }

    fn run(&self, items: &[Item]) -> Result<()> {
        let dry = self.opts.dry_run;
        // 1. Directories, parents first (walk order), owner-writable for now.
        for it in items.iter().filter(|i| i.node.kind == NodeType::Dir) {
            let d = self.dest(it);
            self.progress.entry(&it.path, &it.node, EntryAction::Write);
            if !dry {
                if let Err(e) = std::fs::create_dir_all(&d) {
                    self.fail(&d, e);
                }
            }
        }
        // 2. Files in parallel; the first of each hard-link group is written,
        //    the rest linked to it afterwards.
        let mut first_of: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let mut links: Vec<(&Item, PathBuf)> = Vec::new();
        let mut files: Vec<&Item> = Vec::new();
        for it in items.iter().filter(|i| i.node.kind == NodeType::File) {
            let n = &it.node;
            if n.links > 1 && n.inode != 0 {
                if let Some(first) = first_of.get(&(n.device, n.inode)) {
                    links.push((it, first.clone()));
                    continue;
                }
                first_of.insert((n.device, n.inode), self.dest(it));
            }
            files.push(it);
        }
        self.restore_files(&files);
        // 3. Hard links, symlinks and special files.
        for (it, first) in links {
            let d = self.dest(it);
            self.progress.entry(&it.path, &it.node, EntryAction::Write);
            if dry {
                self.restored.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let _ = std::fs::remove_file(&d);
            match std::fs::hard_link(&first, &d) {
                Ok(()) => {
                    self.restored.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.fail(&d, e),
            }
        }
        for it in items
            .iter()
            .filter(|i| !matches!(i.node.kind, NodeType::File | NodeType::Dir))
        {
            let d = self.dest(it);
            self.progress.entry(&it.path, &it.node, EntryAction::Write);
            if !dry {
                if let Err(e) = self.restore_special(it, &d) {
                    self.fail(&d, e);
                }
            }
        }
        // 4. Directory metadata, deepest first.
        if !dry {
            for it in items.iter().rev().filter(|i| i.node.kind == NodeType::Dir) {
                let d = self.dest(it);
                if let Err(e) = self.apply_metadata(&it.node, &d) {
                    self.fail(&d, e);
                }
            }
        }
        if self.opts.verify && !dry {
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
                    match verify_file(self.repo, &it.node, &d) {
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
        Ok(())
    }

    /// Whether an existing destination file is kept (per --overwrite).
    fn keep_existing(&self, it: &Item, dest: &Path) -> bool {
        match std::fs::symlink_metadata(dest) {
            Err(_) => false,
            Ok(meta) => match self.opts.overwrite {
                Overwrite::Never => true,
                Overwrite::IfChanged => {
                    meta.is_file() && verify_file(self.repo, &it.node, dest).unwrap_or(false)
                }
                Overwrite::Always => false,
            },
        }
    }

    /// Restores regular files: every needed pack is read once (in parallel),
    /// each blob written at its offsets in every file that uses it; then each
    /// complete file gets its metadata and is renamed into place.
    fn restore_files(&self, files: &[&Item]) {
        let mut pending = Vec::new();
        for it in files {
            let dest = self.dest(it);
            let keep = self.keep_existing(it, &dest);
            let action = if keep {
                EntryAction::Keep
            } else {
                EntryAction::Write
            };
            self.progress.entry(&it.path, &it.node, action);
            if keep {
                self.skipped.fetch_add(1, Ordering::Relaxed);
            } else if self.opts.dry_run {
                self.restored.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(it.node.size, Ordering::Relaxed);
            } else {
                pending.push(PendingFile {
                    item: it,
                    tmp: tmp_name(&dest),
                    dest,
                    error: Mutex::new(None),
                });
            }
        }
        pending.par_iter().for_each(|p| {
            let size = p.item.node.content.iter().map(|c| c.size as u64).sum();
            let created = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p.tmp);
            // The full length up front, as a hole: only non-zero blocks get written.
            if let Err(e) = created.and_then(|f| f.set_len(size)) {
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
        for run in blobs.chunk_by(|a, b| {
            (b.loc.offset as u64) < a.loc.offset as u64 + a.loc.length as u64 + READ_GAP
        }) {
            let start = run[0].loc.offset as u64;
            let end = run
                .iter()
                .map(|b| b.loc.offset as u64 + b.loc.length as u64)
                .max()
                .unwrap_or(start);
            let bytes = match self.repo.backend().get_range(&key, start..end) {
                Ok(b) => b,
                Err(e) => {
                    let msg = e.to_string();
                    run.iter()
                        .flat_map(|b| &b.targets)
                        .for_each(|(fi, _)| pending[*fi].fail(&msg));
                    continue;
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
    }

    fn write_blob(&self, data: &[u8], targets: &[(usize, u64)], pending: &[PendingFile<'_>]) {
        for (fi, offset) in targets {
            let p = &pending[*fi];
            if p.failed() {
                continue;
            }
            let written = OpenOptions::new()
                .write(true)
                .open(&p.tmp)
                .and_then(|f| write_sparse(&f, *offset, data));
            match written {
                Ok(()) => {
                    self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
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
            self.apply_metadata(&p.item.node, &p.tmp)
                .and_then(|_| std::fs::rename(&p.tmp, &p.dest))
                .map_err(|e| e.to_string())
        };
        match done {
            Ok(()) => {
                self.restored.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&p.tmp);
                self.fail(&p.dest, e);
            }
        }
    }

    fn restore_special(&self, it: &Item, dest: &Path) -> Result<()> {
        let n = &it.node;
        let _ = std::fs::remove_file(dest);
        let io = |e| Error::io(dest, e);
        match n.kind {
            NodeType::Symlink => {
                let target = n.link_target().unwrap_or_default();
                std::os::unix::fs::symlink(&target, dest).map_err(io)?;
            }
            NodeType::Fifo | NodeType::Dev | NodeType::Chardev | NodeType::Socket => {
                if n.kind == NodeType::Socket {
                    return Ok(()); // sockets are recreated by their servers, as restic skips them
                }
                let kind = match n.kind {
                    NodeType::Fifo => libc::S_IFIFO,
                    NodeType::Dev => libc::S_IFBLK,
                    _ => libc::S_IFCHR,
                };
                let c = std::ffi::CString::new(dest.as_os_str().as_bytes())
                    .map_err(|e| io(std::io::Error::other(e)))?;
                let r = unsafe {
                    libc::mknod(
                        c.as_ptr(),
                        kind | (n.mode & 0o7777) as libc::mode_t,
                        n.rdev as libc::dev_t,
                    )
                };
                if r != 0 {
                    return Err(io(std::io::Error::last_os_error()));
                }
            }
            _ => return Ok(()),
        }
        self.apply_metadata(n, dest).map_err(io)?;
        self.restored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Owner (as root), mode and mtime. Symlinks get owner and time only.
    fn apply_metadata(&self, n: &Node, path: &Path) -> std::io::Result<()> {
        if self.is_root {
            lchown(path, n.uid, n.gid)?;
        }
        if n.kind != NodeType::Symlink {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(n.mode))?;
        }
        set_times(path, n.mtime_ns, n.kind != NodeType::Symlink)
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
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
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

/// Finds the node at `path` (e.g. `/home/ann/a.txt` or `mydb.sql`) in a tree.
pub fn find_node(repo: &Repository, root: &BlobId, path: &str) -> Result<Node> {
    let mut current = *root;
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.is_empty() {
        return Err(Error::PathNotInSnapshot(path.to_string()));
    }
    for (i, c) in comps.iter().enumerate() {
        let tree = repo.load_tree(&current)?;
        let node = tree
            .nodes
            .into_iter()
            .find(|n| n.os_name().as_bytes() == c.as_bytes())
            .ok_or_else(|| Error::PathNotInSnapshot(path.to_string()))?;
        if i + 1 == comps.len() {
            return Ok(node);
        }
        current = node
            .subtree
            .filter(|_| node.kind == NodeType::Dir)
            .ok_or_else(|| Error::PathNotInSnapshot(path.to_string()))?;
    }
    unreachable!("loop returns on its last component")
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
    let bytes = repo.backend().get_range(
        &pack_key(loc.kind, &loc.pack),
        start..start + loc.length as u64,
    )?;
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

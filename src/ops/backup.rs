//! Backup: walk sources, chunk and save file contents, build trees bottom-up,
//! then write the snapshot — after the index, so a snapshot never names a blob
//! no index lists.
//!
//! Directory entries are processed in parallel (rayon), and a large file's
//! chunks are hashed, compressed and sealed in parallel batches while the next
//! batch is read, so both cores work from the walk to the upload.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rayon::prelude::*;

use crate::database::DatabaseSource;
use crate::error::{Error, Result};
use crate::format::blob::BlobType;
use crate::format::chunker;
use crate::format::database::{DatabaseRecord, DATABASES_DIR};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::records::SessionKind;
use crate::format::snapshot::WAL_DIR;
use crate::format::snapshot::{Snapshot, SnapshotSummary};
use crate::format::tree::{encode_name, ContentRef, Node, NodeType, Tree};
use crate::repo::saver::{save_tree, BlobSaver};
use crate::repo::session::Session;
use crate::repo::{hostname, Repository, SnapshotFilter};
use crate::source::fs::{
    clean_absolute, list_at, metadata_at, node_from_metadata, unix_nanos, DirChain,
};
use crate::source::prefetch::Prefetcher;
use crate::source::{remove_secret_env, validate_stdin_name, Excludes, Source};

/// Bytes of chunks read ahead while the previous batch is being sealed. A batch
/// is a barrier, so it must hold several chunks or one core idles: on a 300 MB
/// single-stream backup, 2 MiB batches ran at 94% CPU (3.7 s), 4 MiB at 170%
/// (1.9 s, +5 MB peak RSS), 8 MiB at 168% (2.0 s, +15 MB).
const BATCH_BYTES: usize = 4 * 1024 * 1024;

#[derive(Default)]
pub struct BackupOptions {
    pub tags: Vec<String>,
    pub host: Option<String>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub time: Option<DateTime<Utc>>,
    pub dry_run: bool,
    /// Explicit parent snapshot; otherwise the latest one with the same host and paths.
    pub parent: Option<SnapshotId>,
    /// Read every file even if its metadata says unchanged.
    pub force: bool,
    /// restic's other selectors (`--iexclude`, `--exclude-if-present`, ...).
    pub selectors: crate::source::Selectors,
}

/// Progress callbacks, called from many threads.
pub trait Progress: Sync {
    fn file_done(&self, _path: &Path, _bytes: u64) {}
    /// Whether a file was new, changed or unmodified against the parent snapshot.
    fn file_status(&self, _path: &Path, _status: FileStatus) {}
    /// Bytes read, or skipped as unchanged.
    fn bytes_processed(&self, _n: u64) {}
    /// Everything is read; the last packs and the index are being uploaded.
    fn finishing(&self) {}
}

/// A file's state against the parent snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    New,
    Changed,
    Unmodified,
}

pub struct NoProgress;
impl Progress for NoProgress {}

/// What a backup did.
#[derive(Debug)]
pub struct BackupOutcome {
    /// None for a dry run.
    pub snapshot_id: Option<SnapshotId>,
    pub snapshot: Snapshot,
    pub parent: Option<SnapshotId>,
    /// Sources that could not be read, with why; the snapshot omits them.
    pub errors: Vec<(PathBuf, String)>,
    pub bytes_read: u64,
    pub duration_secs: f64,
    /// A stdin or command source gave no byte: saved (an empty file), but a
    /// dump that writes nothing has almost always failed, so callers warn.
    pub empty_input: bool,
}

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unmodified: AtomicU64,
    dirs_new: AtomicU64,
    dirs_changed: AtomicU64,
    dirs_unmodified: AtomicU64,
    bytes_processed: AtomicU64,
    bytes_read: AtomicU64,
}

/// A directory in `archive_deep_dir`'s stack.
struct DeepFrame {
    parent_sub: Option<BlobId>,
    /// Subdirectories still to go into: name, metadata, parent's subtree.
    dirs: std::vec::IntoIter<(OsString, Metadata, Option<BlobId>)>,
    nodes: Vec<Node>,
    /// This directory's node in its parent (none for the first).
    node: Option<Node>,
}

/// A path this long or longer is walked by `archive_deep_dir` (through
/// handles), so no path the parallel walk gives the kernel nears PATH_MAX.
const DEEP_PATH_BYTES: usize = 1024;

/// Directories this deep or deeper are archived without recursion (and
/// without parallelism within them): see `archive_deep_dir`.
const PARALLEL_DEPTH: usize = 48;

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Archiver<'a> {
    repo: &'a Repository,
    saver: BlobSaver<'a>,
    excludes: Excludes,
    one_file_system: bool,
    force: bool,
    counters: Counters,
    errors: Mutex<Vec<(PathBuf, String)>>,
    progress: &'a dyn Progress,
    /// The writer session (none in a dry run): checked at safe points.
    session: Option<&'a Session>,
    /// Reads the files a directory listing names into the page cache while
    /// the walk works on the ones before them.
    read_ahead: Prefetcher,
}

/// The intermediate directories between `/` and the sources, merged.
#[derive(Default)]
struct VirtualDir {
    children: BTreeMap<OsString, VirtualEntry>,
}

enum VirtualEntry {
    Dir(PathBuf, VirtualDir),
    Source(PathBuf),
}

impl VirtualDir {
    /// Every source path below this directory.
    fn sources(&self) -> Vec<PathBuf> {
        self.children
            .values()
            .flat_map(|e| match e {
                VirtualEntry::Source(p) => vec![p.clone()],
                VirtualEntry::Dir(_, d) => d.sources(),
            })
            .collect()
    }

    fn insert(&mut self, full: &Path) {
        let comps: Vec<_> = full
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                _ => None,
            })
            .collect();
        let mut dir = self;
        let mut here = PathBuf::from("/");
        for (i, c) in comps.iter().enumerate() {
            here.push(c);
            if i + 1 == comps.len() {
                dir.children
                    .insert(c.clone(), VirtualEntry::Source(here.clone()));
                return;
            }
            let entry = dir
                .children
                .entry(c.clone())
                .or_insert_with(|| VirtualEntry::Dir(here.clone(), VirtualDir::default()));
            match entry {
                VirtualEntry::Dir(_, d) => dir = d,
                // An ancestor is itself a source: it covers this path already.
                VirtualEntry::Source(_) => return,
            }
        }
    }
}

impl<'a> Archiver<'a> {
    /// A safe point: stops the backup once a collector has fenced its session.
    fn check_session(&self) -> Result<()> {
        self.session.map_or(Ok(()), Session::check)
    }

    fn fail(&self, path: &Path, why: impl std::fmt::Display) {
        self.errors
            .lock()
            .unwrap()
            .push((path.to_path_buf(), why.to_string()));
    }

    fn parent_tree(&self, id: Option<BlobId>) -> Option<Tree> {
        id.and_then(|id| self.repo.load_tree(&id).ok())
    }

    fn find<'t>(tree: &'t Option<Tree>, name: &str, name_hex: &Option<String>) -> Option<&'t Node> {
        tree.as_ref()?
            .nodes
            .iter()
            .find(|n| n.name == name && n.name_hex == *name_hex)
    }

    /// Archives the merged parents of the sources; `extra` nodes (the
    /// database dumps' folder) join this directory's entries.
    fn archive_virtual(
        &self,
        dir: &VirtualDir,
        parent: Option<BlobId>,
        extra: Vec<Node>,
    ) -> Result<BlobId> {
        let ptree = self.parent_tree(parent);
        let nodes: Vec<Option<Node>> = dir
            .children
            .par_iter()
            .map(|(name, entry)| -> Result<Option<Node>> {
                let (name_s, name_hex) = encode_name(name);
                let pnode = Self::find(&ptree, &name_s, &name_hex);
                match entry {
                    VirtualEntry::Source(path) => match std::fs::symlink_metadata(path) {
                        Ok(meta) => {
                            self.archive_entry(path, name, &meta, pnode, meta.dev(), 0, None)
                        }
                        Err(e) => {
                            self.fail(path, e);
                            Ok(None)
                        }
                    },
                    VirtualEntry::Dir(path, sub) => {
                        // A missing parent means every source below it is missing:
                        // report it like a missing source and go on with the rest.
                        let meta = match std::fs::metadata(path) {
                            Ok(m) => m,
                            Err(e) => {
                                for source in sub.sources() {
                                    self.fail(&source, &e);
                                }
                                return Ok(None);
                            }
                        };
                        let mut node = node_from_metadata(name, &meta);
                        node.kind = NodeType::Dir;
                        node.subtree = Some(self.archive_virtual(
                            sub,
                            pnode.and_then(|p| p.subtree),
                            Vec::new(),
                        )?);
                        Ok(Some(node))
                    }
                }
            })
            .collect::<Result<_>>()?;
        let mut tree = Tree {
            nodes: nodes.into_iter().flatten().chain(extra).collect(),
        };
        Ok(save_tree(&self.saver, &mut tree)?.0)
    }

    /// Archives one entry; Ok(None) when it was skipped (error recorded).
    fn archive_entry(
        &self,
        path: &Path,
        name: &OsStr,
        meta: &Metadata,
        pnode: Option<&Node>,
        root_dev: u64,
        depth: usize,
        at: Option<BorrowedFd<'_>>,
    ) -> Result<Option<Node>> {
        self.check_session()?;
        let mut node = node_from_metadata(name, meta);
        match node.kind {
            NodeType::File => {
                if !self.archive_file(path, &mut node, pnode, at)? {
                    return Ok(None);
                }
            }
            NodeType::Dir => {
                let parent_sub = pnode
                    .filter(|p| p.kind == NodeType::Dir)
                    .and_then(|p| p.subtree);
                let archived = if depth < PARALLEL_DEPTH && path.as_os_str().len() < DEEP_PATH_BYTES
                {
                    self.archive_dir(path, parent_sub, root_dev, depth + 1)?
                } else {
                    self.archive_deep_dir(path, parent_sub, root_dev)?
                };
                match archived {
                    Some(id) => {
                        let counter = match parent_sub {
                            None => &self.counters.dirs_new,
                            Some(p) if p == id => &self.counters.dirs_unmodified,
                            Some(_) => &self.counters.dirs_changed,
                        };
                        inc(counter);
                        node.subtree = Some(id);
                    }
                    None => return Ok(None),
                }
            }
            NodeType::Symlink => match read_link(path, name, at) {
                Ok(t) => {
                    let (t, t_hex) = encode_name(t.as_os_str());
                    node.target = Some(t);
                    node.target_hex = t_hex;
                }
                Err(e) => {
                    self.fail(path, e);
                    return Ok(None);
                }
            },
            _ => {}
        }
        Ok(Some(node))
    }

    fn archive_dir(
        &self,
        path: &Path,
        parent: Option<BlobId>,
        root_dev: u64,
        depth: usize,
    ) -> Result<Option<BlobId>> {
        let rd = match std::fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) => {
                self.fail(path, e);
                return Ok(None);
            }
        };
        let mut entries = Vec::new();
        for e in rd {
            match e {
                Ok(e) => entries.push(e),
                Err(err) => self.fail(path, err),
            }
        }
        let ptree = self.parent_tree(parent);
        let admitted: Vec<Option<(PathBuf, Metadata)>> = entries
            .par_iter()
            .map(|e| self.admit(e, root_dev))
            .collect();
        let parents: Vec<Option<&Node>> = entries
            .iter()
            .map(|e| {
                let (name_s, name_hex) = encode_name(&e.file_name());
                Self::find(&ptree, &name_s, &name_hex)
            })
            .collect();
        self.read_ahead_files(&admitted, &parents);
        let nodes: Vec<Option<Node>> = entries
            .par_iter()
            .zip(admitted)
            .zip(parents)
            .map(|((e, admitted), pnode)| -> Result<Option<Node>> {
                let Some((child, meta)) = admitted else {
                    return Ok(None);
                };
                self.archive_entry(&child, &e.file_name(), &meta, pnode, root_dev, depth, None)
            })
            .collect::<Result<_>>()?;
        let mut tree = Tree {
            nodes: nodes.into_iter().flatten().collect(),
        };
        Ok(Some(save_tree(&self.saver, &mut tree)?.0))
    }

    /// Asks for the content of the listed files that this backup will read
    /// (new or changed ones; not those the parent snapshot has unchanged) to
    /// be read ahead, in listing order.
    fn read_ahead_files(
        &self,
        admitted: &[Option<(PathBuf, Metadata)>],
        parents: &[Option<&Node>],
    ) {
        for (entry, pnode) in admitted.iter().zip(parents) {
            let Some((path, meta)) = entry else { continue };
            if meta.is_dir() {
                self.read_ahead.advise_folder(path.clone());
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let unchanged = !self.force
                && pnode.is_some_and(|p| {
                    p.kind == NodeType::File
                        && p.size == meta.size()
                        && p.mtime_ns == unix_nanos(meta.mtime(), meta.mtime_nsec())
                        && p.ctime_ns == unix_nanos(meta.ctime(), meta.ctime_nsec())
                        && p.inode == meta.ino()
                });
            if !unchanged {
                self.read_ahead.advise(path.clone(), meta.size());
            }
        }
    }

    /// A directory entry the walk takes, with its metadata: not excluded by
    /// its path (checked before any `stat`), readable, on the same file
    /// system when asked, and not left out by what it is.
    fn admit(&self, e: &std::fs::DirEntry, root_dev: u64) -> Option<(PathBuf, Metadata)> {
        let child = e.path();
        if self.excludes.is_excluded(&child) {
            return None;
        }
        let meta = match e.metadata() {
            Ok(m) => m,
            Err(err) => {
                self.fail(&child, err);
                return None;
            }
        };
        if self.one_file_system && meta.is_dir() && meta.dev() != root_dev {
            return None;
        }
        if self.excludes.excludes_by_kind(&child, &meta) {
            return None;
        }
        Some((child, meta))
    }

    /// Archives a directory below [`PARALLEL_DEPTH`] (or with a long path)
    /// without recursion: one thread, an explicit stack of directories, each
    /// with the subdirectories still to go into and the nodes done. A tree
    /// thousands of levels deep would otherwise overflow the stack (a crash,
    /// not an error). Entries are reached through directory handles
    /// ([`DirChain`]), never by full path: below 100,000 levels the paths are
    /// far beyond PATH_MAX. Files, links and special files of a directory are
    /// archived when it is listed, through its handle.
    fn archive_deep_dir(
        &self,
        path: &Path,
        parent: Option<BlobId>,
        root_dev: u64,
    ) -> Result<Option<BlobId>> {
        let mut chain = match DirChain::open(path) {
            Ok(c) => c,
            Err(e) => {
                self.fail(path, e);
                return Ok(None);
            }
        };
        let Some(first) = self.deep_frame(&mut chain, parent, None, root_dev)? else {
            return Ok(None);
        };
        let mut stack = vec![first];
        loop {
            let top = stack.last_mut().expect("the first frame is popped last");
            let Some((name, meta, parent_sub)) = top.dirs.next() else {
                let done = stack.pop().expect("just looked");
                let id = save_tree(&self.saver, &mut Tree { nodes: done.nodes })?.0;
                let Some(mut node) = done.node else {
                    return Ok(Some(id));
                };
                chain.pop();
                let counter = match done.parent_sub {
                    None => &self.counters.dirs_new,
                    Some(p) if p == id => &self.counters.dirs_unmodified,
                    Some(_) => &self.counters.dirs_changed,
                };
                inc(counter);
                node.subtree = Some(id);
                stack.last_mut().expect("a parent frame").nodes.push(node);
                continue;
            };
            self.check_session()?;
            if let Err(e) = chain.push(&name, meta.dev(), meta.ino()) {
                let child = chain.child(&name).to_path_buf();
                self.fail(&child, e);
                continue;
            }
            let node = node_from_metadata(&name, &meta);
            match self.deep_frame(&mut chain, parent_sub, Some(node), root_dev)? {
                Some(f) => stack.push(f),
                None => {
                    chain.pop();
                }
            }
        }
    }

    /// Lists the chain's current directory: archives its files, links and
    /// special files at once, and returns its frame with the subdirectories
    /// still to go into (None when it could not be listed: error recorded).
    fn deep_frame(
        &self,
        chain: &mut DirChain,
        parent_sub: Option<BlobId>,
        node: Option<Node>,
        root_dev: u64,
    ) -> Result<Option<DeepFrame>> {
        let listed = chain
            .dir()
            .and_then(|d| Ok((d.try_clone_to_owned()?, list_at(d)?)));
        let (fd, names) = match listed {
            Ok(l) => l,
            Err(e) => {
                self.fail(chain.path(), e);
                return Ok(None);
            }
        };
        let ptree = self.parent_tree(parent_sub);
        let (mut nodes, mut dirs) = (Vec::new(), Vec::new());
        for name in names {
            let child = chain.child(&name);
            if self.excludes.is_excluded(child) {
                continue;
            }
            let meta = match metadata_at(fd.as_fd(), &name) {
                Ok(m) => m,
                Err(err) => {
                    self.fail(child, err);
                    continue;
                }
            };
            if self.one_file_system && meta.is_dir() && meta.dev() != root_dev {
                continue;
            }
            if self.excludes.excludes_by_kind(child, &meta) {
                continue;
            }
            let (name_s, name_hex) = encode_name(&name);
            let pnode = Self::find(&ptree, &name_s, &name_hex);
            if meta.is_dir() {
                let sub = pnode
                    .filter(|p| p.kind == NodeType::Dir)
                    .and_then(|p| p.subtree);
                dirs.push((name, meta, sub));
            } else if let Some(n) = self.archive_entry(
                child,
                &name,
                &meta,
                pnode,
                root_dev,
                PARALLEL_DEPTH,
                Some(fd.as_fd()),
            )? {
                nodes.push(n);
            }
        }
        Ok(Some(DeepFrame {
            parent_sub,
            dirs: dirs.into_iter(),
            nodes,
            node,
        }))
    }

    /// Fills a file node's content; false when the file could not be read.
    fn archive_file(
        &self,
        path: &Path,
        node: &mut Node,
        pnode: Option<&Node>,
        at: Option<BorrowedFd<'_>>,
    ) -> Result<bool> {
        self.counters
            .bytes_processed
            .fetch_add(node.size, Ordering::Relaxed);
        if let Some(p) = pnode.filter(|p| !self.force && self.unchanged(p, node)) {
            node.content = p.content.clone();
            inc(&self.counters.files_unmodified);
            self.progress.file_status(path, FileStatus::Unmodified);
            self.progress.bytes_processed(node.size);
            self.progress.file_done(path, node.size);
            return Ok(true);
        }
        let opened = match at {
            None => crate::source::fs::open_listed(path, node.device, node.inode),
            Some(dir) => {
                crate::source::fs::open_listed_at(dir, name_of(path), node.device, node.inode)
            }
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                self.fail(path, e);
                return Ok(false);
            }
        };
        match self.save_stream(file, Some(node.size)) {
            Ok((content, n)) => {
                node.content = content;
                // What we read is what we stored, even if the file grew meanwhile.
                node.size = n;
            }
            Err(Error::Io { source, .. }) => {
                self.fail(path, source);
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        let (counter, status) = match pnode {
            Some(_) => (&self.counters.files_changed, FileStatus::Changed),
            None => (&self.counters.files_new, FileStatus::New),
        };
        inc(counter);
        self.progress.file_status(path, status);
        self.progress.file_done(path, node.size);
        Ok(true)
    }

    /// Metadata says the file is the one the parent snapshot read, and the
    /// blobs it names are still indexed.
    fn unchanged(&self, p: &Node, n: &Node) -> bool {
        p.kind == NodeType::File
            && p.size == n.size
            && p.mtime_ns == n.mtime_ns
            && p.ctime_ns == n.ctime_ns
            && p.inode == n.inode
            && p.content.iter().all(|c| self.repo.index().contains(&c.id))
    }

    /// Chunks and saves a stream; returns its content list and length. Errors
    /// reading the stream come back as `Error::Io`.
    fn save_stream<R: Read + Send + 'static>(
        &self,
        reader: R,
        size_hint: Option<u64>,
    ) -> Result<(Vec<ContentRef>, u64)> {
        let mut chunks = self.repo.chunker().chunks(reader, size_hint);
        let mut content = Vec::new();
        let mut total = 0u64;
        let mut level = self.repo.config().compression;
        let mut batch = self.next_batch(&mut chunks)?;
        while !batch.is_empty() {
            let (saved, next) = rayon::join(
                || {
                    batch
                        .par_iter()
                        .map(|c| Ok((self.saver.save_at(BlobType::Data, c, level)?, c.len())))
                        .collect::<Result<Vec<_>>>()
                },
                || self.next_batch(&mut chunks),
            );
            let saved = saved?;
            self.check_session()?;
            total += batch.iter().map(|c| c.len() as u64).sum::<u64>();
            level = next_level(level, &saved);
            content.extend(saved.iter().map(|(s, len)| ContentRef {
                id: s.id,
                size: *len as u32,
            }));
            batch = next?;
        }
        Ok((content, total))
    }

    fn next_batch(&self, chunks: &mut chunker::ChunkIter) -> Result<Vec<Vec<u8>>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while bytes < BATCH_BYTES {
            match chunks.next() {
                Some(Ok(c)) => {
                    bytes += c.len();
                    self.counters
                        .bytes_read
                        .fetch_add(c.len() as u64, Ordering::Relaxed);
                    self.progress.bytes_processed(c.len() as u64);
                    batch.push(c);
                }
                Some(Err(e)) => return Err(Error::io("<input>", e)),
                None => break,
            }
        }
        Ok(batch)
    }
}

/// zstd level for the rest of a stream, from what the last batch achieved. Data
/// that barely compresses (under 2.2:1: hex dumps, binaries) gains almost
/// nothing from the configured level over level 1 but costs several times the
/// CPU (zstd-3 on hex text: 170 MiB/s a core; zstd-1: 1.15 GiB/s, and smaller),
/// so such a stream drops to level 1. Only ever lowered, and only within one
/// stream: each file starts at the configured level.
fn next_level(level: i32, saved: &[(crate::repo::saver::Saved, usize)]) -> i32 {
    const FAST: i32 = 1;
    const MIN_SAMPLE: usize = 1024 * 1024;
    let (raw, stored) = saved
        .iter()
        .filter_map(|(s, len)| s.stored.map(|st| (*len, st)))
        .fold((0usize, 0usize), |(r, s), (l, st)| (r + l, s + st));
    if level > FAST && raw >= MIN_SAMPLE && stored * 20 > raw * 9 {
        FAST
    } else {
        level
    }
}

/// The latest snapshot with the same host and paths, as restic picks a parent,
/// with its tree: taken from the listing itself, so that a forget between the
/// listing and a second read cannot fail the backup.
fn find_parent(
    repo: &Repository,
    host: &str,
    paths: &[String],
) -> Result<Option<(SnapshotId, BlobId)>> {
    let filter = SnapshotFilter {
        hosts: vec![host.to_string()],
        ..Default::default()
    };
    let mut sorted = paths.to_vec();
    sorted.sort();
    // Whether a snapshot committed is asked only of this host's candidates,
    // newest first: other hosts' snapshots cost no session record read.
    let ended = repo.ended_sessions()?;
    let candidates = repo.list_all_snapshots()?.into_iter().filter(|(_, s)| {
        filter.matches(s) && {
            let mut p = s.paths.clone();
            p.sort();
            p == sorted
        }
    });
    for (id, s) in candidates.rev() {
        if repo.snapshot_is_valid(&id, &s, &ended)? {
            return Ok(Some((id, s.tree)));
        }
    }
    Ok(None)
}

/// A symlink's target, through its directory's handle when there is one.
fn read_link(path: &Path, name: &OsStr, at: Option<BorrowedFd<'_>>) -> std::io::Result<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    match at {
        None => std::fs::read_link(path),
        Some(dir) => {
            let t = rustix::fs::readlinkat(dir, name, Vec::new())?;
            Ok(PathBuf::from(OsString::from_vec(t.into_bytes())))
        }
    }
}

/// The last name of a path the walk built (never empty).
fn name_of(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

fn current_ids() -> (u32, u32) {
    (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    )
}

/// A file made from a stream (stdin, a command, a database dump): owned by
/// the user running the backup, written now.
fn stream_file_node(name: &str, content: Vec<ContentRef>, size: u64) -> Node {
    let now = Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let (uid, gid) = current_ids();
    Node {
        name: name.to_string(),
        name_hex: None,
        kind: NodeType::File,
        mode: 0o644,
        uid,
        gid,
        user: String::new(),
        group: String::new(),
        mtime_ns: now,
        ctime_ns: now,
        inode: 0,
        device: 0,
        links: 1,
        size,
        content,
        subtree: None,
        target: None,
        target_hex: None,
        rdev: 0,
    }
}

/// A folder that holds stream files.
fn synthetic_dir_node(name: &str, subtree: BlobId) -> Node {
    Node {
        kind: NodeType::Dir,
        mode: 0o755,
        links: 0,
        subtree: Some(subtree),
        ..stream_file_node(name, Vec::new(), 0)
    }
}

/// Absolute, sorted, deduplicated source paths, as recorded and as walked.
/// With `required`, at least one must exist (a files-only backup of nothing
/// is a mistake); beside databases, none need be given.
fn source_paths(ps: &[PathBuf], required: bool) -> Result<(Vec<String>, Vec<PathBuf>)> {
    let mut abs = Vec::new();
    for p in ps {
        abs.push(clean_absolute(p)?);
    }
    abs.sort();
    abs.dedup();
    let exists = abs.iter().any(|p| std::fs::symlink_metadata(p).is_ok());
    if !exists && (required || !abs.is_empty()) {
        return Err(Error::InvalidArgument(format!(
            "no source path exists: {}",
            abs.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let recorded = abs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    Ok((recorded, abs))
}

fn virtual_root(roots: &[PathBuf]) -> VirtualDir {
    let mut vroot = VirtualDir::default();
    for r in roots {
        vroot.insert(r);
    }
    vroot
}

/// Runs a backup as a writer session of the prune protocol; loads the index
/// itself (its dedup view depends on the session).
pub fn backup(
    repo: &mut Repository,
    source: Source,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let start = Instant::now();
    let started_at = Utc::now();
    // A writer announces itself before it reads the index (prune protocol,
    // rule 1), and leaves condemned packs out of its dedup view (rule 2).
    let session = match opts.dry_run {
        true => None,
        false => Some(Session::start(repo, SessionKind::Backup)?),
    };
    match &session {
        Some(s) => {
            repo.load_index_excluding(s.condemned())?;
            repo.adopt_unindexed_packs(&s.gc().all_condemned())?;
        }
        None => repo.load_index()?,
    }
    let host = opts.host.clone().unwrap_or_else(hostname);
    let streamed = matches!(source, Source::Stdin { .. } | Source::Command { .. });
    let (mut paths, roots) = match &source {
        Source::Paths(ps) => source_paths(ps, true)?,
        Source::Databases { paths, .. } => source_paths(paths, false)?,
        Source::Stdin { name } | Source::Command { name, .. } => {
            validate_stdin_name(name)?;
            (vec![format!("/{name}")], Vec::new())
        }
        Source::WalFiles { archive, .. } => (
            vec![format!("pg-wal:{}", archive.system_identifier)],
            Vec::new(),
        ),
    };
    if let Source::Databases { databases, .. } = &source {
        if roots.iter().any(|r| r.as_os_str() == "/") {
            return Err(Error::InvalidArgument(
                "back up / and databases in separate snapshots (the dumps' folder would shadow /databases)"
                    .into(),
            ));
        }
        paths.extend(databases.iter().map(|d| d.location.display()));
        paths.sort();
    }
    // Stdin and commands have no metadata to compare: always read, never skip.
    let (parent, parent_tree) = match (&source, opts.parent) {
        (_, Some(p)) => (Some(p), Some(repo.load_snapshot(&p)?.tree)),
        (Source::Paths(_) | Source::Databases { .. }, None) if !opts.force && !roots.is_empty() => {
            match find_parent(repo, &host, &paths)? {
                Some((id, tree)) => (Some(id), Some(tree)),
                None => (None, None),
            }
        }
        _ => (None, None),
    };
    let repo_ref: &Repository = repo;
    let arch = Archiver {
        repo: repo_ref,
        saver: BlobSaver::new(repo_ref, opts.dry_run)?,
        excludes: Excludes::with(&opts.excludes, &opts.selectors)?,
        one_file_system: opts.one_file_system,
        force: opts.force,
        counters: Counters::default(),
        errors: Mutex::new(Vec::new()),
        progress,
        session: session.as_ref(),
        read_ahead: Prefetcher::new(),
    };
    let mut databases = Vec::new();
    let root = match &source {
        // Backing up "/" itself: its entries are the root tree's.
        Source::Paths(_) if roots.iter().any(|r| r.as_os_str() == "/") => {
            let dev = std::fs::symlink_metadata("/")
                .map_err(|e| Error::io("/", e))?
                .dev();
            arch.archive_dir(Path::new("/"), parent_tree, dev, 0)?
                .ok_or_else(|| Error::io("/", std::io::Error::other("unreadable")))?
        }
        Source::Paths(_) => arch.archive_virtual(&virtual_root(&roots), parent_tree, Vec::new())?,
        Source::Databases {
            databases: sources, ..
        } => {
            let vroot = virtual_root(&roots);
            if vroot.children.contains_key(OsStr::new(DATABASES_DIR)) {
                return Err(Error::InvalidArgument(format!(
                    "/{DATABASES_DIR} is where a snapshot keeps its database dumps: back it up in a separate snapshot"
                )));
            }
            let (dumps, records) = arch.archive_databases(sources)?;
            databases = records;
            arch.archive_virtual(&vroot, parent_tree, vec![dumps])?
        }
        Source::Stdin { name } => arch.archive_stream(name, std::io::stdin())?,
        Source::Command { name, argv } => arch.archive_command(name, argv)?,
        Source::WalFiles { files, .. } => {
            let dir = arch.archive_named_files(WAL_DIR, files)?;
            save_tree(&arch.saver, &mut Tree { nodes: vec![dir] })?.0
        }
    };
    arch.check_session()?;
    let Archiver {
        saver,
        counters,
        errors,
        ..
    } = arch;
    progress.finishing();
    let stats = saver.finish()?;
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (uid, gid) = current_ids();
    let summary = SnapshotSummary {
        files_new: c(&counters.files_new),
        files_changed: c(&counters.files_changed),
        files_unmodified: c(&counters.files_unmodified),
        dirs_new: c(&counters.dirs_new),
        dirs_changed: c(&counters.dirs_changed),
        dirs_unmodified: c(&counters.dirs_unmodified),
        data_blobs: stats.data_blobs,
        tree_blobs: stats.tree_blobs,
        data_added: stats.bytes_added,
        data_added_packed: stats.bytes_packed,
        total_files_processed: c(&counters.files_new)
            + c(&counters.files_changed)
            + c(&counters.files_unmodified),
        total_bytes_processed: c(&counters.bytes_processed),
        backup_start: started_at,
        backup_end: Utc::now(),
    };
    let snapshot = Snapshot {
        time: opts.time.unwrap_or(started_at),
        tree: root,
        paths,
        hostname: host,
        username: std::env::var("USER").unwrap_or_default(),
        uid,
        gid,
        tags: opts
            .tags
            .iter()
            .flat_map(|t| t.split(','))
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        excludes: opts.excludes.clone(),
        parent,
        program_version: format!("cairn {}", env!("CARGO_PKG_VERSION")),
        summary: Some(summary),
        session: session.as_ref().map(|s| s.id().to_string()),
        original: None,
        databases,
        wal: match &source {
            Source::WalFiles { archive, .. } => Some(archive.clone()),
            _ => None,
        },
    };
    let snapshot_id = match session {
        None => None,
        Some(session) => Some(session.commit_snapshot(repo, &snapshot)?),
    };
    let bytes_read = c(&counters.bytes_read);
    Ok(BackupOutcome {
        snapshot_id,
        snapshot,
        parent,
        errors: errors.into_inner().unwrap(),
        bytes_read,
        duration_secs: start.elapsed().as_secs_f64(),
        empty_input: streamed && bytes_read == 0,
    })
}

impl<'a> Archiver<'a> {
    /// Stores one stream as file `name` (possibly `dir/file`) and returns the root tree.
    fn archive_stream<R: Read + Send + 'static>(&self, name: &str, reader: R) -> Result<BlobId> {
        let (content, size) = match self.save_stream(reader, None) {
            Err(Error::Io { source, .. }) => return Err(Error::io("<stdin>", source)),
            other => other?,
        };
        let mut comps: Vec<&str> = name.split('/').collect();
        let file_name = comps.pop().unwrap_or(name);
        self.count_stream(size);
        let mut node = stream_file_node(file_name, content, size);
        // Wrap in the named directories, innermost first.
        for dir in comps.iter().rev() {
            let id = save_tree(&self.saver, &mut Tree { nodes: vec![node] })?.0;
            node = synthetic_dir_node(dir, id);
        }
        Ok(save_tree(&self.saver, &mut Tree { nodes: vec![node] })?.0)
    }

    fn count_stream(&self, size: u64) {
        inc(&self.counters.files_new);
        self.counters
            .bytes_processed
            .fetch_add(size, Ordering::Relaxed);
    }

    /// Takes each source's dumps one after the other (one transaction open
    /// at a time) into the `databases/` folder; returns its node and the
    /// dumps' records. A dump whose tool fails, or that ends early, fails
    /// the backup: nothing is saved.
    fn archive_databases(&self, sources: &[DatabaseSource]) -> Result<(Node, Vec<DatabaseRecord>)> {
        let mut files: Vec<(Vec<String>, Node)> = Vec::new();
        let mut records = Vec::new();
        for source in sources {
            for start in crate::database::dumps(source)? {
                self.check_session()?;
                let mut dump = start()?;
                let path = dump.path();
                let shown = format!("/{DATABASES_DIR}/{}", path.join("/"));
                if files.iter().any(|(p, _)| *p == path) {
                    return Err(Error::InvalidArgument(format!(
                        "two database sources would both be saved as {shown}: back them up in separate snapshots"
                    )));
                }
                let (content, size) = match self.save_stream(dump.take_reader(), None) {
                    Ok(saved) => saved,
                    // The tool's own failure says more than the broken pipe.
                    Err(e) => return Err(dump.finish().err().unwrap_or(e)),
                };
                let mut record = dump.finish()?;
                record.path = shown;
                self.count_stream(size);
                self.progress.file_done(Path::new(&record.path), size);
                let name = path.last().cloned().unwrap_or_default();
                files.push((path, stream_file_node(&name, content, size)));
                records.push(record);
            }
        }
        let node = self.save_synthetic_dir(DATABASES_DIR, files)?;
        Ok((node, records))
    }

    /// Saves local files under new names in one folder (WAL segments from
    /// the spool), each with its own mtime.
    fn archive_named_files(&self, dir: &str, files: &[(String, PathBuf)]) -> Result<Node> {
        let mut entries = Vec::new();
        for (name, path) in files {
            self.check_session()?;
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let meta = file.metadata().map_err(|e| Error::io(path, e))?;
            let (content, size) = self.save_stream(file, Some(meta.len()))?;
            self.count_stream(size);
            let mut node = stream_file_node(name, content, size);
            node.mode = 0o600;
            node.mtime_ns = unix_nanos(meta.mtime(), meta.mtime_nsec());
            entries.push((vec![name.clone()], node));
        }
        self.save_synthetic_dir(dir, entries)
    }

    /// Saves a folder of stream files given by their paths below it.
    fn save_synthetic_dir(&self, name: &str, entries: Vec<(Vec<String>, Node)>) -> Result<Node> {
        let mut nodes = Vec::new();
        let mut subdirs: BTreeMap<String, Vec<(Vec<String>, Node)>> = BTreeMap::new();
        for (mut path, node) in entries {
            if path.len() <= 1 {
                nodes.push(node);
            } else {
                let first = path.remove(0);
                subdirs.entry(first).or_default().push((path, node));
            }
        }
        for (dir, sub) in subdirs {
            nodes.push(self.save_synthetic_dir(&dir, sub)?);
        }
        let id = save_tree(&self.saver, &mut Tree { nodes })?.0;
        Ok(synthetic_dir_node(name, id))
    }

    fn archive_command(&self, name: &str, argv: &[String]) -> Result<BlobId> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| Error::InvalidArgument("no command given after --".into()))?;
        let mut cmd = std::process::Command::new(prog);
        remove_secret_env(&mut cmd);
        let mut child = cmd
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::CommandFailed(format!("cannot run '{prog}': {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let result = self.archive_stream(name, stdout);
        let status = child
            .wait()
            .map_err(|e| Error::CommandFailed(format!("waiting for '{prog}': {e}")))?;
        if !status.success() {
            return Err(Error::CommandFailed(format!(
                "'{prog}' failed ({status}); no snapshot saved"
            )));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poorly_compressing_streams_drop_to_level_1() {
        use crate::repo::saver::Saved;
        let blob = |stored: Option<usize>| {
            (
                Saved {
                    id: BlobId([0; 32]),
                    stored,
                },
                1 << 20,
            )
        };
        assert_eq!(
            next_level(3, &[blob(Some(600_000)), blob(Some(500_000))]),
            1,
            "about 2:1"
        );
        assert_eq!(
            next_level(3, &[blob(Some(100_000)), blob(Some(300_000))]),
            3,
            "5:1 keeps level 3"
        );
        assert_eq!(
            next_level(3, &[blob(None), blob(None)]),
            3,
            "deduplicated blobs say nothing"
        );
        assert_eq!(
            next_level(0, &[blob(Some(1 << 20))]),
            0,
            "never raised, never below 0"
        );
    }

    #[test]
    fn virtual_root_merges_shared_prefixes() {
        let mut v = VirtualDir::default();
        v.insert(Path::new("/home/ann/notes"));
        v.insert(Path::new("/home/ann/projects"));
        v.insert(Path::new("/etc"));
        let mut sources = v.sources();
        sources.sort();
        assert_eq!(
            sources,
            [
                PathBuf::from("/etc"),
                PathBuf::from("/home/ann/notes"),
                PathBuf::from("/home/ann/projects")
            ]
        );
        assert_eq!(v.children.len(), 2);
    }
}

//! `mount`: the repository's snapshots as a read-only FUSE file system.
//!
//! ```text
//! MOUNTPOINT/snapshots/<time>/...       every snapshot by its local time (and `latest`)
//! MOUNTPOINT/hosts/<host>/<time>/...    by host
//! MOUNTPOINT/tags/<tag>/<time>/...      by tag
//! MOUNTPOINT/ids/<short id>/...         by ID
//! ```
//!
//! Folders of a snapshot are loaded when first looked at; file reads fetch
//! only the blobs a read touches, through the repository's blob reader,
//! and keep the most recent ones in a small cache, because the kernel reads
//! in 128 KiB requests and a chunk is about 1 MiB: a sequential read would
//! otherwise decrypt each chunk eight times. The top folders are rebuilt
//! when looked at more than `refresh` after the last time, so new snapshots
//! show without a remount.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry,
    ReplyOpen, Request,
};

use crate::error::{Error, Result};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeType};
use crate::repo::{IndexedRepository, SnapshotFilter};

/// How long the kernel may keep what it was told (a snapshot never changes;
/// the top folders do, and are short-lived on purpose).
const TTL_SNAPSHOT: Duration = Duration::from_secs(3600);
const TTL_TOP: Duration = Duration::from_secs(1);

/// Plaintext bytes of recently read blobs kept for the next reads.
const CACHE_BYTES: usize = 64 << 20;

/// Opening a file at most this large fetches, in one batched read, the
/// blobs of the small files that follow it in its folder (up to
/// [`PREFETCH_BYTES`]): `tar`, `grep -r` and `cp -r` open a folder's files
/// one after another, and one request for each small file's blob would
/// leave the pack reads serial.
const SMALL_FILE: u64 = 1 << 20;
const PREFETCH_BYTES: u64 = 16 << 20;

const ROOT: u64 = 1;
const TOP: [&str; 4] = ["snapshots", "hosts", "tags", "ids"];

#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Only snapshots this filter accepts.
    pub filter: SnapshotFilter,
    /// Look for new snapshots at most this often.
    pub refresh: Duration,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            filter: SnapshotFilter::default(),
            refresh: Duration::from_secs(5),
        }
    }
}

enum Kind {
    /// A folder cairn makes up (the top ones, a host, a tag).
    Virtual(BTreeMap<OsString, u64>),
    /// `latest`.
    Link(OsString),
    /// A snapshot's folder (`root`: the inode of its snapshot's top
    /// folder); its entries once loaded.
    Tree {
        tree: BlobId,
        root: u64,
        children: Option<BTreeMap<OsString, u64>>,
    },
    /// A file, link or special file of a snapshot.
    Leaf(Node),
}

struct Inode {
    kind: Kind,
    attr: FileAttr,
    /// The folder it was found in (the first one, for a hard link).
    parent: u64,
}

/// Recently read blobs, least recently used out first.
#[derive(Default)]
struct BlobCache {
    blobs: HashMap<BlobId, Arc<Vec<u8>>>,
    order: VecDeque<BlobId>,
    bytes: usize,
}

impl BlobCache {
    fn get(&mut self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        let b = self.blobs.get(id)?.clone();
        if let Some(i) = self.order.iter().position(|x| x == id) {
            self.order.remove(i);
        }
        self.order.push_back(*id);
        Some(b)
    }

    fn put(&mut self, id: BlobId, data: Arc<Vec<u8>>) {
        self.bytes += data.len();
        self.blobs.insert(id, data);
        self.order.push_back(id);
        while self.bytes > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.blobs.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }
}

/// The file system.
pub struct SnapshotFs {
    repo: IndexedRepository,
    opts: MountOptions,
    inodes: Vec<Inode>,
    /// The root folder inode of each snapshot seen.
    roots: HashMap<SnapshotId, u64>,
    /// Host and tag folders by name, kept across refreshes.
    groups: HashMap<(usize, String), u64>,
    /// Hard links within a snapshot share an inode: (root, device, inode).
    links: HashMap<(u64, u64, u64), u64>,
    cache: BlobCache,
    refreshed: Option<Instant>,
    uid: u32,
    gid: u32,
    mounted_at: SystemTime,
}

/// A node's time as the `SystemTime` fuser turns into the kernel's
/// (seconds, nanoseconds). Before 1970 fuser sends minus the whole seconds
/// before the epoch and the nanoseconds as they are, so a time of
/// `s + n/1e9` (s negative, 0 ≤ n < 1e9) must be given as `-s` seconds and
/// `n` nanoseconds before the epoch, not as its true distance.
fn time_of_ns(ns: i64) -> SystemTime {
    let (s, n) = (
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    );
    match s >= 0 {
        true => UNIX_EPOCH + Duration::new(s as u64, n),
        false => UNIX_EPOCH - Duration::new(s.unsigned_abs(), n),
    }
}

fn file_type(k: NodeType) -> FileType {
    match k {
        NodeType::File => FileType::RegularFile,
        NodeType::Dir => FileType::Directory,
        NodeType::Symlink => FileType::Symlink,
        NodeType::Dev => FileType::BlockDevice,
        NodeType::Chardev => FileType::CharDevice,
        NodeType::Fifo => FileType::NamedPipe,
        NodeType::Socket => FileType::Socket,
    }
}

/// A snapshot's folder name: its local time, as restic names them.
fn snapshot_name(s: &Snapshot) -> String {
    s.time
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

impl SnapshotFs {
    pub fn new(repo: IndexedRepository, opts: MountOptions) -> Result<SnapshotFs> {
        let mut fs = SnapshotFs {
            repo,
            opts,
            inodes: Vec::new(),
            roots: HashMap::new(),
            groups: HashMap::new(),
            links: HashMap::new(),
            cache: BlobCache::default(),
            refreshed: None,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            mounted_at: SystemTime::now(),
        };
        let root = fs.alloc_virtual();
        debug_assert_eq!(root, ROOT);
        let top: BTreeMap<OsString, u64> = TOP
            .iter()
            .map(|n| (OsString::from(n), fs.alloc_virtual()))
            .collect();
        fs.inodes[0].kind = Kind::Virtual(top);
        fs.refresh()?;
        Ok(fs)
    }

    fn alloc(&mut self, kind: Kind, mut attr: FileAttr) -> u64 {
        let ino = self.inodes.len() as u64 + 1;
        attr.ino = ino;
        self.inodes.push(Inode {
            kind,
            attr,
            parent: ROOT,
        });
        ino
    }

    fn dir_attr(&self, time: SystemTime, perm: u16) -> FileAttr {
        FileAttr {
            ino: 0,
            size: 0,
            blocks: 0,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: FileType::Directory,
            perm,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn alloc_virtual(&mut self) -> u64 {
        let attr = self.dir_attr(self.mounted_at, 0o555);
        self.alloc(Kind::Virtual(BTreeMap::new()), attr)
    }

    fn node_attr(&self, n: &Node) -> FileAttr {
        let size = match n.kind {
            NodeType::Symlink => n.link_target().map(|t| t.len() as u64).unwrap_or(0),
            _ => n.size,
        };
        FileAttr {
            ino: 0,
            size,
            blocks: size.div_ceil(512),
            atime: time_of_ns(n.mtime_ns),
            mtime: time_of_ns(n.mtime_ns),
            ctime: time_of_ns(n.ctime_ns),
            crtime: time_of_ns(n.mtime_ns),
            kind: file_type(n.kind),
            perm: (n.mode & 0o7777) as u16,
            nlink: n.links.max(1) as u32,
            uid: n.uid,
            gid: n.gid,
            rdev: n.rdev as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The top folder's inode.
    fn top(&self, name: &str) -> u64 {
        let Kind::Virtual(m) = &self.inodes[0].kind else {
            unreachable!("the root is virtual")
        };
        m[OsStr::new(name)]
    }

    fn set_children(&mut self, ino: u64, children: BTreeMap<OsString, u64>) {
        self.inodes[ino as usize - 1].kind = Kind::Virtual(children);
    }

    /// Rebuilds the top folders from the snapshots now in the repository,
    /// keeping the inodes of what was there (a shell inside a snapshot stays
    /// valid). A new snapshot may use blobs the loaded index lacks: the
    /// index is reloaded then.
    fn refresh(&mut self) -> Result<()> {
        let mut snaps: Vec<(SnapshotId, Snapshot)> = self
            .repo
            .list_snapshots()?
            .into_iter()
            .filter(|(_, s)| self.opts.filter.matches(s))
            .collect();
        snaps.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        if self.refreshed.is_some() && snaps.iter().any(|(id, _)| !self.roots.contains_key(id)) {
            self.repo.load_index()?;
        }
        let mut by_time = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        let mut hosts: BTreeMap<String, BTreeMap<OsString, u64>> = BTreeMap::new();
        let mut tags: BTreeMap<String, BTreeMap<OsString, u64>> = BTreeMap::new();
        let mut latest = None;
        for (id, s) in &snaps {
            let root = match self.roots.get(id) {
                Some(&r) => r,
                None => {
                    let t = time_of_ns(s.time.timestamp_nanos_opt().unwrap_or(0));
                    let attr = self.dir_attr(t, 0o755);
                    let r = self.alloc(
                        Kind::Tree {
                            tree: s.tree,
                            root: 0,
                            children: None,
                        },
                        attr,
                    );
                    if let Kind::Tree { root, .. } = &mut self.inodes[r as usize - 1].kind {
                        *root = r;
                    }
                    self.roots.insert(*id, r);
                    r
                }
            };
            let name = unique(&by_time, snapshot_name(s));
            by_time.insert(OsString::from(&name), root);
            by_id.insert(OsString::from(id.short()), root);
            let h = hosts.entry(s.hostname.clone()).or_default();
            h.insert(OsString::from(unique(h, snapshot_name(s))), root);
            for tag in &s.tags {
                let t = tags.entry(tag.clone()).or_default();
                t.insert(OsString::from(unique(t, snapshot_name(s))), root);
            }
            latest = Some(name);
        }
        if let Some(name) = latest {
            let attr = FileAttr {
                kind: FileType::Symlink,
                perm: 0o777,
                size: name.len() as u64,
                nlink: 1,
                ..self.dir_attr(self.mounted_at, 0o777)
            };
            let link = self.alloc(Kind::Link(OsString::from(name)), attr);
            by_time.insert(OsString::from("latest"), link);
        }
        let top_snapshots = self.top("snapshots");
        self.set_children(top_snapshots, by_time);
        let top_ids = self.top("ids");
        self.set_children(top_ids, by_id);
        for (which, groups) in [(2usize, hosts), (3, tags)] {
            let mut folder = BTreeMap::new();
            for (name, children) in groups {
                let ino = match self.groups.get(&(which, name.clone())) {
                    Some(&i) => i,
                    None => {
                        let i = self.alloc_virtual();
                        self.groups.insert((which, name.clone()), i);
                        i
                    }
                };
                self.set_children(ino, children);
                folder.insert(OsString::from(name), ino);
            }
            let top = self.top(TOP[which - 1]);
            self.set_children(top, folder);
        }
        self.refreshed = Some(Instant::now());
        Ok(())
    }

    /// Refreshes when a top folder is looked at and the last refresh is old.
    fn maybe_refresh(&mut self, ino: u64) {
        let is_top = ino == ROOT
            || TOP.iter().any(|t| self.top(t) == ino)
            || self.groups.values().any(|&g| g == ino);
        let stale = self
            .refreshed
            .is_none_or(|t| t.elapsed() >= self.opts.refresh);
        if is_top && stale {
            // A failed refresh keeps the last listing; the next look retries.
            let _ = self.refresh();
        }
    }

    fn inode(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get((ino as usize).checked_sub(1)?)
    }

    /// The entries of a folder, loading a snapshot folder's tree once.
    fn children(&mut self, ino: u64) -> std::result::Result<BTreeMap<OsString, u64>, i32> {
        let (tree, root) = match &self.inode(ino).ok_or(libc::ENOENT)?.kind {
            Kind::Virtual(m) => return Ok(m.clone()),
            Kind::Tree {
                children: Some(m), ..
            } => return Ok(m.clone()),
            Kind::Tree { tree, root, .. } => (*tree, *root),
            _ => return Err(libc::ENOTDIR),
        };
        let nodes = self.repo.load_tree(&tree).map_err(|_| libc::EIO)?.nodes;
        let mut map = BTreeMap::new();
        for n in nodes {
            let name = n.os_name();
            let child = self.node_inode(n, root);
            if self.inodes[child as usize - 1].parent == ROOT {
                self.inodes[child as usize - 1].parent = ino;
            }
            map.insert(name, child);
        }
        if let Kind::Tree { children, .. } = &mut self.inodes[ino as usize - 1].kind {
            *children = Some(map.clone());
        }
        Ok(map)
    }

    fn node_inode(&mut self, n: Node, root: u64) -> u64 {
        let attr = self.node_attr(&n);
        if n.kind == NodeType::Dir {
            let tree = n.subtree.unwrap_or_default();
            return self.alloc(
                Kind::Tree {
                    tree,
                    root,
                    children: None,
                },
                attr,
            );
        }
        // Hard links within a snapshot share an inode (an inode number is
        // unique within one device of one snapshot).
        if n.links > 1 && n.inode != 0 {
            let key = (root, n.device, n.inode);
            if let Some(&ino) = self.links.get(&key) {
                return ino;
            }
            let ino = self.alloc(Kind::Leaf(n), attr);
            self.links.insert(key, ino);
            return ino;
        }
        self.alloc(Kind::Leaf(n), attr)
    }

    fn ttl(&self, ino: u64) -> Duration {
        match self.inode(ino).map(|i| &i.kind) {
            Some(Kind::Virtual(_)) | Some(Kind::Link(_)) => TTL_TOP,
            _ => TTL_SNAPSHOT,
        }
    }

    /// Fetches the blobs of `ino` and of the small files after it in its
    /// folder (name order, as readdir lists them) into the cache, with the
    /// repository's batched reader (runs of nearby blobs, read in parallel).
    fn prefetch_siblings(&mut self, ino: u64) {
        let Some(me) = self.inode(ino) else { return };
        let small = |k: &Kind| match k {
            Kind::Leaf(n) if n.kind == NodeType::File && n.size <= SMALL_FILE => {
                Some(n.content.clone())
            }
            _ => None,
        };
        let Some(first) = small(&me.kind) else { return };
        if first
            .first()
            .is_none_or(|c| self.cache.blobs.contains_key(&c.id))
        {
            return;
        }
        let siblings = match &self.inodes[me.parent as usize - 1].kind {
            Kind::Tree {
                children: Some(m), ..
            } => m.values().copied().skip_while(|&c| c != ino).collect(),
            _ => vec![ino],
        };
        let mut wanted = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut bytes = 0u64;
        for c in siblings {
            let Some(content) = small(&self.inodes[c as usize - 1].kind) else {
                continue;
            };
            for r in content {
                if !self.cache.blobs.contains_key(&r.id) && seen.insert(r.id) {
                    bytes += r.size as u64;
                    wanted.push(crate::repo::blobs::WantedBlob {
                        id: r.id,
                        raw_len: Some(r.size),
                        tag: (),
                    });
                }
            }
            if bytes >= PREFETCH_BYTES {
                break;
            }
        }
        let got = std::sync::Mutex::new(Vec::new());
        // A blob that fails here is read (and its error reported) by the read.
        let _ = self.repo.read_blobs(wanted, |w, plain| {
            if let Ok(p) = plain {
                got.lock().unwrap().push((w.id, p));
            }
            Ok(())
        });
        for (id, p) in got.into_inner().unwrap() {
            self.cache.put(id, Arc::new(p));
        }
    }

    /// `len` bytes of a file from `offset`, through the blob cache.
    fn read_at(&mut self, ino: u64, offset: u64, len: usize) -> std::result::Result<Vec<u8>, i32> {
        let content = match &self.inode(ino).ok_or(libc::ENOENT)?.kind {
            Kind::Leaf(n) if n.kind == NodeType::File => n.content.clone(),
            Kind::Leaf(_) => return Err(libc::EINVAL),
            _ => return Err(libc::EISDIR),
        };
        let end = offset.saturating_add(len as u64);
        let mut out = Vec::with_capacity(len);
        let mut pos = 0u64;
        for c in &content {
            let (from, to) = (pos, pos + c.size as u64);
            pos = to;
            if to <= offset {
                continue;
            }
            if from >= end {
                break;
            }
            let data = match self.cache.get(&c.id) {
                Some(d) => d,
                None => {
                    let d = Arc::new(
                        self.repo
                            .read_blob(&c.id, Some(c.size as usize))
                            .map_err(|_| libc::EIO)?,
                    );
                    self.cache.put(c.id, d.clone());
                    d
                }
            };
            let a = offset.saturating_sub(from) as usize;
            let b = (end.min(to) - from) as usize;
            out.extend_from_slice(&data[a.min(data.len())..b.min(data.len())]);
        }
        Ok(out)
    }
}

/// `name`, or `name-1`, `name-2`... when a folder has it already.
fn unique(taken: &BTreeMap<OsString, u64>, name: String) -> String {
    if !taken.contains_key(OsStr::new(&name)) {
        return name;
    }
    (1..)
        .map(|i| format!("{name}-{i}"))
        .find(|n| !taken.contains_key(OsStr::new(n)))
        .expect("some suffix is free")
}

impl Filesystem for SnapshotFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        self.maybe_refresh(parent);
        match self.children(parent) {
            Ok(m) => match m.get(name) {
                Some(&ino) => {
                    let attr = self.inodes[ino as usize - 1].attr;
                    reply.entry(&self.ttl(ino), &attr, 0)
                }
                None => reply.error(libc::ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        self.maybe_refresh(ino);
        match self.inode(ino) {
            Some(i) => reply.attr(&self.ttl(ino), &i.attr),
            None => reply.error(libc::ENOENT),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.inode(ino).map(|i| &i.kind) {
            Some(Kind::Link(t)) => reply.data(t.as_bytes()),
            Some(Kind::Leaf(n)) => match n.link_target() {
                Some(t) => reply.data(t.as_bytes()),
                None => reply.error(libc::EINVAL),
            },
            Some(_) => reply.error(libc::EINVAL),
            None => reply.error(libc::ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(libc::EROFS);
        }
        match self.inode(ino).map(|i| &i.kind) {
            // A snapshot never changes: the kernel may keep what it read.
            Some(Kind::Leaf(_)) => {
                self.prefetch_siblings(ino);
                reply.opened(0, fuser::consts::FOPEN_KEEP_CACHE)
            }
            Some(_) => reply.error(libc::EISDIR),
            None => reply.error(libc::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        match self.read_at(ino, offset.max(0) as u64, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        self.maybe_refresh(ino);
        let children = match self.children(ino) {
            Ok(m) => m,
            Err(e) => return reply.error(e),
        };
        let dots = [
            (ino, FileType::Directory, OsString::from(".")),
            (ROOT, FileType::Directory, OsString::from("..")),
        ];
        let entries = dots.into_iter().chain(
            children
                .into_iter()
                .map(|(name, c)| (c, self.inodes[c as usize - 1].attr.kind, name)),
        );
        for (i, (child, kind, name)) in entries.enumerate().skip(offset.max(0) as usize) {
            if reply.add(child, i as i64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok()
    }
}

/// A mounted file system; unmounted when dropped.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    mountpoint: std::path::PathBuf,
}

impl Mounted {
    /// Whether it was unmounted from outside (`fusermount -u`).
    pub fn is_unmounted(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }
}

/// Whether `/proc/mounts` lists a mount at `at`.
fn is_mounted(at: &Path) -> bool {
    let at = at.canonicalize().unwrap_or_else(|_| at.to_path_buf());
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .any(|m| Path::new(&m.replace("\\040", " ")) == at)
}

impl Drop for Mounted {
    /// Unmounts. A file still open in the mount makes a plain unmount fail
    /// (busy): the mount is then detached (lazily unmounted), so the folder
    /// is free again and the file system goes once the last file closes.
    fn drop(&mut self) {
        drop(self.session.take());
        if !is_mounted(&self.mountpoint) {
            return;
        }
        if let Ok(c) = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()) {
            // SAFETY: a valid NUL-terminated path; umount2 reads it only.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                return;
            }
        }
        for tool in ["fusermount3", "fusermount"] {
            let done = std::process::Command::new(tool)
                .args(["-u", "-z", "--"])
                .arg(&self.mountpoint)
                .status()
                .is_ok_and(|s| s.success());
            if done {
                return;
            }
        }
    }
}

/// Mounts the snapshots read-only at `mountpoint` (an existing, empty
/// folder) and serves them in a background thread.
pub fn mount(repo: IndexedRepository, mountpoint: &Path, opts: MountOptions) -> Result<Mounted> {
    if !mountpoint.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "mount point {} is not a folder",
            mountpoint.display()
        )));
    }
    let fs = SnapshotFs::new(repo, opts)?;
    let options = [
        MountOption::RO,
        MountOption::FSName("cairn".into()),
        MountOption::Subtype("cairn".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    let session = fuser::spawn_mount2(fs, mountpoint, &options).map_err(|e| {
        Error::CommandFailed(format!(
            "cannot mount at {}: {e} (is FUSE available: /dev/fuse and fusermount3 or fusermount?)",
            mountpoint.display()
        ))
    })?;
    Ok(Mounted {
        session: Some(session),
        mountpoint: mountpoint
            .canonicalize()
            .unwrap_or_else(|_| mountpoint.to_path_buf()),
    })
}

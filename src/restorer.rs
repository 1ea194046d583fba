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
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::tree::{ContentRef, Node, NodeType};

const BLOCK: usize = 4096;

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
pub fn walk_tree(repo: &Repository, root: &BlobId, base: &Path, out: &mut dyn FnMut(Item) -> Result<bool>) -> Result<()> {
    let tree = repo.load_tree(root)?;
    for node in tree.nodes {
        let path = base.join(node.os_name());
        let sub = node.subtree.filter(|_| node.kind == NodeType::Dir);
        let descend = out(Item { path: path.clone(), node })?;
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
        let pat = if p.contains('/') { p.trim_end_matches('/').to_string() } else { format!("**/{p}") };
        b.add(Glob::new(&pat).map_err(|e| Error::InvalidArgument(format!("bad pattern '{p}': {e}")))?);
    }
    b.build().map_err(|e| Error::InvalidArgument(e.to_string()))
}

impl Filter {
    fn new(o: &RestoreOptions) -> Result<Filter> {
        Ok(Filter { includes: globset(&o.includes)?, excludes: globset(&o.excludes)?, has_includes: !o.includes.is_empty() })
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

struct Restorer<'a> {
    repo: &'a Repository,
    target: PathBuf,
    opts: &'a RestoreOptions,
    restored: AtomicU64,
    skipped: AtomicU64,
    bytes: AtomicU64,
    verified: AtomicU64,
    errors: Mutex<Vec<(PathBuf, String)>>,
    is_root: bool,
}

/// Restores the snapshot tree `root` into `target`.
pub fn restore(repo: &Repository, root: &BlobId, target: &Path, opts: &RestoreOptions) -> Result<RestoreOutcome> {
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
        restored: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        verified: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        is_root: unsafe { libc::geteuid() } == 0,
    };
    let dirs = items.iter().filter(|i| i.node.kind == NodeType::Dir).count() as u64;
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
    let keep_paths: Vec<PathBuf> =
        items.iter().zip(&selected).filter(|(_, s)| **s).map(|(i, _)| i.path.clone()).collect();
    let keep: std::collections::HashSet<&Path> = keep_paths.iter().flat_map(|p| p.ancestors()).collect();
    items.into_iter().zip(selected).filter(|(i, s)| *s || keep.contains(i.path.as_path())).map(|(i, _)| i).collect()
}

fn tmp_name(dest: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    name.push(format!(".cairn-tmp-{:08x}", rand::random::<u32>()));
    dest.with_file_name(name)
}

fn set_times(path: &Path, mtime_ns: i64, follow: bool) -> std::io::Result<()> {
    let ts = libc::timespec { tv_sec: mtime_ns.div_euclid(1_000_000_000) as _, tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _ };
    let times = [ts, ts];
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn lchown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

impl<'a> Restorer<'a> {
    fn dest(&self, item: &Item) -> PathBuf {
        self.target.join(item.path.strip_prefix("/").unwrap_or(&item.path))
    }

    fn fail(&self, path: &Path, why: impl std::fmt::Display) {
        self.errors.lock().unwrap().push((path.to_path_buf(), why.to_string()));
    }

    fn run(&self, items: &[Item]) -> Result<()> {
        let dry = self.opts.dry_run;
        // 1. Directories, parents first (walk order), owner-writable for now.
        for it in items.iter().filter(|i| i.node.kind == NodeType::Dir) {
            let d = self.dest(it);
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
        files.par_iter().for_each(|it| {
            let d = self.dest(it);
            if let Err(e) = self.restore_file(it, &d) {
                self.fail(&d, e);
            }
        });
        // 3. Hard links, symlinks and special files.
        for (it, first) in links {
            let d = self.dest(it);
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
        for it in items.iter().filter(|i| !matches!(i.node.kind, NodeType::File | NodeType::Dir)) {
            let d = self.dest(it);
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
            files.par_iter().for_each(|it| {
                let d = self.dest(it);
                match verify_file(self.repo, &it.node, &d) {
                    Ok(true) => {
                        self.verified.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => self.fail(&d, "verification failed: restored content differs from the snapshot"),
                    Err(e) => self.fail(&d, format!("verification failed: {e}")),
                }
            });
        }
        Ok(())
    }

    fn restore_file(&self, it: &Item, dest: &Path) -> Result<()> {
        if let Ok(meta) = std::fs::symlink_metadata(dest) {
            let skip = match self.opts.overwrite {
                Overwrite::Never => true,
                Overwrite::IfChanged => meta.is_file() && verify_file(self.repo, &it.node, dest).unwrap_or(false),
                Overwrite::Always => false,
            };
            if skip {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        if self.opts.dry_run {
            self.restored.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(it.node.size, Ordering::Relaxed);
            return Ok(());
        }
        let tmp = tmp_name(dest);
        let result = self.write_content(&it.node, &tmp).and_then(|_| {
            self.apply_metadata(&it.node, &tmp).map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        self.restored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write_content(&self, node: &Node, tmp: &Path) -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| Error::io(tmp, e))?;
        let mut pos: u64 = 0;
        for c in &node.content {
            let data = self.repo.read_blob(&c.id, Some(c.size as usize))?;
            write_sparse(&mut f, pos, &data).map_err(|e| Error::io(tmp, e))?;
            pos += data.len() as u64;
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        // Trailing holes: extend to the full length without writing.
        f.set_len(pos).map_err(|e| Error::io(tmp, e))?;
        Ok(())
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
                let c = std::ffi::CString::new(dest.as_os_str().as_bytes()).map_err(|e| io(std::io::Error::other(e)))?;
                let r = unsafe { libc::mknod(c.as_ptr(), kind | (n.mode & 0o7777) as libc::mode_t, n.rdev as libc::dev_t) };
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

/// Writes `data` at `pos`, seeking over all-zero blocks so they stay holes.
fn write_sparse(f: &mut File, pos: u64, data: &[u8]) -> std::io::Result<()> {
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
        f.seek(SeekFrom::Start(pos + start as u64))?;
        f.write_all(&data[start..i])?;
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
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
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
        current = node.subtree.filter(|_| node.kind == NodeType::Dir).ok_or_else(|| Error::PathNotInSnapshot(path.to_string()))?;
    }
    unreachable!("loop returns on its last component")
}

/// Writes a file node's content to `out`, blob by blob.
pub fn dump_file(repo: &Repository, node: &Node, out: &mut dyn Write) -> Result<u64> {
    let mut n = 0;
    for c in &node.content {
        let data = repo.read_blob(&c.id, Some(c.size as usize))?;
        out.write_all(&data).map_err(|e| Error::io("<stdout>", e))?;
        n += data.len() as u64;
    }
    out.flush().map_err(|e| Error::io("<stdout>", e))?;
    Ok(n)
}

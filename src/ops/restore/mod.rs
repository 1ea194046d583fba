//! Restore: recreate a snapshot's tree below a target directory.
//!
//! Files are written in parallel, each to a temporary name beside its final
//! place and renamed into place when complete, so a crash never leaves a
//! half-written file under the real name. All-zero 4 KiB blocks are skipped
//! (seeked over), so sparse files come back sparse. Directory modes and times
//! are applied last, deepest first, so read-only directories can be filled.
//!
//! Nothing is ever written outside the target: every entry is reached through
//! a handle on the target directory and no symlink below it is followed
//! (`beneath`). A symlink in the snapshot is restored as a symlink; one in
//! the target where the snapshot has a directory is replaced by a directory,
//! or under `--overwrite never` kept, with an error for everything below it.
//! `--overwrite` holds for every kind of entry: `never` keeps whatever exists,
//! `if-changed` replaces only what differs (file content, symlink target, the
//! inode a hard link shares, a special file's type and device number).

mod beneath;
mod files;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use globset::{Glob, GlobSet, GlobSetBuilder};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Stat, Timespec, Timestamps, Uid};

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::tree::{Node, NodeType};
use crate::repo::{IndexedRepository, Repository};

use crate::repo::tree::{walk_tree, Item};
use beneath::Beneath;
pub use files::verify_file;

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
    /// Afterwards, remove what the target holds in the snapshot's folders
    /// that the snapshot does not (restic's `--delete`). Not with include or
    /// exclude patterns, and not after a restore with errors.
    pub delete: bool,
}

#[derive(Debug, Default)]
pub struct RestoreOutcome {
    pub files_restored: u64,
    pub files_skipped: u64,
    pub dirs: u64,
    pub bytes_written: u64,
    pub files_verified: u64,
    pub errors: Vec<(PathBuf, String)>,
    /// What `delete` removed (or, in a dry run, would remove), as target paths.
    pub deleted: Vec<PathBuf>,
}

struct Filter {
    includes: GlobSet,
    excludes: GlobSet,
    has_includes: bool,
}

/// Checks include/exclude patterns as restore reads them, before any work.
pub fn check_patterns(patterns: &[String]) -> Result<()> {
    globset(patterns).map(|_| ())
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
    /// `n` bytes of file contents were written (for a progress bar).
    fn bytes_written(&self, _n: u64) {}
}

pub struct NoRestoreProgress;
impl RestoreProgress for NoRestoreProgress {}

struct Restorer<'a> {
    repo: &'a Repository,
    target: PathBuf,
    /// The target, once it exists (a dry run into a missing target has none).
    fs: Option<Beneath>,
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
    repo: &IndexedRepository,
    root: &BlobId,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreOutcome> {
    restore_with_progress(repo, root, target, opts, &NoRestoreProgress)
}

/// [`restore`], reporting each entry's fate to `progress`.
pub fn restore_with_progress(
    repo: &IndexedRepository,
    root: &BlobId,
    target: &Path,
    opts: &RestoreOptions,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    let filter = Filter::new(opts)?;
    if !opts.dry_run {
        std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    }
    let fs = match Beneath::open_target(target) {
        Ok(b) => Some(b),
        Err(e) if opts.dry_run && e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(target, e)),
    };
    let r = Restorer {
        repo,
        target: target.to_path_buf(),
        fs,
        opts,
        progress,
        restored: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        verified: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        is_root: rustix::process::geteuid().is_root(),
    };
    // Without include patterns every walked directory is restored, so the
    // walk is restored a batch at a time as it goes: memory stays bounded
    // however many files the snapshot holds. With includes, a directory is
    // kept only if something below it is selected, known once the walk ends.
    let batch = if opts.includes.is_empty() {
        RESTORE_BATCH
    } else {
        usize::MAX
    };
    let mut state = RunState::default();
    let mut items: Vec<Item> = Vec::new();
    // Selected directories, and the ancestors an included entry needs.
    let mut included_dirs: Vec<bool> = Vec::new();
    let mut stack: Vec<(PathBuf, bool)> = Vec::new();
    // With `delete`: each snapshot folder's names (the root's too).
    let mut names: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
    if opts.delete {
        names.insert(PathBuf::from("/"), HashSet::new());
    }
    walk_tree(repo, root, Path::new("/"), &mut |item| {
        if rel(&item).as_os_str().len() > MAX_REL_PATH {
            // Deeper entries would be longer still: one error for the
            // first, and the walk goes no further (paths of a tree 100,000
            // levels deep would make it quadratic).
            r.fail(&r.target.join(rel(&item)), too_long(&item));
            return Ok(false);
        }
        if opts.delete {
            let parent = item.path.parent().unwrap_or(Path::new("/")).to_path_buf();
            names.entry(parent).or_default().insert(item.node.os_name());
            if item.node.kind == NodeType::Dir {
                names.entry(item.path.clone()).or_default();
            }
        }
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
        if items.len() >= batch {
            r.run_batch(&std::mem::take(&mut items), &mut state);
            included_dirs.clear();
        }
        Ok(descend)
    })?;
    let items = prune_unneeded_dirs(items, included_dirs);
    r.run_batch(&items, &mut state);
    drop(items);
    let mut deleted = Vec::new();
    if opts.delete && r.errors.lock().unwrap().is_empty() {
        let mut dirs: Vec<_> = names.into_iter().collect();
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        for (dir, keep) in dirs {
            if let Err(e) = r.delete_extra(&dir, &keep, &mut deleted) {
                r.fail(&r.target.join(dir.strip_prefix("/").unwrap_or(&dir)), e);
            }
        }
    }
    // Folder times are set last: the deletions above would change them.
    r.finish(&state);
    Ok(RestoreOutcome {
        files_restored: r.restored.load(Ordering::Relaxed),
        files_skipped: r.skipped.load(Ordering::Relaxed),
        dirs: state.dirs,
        bytes_written: r.bytes.load(Ordering::Relaxed),
        files_verified: r.verified.load(Ordering::Relaxed),
        errors: r.errors.into_inner().unwrap(),
        deleted,
    })
}

/// Entries restored at a time (when the whole walk is restored).
const RESTORE_BATCH: usize = 8192;

/// The longest path below the target that the kernel takes in one call
/// (PATH_MAX, 4,096 bytes with the terminating NUL). Restore reaches every
/// entry from the target's handle by its relative path.
const MAX_REL_PATH: usize = 4095;

fn too_long(item: &Item) -> String {
    let what = if item.node.kind == NodeType::Dir {
        "nor anything below it"
    } else {
        "the file"
    };
    format!(
        "not restored ({what}): its path below the target is {} bytes, longer than the system's limit of {MAX_REL_PATH}",
        rel(item).as_os_str().len()
    )
}

/// What outlives a batch: directories whose metadata is set at the end,
/// blocked directories, the first file of each hard-link group.
#[derive(Default)]
struct RunState {
    blocked: HashSet<PathBuf>,
    /// Entries not restored below each blocked directory: one error line
    /// for the directory says how many, not one line each.
    below_blocked: HashMap<PathBuf, Below>,
    made_dirs: Vec<Item>,
    first_of: HashMap<(u64, u64), Item>,
    dirs: u64,
}

/// What was left out below a blocked directory: how many entries, and the
/// first few of their paths (relative to it), for the one error line.
#[derive(Default)]
struct Below {
    count: u64,
    first: Vec<String>,
}

impl Below {
    fn add(&mut self, blocked: &Path, path: &Path) {
        self.count += 1;
        if self.first.len() < 5 {
            let rel = path.strip_prefix(blocked).unwrap_or(path);
            self.first.push(rel.display().to_string());
        }
    }

    fn describe(&self) -> String {
        let more = if self.count > self.first.len() as u64 {
            ", ..."
        } else {
            ""
        };
        format!(
            " ({} below it not restored: {}{more})",
            if self.count == 1 {
                "1 entry".to_string()
            } else {
                format!("{} entries", self.count)
            },
            self.first.join(", ")
        )
    }
}

/// Drops directories that were only walked through but hold nothing selected.
fn prune_unneeded_dirs(items: Vec<Item>, selected: Vec<bool>) -> Vec<Item> {
    if selected.iter().all(|s| *s) {
        return items;
    }
    // Each selected entry marks its ancestors, stopping at the first one
    // already marked: every ancestor is hashed about once, not once per
    // entry below it (quadratic in the depth).
    let needed: Vec<bool> = {
        let mut keep: HashSet<&Path> = HashSet::new();
        for (item, _) in items.iter().zip(&selected).filter(|(_, s)| **s) {
            for a in item.path.ancestors() {
                if !keep.insert(a) {
                    break;
                }
            }
        }
        items
            .iter()
            .map(|i| keep.contains(i.path.as_path()))
            .collect()
    };
    items
        .into_iter()
        .zip(needed)
        .filter(|(_, n)| *n)
        .map(|(i, _)| i)
        .collect()
}

/// Longest part of the real name kept in a temporary name.
const TMP_NAME_KEEP: usize = 200;

/// A temporary name for `name`, in the same directory: `.<name>.cairn-tmp-<16 hex>`,
/// the name cut to its first 200 bytes so the result always fits in 255 bytes.
fn tmp_name(name: &OsStr) -> OsString {
    let name = name.as_bytes();
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(&name[..name.len().min(TMP_NAME_KEEP)]);
    tmp.extend_from_slice(format!(".cairn-tmp-{:016x}", rand::random::<u64>()).as_bytes());
    OsStr::from_bytes(&tmp).to_os_string()
}

/// An entry's path relative to the target.
fn rel(item: &Item) -> &Path {
    item.path.strip_prefix("/").unwrap_or(&item.path)
}

fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn same_inode(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

fn times(mtime_ns: i64) -> Timestamps {
    let ts = Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000) as _,
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

fn mode(n: &Node) -> Mode {
    Mode::from_bits_truncate(n.mode & 0o7777)
}

/// The first directory in `path`'s ancestors (not `path` itself) found in `set`.
fn blocked_ancestor<'s>(set: &'s HashSet<PathBuf>, path: &Path) -> Option<&'s PathBuf> {
    // Hashing every ancestor of every entry is quadratic in the depth: skip
    // it in the usual case, where nothing is blocked.
    if set.is_empty() {
        return None;
    }
    path.ancestors().skip(1).find_map(|a| set.get(a))
}

/// `chmod` of `name` in `dir` that never follows a symlink: fchmodat has no
/// no-follow mode on this kernel, and another user with write access to the
/// target could swap the special file just made for a link to a file of
/// theirs choosing. The file is opened with `O_PATH | O_NOFOLLOW` (no device
/// is opened for real), checked not to be a link, and changed through its
/// `/proc/self/fd` entry, which names that very inode.
fn chmod_nofollow(dir: impl AsFd, name: &OsStr, mode: Mode) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = rustix::fs::openat(
        &dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
        return Err(io::Error::other(
            "was replaced by a symlink while restoring; its mode was not set",
        ));
    }
    Ok(rustix::fs::chmod(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        mode,
    )?)
}

/// Removes `name` in `dir`: a folder with everything in it, anything else
/// (a symlink included: it is removed, never followed) by unlink.
fn remove_all_at(dir: impl AsFd, name: &OsStr) -> io::Result<()> {
    let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory {
        return Ok(rustix::fs::unlinkat(&dir, name, AtFlags::empty())?);
    }
    // A stack of open folders rather than recursion: a deep tree must not
    // overflow the stack.
    let top = rustix::fs::openat(
        &dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut stack: Vec<(OwnedFd, Option<OsString>)> = vec![(top, None)];
    while let Some((fd, _)) = stack.last() {
        let mut child_dir = None;
        for entry in rustix::fs::Dir::read_from(fd)? {
            let entry = entry?;
            let n = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
            if n == "." || n == ".." {
                continue;
            }
            let st = rustix::fs::statat(fd, &n, AtFlags::SYMLINK_NOFOLLOW)?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                child_dir = Some(n);
                break;
            }
            rustix::fs::unlinkat(fd, &n, AtFlags::empty())?;
        }
        match child_dir {
            Some(n) => {
                let sub = rustix::fs::openat(
                    fd,
                    &n,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                stack.push((sub, Some(n)));
            }
            None => {
                // Empty now: remove it from its parent.
                let (_, own) = stack.pop().expect("just looked");
                match (own, stack.last()) {
                    (Some(n), Some((parent, _))) => {
                        rustix::fs::unlinkat(parent, &n, AtFlags::REMOVEDIR)?
                    }
                    _ => rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR)?,
                }
            }
        }
    }
    Ok(())
}

/// What phase 1 did with a directory.
enum DirDone {
    /// Made (or replaced a non-directory): gets its metadata.
    Made,
    /// Was there already: gets its metadata unless `--overwrite never`.
    Existed,
}

impl<'a> Restorer<'a> {
    /// Removes the entries of the target folder `dir` (a snapshot path) that
    /// are not in `keep`, each whole, without following any link; in a dry
    /// run only lists them.
    fn delete_extra(
        &self,
        dir: &Path,
        keep: &HashSet<OsString>,
        deleted: &mut Vec<PathBuf>,
    ) -> io::Result<()> {
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        let Some(fs) = self.fs.as_ref() else {
            return Ok(()); // a dry run that never opened the target
        };
        let fd = match fs.open(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) {
            Ok(fd) => fd,
            // Not there (nothing restored there) or not a folder: nothing to clean.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let mut extra = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
            if name == "." || name == ".." || keep.contains(&name) {
                continue;
            }
            extra.push(name);
        }
        extra.sort();
        for name in extra {
            deleted.push(self.target.join(rel).join(&name));
            if !self.opts.dry_run {
                remove_all_at(&fd, &name)?;
            }
        }
        Ok(())
    }

    fn dest(&self, item: &Item) -> PathBuf {
        self.target.join(rel(item))
    }

    fn fail(&self, path: &Path, why: impl std::fmt::Display) {
        self.errors
            .lock()
            .unwrap()
            .push((path.to_path_buf(), why.to_string()));
    }

    /// The target's handle; present whenever something is written.
    fn fs(&self) -> io::Result<&Beneath> {
        self.fs
            .as_ref()
            .ok_or_else(|| io::Error::other("the restore target was not opened"))
    }

    /// What is at `rel` in the target now (None: nothing, or not reachable).
    fn existing(&self, rel: &Path) -> io::Result<Option<Stat>> {
        match &self.fs {
            Some(b) => b.stat(rel),
            None => Ok(None),
        }
    }

    /// Whether an existing entry is kept, per `--overwrite`; `unchanged` is
    /// asked only under `if-changed`.
    fn keep(&self, existing: Option<&Stat>, unchanged: impl FnOnce(&Stat) -> bool) -> bool {
        match (existing, self.opts.overwrite) {
            (None, _) | (Some(_), Overwrite::Always) => false,
            (Some(_), Overwrite::Never) => true,
            (Some(st), Overwrite::IfChanged) => unchanged(st),
        }
    }

    fn action(keep: bool) -> EntryAction {
        if keep {
            EntryAction::Keep
        } else {
            EntryAction::Write
        }
    }

    /// Restores one batch of the walk (parents before children): its
    /// directories, then its files in parallel, then links and special files.
    fn run_batch(&self, items: &[Item], state: &mut RunState) {
        // 1. Directories, parents first (walk order), owner-writable for now.
        //    A directory that could not be made, or a non-directory kept in
        //    its place, blocks everything below it.
        for it in items.iter().filter(|i| i.node.kind == NodeType::Dir) {
            state.dirs += 1;
            let d = self.dest(it);
            if let Some(b) = blocked_ancestor(&state.blocked, &it.path) {
                state
                    .below_blocked
                    .entry(b.clone())
                    .or_default()
                    .add(b, &it.path);
                continue;
            }
            match self.restore_dir(it) {
                Ok(Some(done)) => {
                    self.progress.entry(&it.path, &it.node, EntryAction::Write);
                    let existed_kept =
                        matches!(done, DirDone::Existed) && self.opts.overwrite == Overwrite::Never;
                    if !existed_kept {
                        state.made_dirs.push(Item {
                            path: it.path.clone(),
                            node: it.node.clone(),
                        });
                    }
                }
                Ok(None) => {
                    self.progress.entry(&it.path, &it.node, EntryAction::Keep);
                    self.fail(
                        &d,
                        "exists and is not a directory; kept (--overwrite never), \
                         nothing below it is restored",
                    );
                    state.blocked.insert(it.path.clone());
                }
                Err(e) => {
                    self.fail(&d, e);
                    state.blocked.insert(it.path.clone());
                }
            }
        }
        // Entries below a blocked directory: counted, nothing written.
        let mut reachable: Vec<&Item> = Vec::new();
        for i in items.iter().filter(|i| i.node.kind != NodeType::Dir) {
            match blocked_ancestor(&state.blocked, &i.path) {
                Some(b) => state
                    .below_blocked
                    .entry(b.clone())
                    .or_default()
                    .add(b, &i.path),
                None => reachable.push(i),
            }
        }
        // 2. Files in parallel; the first of each hard-link group is written,
        //    the rest linked to it afterwards (the first may be in an earlier batch).
        let mut links: Vec<(&Item, Item)> = Vec::new();
        let mut files: Vec<&Item> = Vec::new();
        for it in reachable.iter().filter(|i| i.node.kind == NodeType::File) {
            let n = &it.node;
            if n.links > 1 && n.inode != 0 {
                if let Some(first) = state.first_of.get(&(n.device, n.inode)) {
                    links.push((it, first.clone()));
                    continue;
                }
                state.first_of.insert((n.device, n.inode), (*it).clone());
            }
            files.push(it);
        }
        self.restore_files(&files);
        // 3. Hard links, symlinks and special files.
        for (it, first) in links {
            self.restore_link(it, &first);
        }
        for it in reachable
            .iter()
            .filter(|i| !matches!(i.node.kind, NodeType::File | NodeType::Dir))
        {
            self.restore_special(it);
        }
        if self.opts.verify && !self.opts.dry_run {
            self.verify_files(&files);
        }
    }

    /// 4. Directory metadata, deepest first, once every batch is in; the
    /// error of each blocked directory says how much below it was left out.
    fn finish(&self, state: &RunState) {
        let mut errors = self.errors.lock().unwrap();
        for (dir, below) in &state.below_blocked {
            let d = self.target.join(dir.strip_prefix("/").unwrap_or(dir));
            if let Some(e) = errors.iter_mut().find(|(p, _)| *p == d) {
                e.1.push_str(&below.describe());
            }
        }
        drop(errors);
        if !self.opts.dry_run {
            for it in state.made_dirs.iter().rev() {
                if let Err(e) = self.dir_metadata(it) {
                    self.fail(&self.dest(it), e);
                }
            }
        }
    }

    /// Makes the directory of `it` unless one is there. Ok(None): a
    /// non-directory is there and is kept (`--overwrite never`).
    fn restore_dir(&self, it: &Item) -> io::Result<Option<DirDone>> {
        let rel = rel(it);
        let st = self.existing(rel)?;
        if st
            .as_ref()
            .is_some_and(|s| file_type(s) == FileType::Directory)
        {
            return Ok(Some(DirDone::Existed));
        }
        // A symlink, file or special file where the directory goes: a
        // different kind of entry, so `if-changed` replaces it too.
        if self.keep(st.as_ref(), |_| false) {
            return Ok(None);
        }
        if !self.opts.dry_run {
            let (dir, name) = self.fs()?.parent(rel)?;
            if st.is_some() {
                rustix::fs::unlinkat(&dir, name, AtFlags::empty())?;
            }
            rustix::fs::mkdirat(&dir, name, Mode::RWXU)?;
        }
        Ok(Some(DirDone::Made))
    }

    fn dir_metadata(&self, it: &Item) -> io::Result<()> {
        let fd = self
            .fs()?
            .open(rel(it), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        self.metadata_fd(&fd, &it.node)
    }

    /// Owner (as root), mode and mtime of an open file or directory.
    fn metadata_fd(&self, fd: impl AsFd, n: &Node) -> io::Result<()> {
        if self.is_root {
            rustix::fs::fchown(
                &fd,
                Some(Uid::from_raw_unchecked(n.uid)),
                Some(Gid::from_raw_unchecked(n.gid)),
            )?;
        }
        rustix::fs::fchmod(&fd, mode(n))?;
        rustix::fs::futimens(&fd, &times(n.mtime_ns))?;
        Ok(())
    }

    /// Owner (as root), mode (not for symlinks) and mtime of `name` in `dir`,
    /// never following a symlink there.
    fn metadata_at(&self, dir: impl AsFd, name: &OsStr, n: &Node) -> io::Result<()> {
        if self.is_root {
            rustix::fs::chownat(
                &dir,
                name,
                Some(Uid::from_raw_unchecked(n.uid)),
                Some(Gid::from_raw_unchecked(n.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if n.kind != NodeType::Symlink {
            chmod_nofollow(&dir, name, mode(n))?;
        }
        rustix::fs::utimensat(&dir, name, &times(n.mtime_ns), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// A hard link to the group's first file, unless `--overwrite` keeps what is there.
    fn restore_link(&self, it: &Item, first: &Item) {
        let d = self.dest(it);
        let st = match self.existing(rel(it)) {
            Ok(st) => st,
            Err(e) => return self.fail(&d, e),
        };
        let keep = self.keep(
            st.as_ref(),
            |s| matches!(self.existing(rel(first)), Ok(Some(f)) if same_inode(&f, s)),
        );
        self.progress.entry(&it.path, &it.node, Self::action(keep));
        if keep {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !self.opts.dry_run {
            if let Err(e) = self.link(rel(first), rel(it), st.as_ref()) {
                return self.fail(&d, e);
            }
        }
        self.restored.fetch_add(1, Ordering::Relaxed);
    }

    fn link(&self, first: &Path, rel: &Path, existing: Option<&Stat>) -> io::Result<()> {
        let fs = self.fs()?;
        let (fdir, fname) = fs.parent(first)?;
        let (dir, name) = fs.parent(rel)?;
        let Some(existing) = existing else {
            return Ok(rustix::fs::linkat(
                &fdir,
                fname,
                &dir,
                name,
                AtFlags::empty(),
            )?);
        };
        // Already a link of that inode. (Renaming one link of an inode over
        // another is a no-op that would leave the temporary name behind.)
        let f = rustix::fs::statat(&fdir, fname, AtFlags::SYMLINK_NOFOLLOW)?;
        if same_inode(&f, existing) {
            return Ok(());
        }
        let tmp = tmp_name(name);
        rustix::fs::linkat(&fdir, fname, &dir, &tmp, AtFlags::empty())?;
        replace(&dir, &tmp, name)
    }

    /// A symlink, FIFO or device node, unless `--overwrite` keeps what is there.
    fn restore_special(&self, it: &Item) {
        let n = &it.node;
        let d = self.dest(it);
        if !matches!(
            n.kind,
            NodeType::Symlink | NodeType::Fifo | NodeType::Dev | NodeType::Chardev
        ) {
            // Sockets are recreated by their servers, as restic skips them.
            self.progress.entry(&it.path, n, EntryAction::Write);
            return;
        }
        let st = match self.existing(rel(it)) {
            Ok(st) => st,
            Err(e) => return self.fail(&d, e),
        };
        let keep = self.keep(st.as_ref(), |s| self.special_unchanged(it, s));
        self.progress.entry(&it.path, n, Self::action(keep));
        if keep {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !self.opts.dry_run {
            if let Err(e) = self.make_special(it, st.is_some()) {
                return self.fail(&d, e);
            }
        }
        self.restored.fetch_add(1, Ordering::Relaxed);
    }

    /// Same kind, and the same link target or device number.
    fn special_unchanged(&self, it: &Item, st: &Stat) -> bool {
        let n = &it.node;
        match (n.kind, file_type(st)) {
            (NodeType::Symlink, FileType::Symlink) => {
                let Ok(fs) = self.fs() else { return false };
                let Ok((dir, name)) = fs.parent(rel(it)) else {
                    return false;
                };
                match rustix::fs::readlinkat(&dir, name, Vec::new()) {
                    Ok(t) => Some(t.as_bytes()) == n.link_target().as_deref().map(OsStr::as_bytes),
                    Err(_) => false,
                }
            }
            (NodeType::Fifo, FileType::Fifo) => true,
            (NodeType::Dev, FileType::BlockDevice)
            | (NodeType::Chardev, FileType::CharacterDevice) => st.st_rdev == n.rdev,
            _ => false,
        }
    }

    /// Makes the entry (under a temporary name when something is to be
    /// replaced), applies its metadata and renames it into place.
    fn make_special(&self, it: &Item, replacing: bool) -> io::Result<()> {
        let n = &it.node;
        let (dir, name) = self.fs()?.parent(rel(it))?;
        let made = if replacing {
            tmp_name(name)
        } else {
            name.to_os_string()
        };
        match n.kind {
            NodeType::Symlink => {
                let target = n.link_target().unwrap_or_default();
                rustix::fs::symlinkat(target.as_os_str(), &dir, &made)?;
            }
            _ => {
                let kind = match n.kind {
                    NodeType::Fifo => FileType::Fifo,
                    NodeType::Dev => FileType::BlockDevice,
                    _ => FileType::CharacterDevice,
                };
                rustix::fs::mknodat(&dir, &made, kind, mode(n), n.rdev)?;
            }
        }
        if !replacing {
            return self.metadata_at(&dir, &made, n);
        }
        match self.metadata_at(&dir, &made, n) {
            Ok(()) => replace(&dir, &made, name),
            Err(e) => {
                let _ = rustix::fs::unlinkat(&dir, &made, AtFlags::empty());
                Err(e)
            }
        }
    }
}

/// Renames `tmp` over `name` in `dir`; removes `tmp` if that fails.
fn replace(dir: impl AsFd, tmp: &OsStr, name: &OsStr) -> io::Result<()> {
    rustix::fs::renameat(&dir, tmp, &dir, name).map_err(|e| {
        let _ = rustix::fs::unlinkat(&dir, tmp, AtFlags::empty());
        io::Error::from(e)
    })
}

#[cfg(test)]
mod tests {

    /// The mode of a special file is set without following a link swapped in
    /// for it.
    #[test]
    fn chmod_of_a_special_file_never_follows_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        assert!(rustix::fs::mkfifoat(&d, "fifo", Mode::from_bits_truncate(0o600)).is_ok());
        chmod_nofollow(&d, OsStr::new("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        let m = std::fs::symlink_metadata(dir.path().join("fifo")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640);

        let victim = dir.path().join("victim");
        std::fs::write(&victim, "x").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("link")).unwrap();
        assert!(chmod_nofollow(&d, OsStr::new("link"), Mode::from_bits_truncate(0o666)).is_err());
        let m = std::fs::metadata(&victim).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }

    use super::*;
    use crate::format::crypto::KdfParams;
    use crate::ops::backup::{backup, BackupOptions, NoProgress};
    use crate::repo::InitOptions;
    use crate::source::Source;
    use crate::storage::Backend;
    use std::os::unix::fs::symlink;

    /// The whole restore with the component-by-component resolver (as on a
    /// kernel without openat2): symlinks in the target are not followed, and a
    /// second restore over the first replaces every kind of entry.
    #[test]
    fn restore_without_openat2_stays_below_the_target() {
        beneath::force_fallback();
        let tmp = tempfile::tempdir().unwrap();
        let (src, t, outside) = (
            tmp.path().join("src"),
            tmp.path().join("t"),
            tmp.path().join("outside"),
        );
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(src.join("d/e/f"), b"file").unwrap();
        std::fs::hard_link(src.join("d/e/f"), src.join("d/h")).unwrap();
        symlink("e/f", src.join("d/l")).unwrap();
        let opts = InitOptions {
            kdf: Some(KdfParams {
                m_cost_kib: 1024,
                t_cost: 1,
                p_cost: 1,
            }),
            ..Default::default()
        };
        let mut repo = Repository::init(Backend::memory(), b"pw", opts)
            .unwrap()
            .into_indexed()
            .unwrap();
        let out = backup(
            &mut repo,
            Source::Paths(vec![src.clone()]),
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap();
        let root = out.snapshot.tree;
        let r = t.join(src.strip_prefix("/").unwrap());
        std::fs::create_dir_all(r.join("d")).unwrap();
        symlink(&outside, r.join("d/e")).unwrap();
        for _ in 0..2 {
            let o = restore(&repo, &root, &t, &RestoreOptions::default()).unwrap();
            assert!(o.errors.is_empty(), "{:?}", o.errors);
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
            assert_eq!(std::fs::read(r.join("d/e/f")).unwrap(), b"file");
            assert_eq!(std::fs::read(r.join("d/h")).unwrap(), b"file");
            assert_eq!(std::fs::read_link(r.join("d/l")).unwrap(), Path::new("e/f"));
        }
        let never = RestoreOptions {
            overwrite: Overwrite::Never,
            ..Default::default()
        };
        std::fs::remove_dir_all(r.join("d/e")).unwrap();
        symlink(&outside, r.join("d/e")).unwrap();
        let o = restore(&repo, &root, &t, &never).unwrap();
        // The kept symlink, one error saying the file below it was left out.
        assert_eq!(o.errors.len(), 1, "{:?}", o.errors);
        assert!(
            o.errors[0].1.contains("1 entry below it not restored: f"),
            "{:?}",
            o.errors
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }
}

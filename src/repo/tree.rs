//! The tree view: walking a snapshot's tree, finding a path in it, and
//! reading a file's content (all of it in order, or a range by offset). What
//! `ls`, `diff`, `dump`, `find`, restore, drill, check and a mount share.
//!
//! Walks keep an explicit stack, never the call stack: a snapshot of a
//! directory tree 100,000 levels deep walks in constant stack space.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::{IndexedRepository, Repository};
use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::tree::{ContentRef, Node, NodeType, Tree};

/// One entry of a tree: its path inside the snapshot and its node.
#[derive(Debug, Clone)]
pub struct Item {
    /// Absolute-style path in the snapshot, e.g. `/home/ann/a.txt`.
    pub path: PathBuf,
    pub node: Node,
}

/// Walks a tree depth-first, parents before children, in each directory in
/// the tree's order. `out` says whether to descend into a directory.
pub fn walk_tree(
    repo: &IndexedRepository,
    root: &BlobId,
    base: &Path,
    out: &mut dyn FnMut(Item) -> Result<bool>,
) -> Result<()> {
    walk_loaded(repo, root, base, out)
}

/// [`walk_tree`] for a caller that loaded the index its own way (check
/// loads it tolerating damaged index objects, and reports them).
pub(crate) fn walk_loaded(
    repo: &Repository,
    root: &BlobId,
    base: &Path,
    out: &mut dyn FnMut(Item) -> Result<bool>,
) -> Result<()> {
    // One path, grown and cut back as the walk goes down and up (a path per
    // level would hold the square of the depth in memory), and per level the
    // directory's entries not yet visited and where its path ends.
    let mut dir = base.as_os_str().as_bytes().to_vec();
    let mut stack = vec![Level {
        entries: repo.load_tree(root)?.nodes.into_iter(),
        dir_len: dir.len(),
        loaded: HashMap::new(),
    }];
    while let Some(level) = stack.last_mut() {
        dir.truncate(level.dir_len);
        let Some(node) = level.entries.next() else {
            stack.pop();
            continue;
        };
        let child = join(&dir, node.os_name().as_bytes());
        let sub = node.subtree.filter(|_| node.kind == NodeType::Dir);
        let path = PathBuf::from(OsString::from_vec(child.clone()));
        if let (Some(sub), true) = (sub, out(Item { path, node })?) {
            let tree = level.take_subtree(repo, sub)?;
            dir = child;
            stack.push(Level {
                entries: tree.nodes.into_iter(),
                dir_len: dir.len(),
                loaded: HashMap::new(),
            });
        }
    }
    Ok(())
}

/// Subfolders whose trees a walk loads with one request, ahead of going
/// into them: one load per folder, each a storage round trip, was most of
/// the time of `ls` and of a check's walk. Bounds what a level holds.
const SUBTREES_AHEAD: usize = 32;

/// One folder of a walk: the entries not yet visited, where its path ends,
/// and the trees of the subfolders after the current one, loaded ahead.
struct Level {
    entries: std::vec::IntoIter<Node>,
    dir_len: usize,
    loaded: HashMap<BlobId, Tree>,
}

impl Level {
    /// The tree of subfolder `sub` (the entry just taken): loaded ahead, or
    /// loaded now together with the next subfolders' trees.
    fn take_subtree(&mut self, repo: &Repository, sub: BlobId) -> Result<Tree> {
        if let Some(t) = self.loaded.remove(&sub) {
            return Ok(t);
        }
        let mut ids = vec![sub];
        ids.extend(
            self.entries
                .as_slice()
                .iter()
                .filter(|n| n.kind == NodeType::Dir)
                .filter_map(|n| n.subtree)
                .filter(|id| *id != sub)
                .take(SUBTREES_AHEAD - 1),
        );
        let mut trees = repo.load_trees(&ids).into_iter();
        let first = trees.next().expect("one result per id")?;
        // A subfolder ahead that failed to load fails when the walk gets to
        // it, through a load of its own.
        for (id, tree) in ids[1..].iter().zip(trees) {
            if let Ok(t) = tree {
                self.loaded.insert(*id, t);
            }
        }
        Ok(first)
    }
}

/// `dir/name`, as `Path::join` spells it for a plain name.
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !p.is_empty() && !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Finds the node at `path` (e.g. `/home/ann/a.txt` or `mydb.sql`) in a tree.
pub fn find_node(repo: &IndexedRepository, root: &BlobId, path: &str) -> Result<Node> {
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

/// How far dump reads ahead of what it has written, in plaintext bytes: blobs
/// are read and decoded in parallel a window at a time, and memory stays
/// bounded however large the file. Kept below the allocator's trim threshold
/// (8 MiB, `keep_freed_buffers` in the CLI): a 16 MiB window was handed back
/// to the OS and faulted in again every window (the 978 MB dump: 1.82 s ->
/// 2.31 s); at 4 MiB it takes 1.28 s.
const DUMP_WINDOW_BYTES: u64 = 4 << 20;

/// Writes a file node's content to `out`, in order.
pub fn dump_file(repo: &IndexedRepository, node: &Node, out: &mut dyn Write) -> Result<u64> {
    let mut n = 0;
    for window in windows(&node.content, DUMP_WINDOW_BYTES) {
        for data in repo.map_content(window, Ok)? {
            out.write_all(&data).map_err(|e| Error::io("<stdout>", e))?;
            n += data.len() as u64;
        }
    }
    out.flush().map_err(|e| Error::io("<stdout>", e))?;
    Ok(n)
}

/// Up to `len` bytes of a file node's content from `offset` (fewer at the
/// end of the file, none past it): reads only the blobs the range touches.
pub fn read_file_at(
    repo: &IndexedRepository,
    node: &Node,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let end = offset.saturating_add(len as u64);
    let content = &node.content;
    let size = |i: usize| content[i].size as u64;
    // Skip the blobs that end at or before `offset`; `start` is where the
    // first touched one begins.
    let (mut first, mut start) = (0, 0u64);
    while first < content.len() && start + size(first) <= offset {
        start += size(first);
        first += 1;
    }
    // Take blobs until the range ends.
    let (mut last, mut at) = (first, start);
    while last < content.len() && at < end {
        at += size(last);
        last += 1;
    }
    let mut out = Vec::new();
    let mut pos = start;
    for data in repo.map_content(&content[first..last], Ok)? {
        let from = offset.saturating_sub(pos).min(data.len() as u64) as usize;
        let to = (end - pos).min(data.len() as u64) as usize;
        out.extend_from_slice(&data[from..to]);
        pos += data.len() as u64;
    }
    Ok(out)
}

/// Splits a file's content into windows of at most `max` plaintext bytes
/// (a window holds at least one blob).
fn windows(content: &[ContentRef], max: u64) -> Vec<&[ContentRef]> {
    let mut out = Vec::new();
    let (mut first, mut bytes) = (0, 0u64);
    for (i, c) in content.iter().enumerate() {
        if i > first && bytes + c.size as u64 > max {
            out.push(&content[first..i]);
            (first, bytes) = (i, 0);
        }
        bytes += c.size as u64;
    }
    if first < content.len() {
        out.push(&content[first..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(sizes: &[u32]) -> Vec<ContentRef> {
        sizes
            .iter()
            .map(|&size| ContentRef {
                id: BlobId([size as u8; 32]),
                size,
            })
            .collect()
    }

    #[test]
    fn windows_cover_the_content_in_order_within_the_bound() {
        let c = refs(&[5, 5, 5, 20, 1, 1]);
        let w = windows(&c, 10);
        let sizes: Vec<Vec<u32>> = w
            .iter()
            .map(|w| w.iter().map(|c| c.size).collect())
            .collect();
        assert_eq!(sizes, vec![vec![5, 5], vec![5], vec![20], vec![1, 1]]);
        assert!(windows(&[], 10).is_empty());
    }
}

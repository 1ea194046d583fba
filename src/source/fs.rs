//! The filesystem side of a source: clean absolute paths, a file's metadata
//! as a tree node, and the quick scan that gives a progress bar its totals.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::Excludes;
use crate::error::{Error, Result};
use crate::format::tree::{encode_name, Node, NodeType};

/// Makes a path absolute and lexically clean, without resolving symlinks
/// (a symlink given as a source is backed up as a symlink, as restic does).
pub fn clean_absolute(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

pub fn unix_nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// The node for an entry, without content or subtree.
pub fn node_from_metadata(name: &OsStr, meta: &Metadata) -> Node {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        NodeType::File
    } else if ft.is_dir() {
        NodeType::Dir
    } else if ft.is_symlink() {
        NodeType::Symlink
    } else if ft.is_block_device() {
        NodeType::Dev
    } else if ft.is_char_device() {
        NodeType::Chardev
    } else if ft.is_fifo() {
        NodeType::Fifo
    } else {
        NodeType::Socket
    };
    let (name, name_hex) = encode_name(name);
    Node {
        name,
        name_hex,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: String::new(),
        group: String::new(),
        mtime_ns: unix_nanos(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: unix_nanos(meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
        device: meta.dev(),
        links: if kind == NodeType::Dir {
            0
        } else {
            meta.nlink()
        },
        size: if kind == NodeType::File {
            meta.size()
        } else {
            0
        },
        content: Vec::new(),
        subtree: None,
        target: None,
        target_hex: None,
        rdev: if matches!(kind, NodeType::Dev | NodeType::Chardev) {
            meta.rdev()
        } else {
            0
        },
    }
}

/// Counts files and bytes under sources (for a progress bar's total).
pub fn scan_totals(paths: &[PathBuf], excludes: &Excludes) -> (u64, u64) {
    // A stack of paths, not recursion: a tree thousands of levels deep must
    // not overflow the thread's stack.
    let mut acc = (0, 0);
    let mut pending: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_file() {
            acc.0 += 1;
            acc.1 += meta.len();
        } else if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                pending.extend(
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|c| !excludes.is_excluded(c)),
                );
            }
        }
    }
    acc
}

/// Opens a file the walker listed, for reading its content, refusing to
/// follow a symlink put in its place (`O_NOFOLLOW`) and checking that what
/// opened is the file listed (same device and inode, still a regular file):
/// a local user who swaps in a link to a file only root may read must not
/// get that file into a backup run as root, and later into a restore of
/// their own files. `O_NONBLOCK` keeps a FIFO swapped in from hanging the
/// open.
pub fn open_listed(path: &Path, device: u64, inode: u64) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() || meta.ino() != inode || meta.dev() != device {
        return Err(std::io::Error::other(
            "replaced between listing and reading (not the file listed); not read",
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod open_listed_tests {
    use super::open_listed;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_swapped_in_symlink_or_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let listed = dir.path().join("listed");
        std::fs::write(&listed, b"mine").unwrap();
        let m = std::fs::metadata(&listed).unwrap();
        assert!(open_listed(&listed, m.dev(), m.ino()).is_ok());

        // A symlink to a secret put where the listed file was.
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        // Moved away, not deleted: its inode stays in use, as it would while
        // the attacker keeps it.
        std::fs::rename(&listed, dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&secret, &listed).unwrap();
        assert!(open_listed(&listed, m.dev(), m.ino()).is_err());

        // Another file under the listed name.
        std::fs::remove_file(&listed).unwrap();
        std::fs::write(dir.path().join("other"), b"x").unwrap();
        std::fs::rename(dir.path().join("other"), &listed).unwrap();
        let err = open_listed(&listed, m.dev(), m.ino()).unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
    }
}

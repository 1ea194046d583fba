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

/// Keep an open handle every this many bytes of path: a path given to the
/// kernel is at most this plus one name, well below PATH_MAX (4096).
const ANCHOR_BYTES: usize = 2048;

/// The chain of directories a deep walk is in, reached through handles
/// rather than full paths (a tree 100,000 levels deep has paths far beyond
/// PATH_MAX). An open handle (an anchor) is kept every `ANCHOR_BYTES` of
/// path, so few descriptors are open however deep the walk; a directory
/// between anchors is reopened from the nearest anchor above it (checked to
/// be the same device and inode). Memory: the current path and a few words
/// per level.
pub struct DirChain {
    /// The current directory's path (anything past its end is scratch).
    path: Vec<u8>,
    levels: Vec<Level>,
    /// The current directory's handle when it is not an anchor.
    open: Option<std::os::fd::OwnedFd>,
}

struct Level {
    end: usize,
    dev: u64,
    ino: u64,
    anchor: Option<std::os::fd::OwnedFd>,
    /// The nearest level at or above this one holding an anchor.
    base: usize,
}

fn open_dir_at(
    dir: impl std::os::fd::AsFd,
    name: &OsStr,
    dev: u64,
    ino: u64,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if st.st_dev != dev || st.st_ino != ino {
        return Err(std::io::Error::other(
            "replaced between listing and reading (not the folder listed); not read",
        ));
    }
    Ok(fd)
}

impl DirChain {
    /// Starts at the directory `root` (not following a symlink there).
    pub fn open(root: &Path) -> std::io::Result<DirChain> {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        let path = root.as_os_str().as_encoded_bytes().to_vec();
        Ok(DirChain {
            levels: vec![Level {
                end: path.len(),
                dev: st.st_dev,
                ino: st.st_ino,
                anchor: Some(fd),
                base: 0,
            }],
            path,
            open: None,
        })
    }

    /// Levels below the root.
    pub fn depth(&self) -> usize {
        self.levels.len() - 1
    }

    /// The current directory's path (for messages and exclude patterns).
    pub fn path(&self) -> &Path {
        let end = self.levels.last().expect("the root level").end;
        Path::new(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
            &self.path[..end],
        ))
    }

    /// The path of `name` in the current directory.
    pub fn child(&mut self, name: &OsStr) -> &Path {
        let end = self.levels.last().expect("the root level").end;
        self.path.truncate(end);
        if !self.path.ends_with(b"/") {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(name.as_encoded_bytes());
        Path::new(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
            &self.path,
        ))
    }

    /// A handle on the current directory (opened for reading).
    pub fn dir(&mut self) -> std::io::Result<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        let top = self.levels.last().expect("the root level");
        if top.anchor.is_none() && self.open.is_none() {
            let base = &self.levels[top.base];
            let rel = &self.path[base.end..top.end];
            let rel = rel.strip_prefix(b"/").unwrap_or(rel);
            let rel = <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(rel);
            let anchor = base.anchor.as_ref().expect("a base holds an anchor");
            // Reopened by its path below the anchor: it must still be the
            // folder that was listed there.
            let fd = open_dir_at(anchor, rel, top.dev, top.ino)?;
            self.open = Some(fd);
        }
        let top = self.levels.last().expect("the root level");
        Ok(match &top.anchor {
            Some(a) => a.as_fd(),
            None => self.open.as_ref().expect("just opened").as_fd(),
        })
    }

    /// Goes down into the directory `name` of the current one, checking it
    /// is the one listed (`dev`, `ino`).
    pub fn push(&mut self, name: &OsStr, dev: u64, ino: u64) -> std::io::Result<()> {
        let fd = open_dir_at(self.dir()?, name, dev, ino)?;
        self.child(name);
        let end = self.path.len();
        let at = self.levels.len();
        let base = self.levels.last().expect("the root level").base;
        let anchor = end - self.levels[base].end > ANCHOR_BYTES;
        let (anchor, base) = match anchor {
            true => {
                self.open = None;
                (Some(fd), at)
            }
            false => {
                self.open = Some(fd);
                (None, base)
            }
        };
        self.levels.push(Level {
            end,
            dev,
            ino,
            anchor,
            base,
        });
        Ok(())
    }

    /// Goes back up one level; false at the root.
    pub fn pop(&mut self) -> bool {
        if self.levels.len() <= 1 {
            return false;
        }
        self.levels.pop();
        self.open = None;
        let end = self.levels.last().expect("the root level").end;
        self.path.truncate(end);
        true
    }
}

/// The names in a directory (without `.` and `..`).
pub fn list_at(dir: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Vec<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(names)
}

/// The metadata of `name` in `dir`, not following a symlink there.
pub fn metadata_at(dir: std::os::fd::BorrowedFd<'_>, name: &OsStr) -> std::io::Result<Metadata> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    std::fs::File::from(fd).metadata()
}

/// [`open_listed`] for `name` in the directory `dir`.
pub fn open_listed_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &OsStr,
    device: u64,
    inode: u64,
) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::MetadataExt;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let f = std::fs::File::from(fd);
    let meta = f.metadata()?;
    if !meta.file_type().is_file() || meta.ino() != inode || meta.dev() != device {
        return Err(std::io::Error::other(
            "replaced between listing and reading (not the file listed); not read",
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod dir_chain_tests {
    use super::{list_at, DirChain};
    use std::ffi::OsStr;
    use std::os::unix::fs::MetadataExt;

    fn push(chain: &mut DirChain, name: &str) {
        let m = std::fs::symlink_metadata(chain.child(OsStr::new(name))).unwrap();
        chain.push(OsStr::new(name), m.dev(), m.ino()).unwrap();
    }

    fn names(chain: &mut DirChain) -> Vec<String> {
        let mut n: Vec<String> = list_at(chain.dir().unwrap())
            .unwrap()
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    /// Past an anchor (2 KiB of path) a folder that was left is reopened
    /// from the anchor by its relative path, and a folder swapped in its
    /// place is refused rather than read.
    #[test]
    fn folders_between_anchors_are_reopened_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_path_buf();
        for _ in 0..1200 {
            deep.push("d");
        }
        std::fs::create_dir_all(deep.join("a/x")).unwrap();
        std::fs::create_dir_all(deep.join("b/y")).unwrap();
        let mut chain = DirChain::open(dir.path()).unwrap();
        for _ in 0..1200 {
            push(&mut chain, "d");
        }
        assert_eq!(chain.depth(), 1200);
        assert_eq!(chain.path(), deep.as_path());
        push(&mut chain, "a");
        assert_eq!(names(&mut chain), ["x"]);
        assert!(chain.pop());
        // The parent's handle was given up for "a": reopened here.
        assert_eq!(names(&mut chain), ["a", "b"]);
        push(&mut chain, "b");
        assert_eq!(names(&mut chain), ["y"]);
        assert!(chain.pop());

        // The folder listed as "d" is swapped for another between the
        // listing and going in: going in is refused.
        let listed = std::fs::symlink_metadata(&deep).unwrap();
        assert!(chain.pop());
        std::fs::rename(&deep, dir.path().join("moved")).unwrap();
        std::fs::create_dir(&deep).unwrap();
        let err = chain
            .push(OsStr::new("d"), listed.dev(), listed.ino())
            .unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
    }
}

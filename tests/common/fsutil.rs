//! File-tree helpers: deterministic pseudo-random data, metadata setters,
//! a tree scanner and a strict tree comparison.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const MIB: u64 = 1024 * 1024;

/// xorshift64*: fast, deterministic, incompressible enough for zstd.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let v = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&v[..n]);
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorShift::new(seed).fill(&mut v);
    v
}

/// Writes `len` pseudo-random bytes (the same as `random_bytes(len, seed)`).
pub fn write_random(path: &Path, len: u64, seed: u64) {
    let mut rng = XorShift::new(seed);
    let mut f = File::create(path).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        // Whole 8-byte words per call keep the stream identical to random_bytes.
        assert!(
            n.is_multiple_of(8) || n as u64 == left,
            "write_random: buffer must be word-aligned"
        );
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

pub fn write(path: &Path, data: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Sets atime and mtime (of the link itself for symlinks).
pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let ts = libc::timespec {
        tv_sec: secs as _,
        tv_nsec: nsec as _,
    };
    let times = [ts, ts];
    let c = cpath(path);
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mkfifo(path: &Path) -> bool {
    let c = cpath(path);
    unsafe { libc::mkfifo(c.as_ptr(), 0o640) == 0 }
}

pub fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// Where `restore` puts a backed-up absolute path below a target.
pub fn restored_path(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").expect("absolute source path"))
}

/// Sum of the sizes of all files below `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                total += dir_size(&e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// Makes every directory below `root` writable so it can be deleted.
pub fn make_writable(root: &Path) {
    if let Ok(m) = fs::symlink_metadata(root) {
        if m.is_dir() {
            let _ = fs::set_permissions(root, fs::Permissions::from_mode(0o700));
            if let Ok(rd) = fs::read_dir(root) {
                for e in rd.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Other,
}

/// The metadata a backup must preserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    /// Files only.
    pub size: u64,
    /// Symlinks only.
    pub target: Option<OsString>,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub meta: Meta,
    pub ino: u64,
    pub nlink: u64,
    pub blocks: u64,
}

pub fn entry(path: &Path) -> Entry {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    let ft = m.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Other
    };
    Entry {
        meta: Meta {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec()),
            size: if kind == Kind::File { m.len() } else { 0 },
            target: if kind == Kind::Symlink {
                Some(fs::read_link(path).unwrap().into_os_string())
            } else {
                None
            },
        },
        ino: m.ino(),
        nlink: m.nlink(),
        blocks: m.blocks(),
    }
}

/// Every entry below (and including, as "") `root`, by relative path.
pub fn scan(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let full = root.join(rel);
        let e = entry(&full);
        let is_dir = e.meta.kind == Kind::Dir;
        out.insert(rel.to_path_buf(), e);
        if is_dir {
            for c in fs::read_dir(&full).unwrap().flatten() {
                walk(root, &rel.join(c.file_name()), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

/// Names (relative paths) of the regular files below `root`.
pub fn file_count(root: &Path) -> u64 {
    scan(root)
        .values()
        .filter(|e| e.meta.kind == Kind::File)
        .count() as u64
}

/// Compares two files' contents without holding both in memory.
pub fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Asserts `restored` is `source`: same entries, types, modes, owners, mtimes
/// (files, dirs and symlinks), sizes, bytes, symlink targets and hard-link groups.
pub fn assert_same_tree(source: &Path, restored: &Path) {
    let a = scan(source);
    let b = scan(restored);
    let missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    let extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "restored tree differs: missing {missing:?}, extra {extra:?}"
    );
    let mut problems = Vec::new();
    for (rel, ea) in &a {
        let eb = &b[rel];
        if ea.meta != eb.meta {
            problems.push(format!(
                "{}: source {:?}\n    restored {:?}",
                rel.display(),
                ea.meta,
                eb.meta
            ));
            continue;
        }
        if ea.meta.kind == Kind::File && !same_content(&source.join(rel), &restored.join(rel)) {
            problems.push(format!("{}: content differs", rel.display()));
        }
    }
    // Hard links: entries sharing an inode in the source share one in the restore.
    let mut groups: HashMap<u64, Vec<&PathBuf>> = HashMap::new();
    for (rel, e) in &a {
        if e.meta.kind == Kind::File && e.nlink > 1 {
            groups.entry(e.ino).or_default().push(rel);
        }
    }
    for paths in groups.values() {
        let inos: Vec<u64> = paths.iter().map(|p| b[*p].ino).collect();
        if inos.iter().any(|i| *i != inos[0]) {
            problems.push(format!("hard links {paths:?} restored as separate files"));
        }
        for p in paths {
            if b[*p].nlink != a[*p].nlink {
                problems.push(format!(
                    "{}: nlink {} restored as {}",
                    p.display(),
                    a[*p].nlink,
                    b[*p].nlink
                ));
            }
        }
    }
    // And no new hard links appeared.
    let mut seen: HashMap<u64, &PathBuf> = HashMap::new();
    for (rel, e) in &b {
        if e.meta.kind == Kind::File {
            if let Some(other) = seen.insert(e.ino, rel) {
                if a[rel].ino != a[other].ino {
                    problems.push(format!(
                        "{} and {} became hard links",
                        rel.display(),
                        other.display()
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "restored tree differs from the source:\n  {}",
        problems.join("\n  ")
    );
}

/// What `build_full_tree` made, for later assertions.
pub struct FullTree {
    pub root: PathBuf,
    pub sparse: PathBuf,
    pub sparse_len: u64,
    pub big: PathBuf,
}

/// A tree with most of what a file system can hold: nested and empty dirs,
/// an empty file, unicode and non-UTF-8 names, relative/absolute/dangling
/// symlinks, hard links, sparse files, a large pseudo-random file, odd
/// permissions, owners (as root), a FIFO and specific mtimes (one before 1970).
pub fn build_full_tree(root: &Path, big_len: u64) -> FullTree {
    let p = |rel: &str| root.join(rel);
    fs::create_dir_all(root).unwrap();
    fs::create_dir_all(p("empty_dir")).unwrap();
    write(&p("empty_file"), b"");
    write(&p("naïve café ☕.txt"), "unicode name\n".repeat(10));
    write(&p("日本語/ファイル.txt"), "nihongo");
    let bad = root.join(OsStr::from_bytes(b"bad\xff\xfename.bin"));
    write(&bad, random_bytes(3000, 1));
    fs::create_dir(root.join(OsStr::from_bytes(b"dir\xfe"))).unwrap();
    write(
        &root.join(OsStr::from_bytes(b"dir\xfe/inner.txt")),
        b"inside a non-UTF-8 dir",
    );
    write(&p("nested/a/b/c/d/e/f/g/deep.txt"), "deep\n");
    write(&p("nested/a/sibling.txt"), random_bytes(70_000, 2));
    write(&p("spaces and -dash/ x .txt"), "spaces");

    // Permissions.
    write(&p("perms/private.txt"), "secret");
    set_mode(&p("perms/private.txt"), 0o600);
    write(&p("perms/script.sh"), "#!/bin/sh\necho hi\n");
    set_mode(&p("perms/script.sh"), 0o755);
    write(&p("perms/group.txt"), "group");
    set_mode(&p("perms/group.txt"), 0o640);
    if is_root() {
        // Unreadable to anyone but root.
        write(&p("perms/none.txt"), "no permissions");
        write(&p("perms/setuid"), "setuid binary");
        set_mode(&p("perms/setuid"), 0o4755);
        write(&p("perms/owned.txt"), "owned by someone else");
        lchown(&p("perms/owned.txt"), 1234, 5678);
    }
    fs::create_dir_all(p("perms/sticky")).unwrap();
    set_mode(&p("perms/sticky"), 0o1777);
    fs::create_dir_all(p("perms/private_dir")).unwrap();
    write(&p("perms/private_dir/x"), "x");
    set_mode(&p("perms/private_dir"), 0o700);
    write(&p("perms/ro_dir/inside.txt"), "in a read-only dir");
    set_mode(&p("perms/ro_dir/inside.txt"), 0o444);

    // Links.
    fs::create_dir_all(p("links")).unwrap();
    std::os::unix::fs::symlink("../empty_file", p("links/relative")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", p("links/dangling")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/absolute/target", p("links/absolute")).unwrap();
    std::os::unix::fs::symlink("../nested", p("links/to_dir")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"target\xff"), p("links/non_utf8_target"))
        .unwrap();
    if is_root() {
        lchown(&p("links/relative"), 4321, 8765);
    }
    write(&p("hard/one"), random_bytes(5000, 3));
    fs::hard_link(p("hard/one"), p("hard/two")).unwrap();
    fs::create_dir_all(p("hard/sub")).unwrap();
    fs::hard_link(p("hard/one"), p("hard/sub/three")).unwrap();
    write(&p("hard/pair_a"), "second group");
    fs::hard_link(p("hard/pair_a"), p("hard/pair_b")).unwrap();

    // Sparse: 64 MiB with data at the start, the end, and a few bytes in the
    // middle (not block-aligned); and one that ends in a hole.
    let sparse = p("sparse.img");
    let sparse_len = 64 * MIB;
    {
        use std::io::{Seek, SeekFrom};
        let mut f = File::create(&sparse).unwrap();
        f.set_len(sparse_len).unwrap();
        f.write_all(&random_bytes(MIB as usize, 4)).unwrap();
        f.seek(SeekFrom::Start(32 * MIB + 1000)).unwrap();
        f.write_all(&[0xAB; 100]).unwrap();
        f.seek(SeekFrom::Start(sparse_len - MIB)).unwrap();
        f.write_all(&random_bytes(MIB as usize, 5)).unwrap();
        let mut g = File::create(p("sparse_tail.img")).unwrap();
        g.write_all(&random_bytes(4096, 6)).unwrap();
        g.set_len(8 * MIB).unwrap();
    }

    let big = p("big.bin");
    write_random(&big, big_len, 7);
    let _ = mkfifo(&p("fifo"));

    // Modes that block writing come last; then mtimes, children before parents.
    if is_root() {
        set_mode(&p("perms/none.txt"), 0o000);
    }
    set_mode(&p("perms/ro_dir"), 0o500);
    let all = scan(root);
    let mut i = 0i64;
    for (rel, _) in all.iter().rev() {
        i += 1;
        let full = root.join(rel);
        set_mtime(&full, 1_600_000_000 + i * 3_600, 123_456_789 + i);
    }
    set_mtime(&p("nested/a/sibling.txt"), -315_619_200, 5); // 1960-01-01
    set_mtime(&p("nested/a"), 1_000_000_000, 0);
    FullTree {
        root: root.to_path_buf(),
        sparse,
        sparse_len,
        big,
    }
}

/// Makes `root/top` the top of a chain of `depth` folders named `d` with a
/// file `leaf` at the bottom, using only short paths: the chain grows at its
/// top (the whole chain is moved one level down each step), so it may go far
/// beyond PATH_MAX.
pub fn make_deep_chain(root: &Path, top: &str, depth: usize) {
    let top = root.join(top);
    let spare = root.join(".deep-spare");
    std::fs::create_dir(&top).unwrap();
    write(&top.join("leaf"), "bottom");
    for _ in 0..depth {
        std::fs::create_dir(&spare).unwrap();
        std::fs::rename(&top, spare.join("d")).unwrap();
        std::fs::rename(&spare, &top).unwrap();
    }
}

/// Removes `root` however deep it goes, with short paths and few descriptors
/// (std's remove_dir_all holds a descriptor per level and recurses): the
/// entries of each subfolder are moved up into `root`, then the emptied
/// subfolder is removed.
pub fn remove_deep(root: &Path) {
    let mut moved = 0u64;
    loop {
        let names: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if names.is_empty() {
            break;
        }
        for name in names {
            let sub = root.join(&name);
            if !std::fs::symlink_metadata(&sub).unwrap().is_dir() {
                std::fs::remove_file(&sub).unwrap();
                continue;
            }
            make_writable_one(&sub);
            for child in std::fs::read_dir(&sub).unwrap() {
                moved += 1;
                let up = root.join(format!(".up-{moved}"));
                std::fs::rename(child.unwrap().path(), up).unwrap();
            }
            std::fs::remove_dir(&sub).unwrap();
        }
    }
    std::fs::remove_dir(root).unwrap();
}

fn make_writable_one(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).unwrap().permissions().mode();
    if mode & 0o700 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o700)).unwrap();
    }
}

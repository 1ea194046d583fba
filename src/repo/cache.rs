//! A local cache of immutable metadata (index objects, snapshots, tree
//! packs and session end records), so that commands against a bucket do not
//! download the whole index, every directory of the parent snapshot and the
//! end record of every snapshot every time.
//!
//! Every cached object but the end records is named by the SHA-256 of its
//! bytes, so an entry is checked against its name on every read (end records
//! are authenticated by their reader instead): a damaged or planted entry is
//! detected, removed and fetched again, never trusted. Entries are written to a
//! temporary name and renamed into place; files are private (0600, dirs 0700).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::format::id::storage_hash;

/// The folders whose objects are cached.
const CACHED: [&str; 2] = ["index/", "snapshots/"];

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// A cache for one repository (by its ID) below `root`.
    pub fn new(root: &Path, repo_id: &str) -> Cache {
        Cache {
            dir: root.join(repo_id),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the cache must not be used, if it must not: its folder (or the
    /// root given) exists but belongs to another user or is writable by
    /// group or others. Such a folder (a shared `--cache-dir`) lets another
    /// user swap entries for links to files of ours; entries are checked
    /// before use, but reading through a planted link is not ours to do.
    pub fn refusal(&self) -> Option<String> {
        [self.dir.parent(), Some(self.dir.as_path())]
            .into_iter()
            .flatten()
            .find_map(folder_refusal)
    }

    pub fn caches(key: &str) -> bool {
        CACHED.iter().any(|p| key.starts_with(p))
    }

    /// Tree packs are cached whole and read by range (one tree at a time).
    /// A range is not checked against the pack's name (that needs the whole
    /// pack); each blob in it is authenticated and bound to its ID, so a
    /// damaged entry fails to decode, and the reader then drops the entry
    /// ([`forget`](Self::forget)) and reads from the repository.
    pub fn caches_ranges(key: &str) -> bool {
        key.starts_with("tree/")
    }

    /// Bytes `range` of a cached object, if the cache has all of them.
    pub fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(self.path(key)).ok()?;
        let mut buf = vec![0u8; usize::try_from(range.end.checked_sub(range.start)?).ok()?];
        f.read_exact_at(&mut buf, range.start).ok()?;
        Some(buf)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// A cached copy whose content matches its name; a mismatching one is removed.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.path(key);
        let bytes = std::fs::read(&path).ok()?;
        let name = key.rsplit('/').next().unwrap_or(key);
        if hex::encode(storage_hash(&bytes)) == name {
            Some(bytes)
        } else {
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Stores a verified object; failures only cost a later download.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        write_private(&self.path(key), bytes);
    }

    /// Session `.end` records, which `list_snapshots` reads for every
    /// snapshot on every call: created once and never changed, but named by
    /// their session, not by content. So they are not checked against their
    /// name; the caller authenticates each one (the record is sealed and
    /// bound to its key) and forgets an entry that fails.
    pub fn caches_end_records(key: &str) -> bool {
        key.starts_with("sessions/") && key.ends_with(".end")
    }

    /// A cached end record, unchecked (see [`caches_end_records`](Self::caches_end_records)).
    pub fn get_end_record(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(key)).ok()
    }

    /// Drops the entry of an object that no longer exists in the repository.
    pub fn forget(&self, key: &str) {
        let _ = std::fs::remove_file(self.path(key));
    }
}

/// Why an existing folder must not hold cairn's cache or remembered keys: it
/// is not a folder (a link), belongs to another user, or is writable by
/// group or others. `None` when it is fine or does not exist.
pub fn folder_refusal(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let m = std::fs::symlink_metadata(dir).ok()?;
    if m.file_type().is_symlink() || !m.is_dir() {
        return Some(format!("cache folder {} is not a folder", dir.display()));
    }
    if m.uid() != me {
        return Some(format!(
            "cache folder {} belongs to uid {}, not to this user (uid {me})",
            dir.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Some(format!(
            "cache folder {} is writable by other users (mode {:o})",
            dir.display(),
            m.mode() & 0o7777
        ));
    }
    None
}

/// Writes a file of the cache whole or not at all (a temporary name renamed
/// into place), private to the user (0600, its folders 0700). A failure is
/// not reported: it only costs a cache miss later.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) {
    let Some(parent) = path.parent() else { return };
    if std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .is_err()
    {
        return;
    }
    let tmp = parent.join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes));
    if written.and_then(|_| std::fs::rename(&tmp, path)).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

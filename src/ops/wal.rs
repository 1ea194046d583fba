//! PostgreSQL WAL archiving: `wal-push` (PostgreSQL's `archive_command`)
//! and `wal-fetch` (its `restore_command`).
//!
//! PostgreSQL runs `archive_command` once a segment, one at a time, and may
//! recycle a segment as soon as the command exits 0. Opening a repository
//! derives its key with argon2id (deliberately slow), so a push that opened
//! the repository for every 16 MiB segment could not keep up with a busy
//! server. A push therefore first writes the segment into a local **spool**
//! (a private folder, file and folder fsynced before the push returns: the
//! spool is part of the archive until flushed), and a **flusher** moves
//! everything spooled into the repository as one snapshot (tag `pg-wal`,
//! files under `pg_wal/`), in a writer session like any backup, then drops
//! it from the spool. `--sync` flushes before returning.
//!
//! Idempotence, as PostgreSQL requires: the same name with the same content
//! (SHA-256) is a success, with other content a failure, whether the first
//! copy is still spooled, flushed (the spool's `archived` log), or in the
//! repository (checked when flushing).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::snapshot::{WAL_DIR, WAL_TAG};
use crate::format::tree::Node;
use crate::format::wal::{
    segment_header, segment_name, WalArchive, WalEntry, WalFile, DEFAULT_SEGMENT_SIZE,
};
use crate::ops::backup::{backup, BackupOptions, NoProgress};
use crate::repo::tree::{dump_file, find_node};
use crate::repo::{IndexedRepository, Repository};
use crate::source::Source;

/// The spool's log of what was flushed: `NAME SHA256` lines.
const ARCHIVED: &str = "archived";
/// The archived log is trimmed to its newest half past this size (about
/// 11,000 names).
const ARCHIVED_LOG_MAX: u64 = 1 << 20;
/// The cluster's system identifier, written by the first push.
const SYSTEM: &str = "system";
/// Held by a flusher for its whole life.
const FLUSHER_LOCK: &str = ".flusher";
/// Segments fetched ahead of PostgreSQL's asking.
const PREFETCH: &str = "prefetch";

/// A spool folder.
pub struct Spool {
    dir: PathBuf,
}

/// What a push found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Spooled,
    /// The same name with the same content was already spooled or archived.
    AlreadyThere,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn conflict(name: &str, where_: &str) -> Error {
    Error::CommandFailed(format!(
        "WAL file {name} is already archived ({where_}) with different content; refusing to replace it \
         (two clusters archiving into one repository, or a damaged file)"
    ))
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

impl Spool {
    /// Opens (creating, private to its owner) a spool folder.
    pub fn open(dir: &Path) -> Result<Spool> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join(PREFETCH))
            .map_err(|e| Error::io(dir, e))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names flushed so far, with their SHA-256.
    fn archived(&self) -> Result<BTreeMap<String, String>> {
        let path = self.dir.join(ARCHIVED);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, h)| (n.to_string(), h.to_string()))
            .collect())
    }

    /// The cluster this spool archives for, once known.
    pub fn system(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(SYSTEM))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Spools `src` as `name` (durably: file, then folder, synced).
    pub fn push(&self, src: &Path, name: &str) -> Result<Pushed> {
        let kind = WalFile::parse(name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "'{name}' is not a WAL file name (a segment, .history, .backup or .partial file)"
            ))
        })?;
        let bytes = std::fs::read(src).map_err(|e| Error::io(src, e))?;
        if let WalFile::Segment { .. } = kind {
            self.check_cluster(name, &bytes)?;
        }
        // Hashing 16 MiB is most of a push's CPU: only a name seen before
        // needs it here (the flusher hashes what it archives).
        let spooled = self.dir.join(name);
        if let Ok(existing) = std::fs::read(&spooled) {
            return match existing == bytes {
                true => Ok(Pushed::AlreadyThere),
                false => Err(conflict(name, "in the spool")),
            };
        }
        if let Some(h) = self.archived()?.get(name) {
            return match *h == sha256_hex(&bytes) {
                true => Ok(Pushed::AlreadyThere),
                false => Err(conflict(name, "in the repository")),
            };
        }
        write_durably(&spooled, &bytes)?;
        Ok(Pushed::Spooled)
    }

    /// A segment must come from the cluster the spool archives (its first
    /// page names the cluster's system identifier); the first one decides.
    fn check_cluster(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(h) = segment_header(bytes) else {
            return Err(Error::InvalidArgument(format!(
                "{name} does not start with a WAL segment header"
            )));
        };
        let id = h.system_identifier.to_string();
        match self.system() {
            Some(known) if known != id => Err(Error::CommandFailed(format!(
                "{name} belongs to the cluster with system identifier {id}, but this archive holds cluster {known}: \
                 give each cluster its own --spool and repository path"
            ))),
            Some(_) => Ok(()),
            None => {
                let path = self.dir.join(SYSTEM);
                std::fs::write(&path, format!("{id}\n")).map_err(|e| Error::io(&path, e))?;
                fsync_dir(&self.dir)
            }
        }
    }

    /// The spooled files, by name.
    pub fn pending(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let e = e.map_err(|e| Error::io(&self.dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if WalFile::parse(&name).is_some() && e.path().is_file() {
                out.push((name, e.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Whether a flusher is running (it holds the flusher lock).
    pub fn flusher_running(&self) -> bool {
        !matches!(self.lock(false), Ok(Some(_)))
    }

    /// The flusher lock: Some when taken (blocking or not).
    fn lock(&self, wait: bool) -> Result<Option<File>> {
        let path = self.dir.join(FLUSHER_LOCK);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        use rustix::fs::{flock, FlockOperation};
        let op = match wait {
            true => FlockOperation::LockExclusive,
            false => FlockOperation::NonBlockingLockExclusive,
        };
        match flock(&f, op) {
            Ok(()) => Ok(Some(f)),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(Error::io(&path, e.into())),
        }
    }

    /// Records flushed files and removes them from the spool (log first:
    /// a crash between the two leaves a spooled file the next flush finds
    /// already archived, never a lost one).
    fn mark_archived(&self, files: &[(String, PathBuf, String)]) -> Result<()> {
        let path = self.dir.join(ARCHIVED);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let lines: String = files.iter().map(|(n, _, h)| format!("{n} {h}\n")).collect();
        log.write_all(lines.as_bytes())
            .map_err(|e| Error::io(&path, e))?;
        log.sync_all().map_err(|e| Error::io(&path, e))?;
        let len = log.metadata().map(|m| m.len()).unwrap_or(0);
        drop(log);
        if len > ARCHIVED_LOG_MAX {
            self.trim_archived_log()?;
        }
        for (_, p, _) in files {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(p, e)),
                _ => {}
            }
        }
        fsync_dir(&self.dir)
    }
}

impl Spool {
    /// Moves a spooled file that conflicts with the repository to
    /// `conflicts/<name>.<sha256>`; returns where it went.
    fn set_aside(&self, name: &str, path: &Path, sha: &str) -> Result<PathBuf> {
        let dir = self.dir.join("conflicts");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        let to = dir.join(format!("{name}.{sha}"));
        std::fs::rename(path, &to).map_err(|e| Error::io(&to, e))?;
        fsync_dir(&self.dir)?;
        Ok(to)
    }

    /// Keeps the newest half of the archived log: every push reads it, and
    /// PostgreSQL only ever pushes a recent name again (after a crash); an
    /// older one is still caught when flushing, against the repository.
    fn trim_archived_log(&self) -> Result<()> {
        let path = self.dir.join(ARCHIVED);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let lines: Vec<&str> = text.lines().collect();
        let keep = lines[lines.len() / 2..].join("\n") + "\n";
        write_durably(&path, keep.as_bytes())
    }
}

/// What a flush did.
#[derive(Debug, Default, Clone)]
pub struct Flushed {
    pub snapshots: Vec<SnapshotId>,
    pub files: usize,
    pub bytes: u64,
    /// Files the repository already held with the same content.
    pub duplicates: usize,
    /// Spooled files the repository holds with other content under the same
    /// name (two clusters in one archive, or damage): moved to the spool's
    /// `conflicts/` folder for a human, not archived.
    pub conflicts: Vec<PathBuf>,
}

/// Moves everything spooled into the repository, batch after batch, until
/// the spool is empty. Holds the flusher lock (waiting for another flusher
/// to finish first).
pub fn flush(repo: Repository, spool: &Spool, host: Option<String>) -> Result<Flushed> {
    let _lock = spool.lock(true)?;
    let mut repo = repo;
    let mut out = Flushed::default();
    loop {
        let mut pending = spool.pending()?;
        if pending.is_empty() {
            return Ok(out);
        }
        // `.history` files go in batches of their own: retention keeps
        // them forever (they are tiny), and must not keep segments with them.
        let is_history = |n: &str| matches!(WalFile::parse(n), Some(WalFile::History { .. }));
        if pending.iter().any(|(n, _)| is_history(n)) {
            pending.retain(|(n, _)| is_history(n));
        }
        let mut hashed = Vec::new();
        let mut segment_size = None;
        for (name, path) in pending {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            if let Some(h) = segment_header(&bytes) {
                segment_size.get_or_insert(h.segment_size as u64);
            }
            hashed.push((name, path, sha256_hex(&bytes)));
        }
        // Already in the repository (a spool lost its log, or another host):
        // the same content is dropped from the spool, other content refused.
        let catalog = catalog(&repo)?;
        let (mut known, mut fresh): (Vec<_>, Vec<_>) = hashed
            .into_iter()
            .partition(|(name, _, _)| catalog.contains_key(name));
        if !known.is_empty() {
            let indexed = repo.into_indexed()?;
            let mut same = Vec::new();
            for (name, path, sha) in known {
                let mut bytes = Vec::new();
                dump_file(&indexed, &node_of(&indexed, &catalog[&name])?, &mut bytes)?;
                match sha256_hex(&bytes) == sha {
                    true => same.push((name, path, sha)),
                    // Set aside, not left in the way: one such file must not
                    // hold up every segment spooled after it.
                    false => out.conflicts.push(spool.set_aside(&name, &path, &sha)?),
                }
            }
            known = same;
            repo = indexed.into_inner();
        }
        if !fresh.is_empty() {
            let opts = BackupOptions {
                tags: vec![WAL_TAG.to_string()],
                host: host.clone(),
                ..Default::default()
            };
            let segment_size = segment_size.unwrap_or(DEFAULT_SEGMENT_SIZE);
            let archive = WalArchive {
                system_identifier: spool.system().unwrap_or_else(|| "unknown".into()),
                segment_size,
                files: fresh
                    .iter()
                    .filter_map(|(n, _, _)| WalEntry::new(n, segment_size))
                    .collect(),
            };
            let source = Source::WalFiles {
                archive,
                files: fresh
                    .iter()
                    .map(|(n, p, _)| (n.clone(), p.clone()))
                    .collect(),
            };
            let done = backup(&mut repo, source, &opts, &NoProgress)?;
            out.snapshots.extend(done.snapshot_id);
            out.bytes += done.bytes_read;
            out.files += fresh.len();
        }
        out.duplicates += known.len();
        fresh.append(&mut known);
        spool.mark_archived(&fresh)?;
    }
}

/// One archived WAL file: the snapshot that holds it and its entry.
#[derive(Debug, Clone)]
pub struct Archived {
    pub snapshot: SnapshotId,
    pub time: chrono::DateTime<chrono::Utc>,
    pub entry: WalEntry,
    /// The cluster's segment size (from the snapshot's `wal` record).
    pub segment_size: u64,
}

/// Every WAL file the repository holds, by name (the newest copy), read
/// from the WAL snapshots' `wal` records alone (no tree is loaded).
pub fn catalog(repo: &Repository) -> Result<BTreeMap<String, Archived>> {
    let mut snaps: Vec<_> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| s.is_wal())
        .collect();
    snaps.sort_by_key(|(_, s)| s.time);
    let mut out = BTreeMap::new();
    for (id, s) in snaps {
        let Some(w) = s.wal else { continue };
        for entry in w.files {
            out.insert(
                entry.name.clone(),
                Archived {
                    snapshot: id,
                    time: s.time,
                    entry,
                    segment_size: w.segment_size,
                },
            );
        }
    }
    Ok(out)
}

/// The tree node of an archived file.
fn node_of(repo: &IndexedRepository, a: &Archived) -> Result<Node> {
    let snap = repo.load_snapshot(&a.snapshot)?;
    find_node(repo, &snap.tree, &format!("/{WAL_DIR}/{}", a.entry.name))
}

/// Copies an archived file out of the repository to `dest` (atomically);
/// returns its size.
pub fn copy_out(repo: &IndexedRepository, a: &Archived, dest: &Path) -> Result<u64> {
    let node = node_of(repo, a)?;
    write_atomically(dest, &mut |out| dump_file(repo, &node, out).map(|_| ()))?;
    Ok(node.size)
}

/// Writes a file to `dest` atomically (a temporary name beside it, synced,
/// then renamed): recovery never reads half a segment.
fn write_atomically(dest: &Path, fill: &mut dyn FnMut(&mut File) -> Result<()>) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".cairn-wal-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    fill(tmp.as_file_mut())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    Ok(())
}

/// [`write_atomically`], and the folder synced too: the file survives a
/// crash once this returns (a spooled segment is acknowledged after it).
fn write_durably(dest: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(dest, &mut |f| {
        f.write_all(bytes).map_err(|e| Error::io(dest, e))
    })?;
    fsync_dir(dest.parent().unwrap_or(Path::new(".")))
}

fn copy_file(src: &Path, dest: &Path) -> Result<()> {
    write_atomically(dest, &mut |out| {
        let mut f = File::open(src).map_err(|e| Error::io(src, e))?;
        std::io::copy(&mut f, out).map_err(|e| Error::io(dest, e))?;
        Ok(())
    })
}

/// `wal-fetch` without the repository: the file is still spooled, or was
/// prefetched. Ok(false) when neither.
pub fn fetch_local(spool: &Spool, name: &str, dest: &Path) -> Result<bool> {
    let spooled = spool.dir.join(name);
    if spooled.is_file() {
        copy_file(&spooled, dest)?;
        return Ok(true);
    }
    let ahead = spool.dir.join(PREFETCH).join(name);
    if ahead.is_file() {
        copy_file(&ahead, dest)?;
        let _ = std::fs::remove_file(&ahead);
        return Ok(true);
    }
    Ok(false)
}

/// `wal-fetch` from the repository; Ok(false) when it holds no such file
/// (PostgreSQL asks for files past the end, and for `.history` files of
/// timelines that never were). The next `prefetch` segments of the same
/// timeline go into the spool's prefetch folder, so that recovery does not
/// open the repository for each one.
pub fn fetch(
    repo: &IndexedRepository,
    spool: &Spool,
    name: &str,
    dest: &Path,
    prefetch: usize,
) -> Result<bool> {
    let kind = WalFile::parse(name)
        .ok_or_else(|| Error::InvalidArgument(format!("'{name}' is not a WAL file name")))?;
    let catalog = catalog(repo)?;
    let Some(found) = catalog.get(name) else {
        return Ok(false);
    };
    let node = node_of(repo, found)?;
    write_atomically(dest, &mut |out| dump_file(repo, &node, out).map(|_| ()))?;
    if let (WalFile::Segment { timeline, .. }, Some(start)) = (kind, found.entry.start_lsn) {
        // Keep the prefetch folder to what recovery will ask next.
        clear_dir(&spool.dir.join(PREFETCH))?;
        let size = found.segment_size;
        let segment = start.0 / size;
        for next in segment + 1..=segment + prefetch as u64 {
            let n = segment_name(timeline, next, size);
            let Some(a) = catalog.get(&n) else { break };
            let node = node_of(repo, a)?;
            let path = spool.dir.join(PREFETCH).join(&n);
            write_atomically(&path, &mut |out| dump_file(repo, &node, out).map(|_| ()))?;
        }
    }
    Ok(true)
}

fn clear_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        let _ = std::fs::remove_file(e.path());
    }
    Ok(())
}

/// Reads a file's first bytes (a segment header is 40).
pub fn read_head(path: &Path, n: usize) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0; n];
    let got = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
    buf.truncate(got);
    Ok(buf)
}

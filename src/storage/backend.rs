//! Storage: the only module that knows object_store and tokio. It gives the rest
//! of the engine a synchronous, thread-safe interface over any object store.

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::counting::{Counters, CountingStore, RequestCounts};
use super::options;
use crate::error::{Error, Result};

/// What happened to a conditional create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    /// An object of that name was already there; nothing was written.
    AlreadyExisted,
}

/// What a delete that tolerates object locks did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// The store refused to delete this object (locked): why, as it said.
    Refused(String),
}

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Key relative to the repository root, e.g. `data/ab/ab12…`.
    pub key: String,
    pub size: u64,
    /// When the store wrote it, by the store's own clock (the provider's, or
    /// the file server's): the only clock the prune protocol compares.
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

#[derive(Clone)]
pub struct Backend {
    store: Arc<dyn ObjectStore>,
    rt: Arc<tokio::runtime::Runtime>,
    location: String,
    /// For a local path: the directory, so `init` can create it.
    local_dir: Option<std::path::PathBuf>,
    /// The outermost directory this backend created (for `init`), so a failed
    /// init can remove what it made.
    created_dir: Option<std::path::PathBuf>,
    /// Requests and bytes through this backend (shared by its clones).
    counters: Arc<Counters>,
    /// Until a cloud store first answers, every request must get an answer
    /// within this deadline (see [`Backend::block`]).
    connect_deadline: Duration,
    reached: Arc<AtomicBool>,
    /// `--limit-upload` / `--limit-download` (shared by clones and threads).
    limits: Arc<Limits>,
}

/// Bandwidth limits, as restic's: each direction a rate in bytes per second.
#[derive(Default)]
struct Limits {
    up: Option<RateLimit>,
    down: Option<RateLimit>,
}

/// Paces transfers to a rate: every transfer books its share of time after
/// the previous ones, and its caller waits until that share is over.
struct RateLimit {
    bytes_per_sec: f64,
    next_free: std::sync::Mutex<std::time::Instant>,
}

impl RateLimit {
    fn new(kib_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec: (kib_per_sec.max(1) * 1024) as f64,
            next_free: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    fn pace(&self, bytes: usize) {
        let share = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
        let wait = {
            let mut next = self.next_free.lock().unwrap();
            let now = std::time::Instant::now();
            *next = (*next).max(now) + share;
            *next - now
        };
        std::thread::sleep(wait);
    }
}

fn runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-io")
            .enable_all()
            .build()
            .expect("starting the I/O runtime"),
    )
}

fn bad(url: &str, reason: impl std::fmt::Display) -> Error {
    Error::BadLocation {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

impl Backend {
    /// In-process store, for tests.
    pub fn memory() -> Backend {
        Self::from_store(Arc::new(object_store::memory::InMemory::new()), "memory://")
    }

    /// Wraps any object store (tests use this for fault-injecting stores).
    pub fn from_store(store: Arc<dyn ObjectStore>, location: &str) -> Backend {
        Self::assemble(store, location, None, None, None)
    }

    /// Every backend counts its requests; a cloud one (with a connect deadline)
    /// also watches for an endpoint that never answers.
    fn assemble(
        store: Arc<dyn ObjectStore>,
        location: &str,
        local_dir: Option<std::path::PathBuf>,
        created_dir: Option<std::path::PathBuf>,
        connect_deadline: Option<Duration>,
    ) -> Backend {
        let (store, counters) = CountingStore::new(store);
        Backend {
            store: Arc::new(store),
            rt: runtime(),
            location: location.to_string(),
            local_dir,
            created_dir,
            counters,
            connect_deadline: connect_deadline.unwrap_or(Duration::MAX),
            reached: Arc::new(AtomicBool::new(connect_deadline.is_none())),
            limits: Arc::new(Limits::default()),
        }
    }

    /// Requests made and bytes moved through this backend so far.
    pub fn request_counts(&self) -> RequestCounts {
        self.counters.snapshot()
    }

    /// Opens a location: a path, `file://`, `s3://`, `gs://`, `az://` or `memory://`.
    /// `create_dir` makes a missing local directory (for `init`).
    pub fn open(location: &str, options: &[(String, String)], create_dir: bool) -> Result<Backend> {
        if location.is_empty() {
            return Err(bad(location, "empty location"));
        }
        if location == "memory://" || location.starts_with("memory:") {
            return Ok(Backend::memory());
        }
        // restic's spellings (`b2:bucket/path`, `sftp:host:/path`,
        // `rest:http://...`) would otherwise become a local folder of that
        // name; a local path with a colon can be written `./b2:x`.
        if let Some(scheme) = restic_style(location) {
            let cairn_url = location.starts_with(&format!("{scheme}://"));
            if !cairn_url && !std::path::Path::new(location).exists() {
                return Err(bad(
                    location,
                    format!(
                        "'{scheme}:' is a restic backend, not a cairn location; cairn reaches a local path, \
                         s3://, gs:// or az:// (for a local folder whose name has a colon, write ./{location})"
                    ),
                ));
            }
        }
        match location.split_once("://") {
            Some(("file", rest)) => {
                Self::local(location, std::path::Path::new(rest), options, create_dir)
            }
            Some((scheme, _)) if ["s3", "gs", "az", "azure", "abfs", "abfss"].contains(&scheme) => {
                Self::cloud(location, scheme, options)
            }
            Some((scheme, _)) => Err(bad(location, format!("unsupported scheme '{scheme}'"))),
            None => Self::local(
                location,
                std::path::Path::new(location),
                options,
                create_dir,
            ),
        }
    }

    fn local(
        location: &str,
        dir: &std::path::Path,
        options: &[(String, String)],
        create: bool,
    ) -> Result<Backend> {
        if let Some((k, _)) = options.first() {
            return Err(bad(
                location,
                format!("option '{k}' does not apply to a local repository"),
            ));
        }
        let mut created_dir = None;
        if create {
            created_dir = create_private_dir(location, dir)?;
        } else if !dir.is_dir() {
            return Err(Error::RepoNotFound(location.to_string()));
        }
        let dir = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let created_dir = created_dir.and_then(|d| std::fs::canonicalize(d).ok());
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| bad(location, e))?;
        Ok(Self::assemble(
            Arc::new(store),
            location,
            Some(dir),
            created_dir,
            None,
        ))
    }

    /// After a failed `init`: removes the directories this backend created, from
    /// the innermost out, as long as they are empty. Anything else stays.
    pub fn remove_created_dirs(&self) {
        let (Some(dir), Some(top)) = (&self.local_dir, &self.created_dir) else {
            return;
        };
        for d in dir.ancestors() {
            if std::fs::remove_dir(d).is_err() || d == top.as_path() {
                break;
            }
        }
    }

    fn cloud(location: &str, scheme: &str, options: &[(String, String)]) -> Result<Backend> {
        let url = url::Url::parse(location).map_err(|e| bad(location, e))?;
        let opts = options::split(options).map_err(|e| bad(location, e))?;
        // The three builders share a shape but no trait: one macro configures each,
        // validating option keys (parse_url_opts would drop unknown ones silently).
        macro_rules! build {
            ($builder:expr, $what:literal) => {{
                let mut b = $builder.with_url(location).with_retry(opts.retry.clone());
                for (k, v) in &opts.store {
                    let key = k
                        .parse()
                        .map_err(|_| bad(location, format!("unknown {} option '{k}'", $what)))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(|e| bad(location, e))?) as Arc<dyn ObjectStore>
            }};
        }
        let store = match scheme {
            // Every S3 upload carries a SHA-256 checksum the service verifies
            // (aws_checksum_algorithm can override it).
            "s3" => build!(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_checksum_algorithm(object_store::aws::Checksum::SHA256),
                "S3"
            ),
            "gs" => build!(
                object_store::gcp::GoogleCloudStorageBuilder::from_env(),
                "GCS"
            ),
            _ => build!(
                object_store::azure::MicrosoftAzureBuilder::from_env(),
                "Azure"
            ),
        };
        // The store built from a URL is not confined to the URL's path: confine it.
        let prefix = url.path().trim_matches('/').to_string();
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            store
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(
                store,
                prefix.as_str(),
            ))
        };
        Ok(Self::assemble(
            store,
            location,
            None,
            None,
            Some(opts.connect_deadline),
        ))
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local_dir.as_deref()
    }

    /// Bytes an unprivileged writer can still add where a local repository
    /// lives (`statvfs`); `None` for buckets, which have no such limit.
    pub fn free_space(&self) -> Option<u64> {
        let dir = self.local_dir.as_deref()?;
        let st = rustix::fs::statvfs(dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    fn path(key: &str) -> StorePath {
        StorePath::from(key)
    }

    /// Runs one store call. Until the store has first answered, the call must
    /// finish within the connect deadline: object_store retries connection
    /// failures for minutes, and an endpoint that cannot be reached should fail
    /// fast with one clear line instead.
    fn block<T>(
        &self,
        fut: impl Future<Output = object_store::Result<T>>,
    ) -> Result<object_store::Result<T>> {
        if self.reached.load(Ordering::Relaxed) {
            return Ok(self.rt.block_on(fut));
        }
        let deadline = self.connect_deadline;
        match self
            .rt
            .block_on(async { tokio::time::timeout(deadline, fut).await })
        {
            Err(_) => Err(self.unreachable(format!(
                "no answer within {}s (connect_deadline)",
                deadline.as_secs_f64()
            ))),
            Ok(r) => {
                if !r.as_ref().is_err_and(is_connect_error) {
                    self.reached.store(true, Ordering::Relaxed);
                }
                Ok(r)
            }
        }
    }

    fn unreachable(&self, reason: String) -> Error {
        Error::Unreachable {
            location: self.location.clone(),
            reason,
        }
    }

    /// The bucket or container name of a cloud location.
    fn container(&self) -> String {
        url::Url::parse(&self.location)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn container_missing(&self) -> Error {
        Error::ContainerNotFound {
            location: self.location.clone(),
            container: self.container(),
        }
    }

    /// Maps a store error on one object. A NotFound on an object is the
    /// object's absence; the callers that know it means a missing bucket
    /// (uploads, listings) map it themselves.
    fn storage_err(&self, key: &str, e: object_store::Error) -> Error {
        match e {
            ref e if is_not_found(e) => Error::MissingObject(key.to_string()),
            ref e if matches!(http_status(e), Some(401 | 403)) => Error::AccessDenied {
                location: self.location.clone(),
                reason: match http_status(e) {
                    Some(401) => "not authenticated",
                    _ => "permission denied",
                }
                .to_string(),
            },
            ref other if is_connect_error(other) => self.unreachable(connect_reason(other)),
            other => Error::Storage {
                key: key.to_string(),
                source: other,
            },
        }
    }

    /// Confirms the bucket or container exists (one listing request); cairn
    /// never creates one. Called when a repository's config is missing, so a
    /// missing bucket is reported as such.
    pub fn check_container(&self) -> Result<()> {
        if self.local_dir.is_some() {
            return Ok(());
        }
        let prefix = Self::path("config");
        let res = self.block(async {
            let mut s = self.store.list(Some(&prefix));
            s.try_next().await.map(|_| ())
        })?;
        match res {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Err(self.container_missing()),
            Err(e) => Err(self.storage_err("config", e)),
        }
    }

    /// Writes an object only if no object of that name exists. Never overwrites.
    /// Limits uploads and downloads to these rates, in KiB/s (restic's
    /// `--limit-upload` and `--limit-download`).
    pub fn with_limits(mut self, upload_kib: Option<u64>, download_kib: Option<u64>) -> Backend {
        self.limits = Arc::new(Limits {
            up: upload_kib.map(RateLimit::new),
            down: download_kib.map(RateLimit::new),
        });
        self
    }

    fn paced_up(&self, n: usize) {
        if let Some(l) = &self.limits.up {
            l.pace(n);
        }
    }

    fn paced_down(&self, n: usize) {
        if let Some(l) = &self.limits.down {
            l.pace(n);
        }
    }

    pub fn create(&self, key: &str, bytes: Vec<u8>) -> Result<Created> {
        self.paced_up(bytes.len());
        self.private_parent(key);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let res = self.block(self.store.put_opts(
            &Self::path(key),
            PutPayload::from(bytes),
            opts,
        ))?;
        match res {
            Ok(_) => {
                self.make_private(key);
                Ok(Created::New)
            }
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(Created::AlreadyExisted),
            // An upload can only miss its bucket or container.
            Err(e) if self.local_dir.is_none() && is_not_found(&e) => Err(self.container_missing()),
            Err(e) => Err(self.storage_err(key, e)),
        }
    }

    /// Local repositories are private, as restic's: objects 0600, folders 0700
    /// (keys and data must not be readable by other local users, who could
    /// guess passwords offline). object_store creates files and folders with
    /// the process umask, so they are narrowed here, right after the write.
    /// The repository folder itself is created 0700 (see [`create_private_dir`]),
    /// so the brief wider mode of a new object is not reachable by others.
    /// Best effort: file systems without Unix modes (FAT, some network mounts)
    /// must not make backups fail.
    fn make_private(&self, key: &str) {
        use std::os::unix::fs::PermissionsExt;
        let Some(root) = &self.local_dir else { return };
        let path = root.join(key);
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        for dir in path.ancestors().skip(1) {
            if dir == root.as_path() || !dir.starts_with(root) {
                break;
            }
            if let Ok(m) = std::fs::metadata(dir) {
                if m.permissions().mode() & 0o077 != 0 {
                    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
                }
            }
        }
    }

    /// Makes a local object's folder (0700) before object_store writes into
    /// it: object_store would make it with the umask (0755), and the new
    /// file (0644 until `make_private`) would be readable by other users for
    /// a moment, in a repository folder that `init` did not create (an
    /// existing 0755 folder) as well.
    fn private_parent(&self, key: &str) {
        use std::os::unix::fs::DirBuilderExt;
        let Some(root) = &self.local_dir else { return };
        let Some(parent) = root.join(key).parent().map(|p| p.to_path_buf()) else {
            return;
        };
        if parent != *root && !parent.exists() {
            let _ = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&parent);
        }
    }

    pub fn get(&self, key: &str) -> Result<Bytes> {
        let b = self
            .block(async { self.store.get(&Self::path(key)).await?.bytes().await })?
            .map_err(|e| self.storage_err(key, e))?;
        self.paced_down(b.len());
        Ok(b)
    }

    /// Reads a small object whose size must not exceed `max`: a coordination
    /// or ledger record, which anyone with write access to the store could
    /// replace by a huge (or sparse) object to exhaust memory. The size is
    /// asked first, and the bytes read are counted again.
    pub fn get_bounded(&self, key: &str, max: u64) -> Result<Bytes> {
        let too_large = |n: u64| Error::Corrupt {
            what: key.to_string(),
            reason: format!("{n} bytes, more than the {max} such a record may have"),
        };
        if self.local_dir.is_none() {
            // On a bucket, one ranged GET instead of a HEAD and a GET: stores
            // clip a range that runs past the end, so a record up to `max`
            // arrives whole and one byte more says it is too large. (Not on
            // local disk, where object_store allocates the whole range and a
            // stat costs no request.)
            match self.block(self.store.get_range(&Self::path(key), 0..max + 1))? {
                Ok(b) if b.len() as u64 > max => return Err(too_large(b.len() as u64)),
                Ok(b) => {
                    self.paced_down(b.len());
                    return Ok(b);
                }
                Err(e) if is_not_found(&e) => return Err(Error::MissingObject(key.to_string())),
                // An empty object has no byte 0 to range over: ask its size.
                Err(_) => {}
            }
        }
        match self.size(key)? {
            None => return Err(Error::MissingObject(key.to_string())),
            Some(n) if n > max => return Err(too_large(n)),
            Some(_) => {}
        }
        let b = self.get(key)?;
        if b.len() as u64 > max {
            return Err(too_large(b.len() as u64));
        }
        Ok(b)
    }

    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let b = self
            .block(self.store.get_range(&Self::path(key), range))?
            .map_err(|e| self.storage_err(key, e))?;
        self.paced_down(b.len());
        Ok(b)
    }

    /// Size of an object, or None when it does not exist.
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.block(self.store.head(&Self::path(key)))? {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.storage_err(key, e)),
        }
    }

    /// When the store says it wrote an object (its own clock).
    pub fn last_modified(&self, key: &str) -> Result<chrono::DateTime<chrono::Utc>> {
        self.block(self.store.head(&Self::path(key)))?
            .map(|m| m.last_modified)
            .map_err(|e| self.storage_err(key, e))
    }

    pub fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size(key)?.is_some())
    }

    /// Every object under a folder (recursively). Temporary files some stores
    /// leave while writing are not listed by object_store.
    pub fn list(&self, folder: &str) -> Result<Vec<Listed>> {
        let prefix = Self::path(folder);
        let metas: Vec<_> =
            match self.block(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())? {
                Ok(m) => m,
                Err(e) if self.local_dir.is_none() && is_not_found(&e) => {
                    return Err(self.container_missing())
                }
                Err(e) => return Err(self.storage_err(folder, e)),
            };
        Ok(metas
            .into_iter()
            .map(|m| Listed {
                key: m.location.to_string(),
                size: m.size,
                last_modified: m.last_modified,
            })
            .collect())
    }

    /// Fails unless these credentials may delete: deletes a name nobody
    /// writes, so one request leaves nothing behind. Stores check the
    /// permission before the object's existence, so a put-only credential
    /// (issue 22) is refused here, before a collector has done any work.
    pub fn check_delete(&self) -> Result<()> {
        const PROBE: &str = "locks/.delete-probe";
        self.delete(PROBE).map_err(|e| Error::DeleteDenied {
            location: self.location.clone(),
            reason: match e {
                Error::AccessDenied { reason, .. } => reason,
                other => other.to_string(),
            },
        })
    }

    /// Deletes an object as [`delete`](Self::delete) does, but a store that
    /// refuses this one object (403, or Azure's 409 for an immutable blob)
    /// is an answer, not a failure: after [`check_delete`](Self::check_delete)
    /// passed, such a refusal is a lock on the object (S3 Object Lock, an
    /// Azure immutability policy, a GCS retention policy or hold).
    pub fn delete_unless_refused(&self, key: &str) -> Result<Deletion> {
        match self.block(self.store.delete(&Self::path(key)))? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(Deletion::Deleted),
            Err(e) if matches!(http_status(&e), Some(403 | 409)) => {
                Ok(Deletion::Refused(e.to_string()))
            }
            Err(e) => Err(self.storage_err(key, e)),
        }
    }

    /// Deletes an object; a missing object is not an error (stores differ here).
    pub fn delete(&self, key: &str) -> Result<()> {
        match self.block(self.store.delete(&Self::path(key)))? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.storage_err(key, e)),
        }
    }
}

/// The HTTP status behind a store error. object_store maps statuses to its
/// variants on most calls, but some (a GCS listing) arrive as `Generic` with
/// the status only in the message of a private error type: read it there.
fn http_status(e: &object_store::Error) -> Option<u16> {
    match e {
        object_store::Error::NotFound { .. } => return Some(404),
        object_store::Error::Unauthenticated { .. } => return Some(401),
        object_store::Error::PermissionDenied { .. } => return Some(403),
        _ => {}
    }
    const MARK: &str = "non-2xx status code: ";
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if let Some(i) = text.find(MARK) {
            let code = &text[i + MARK.len()..];
            return code.get(..3).and_then(|c| c.parse().ok());
        }
        cur = err.source();
    }
    None
}

fn is_not_found(e: &object_store::Error) -> bool {
    http_status(e) == Some(404)
}

/// Whether an error is a failure to connect (after object_store's own retries):
/// its chain holds an HTTP error of the Connect kind.
fn is_connect_error(e: &object_store::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<object_store::client::HttpError>() {
            return matches!(h.kind(), object_store::client::HttpErrorKind::Connect);
        }
        cur = err.source();
    }
    false
}

/// The innermost cause of a connection failure (e.g. "Connection refused").
fn connect_reason(e: &object_store::Error) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    format!("cannot connect: {cur}")
}

/// Creates a local repository folder (and missing parents) with mode 0700, as
/// restic does. A file in the way is named. Returns the outermost folder it
/// created, if any.
fn create_private_dir(location: &str, dir: &std::path::Path) -> Result<Option<std::path::PathBuf>> {
    use std::os::unix::fs::DirBuilderExt;
    let mut outermost_missing = None;
    for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(bad(
                    location,
                    format!("{} is a file, not a directory", d.display()),
                ))
            }
            Err(_) => outermost_missing = Some(d.to_path_buf()),
        }
    }
    if outermost_missing.is_none() {
        return Ok(None);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))?;
    Ok(outermost_missing)
}

/// The restic backend a location is spelled for (`b2`, `sftp`, `rest`,
/// `swift`, `rclone`, `s3`, `gs`, `azure`, `local`), if it is one:
/// `NAME:rest` with no `/` before the colon.
fn restic_style(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once(':')?;
    [
        "b2", "sftp", "rest", "swift", "rclone", "s3", "gs", "azure", "local",
    ]
    .contains(&scheme)
    .then_some(scheme)
}

#[cfg(test)]
mod tests {

    /// A new object's folder is made 0700 before the object is written into
    /// it, also in a repository folder made by someone else with 0755: the
    /// file's brief umask mode is never reachable by other users.
    #[test]
    fn object_folders_are_private_before_the_object_is_written() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let b = Backend::open(dir.path().to_str().unwrap(), &[], false).unwrap();
        b.private_parent("keys/0123");
        let mode = std::fs::metadata(dir.path().join("keys"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        b.create("keys/0123", b"key".to_vec()).unwrap();
        let mode = std::fs::metadata(dir.path().join("keys/0123"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    use super::*;

    /// A lower bound only: a slow machine can take longer, never less.
    #[test]
    fn limits_pace_transfers() {
        let b = Backend::memory().with_limits(Some(256), Some(256));
        let t = std::time::Instant::now();
        b.create("a", vec![0; 128 * 1024]).unwrap();
        b.create("b", vec![0; 128 * 1024]).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
        let t = std::time::Instant::now();
        b.get("a").unwrap();
        b.get_range("b", 0..64 * 1024).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(700),
            "{:?}",
            t.elapsed()
        );
        // Without limits nothing waits for pacing.
        let free = Backend::memory();
        free.create("c", vec![0; 1 << 20]).unwrap();
    }

    #[test]
    fn bounded_reads_take_one_request_on_a_bucket() {
        let b = Backend::memory();
        b.create("r/ten", b"0123456789".to_vec()).unwrap();
        b.create("r/empty", Vec::new()).unwrap();
        let before = b.request_counts();
        assert_eq!(&b.get_bounded("r/ten", 10).unwrap()[..], b"0123456789");
        let after = b.request_counts();
        assert_eq!((after.get - before.get, after.head - before.head), (1, 0));
        assert!(matches!(
            b.get_bounded("r/ten", 9),
            Err(Error::Corrupt { .. })
        ));
        assert!(b.get_bounded("r/empty", 9).unwrap().is_empty());
        assert!(matches!(
            b.get_bounded("r/none", 9),
            Err(Error::MissingObject(_))
        ));
        // On local disk a stat is free: the size is asked first, as before.
        let dir = tempfile::tempdir().unwrap();
        let l = Backend::open(dir.path().to_str().unwrap(), &[], false).unwrap();
        l.create("r/ten", b"0123456789".to_vec()).unwrap();
        assert_eq!(&l.get_bounded("r/ten", 10).unwrap()[..], b"0123456789");
        assert!(matches!(
            l.get_bounded("r/ten", 9),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn create_never_overwrites() {
        let b = Backend::memory();
        assert_eq!(b.create("a/b", b"one".to_vec()).unwrap(), Created::New);
        assert_eq!(
            b.create("a/b", b"two".to_vec()).unwrap(),
            Created::AlreadyExisted
        );
        assert_eq!(&b.get("a/b").unwrap()[..], b"one");
        let listed = b.list("a").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key.as_str(), listed[0].size), ("a/b", 3));
        assert_eq!(&b.get_range("a/b", 1..3).unwrap()[..], b"ne");
        b.delete("a/b").unwrap();
        b.delete("a/b").unwrap();
        assert!(matches!(b.get("a/b"), Err(Error::MissingObject(_))));
    }

    #[test]
    fn local_create_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let b = Backend::open(dir.path().to_str().unwrap(), &[], false).unwrap();
        assert_eq!(b.create("x/y", b"one".to_vec()).unwrap(), Created::New);
        assert_eq!(
            b.create("x/y", b"two".to_vec()).unwrap(),
            Created::AlreadyExisted
        );
        assert_eq!(&b.get("x/y").unwrap()[..], b"one");
        assert_eq!(b.list("x").unwrap().len(), 1);
        assert!(b.list("nothing").unwrap().is_empty());
    }

    #[test]
    fn missing_local_dir_is_not_a_repo() {
        assert!(matches!(
            Backend::open("/nonexistent/cairn-x", &[], false),
            Err(Error::RepoNotFound(_))
        ));
        assert!(matches!(
            Backend::open("ftp://x/y", &[], false),
            Err(Error::BadLocation { .. })
        ));
    }
}

//! A repository: opens and creates one, unlocks its key, reads and writes its
//! objects. Operations (backup, restore, check) build on the narrow pieces here.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rand::RngCore;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob::{self, BlobType, Padding};
use crate::format::chunker::{Chunker, ChunkerParams};
use crate::format::crypto::{
    aad, derive_wrapping_key, BlobHasher, Cipher, KdfParams, MasterKey, Secret,
};
use crate::format::id::{storage_hash, BlobId, IndexId, KeyId, PackId, SnapshotId};
use crate::format::objects::{self, Config, IndexedPack, KeyFile, MAX_METADATA_LEN, REPO_VERSION};
use crate::format::pack::Trailer;
use crate::format::records::{self, SessionEnd};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::repo::cache::Cache;
use crate::repo::index::MasterIndex;
use crate::repo::unlock::{self, KeyMemory, Selected, Unlock};
use crate::storage::{Backend, Created, Listed};

pub const CONFIG_KEY: &str = "config";
pub const KEYS_DIR: &str = "keys";
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const INDEX_DIR: &str = "index";
pub const LOCKS_DIR: &str = "locks";

/// At most this many key objects are read when unlocking, besides the hinted
/// and remembered ones, and their total argon2 work is bounded
/// ([`UNLOCK_WORK_BUDGET`](crate::repo::unlock::UNLOCK_WORK_BUDGET)): planted
/// key files can slow a wrong password down by a bounded amount, never hang a
/// command.
pub const MAX_KEYS_READ: usize = 64;
/// A key object is small JSON; anything larger is not one.
const MAX_KEY_OBJECT_LEN: u64 = 64 * 1024;

/// Storage key of a pack: `data/ab/ab…` or `tree/ab/ab…`.
/// How many times an index load lists again after an index object
/// vanished between its listing and its read.
const MAX_RELISTS: usize = 16;

pub fn pack_key(kind: BlobType, id: &PackId) -> String {
    let h = id.to_hex();
    format!("{}/{}/{}", kind.dir(), &h[..2], h)
}

/// Parses the ID out of the last component of a storage key.
pub fn id_from_key<T: std::str::FromStr>(key: &str) -> Option<T> {
    key.rsplit('/').next()?.parse().ok()
}

/// Bytes `range` of a whole object, or an error naming it when it is shorter.
fn slice_exact(
    key: &str,
    whole: &bytes::Bytes,
    range: std::ops::Range<u64>,
) -> Result<bytes::Bytes> {
    if range.end > whole.len() as u64 || range.start > range.end {
        return Err(Error::corrupt(
            key.to_string(),
            format!(
                "range {}..{} is beyond the object's {} bytes",
                range.start,
                range.end,
                whole.len()
            ),
        ));
    }
    Ok(whole.slice(range.start as usize..range.end as usize))
}

/// Choices made at `init`.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    pub chunker: Option<ChunkerParams>,
    /// Reuse another repository's blob-ID key (with its chunker) so data dedups across both.
    pub blob_id_key: Option<[u8; 32]>,
    pub pack_size: Option<u32>,
    pub compression: Option<i32>,
    pub kdf: Option<KdfParams>,
    pub padding: Option<Padding>,
    /// The store's minimum retention (object lock), recorded in the config.
    pub min_retention: Option<std::time::Duration>,
}

/// Where a repository's warnings go (skipped objects and the like): to the
/// handler the caller installed, else kept for [`Repository::take_warnings`].
#[derive(Default)]
struct Warnings {
    handler: Option<Box<dyn Fn(&str) + Send + Sync>>,
    kept: Mutex<Vec<String>>,
}

pub struct Repository {
    backend: Backend,
    master: MasterKey,
    key_id: KeyId,
    key_params: KdfParams,
    cipher: Cipher,
    hasher: BlobHasher,
    chunker: Chunker,
    config: Config,
    index: MasterIndex,
    cache: Option<Cache>,
    /// What storage held when the index was loaded (see `listed_packs`).
    listed_packs: Vec<(PackId, BlobType, u64)>,
    /// A second index, read only when a pack vanished under a reader.
    relocated: Mutex<Option<Arc<MasterIndex>>>,
    warnings: Warnings,
}

fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_default()
}

pub fn hostname() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn make_key_file(
    master: &MasterKey,
    password: &[u8],
    params: KdfParams,
) -> Result<(KeyId, Vec<u8>)> {
    params.validate().map_err(Error::InvalidArgument)?;
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let wrap = derive_wrapping_key(password, &salt, params)
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let kf = KeyFile {
        version: objects::KEY_VERSION,
        kdf: "argon2id".into(),
        params,
        salt: objects::to_b64(&salt),
        master_key: String::new(),
        created: chrono::Utc::now(),
        hostname: hostname(),
        username: username(),
    };
    let bytes = kf.seal(|aad| Cipher::new(&wrap).seal(master.bytes(), aad));
    Ok((KeyId(storage_hash(&bytes)), bytes))
}

/// Tries one key object against a password. The argon2 memory is freed on return.
fn unwrap_key(kf: &KeyFile, aad: &[u8], password: &[u8]) -> Option<MasterKey> {
    let salt = kf.salt_bytes().ok()?;
    let wrap = derive_wrapping_key(password, &salt, kf.params).ok()?;
    let plain = zeroize::Zeroizing::new(
        Cipher::new(&wrap)
            .open(&kf.sealed_master_key().ok()?, aad)
            .ok()?,
    );
    let bytes: [u8; 32] = plain[..].try_into().ok()?;
    Some(MasterKey::from_bytes(bytes))
}

/// Whether stored bytes are named by their SHA-256, as every object but the
/// config is.
fn named_by_content(key: &str, bytes: &[u8]) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    hex::encode(storage_hash(bytes)) == name
}

/// The keys to try before the others: the one `hint` names, then the one
/// remembered (when it is still listed). A hint that names no key, or
/// several, is reported and the other keys are tried as if none was given.
fn pinned_keys(
    listed: &[(KeyId, String)],
    hint: Option<&str>,
    remembered: Option<KeyId>,
    warn: &dyn Fn(&str),
) -> Vec<KeyId> {
    let mut pinned = Vec::new();
    if let Some(hint) = hint {
        match unlock::select(listed.iter().map(|(id, _)| *id), hint) {
            Selected::One(id) => pinned.push(id),
            Selected::Nothing => warn(&format!(
                "--key-hint {hint} matches no key (see `cairn key list`); trying the others"
            )),
            Selected::Several(n) => warn(&format!(
                "--key-hint {hint} matches {n} keys; give more digits; trying the others"
            )),
        }
    }
    pinned.extend(remembered.filter(|r| listed.iter().any(|(id, _)| id == r)));
    pinned
}

impl Repository {
    /// Creates a repository. Refuses when one (or any key) already exists there.
    pub fn init(backend: Backend, password: &[u8], opts: InitOptions) -> Result<Repository> {
        if backend.exists(CONFIG_KEY)? || !backend.list(KEYS_DIR)?.is_empty() {
            return Err(Error::RepoExists(backend.location().to_string()));
        }
        if password.is_empty() {
            return Err(Error::InvalidArgument(
                "an empty password is not allowed".into(),
            ));
        }
        let master = MasterKey::generate();
        let chunker = opts.chunker.unwrap_or_else(|| {
            let mut key = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            ChunkerParams::with_key(key)
        });
        let mut repo_id = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut repo_id);
        let config = Config {
            version: REPO_VERSION,
            id: hex::encode(repo_id),
            chunker,
            blob_id_key: opts.blob_id_key.unwrap_or(master.default_id_key().0),
            pack_size: opts.pack_size.unwrap_or(objects::DEFAULT_PACK_SIZE),
            compression: opts.compression.unwrap_or(objects::DEFAULT_COMPRESSION),
            padding: opts.padding.unwrap_or_default(),
            min_retention_secs: opts.min_retention.map(|d| d.as_secs().max(1)),
        };
        if chunker.key.is_none() {
            return Err(Error::InvalidArgument(
                "the source repository uses format 1, whose chunker cannot be shared with a format 2 repository".into(),
            ));
        }
        config.validate().map_err(Error::InvalidArgument)?;
        let kdf = opts.kdf.unwrap_or_default();
        // The key goes first: a config without a key would be a repository nobody can open.
        let (key_id, key_bytes) = make_key_file(&master, password, kdf)?;
        backend.create(&format!("{KEYS_DIR}/{key_id}"), key_bytes)?;
        let cipher = master.cipher();
        let config_bytes = objects::seal_json(&cipher, aad::CONFIG, &config);
        if backend.create(CONFIG_KEY, config_bytes)? == Created::AlreadyExisted {
            backend.delete(&format!("{KEYS_DIR}/{key_id}"))?;
            return Err(Error::RepoExists(backend.location().to_string()));
        }
        Ok(Self::assemble(backend, master, (key_id, kdf), config))
    }

    fn assemble(
        backend: Backend,
        master: MasterKey,
        (key_id, key_params): (KeyId, KdfParams),
        config: Config,
    ) -> Repository {
        let cipher = master.cipher();
        let hasher = BlobHasher::new(&Secret(config.blob_id_key));
        Repository {
            backend,
            master,
            key_id,
            key_params,
            cipher,
            hasher,
            chunker: Chunker::new(config.chunker),
            config,
            index: MasterIndex::new(),
            relocated: Mutex::new(None),
            listed_packs: Vec::new(),
            cache: None,
            warnings: Warnings::default(),
        }
    }

    /// Checks a repository exists at the backend, without needing a password.
    /// A missing bucket or container is an error of its own.
    pub fn exists(backend: &Backend) -> Result<bool> {
        let found = backend.exists(CONFIG_KEY)?;
        if !found {
            backend.check_container()?;
        }
        Ok(found)
    }

    /// Opens a repository with a password. The index is not loaded yet.
    pub fn open(backend: Backend, password: &[u8]) -> Result<Repository> {
        Self::open_with(backend, password, &Unlock::default(), &|_| {})
    }

    /// Opens a repository, trying first the key `unlock` names and the key
    /// that last worked (then remembering the one that did). Problems with the
    /// hint go to `warn`: they do not stop the other keys being tried.
    pub fn open_with(
        backend: Backend,
        password: &[u8],
        unlock: &Unlock,
        warn: &dyn Fn(&str),
    ) -> Result<Repository> {
        let config_bytes = Self::read_config_envelope(&backend)?;
        let memory = unlock
            .memory_root
            .as_deref()
            .map(|root| KeyMemory::new(root, &config_bytes));
        let remembered = memory.as_ref().and_then(KeyMemory::recall);
        let hint = unlock.key_hint.as_deref();
        let (key, master) = Self::find_key(&backend, password, hint, remembered, warn)?;
        let config: Config = objects::open_json(&master.cipher(), aad::CONFIG, &config_bytes)
            .map_err(|e| Error::format("config", e))?;
        config.validate().map_err(|e| Error::corrupt("config", e))?;
        if let Some(m) = &memory {
            m.remember(key.0);
        }
        Ok(Self::assemble(backend, master, key, config))
    }

    /// The config object, if it looks like one before any key is tried.
    fn read_config_envelope(backend: &Backend) -> Result<bytes::Bytes> {
        let not_a_repo = || Error::NotARepository(backend.location().to_string());
        let config_bytes = match backend.size(CONFIG_KEY)? {
            None => return Err(Error::RepoNotFound(backend.location().to_string())),
            Some(n) if n > MAX_METADATA_LEN => return Err(not_a_repo()),
            Some(_) => backend.get(CONFIG_KEY)?,
        };
        // A config is a version byte and a sealed box: anything else is not one,
        // whatever the password (and trying keys against it would only mislead).
        // A small version byte beyond ours is a newer cairn's repository.
        match config_bytes.first() {
            Some(&v) if (3..16).contains(&v) => {
                return Err(Error::format("config", objects::FormatError::Version(v)))
            }
            Some(1 | 2) if config_bytes.len() > crate::format::crypto::SEAL_OVERHEAD => {}
            _ => return Err(not_a_repo()),
        }
        Ok(config_bytes)
    }

    /// Finds the key that opens with `password`. Reads the hinted and the
    /// remembered key objects and at most [`MAX_KEYS_READ`] others, each
    /// checked against its name and its KDF bounds, and tries them in the
    /// order [`unlock::attempts`] gives.
    fn find_key(
        backend: &Backend,
        password: &[u8],
        hint: Option<&str>,
        remembered: Option<KeyId>,
        warn: &dyn Fn(&str),
    ) -> Result<((KeyId, KdfParams), MasterKey)> {
        let listed = Self::list_key_objects(backend)?;
        if listed.is_empty() && backend.list(KEYS_DIR)?.is_empty() {
            return Err(Error::NotARepository(backend.location().to_string()));
        }
        let pinned = pinned_keys(&listed, hint, remembered, warn);
        // The pinned keys are read whatever the read bound: planted objects
        // listed before them must not push them out.
        let (first, others): (Vec<_>, Vec<_>) =
            listed.iter().partition(|(id, _)| pinned.contains(id));
        let unread = others.len().saturating_sub(MAX_KEYS_READ);
        let mut keys = Vec::new();
        for (id, key) in first
            .into_iter()
            .chain(others.into_iter().take(MAX_KEYS_READ))
        {
            if let Some((kf, aad)) = Self::read_key_object(backend, key)? {
                keys.push((*id, kf, aad));
            }
        }
        let costs: Vec<_> = keys
            .iter()
            .map(|(id, kf, _)| (*id, kf.params.work()))
            .collect();
        let plan = unlock::attempts(&pinned, &costs);
        for id in &plan.order {
            let Some((_, kf, aad)) = keys.iter().find(|(k, ..)| k == id) else {
                continue;
            };
            if let Some(mk) = unwrap_key(kf, aad, password) {
                return Ok(((*id, kf.params), mk));
            }
        }
        Err(Error::WrongPassword {
            untried: unread + plan.skipped,
        })
    }

    /// The objects under `keys/` named by a key ID and small enough to be one,
    /// sorted by ID so that which ones fall beyond the read bound does not
    /// depend on how the store lists them.
    fn list_key_objects(backend: &Backend) -> Result<Vec<(KeyId, String)>> {
        let mut listed: Vec<_> = backend
            .list(KEYS_DIR)?
            .into_iter()
            .filter(|l| l.size <= MAX_KEY_OBJECT_LEN)
            .filter_map(|l| Some((id_from_key::<KeyId>(&l.key)?, l.key)))
            .collect();
        listed.sort();
        Ok(listed)
    }

    /// A key object worth trying: None when it is gone, does not match its
    /// name, does not parse, or asks for a KDF other than argon2id or beyond
    /// the bounds (a planted key file must not hang or exhaust a command).
    fn read_key_object(backend: &Backend, key: &str) -> Result<Option<(KeyFile, Vec<u8>)>> {
        let bytes = match backend.get(key) {
            Ok(b) => b,
            Err(Error::MissingObject(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !named_by_content(key, &bytes) {
            return Ok(None);
        }
        Ok(KeyFile::parse(&bytes)
            .ok()
            .filter(|(kf, _)| kf.kdf == "argon2id" && kf.params.validate().is_ok()))
    }

    /// Refuses to write into a repository of an older format: this cairn reads
    /// format 1 but writes only format 2, and a repository never mixes formats.
    pub fn ensure_writable(&self) -> Result<()> {
        if self.config.version < REPO_VERSION {
            return Err(Error::ReadOnlyFormat(self.config.version));
        }
        Ok(())
    }

    /// Reports a problem that does not stop the command (a skipped object).
    pub fn warn(&self, message: String) {
        match &self.warnings.handler {
            Some(h) => h(&message),
            None => self.warnings.kept.lock().unwrap().push(message),
        }
    }

    /// Sends warnings to `handler` from now on (the CLI prints them).
    pub fn set_warning_handler(&mut self, handler: impl Fn(&str) + Send + Sync + 'static) {
        self.warnings.handler = Some(Box::new(handler));
    }

    /// Warnings kept so far (when no handler is installed).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.warnings.kept.lock().unwrap())
    }

    /// Reads a whole object named by the SHA-256 of its bytes, refusing one whose
    /// content does not match its name (a copy or a replacement under that name).
    /// Immutable metadata comes from the local cache when one is set (checked
    /// against its name there too) and is cached after a download.
    pub fn get_named(&self, key: &str) -> Result<bytes::Bytes> {
        self.get_named_bounded(key, None)
    }

    /// [`get_named`](Self::get_named), refusing (before downloading) an object
    /// the store lists as larger than `max` bytes.
    pub fn get_named_bounded(&self, key: &str, max: Option<u64>) -> Result<bytes::Bytes> {
        let cache = self.cache.as_ref().filter(|_| Cache::caches(key));
        if let Some(bytes) = cache.and_then(|c| c.get(key)) {
            return Ok(bytes.into());
        }
        let bytes = match max {
            Some(max) => self.backend.get_bounded(key, max)?,
            None => self.backend.get(key)?,
        };
        if !named_by_content(key, &bytes) {
            return Err(Error::NameMismatch(key.to_string()));
        }
        if let Some(c) = cache {
            c.put(key, &bytes);
        }
        Ok(bytes)
    }

    /// Caches index objects and snapshots under `root` (per repository ID).
    /// Uses a cache below `root`, unless its folder is another user's or
    /// writable by others (then it warns and works without one).
    pub fn set_cache(&mut self, root: &std::path::Path) {
        let cache = Cache::new(root, &self.config.id);
        match cache.refusal() {
            Some(why) => self.warn(format!("{why}: working without a cache")),
            None => self.cache = Some(cache),
        }
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn cipher(&self) -> &Cipher {
        &self.cipher
    }
    pub fn hasher(&self) -> &BlobHasher {
        &self.hasher
    }
    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }
    /// How this repository's packs end (format 1: plain length; 2: sealed).
    pub fn trailer(&self) -> Trailer {
        Trailer::for_format(self.config.version)
    }
    /// The KDF parameters of the key that opened the repository.
    pub fn key_params(&self) -> KdfParams {
        self.key_params
    }
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    pub fn index(&self) -> &MasterIndex {
        &self.index
    }

    // ---- keys -------------------------------------------------------------

    pub fn list_keys(&self) -> Result<Vec<(KeyId, KeyFile)>> {
        let mut out = Vec::new();
        for listed in self.backend.list(KEYS_DIR)? {
            let Some(id) = id_from_key::<KeyId>(&listed.key) else {
                continue;
            };
            let bytes = match self.get_named(&listed.key) {
                Ok(b) => b,
                Err(e @ Error::NameMismatch(_)) => {
                    self.warn(format!("skipping key {id}: {e}"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match KeyFile::parse(&bytes) {
                Ok((kf, _)) => out.push((id, kf)),
                Err(e) => self.warn(format!("skipping key {id}: {e}")),
            }
        }
        out.sort_by_key(|(_, kf): &(KeyId, KeyFile)| kf.created);
        Ok(out)
    }

    pub fn add_key(&self, password: &[u8], kdf: Option<KdfParams>) -> Result<KeyId> {
        self.ensure_writable()?;
        if password.is_empty() {
            return Err(Error::InvalidArgument(
                "an empty password is not allowed".into(),
            ));
        }
        let (id, bytes) = make_key_file(&self.master, password, kdf.unwrap_or_default())?;
        self.backend.create(&format!("{KEYS_DIR}/{id}"), bytes)?;
        Ok(id)
    }

    /// Removes a key by full ID or unique prefix. The key in use cannot be removed
    /// (so a repository always keeps at least one key someone can open).
    pub fn remove_key(&self, selector: &str) -> Result<KeyId> {
        self.ensure_writable()?;
        let keys = self.list_keys()?;
        let id = match unlock::select(keys.iter().map(|(id, _)| *id), selector) {
            Selected::One(id) => id,
            Selected::Nothing => {
                return Err(Error::InvalidArgument(format!(
                    "no key matches '{selector}' (see `cairn key list`)"
                )))
            }
            Selected::Several(_) => {
                return Err(Error::InvalidArgument(format!(
                    "key prefix '{selector}' is ambiguous"
                )))
            }
        };
        if id == self.key_id {
            return Err(Error::InvalidArgument(
                "refusing to remove the key currently in use; open the repository with another password first".into(),
            ));
        }
        self.backend.delete(&format!("{KEYS_DIR}/{id}"))?;
        Ok(id)
    }

    /// Replaces the key in use with one for a new password, keeping the key's
    /// KDF parameters unless `kdf` gives new ones.
    pub fn change_password(
        &mut self,
        new_password: &[u8],
        kdf: Option<KdfParams>,
    ) -> Result<KeyId> {
        let params = kdf.unwrap_or(self.key_params);
        let new_id = self.add_key(new_password, Some(params))?;
        self.backend
            .delete(&format!("{KEYS_DIR}/{}", self.key_id))?;
        self.key_id = new_id;
        self.key_params = params;
        Ok(new_id)
    }

    // ---- index ------------------------------------------------------------

    /// Loads every index object into memory (in parallel).
    /// Index objects are decoded a few at a time, in parallel, and folded into
    /// the sorted array, so the decoded form never exists for all at once.
    /// An object that is not an index (a stray name, an oversized or damaged
    /// object) is skipped with a warning naming it; `check` reports it.
    pub fn load_index(&mut self) -> Result<()> {
        self.load_index_excluding(&HashSet::new())
    }

    /// [`load_index`](Self::load_index) without the given packs: a writer's
    /// dedup view leaves out every pack a collector condemned (rule 2). An
    /// index object that vanishes between listing and reading was compacted by
    /// a sweep: the listing is taken again (repo-format.md §15, rule 4).
    /// Index entries whose pack is not in storage are left out too: an index
    /// object written by a writer fenced while it was paused can name packs a
    /// sweep has already deleted, and no reader or writer may rely on those.
    pub fn load_index_excluding(&mut self, exclude: &HashSet<PackId>) -> Result<()> {
        let (index, listed) = self.build_live_index(exclude)?;
        self.index = index;
        self.listed_packs = listed;
        Ok(())
    }

    /// Drops the loaded index (a reader about to build its own, like `check`).
    pub fn clear_index(&mut self) {
        self.index = MasterIndex::new();
        self.listed_packs.clear();
    }

    /// The packs storage held when the index was last loaded (that load lists
    /// them anyway; callers reuse the listing instead of taking another).
    pub fn listed_packs(&self) -> &[(PackId, BlobType, u64)] {
        &self.listed_packs
    }

    /// The index of the packs storage holds (one listing of `data/` and
    /// `tree/`), without `exclude`. An index object that vanishes between
    /// listing and reading was compacted by a sweep: the whole load is
    /// retried, up to [`MAX_RELISTS`] times.
    fn build_live_index(
        &self,
        exclude: &HashSet<PackId>,
    ) -> Result<(MasterIndex, Vec<(PackId, BlobType, u64)>)> {
        let attempt = || -> Result<(MasterIndex, Vec<(PackId, BlobType, u64)>)> {
            let listed = self.list_packs()?;
            let stored: HashSet<PackId> = listed.iter().map(|(id, _, _)| *id).collect();
            let index =
                self.build_index(&|p: &PackId| stored.contains(p) && !exclude.contains(p))?;
            Ok((index, listed))
        };
        // Each vanished object is a compaction's progress, and a sweep
        // deletes index objects one by one: two attempts in a row can both
        // meet one (seen by prune_model: a copy failed with MissingObject).
        // A reader never fails for a cleaned-up record (rule 5): list again.
        let mut relists = 0;
        loop {
            match attempt() {
                Err(Error::MissingObject(_)) if relists < MAX_RELISTS => relists += 1,
                other => return other,
            }
        }
    }

    /// Reads every index object into a new master index, keeping the packs
    /// `keep` accepts.
    fn build_index(&self, keep: &(dyn Fn(&PackId) -> bool + Sync)) -> Result<MasterIndex> {
        let listed: Vec<_> = self
            .backend
            .list(INDEX_DIR)?
            .into_iter()
            .filter(|l| match self.index_listing_problem(l) {
                Some(why) => {
                    self.warn(format!("skipping {}: {why}", l.key));
                    false
                }
                None => true,
            })
            .collect();
        let idx = MasterIndex::new();
        // A few objects decoded at a time: the decoded form of every object
        // never exists at once, and the index spills to files as it grows.
        for group in listed.chunks(2 * rayon::current_num_threads().max(1)) {
            let decoded: Vec<Result<Vec<IndexedPack>>> = group
                .par_iter()
                .map(|l| self.read_index_object(&l.key))
                .collect();
            for (l, d) in group.iter().zip(decoded) {
                match d {
                    Ok(packs) => {
                        for p in packs.iter().filter(|p| keep(&p.id)) {
                            idx.add_pack(p)?;
                        }
                    }
                    Err(e @ (Error::Storage { .. } | Error::MissingObject(_)))
                        if !is_content_error(&e) =>
                    {
                        return Err(e)
                    }
                    Err(e) => self.warn(format!("skipping {}: {e}", l.key)),
                }
            }
        }
        idx.finish_load()?;
        Ok(idx)
    }

    /// Reads a blob whose pack has vanished since the index was loaded: a
    /// prune repacked it and swept the old pack (rule 10). The index is read
    /// again once per process (all such blobs share that fresh copy) and the
    /// blob is read from where it lives now.
    pub fn read_relocated_blob(&self, id: &BlobId, raw_len: Option<usize>) -> Result<Vec<u8>> {
        let sealed = self.read_relocated_sealed(id)?;
        self.decode_blob(id, &sealed, raw_len)
    }

    /// [`read_relocated_blob`](Self::read_relocated_blob), still sealed.
    pub fn read_relocated_sealed(&self, id: &BlobId) -> Result<bytes::Bytes> {
        let fresh = {
            let mut slot = self.relocated.lock().unwrap();
            match &*slot {
                Some(idx) => idx.clone(),
                None => {
                    let idx = Arc::new(self.build_live_index(&HashSet::new())?.0);
                    *slot = Some(idx.clone());
                    idx
                }
            }
        };
        let loc = fresh
            .lookup(id)
            .ok_or_else(|| Error::BlobNotIndexed(id.to_hex()))?;
        self.get_exact_range(
            &pack_key(loc.kind, &loc.pack),
            loc.offset as u64..loc.offset as u64 + loc.length as u64,
        )
    }

    /// Why a listed object under `index/` cannot be an index object, if it cannot.
    pub fn index_listing_problem(&self, l: &Listed) -> Option<String> {
        if id_from_key::<IndexId>(&l.key).is_none() {
            return Some("not named by a 64-digit ID".into());
        }
        if l.size > MAX_METADATA_LEN {
            return Some(format!("{} bytes is larger than any index object", l.size));
        }
        None
    }

    pub fn read_index_object(&self, key: &str) -> Result<Vec<IndexedPack>> {
        let bytes = self.get_named(key)?;
        let what = || format!("index {}", key.rsplit('/').next().unwrap_or(key));
        let plain = objects::open_object(&self.cipher, aad::INDEX, &bytes)
            .map_err(|e| Error::format(what(), e))?;
        objects::decode_index(&plain).map_err(|e| Error::format(what(), e))
    }

    /// Writes an index object for packs (and caches it as written); returns its ID.
    pub fn save_index(&self, packs: &[IndexedPack]) -> Result<IndexId> {
        self.ensure_writable()?;
        let bytes = objects::seal_object(&self.cipher, aad::INDEX, &objects::encode_index(packs));
        let id = IndexId(storage_hash(&bytes));
        let key = format!("{INDEX_DIR}/{id}");
        if let Some(c) = &self.cache {
            c.put(&key, &bytes);
        }
        self.backend.create(&key, bytes)?;
        Ok(id)
    }

    /// Adds packs to the index (after a backup wrote them). Takes `&self`:
    /// a backup folds its packs in while other threads look blobs up.
    pub fn index_packs(&self, packs: &[IndexedPack]) -> Result<()> {
        self.index.add_packs(packs)
    }

    /// Every pack in storage, by listing.
    pub fn list_packs(&self) -> Result<Vec<(PackId, BlobType, u64)>> {
        Ok(self
            .list_pack_objects()?
            .into_iter()
            .map(|(id, kind, l)| (id, kind, l.size))
            .collect())
    }

    /// Every pack in storage with its listing (size and when the store wrote it).
    pub fn list_pack_objects(&self) -> Result<Vec<(PackId, BlobType, Listed)>> {
        let mut out = Vec::new();
        for kind in [BlobType::Data, BlobType::Tree] {
            for l in self.backend.list(kind.dir())? {
                if let Some(id) = id_from_key::<PackId>(&l.key) {
                    out.push((id, kind, l));
                }
            }
        }
        Ok(out)
    }

    /// Reads and decrypts a pack's header with two range reads.
    pub fn read_pack_header(&self, id: &PackId, kind: BlobType, size: u64) -> Result<IndexedPack> {
        let key = pack_key(kind, id);
        let perr = |source| Error::Pack {
            pack: id.to_hex(),
            source,
        };
        let trailer = self.trailer();
        let t = trailer.len() as u64;
        if size < t {
            return Err(perr(crate::format::pack::PackError::TooShort));
        }
        let tail = self.get_exact_range(&key, size - t..size)?;
        let n = trailer
            .header_length(&self.cipher, size, &tail)
            .map_err(perr)? as u64;
        let start = size - t - n;
        let sealed = self.get_exact_range(&key, start..size - t)?;
        let (k, blobs) =
            crate::format::pack::decode_header(&self.cipher, &sealed, start).map_err(perr)?;
        if k != kind {
            return Err(Error::corrupt(
                format!("pack {id}"),
                "stored under the wrong folder for its blob type",
            ));
        }
        Ok(IndexedPack {
            id: *id,
            kind,
            blobs,
        })
    }

    /// A range read that must return exactly the bytes asked for: a short read
    /// (an object shorter than the index says) is damage, never a panic later.
    pub fn get_exact_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes> {
        if let Some(c) = self.cache.as_ref().filter(|_| Cache::caches_ranges(key)) {
            if let Some(b) = c.get_range(key, range.clone()) {
                return Ok(b.into());
            }
            // The whole pack once: the pack's other trees then come from the cache.
            let whole = self.get_named(key)?;
            c.put(key, &whole);
            return slice_exact(key, &whole, range);
        }
        self.get_exact_range_uncached(key, range)
    }

    /// [`get_exact_range`](Self::get_exact_range) from the repository itself.
    fn get_exact_range_uncached(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes> {
        let want = range.end - range.start;
        let bytes = self.backend.get_range(key, range.clone())?;
        if bytes.len() as u64 != want {
            return Err(Error::corrupt(
                key.to_string(),
                format!(
                    "range {}..{} returned {} bytes (the object is shorter than expected)",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// Indexes packs that storage holds but no index names: what an interrupted
    /// backup uploaded. Never a pack a collector condemned (`skip`): a sweep may
    /// be about to delete it. Returns how many packs were adopted.
    /// Works from the listing taken when the index was loaded.
    pub fn adopt_unindexed_packs(&mut self, skip: &HashSet<PackId>) -> Result<usize> {
        let orphans: Vec<_> = self
            .listed_packs
            .iter()
            .filter(|(id, _, _)| !self.index.has_pack(id) && !skip.contains(id))
            .copied()
            .collect();
        if orphans.is_empty() {
            return Ok(0);
        }
        let packs: Vec<IndexedPack> = orphans
            .par_iter()
            .filter_map(|(id, kind, size)| self.read_pack_header(id, *kind, *size).ok())
            .collect();
        if !packs.is_empty() {
            self.save_index(&packs)?;
            self.index_packs(&packs)?;
        }
        Ok(packs.len())
    }

    // ---- blobs ------------------------------------------------------------

    /// Reads, decrypts and checks one blob. `raw_len` sizes the decompression
    /// buffer. Many blobs at once: [`read_blobs`](Self::read_blobs).
    pub fn read_blob(&self, id: &BlobId, raw_len: Option<usize>) -> Result<Vec<u8>> {
        let read = std::sync::OnceLock::new();
        let wanted = super::blobs::WantedBlob {
            id: *id,
            raw_len: raw_len.map(|n| n as u32),
            tag: (),
        };
        self.read_blobs(vec![wanted], |_, plain| {
            let _ = read.set(plain);
            Ok(())
        })?;
        read.into_inner()
            .expect("the reader hands out every wanted blob")
    }

    /// Drops a damaged cached copy of `key` and reads the repository's own.
    pub(super) fn reread_uncached(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes> {
        if let Some(c) = &self.cache {
            c.forget(key);
        }
        self.get_exact_range_uncached(key, range)
    }

    pub fn decode_blob(
        &self,
        id: &BlobId,
        sealed: &[u8],
        raw_len: Option<usize>,
    ) -> Result<Vec<u8>> {
        let plain = blob::decode(&self.cipher, id, sealed, raw_len)
            .map_err(|e| Error::corrupt(format!("blob {id}"), e))?;
        if self.hasher.id(&plain) != *id {
            return Err(Error::corrupt(
                format!("blob {id}"),
                blob::BlobDecodeError::HashMismatch,
            ));
        }
        Ok(plain)
    }

    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.read_blob(id, None)?;
        Tree::from_bytes(&bytes).map_err(|e| Error::corrupt(format!("tree {id}"), e))
    }

    /// Loads several trees with one read per run of neighbouring tree blobs
    /// (a walk's trees were mostly written side by side), decoded in
    /// parallel; each with its own outcome, in the order asked.
    pub fn load_trees(&self, ids: &[BlobId]) -> Vec<Result<Tree>> {
        let slots: Vec<std::sync::OnceLock<Result<Tree>>> =
            ids.iter().map(|_| std::sync::OnceLock::new()).collect();
        let wanted = ids
            .iter()
            .enumerate()
            .map(|(i, id)| super::blobs::WantedBlob {
                id: *id,
                raw_len: None,
                tag: i,
            })
            .collect();
        let read = self.read_blobs(wanted, |w, plain| {
            let tree = plain.and_then(|bytes| {
                Tree::from_bytes(&bytes).map_err(|e| Error::corrupt(format!("tree {}", w.id), e))
            });
            let _ = slots[w.tag].set(tree);
            Ok(())
        });
        debug_assert!(read.is_ok(), "the callback never fails");
        slots
            .into_iter()
            .zip(ids)
            .map(|(slot, id)| {
                slot.into_inner()
                    .unwrap_or_else(|| Err(Error::corrupt(format!("tree {id}"), "not read")))
            })
            .collect()
    }

    // ---- snapshots --------------------------------------------------------

    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        self.ensure_writable()?;
        let bytes = objects::seal_json(&self.cipher, aad::SNAPSHOT, snap);
        let id = SnapshotId(storage_hash(&bytes));
        let key = format!("{SNAPSHOTS_DIR}/{id}");
        // The next backup reads it as its parent: cached as written.
        if let Some(c) = &self.cache {
            c.put(&key, &bytes);
        }
        self.backend.create(&key, bytes)?;
        Ok(id)
    }

    /// Loads a snapshot: from the cache when it has it (no request at all),
    /// else refusing, before downloading, one stored larger than any snapshot.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let key = format!("{SNAPSHOTS_DIR}/{id}");
        let bytes = self
            .get_named_bounded(&key, Some(MAX_METADATA_LEN))
            .map_err(|e| match e {
                Error::Corrupt { .. } => {
                    Error::corrupt(format!("snapshot {id}"), "larger than any snapshot")
                }
                other => other,
            })?;
        objects::open_json(&self.cipher, aad::SNAPSHOT, &bytes)
            .map_err(|e| Error::format(format!("snapshot {id}"), e))
    }

    /// Deletes a snapshot object (its data stays until a prune, which also
    /// removes its session's records). Takes no lock: a collector that
    /// analysed the snapshot is merely conservative.
    pub fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.ensure_writable()?;
        let key = format!("{SNAPSHOTS_DIR}/{id}");
        self.backend.delete(&key)?;
        if let Some(c) = &self.cache {
            c.forget(&key);
        }
        Ok(())
    }

    /// Whether the snapshot object is still stored (one HEAD request).
    pub fn snapshot_exists(&self, id: &SnapshotId) -> Result<bool> {
        self.backend.exists(&format!("{SNAPSHOTS_DIR}/{id}"))
    }

    /// [`delete_snapshot`](Self::delete_snapshot), but false when the store
    /// refuses because the object is locked (an immutability or retention
    /// policy): the snapshot stays, valid, until a later forget.
    pub fn delete_snapshot_unless_locked(&self, id: &SnapshotId) -> Result<bool> {
        self.ensure_writable()?;
        let key = format!("{SNAPSHOTS_DIR}/{id}");
        match self.backend.delete_unless_refused(&key)? {
            crate::storage::Deletion::Deleted => {
                if let Some(c) = &self.cache {
                    c.forget(&key);
                }
                Ok(true)
            }
            crate::storage::Deletion::Refused(_) => Ok(false),
        }
    }

    /// The sessions that have an `.end` record (one listing of `sessions/`).
    pub fn ended_sessions(&self) -> Result<HashSet<String>> {
        Ok(self
            .backend
            .list(records::SESSIONS_DIR)?
            .iter()
            .filter_map(|l| records::parse_session_key(&l.key))
            .filter(|(_, what)| *what == "end")
            .map(|(sid, _)| sid.to_string())
            .collect())
    }

    /// Whether a snapshot is valid: written before sessions existed, or its
    /// session's `.end` says committed with this snapshot (rule 3). A snapshot
    /// of a session still running, aborted or fenced is not.
    pub fn snapshot_is_valid(
        &self,
        id: &SnapshotId,
        snap: &Snapshot,
        ended: &HashSet<String>,
    ) -> Result<bool> {
        let Some(sid) = &snap.session else {
            return Ok(true);
        };
        if !ended.contains(sid) {
            return Ok(false);
        }
        let key = records::session_key(sid, "end");
        // The listing said the record exists; a cached copy that
        // authenticates is the record (it never changes once created).
        let cache = self
            .cache
            .as_ref()
            .filter(|_| Cache::caches_end_records(&key));
        if let Some(c) = cache {
            if let Some(bytes) = c.get_end_record(&key) {
                match records::open_record::<SessionEnd>(&self.cipher, &key, &bytes) {
                    Ok(end) => return Ok(end_commits(&end, id)),
                    Err(_) => c.forget(&key),
                }
            }
        }
        let bytes = match self
            .backend
            .get_bounded(&key, records::MAX_SMALL_RECORD_LEN)
        {
            Ok(b) => b,
            Err(Error::MissingObject(_)) => return Ok(false), // forgotten meanwhile
            Err(e) if is_content_error(&e) => return Ok(self.valid_by_doubt(id, &e)),
            Err(e) => return Err(e),
        };
        let end = records::open_record::<SessionEnd>(&self.cipher, &key, &bytes);
        if let (Ok(_), Some(c)) = (&end, cache) {
            c.put(&key, &bytes);
        }
        match end {
            Ok(end) => Ok(end_commits(&end, id)),
            Err(e) => Ok(self.valid_by_doubt(id, &Error::format(key, e))),
        }
    }

    /// A snapshot whose `.end` is damaged may have been committed: it counts
    /// as valid, so that no prune deletes its data (rule 13); `check` reports
    /// the record.
    fn valid_by_doubt(&self, id: &SnapshotId, e: &Error) -> bool {
        self.warn(format!(
            "snapshot {id}: its session record is damaged ({e}); kept as valid (run check)"
        ));
        true
    }

    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .backend
            .list(SNAPSHOTS_DIR)?
            .iter()
            .filter_map(|l| id_from_key(&l.key))
            .collect())
    }

    /// Every valid, readable snapshot, oldest first. One that cannot be read
    /// (damaged, or not matching its name) is skipped with a warning, one whose
    /// session never committed silently; `check` reports both.
    pub fn list_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let all = self.list_all_snapshots()?;
        let ended = self.ended_sessions()?;
        let valid: Vec<Result<bool>> = all
            .par_iter()
            .map(|(id, s)| self.snapshot_is_valid(id, s, &ended))
            .collect();
        let mut out = Vec::with_capacity(all.len());
        for (snap, v) in all.into_iter().zip(valid) {
            if v? {
                out.push(snap);
            }
        }
        Ok(out)
    }

    /// Every readable snapshot object, valid or not, oldest first.
    pub fn list_all_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let ids = self.snapshot_ids()?;
        let loaded: Vec<(SnapshotId, Result<Snapshot>)> = ids
            .par_iter()
            .map(|id| (*id, self.load_snapshot(id)))
            .collect();
        let mut snaps = Vec::with_capacity(loaded.len());
        for (id, r) in loaded {
            match r {
                Ok(s) => snaps.push((id, s)),
                Err(Error::MissingObject(_)) => {} // forgotten meanwhile
                Err(e) if is_content_error(&e) => self.warn(format!("skipping snapshot {id}: {e}")),
                Err(e) => return Err(e),
            }
        }
        snaps.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(snaps)
    }

    /// Resolves `latest`, a full ID or a unique prefix of at least 4 hex digits.
    pub fn find_snapshot(
        &self,
        selector: &str,
        filter: &SnapshotFilter,
    ) -> Result<(SnapshotId, Snapshot)> {
        if selector == "latest" {
            return self
                .list_snapshots()?
                .into_iter()
                .filter(|(_, s)| filter.matches(s))
                .next_back()
                .ok_or_else(|| Error::SnapshotNotFound("latest".into()));
        }
        let sel = selector.to_lowercase();
        if sel.len() > 64 || !sel.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(selector.to_string()));
        }
        if sel.len() < 4 {
            return Err(Error::PrefixTooShort(selector.to_string()));
        }
        let hits: Vec<SnapshotId> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&sel))
            .collect();
        match hits.as_slice() {
            [] => Err(Error::SnapshotNotFound(selector.to_string())),
            [one] => {
                let snap = self.load_snapshot(one)?;
                if !self.snapshot_is_valid(one, &snap, &self.ended_sessions()?)? {
                    return Err(Error::SnapshotNotFound(selector.to_string()));
                }
                Ok((*one, snap))
            }
            _ => Err(Error::AmbiguousSnapshot(selector.to_string())),
        }
    }
}

/// Whether an error is about an object's content (damaged, misnamed, not
/// decodable), as opposed to storage being unreachable.
pub fn is_content_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt { .. } | Error::Format { .. } | Error::Pack { .. } | Error::NameMismatch(_)
    )
}

/// Narrows snapshot lists and `latest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            // Each --tag may be "a,b": the snapshot must carry all of a and b (as restic).
            && (self.tags.is_empty()
                || self.tags.iter().any(|t| t.split(',').filter(|x| !x.is_empty()).all(|x| s.has_tag(x))))
            && (self.paths.is_empty() || self.paths.iter().all(|p| s.paths.contains(p)))
    }
}

/// Shared handle for operations that run on several threads.
pub type SharedRepo = Arc<Repository>;

/// Whether an end record commits snapshot `id`.
fn end_commits(end: &SessionEnd, id: &SnapshotId) -> bool {
    matches!(end, SessionEnd::Committed { snapshot: Some(s), .. } if s == id)
}

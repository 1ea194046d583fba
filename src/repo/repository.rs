//! A repository: opens and creates one, unlocks its key, reads and writes its
//! objects. Operations (backup, restore, check) build on the narrow pieces here.

use std::sync::Arc;

use rand::RngCore;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::blob::{self, BlobType};
use crate::format::chunker::ChunkerParams;
use crate::format::crypto::{
    aad, derive_wrapping_key, BlobHasher, Cipher, KdfParams, MasterKey, Secret,
};
use crate::format::id::{storage_hash, BlobId, IndexId, KeyId, PackId, SnapshotId};
use crate::format::objects::{self, Config, IndexedPack, KeyFile, REPO_VERSION};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::repo::index::MasterIndex;
use crate::storage::{Backend, Created};

pub const CONFIG_KEY: &str = "config";
pub const KEYS_DIR: &str = "keys";
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const INDEX_DIR: &str = "index";
pub const LOCKS_DIR: &str = "locks";

/// Storage key of a pack: `data/ab/ab…` or `tree/ab/ab…`.
pub fn pack_key(kind: BlobType, id: &PackId) -> String {
    let h = id.to_hex();
    format!("{}/{}/{}", kind.dir(), &h[..2], h)
}

/// Parses the ID out of the last component of a storage key.
pub fn id_from_key<T: std::str::FromStr>(key: &str) -> Option<T> {
    key.rsplit('/').next()?.parse().ok()
}

/// Writes an index object listing packs; returns its ID.
pub(crate) fn store_index(
    backend: &Backend,
    cipher: &Cipher,
    packs: &[IndexedPack],
) -> Result<IndexId> {
    let bytes = objects::seal_object(cipher, aad::INDEX, &objects::encode_index(packs));
    let id = IndexId(storage_hash(&bytes));
    backend.create(&format!("{INDEX_DIR}/{id}"), bytes)?;
    Ok(id)
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
}

pub struct Repository {
    backend: Backend,
    master: MasterKey,
    key_id: KeyId,
    cipher: Cipher,
    hasher: BlobHasher,
    config: Config,
    index: MasterIndex,
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

/// The largest argon2 memory a key object may ask for: a storage provider
/// could otherwise make every open allocate without bound.
const MAX_KDF_MEMORY_KIB: u32 = 4 * 1024 * 1024;

fn make_key_file(
    master: &MasterKey,
    password: &[u8],
    params: KdfParams,
) -> Result<(KeyId, Vec<u8>)> {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let wrap = derive_wrapping_key(password, &salt, params)
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let sealed = Cipher::new(&wrap).seal(master.bytes(), aad::KEY);
    let kf = KeyFile {
        version: 1,
        kdf: "argon2id".into(),
        params,
        salt: objects::to_b64(&salt),
        master_key: objects::to_b64(&sealed),
        created: chrono::Utc::now(),
        hostname: hostname(),
        username: username(),
    };
    let bytes = serde_json::to_vec_pretty(&kf).expect("serializing a key");
    Ok((KeyId(storage_hash(&bytes)), bytes))
}

/// Tries one key object against a password.
fn unwrap_key(kf: &KeyFile, password: &[u8]) -> Option<MasterKey> {
    if kf.version != 1 || kf.kdf != "argon2id" || kf.params.m_cost_kib > MAX_KDF_MEMORY_KIB {
        return None;
    }
    let salt = kf.salt_bytes().ok()?;
    let wrap = derive_wrapping_key(password, &salt, kf.params).ok()?;
    let plain = Cipher::new(&wrap)
        .open(&kf.sealed_master_key().ok()?, aad::KEY)
        .ok()?;
    let bytes: [u8; 32] = plain.try_into().ok()?;
    Some(MasterKey::from_bytes(bytes))
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
        let chunker = opts
            .chunker
            .unwrap_or_else(|| ChunkerParams::with_seed(master.default_chunker_seed()));
        chunker.validate().map_err(Error::InvalidArgument)?;
        let mut repo_id = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut repo_id);
        let config = Config {
            version: REPO_VERSION,
            id: hex::encode(repo_id),
            chunker,
            blob_id_key: opts.blob_id_key.unwrap_or(master.default_id_key().0),
            pack_size: opts.pack_size.unwrap_or(objects::DEFAULT_PACK_SIZE),
            compression: opts.compression.unwrap_or(objects::DEFAULT_COMPRESSION),
        };
        if !(-7..=22).contains(&config.compression) {
            return Err(Error::InvalidArgument(format!(
                "compression level {} is outside -7..=22",
                config.compression
            )));
        }
        if config.pack_size < 1024 * 1024 || config.pack_size > 1024 * 1024 * 1024 {
            return Err(Error::InvalidArgument(
                "pack size must be between 1 MiB and 1 GiB".into(),
            ));
        }
        // The key goes first: a config without a key would be a repository nobody can open.
        let (key_id, key_bytes) = make_key_file(&master, password, opts.kdf.unwrap_or_default())?;
        backend.create(&format!("{KEYS_DIR}/{key_id}"), key_bytes)?;
        let cipher = master.cipher();
        let config_bytes = objects::seal_json(&cipher, aad::CONFIG, &config);
        if backend.create(CONFIG_KEY, config_bytes)? == Created::AlreadyExisted {
            backend.delete(&format!("{KEYS_DIR}/{key_id}"))?;
            return Err(Error::RepoExists(backend.location().to_string()));
        }
        Ok(Self::assemble(backend, master, key_id, config))
    }

    fn assemble(backend: Backend, master: MasterKey, key_id: KeyId, config: Config) -> Repository {
        let cipher = master.cipher();
        let hasher = BlobHasher::new(&Secret(config.blob_id_key));
        Repository {
            backend,
            master,
            key_id,
            cipher,
            hasher,
            config,
            index: MasterIndex::new(),
        }
    }

    /// Checks a repository exists at the backend, without needing a password.
    pub fn exists(backend: &Backend) -> Result<bool> {
        backend.exists(CONFIG_KEY)
    }

    /// Opens a repository with a password. The index is not loaded yet.
    pub fn open(backend: Backend, password: &[u8]) -> Result<Repository> {
        let config_bytes = match backend.get(CONFIG_KEY) {
            Ok(b) => b,
            Err(Error::MissingObject(_)) => {
                return Err(Error::RepoNotFound(backend.location().to_string()))
            }
            Err(e) => return Err(e),
        };
        let (key_id, master) = Self::find_key(&backend, password)?;
        let config: Config = objects::open_json(&master.cipher(), aad::CONFIG, &config_bytes)
            .map_err(|e| Error::format("config", e))?;
        if config.version != REPO_VERSION {
            return Err(Error::InvalidArgument(format!(
                "repository format version {} is not supported by this cairn (it reads version {REPO_VERSION})",
                config.version
            )));
        }
        Ok(Self::assemble(backend, master, key_id, config))
    }

    fn find_key(backend: &Backend, password: &[u8]) -> Result<(KeyId, MasterKey)> {
        for listed in backend.list(KEYS_DIR)? {
            let Some(id) = id_from_key::<KeyId>(&listed.key) else {
                continue;
            };
            let Ok(kf) = serde_json::from_slice::<KeyFile>(&backend.get(&listed.key)?) else {
                continue;
            };
            if let Some(mk) = unwrap_key(&kf, password) {
                return Ok((id, mk));
            }
        }
        Err(Error::WrongPassword)
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
            let kf = serde_json::from_slice(&self.backend.get(&listed.key)?)
                .map_err(|e| Error::corrupt(format!("key {id}"), e))?;
            out.push((id, kf));
        }
        out.sort_by_key(|(_, kf): &(KeyId, KeyFile)| kf.created);
        Ok(out)
    }

    pub fn add_key(&self, password: &[u8], kdf: Option<KdfParams>) -> Result<KeyId> {
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
        let keys = self.list_keys()?;
        let matches: Vec<KeyId> = keys
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| id.to_hex().starts_with(&selector.to_lowercase()))
            .collect();
        let id = match matches.as_slice() {
            [] => {
                return Err(Error::InvalidArgument(format!(
                    "no key matches '{selector}' (see `cairn key list`)"
                )))
            }
            [one] => *one,
            _ => {
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

    /// Replaces the key in use with one for a new password.
    pub fn change_password(&mut self, new_password: &[u8]) -> Result<KeyId> {
        let new_id = self.add_key(new_password, None)?;
        self.backend
            .delete(&format!("{KEYS_DIR}/{}", self.key_id))?;
        self.key_id = new_id;
        Ok(new_id)
    }

    // ---- index ------------------------------------------------------------

    /// Loads every index object into memory (in parallel).
    /// Index objects are decoded a few at a time, in parallel, and folded into
    /// the sorted array, so the decoded form never exists for all at once.
    pub fn load_index(&mut self) -> Result<()> {
        let listed = self.backend.list(INDEX_DIR)?;
        let mut idx = MasterIndex::new();
        // Each blob takes 44 payload bytes and random IDs do not compress: the
        // stored size predicts the entry count closely enough to allocate once.
        idx.reserve(listed.iter().map(|l| l.size as usize / 44).sum());
        for group in listed.chunks(4 * rayon::current_num_threads().max(1)) {
            let decoded: Vec<Vec<IndexedPack>> = group
                .par_iter()
                .map(|l| self.read_index_object(&l.key))
                .collect::<Result<_>>()?;
            for p in decoded.iter().flatten() {
                idx.add_pack(p);
            }
        }
        idx.finish();
        self.index = idx;
        Ok(())
    }

    pub fn read_index_object(&self, key: &str) -> Result<Vec<IndexedPack>> {
        let bytes = self.backend.get(key)?;
        let what = || format!("index {}", key.rsplit('/').next().unwrap_or(key));
        if storage_hash(&bytes).to_vec()
            != hex::decode(key.rsplit('/').next().unwrap_or("")).unwrap_or_default()
        {
            return Err(Error::corrupt(what(), "content does not match its name"));
        }
        let plain = objects::open_object(&self.cipher, aad::INDEX, &bytes)
            .map_err(|e| Error::format(what(), e))?;
        objects::decode_index(&plain).map_err(|e| Error::format(what(), e))
    }

    /// Writes an index object for packs; returns its ID.
    pub fn save_index(&self, packs: &[IndexedPack]) -> Result<IndexId> {
        store_index(&self.backend, &self.cipher, packs)
    }

    /// Adds packs to the in-memory index (after a backup wrote them).
    pub fn index_packs(&mut self, packs: &[IndexedPack]) {
        for p in packs {
            self.index.add_pack(p);
        }
        self.index.finish();
    }

    /// Every pack in storage, by listing.
    pub fn list_packs(&self) -> Result<Vec<(PackId, BlobType, u64)>> {
        let mut out = Vec::new();
        for kind in [BlobType::Data, BlobType::Tree] {
            for l in self.backend.list(kind.dir())? {
                if let Some(id) = id_from_key::<PackId>(&l.key) {
                    out.push((id, kind, l.size));
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
        if size < 4 {
            return Err(perr(crate::format::pack::PackError::TooShort));
        }
        let trailer = self.backend.get_range(&key, size - 4..size)?;
        let n = crate::format::pack::header_length(size, &trailer).map_err(perr)? as u64;
        let start = size - 4 - n;
        let sealed = self.backend.get_range(&key, start..size - 4)?;
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

    /// Indexes packs that storage holds but no index names: what an interrupted
    /// backup uploaded. Returns how many packs were adopted.
    pub fn adopt_unindexed_packs(&mut self) -> Result<usize> {
        let orphans: Vec<_> = self
            .list_packs()?
            .into_iter()
            .filter(|(id, _, _)| !self.index.has_pack(id))
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
            self.index_packs(&packs);
        }
        Ok(packs.len())
    }

    // ---- blobs ------------------------------------------------------------

    /// Reads, decrypts and checks one blob. `raw_len` sizes the decompression buffer.
    pub fn read_blob(&self, id: &BlobId, raw_len: Option<usize>) -> Result<Vec<u8>> {
        let loc = self
            .index
            .lookup(id)
            .ok_or_else(|| Error::BlobNotIndexed(id.to_hex()))?;
        let sealed = self.backend.get_range(
            &pack_key(loc.kind, &loc.pack),
            loc.offset as u64..loc.offset as u64 + loc.length as u64,
        )?;
        self.decode_blob(id, &sealed, raw_len)
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

    // ---- snapshots --------------------------------------------------------

    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let bytes = objects::seal_json(&self.cipher, aad::SNAPSHOT, snap);
        let id = SnapshotId(storage_hash(&bytes));
        self.backend
            .create(&format!("{SNAPSHOTS_DIR}/{id}"), bytes)?;
        Ok(id)
    }

    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let bytes = self.backend.get(&format!("{SNAPSHOTS_DIR}/{id}"))?;
        objects::open_json(&self.cipher, aad::SNAPSHOT, &bytes)
            .map_err(|e| Error::format(format!("snapshot {id}"), e))
    }

    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .backend
            .list(SNAPSHOTS_DIR)?
            .iter()
            .filter_map(|l| id_from_key(&l.key))
            .collect())
    }

    /// Every snapshot, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let ids = self.snapshot_ids()?;
        let mut snaps: Vec<(SnapshotId, Snapshot)> = ids
            .par_iter()
            .map(|id| Ok((*id, self.load_snapshot(id)?)))
            .collect::<Result<_>>()?;
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
        if sel.len() < 4 || sel.len() > 64 || !sel.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(selector.to_string()));
        }
        let hits: Vec<SnapshotId> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&sel))
            .collect();
        match hits.as_slice() {
            [] => Err(Error::SnapshotNotFound(selector.to_string())),
            [one] => Ok((*one, self.load_snapshot(one)?)),
            _ => Err(Error::AmbiguousSnapshot(selector.to_string())),
        }
    }
}

/// Narrows snapshot lists and `latest`.
#[derive(Debug, Clone, Default)]
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

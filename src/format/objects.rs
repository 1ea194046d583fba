//! Encrypted metadata objects and their versioned contents: config, key, index.
//!
//! Every metadata object except a key is `version u8 || sealed(zstd(payload))`
//! with the associated data of its kind, so the version is read before anything is
//! decrypted and an object of one kind cannot stand in for another. From envelope
//! version 2 on, the version byte is part of the associated data too.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::format::blob::{BlobType, Padding};
use crate::format::chunker::ChunkerParams;
use crate::format::crypto::{Cipher, DecryptError, KdfParams};
use crate::format::id::{BlobId, PackId};
use crate::format::pack::PackEntry;

/// The envelope version written by this build.
pub const OBJECT_VERSION: u8 = 2;
/// The repository format version (in the config) written by this build.
pub const REPO_VERSION: u32 = 2;
/// The oldest repository format this build reads (format 1: read only).
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// No metadata object (config, index, snapshot, lock, ...) decompresses to more
/// than this: a hostile or damaged frame cannot make a command allocate without bound.
pub const MAX_METADATA_LEN: u64 = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("object is empty")]
    Empty,
    #[error("unsupported object version {0} (this cairn reads versions 1 and {OBJECT_VERSION})")]
    Version(u8),
    #[error("decryption failed (wrong key or damaged object)")]
    Decrypt(#[from] DecryptError),
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("malformed content: {0}")]
    Malformed(String),
}

/// The associated data of an envelope: its kind, then (from version 2) the
/// version byte, so that neither can be altered without failing the MAC.
fn envelope_aad(kind: &[u8], version: u8) -> Vec<u8> {
    let mut a = kind.to_vec();
    if version >= 2 {
        a.push(version);
    }
    a
}

/// Seals a metadata payload into an object.
pub fn seal_object(cipher: &Cipher, aad: &[u8], payload: &[u8]) -> Vec<u8> {
    let compressed = zstd::bulk::compress(payload, 3).expect("zstd on a memory buffer");
    let sealed = cipher.seal(&compressed, &envelope_aad(aad, OBJECT_VERSION));
    let mut out = Vec::with_capacity(1 + sealed.len());
    out.push(OBJECT_VERSION);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a metadata object, checking its version first. Decompression stops
/// at [`MAX_METADATA_LEN`].
pub fn open_object(cipher: &Cipher, aad: &[u8], bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
    let (&version, sealed) = bytes.split_first().ok_or(FormatError::Empty)?;
    if version != 1 && version != OBJECT_VERSION {
        return Err(FormatError::Version(version));
    }
    let compressed = cipher.open(sealed, &envelope_aad(aad, version))?;
    decompress_bounded(&compressed, MAX_METADATA_LEN)
}

/// Decompresses a zstd stream, failing once the output would exceed `limit`.
pub fn decompress_bounded(frame: &[u8], limit: u64) -> Result<Vec<u8>, FormatError> {
    let derr = |e: std::io::Error| FormatError::Decompress(e.to_string());
    let decoder = zstd::stream::read::Decoder::new(frame).map_err(derr)?;
    crate::format::blob::read_bounded(decoder, limit).map_err(derr)
}

pub fn seal_json<T: Serialize>(cipher: &Cipher, aad: &[u8], value: &T) -> Vec<u8> {
    seal_object(
        cipher,
        aad,
        &serde_json::to_vec(value).expect("serializing a plain struct"),
    )
}

pub fn open_json<T: for<'de> Deserialize<'de>>(
    cipher: &Cipher,
    aad: &[u8],
    bytes: &[u8],
) -> Result<T, FormatError> {
    let plain = open_object(cipher, aad, bytes)?;
    serde_json::from_slice(&plain).map_err(|e| FormatError::Malformed(e.to_string()))
}

/// The repository's parameters, fixed at `init`. Stored encrypted as `config`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    pub version: u32,
    /// Random identifier of this repository, hex.
    pub id: String,
    pub chunker: ChunkerParams,
    /// Key of the keyed BLAKE3 that names blobs. Shared by repositories made with
    /// `init --from`, so their blob IDs (and dedup) agree.
    #[serde(with = "crate::format::id::hex32")]
    pub blob_id_key: [u8; 32],
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// zstd level for blobs; 0 stores them uncompressed.
    pub compression: i32,
    /// Blob padding; absent (none) in format 1.
    #[serde(default = "no_padding")]
    pub padding: Padding,
    /// The shortest time the store keeps an object once written (an S3 Object
    /// Lock default retention, an Azure immutability policy, a GCS retention
    /// policy), in seconds, as `init --min-retention` recorded it. Prune never
    /// condemns a pack younger than this. Absent: no retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retention_secs: Option<u64>,
}

/// The longest minimum retention a config may record: 100 years.
pub const MAX_MIN_RETENTION_SECS: u64 = 100 * 365 * 86_400;

fn no_padding() -> Padding {
    Padding::None
}

pub const MIN_PACK_SIZE: u32 = 1024 * 1024;
pub const MAX_PACK_SIZE: u32 = 1024 * 1024 * 1024;
pub const COMPRESSION_LEVELS: std::ops::RangeInclusive<i32> = -7..=22;

impl Config {
    /// Every value within the bounds this build works with, and consistent with
    /// the format version. Checked at `init` and on every open, so that a damaged
    /// or hostile config fails with a clear message instead of misbehaving later.
    pub fn validate(&self) -> Result<(), String> {
        if !(OLDEST_READABLE_VERSION..=REPO_VERSION).contains(&self.version) {
            return Err(format!(
                "repository format version {} is not supported by this cairn (it reads versions {OLDEST_READABLE_VERSION} to {REPO_VERSION})",
                self.version
            ));
        }
        self.chunker.validate()?;
        let v2 = self.version >= 2;
        if v2 != self.chunker.key.is_some() || v2 == (self.chunker.seed != 0) {
            return Err("chunker secret does not match the format version".into());
        }
        if v2 == (self.padding == Padding::None) {
            return Err("blob padding does not match the format version".into());
        }
        if !(MIN_PACK_SIZE..=MAX_PACK_SIZE).contains(&self.pack_size) {
            return Err("pack size must be between 1 MiB and 1 GiB".into());
        }
        if !COMPRESSION_LEVELS.contains(&self.compression) {
            return Err(format!(
                "compression level {} is outside -7..=22",
                self.compression
            ));
        }
        if self.id.len() != 64 || !self.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("repository ID is not 64 hex digits".into());
        }
        if self
            .min_retention_secs
            .is_some_and(|r| r == 0 || r > MAX_MIN_RETENTION_SECS)
        {
            return Err("minimum retention must be from 1 second to 100 years".into());
        }
        Ok(())
    }
}

/// Default pack target: 8 MiB. Large enough that per-request costs on cloud
/// buckets stay small (restic used 4 MiB for years), small enough that the packs
/// in flight (one per worker thread) keep a backup's peak memory low.
pub const DEFAULT_PACK_SIZE: u32 = 8 * 1024 * 1024;
pub const DEFAULT_COMPRESSION: i32 = 3;

/// A key object: plaintext JSON; the master key inside is sealed under a key
/// derived from a password with argon2id. In key version 2 the associated data
/// of that seal covers every other field (see [`key_aad`]), so hostname,
/// username, creation time and KDF parameters cannot be edited unseen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub kdf: String,
    pub params: KdfParams,
    /// base64 (standard, padded) of the 16-byte salt.
    pub salt: String,
    /// base64 of `sealed(master key)`.
    pub master_key: String,
    pub created: chrono::DateTime<chrono::Utc>,
    pub hostname: String,
    pub username: String,
}

/// The key version written by this build.
pub const KEY_VERSION: u32 = 2;

impl KeyFile {
    pub fn salt_bytes(&self) -> Result<Vec<u8>, FormatError> {
        b64(&self.salt)
    }
    pub fn sealed_master_key(&self) -> Result<Vec<u8>, FormatError> {
        b64(&self.master_key)
    }

    /// Parses a stored key object; returns it with the associated data its
    /// master key was sealed with.
    pub fn parse(bytes: &[u8]) -> Result<(KeyFile, Vec<u8>), FormatError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| FormatError::Malformed(e.to_string()))?;
        let kf: KeyFile = serde_json::from_value(value.clone())
            .map_err(|e| FormatError::Malformed(e.to_string()))?;
        let aad = match kf.version {
            1 => b"cairn:key".to_vec(),
            2 => key_aad(&value),
            v => return Err(FormatError::Malformed(format!("unknown key version {v}"))),
        };
        Ok((kf, aad))
    }

    /// Serialises a version 2 key whose `master_key` is sealed by `seal(aad)`.
    pub fn seal(mut self, seal: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<u8> {
        self.version = KEY_VERSION;
        self.master_key = String::new();
        let value = serde_json::to_value(&self).expect("serializing a key");
        self.master_key = to_b64(&seal(&key_aad(&value)));
        serde_json::to_vec_pretty(&self).expect("serializing a key")
    }
}

/// Associated data of a version 2 key's sealed master key: `cairn:key:2:` and
/// the canonical JSON (keys sorted, no whitespace) of every field but
/// `master_key`, as stored.
pub fn key_aad(value: &serde_json::Value) -> Vec<u8> {
    let mut fields = value.clone();
    if let Some(map) = fields.as_object_mut() {
        map.remove("master_key");
    }
    let mut out = b"cairn:key:2:".to_vec();
    write_canonical(&fields, &mut out);
    out
}

/// JSON with object keys in byte order and no whitespace, whatever order the
/// document had (so the writer and any reader agree on the bytes).
fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).expect("a string"));
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).expect("a scalar")),
    }
}

pub fn b64(s: &str) -> Result<Vec<u8>, FormatError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| FormatError::Malformed(e.to_string()))
}

pub fn to_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// One pack as listed in an index object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    pub id: PackId,
    pub kind: BlobType,
    pub blobs: Vec<PackEntry>,
}

const INDEX_VERSION: u8 = 1;

/// Index payload (before the envelope):
/// `version u8 (1) || pack_count u32 || per pack: id[32] type u8 blob_count u32
///  blob_count × (id[32] offset u32 length u32 raw_length u32)`, integers little-endian.
pub fn encode_index(packs: &[IndexedPack]) -> Vec<u8> {
    let blobs: usize = packs.iter().map(|p| p.blobs.len()).sum();
    let mut out = Vec::with_capacity(5 + packs.len() * 37 + blobs * 44);
    out.push(INDEX_VERSION);
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        out.extend_from_slice(p.id.as_bytes());
        out.push(p.kind.code());
        out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
        for b in &p.blobs {
            out.extend_from_slice(b.id.as_bytes());
            out.extend_from_slice(&b.offset.to_le_bytes());
            out.extend_from_slice(&b.length.to_le_bytes());
            out.extend_from_slice(&b.raw_length.to_le_bytes());
        }
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.buf.len() < n {
            return Err(FormatError::Malformed("index ends early".into()));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn id(&mut self) -> Result<[u8; 32], FormatError> {
        Ok(self.take(32)?.try_into().unwrap())
    }
}

pub fn decode_index(payload: &[u8]) -> Result<Vec<IndexedPack>, FormatError> {
    let mut r = Reader { buf: payload };
    let v = r.u8()?;
    if v != INDEX_VERSION {
        return Err(FormatError::Malformed(format!(
            "unsupported index version {v}"
        )));
    }
    // Counts are capped by the bytes left (a pack takes at least 37, a blob
    // 44), so a huge count in a short payload cannot size an allocation.
    let n = r.u32()? as usize;
    let mut packs = Vec::with_capacity(n.min(r.buf.len() / 37));
    for _ in 0..n {
        let id = PackId(r.id()?);
        let kind = BlobType::from_code(r.u8()?)
            .ok_or_else(|| FormatError::Malformed("unknown pack type".into()))?;
        let count = r.u32()? as usize;
        let mut blobs = Vec::with_capacity(count.min(r.buf.len() / 44));
        for _ in 0..count {
            blobs.push(PackEntry {
                id: BlobId(r.id()?),
                offset: r.u32()?,
                length: r.u32()?,
                raw_length: r.u32()?,
            });
        }
        packs.push(IndexedPack { id, kind, blobs });
    }
    if !r.buf.is_empty() {
        return Err(FormatError::Malformed("trailing bytes after index".into()));
    }
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::{KdfParams, Secret};

    #[test]
    fn object_round_trip_and_version_check() {
        let c = Cipher::new(&Secret([4; 32]));
        let obj = seal_object(&c, b"k", b"payload");
        assert_eq!(open_object(&c, b"k", &obj).unwrap(), b"payload");
        let mut future = obj.clone();
        future[0] = 3;
        assert_eq!(open_object(&c, b"k", &future), Err(FormatError::Version(3)));
        // The version byte is authenticated: turning a version 2 object into a
        // version 1 one fails the MAC.
        let mut downgraded = obj.clone();
        downgraded[0] = 1;
        assert!(matches!(
            open_object(&c, b"k", &downgraded),
            Err(FormatError::Decrypt(_))
        ));
        assert_eq!(open_object(&c, b"k", &[]), Err(FormatError::Empty));
    }

    #[test]
    fn metadata_decompression_is_bounded() {
        let bomb = zstd::bulk::compress(&vec![0u8; 4 << 20], 19).unwrap();
        assert!(bomb.len() < 4096);
        assert!(decompress_bounded(&bomb, 1 << 20).is_err());
        assert_eq!(decompress_bounded(&bomb, 4 << 20).unwrap().len(), 4 << 20);
    }

    #[test]
    fn key_metadata_is_authenticated() {
        let kf = KeyFile {
            version: 0,
            kdf: "argon2id".into(),
            params: KdfParams::default(),
            salt: to_b64(&[1; 16]),
            master_key: String::new(),
            created: chrono::Utc::now(),
            hostname: "h".into(),
            username: "u".into(),
        };
        let c = Cipher::new(&Secret([9; 32]));
        let bytes = kf.seal(|aad| c.seal(b"master", aad));
        let (parsed, aad) = KeyFile::parse(&bytes).unwrap();
        assert_eq!(parsed.version, KEY_VERSION);
        assert_eq!(
            c.open(&parsed.sealed_master_key().unwrap(), &aad).unwrap(),
            b"master"
        );
        // Any edit of a field, or a reordering of the document, keeps or breaks the
        // associated data exactly as it should.
        let text = String::from_utf8(bytes).unwrap();
        for (from, to) in [("\"h\"", "\"evil\""), ("\"u\"", "\"root\"")] {
            let edited = text.replacen(from, to, 1);
            let (p, aad) = KeyFile::parse(edited.as_bytes()).unwrap();
            assert!(
                c.open(&p.sealed_master_key().unwrap(), &aad).is_err(),
                "{from} edit unseen"
            );
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let compact = serde_json::to_vec(&v).unwrap();
        let (p, aad) = KeyFile::parse(&compact).unwrap();
        assert!(c.open(&p.sealed_master_key().unwrap(), &aad).is_ok());
    }

    #[test]
    fn config_values_are_range_checked() {
        let good = Config {
            version: REPO_VERSION,
            id: "ab".repeat(32),
            chunker: ChunkerParams::with_key([1; 32]),
            blob_id_key: [2; 32],
            pack_size: DEFAULT_PACK_SIZE,
            compression: 3,
            padding: Padding::Bucket,
            min_retention_secs: None,
        };
        assert_eq!(good.validate(), Ok(()));
        let locked = Config {
            min_retention_secs: Some(86_400),
            ..good.clone()
        };
        assert_eq!(locked.validate(), Ok(()));
        let bad = [
            Config {
                pack_size: 0,
                ..good.clone()
            },
            Config {
                compression: 99,
                ..good.clone()
            },
            Config {
                version: 9,
                ..good.clone()
            },
            Config {
                padding: Padding::None,
                ..good.clone()
            },
            Config {
                chunker: ChunkerParams::with_seed(5),
                ..good.clone()
            },
            Config {
                id: "x".into(),
                ..good.clone()
            },
            Config {
                min_retention_secs: Some(0),
                ..good.clone()
            },
            Config {
                min_retention_secs: Some(MAX_MIN_RETENTION_SECS + 1),
                ..good.clone()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn index_round_trip() {
        let packs = vec![IndexedPack {
            id: PackId([1; 32]),
            kind: BlobType::Tree,
            blobs: vec![PackEntry {
                id: BlobId([2; 32]),
                offset: 0,
                length: 50,
                raw_length: 10,
            }],
        }];
        let enc = encode_index(&packs);
        assert_eq!(decode_index(&enc).unwrap(), packs);
        assert!(decode_index(&enc[..enc.len() - 1]).is_err());
    }
}

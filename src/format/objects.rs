//! Encrypted metadata objects and their versioned contents: config, key, index.
//!
//! Every metadata object except a key is `version u8 (1) || sealed(zstd(payload))`
//! with the associated data of its kind, so the version is read before anything is
//! decrypted and an object of one kind cannot stand in for another.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::format::blob::BlobType;
use crate::format::chunker::ChunkerParams;
use crate::format::crypto::{Cipher, DecryptError, KdfParams};
use crate::format::id::{BlobId, PackId};
use crate::format::pack::PackEntry;

/// The envelope version written by this build.
pub const OBJECT_VERSION: u8 = 1;
/// The repository format version (in the config) written by this build.
pub const REPO_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("object is empty")]
    Empty,
    #[error("unsupported object version {0} (this cairn reads version {OBJECT_VERSION})")]
    Version(u8),
    #[error("decryption failed (wrong key or damaged object)")]
    Decrypt(#[from] DecryptError),
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("malformed content: {0}")]
    Malformed(String),
}

/// Seals a metadata payload into an object.
pub fn seal_object(cipher: &Cipher, aad: &[u8], payload: &[u8]) -> Vec<u8> {
    let compressed = zstd::bulk::compress(payload, 3).expect("zstd on a memory buffer");
    let sealed = cipher.seal(&compressed, aad);
    let mut out = Vec::with_capacity(1 + sealed.len());
    out.push(OBJECT_VERSION);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a metadata object, checking its version first.
pub fn open_object(cipher: &Cipher, aad: &[u8], bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
    let (&version, sealed) = bytes.split_first().ok_or(FormatError::Empty)?;
    if version != OBJECT_VERSION {
        return Err(FormatError::Version(version));
    }
    let compressed = cipher.open(sealed, aad)?;
    zstd::stream::decode_all(&compressed[..]).map_err(|e| FormatError::Decompress(e.to_string()))
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

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
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
    #[serde(with = "hex32")]
    pub blob_id_key: [u8; 32],
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// zstd level for blobs; 0 stores them uncompressed.
    pub compression: i32,
}

/// Default pack target: 8 MiB. Large enough that per-request costs on cloud
/// buckets stay small (restic used 4 MiB for years), small enough that the packs
/// in flight (one per worker thread) keep a backup's peak memory low.
pub const DEFAULT_PACK_SIZE: u32 = 8 * 1024 * 1024;
pub const DEFAULT_COMPRESSION: i32 = 3;

/// A key object: plaintext JSON; the master key inside is sealed under a key
/// derived from a password with argon2id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub kdf: String,
    pub params: KdfParams,
    /// base64 (standard, padded) of the 16-byte salt.
    pub salt: String,
    /// base64 of `sealed(master key)` with associated data `cairn:key`.
    pub master_key: String,
    pub created: chrono::DateTime<chrono::Utc>,
    pub hostname: String,
    pub username: String,
}

impl KeyFile {
    pub fn salt_bytes(&self) -> Result<Vec<u8>, FormatError> {
        b64(&self.salt)
    }
    pub fn sealed_master_key(&self) -> Result<Vec<u8>, FormatError> {
        b64(&self.master_key)
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
    let n = r.u32()? as usize;
    let mut packs = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let id = PackId(r.id()?);
        let kind = BlobType::from_code(r.u8()?)
            .ok_or_else(|| FormatError::Malformed("unknown pack type".into()))?;
        let count = r.u32()? as usize;
        let mut blobs = Vec::with_capacity(count.min(1 << 20));
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
    use crate::format::crypto::Secret;

    #[test]
    fn object_round_trip_and_version_check() {
        let c = Cipher::new(&Secret([4; 32]));
        let obj = seal_object(&c, b"k", b"payload");
        assert_eq!(open_object(&c, b"k", &obj).unwrap(), b"payload");
        let mut future = obj.clone();
        future[0] = 2;
        assert_eq!(open_object(&c, b"k", &future), Err(FormatError::Version(2)));
        assert_eq!(open_object(&c, b"k", &[]), Err(FormatError::Empty));
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

//! Encoding of one blob: codec byte, optional zstd, then a sealed box bound to the ID.

use std::cell::RefCell;

use crate::format::crypto::{blob_aad, Cipher};
use crate::format::id::BlobId;

/// Codec byte: the plaintext follows as is.
pub const CODEC_RAW: u8 = 0;
/// Codec byte: a zstd frame follows.
pub const CODEC_ZSTD: u8 = 1;

/// What a blob holds. Each pack holds blobs of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    Data,
    Tree,
}

impl BlobType {
    pub fn code(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }

    /// The folder its packs live in.
    pub fn dir(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
        }
    }
}

/// Why a stored blob could not be turned back into its plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobDecodeError {
    #[error("decryption failed")]
    Decrypt,
    #[error("unknown codec byte {0}")]
    UnknownCodec(u8),
    #[error("zstd decompression failed: {0}")]
    Decompress(String),
    #[error("content hash does not match its ID")]
    HashMismatch,
}

thread_local! {
    // zstd contexts are costly to create (allocation, zeroing, page faults):
    // each worker thread keeps one of each and reuses it for every blob.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The largest plaintext a blob may claim to decompress to (chunks are at most
/// a few MiB; trees of huge directories may be larger). Bounds a hostile frame.
const MAX_BLOB_LEN: u64 = 1 << 30;

fn compress(plaintext: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        c.as_mut()?.1.compress(plaintext).ok()
    })
}

fn decompress(frame: &[u8], raw_len: Option<usize>) -> std::io::Result<Vec<u8>> {
    let declared = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .filter(|n| *n <= MAX_BLOB_LEN);
    let Some(capacity) = raw_len.or(declared.map(|n| n as usize)) else {
        return zstd::stream::decode_all(frame);
    };
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("just set").decompress(frame, capacity)
    })
}

/// Compresses (when that saves space) and seals a blob. `level` 0 disables compression.
pub fn encode(cipher: &Cipher, id: &BlobId, plaintext: &[u8], level: i32) -> Vec<u8> {
    let mut framed = Vec::with_capacity(plaintext.len() + 1);
    let compressed = if level != 0 {
        compress(plaintext, level)
    } else {
        None
    };
    match compressed {
        Some(c) if c.len() < plaintext.len() => {
            framed.push(CODEC_ZSTD);
            framed.extend_from_slice(&c);
        }
        _ => {
            framed.push(CODEC_RAW);
            framed.extend_from_slice(plaintext);
        }
    }
    cipher.seal(&framed, &blob_aad(id))
}

/// Opens a sealed blob. `raw_len`, when known (from a pack header or a tree),
/// sizes the decompression buffer in one allocation.
pub fn decode(
    cipher: &Cipher,
    id: &BlobId,
    sealed: &[u8],
    raw_len: Option<usize>,
) -> Result<Vec<u8>, BlobDecodeError> {
    let mut framed = cipher
        .open(sealed, &blob_aad(id))
        .map_err(|_| BlobDecodeError::Decrypt)?;
    let derr = |e: std::io::Error| BlobDecodeError::Decompress(e.to_string());
    match framed.first() {
        Some(&CODEC_RAW) => {
            framed.remove(0);
            Ok(framed)
        }
        Some(&CODEC_ZSTD) => decompress(&framed[1..], raw_len).map_err(derr),
        Some(&c) => Err(BlobDecodeError::UnknownCodec(c)),
        None => Err(BlobDecodeError::UnknownCodec(0xff)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::Secret;

    #[test]
    fn compressible_blob_shrinks_and_round_trips() {
        let c = Cipher::new(&Secret([1; 32]));
        let id = BlobId([2; 32]);
        let data = vec![b'a'; 100_000];
        let sealed = encode(&c, &id, &data, 3);
        assert!(sealed.len() < 1000);
        assert_eq!(decode(&c, &id, &sealed, Some(data.len())).unwrap(), data);
    }

    #[test]
    fn incompressible_blob_is_stored_raw() {
        let c = Cipher::new(&Secret([1; 32]));
        let id = BlobId([2; 32]);
        let data: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let sealed = encode(&c, &id, &data, 19);
        assert!(sealed.len() <= data.len() + 1 + crate::format::crypto::SEAL_OVERHEAD);
        assert_eq!(decode(&c, &id, &sealed, Some(data.len())).unwrap(), data);
    }

    #[test]
    fn blob_bound_to_its_id() {
        let c = Cipher::new(&Secret([1; 32]));
        let sealed = encode(&c, &BlobId([2; 32]), b"x", 3);
        assert_eq!(
            decode(&c, &BlobId([3; 32]), &sealed, Some(1)),
            Err(BlobDecodeError::Decrypt)
        );
    }
}

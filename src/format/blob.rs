//! Encoding of one blob: codec byte, optional zstd, padding (format 2), then a
//! sealed box bound to the ID.

use std::cell::RefCell;

use crate::format::crypto::{blob_aad, Cipher};
use crate::format::id::BlobId;

/// Codec byte: the plaintext follows as is.
pub const CODEC_RAW: u8 = 0;
/// Codec byte: a zstd frame follows.
pub const CODEC_ZSTD: u8 = 1;
/// Format 2 codec byte: `len u32 LE || plaintext || zero padding`.
pub const CODEC_RAW_PADDED: u8 = 2;
/// Format 2 codec byte: `len u32 LE || zstd frame || zero padding`.
pub const CODEC_ZSTD_PADDED: u8 = 3;

/// How sealed blobs are padded (format 2), so that their stored size does not
/// give away the exact size of what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// Format 1: no padding.
    None,
    /// Round up to a step of 1/256 of the size, at least 32 bytes: at most 0.4%
    /// larger (plus up to 31 bytes), hides the low bits of every size.
    #[default]
    Bucket,
    /// Padmé (Nikitin et al., PETS 2019): at most 12% larger, leaks only
    /// O(log log n) bits of a size.
    Padme,
}

impl Padding {
    /// The padded length of a framed blob of `len` bytes.
    pub fn padded_len(self, len: usize) -> usize {
        match self {
            Padding::None => len,
            Padding::Bucket => {
                let bits = usize::BITS - len.max(1).leading_zeros() - 1;
                let step = (1usize << bits.saturating_sub(8)).max(32);
                len.div_ceil(step) * step
            }
            Padding::Padme => {
                if len < 2 {
                    return len;
                }
                let e = usize::BITS - len.leading_zeros() - 1;
                let s = u32::BITS - e.leading_zeros();
                let mask = (1usize << (e - s)) - 1;
                (len + mask) & !mask
            }
        }
    }
}

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
    #[error("padded blob declares a length beyond its end")]
    BadLength,
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

/// The most a zstd frame of `frame_len` bytes can decompress to: every block
/// takes a 3-byte header and at least one byte (an RLE block), and yields at
/// most 128 KiB. Caps a buffer sized from a length the frame or a caller claims.
fn zstd_output_bound(frame_len: usize) -> u64 {
    (frame_len as u64 / 4 + 1) * (128 << 10)
}

/// Reads `r` to its end, failing once more than `limit` bytes come out. The
/// buffer grows with the bytes actually read and never past `limit`
/// (`read_to_end` would double it past the limit on the last read).
pub fn read_bounded(mut r: impl std::io::Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 128 << 10];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n > limit - out.len() {
            return Err(std::io::Error::other(format!(
                "content exceeds the {limit}-byte limit"
            )));
        }
        if out.capacity() - out.len() < n {
            let want = (out.len() + n).max(out.capacity() * 2).min(limit);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

fn decompress(frame: &[u8], raw_len: Option<usize>) -> std::io::Result<Vec<u8>> {
    let declared = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .filter(|n| *n <= MAX_BLOB_LEN);
    // A size from the caller or the frame header sizes the buffer in one
    // allocation, but never beyond what the frame can hold: a small frame that
    // claims 1 GiB must not allocate 1 GiB.
    let capacity = raw_len
        .map(|n| n as u64)
        .filter(|n| *n <= MAX_BLOB_LEN)
        .or(declared)
        .map(|n| n.min(zstd_output_bound(frame.len())) as usize);
    let Some(capacity) = capacity else {
        // No trustworthy size: stream, and stop at the bound.
        return read_bounded(zstd::stream::read::Decoder::new(frame)?, MAX_BLOB_LEN);
    };
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("just set").decompress(frame, capacity)
    })
}

/// Compresses (when that saves space), pads and seals a blob. `level` 0
/// disables compression; `Padding::None` writes format 1 blobs.
pub fn encode(
    cipher: &Cipher,
    id: &BlobId,
    plaintext: &[u8],
    level: i32,
    padding: Padding,
) -> Vec<u8> {
    let compressed = if level != 0 {
        compress(plaintext, level)
    } else {
        None
    };
    let (zstd, body) = match &compressed {
        Some(c) if c.len() < plaintext.len() => (true, &c[..]),
        _ => (false, plaintext),
    };
    cipher.seal(&frame(zstd, body, padding), &blob_aad(id))
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
        Some(&c @ (CODEC_RAW_PADDED | CODEC_ZSTD_PADDED)) => {
            let body = padded_body(&framed)?;
            if c == CODEC_ZSTD_PADDED {
                return decompress(body, raw_len).map_err(derr);
            }
            let len = body.len();
            framed.copy_within(5..5 + len, 0);
            framed.truncate(len);
            Ok(framed)
        }
        Some(&c) => Err(BlobDecodeError::UnknownCodec(c)),
        None => Err(BlobDecodeError::UnknownCodec(0xff)),
    }
}

/// Moves a sealed blob from one repository's key to another's without
/// decompressing it: the frame is opened, re-padded for `padding` (a format 1
/// frame becomes its padded form), and sealed again.
pub fn reseal(
    from: &Cipher,
    to: &Cipher,
    id: &BlobId,
    sealed: &[u8],
    padding: Padding,
) -> Result<Vec<u8>, BlobDecodeError> {
    let framed = from
        .open(sealed, &blob_aad(id))
        .map_err(|_| BlobDecodeError::Decrypt)?;
    let (zstd, body) = match framed.first() {
        Some(&CODEC_RAW) => (false, &framed[1..]),
        Some(&CODEC_ZSTD) => (true, &framed[1..]),
        Some(&c @ (CODEC_RAW_PADDED | CODEC_ZSTD_PADDED)) => {
            (c == CODEC_ZSTD_PADDED, padded_body(&framed)?)
        }
        Some(&c) => return Err(BlobDecodeError::UnknownCodec(c)),
        None => return Err(BlobDecodeError::UnknownCodec(0xff)),
    };
    Ok(to.seal(&frame(zstd, body, padding), &blob_aad(id)))
}

/// `codec || body` (format 1) or `codec || len || body || padding` (format 2).
fn frame(zstd: bool, body: &[u8], padding: Padding) -> Vec<u8> {
    match padding {
        Padding::None => {
            let mut f = Vec::with_capacity(body.len() + 1);
            f.push(if zstd { CODEC_ZSTD } else { CODEC_RAW });
            f.extend_from_slice(body);
            f
        }
        _ => {
            let len = padding.padded_len(5 + body.len());
            let mut f = Vec::with_capacity(len);
            f.push(if zstd {
                CODEC_ZSTD_PADDED
            } else {
                CODEC_RAW_PADDED
            });
            f.extend_from_slice(&(body.len() as u32).to_le_bytes());
            f.extend_from_slice(body);
            f.resize(len, 0);
            f
        }
    }
}

/// The body of a padded frame: `codec || len u32 LE || body || padding`.
fn padded_body(framed: &[u8]) -> Result<&[u8], BlobDecodeError> {
    let len = framed
        .get(1..5)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or(BlobDecodeError::BadLength)?;
    framed.get(5..5 + len).ok_or(BlobDecodeError::BadLength)
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
        let sealed = encode(&c, &id, &data, 3, Padding::Bucket);
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
        let sealed = encode(&c, &id, &data, 19, Padding::None);
        assert!(sealed.len() <= data.len() + 1 + crate::format::crypto::SEAL_OVERHEAD);
        assert_eq!(decode(&c, &id, &sealed, Some(data.len())).unwrap(), data);
    }

    #[test]
    fn padding_schemes_hide_sizes_within_their_costs() {
        for len in [
            1usize,
            5,
            31,
            33,
            100,
            1000,
            4097,
            100_000,
            1 << 20,
            (1 << 22) + 3,
        ] {
            let b = Padding::Bucket.padded_len(len);
            assert!(b >= len && b - len < 32 + len / 256, "bucket {len} -> {b}");
            let p = Padding::Padme.padded_len(len);
            assert!(
                p >= len && (p - len) as f64 <= 0.12 * len as f64 + 1.0,
                "padme {len} -> {p}"
            );
            assert_eq!(Padding::None.padded_len(len), len);
        }
        // Sizes within one bucket become one size.
        assert_eq!(
            Padding::Bucket.padded_len(1_000_001),
            Padding::Bucket.padded_len(1_000_500)
        );
        assert_eq!(
            Padding::Padme.padded_len(1_000_001),
            Padding::Padme.padded_len(1_015_000)
        );
    }

    #[test]
    fn padded_blobs_round_trip_and_differ_by_scheme() {
        let c = Cipher::new(&Secret([1; 32]));
        let id = BlobId([2; 32]);
        for data in [
            vec![],
            b"abc".to_vec(),
            vec![7u8; 70_000],
            (0..5000u32).map(|i| ((i * 7919) >> 3) as u8).collect(),
        ] {
            for pad in [Padding::None, Padding::Bucket, Padding::Padme] {
                for level in [0, 3] {
                    let sealed = encode(&c, &id, &data, level, pad);
                    assert_eq!(decode(&c, &id, &sealed, Some(data.len())).unwrap(), data);
                    assert_eq!(decode(&c, &id, &sealed, None).unwrap(), data);
                }
            }
        }
        // Two sizes 10 bytes apart in one bucket seal to one size.
        let a = encode(&c, &id, &vec![1u8; 2990], 0, Padding::Bucket);
        let b = encode(&c, &id, &vec![1u8; 3000], 0, Padding::Bucket);
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn a_padded_length_beyond_the_end_is_an_error() {
        let c = Cipher::new(&Secret([1; 32]));
        let id = BlobId([2; 32]);
        let mut framed = vec![CODEC_RAW_PADDED];
        framed.extend_from_slice(&1000u32.to_le_bytes());
        framed.extend_from_slice(b"short");
        let sealed = c.seal(&framed, &blob_aad(&id));
        assert_eq!(
            decode(&c, &id, &sealed, None),
            Err(BlobDecodeError::BadLength)
        );
    }

    #[test]
    fn decompression_without_a_size_is_bounded() {
        // A frame that does not declare its size and a caller that knows none.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &vec![0u8; 1 << 20]).unwrap();
        let frame = enc.finish().unwrap();
        assert_eq!(decompress(&frame, None).unwrap().len(), 1 << 20);
        assert!(decompress(&frame, Some(1000)).is_err());
    }

    #[test]
    fn resealed_blobs_open_under_the_new_key_only() {
        let (a, b) = (Cipher::new(&Secret([1; 32])), Cipher::new(&Secret([9; 32])));
        let id = BlobId([2; 32]);
        let data = vec![7u8; 50_000];
        for (pad_from, pad_to) in [
            (Padding::None, Padding::Bucket),
            (Padding::Bucket, Padding::Padme),
        ] {
            let sealed = encode(&a, &id, &data, 3, pad_from);
            let moved = reseal(&a, &b, &id, &sealed, pad_to).unwrap();
            assert_eq!(decode(&b, &id, &moved, None).unwrap(), data);
            assert!(decode(&a, &id, &moved, None).is_err());
        }
    }

    #[test]
    fn blob_bound_to_its_id() {
        let c = Cipher::new(&Secret([1; 32]));
        let sealed = encode(&c, &BlobId([2; 32]), b"x", 3, Padding::Bucket);
        assert_eq!(
            decode(&c, &BlobId([3; 32]), &sealed, Some(1)),
            Err(BlobDecodeError::Decrypt)
        );
    }
}

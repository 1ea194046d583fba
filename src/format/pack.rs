//! Pack objects: many sealed blobs, then a sealed header listing them, then the
//! header's length. Pure encode/decode; uploading is the repository's job.
//!
//! ```text
//! blob_0 || blob_1 || ... || sealed(header) || trailer
//! header  = version u8 (1) || type u8 || count u32 LE || count × (id[32] || length u32 LE || raw_length u32 LE)
//! trailer = format 1: u32 LE len(sealed(header))
//!           format 2: sealed(u32 LE len(sealed(header))), 44 bytes
//! ```
//! Format 2 seals the length so that a pack's blob count is not visible.
//! Blob offsets are implicit: blob i starts where blob i-1 ended, the first at 0.

use crate::format::blob::BlobType;
use crate::format::crypto::{aad, Cipher, DecryptError, SEAL_OVERHEAD};
use crate::format::id::BlobId;

pub const PACK_HEADER_VERSION: u8 = 1;
const ENTRY_LEN: usize = 40;
const HEADER_FIXED: usize = 6;

/// One blob's place inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub id: BlobId,
    pub offset: u32,
    /// Stored (sealed) length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("pack is too short to hold a header")]
    TooShort,
    #[error("pack header length {0} is out of range")]
    BadHeaderLength(u32),
    #[error("pack header does not decrypt: {0}")]
    Decrypt(#[from] DecryptError),
    #[error("unsupported pack header version {0}")]
    Version(u8),
    #[error("pack header is malformed: {0}")]
    Malformed(&'static str),
}

/// How a pack ends: with its header's length in plain (format 1) or sealed (format 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trailer {
    Plain,
    Sealed,
}

impl Trailer {
    /// The trailer of a repository format version.
    pub fn for_format(version: u32) -> Trailer {
        if version >= 2 {
            Trailer::Sealed
        } else {
            Trailer::Plain
        }
    }

    pub fn len(self) -> usize {
        match self {
            Trailer::Plain => 4,
            Trailer::Sealed => 4 + SEAL_OVERHEAD,
        }
    }

    fn encode(self, cipher: &Cipher, header_len: u32) -> Vec<u8> {
        let plain = header_len.to_le_bytes();
        match self {
            Trailer::Plain => plain.to_vec(),
            Trailer::Sealed => cipher.seal(&plain, aad::PACK_TRAILER),
        }
    }

    /// Length of the sealed header, from the pack's trailer bytes.
    pub fn header_length(
        self,
        cipher: &Cipher,
        pack_len: u64,
        trailer: &[u8],
    ) -> Result<u32, PackError> {
        if trailer.len() != self.len() || pack_len < self.len() as u64 {
            return Err(PackError::TooShort);
        }
        let plain = match self {
            Trailer::Plain => trailer.to_vec(),
            Trailer::Sealed => cipher.open(trailer, aad::PACK_TRAILER)?,
        };
        let t: [u8; 4] = plain[..].try_into().map_err(|_| PackError::TooShort)?;
        let n = u32::from_le_bytes(t);
        if (n as u64) + self.len() as u64 > pack_len || (n as usize) < SEAL_OVERHEAD + HEADER_FIXED
        {
            return Err(PackError::BadHeaderLength(n));
        }
        Ok(n)
    }
}

/// Accumulates sealed blobs of one type into a pack.
pub struct PackBuilder {
    kind: BlobType,
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn new(kind: BlobType, capacity: usize) -> Self {
        PackBuilder {
            kind,
            data: Vec::with_capacity(capacity),
            entries: Vec::new(),
        }
    }

    pub fn kind(&self) -> BlobType {
        self.kind
    }

    pub fn add(&mut self, id: BlobId, sealed: &[u8], raw_length: u32) {
        let offset = self.data.len() as u32;
        self.data.extend_from_slice(sealed);
        self.entries.push(PackEntry {
            id,
            offset,
            length: sealed.len() as u32,
            raw_length,
        });
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the sealed header and trailer; returns the pack bytes and its entries.
    pub fn finish(
        mut self,
        cipher: &Cipher,
        trailer: Trailer,
    ) -> (Vec<u8>, BlobType, Vec<PackEntry>) {
        let header = encode_header(self.kind, &self.entries);
        let sealed = cipher.seal(&header, aad::PACK_HEADER);
        self.data.extend_from_slice(&sealed);
        self.data
            .extend_from_slice(&trailer.encode(cipher, sealed.len() as u32));
        (self.data, self.kind, self.entries)
    }
}

fn encode_header(kind: BlobType, entries: &[PackEntry]) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_FIXED + entries.len() * ENTRY_LEN);
    h.push(PACK_HEADER_VERSION);
    h.push(kind.code());
    h.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        h.extend_from_slice(e.id.as_bytes());
        h.extend_from_slice(&e.length.to_le_bytes());
        h.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    h
}

/// Opens a sealed header and checks that its blobs tile the pack exactly up to it.
pub fn decode_header(
    cipher: &Cipher,
    sealed: &[u8],
    blobs_end: u64,
) -> Result<(BlobType, Vec<PackEntry>), PackError> {
    let h = cipher.open(sealed, aad::PACK_HEADER)?;
    if h.len() < HEADER_FIXED {
        return Err(PackError::Malformed("header shorter than its fixed part"));
    }
    if h[0] != PACK_HEADER_VERSION {
        return Err(PackError::Version(h[0]));
    }
    let kind = BlobType::from_code(h[1]).ok_or(PackError::Malformed("unknown blob type"))?;
    let count = u32::from_le_bytes(h[2..6].try_into().unwrap()) as usize;
    if h.len() != HEADER_FIXED + count * ENTRY_LEN {
        return Err(PackError::Malformed(
            "header length does not match its blob count",
        ));
    }
    let mut entries = Vec::with_capacity(count);
    let mut offset: u64 = 0;
    for e in h[HEADER_FIXED..].chunks_exact(ENTRY_LEN) {
        let length = u32::from_le_bytes(e[32..36].try_into().unwrap());
        let raw_length = u32::from_le_bytes(e[36..40].try_into().unwrap());
        entries.push(PackEntry {
            id: BlobId(e[..32].try_into().unwrap()),
            offset: offset as u32,
            length,
            raw_length,
        });
        offset += length as u64;
    }
    if offset != blobs_end {
        return Err(PackError::Malformed(
            "blobs do not end where the header starts",
        ));
    }
    Ok((kind, entries))
}

/// Decodes the header of a whole pack held in memory.
pub fn read_header(
    cipher: &Cipher,
    trailer: Trailer,
    pack: &[u8],
) -> Result<(BlobType, Vec<PackEntry>), PackError> {
    let t = trailer.len();
    if pack.len() < t {
        return Err(PackError::TooShort);
    }
    let n = trailer.header_length(cipher, pack.len() as u64, &pack[pack.len() - t..])? as usize;
    let start = pack.len() - t - n;
    decode_header(cipher, &pack[start..pack.len() - t], start as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::blob::Padding;
    use crate::format::crypto::Secret;
    use proptest::prelude::*;

    fn cipher() -> Cipher {
        Cipher::new(&Secret([9; 32]))
    }

    proptest! {
        #[test]
        fn pack_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20), sealed_trailer in any::<bool>()) {
            let c = cipher();
            let mut b = PackBuilder::new(BlobType::Data, 0);
            for (i, blob) in blobs.iter().enumerate() {
                let id = BlobId([i as u8; 32]);
                let sealed = crate::format::blob::encode(&c, &id, blob, 3, Padding::Bucket);
                b.add(id, &sealed, blob.len() as u32);
            }
            let trailer = if sealed_trailer { Trailer::Sealed } else { Trailer::Plain };
            let (bytes, kind, entries) = b.finish(&c, trailer);
            let (k2, e2) = read_header(&c, trailer, &bytes).unwrap();
            prop_assert_eq!(kind, k2);
            prop_assert_eq!(&entries, &e2);
            for (e, blob) in e2.iter().zip(&blobs) {
                let s = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                prop_assert_eq!(&crate::format::blob::decode(&c, &e.id, s, Some(blob.len())).unwrap(), blob);
            }
        }
    }

    #[test]
    fn tampered_header_is_rejected() {
        let c = cipher();
        for trailer in [Trailer::Plain, Trailer::Sealed] {
            let mut b = PackBuilder::new(BlobType::Tree, 0);
            let id = BlobId([1; 32]);
            b.add(
                id,
                &crate::format::blob::encode(&c, &id, b"abc", 3, Padding::Bucket),
                3,
            );
            let (mut bytes, _, _) = b.finish(&c, trailer);
            let n = bytes.len();
            let t = trailer.len();
            bytes[n - t - 10] ^= 1;
            assert!(matches!(
                read_header(&c, trailer, &bytes),
                Err(PackError::Decrypt(_))
            ));
            let mut bad_len = bytes.clone();
            bad_len[n - 1] ^= 0xff;
            let expect_decrypt = trailer == Trailer::Sealed;
            match read_header(&c, trailer, &bad_len) {
                Err(PackError::Decrypt(_)) => assert!(expect_decrypt),
                Err(PackError::BadHeaderLength(_)) => assert!(!expect_decrypt),
                other => panic!("{other:?}"),
            }
            assert_eq!(read_header(&c, trailer, &[1, 2]), Err(PackError::TooShort));
        }
    }

    #[test]
    fn a_sealed_trailer_hides_the_header_length() {
        let c = cipher();
        let mut b = PackBuilder::new(BlobType::Data, 0);
        let id = BlobId([3; 32]);
        b.add(
            id,
            &crate::format::blob::encode(&c, &id, b"x", 0, Padding::Bucket),
            1,
        );
        let (bytes, _, _) = b.finish(&c, Trailer::Sealed);
        let header_len = (HEADER_FIXED + ENTRY_LEN + SEAL_OVERHEAD) as u32;
        let tail = &bytes[bytes.len() - 44..];
        assert!(!tail.windows(4).any(|w| w == header_len.to_le_bytes()));
    }
}

//! Shared pieces of the fuzz targets: the fixed test key, and sealers that put
//! fuzzed plaintext behind the MAC with the associated data the real openers
//! expect, so the fuzzer explores the decoders rather than the MAC check.
//!
//! Every harness input that goes through [`envelope`] starts with one flag
//! byte: bit 0 set = envelope version 1 (else 2), bit 1 set = the rest is the
//! zstd frame itself (fuzzes the bounded decompressor), else the rest is the
//! payload and is compressed here (fuzzes the payload decoder).

use cairn::format::blob::BlobType;
use cairn::format::crypto::{blob_aad, Cipher, Secret};
use cairn::format::id::BlobId;

/// The fixed test key every harness seals and opens with.
pub fn cipher() -> Cipher {
    Cipher::new(&Secret([7; 32]))
}

/// The blob ID every blob harness binds its frames to.
pub const BLOB_ID: BlobId = BlobId([5; 32]);

/// A stored metadata object (`version || sealed(zstd(payload))`) built from a
/// fuzz input (see the module docs for the flag byte).
pub fn envelope(cipher: &Cipher, kind: &[u8], input: &[u8]) -> Vec<u8> {
    let (flags, rest) = match input.split_first() {
        Some((f, r)) => (*f, r),
        None => (0, input),
    };
    let version: u8 = if flags & 1 != 0 { 1 } else { 2 };
    let frame = if flags & 2 != 0 {
        rest.to_vec()
    } else {
        zstd::bulk::compress(rest, 1).expect("zstd on a memory buffer")
    };
    // objects::open_object: the kind, then (from version 2) the version byte.
    let mut aad = kind.to_vec();
    if version >= 2 {
        aad.push(version);
    }
    let mut out = vec![version];
    out.extend_from_slice(&cipher.seal(&frame, &aad));
    out
}

/// The harness input that [`envelope`] turns into an object holding `payload`.
pub fn envelope_input(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(payload);
    v
}

/// A sealed blob whose frame (codec byte onwards) is `frame`.
pub fn sealed_blob(cipher: &Cipher, frame: &[u8]) -> Vec<u8> {
    cipher.seal(frame, &blob_aad(&BLOB_ID))
}

/// The `Option<usize>` raw length a blob harness passes to `blob::decode`,
/// from 5 input bytes: selector, then u32 LE.
pub fn raw_len(sel: u8, n: u32) -> Option<usize> {
    match sel % 3 {
        0 => None,
        1 => Some(n as usize),
        _ => Some((n & 0xf_ffff) as usize),
    }
}

/// Blob type code of a pack harness.
pub fn kind(c: u8) -> BlobType {
    BlobType::from_code(c & 1).expect("0 or 1")
}

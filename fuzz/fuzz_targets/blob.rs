//! A blob frame behind the MAC: `blob::decode` on a sealed fuzzed frame (codec
//! byte 0-3, padded frames, bounded zstd), with no, an arbitrary or a small
//! caller-known raw length.
//! Input: `sel u8 || raw_len u32 LE || frame`.
#![no_main]
use cairn::format::blob;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let raw_len = cairn_fuzz::raw_len(data[0], u32::from_le_bytes(data[1..5].try_into().unwrap()));
    let c = cairn_fuzz::cipher();
    let sealed = cairn_fuzz::sealed_blob(&c, &data[5..]);
    let _ = blob::decode(&c, &cairn_fuzz::BLOB_ID, &sealed, raw_len);
});

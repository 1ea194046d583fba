//! Pack headers behind the MAC: `pack::decode_header`, `pack::read_header` with
//! both trailer kinds, and `Trailer::header_length` on plain and sealed trailers.
//! Input: `mode u8 || prefix u16 LE || ctl u8 || trailer [4] || header plaintext`.
//! mode % 3: 0 = decode_header with blobs_end = prefix; 1 = read_header, plain
//! trailer; 2 = read_header, sealed trailer. The pack is `prefix` zero bytes,
//! the sealed header and a trailer: ctl bit 0 set = the trailer holds the
//! fuzzed 4 bytes (cut to ctl >> 1 & 7 bytes when sealed) instead of the true length.
#![no_main]
use cairn::format::crypto::aad;
use cairn::format::pack::{self, Trailer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let c = cairn_fuzz::cipher();
    let mode = data[0];
    let prefix = u16::from_le_bytes([data[1], data[2]]) as usize;
    let ctl = data[3];
    let t4: [u8; 4] = data[4..8].try_into().unwrap();
    let header = &data[8..];

    // The plain trailer parser on raw bytes, against a fuzzed pack length.
    let _ = Trailer::Plain.header_length(
        &c,
        u32::from_le_bytes(t4) as u64 ^ (prefix as u64) << 20,
        &t4,
    );

    let sealed_header = c.seal(header, aad::PACK_HEADER);
    match mode % 3 {
        0 => {
            let _ = pack::decode_header(&c, &sealed_header, prefix as u64);
        }
        m => {
            let trailer = if m == 1 {
                Trailer::Plain
            } else {
                Trailer::Sealed
            };
            let mut bytes = vec![0u8; prefix];
            bytes.extend_from_slice(&sealed_header);
            let len = (sealed_header.len() as u32).to_le_bytes();
            let plain: &[u8] = if ctl & 1 != 0 { &t4 } else { &len };
            match trailer {
                Trailer::Plain => bytes.extend_from_slice(plain),
                Trailer::Sealed => {
                    let cut = if ctl & 1 != 0 {
                        ((ctl >> 1) & 7) as usize
                    } else {
                        4
                    };
                    let plain = &plain[..cut.min(plain.len())];
                    bytes.extend_from_slice(&c.seal(plain, aad::PACK_TRAILER));
                }
            }
            let _ = pack::read_header(&c, trailer, &bytes);
            // The sealed trailer parser on whatever the pack ends with.
            let n = bytes.len();
            let tl = Trailer::Sealed.len().min(n);
            let _ = Trailer::Sealed.header_length(&c, n as u64, &bytes[n - tl..]);
        }
    }
});

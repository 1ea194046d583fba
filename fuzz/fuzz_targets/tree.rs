//! A tree blob behind the MAC: a raw blob frame holding the fuzzed bytes,
//! `blob::decode`, then `Tree::from_bytes` and the name decoders.
#![no_main]
use cairn::format::{blob, tree::Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = cairn_fuzz::cipher();
    let mut frame = vec![blob::CODEC_RAW];
    frame.extend_from_slice(data);
    let sealed = cairn_fuzz::sealed_blob(&c, &frame);
    let plain = blob::decode(&c, &cairn_fuzz::BLOB_ID, &sealed, Some(data.len()))
        .expect("a raw frame sealed under the right key opens");
    if let Ok(mut t) = Tree::from_bytes(&plain) {
        for n in &t.nodes {
            let _ = n.os_name();
            let _ = n.link_target();
        }
        let _ = t.to_bytes();
    }
});

//! Outer fuzzing of a stored metadata object: `objects::open_object` and
//! `open_json` on arbitrary bytes (reaches the version check and the MAC).
#![no_main]
use cairn::format::crypto::aad;
use cairn::format::objects::{self, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = cairn_fuzz::cipher();
    for kind in [aad::CONFIG, aad::INDEX, aad::SNAPSHOT, aad::LOCK] {
        let _ = objects::open_object(&c, kind, data);
    }
    let _ = objects::open_json::<Config>(&c, aad::CONFIG, data);
});

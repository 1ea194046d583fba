//! The index payload behind the MAC: envelope then `objects::decode_index`.
#![no_main]
use cairn::format::crypto::aad;
use cairn::format::objects;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = cairn_fuzz::cipher();
    let obj = cairn_fuzz::envelope(&c, aad::INDEX, data);
    if let Ok(payload) = objects::open_object(&c, aad::INDEX, &obj) {
        let _ = objects::decode_index(&payload);
    }
});

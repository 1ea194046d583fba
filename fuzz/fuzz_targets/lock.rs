//! The lock payload behind the MAC: envelope then the `LockInfo` JSON.
#![no_main]
use cairn::format::crypto::aad;
use cairn::format::objects;
use cairn::repo::lock::LockInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = cairn_fuzz::cipher();
    let obj = cairn_fuzz::envelope(&c, aad::LOCK, data);
    if let Ok(l) = objects::open_json::<LockInfo>(&c, aad::LOCK, &obj) {
        let _ = l.describe();
    }
});

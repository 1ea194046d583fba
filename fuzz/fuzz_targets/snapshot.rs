//! The snapshot payload behind the MAC: envelope then the snapshot JSON.
#![no_main]
use cairn::format::crypto::aad;
use cairn::format::objects;
use cairn::format::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = cairn_fuzz::cipher();
    let obj = cairn_fuzz::envelope(&c, aad::SNAPSHOT, data);
    if let Ok(s) = objects::open_json::<Snapshot>(&c, aad::SNAPSHOT, &obj) {
        let _ = s.has_tag("x");
        let _ = s.tree.short();
    }
});

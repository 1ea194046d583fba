//! The config payload behind the MAC: envelope (v1/v2, bounded zstd), JSON,
//! then `Config::validate`.
#![no_main]
use cairn::format::crypto::aad;
use cairn::format::objects::{self, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let c = cairn_fuzz::cipher();
    let obj = cairn_fuzz::envelope(&c, aad::CONFIG, data);
    if let Ok(cfg) = objects::open_json::<Config>(&c, aad::CONFIG, &obj) {
        let _ = cfg.validate();
    }
});

//! A key object as stored (plaintext JSON): `KeyFile::parse`, its base64 fields,
//! the KDF bounds, and the unwrap of the master key under a fixed wrapping key.
#![no_main]
use cairn::format::objects::KeyFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((kf, aad)) = KeyFile::parse(data) {
        let _ = kf.salt_bytes();
        let _ = kf.params.validate();
        let _ = kf.params.work();
        if let Ok(sealed) = kf.sealed_master_key() {
            let _ = cairn_fuzz::cipher().open(&sealed, &aad);
        }
    }
});

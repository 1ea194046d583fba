//! Key derivation, authenticated encryption and keyed hashing.
//!
//! Pure functions over bytes: nothing here knows about storage.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::format::id::BlobId;

/// Bytes of a random XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed box adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A sealed box failed to open: wrong key, or the bytes were altered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed (wrong key or damaged data)")]
pub struct DecryptError;

/// A 32-byte secret that zeroes itself on drop.
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Secret(pub [u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        Secret(k)
    }
}

/// Domain-separation strings used as associated data, so that an object of one
/// kind can never be passed off as another.
pub mod aad {
    pub const KEY: &[u8] = b"cairn:key";
    pub const CONFIG: &[u8] = b"cairn:config";
    pub const INDEX: &[u8] = b"cairn:index";
    pub const SNAPSHOT: &[u8] = b"cairn:snapshot";
    pub const LOCK: &[u8] = b"cairn:lock";
    pub const PACK_HEADER: &[u8] = b"cairn:pack-header";
    /// Format 2: the sealed length of a pack's header, at the pack's end.
    pub const PACK_TRAILER: &[u8] = b"cairn:pack-trailer";
}

/// The associated data of a blob: binds the ciphertext to the blob's ID, so a
/// blob swapped for another inside a pack is detected.
pub fn blob_aad(id: &BlobId) -> [u8; 43] {
    let mut out = [0u8; 43];
    out[..11].copy_from_slice(b"cairn:blob:");
    out[11..].copy_from_slice(id.as_bytes());
    out
}

/// XChaCha20-Poly1305 under one key. `seal` output is `nonce || ciphertext || tag`.
#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

impl Cipher {
    pub fn new(key: &Secret) -> Self {
        Cipher {
            aead: XChaCha20Poly1305::new((&key.0).into()),
        }
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(DecryptError);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.aead
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| DecryptError)
    }
}

/// The repository's master key: 32 random bytes, stored only wrapped in key objects.
/// Everything else is derived from it with BLAKE3's key derivation mode.
pub struct MasterKey {
    secret: Secret,
}

impl MasterKey {
    pub fn generate() -> Self {
        MasterKey {
            secret: Secret::random(),
        }
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey {
            secret: Secret(bytes),
        }
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.secret.0
    }

    /// The key that encrypts every blob and metadata object.
    pub fn cipher(&self) -> Cipher {
        Cipher::new(&self.derive("cairn 2026-11 data encryption key"))
    }

    /// Default blob-ID key for a new repository (stored in its config).
    pub fn default_id_key(&self) -> Secret {
        self.derive("cairn 2026-11 blob id key")
    }

    fn derive(&self, context: &str) -> Secret {
        Secret(blake3::derive_key(context, &self.secret.0))
    }
}

/// Keyed BLAKE3 of a blob's plaintext: its ID.
#[derive(Clone)]
pub struct BlobHasher {
    key: [u8; 32],
}

impl BlobHasher {
    pub fn new(key: &Secret) -> Self {
        BlobHasher { key: key.0 }
    }

    pub fn id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.key, plaintext).as_bytes())
    }
}

/// argon2id parameters, stored in each key object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: RFC 9106's second recommended option (64 MiB,
    /// t=3) and above what restic (64 MiB scrypt) and borg 2 spend. About 0.15 s
    /// on one core of this project's 2-core machines (repo-format.md §5).
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// The largest argon2 memory a key object may ask for (1 GiB): a planted key
/// file must not make every command allocate without bound.
pub const MAX_KDF_MEMORY_KIB: u32 = 1024 * 1024;
/// The most passes a key object may ask for.
pub const MAX_KDF_TIME: u32 = 10;
/// The most lanes a key object may ask for.
pub const MAX_KDF_LANES: u32 = 8;
/// The most work (memory × passes) one key may cost to try: 2 GiB·passes, a
/// few seconds. A planted key file with a huge cost is skipped, never run.
pub const MAX_KDF_WORK_KIB: u64 = 2 * 1024 * 1024;

impl KdfParams {
    /// Within the bounds any cairn will spend on one key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_KDF_TIME).contains(&self.t_cost) {
            return Err(format!(
                "KDF time cost {} is outside 1..={MAX_KDF_TIME}",
                self.t_cost
            ));
        }
        if !(1..=MAX_KDF_LANES).contains(&self.p_cost) {
            return Err(format!(
                "KDF lanes {} are outside 1..={MAX_KDF_LANES}",
                self.p_cost
            ));
        }
        // argon2 itself needs 8 KiB a lane; anything weaker than the defaults is
        // the user's explicit choice (tests use 1 MiB).
        if self.m_cost_kib < 8 * self.p_cost || self.m_cost_kib > MAX_KDF_MEMORY_KIB {
            return Err(format!(
                "KDF memory {} KiB is outside {}..={MAX_KDF_MEMORY_KIB} KiB",
                self.m_cost_kib,
                8 * self.p_cost
            ));
        }
        if self.work() > MAX_KDF_WORK_KIB {
            return Err("KDF memory × time cost exceeds 2 GiB·passes".into());
        }
        Ok(())
    }

    /// Memory × passes, in KiB: what trying this key costs.
    pub fn work(&self) -> u64 {
        self.m_cost_kib as u64 * self.t_cost as u64
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid key derivation parameters: {0}")]
pub struct KdfError(String);

/// Derives the key-wrapping key from a password. The argon2 work memory is freed
/// when this returns, before any backup pipeline allocates.
pub fn derive_wrapping_key(
    password: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<Secret, KdfError> {
    let p = Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
        .map_err(|e| KdfError(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| KdfError(e.to_string()))?;
    Ok(Secret(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seal_open_round_trip() {
        let c = Cipher::new(&Secret([7; 32]));
        let sealed = c.seal(b"hello", aad::CONFIG);
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(c.open(&sealed, aad::CONFIG).unwrap(), b"hello");
    }

    #[test]
    fn wrong_aad_or_key_fails() {
        let c = Cipher::new(&Secret([7; 32]));
        let sealed = c.seal(b"hello", aad::CONFIG);
        assert_eq!(c.open(&sealed, aad::INDEX), Err(DecryptError));
        let other = Cipher::new(&Secret([8; 32]));
        assert_eq!(other.open(&sealed, aad::CONFIG), Err(DecryptError));
        assert_eq!(c.open(&sealed[..10], aad::CONFIG), Err(DecryptError));
    }

    #[test]
    fn kdf_is_deterministic_and_salted() {
        let p = KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let a = derive_wrapping_key(b"pw", b"saltsaltsaltsalt", p).unwrap();
        let b = derive_wrapping_key(b"pw", b"saltsaltsaltsalt", p).unwrap();
        let c = derive_wrapping_key(b"pw", b"saltsaltsaltsalX", p).unwrap();
        assert_eq!(a.0, b.0);
        assert_ne!(a.0, c.0);
    }

    #[test]
    fn derived_keys_differ() {
        let mk = MasterKey::from_bytes([1; 32]);
        assert_ne!(
            mk.default_id_key().0,
            mk.derive("cairn 2026-11 data encryption key").0
        );
    }

    proptest! {
        #[test]
        fn any_flipped_bit_is_detected(data in proptest::collection::vec(any::<u8>(), 0..512), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let c = Cipher::new(&Secret([3; 32]));
            let mut sealed = c.seal(&data, aad::SNAPSHOT);
            let i = pos.index(sealed.len());
            sealed[i] ^= 1 << bit;
            prop_assert_eq!(c.open(&sealed, aad::SNAPSHOT), Err(DecryptError));
        }

        #[test]
        fn round_trip_any(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let c = Cipher::new(&Secret([3; 32]));
            let sealed = c.seal(&data, aad::INDEX);
            prop_assert_eq!(c.open(&sealed, aad::INDEX).unwrap(), data);
        }
    }
}

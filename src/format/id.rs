//! Typed 32-byte identifiers. Every object in a repository is named by one.
//!
//! A blob is named by the keyed BLAKE3 hash of its plaintext; every stored object
//! (pack, index, snapshot, key) is named by the SHA-256 of its stored bytes.
//! The newtypes keep the roles apart at compile time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serde as 64 hex digits, for 32-byte keys stored in JSON.
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// [`hex32`] for an optional key.
pub mod opt_hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(k) => super::hex32::serialize(k, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => {
                let mut out = [0u8; 32];
                hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
                Ok(Some(out))
            }
        }
    }
}

/// Length of every identifier in bytes.
pub const ID_LEN: usize = 32;

/// Why a string is not an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a 64-digit hexadecimal ID")]
pub struct ParseIdError(pub String);

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            /// The identifier as lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first eight hex digits, as shown to people.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.to_string()))?;
                Ok(Self(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// A blob: keyed BLAKE3 of its plaintext (file chunk or tree).
    BlobId
);
define_id!(
    /// A pack object: SHA-256 of its stored bytes.
    PackId
);
define_id!(
    /// An index object: SHA-256 of its stored bytes.
    IndexId
);
define_id!(
    /// A snapshot object: SHA-256 of its stored bytes.
    SnapshotId
);
define_id!(
    /// A key object: SHA-256 of its stored bytes.
    KeyId
);

/// SHA-256 of stored bytes, the name of every stored object.
pub fn storage_hash(bytes: &[u8]) -> [u8; ID_LEN] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = PackId([0xab; 32]);
        let parsed: PackId = id.to_hex().parse().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(id.short(), "abababab");
    }

    #[test]
    fn rejects_bad_hex() {
        assert!("xyz".parse::<BlobId>().is_err());
        assert!("ab".repeat(31).parse::<BlobId>().is_err());
    }

    #[test]
    fn serde_as_hex_string() {
        let id = SnapshotId([1; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", "01".repeat(32)));
        let back: SnapshotId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }
}

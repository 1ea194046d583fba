//! The pure layer: typed IDs, crypto, the chunker, and the byte formats of every
//! stored object (blobs, packs, metadata envelopes, index, trees, snapshots).
//! Bytes in, bytes out: nothing here does I/O or imports another layer.

pub mod blob;
pub mod chunker;
pub mod crypto;
pub mod database;
pub mod duration;
pub mod id;
pub mod objects;
pub mod pack;
pub mod records;
pub mod size;
pub mod snapshot;
pub mod tree;
pub mod wal;

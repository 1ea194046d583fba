//! Content-defined chunking: FastCDC 2020 with a secret gear table.
//!
//! Format 2 derives all 256 gear values from a 256-bit chunker key (BLAKE3 in
//! key-derivation mode), so chunk boundaries reveal nothing an attacker can
//! invert into the key: the 64-bit seed that format 1 XORed into the public
//! table was recoverable from a handful of boundaries (Truong et al., CCS 2025).

use std::io::Read;
use std::sync::Arc;

use fastcdc::v2020::{cut_gear, Normalization, StreamCDC, MASKS};
use serde::{Deserialize, Serialize};

/// Chunk size bounds and the secret that shapes boundaries, fixed at `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    /// Format 1 only: XORed into FastCDC's public gear table.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seed: u64,
    /// Format 2: the chunker key, from which the whole gear table is derived.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::format::id::opt_hex32"
    )]
    pub key: Option<[u8; 32]>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ChunkerParams {
    /// Defaults: 512 KiB / 1 MiB / 4 MiB (see repo-format.md for the measurement),
    /// with a secret chunker key.
    pub fn with_key(key: [u8; 32]) -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
            seed: 0,
            key: Some(key),
        }
    }

    /// Format 1 parameters: the public gear table XORed with a 64-bit seed.
    pub fn with_seed(seed: u64) -> Self {
        ChunkerParams {
            seed,
            key: None,
            ..Self::with_key([0; 32])
        }
    }

    /// The bounds fastcdc accepts, checked before a repository is created with them.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min_size)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg_size)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes {}/{}/{} are outside fastcdc's limits or not ordered min <= avg <= max",
                self.min_size, self.avg_size, self.max_size
            ))
        }
    }
}

/// A chunker ready to cut: the parameters and, for format 2, the derived gear
/// tables (computed once per repository, shared by every thread).
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    gear: Option<Arc<Gear>>,
}

struct Gear {
    gear: [u64; 256],
    gear_ls: [u64; 256],
}

impl Gear {
    /// 256 little-endian u64 values from BLAKE3's key-derivation mode keyed by the
    /// chunker key, and their left shifts (FastCDC's two tables).
    fn derive(key: &[u8; 32]) -> Gear {
        let mut hasher = blake3::Hasher::new_derive_key("cairn 2026-11 fastcdc gear table");
        hasher.update(key);
        let mut bytes = [0u8; 256 * 8];
        hasher.finalize_xof().fill(&mut bytes);
        let mut gear = [0u64; 256];
        for (g, b) in gear.iter_mut().zip(bytes.chunks_exact(8)) {
            *g = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
        let gear_ls = gear.map(|g| g << 1);
        Gear { gear, gear_ls }
    }
}

impl Chunker {
    pub fn new(params: ChunkerParams) -> Chunker {
        Chunker {
            gear: params.key.as_ref().map(|k| Arc::new(Gear::derive(k))),
            params,
        }
    }

    pub fn params(&self) -> &ChunkerParams {
        &self.params
    }

    /// Splits a stream into chunks. Streams shorter than the minimum chunk size are
    /// one chunk and skip the chunker's `max_size` buffer entirely (most files are small).
    pub fn chunks<R: Read + Send + 'static>(
        &self,
        mut source: R,
        size_hint: Option<u64>,
    ) -> ChunkIter {
        if let Some(n) = size_hint {
            if n < self.params.min_size as u64 {
                let mut buf = Vec::with_capacity(n as usize);
                return match source.read_to_end(&mut buf) {
                    // A file that grew while we read it can exceed min_size: chunk what we got.
                    Ok(_) if buf.len() >= self.params.min_size as usize => {
                        self.stream(std::io::Cursor::new(buf))
                    }
                    Ok(_) if buf.is_empty() => Box::new(std::iter::empty()),
                    Ok(_) => Box::new(std::iter::once(Ok(buf))),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
            }
        }
        self.stream(source)
    }

    fn stream<R: Read + Send + 'static>(&self, source: R) -> ChunkIter {
        let p = &self.params;
        match &self.gear {
            Some(gear) => Box::new(KeyedStream::new(source, p, gear.clone())),
            None => Box::new(
                StreamCDC::with_level_and_seed(
                    source,
                    p.min_size,
                    p.avg_size,
                    p.max_size,
                    Normalization::Level1,
                    p.seed,
                )
                .map(|r| r.map(|c| c.data).map_err(std::io::Error::from)),
            ),
        }
    }
}

/// A stream of chunks that can move between threads.
pub type ChunkIter = Box<dyn Iterator<Item = std::io::Result<Vec<u8>>> + Send>;

/// FastCDC over a stream with the keyed gear table: fastcdc's own cut-point
/// search (`cut_gear`, normalisation level 1), fed from a buffer of `max_size`.
struct KeyedStream<R> {
    source: R,
    gear: Arc<Gear>,
    buf: Vec<u8>,
    len: usize,
    eof: bool,
    min: usize,
    avg: usize,
    max: usize,
    masks: [u64; 4],
}

impl<R: Read> KeyedStream<R> {
    fn new(source: R, p: &ChunkerParams, gear: Arc<Gear>) -> Self {
        let bits = fastcdc::v2020::logarithm2(p.avg_size);
        let level = Normalization::Level1.bits();
        let mask_s = MASKS[(bits + level) as usize];
        let mask_l = MASKS[(bits - level) as usize];
        KeyedStream {
            source,
            gear,
            buf: vec![0; p.max_size as usize],
            len: 0,
            eof: false,
            min: p.min_size as usize,
            avg: p.avg_size as usize,
            max: p.max_size as usize,
            masks: [mask_s, mask_l, mask_s << 1, mask_l << 1],
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        while !self.eof && self.len < self.buf.len() {
            match self.source.read(&mut self.buf[self.len..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for KeyedStream<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        if self.len == 0 {
            return None;
        }
        let [ms, ml, msl, mll] = self.masks;
        let (_, cut) = cut_gear(
            &self.buf[..self.len],
            self.min,
            self.avg,
            self.max,
            ms,
            ml,
            msl,
            mll,
            &self.gear.gear,
            &self.gear.gear_ls,
        );
        let chunk = self.buf[..cut].to_vec();
        self.buf.copy_within(cut..self.len, 0);
        self.len -= cut;
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 256,
            avg_size: 1024,
            max_size: 4096,
            seed: 0,
            key: Some([42; 32]),
        }
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn cut(data: &[u8], p: &ChunkerParams) -> Vec<Vec<u8>> {
        Chunker::new(*p)
            .chunks(std::io::Cursor::new(data.to_vec()), Some(data.len() as u64))
            .map(|c| c.unwrap())
            .collect()
    }

    #[test]
    fn empty_stream_has_no_chunks() {
        assert!(cut(&[], &small()).is_empty());
    }

    fn sizes(data: &[u8], p: &ChunkerParams) -> Vec<usize> {
        cut(data, p).iter().map(|c| c.len()).collect()
    }

    #[test]
    fn key_changes_boundaries() {
        let data = pseudo_random(200_000, 1);
        let other = ChunkerParams {
            key: Some([43; 32]),
            ..small()
        };
        assert_ne!(sizes(&data, &small()), sizes(&data, &other));
    }

    #[test]
    fn format_1_seed_changes_boundaries() {
        let data = pseudo_random(200_000, 1);
        let v1 = |seed| ChunkerParams {
            seed,
            key: None,
            ..small()
        };
        assert_ne!(sizes(&data, &v1(42)), sizes(&data, &v1(43)));
    }

    /// The keyed table shares nothing with FastCDC's public table: no value of
    /// it is a public value XOR one constant (the format 1 weakness).
    #[test]
    fn keyed_gear_is_not_a_seeded_public_table() {
        let g = Gear::derive(&[7; 32]);
        let (public, _) = fastcdc::v2020::get_gear_with_seed(0);
        let x = g.gear[0] ^ public[0];
        assert!(g
            .gear
            .iter()
            .zip(public.iter())
            .skip(1)
            .any(|(a, b)| a ^ b != x));
        assert_eq!(g.gear_ls[5], g.gear[5] << 1);
    }

    #[test]
    fn insert_at_front_only_changes_first_chunks() {
        let data = pseudo_random(400_000, 9);
        let mut shifted = b"0123456789".to_vec();
        shifted.extend_from_slice(&data);
        let a = cut(&data, &small());
        let b = cut(&shifted, &small());
        let set: std::collections::HashSet<_> = a.iter().collect();
        let new = b.iter().filter(|c| !set.contains(c)).count();
        assert!(new <= 3, "{new} of {} chunks changed", b.len());
    }

    #[test]
    fn validate_rejects_disorder() {
        assert!(ChunkerParams {
            min_size: 8192,
            avg_size: 4096,
            max_size: 65536,
            ..small()
        }
        .validate()
        .is_err());
        assert!(ChunkerParams::with_key([1; 32]).validate().is_ok());
    }

    proptest! {
        #[test]
        fn chunks_reassemble_within_bounds(len in 0usize..60_000, seed in any::<u64>(), keyed in any::<bool>()) {
            let data = pseudo_random(len, seed);
            let p = if keyed { small() } else { ChunkerParams { seed: 42, key: None, ..small() } };
            let parts = cut(&data, &p);
            prop_assert_eq!(parts.concat(), data);
            for (i, c) in parts.iter().enumerate() {
                prop_assert!(c.len() <= p.max_size as usize);
                if i + 1 < parts.len() {
                    prop_assert!(c.len() >= p.min_size as usize);
                }
            }
        }
    }
}

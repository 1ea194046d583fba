//! Content-defined chunking: FastCDC 2020, seeded per repository.

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};
use serde::{Deserialize, Serialize};

/// Chunk size bounds and the gear seed, fixed for a repository at `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    /// XORed into FastCDC's gear table; secret, so boundaries don't fingerprint content.
    pub seed: u64,
}

impl ChunkerParams {
    /// Defaults: 512 KiB / 1 MiB / 4 MiB (see repo-format.md for the measurement).
    pub fn with_seed(seed: u64) -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
            seed,
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

/// Splits a stream into chunks. Streams shorter than the minimum chunk size are
/// one chunk and skip the chunker's `max_size` buffer entirely (most files are small).
pub fn chunks<R: Read + Send + 'static>(
    mut source: R,
    size_hint: Option<u64>,
    params: &ChunkerParams,
) -> ChunkIter {
    if let Some(n) = size_hint {
        if n < params.min_size as u64 {
            let mut buf = Vec::with_capacity(n as usize);
            return match source.read_to_end(&mut buf) {
                // A file that grew while we read it can exceed min_size: chunk what we got.
                Ok(_) if buf.len() >= params.min_size as usize => {
                    Box::new(chunk_stream(std::io::Cursor::new(buf), params))
                }
                Ok(_) if buf.is_empty() => Box::new(std::iter::empty()),
                Ok(_) => Box::new(std::iter::once(Ok(buf))),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
        }
    }
    Box::new(chunk_stream(source, params))
}

/// A stream of chunks that can move between threads.
pub type ChunkIter = Box<dyn Iterator<Item = std::io::Result<Vec<u8>>> + Send>;

fn chunk_stream<R: Read + Send + 'static>(
    source: R,
    params: &ChunkerParams,
) -> impl Iterator<Item = std::io::Result<Vec<u8>>> + Send {
    StreamCDC::with_level_and_seed(
        source,
        params.min_size,
        params.avg_size,
        params.max_size,
        Normalization::Level1,
        params.seed,
    )
    .map(|r| r.map(|c| c.data).map_err(std::io::Error::from))
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
            seed: 42,
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
        chunks(
            std::io::Cursor::new(data.to_vec()),
            Some(data.len() as u64),
            p,
        )
        .map(|c| c.unwrap())
        .collect()
    }

    #[test]
    fn empty_stream_has_no_chunks() {
        assert!(cut(&[], &small()).is_empty());
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(200_000, 1);
        let a: Vec<usize> = cut(&data, &small()).iter().map(|c| c.len()).collect();
        let b: Vec<usize> = cut(
            &data,
            &ChunkerParams {
                seed: 43,
                ..small()
            },
        )
        .iter()
        .map(|c| c.len())
        .collect();
        assert_ne!(a, b);
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
            seed: 1
        }
        .validate()
        .is_err());
        assert!(ChunkerParams::with_seed(1).validate().is_ok());
    }

    proptest! {
        #[test]
        fn chunks_reassemble_within_bounds(len in 0usize..60_000, seed in any::<u64>()) {
            let data = pseudo_random(len, seed);
            let p = small();
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

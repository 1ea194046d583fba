//! Reading many blobs at once: the one place readers (restore, dump, copy,
//! drill, and a future mount) learn where blobs sit in packs.
//!
//! Wanted blobs are grouped by pack; blobs of one pack closer than
//! [`READ_GAP`] are fetched with one range request (a *run*, at most
//! [`MAX_RUN_BYTES`]); runs are read and decoded in parallel. A run whose
//! pack is gone was swept by a prune after it repacked the blobs elsewhere
//! (repo-format.md §15, rule 10): each of its blobs is read from where a
//! fresh index says it lives now. A run that fails otherwise (a short read of
//! a truncated pack, a storage error) is retried blob by blob, so each blob
//! gets its own verdict and the readable ones still arrive.

use std::collections::HashMap;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::cache::Cache;
use super::{pack_key, Repository};
use crate::error::{Error, Result};
use crate::format::id::{BlobId, PackId};
use crate::format::tree::ContentRef;

/// Blobs of one pack closer than this are fetched in one request: reading
/// through a small gap is cheaper than another request.
pub const READ_GAP: u64 = 1 << 20;

/// The most one range read spans: bounds the bytes each thread holds (a whole
/// 16 MiB pack read at once per thread was most of restore's peak memory).
pub const MAX_RUN_BYTES: u64 = 4 << 20;

/// A blob a reader wants, and what the reader needs to know when it arrives.
pub struct WantedBlob<T> {
    pub id: BlobId,
    /// Its plaintext length when known (sizes the decompression buffer).
    pub raw_len: Option<u32>,
    pub tag: T,
}

/// A wanted blob with the place the index gives it.
struct Placed<T> {
    want: WantedBlob<T>,
    offset: u64,
    length: u64,
}

/// Blobs of one pack read with one request.
struct Run<'p, T> {
    key: &'p str,
    blobs: &'p [Placed<T>],
}

impl Repository {
    /// Reads the sealed (still encrypted) bytes of every wanted blob and
    /// hands each to `each` with its tag, once, from the thread pool, in no
    /// particular order. A blob no index lists arrives as
    /// [`Error::BlobNotIndexed`]. The first error `each` returns stops the
    /// reading (runs already under way finish) and is returned.
    pub fn read_sealed_blobs<T, F>(&self, wanted: Vec<WantedBlob<T>>, each: F) -> Result<()>
    where
        T: Send + Sync,
        F: Fn(&WantedBlob<T>, Result<&[u8]>) -> Result<()> + Sync,
    {
        let (by_pack, unindexed) = self.place(wanted);
        for w in &unindexed {
            each(w, Err(Error::BlobNotIndexed(w.id.to_hex())))?;
        }
        let keys: Vec<(String, &Vec<Placed<T>>)> = by_pack
            .iter()
            .map(|((kind, pack), blobs)| (pack_key(*kind, pack), blobs))
            .collect();
        let runs: Vec<Run<'_, T>> = keys
            .iter()
            .flat_map(|(key, blobs)| split_runs(blobs).map(move |blobs| Run { key, blobs }))
            .collect();
        match runs.as_slice() {
            // One run (a single blob: every tree load) is read on the
            // caller's thread, not handed to the pool and waited for.
            [run] => self.read_run(run, &each),
            _ => runs
                .par_iter()
                .try_for_each(|run| self.read_run(run, &each)),
        }
    }

    /// [`read_sealed_blobs`](Self::read_sealed_blobs), decoded: each blob
    /// arrives decrypted, decompressed and checked against its ID.
    pub fn read_blobs<T, F>(&self, wanted: Vec<WantedBlob<T>>, each: F) -> Result<()>
    where
        T: Send + Sync,
        F: Fn(&WantedBlob<T>, Result<Vec<u8>>) -> Result<()> + Sync,
    {
        self.read_sealed_blobs(wanted, |w, sealed| {
            let raw_len = w.raw_len.map(|n| n as usize);
            let plain = sealed.and_then(|s| {
                self.decode_blob(&w.id, s, raw_len)
                    .or_else(|e| self.read_past_cache(&w.id, raw_len).unwrap_or(Err(e)))
            });
            each(w, plain)
        })
    }

    /// Reads the blobs of a file's content in parallel, applies `f` to each
    /// (also in parallel, as it arrives), and returns the results in the
    /// content's order. The first failure stops it.
    pub fn map_content<R, F>(&self, content: &[ContentRef], f: F) -> Result<Vec<R>>
    where
        R: Send + Sync,
        F: Fn(Vec<u8>) -> Result<R> + Sync,
    {
        let slots: Vec<OnceLock<R>> = content.iter().map(|_| OnceLock::new()).collect();
        let wanted = content
            .iter()
            .enumerate()
            .map(|(i, c)| WantedBlob {
                id: c.id,
                raw_len: Some(c.size),
                tag: i,
            })
            .collect();
        self.read_blobs(wanted, |w, plain| {
            let _ = slots[w.tag].set(f(plain?)?);
            Ok(())
        })?;
        Ok(slots
            .into_iter()
            .map(|s| {
                s.into_inner()
                    .expect("every blob was read or the read failed")
            })
            .collect())
    }

    /// A blob that failed to decode may have come from a damaged cached copy
    /// of its pack: that copy is dropped, never trusted, and the blob read
    /// from the repository itself. `None` when the cache holds no copy of
    /// its pack: the failure stands.
    fn read_past_cache(&self, id: &BlobId, raw_len: Option<usize>) -> Option<Result<Vec<u8>>> {
        self.cache()?;
        let loc = self.index().lookup(id)?;
        let key = pack_key(loc.kind, &loc.pack);
        if !Cache::caches_ranges(&key) {
            return None;
        }
        let range = loc.offset as u64..loc.offset as u64 + loc.length as u64;
        Some(
            self.reread_uncached(&key, range)
                .and_then(|sealed| self.decode_blob(id, &sealed, raw_len)),
        )
    }

    /// Groups wanted blobs by pack, each pack's blobs by offset; returns the
    /// ones no index lists apart.
    #[allow(clippy::type_complexity)]
    fn place<T>(
        &self,
        wanted: Vec<WantedBlob<T>>,
    ) -> (
        HashMap<(crate::format::blob::BlobType, PackId), Vec<Placed<T>>>,
        Vec<WantedBlob<T>>,
    ) {
        let mut by_pack: HashMap<_, Vec<Placed<T>>> = HashMap::new();
        let mut unindexed = Vec::new();
        for want in wanted {
            match self.index().lookup(&want.id) {
                Some(loc) => by_pack
                    .entry((loc.kind, loc.pack))
                    .or_default()
                    .push(Placed {
                        want,
                        offset: loc.offset as u64,
                        length: loc.length as u64,
                    }),
                None => unindexed.push(want),
            }
        }
        for blobs in by_pack.values_mut() {
            blobs.sort_by_key(|b| b.offset);
        }
        (by_pack, unindexed)
    }

    /// Reads one run with one request and hands out its blobs.
    fn read_run<T, F>(&self, run: &Run<'_, T>, each: &F) -> Result<()>
    where
        F: Fn(&WantedBlob<T>, Result<&[u8]>) -> Result<()> + Sync,
    {
        let start = run.blobs[0].offset;
        let end = run
            .blobs
            .iter()
            .map(|b| b.offset + b.length)
            .max()
            .unwrap_or(start);
        match self.get_exact_range(run.key, start..end) {
            Ok(bytes) => run.blobs.iter().try_for_each(|b| {
                let at = (b.offset - start) as usize;
                each(&b.want, Ok(&bytes[at..at + b.length as usize]))
            }),
            // Swept by a concurrent prune after repacking: read each blob
            // from where it lives now.
            Err(Error::MissingObject(_)) => run
                .blobs
                .iter()
                .try_for_each(|b| deliver(&b.want, self.read_relocated_sealed(&b.want.id), each)),
            // One verdict per blob: the readable ones still arrive.
            Err(_) if run.blobs.len() > 1 => run.blobs.iter().try_for_each(|b| {
                let one = self.get_exact_range(run.key, b.offset..b.offset + b.length);
                deliver(&b.want, one, each)
            }),
            Err(e) => each(&run.blobs[0].want, Err(e)),
        }
    }
}

fn deliver<T, F>(want: &WantedBlob<T>, read: Result<bytes::Bytes>, each: &F) -> Result<()>
where
    F: Fn(&WantedBlob<T>, Result<&[u8]>) -> Result<()>,
{
    match read {
        Ok(bytes) => each(want, Ok(&bytes)),
        Err(e) => each(want, Err(e)),
    }
}

/// Splits one pack's blobs (sorted by offset) into runs read with one request
/// each: blobs closer than [`READ_GAP`] share a run, up to [`MAX_RUN_BYTES`].
fn split_runs<T>(blobs: &[Placed<T>]) -> impl Iterator<Item = &[Placed<T>]> {
    let mut first = 0;
    let mut runs = Vec::new();
    for i in 1..=blobs.len() {
        let split = i == blobs.len() || {
            let (prev, next) = (&blobs[i - 1], &blobs[i]);
            let near = next.offset < prev.offset + prev.length + READ_GAP;
            let span = next.offset + next.length - blobs[first].offset;
            !near || span > MAX_RUN_BYTES
        };
        if split {
            runs.push(&blobs[first..i]);
            first = i;
        }
    }
    runs.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(offset: u64, length: u64) -> Placed<()> {
        Placed {
            want: WantedBlob {
                id: BlobId([offset as u8; 32]),
                raw_len: None,
                tag: (),
            },
            offset,
            length,
        }
    }

    fn spans(blobs: &[Placed<()>]) -> Vec<(u64, u64)> {
        split_runs(blobs)
            .map(|r| {
                (
                    r[0].offset,
                    r.iter().map(|b| b.offset + b.length).max().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn near_blobs_share_a_run_and_far_ones_do_not() {
        let mib = 1 << 20;
        let blobs = [placed(0, 100), placed(200, 100), placed(200 + 2 * mib, 100)];
        assert_eq!(spans(&blobs), [(0, 300), (200 + 2 * mib, 300 + 2 * mib)]);
    }

    #[test]
    fn a_run_never_spans_more_than_the_cap() {
        let mib = 1 << 20;
        let blobs: Vec<_> = (0..10).map(|i| placed(i * mib, mib)).collect();
        let runs = spans(&blobs);
        assert!(runs.iter().all(|(s, e)| e - s <= MAX_RUN_BYTES), "{runs:?}");
        assert_eq!(runs.len(), 3);
        assert_eq!(runs.last().unwrap().1, 10 * mib);
    }

    #[test]
    fn no_blobs_no_runs() {
        assert!(spans(&[]).is_empty());
    }
}

//! Micro-benchmarks of cairn's engine: each stage of the backup pipeline on its
//! own, one core, deterministic in-memory data (no files).
//!
//! Run all:             `cargo bench --bench engine`
//! Run one group:       `cargo bench --bench engine -- zstd`
//! The 10M-blob index:  `cargo bench --bench engine -- index_scale`
//!
//! Throughput figures are per core: the backup pipeline runs these stages on
//! every core at once (rayon), so the machine's ceiling for a stage is roughly
//! its figure here times the core count.

use std::hint::black_box;
use std::io::Cursor;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rayon::prelude::*;

use cairn::format::blob::Padding;
use cairn::format::blob::{self, BlobType};
use cairn::format::chunker::{Chunker, ChunkerParams};
use cairn::format::crypto::{aad, BlobHasher, Cipher, Secret};
use cairn::format::id::{BlobId, PackId};
use cairn::format::objects::{self, IndexedPack};
use cairn::format::pack::Trailer;
use cairn::format::pack::{self, PackBuilder, PackEntry};
use cairn::repo::index::MasterIndex;

const MIB: usize = 1024 * 1024;

// ---- deterministic data -----------------------------------------------------

/// xorshift64*: fast, deterministic, incompressible output.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
    fn id(&mut self) -> [u8; 32] {
        let mut id = [0u8; 32];
        self.fill(&mut id);
        id
    }
}

/// Incompressible bytes.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    Rng::new(seed).fill(&mut v);
    v
}

/// Text shaped like `pg_dump` output of `pgbench_accounts` (COPY rows: four
/// columns, a long blank filler): compresses about as well as the real dump.
fn sql_like_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n + 128);
    let filler = " ".repeat(84);
    let mut aid = 1u64;
    while out.len() < n {
        let bid = aid / 100_000 + 1;
        let balance = (rng.next() % 10_000) as i64 - 5_000;
        let row = if rng.next().is_multiple_of(50) {
            format!("{aid}\t{bid}\t{balance}\t{filler}\n")
        } else {
            format!("{aid}\t{bid}\t0\t{filler}\n")
        };
        out.extend_from_slice(row.as_bytes());
        aid += 1;
    }
    out.truncate(n);
    out
}

/// Rows of `pg_dump` output of a table of random 1 KiB `bytea` (hex text).
fn hex_dump_bytes(n: usize, seed: u64) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n + 4096);
    let mut id = 1u64;
    while out.len() < n {
        out.extend_from_slice(format!("{id}\t\\\\x").as_bytes());
        for _ in 0..128 {
            for b in rng.next().to_le_bytes() {
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
        }
        out.push(b'\n');
        id += 1;
    }
    out.truncate(n);
    out
}

fn secret(b: u8) -> Secret {
    Secret([b; 32])
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .configure_from_args()
}

// ---- chunking and hashing ---------------------------------------------------

fn bench_chunker(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunker");
    let chunker = Chunker::new(ChunkerParams::with_key([0x5E; 32]));
    let n = 64 * MIB;
    for (name, data) in [
        ("random", random_bytes(n, 1)),
        ("sql", sql_like_bytes(n, 2)),
    ] {
        let data: Arc<[u8]> = data.into();
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(format!("fastcdc_1MiB_avg/{name}_64MiB"), |b| {
            b.iter(|| {
                let mut count = 0usize;
                for chunk in chunker.chunks(Cursor::new(Arc::clone(&data)), Some(n as u64)) {
                    count += chunk.unwrap().len();
                }
                assert_eq!(count, n);
                count
            })
        });
    }
    // Small files take the short path (one read, no chunker buffer).
    let small: Arc<[u8]> = random_bytes(4096, 3).into();
    g.throughput(Throughput::Bytes(4096));
    g.bench_function("small_file_4KiB", |b| {
        b.iter(|| {
            chunker
                .chunks(Cursor::new(Arc::clone(&small)), Some(4096))
                .count()
        })
    });
    g.finish();
}

fn bench_blake3(c: &mut Criterion) {
    let mut g = c.benchmark_group("blake3_keyed");
    let hasher = BlobHasher::new(&secret(7));
    for size in [4 * 1024, MIB] {
        let data = random_bytes(size, 4);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("id/{}KiB", size / 1024), |b| {
            b.iter(|| hasher.id(black_box(&data)))
        });
    }
    g.finish();
}

// ---- codecs -----------------------------------------------------------------

/// Three shapes of data: a pgbench dump (~60:1), hex text of random bytes as
/// `pg_dump` writes a random `bytea` column (~2:1), and random bytes (1:1).
fn corpora() -> [(&'static str, Vec<u8>); 3] {
    [
        ("compressible", sql_like_bytes(MIB, 5)),
        ("hex", hex_dump_bytes(MIB, 15)),
        ("incompressible", random_bytes(MIB, 6)),
    ]
}

fn bench_zstd(c: &mut Criterion) {
    let mut g = c.benchmark_group("zstd");
    g.throughput(Throughput::Bytes(MIB as u64));
    for (name, data) in corpora() {
        g.bench_function(format!("compress_l3/{name}_1MiB"), |b| {
            b.iter(|| zstd::bulk::compress(black_box(&data), 3).unwrap())
        });
        // Cheaper levels, for the level choice: what they cost and keep.
        for level in [1, -3] {
            g.bench_function(format!("compress_l{level}/{name}_1MiB"), |b| {
                b.iter(|| zstd::bulk::compress(black_box(&data), level).unwrap())
            });
            let n = zstd::bulk::compress(&data, level).unwrap().len();
            eprintln!(
                "zstd level {level}, {name}: 1 MiB -> {n} bytes ({:.1}:1)",
                MIB as f64 / n as f64
            );
        }
        let packed = zstd::bulk::compress(&data, 3).unwrap();
        eprintln!(
            "zstd level 3, {name}: 1 MiB -> {} bytes ({:.1}:1)",
            packed.len(),
            MIB as f64 / packed.len() as f64
        );
        g.bench_function(format!("decompress/{name}_1MiB"), |b| {
            b.iter(|| zstd::bulk::decompress(black_box(&packed), MIB).unwrap())
        });
    }
    g.finish();
}

fn bench_aead(c: &mut Criterion) {
    let mut g = c.benchmark_group("xchacha20poly1305");
    let cipher = Cipher::new(&secret(8));
    for size in [4 * 1024, MIB] {
        let data = random_bytes(size, 7);
        let sealed = cipher.seal(&data, b"aad");
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("seal/{}KiB", size / 1024), |b| {
            b.iter(|| cipher.seal(black_box(&data), b"aad"))
        });
        g.bench_function(format!("open/{}KiB", size / 1024), |b| {
            b.iter(|| cipher.open(black_box(&sealed), b"aad").unwrap())
        });
    }
    g.finish();
}

/// `blob::encode` (compress when it pays, then seal) and `decode`: what each
/// chunk costs between the hasher and the pack.
fn bench_blob(c: &mut Criterion) {
    let mut g = c.benchmark_group("blob");
    let cipher = Cipher::new(&secret(9));
    let hasher = BlobHasher::new(&secret(10));
    g.throughput(Throughput::Bytes(MIB as u64));
    for (name, data) in corpora() {
        let id = hasher.id(&data);
        g.bench_function(format!("encode_l3/{name}_1MiB"), |b| {
            b.iter(|| blob::encode(&cipher, &id, black_box(&data), 3, Padding::Bucket))
        });
        let sealed = blob::encode(&cipher, &id, &data, 3, Padding::Bucket);
        g.bench_function(format!("decode/{name}_1MiB"), |b| {
            b.iter(|| blob::decode(&cipher, &id, black_box(&sealed), Some(MIB)).unwrap())
        });
    }
    g.finish();
}

/// One core's whole per-byte CPU path of a backup: chunk, hash, encode.
/// Its throughput times the core count bounds a first backup from a fast disk.
fn bench_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_one_core");
    let chunker = Chunker::new(ChunkerParams::with_key([0x5E; 32]));
    let cipher = Cipher::new(&secret(11));
    let hasher = BlobHasher::new(&secret(12));
    let n = 32 * MIB;
    g.throughput(Throughput::Bytes(n as u64));
    for (name, data) in [
        ("sql", sql_like_bytes(n, 13)),
        ("hex", hex_dump_bytes(n, 16)),
        ("random", random_bytes(n, 14)),
    ] {
        let data: Arc<[u8]> = data.into();
        g.bench_function(format!("chunk_hash_encode/{name}_32MiB"), |b| {
            b.iter(|| {
                let mut stored = 0usize;
                for chunk in chunker.chunks(Cursor::new(Arc::clone(&data)), Some(n as u64)) {
                    let chunk = chunk.unwrap();
                    let id = hasher.id(&chunk);
                    stored += blob::encode(&cipher, &id, &chunk, 3, Padding::Bucket).len();
                }
                stored
            })
        });
    }
    g.finish();
}

// ---- packs ------------------------------------------------------------------

fn sealed_blobs(cipher: &Cipher, count: usize, size: usize, seed: u64) -> Vec<(BlobId, Vec<u8>)> {
    let hasher = BlobHasher::new(&secret(13));
    (0..count)
        .map(|i| {
            let data = random_bytes(size, seed + i as u64);
            let id = hasher.id(&data);
            (id, blob::encode(cipher, &id, &data, 0, Padding::Bucket))
        })
        .collect()
}

fn bench_pack(c: &mut Criterion) {
    let mut g = c.benchmark_group("pack");
    let cipher = Cipher::new(&secret(14));
    for (count, size) in [(16usize, MIB), (4096, 4096)] {
        let blobs = sealed_blobs(&cipher, count, size, 100);
        let total: usize = blobs.iter().map(|(_, s)| s.len()).sum();
        let label = format!("{count}x{}KiB", size / 1024);
        g.throughput(Throughput::Bytes(total as u64));
        g.bench_function(format!("build/{label}"), |b| {
            b.iter(|| {
                let mut p = PackBuilder::new(BlobType::Data, total + 64 * 1024);
                for (id, sealed) in &blobs {
                    p.add(*id, sealed, size as u32);
                }
                p.finish(&cipher, Trailer::Sealed)
            })
        });
        let mut p = PackBuilder::new(BlobType::Data, total + 64 * 1024);
        for (id, sealed) in &blobs {
            p.add(*id, sealed, size as u32);
        }
        let (bytes, _, _) = p.finish(&cipher, Trailer::Sealed);
        g.throughput(Throughput::Elements(count as u64));
        g.bench_function(format!("read_header/{label}"), |b| {
            b.iter(|| pack::read_header(&cipher, Trailer::Sealed, black_box(&bytes)).unwrap())
        });
    }
    g.finish();
}

// ---- index ------------------------------------------------------------------

/// `blobs` random blob IDs in packs of `per_pack`, as the index objects list them.
fn synthetic_packs(blobs: usize, per_pack: usize, seed: u64) -> Vec<IndexedPack> {
    let mut rng = Rng::new(seed);
    let mut packs = Vec::with_capacity(blobs.div_ceil(per_pack));
    let mut left = blobs;
    while left > 0 {
        let n = left.min(per_pack);
        let mut offset = 0u32;
        let entries = (0..n)
            .map(|_| {
                let length = 1000 + (rng.next() % 4000) as u32;
                let e = PackEntry {
                    id: BlobId(rng.id()),
                    offset,
                    length,
                    raw_length: length + 100,
                };
                offset += length;
                e
            })
            .collect();
        packs.push(IndexedPack {
            id: PackId(rng.id()),
            kind: BlobType::Data,
            blobs: entries,
        });
        left -= n;
    }
    packs
}

fn build_index(packs: &[IndexedPack]) -> MasterIndex {
    let idx = MasterIndex::new();
    for p in packs {
        idx.add_pack(p).unwrap();
    }
    idx.finish().unwrap();
    idx
}

/// Probe IDs: every `step`-th stored ID (hits) and fresh random IDs (misses).
fn probes(packs: &[IndexedPack], count: usize, seed: u64) -> (Vec<BlobId>, Vec<BlobId>) {
    let all: Vec<BlobId> = packs
        .iter()
        .flat_map(|p| p.blobs.iter().map(|b| b.id))
        .collect();
    let step = (all.len() / count).max(1);
    let hits: Vec<BlobId> = all.iter().step_by(step).copied().take(count).collect();
    let mut rng = Rng::new(seed);
    let misses = (0..count).map(|_| BlobId(rng.id())).collect();
    (hits, misses)
}

fn bench_lookups(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    idx: &MasterIndex,
    hits: &[BlobId],
    misses: &[BlobId],
) {
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            i = (i + 1) % hits.len();
            assert!(idx.lookup(black_box(&hits[i])).is_some());
        })
    });
    let mut j = 0usize;
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            j = (j + 1) % misses.len();
            assert!(idx.lookup(black_box(&misses[j])).is_none());
        })
    });
}

fn bench_index(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let mut g = c.benchmark_group("index_1M");
    let packs = synthetic_packs(N, 1000, 21);
    let idx = build_index(&packs);
    let (hits, misses) = probes(&packs, 65_536, 22);
    bench_lookups(&mut g, &idx, &hits, &misses);

    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("build_from_packs", |b| {
        b.iter(|| build_index(black_box(&packs)))
    });
    let payload = objects::encode_index(&packs);
    g.bench_function("encode_index", |b| {
        b.iter(|| objects::encode_index(black_box(&packs)))
    });
    g.bench_function("decode_index", |b| {
        b.iter(|| objects::decode_index(black_box(&payload)).unwrap())
    });
    g.bench_function("decode_and_build", |b| {
        b.iter(|| build_index(&objects::decode_index(black_box(&payload)).unwrap()))
    });
    g.finish();
    eprintln!(
        "index_1M: {} blobs, {} heap bytes, {:.1} bytes/blob",
        idx.blob_count(),
        idx.heap_bytes(),
        idx.heap_bytes() as f64 / idx.blob_count() as f64
    );
}

// ---- 10M-blob index: memory and load time ------------------------------------

const SCALE_BLOBS: usize = 10_000_000;
/// Blobs per pack: 16 MiB packs of ~16 KiB blobs (a repository of small files,
/// the case where the blob count, not the byte count, is large).
const SCALE_PER_PACK: usize = 1000;
/// Packs per index object: the saver's checkpoint size.
const SCALE_PACKS_PER_OBJECT: usize = cairn::repo::saver::CHECKPOINT_PACKS;

struct Scale {
    index: MasterIndex,
    hits: Vec<BlobId>,
    misses: Vec<BlobId>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Builds the 10M-blob repository index once, reports its memory and how long
/// it takes to load, and keeps the loaded index for the lookup benches.
fn scale() -> &'static Scale {
    static SCALE: OnceLock<Scale> = OnceLock::new();
    SCALE.get_or_init(|| {
        let t = Instant::now();
        let packs = synthetic_packs(SCALE_BLOBS, SCALE_PER_PACK, 31);
        let (hits, misses) = probes(&packs, 1 << 20, 32);
        let cipher = Cipher::new(&secret(33));
        // The index objects as stored: encode, zstd, seal (what `load_index` reads).
        let objects: Vec<Vec<u8>> = packs
            .par_chunks(SCALE_PACKS_PER_OBJECT)
            .map(|ps| objects::seal_object(&cipher, aad::INDEX, &objects::encode_index(ps)))
            .collect();
        let payload = objects::encode_index(&packs);
        drop(packs);
        let stored: usize = objects.iter().map(Vec::len).sum();
        eprintln!(
            "\nindex_scale: {SCALE_BLOBS} blobs in {} index objects ({:.0} MB stored, {:.0} MB as one payload), made in {:.1} s",
            objects.len(),
            stored as f64 / 1e6,
            payload.len() as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );

        // (a) one plain payload: decode_index + add_pack + finish, one thread.
        let mut plain = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let idx = build_index(&objects::decode_index(&payload).unwrap());
            plain.push(t.elapsed().as_secs_f64());
            black_box(idx.blob_count());
        }
        drop(payload);
        // (b) the repository's own path (Repository::load_index minus storage I/O):
        // objects opened, decompressed and decoded in parallel, then merged and sorted.
        let mut full = Vec::new();
        let mut index = MasterIndex::new();
        for _ in 0..3 {
            let t = Instant::now();
            let decoded: Vec<Vec<IndexedPack>> = objects
                .par_iter()
                .map(|o| objects::decode_index(&objects::open_object(&cipher, aad::INDEX, o).unwrap()).unwrap())
                .collect();
            let idx = MasterIndex::new();
            for ps in &decoded {
                for p in ps {
                    idx.add_pack(p).unwrap();
                }
            }
            drop(decoded);
            idx.finish().unwrap();
            full.push(t.elapsed().as_secs_f64());
            index = idx;
        }
        drop(objects);
        let heap = index.heap_bytes();
        eprintln!(
            "index_scale: MasterIndex holds {} blobs in {:.1} MiB heap = {:.1} bytes/blob",
            index.blob_count(),
            heap as f64 / MIB as f64,
            heap as f64 / index.blob_count() as f64
        );
        eprintln!(
            "index_scale: load from one decoded payload (decode + add + sort, 1 thread): median {:.2} s of 3",
            median(plain)
        );
        eprintln!(
            "index_scale: load from sealed index objects (open + unzstd + decode on {} threads, add + sort): median {:.2} s of 3\n",
            rayon::current_num_threads(),
            median(full)
        );
        Scale { index, hits, misses }
    })
}

fn bench_index_scale(c: &mut Criterion) {
    let mut g = c.benchmark_group("index_scale_10M");
    // Building happens inside the first closure that runs, so a filter that
    // excludes this group costs nothing.
    g.throughput(Throughput::Elements(1));
    g.bench_function("lookup_hit", |b| {
        let s = scale();
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % s.hits.len();
            assert!(s.index.lookup(black_box(&s.hits[i])).is_some());
        })
    });
    g.bench_function("lookup_miss", |b| {
        let s = scale();
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % s.misses.len();
            assert!(s.index.lookup(black_box(&s.misses[i])).is_none());
        })
    });
    g.throughput(Throughput::Elements(65_536));
    g.bench_function("contains_batch_64k_sorted", |b| {
        let s = scale();
        let mut batch: Vec<BlobId> = s.hits[..32_768]
            .iter()
            .chain(&s.misses[..32_768])
            .copied()
            .collect();
        batch.sort();
        b.iter_batched(
            || batch.clone(),
            |batch| batch.iter().filter(|id| s.index.contains(id)).count(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = engine;
    config = config();
    targets = bench_chunker, bench_blake3, bench_zstd, bench_aead, bench_blob, bench_pipeline, bench_pack, bench_index, bench_index_scale
}
criterion_main!(engine);

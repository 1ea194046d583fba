//! Measures candidate chunker parameters on real data from this machine: blobs
//! per GiB (index memory, request and header overhead) against the bytes a small
//! edit forces to be stored again (dedup granularity).
//!
//! `cargo bench --bench chunk_defaults [-- DIR]` (default corpus: /usr/lib, first 1 GiB of files)

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use cairn::format::chunker::{Chunker, ChunkerParams};
use cairn::format::crypto::{BlobHasher, Secret};

const CORPUS_LIMIT: u64 = 1 << 30;

fn collect(dir: &Path, out: &mut Vec<PathBuf>, total: &mut u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if *total >= CORPUS_LIMIT {
            return;
        }
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            collect(&e.path(), out, total);
        } else if ft.is_file() {
            if let Ok(m) = e.metadata() {
                *total += m.len();
                out.push(e.path());
            }
        }
    }
}

/// A small local edit: one 10-byte insert at a pseudo-random place.
fn edited(data: &[u8], seed: u64) -> Vec<u8> {
    let pos = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) % data.len() as u64) as usize;
    let mut out = Vec::with_capacity(data.len() + 10);
    out.extend_from_slice(&data[..pos]);
    out.extend_from_slice(b"0123456789");
    out.extend_from_slice(&data[pos..]);
    out
}

fn ids(data: Vec<u8>, p: &Chunker, h: &BlobHasher) -> Vec<(blake3::Hash, usize)> {
    let n = data.len() as u64;
    p.chunks(std::io::Cursor::new(data), Some(n))
        .map(|c| {
            let c = c.unwrap();
            (blake3::Hash::from(h.id(&c).0), c.len())
        })
        .collect()
}

fn main() {
    let dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "/usr/lib".into());
    let mut files = Vec::new();
    let mut total = 0;
    collect(Path::new(&dir), &mut files, &mut total);
    println!(
        "corpus: {} files, {:.1} MiB under {dir}",
        files.len(),
        total as f64 / 1048576.0
    );
    let h = BlobHasher::new(&Secret([7; 32]));
    let k = 1024;
    let candidates = [
        (64 * k, 256 * k, 1024 * k),
        (256 * k, 1024 * k, 4096 * k),
        (512 * k, 1024 * k, 4096 * k),
        (512 * k, 1024 * k, 8192 * k),
        (1024 * k, 2048 * k, 8192 * k),
    ];
    println!("| min/avg/max KiB | blobs | blobs per GiB | unique MiB | re-stored MiB after one 10-byte insert in each file > 1 MiB |");
    println!("| --- | --- | --- | --- | --- |");
    for (min, avg, max) in candidates {
        let p = Chunker::new(ChunkerParams {
            min_size: min,
            avg_size: avg,
            max_size: max,
            ..ChunkerParams::with_key([0x5e; 32])
        });
        let mut seen = HashSet::new();
        let (mut blobs, mut unique) = (0u64, 0u64);
        let mut restored = 0u64;
        for f in &files {
            let Ok(data) = std::fs::read(f) else { continue };
            let big = data.len() > 1 << 20;
            let edit = big.then(|| edited(&data, data.len() as u64));
            for (id, len) in ids(data, &p, &h) {
                blobs += 1;
                if seen.insert(id) {
                    unique += len as u64;
                }
            }
            if let Some(e) = edit {
                for (id, len) in ids(e, &p, &h) {
                    if !seen.contains(&id) {
                        restored += len as u64;
                    }
                }
            }
        }
        println!(
            "| {}/{}/{} | {blobs} | {:.0} | {:.1} | {:.1} |",
            min / k,
            avg / k,
            max / k,
            blobs as f64 / (total as f64 / (1u64 << 30) as f64),
            unique as f64 / 1048576.0,
            restored as f64 / 1048576.0
        );
    }
}

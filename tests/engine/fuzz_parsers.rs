//! The stable-toolchain companion of the `fuzz/` crate (see README, "Fuzzing"):
//! every parser of stored bytes gets arbitrary and mutated inputs, never panics,
//! and never makes one allocation larger than [`MAX_ALLOC`]. As in the fuzz
//! targets, inner payloads are sealed under a fixed test key with the right
//! associated data, so the decoders behind the MAC are reached.
//!
//! A counting global allocator records the largest single allocation made by
//! the current thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;

use cairn::format::blob::{self, BlobType, Padding};
use cairn::format::chunker::ChunkerParams;
use cairn::format::crypto::{aad, blob_aad, Cipher, KdfParams, Secret};
use cairn::format::id::{BlobId, PackId, SnapshotId};
use cairn::format::objects::{self, Config, IndexedPack, KeyFile};
use cairn::format::pack::{self, PackBuilder, PackEntry, Trailer};
use cairn::format::snapshot::Snapshot;
use cairn::format::tree::{ContentRef, Node, NodeType, Tree};
use cairn::repo::lock::LockInfo;

struct Counting;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// No parser may make one allocation above this for the small inputs here.
const MAX_ALLOC: usize = 8 << 20;

/// The largest single allocation `f` makes on this thread.
fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.with(|p| p.set(0));
    let out = f();
    (out, PEAK.with(|p| p.get()))
}

fn bounded<T>(f: impl FnOnce() -> T) -> T {
    let (out, peak) = peak_alloc(f);
    assert!(peak <= MAX_ALLOC, "one allocation of {peak} bytes");
    out
}

fn cipher() -> Cipher {
    Cipher::new(&Secret([7; 32]))
}

const BLOB_ID: BlobId = BlobId([5; 32]);

/// `version || sealed(frame)` with the associated data `objects::open_object`
/// expects (the kind, then from version 2 the version byte).
fn envelope(c: &Cipher, kind: &[u8], version: u8, frame: &[u8]) -> Vec<u8> {
    let mut a = kind.to_vec();
    if version >= 2 {
        a.push(version);
    }
    let mut out = vec![version];
    out.extend_from_slice(&c.seal(frame, &a));
    out
}

/// A payload as the fuzz harnesses use it: compressed (or, with `raw_frame`,
/// taken as the zstd frame itself) in a version 1 or 2 envelope.
fn object(c: &Cipher, kind: &[u8], v1: bool, raw_frame: bool, payload: &[u8]) -> Vec<u8> {
    let frame = if raw_frame {
        payload.to_vec()
    } else {
        zstd::bulk::compress(payload, 1).unwrap()
    };
    envelope(c, kind, if v1 { 1 } else { 2 }, &frame)
}

fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn config_json() -> Vec<u8> {
    serde_json::to_vec(&Config {
        version: 2,
        id: "ab".repeat(32),
        chunker: ChunkerParams::with_key([1; 32]),
        blob_id_key: [2; 32],
        pack_size: objects::DEFAULT_PACK_SIZE,
        compression: 3,
        padding: Padding::Bucket,
        min_retention_secs: Some(86_400),
    })
    .unwrap()
}

fn key_json() -> Vec<u8> {
    let kf = KeyFile {
        version: 0,
        kdf: "argon2id".into(),
        params: KdfParams::default(),
        salt: objects::to_b64(&[1; 16]),
        master_key: String::new(),
        created: t0(),
        hostname: "h".into(),
        username: "u".into(),
    };
    kf.seal(|a| cipher().seal(&[9; 32], a))
}

fn index_payload() -> Vec<u8> {
    objects::encode_index(&[
        IndexedPack {
            id: PackId([1; 32]),
            kind: BlobType::Data,
            blobs: vec![
                PackEntry {
                    id: BlobId([2; 32]),
                    offset: 0,
                    length: 100,
                    raw_length: 60,
                },
                PackEntry {
                    id: BlobId([3; 32]),
                    offset: 100,
                    length: 50,
                    raw_length: 10,
                },
            ],
        },
        IndexedPack {
            id: PackId([4; 32]),
            kind: BlobType::Tree,
            blobs: vec![],
        },
    ])
}

fn tree_json() -> Vec<u8> {
    let node = |name: &str, kind| Node {
        name: name.into(),
        name_hex: None,
        kind,
        mode: 0o644,
        uid: 1,
        gid: 1,
        user: "u".into(),
        group: "g".into(),
        mtime_ns: 1,
        ctime_ns: 1,
        inode: 3,
        device: 4,
        links: 2,
        size: 10,
        content: vec![],
        subtree: None,
        target: None,
        target_hex: None,
        rdev: 0,
    };
    let mut d = node("d", NodeType::Dir);
    d.subtree = Some(BlobId([8; 32]));
    let mut f = node("f", NodeType::File);
    f.content = vec![ContentRef {
        id: BlobId([9; 32]),
        size: 10,
    }];
    let mut l = node("l", NodeType::Symlink);
    l.target = Some("../x".into());
    l.target_hex = Some("2e2e2f78".into());
    Tree {
        nodes: vec![d, f, l],
    }
    .to_bytes()
}

fn snapshot_json() -> Vec<u8> {
    serde_json::to_vec(&Snapshot {
        time: t0(),
        tree: BlobId([1; 32]),
        paths: vec!["/p".into()],
        hostname: "h".into(),
        username: "u".into(),
        uid: 1,
        gid: 1,
        tags: vec!["t".into()],
        excludes: vec![],
        parent: Some(SnapshotId([3; 32])),
        program_version: "cairn".into(),
        summary: None,
        session: Some("0123456789abcdef0123456789abcdef".into()),
        original: None,
        databases: Vec::new(),
        wal: None,
    })
    .unwrap()
}

fn lock_json() -> Vec<u8> {
    serde_json::to_vec(&LockInfo {
        time: t0(),
        exclusive: false,
        hostname: "h".into(),
        username: "u".into(),
        pid: 1,
        nonce: "00".repeat(16),
    })
    .unwrap()
}

/// The frame (codec byte onwards) `blob::encode` writes.
fn blob_frame(plain: &[u8], level: i32, pad: Padding) -> Vec<u8> {
    let c = cipher();
    let sealed = blob::encode(&c, &BLOB_ID, plain, level, pad);
    c.open(&sealed, &blob_aad(&BLOB_ID)).unwrap()
}

/// The plaintext of a real pack header of three blobs, and the bytes they take.
fn pack_header() -> (Vec<u8>, usize) {
    let c = cipher();
    let mut b = PackBuilder::new(BlobType::Data, 0);
    for (i, p) in [&b""[..], b"abc", &[7; 500]].iter().enumerate() {
        let id = BlobId([i as u8; 32]);
        b.add(
            id,
            &blob::encode(&c, &id, p, 3, Padding::Bucket),
            p.len() as u32,
        );
    }
    let prefix = b.len();
    let (bytes, _, _) = b.finish(&c, Trailer::Plain);
    let n = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
    let sealed = &bytes[bytes.len() - 4 - n..bytes.len() - 4];
    (c.open(sealed, aad::PACK_HEADER).unwrap(), prefix)
}

/// One edit of a valid input; length fields are hit by `SetU32`.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    SetU32(prop::sample::Index, u32),
    Insert(prop::sample::Index, Vec<u8>),
    Remove(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = any::<prop::sample::Index>;
    prop_oneof![
        (i(), 0u8..8).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (i(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        (
            i(),
            prop_oneof![any::<u32>(), Just(u32::MAX), Just(0), Just(1 << 30)]
        )
            .prop_map(|(a, b)| Mutation::SetU32(a, b)),
        (i(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (i(), 1usize..16).prop_map(|(a, b)| Mutation::Remove(a, b)),
        i().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut v: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = v.len();
        match m {
            Mutation::Insert(i, b) => {
                let at = i.index(n + 1);
                v.splice(at..at, b.iter().copied());
            }
            _ if n == 0 => {}
            Mutation::Flip(i, b) => v[i.index(n)] ^= 1 << b,
            Mutation::Set(i, b) => v[i.index(n)] = *b,
            Mutation::SetU32(i, x) => {
                let at = i.index(n);
                for (k, b) in x.to_le_bytes().into_iter().enumerate() {
                    if at + k < n {
                        v[at + k] = b;
                    }
                }
            }
            Mutation::Remove(i, len) => {
                let at = i.index(n);
                v.drain(at..(at + len).min(n));
            }
            Mutation::Truncate(i) => v.truncate(i.index(n)),
        }
    }
    v
}

fn edits() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..5)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..1024)
}

// ---- one runner per parser: the same code the fuzz targets run ----

fn run_envelope(data: &[u8]) {
    let c = cipher();
    bounded(|| {
        for kind in [aad::CONFIG, aad::INDEX, aad::SNAPSHOT, aad::LOCK] {
            let _ = objects::open_object(&c, kind, data);
        }
    });
}

fn run_key_file(data: &[u8]) {
    bounded(|| {
        if let Ok((kf, a)) = KeyFile::parse(data) {
            let _ = kf.salt_bytes();
            let _ = kf.params.validate();
            if let Ok(s) = kf.sealed_master_key() {
                let _ = cipher().open(&s, &a);
            }
        }
    });
}

fn run_config(obj: &[u8]) {
    let c = cipher();
    bounded(|| {
        if let Ok(cfg) = objects::open_json::<Config>(&c, aad::CONFIG, obj) {
            let _ = cfg.validate();
        }
    });
}

fn run_index(obj: &[u8]) {
    let c = cipher();
    bounded(|| {
        if let Ok(p) = objects::open_object(&c, aad::INDEX, obj) {
            let _ = objects::decode_index(&p);
        }
    });
}

fn run_snapshot(obj: &[u8]) {
    let c = cipher();
    bounded(|| {
        if let Ok(s) = objects::open_json::<Snapshot>(&c, aad::SNAPSHOT, obj) {
            let _ = s.has_tag("t");
        }
    });
}

fn run_lock(obj: &[u8]) {
    let c = cipher();
    bounded(|| {
        if let Ok(l) = objects::open_json::<LockInfo>(&c, aad::LOCK, obj) {
            let _ = l.describe();
        }
    });
}

fn run_tree(data: &[u8]) {
    let c = cipher();
    let mut frame = vec![blob::CODEC_RAW];
    frame.extend_from_slice(data);
    let sealed = c.seal(&frame, &blob_aad(&BLOB_ID));
    bounded(|| {
        let plain = blob::decode(&c, &BLOB_ID, &sealed, Some(data.len())).unwrap();
        if let Ok(t) = Tree::from_bytes(&plain) {
            for n in &t.nodes {
                let _ = n.os_name();
                let _ = n.link_target();
            }
        }
    });
}

/// A zstd frame of `n` bytes can legitimately hold up to ~32768·n bytes (one
/// 128 KiB RLE block per 4 bytes); a blob's output buffer may be that large,
/// never larger.
fn frame_bound(n: usize) -> usize {
    (n / 4 + 1) * (128 << 10)
}

fn run_blob(frame: &[u8], raw_len: Option<usize>) {
    let c = cipher();
    let sealed = c.seal(frame, &blob_aad(&BLOB_ID));
    let (_, peak) = peak_alloc(|| blob::decode(&c, &BLOB_ID, &sealed, raw_len));
    let limit = MAX_ALLOC.max(frame_bound(frame.len()));
    assert!(peak <= limit, "one allocation of {peak} bytes");
}

fn run_pack(header: &[u8], prefix: usize, trailer: Option<Trailer>, t4: Option<Vec<u8>>) {
    let c = cipher();
    let sealed = c.seal(header, aad::PACK_HEADER);
    let Some(trailer) = trailer else {
        bounded(|| pack::decode_header(&c, &sealed, prefix as u64)).ok();
        return;
    };
    let mut bytes = vec![0u8; prefix];
    bytes.extend_from_slice(&sealed);
    let plain = t4.unwrap_or_else(|| (sealed.len() as u32).to_le_bytes().to_vec());
    match trailer {
        Trailer::Plain => bytes.extend_from_slice(&plain),
        Trailer::Sealed => bytes.extend_from_slice(&c.seal(&plain, aad::PACK_TRAILER)),
    }
    bounded(|| {
        let _ = pack::read_header(&c, trailer, &bytes);
        let n = bytes.len();
        let tl = trailer.len().min(n);
        let _ = trailer.header_length(&c, n as u64, &bytes[n - tl..]);
        let _ = Trailer::Plain.header_length(&c, prefix as u64, &bytes[n.saturating_sub(4)..]);
    });
}

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn envelope_arbitrary(data in bytes()) {
        run_envelope(&data);
    }

    #[test]
    fn key_file_arbitrary_and_mutated(data in bytes(), ms in edits()) {
        run_key_file(&data);
        run_key_file(&mutate(key_json(), &ms));
    }

    #[test]
    fn config_arbitrary_and_mutated(data in bytes(), ms in edits(), v1: bool, raw: bool) {
        let c = cipher();
        run_config(&object(&c, aad::CONFIG, v1, raw, &data));
        run_config(&object(&c, aad::CONFIG, v1, false, &mutate(config_json(), &ms)));
        let frame = zstd::bulk::compress(&config_json(), 3).unwrap();
        run_config(&object(&c, aad::CONFIG, v1, true, &mutate(frame, &ms)));
    }

    #[test]
    fn index_arbitrary_and_mutated(data in bytes(), ms in edits(), v1: bool, raw: bool) {
        let c = cipher();
        run_index(&object(&c, aad::INDEX, v1, raw, &data));
        run_index(&object(&c, aad::INDEX, v1, false, &mutate(index_payload(), &ms)));
    }

    #[test]
    fn snapshot_arbitrary_and_mutated(data in bytes(), ms in edits(), v1: bool) {
        let c = cipher();
        run_snapshot(&object(&c, aad::SNAPSHOT, v1, false, &data));
        run_snapshot(&object(&c, aad::SNAPSHOT, v1, false, &mutate(snapshot_json(), &ms)));
    }

    #[test]
    fn lock_arbitrary_and_mutated(data in bytes(), ms in edits(), v1: bool) {
        let c = cipher();
        run_lock(&object(&c, aad::LOCK, v1, false, &data));
        run_lock(&object(&c, aad::LOCK, v1, false, &mutate(lock_json(), &ms)));
    }

    #[test]
    fn tree_arbitrary_and_mutated(data in bytes(), ms in edits()) {
        run_tree(&data);
        run_tree(&mutate(tree_json(), &ms));
    }

    #[test]
    fn blob_arbitrary_and_mutated(
        data in bytes(),
        ms in edits(),
        codec in 0u8..5,
        raw_len in prop_oneof![Just(None), any::<u32>().prop_map(|n| Some(n as usize)), (0usize..5000).prop_map(Some)],
        level in prop_oneof![Just(0), Just(3)],
        pad in prop_oneof![Just(Padding::None), Just(Padding::Bucket), Just(Padding::Padme)],
    ) {
        let mut frame = vec![codec];
        frame.extend_from_slice(&data);
        run_blob(&frame, raw_len);
        let plain = [&data[..], &data[..], &data[..]].concat();
        run_blob(&mutate(blob_frame(&plain, level, pad), &ms), raw_len);
    }

    #[test]
    fn pack_header_arbitrary_and_mutated(
        data in bytes(),
        ms in edits(),
        prefix in prop_oneof![0usize..2000, Just(0)],
        trailer in prop_oneof![Just(None), Just(Some(Trailer::Plain)), Just(Some(Trailer::Sealed))],
        t4 in prop::option::of(prop::collection::vec(any::<u8>(), 0..6)),
    ) {
        run_pack(&data, prefix, trailer, t4.clone());
        let (header, real_prefix) = pack_header();
        run_pack(&mutate(header, &ms), real_prefix, trailer, t4);
    }
}

#[test]
fn the_valid_inputs_decode() {
    let c = cipher();
    let obj = object(&c, aad::CONFIG, false, false, &config_json());
    let cfg = objects::open_json::<Config>(&c, aad::CONFIG, &obj).unwrap();
    assert_eq!(cfg.validate(), Ok(()));
    assert_eq!(objects::decode_index(&index_payload()).unwrap().len(), 2);
    assert_eq!(Tree::from_bytes(&tree_json()).unwrap().nodes.len(), 3);
    KeyFile::parse(&key_json()).unwrap();
    let (header, prefix) = pack_header();
    assert_eq!(
        pack::decode_header(&c, &c.seal(&header, aad::PACK_HEADER), prefix as u64)
            .unwrap()
            .1
            .len(),
        3
    );
    let plain = vec![3u8; 10_000];
    for pad in [Padding::None, Padding::Bucket, Padding::Padme] {
        let frame = blob_frame(&plain, 3, pad);
        let sealed = c.seal(&frame, &blob_aad(&BLOB_ID));
        assert_eq!(blob::decode(&c, &BLOB_ID, &sealed, None).unwrap(), plain);
    }
}

// ---- regression tests: one per bug the fuzzing found ----

/// An index payload of 5 bytes claiming u32::MAX packs made `decode_index`
/// reserve 2^20 packs (64 MiB) before reading one.
#[test]
fn index_pack_count_does_not_size_an_allocation() {
    let mut payload = vec![1u8];
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    let (r, peak) = peak_alloc(|| objects::decode_index(&payload));
    assert!(r.is_err());
    assert!(peak < 4096, "one allocation of {peak} bytes");
}

/// A pack entry claiming u32::MAX blobs made `decode_index` reserve 2^20
/// entries (44 MiB) before reading one.
#[test]
fn index_blob_count_does_not_size_an_allocation() {
    let mut payload = vec![1u8];
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend_from_slice(&[1; 32]);
    payload.push(0);
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    let (r, peak) = peak_alloc(|| objects::decode_index(&payload));
    assert!(r.is_err());
    assert!(peak < 4096, "one allocation of {peak} bytes");
}

/// A zstd frame of a few bytes whose header declares 1 GiB made `blob::decode`
/// allocate 1 GiB for its output; so did a caller-known raw length of 1 GiB.
#[test]
fn blob_declared_size_does_not_size_an_allocation() {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    enc.set_pledged_src_size(Some(1 << 30)).unwrap();
    std::io::Write::write_all(&mut enc, b"short").unwrap();
    // The encoder refuses to finish a frame shorter than pledged; take what it
    // wrote so far (header with the 1 GiB content size, then a block).
    let _ = std::io::Write::flush(&mut enc);
    let mut frame = vec![blob::CODEC_ZSTD];
    frame.extend_from_slice(enc.get_ref());
    assert!(frame.len() < 64, "{}", frame.len());
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&frame[1..]).ok(),
        Some(Some(1 << 30))
    );
    let c = cipher();
    let sealed = c.seal(&frame, &blob_aad(&BLOB_ID));
    for raw_len in [None, Some(1 << 30)] {
        let (r, peak) = peak_alloc(|| blob::decode(&c, &BLOB_ID, &sealed, raw_len));
        assert!(r.is_err());
        assert!(peak <= MAX_ALLOC, "one allocation of {peak} bytes");
    }
}

/// Bounded decompression grew its buffer by doubling, so content one byte over
/// the limit allocated twice the limit before failing.
#[test]
fn bounded_decompression_does_not_overshoot_its_limit() {
    const LIMIT: u64 = 4 << 20;
    let over = zstd::bulk::compress(&vec![0u8; LIMIT as usize + 1], 3).unwrap();
    let (r, peak) = peak_alloc(|| objects::decompress_bounded(&over, LIMIT));
    assert!(r.is_err());
    assert!(peak <= LIMIT as usize, "one allocation of {peak} bytes");
    let exact = zstd::bulk::compress(&vec![0u8; LIMIT as usize], 3).unwrap();
    let (r, peak) = peak_alloc(|| objects::decompress_bounded(&exact, LIMIT));
    assert_eq!(r.unwrap().len(), LIMIT as usize);
    assert!(peak <= LIMIT as usize, "one allocation of {peak} bytes");
}

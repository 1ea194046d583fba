//! Writes valid inputs for every fuzz target into `fuzz/seeds/<target>/`, so
//! mutation starts from real structures. Run from `fuzz/`:
//! `cargo +nightly run --bin seeds`.

use std::path::Path;

use cairn::format::blob::{self, BlobType, Padding};
use cairn::format::chunker::ChunkerParams;
use cairn::format::crypto::{aad, blob_aad, KdfParams};
use cairn::format::id::{BlobId, PackId, SnapshotId};
use cairn::format::objects::{self, Config, IndexedPack, KeyFile};
use cairn::format::pack::{PackBuilder, PackEntry, Trailer};
use cairn::format::snapshot::{Snapshot, SnapshotSummary};
use cairn::format::tree::{ContentRef, Node, NodeType, Tree};
use cairn::repo::lock::LockInfo;
use cairn_fuzz::{cipher, envelope_input, BLOB_ID};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("seeds").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn node(name: &str, kind: NodeType) -> Node {
    Node {
        name: name.into(),
        name_hex: None,
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        user: "u".into(),
        group: "g".into(),
        mtime_ns: 1_700_000_000_000_000_000,
        ctime_ns: 1_700_000_000_000_000_000,
        inode: 42,
        device: 7,
        links: 2,
        size: 10,
        content: vec![],
        subtree: None,
        target: None,
        target_hex: None,
        rdev: 0,
    }
}

fn main() {
    let c = cipher();
    let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();

    // config: both formats, plus a raw-frame variant (flag bit 1).
    let v2 = Config {
        version: 2,
        id: "ab".repeat(32),
        chunker: ChunkerParams::with_key([1; 32]),
        blob_id_key: [2; 32],
        pack_size: objects::DEFAULT_PACK_SIZE,
        compression: 3,
        padding: Padding::Bucket,
    };
    let v1 = Config {
        version: 1,
        chunker: ChunkerParams::with_seed(5),
        padding: Padding::None,
        ..v2.clone()
    };
    for (i, cfg) in [v2, v1].iter().enumerate() {
        let json = serde_json::to_vec(cfg).unwrap();
        write("config", &format!("config{i}"), &envelope_input(&json));
        let mut raw = vec![2u8 | i as u8];
        raw.extend_from_slice(&zstd::bulk::compress(&json, 3).unwrap());
        write("config", &format!("config{i}-frame"), &raw);
    }

    // envelope: real stored objects.
    write(
        "envelope",
        "config",
        &objects::seal_json(&c, aad::CONFIG, &1u32),
    );
    write(
        "envelope",
        "index",
        &objects::seal_object(&c, aad::INDEX, &[1, 0, 0, 0, 0]),
    );

    // key_file: a version 2 key as `init` writes it, and a compact one.
    let kf = KeyFile {
        version: 0,
        kdf: "argon2id".into(),
        params: KdfParams::default(),
        salt: objects::to_b64(&[1; 16]),
        master_key: String::new(),
        created: t0,
        hostname: "host".into(),
        username: "user".into(),
    };
    let key = kf.seal(|a| c.seal(&[9; 32], a));
    write("key_file", "key-pretty", &key);
    let v: serde_json::Value = serde_json::from_slice(&key).unwrap();
    write("key_file", "key-compact", &serde_json::to_vec(&v).unwrap());

    // index
    let packs = vec![
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
    ];
    write(
        "index",
        "two-packs",
        &envelope_input(&objects::encode_index(&packs)),
    );
    write(
        "index",
        "empty",
        &envelope_input(&objects::encode_index(&[])),
    );

    // tree
    let mut dir = node("dir", NodeType::Dir);
    dir.subtree = Some(BlobId([8; 32]));
    let mut file = node("file.txt", NodeType::File);
    file.content = vec![ContentRef {
        id: BlobId([9; 32]),
        size: 10,
    }];
    let mut link = node("link", NodeType::Symlink);
    link.target = Some("../x".into());
    let mut odd = node("caf\u{fffd}", NodeType::File);
    odd.name_hex = Some("636166e9".into());
    let mut t = Tree {
        nodes: vec![dir, file, link, odd],
    };
    write("tree", "tree", &t.to_bytes());

    // snapshot
    let snap = Snapshot {
        time: t0,
        tree: BlobId([1; 32]),
        paths: vec!["/home".into()],
        hostname: "h".into(),
        username: "u".into(),
        uid: 1,
        gid: 1,
        tags: vec!["daily".into()],
        excludes: vec!["*.tmp".into()],
        parent: Some(SnapshotId([3; 32])),
        program_version: "cairn 0.1.0".into(),
        summary: Some(SnapshotSummary {
            backup_start: t0,
            backup_end: t0,
            ..Default::default()
        }),
        session: Some("0123456789abcdef0123456789abcdef".into()),
        original: None,
    };
    write(
        "snapshot",
        "snapshot",
        &envelope_input(&serde_json::to_vec(&snap).unwrap()),
    );

    // lock
    let lock = LockInfo {
        time: t0,
        exclusive: true,
        hostname: "h".into(),
        username: "u".into(),
        pid: 1234,
        nonce: "00".repeat(16),
    };
    write(
        "lock",
        "lock",
        &envelope_input(&serde_json::to_vec(&lock).unwrap()),
    );

    // blob: the frames `blob::encode` writes, for every codec and padding.
    let samples: [&[u8]; 3] = [b"", b"hello hello hello hello", &[b'a'; 3000]];
    for (i, plain) in samples.iter().enumerate() {
        for (p, pad) in [Padding::None, Padding::Bucket, Padding::Padme]
            .into_iter()
            .enumerate()
        {
            for level in [0, 3] {
                let sealed = blob::encode(&c, &BLOB_ID, plain, level, pad);
                let frame = c.open(&sealed, &blob_aad(&BLOB_ID)).unwrap();
                for sel in [0u8, 1] {
                    let mut input = vec![sel];
                    input.extend_from_slice(&(plain.len() as u32).to_le_bytes());
                    input.extend_from_slice(&frame);
                    write("blob", &format!("b{i}-p{p}-l{level}-s{sel}"), &input);
                }
            }
        }
    }

    // pack_header: header plaintexts that tile `prefix` bytes, both trailers.
    for (i, trailer) in [Trailer::Plain, Trailer::Sealed].into_iter().enumerate() {
        let mut b = PackBuilder::new(BlobType::Data, 0);
        for (j, plain) in samples.iter().enumerate() {
            let id = BlobId([j as u8; 32]);
            b.add(
                id,
                &blob::encode(&c, &id, plain, 3, Padding::Bucket),
                plain.len() as u32,
            );
        }
        let prefix = b.len();
        let (bytes, _, _) = b.finish(&c, trailer);
        let t = trailer.len();
        let n = match trailer {
            Trailer::Plain => u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()),
            Trailer::Sealed => {
                let p = c
                    .open(&bytes[bytes.len() - t..], aad::PACK_TRAILER)
                    .unwrap();
                u32::from_le_bytes(p[..].try_into().unwrap())
            }
        } as usize;
        let sealed_header = &bytes[bytes.len() - t - n..bytes.len() - t];
        let header = c.open(sealed_header, aad::PACK_HEADER).unwrap();
        for mode in [0u8, 1 + i as u8] {
            let mut input = vec![mode];
            input.extend_from_slice(&(prefix as u16).to_le_bytes());
            input.push(0);
            input.extend_from_slice(&(n as u32).to_le_bytes());
            input.extend_from_slice(&header);
            write("pack_header", &format!("pack{i}-mode{mode}"), &input);
        }
    }
    println!("seeds written to fuzz/seeds/");
}

//! Makes a repository of N tiny blobs through the library, for the memory
//! figures of repositories too large to back up from real files in a session:
//! one snapshot of N/1000 directories of 1000 files of 200–400 random bytes
//! (one blob each), written exactly as a backup writes them (packs, index
//! checkpoints, trees, a committed session). Then time `cairn snapshots`,
//! `check` and `prune --dry-run` on it with `/usr/bin/time -v`.
//!
//!     CAIRN_PASSWORD=x cargo run --release --example scale_repo -- /tmp/r10m 10000000
//!
//! The key uses a cheap KDF (1 MiB, 1 pass) so the figures show the work's
//! memory, not argon2's buffer.

use std::time::Instant;

use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;

use cairn::format::blob::BlobType;
use cairn::format::crypto::KdfParams;
use cairn::format::records::SessionKind;
use cairn::format::snapshot::Snapshot;
use cairn::format::tree::{ContentRef, Node, NodeType, Tree};
use cairn::repo::saver::{save_tree, BlobSaver};
use cairn::repo::session::Session;
use cairn::storage::Backend;
use cairn::{InitOptions, Repository};

const PER_DIR: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (path, n) = match args.as_slice() {
        [_, path, n] => (path.clone(), n.parse::<usize>()?),
        _ => return Err("usage: scale_repo REPO_DIR BLOBS".into()),
    };
    let password = std::env::var("CAIRN_PASSWORD").unwrap_or_else(|_| "x".into());
    let started = Instant::now();
    let backend = Backend::open(&path, &[], true)?;
    let opts = InitOptions {
        kdf: Some(KdfParams {
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
        }),
        ..Default::default()
    };
    let mut repo = Repository::init(backend, password.as_bytes(), opts)?;
    let session = Session::start(&repo, SessionKind::Backup)?;
    repo.load_index()?;
    let saver = BlobSaver::new(&repo, false)?;
    let dirs = n.div_ceil(PER_DIR);
    let mut root = Tree::default();
    for d in 0..dirs {
        let files = PER_DIR.min(n - d * PER_DIR);
        let nodes: Vec<Node> = (0..files)
            .into_par_iter()
            .map(|f| -> cairn::Result<Node> {
                let mut rng = rand::rngs::StdRng::seed_from_u64((d * PER_DIR + f) as u64);
                let mut data = vec![0u8; rng.gen_range(200..=400)];
                rng.fill_bytes(&mut data);
                let (id, _) = saver.save(BlobType::Data, &data)?;
                Ok(Node {
                    size: data.len() as u64,
                    content: vec![ContentRef {
                        id,
                        size: data.len() as u32,
                    }],
                    ..node(format!("f{f:04}"), NodeType::File, 0o644)
                })
            })
            .collect::<cairn::Result<_>>()?;
        let (sub, _) = save_tree(&saver, &mut Tree { nodes })?;
        root.nodes.push(Node {
            subtree: Some(sub),
            ..node(format!("d{d:05}"), NodeType::Dir, 0o755)
        });
        if d % 500 == 499 {
            eprintln!(
                "{} of {n} blobs, {:.0} s",
                (d + 1) * PER_DIR,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let (tree, _) = save_tree(&saver, &mut root)?;
    let stats = saver.finish()?;
    let snapshot = Snapshot {
        time: chrono::Utc::now(),
        tree,
        paths: vec!["/scale".into()],
        hostname: "scale".into(),
        username: String::new(),
        uid: 0,
        gid: 0,
        tags: Vec::new(),
        excludes: Vec::new(),
        parent: None,
        program_version: format!("cairn {} scale_repo", env!("CARGO_PKG_VERSION")),
        summary: None,
        session: Some(session.id().to_string()),
        original: None,
        databases: Vec::new(),
        wal: None,
    };
    let id = session.commit_snapshot(&repo, &snapshot)?;
    println!(
        "snapshot {id}: {} data blobs, {} packs, {} index objects in {:.0} s",
        stats.data_blobs,
        stats.packs,
        stats.index_objects.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A node as the generator writes it: fixed times, one link.
fn node(name: String, kind: NodeType, mode: u32) -> Node {
    Node {
        mtime_ns: 1_700_000_000_000_000_000,
        ctime_ns: 1_700_000_000_000_000_000,
        links: 1,
        ..Node::new(name, kind, mode)
    }
}

//! Library-level tests: the engine driven directly, on the in-memory store and on disk.

use crate::common;

use std::path::Path;

use cairn::ops::backup::{backup, BackupOptions, NoProgress};
use cairn::ops::check::{check, ReadData};
use cairn::ops::restore::{restore, RestoreOptions};
use cairn::source::Source;
use cairn::{Backend, Error, InitOptions, Repository};
use common::{fast_kdf, random_bytes};

const PW: &[u8] = b"correct horse";

fn make_tree(root: &Path, seed: u64) {
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    std::fs::write(root.join("a.txt"), format!("hello {seed}")).unwrap();
    std::fs::write(root.join("d/big.bin"), random_bytes(3_000_000, seed)).unwrap();
    std::fs::write(root.join("d/e/empty"), b"").unwrap();
}

fn backup_paths(repo: &mut Repository, paths: &[&Path]) -> cairn::ops::backup::BackupOutcome {
    repo.load_index().unwrap();
    let src = Source::Paths(paths.iter().map(|p| p.to_path_buf()).collect());
    backup(repo, src, &BackupOptions::default(), &NoProgress).unwrap()
}

fn assert_same_files(a: &Path, b: &Path) {
    for entry in ["a.txt", "d/big.bin", "d/e/empty"] {
        assert_eq!(
            std::fs::read(a.join(entry)).unwrap(),
            std::fs::read(b.join(entry)).unwrap(),
            "{entry}"
        );
    }
}

/// Restores with --verify semantics and fails the test on any restore error.
fn restore_verified(
    repo: &cairn::repo::IndexedRepository,
    tree: &cairn::format::id::BlobId,
    target: &Path,
) -> cairn::ops::restore::RestoreOutcome {
    let opts = RestoreOptions {
        verify: true,
        ..Default::default()
    };
    restore(repo, tree, target, &opts).unwrap()
}

fn restored_root(target: &Path, src: &Path) -> std::path::PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

#[test]
fn init_open_and_wrong_password() {
    let b = Backend::memory();
    Repository::init(b.clone(), PW, fast_kdf()).unwrap();
    assert!(Repository::open(b.clone(), PW).is_ok());
    assert!(matches!(
        Repository::open(b.clone(), b"nope"),
        Err(Error::WrongPassword { .. })
    ));
    assert!(matches!(
        Repository::init(b, PW, fast_kdf()),
        Err(Error::RepoExists(_))
    ));
    assert!(matches!(
        Repository::open(Backend::memory(), PW),
        Err(Error::RepoNotFound(_))
    ));
}

#[test]
fn unknown_envelope_version_is_refused() {
    let b = Backend::memory();
    Repository::init(b.clone(), PW, fast_kdf()).unwrap();
    let mut cfg = b.get("config").unwrap().to_vec();
    cfg[0] = 9;
    b.delete("config").unwrap();
    b.create("config", cfg).unwrap();
    let err = Repository::open(b, PW)
        .err()
        .expect("must refuse")
        .to_string();
    assert!(err.contains("unsupported object version 9"), "{err}");
}

#[test]
fn backup_restore_round_trip_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 1);
    let mut repo = Repository::init(Backend::memory(), PW, fast_kdf())
        .unwrap()
        .into_indexed()
        .unwrap();
    let out = backup_paths(&mut repo, &[&src]);
    assert!(out.errors.is_empty());
    let target = dir.path().join("restore");
    let r = restore_verified(&repo, &out.snapshot.tree, &target);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.files_verified, 3);
    assert_same_files(&src, &restored_root(&target, &src));
    let report = check(&mut repo, ReadData::All).unwrap();
    assert!(report.ok(), "{:?}", report.errors);
}

#[test]
fn concurrent_backups_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let (s1, s2) = (dir.path().join("one"), dir.path().join("two"));
    make_tree(&s1, 11);
    make_tree(&s2, 22);
    let backend = Backend::memory();
    Repository::init(backend.clone(), PW, fast_kdf()).unwrap();
    let handles: Vec<_> = [s1.clone(), s2.clone()]
        .into_iter()
        .map(|src| {
            let b = backend.clone();
            std::thread::spawn(move || {
                let mut repo = Repository::open(b, PW).unwrap().into_indexed().unwrap();
                let _lock = cairn::repo::lock::acquire(&repo, false).unwrap();
                backup_paths(&mut repo, &[&src]).snapshot.tree
            })
        })
        .collect();
    let trees: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut repo = Repository::open(backend, PW)
        .unwrap()
        .into_indexed()
        .unwrap();
    assert_eq!(repo.snapshot_ids().unwrap().len(), 2);
    assert!(check(&mut repo, ReadData::All).unwrap().ok());
    for (tree, src) in trees.iter().zip([&s1, &s2]) {
        let target = dir
            .path()
            .join(format!("r-{}", src.file_name().unwrap().to_str().unwrap()));
        restore(&repo, tree, &target, &RestoreOptions::default()).unwrap();
        assert_same_files(src, &restored_root(&target, src));
    }
}

#[test]
fn exclusive_lock_excludes_and_stale_locks_are_ignored() {
    let b = Backend::memory();
    let repo = Repository::init(b.clone(), PW, fast_kdf()).unwrap();
    let shared = cairn::repo::lock::acquire(&repo, false).unwrap();
    let second_shared = cairn::repo::lock::acquire(&repo, false).unwrap();
    assert!(matches!(
        cairn::repo::lock::acquire(&repo, true),
        Err(Error::Locked(_))
    ));
    drop(shared);
    drop(second_shared);
    let excl = cairn::repo::lock::acquire(&repo, true).unwrap();
    assert!(matches!(
        cairn::repo::lock::acquire(&repo, false),
        Err(Error::Locked(_))
    ));
    drop(excl);
    assert!(
        b.list("locks").unwrap().is_empty(),
        "locks are released on drop"
    );

    // A lock from a process that is gone (pid far beyond pid_max on this host) is stale.
    let info = serde_json::json!({"time": chrono::Utc::now(), "exclusive": true,
        "hostname": cairn::repo::hostname(), "username": "x", "pid": 999_999_999u32, "nonce": "00"});
    let bytes =
        cairn::format::objects::seal_json(repo.cipher(), cairn::format::crypto::aad::LOCK, &info);
    b.create("locks/deadbeef", bytes).unwrap();
    let _ok =
        cairn::repo::lock::acquire(&repo, false).expect("a dead process's lock must not block");
    assert_eq!(cairn::repo::lock::remove_locks(&repo, false).unwrap(), 1);
}

#[test]
fn packs_without_index_are_adopted_by_the_next_backup() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 5);
    let backend = Backend::memory();
    let mut repo = Repository::init(backend.clone(), PW, fast_kdf())
        .unwrap()
        .into_indexed()
        .unwrap();
    backup_paths(&mut repo, &[&src]);
    // Simulate a backup killed after uploading packs but before any index or snapshot.
    for l in backend
        .list("index")
        .unwrap()
        .into_iter()
        .chain(backend.list("snapshots").unwrap())
    {
        backend.delete(&l.key).unwrap();
    }
    let mut repo = Repository::open(backend.clone(), PW)
        .unwrap()
        .into_indexed()
        .unwrap();
    let report = check(&mut repo, ReadData::None).unwrap();
    assert!(
        report.ok(),
        "orphan packs are not errors: {:?}",
        report.errors
    );
    assert!(!report.warnings.is_empty());
    let out = backup_paths(&mut repo, &[&src]);
    let s = out.snapshot.summary.unwrap();
    assert_eq!(
        s.data_blobs, 0,
        "the adopted packs' blobs are reused, not uploaded again"
    );
    assert!(check(&mut repo, ReadData::All).unwrap().ok());
    let target = dir.path().join("r");
    restore(
        &repo,
        &out.snapshot.tree,
        &target,
        &RestoreOptions::default(),
    )
    .unwrap();
    assert_same_files(&src, &restored_root(&target, &src));
}

#[test]
fn unchanged_files_are_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 9);
    let mut repo = Repository::init(Backend::memory(), PW, fast_kdf())
        .unwrap()
        .into_indexed()
        .unwrap();
    let first = backup_paths(&mut repo, &[&src]);
    let second = backup_paths(&mut repo, &[&src]);
    let s = second.snapshot.summary.clone().unwrap();
    assert_eq!(
        (s.files_new, s.files_changed, s.files_unmodified),
        (0, 0, 3)
    );
    assert_eq!(second.bytes_read, 0);
    assert_eq!(second.parent, first.snapshot_id);
    // The source's own trees are identical (the root differs: /tmp's mtime moves).
    assert_eq!((s.dirs_new, s.dirs_changed, s.dirs_unmodified), (0, 0, 3));
    // A changed file of the same size is re-read (mtime/ctime differ).
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(src.join("a.txt"), b"HELLO 9").unwrap();
    let third = backup_paths(&mut repo, &[&src]);
    let s = third.snapshot.summary.unwrap();
    assert_eq!((s.files_changed, s.files_unmodified), (1, 2));
}

#[test]
fn local_disk_repository_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 3);
    let repo_dir = dir.path().join("repo");
    let backend = Backend::open(repo_dir.to_str().unwrap(), &[], true).unwrap();
    let mut repo = Repository::init(backend, PW, fast_kdf())
        .unwrap()
        .into_indexed()
        .unwrap();
    let out = backup_paths(&mut repo, &[&src]);
    let reopened = Repository::open(
        Backend::open(repo_dir.to_str().unwrap(), &[], false).unwrap(),
        PW,
    )
    .unwrap()
    .into_indexed()
    .unwrap();
    let target = dir.path().join("r");
    restore(
        &reopened,
        &out.snapshot.tree,
        &target,
        &RestoreOptions::default(),
    )
    .unwrap();
    assert_same_files(&src, &restored_root(&target, &src));
    // Every stored object except config is named by the SHA-256 of its bytes.
    let b = reopened.backend();
    for folder in ["data", "tree", "index", "snapshots", "keys"] {
        for l in b.list(folder).unwrap() {
            let name = l.key.rsplit('/').next().unwrap();
            assert_eq!(
                hex::encode(cairn::format::id::storage_hash(&b.get(&l.key).unwrap())),
                name
            );
        }
    }
}

/// Regression: with packs filling faster than they upload, rayon workers block
/// on the upload queue; verification must not need those same workers.
#[test]
fn many_full_packs_do_not_stall_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("f{i}")), random_bytes(4_000_000, 100 + i)).unwrap();
    }
    let opts = InitOptions {
        pack_size: Some(1024 * 1024),
        ..fast_kdf()
    };
    let mut repo = Repository::init(Backend::memory(), PW, opts)
        .unwrap()
        .into_indexed()
        .unwrap();
    let out = backup_paths(&mut repo, &[&src]);
    // A pack closes at >= 1 MiB and may end with one 4 MiB chunk: at least 24 MB / 5 MiB.
    let packs = repo.list_packs().unwrap().len();
    assert!(packs >= 5, "expected many small packs, got {packs}");
    let target = dir.path().join("r");
    restore_verified(&repo, &out.snapshot.tree, &target);
    let root = restored_root(&target, &src);
    for i in 0..6 {
        assert_eq!(
            std::fs::read(root.join(format!("f{i}"))).unwrap(),
            random_bytes(4_000_000, 100 + i)
        );
    }
}

/// An incremental backup (unchanged files taken from the parent) must record
/// exactly what a full re-read records: same trees, same bytes on restore.
#[test]
fn incremental_backup_equals_full_backup() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 21);
    std::fs::write(src.join("d/e/second"), random_bytes(1_500_000, 77)).unwrap();
    let mut repo = Repository::init(Backend::memory(), PW, fast_kdf())
        .unwrap()
        .into_indexed()
        .unwrap();
    backup_paths(&mut repo, &[&src]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(src.join("a.txt"), b"changed since the parent").unwrap();
    std::fs::write(src.join("d/new.bin"), random_bytes(700_000, 78)).unwrap();
    std::fs::remove_file(src.join("d/e/empty")).unwrap();

    let incremental = backup_paths(&mut repo, &[&src]);
    assert!(incremental.parent.is_some());
    let full = {
        repo.load_index().unwrap();
        let opts = BackupOptions {
            force: true,
            ..Default::default()
        };
        backup(
            &mut repo,
            Source::Paths(vec![src.clone()]),
            &opts,
            &NoProgress,
        )
        .unwrap()
    };
    assert!(full.parent.is_none());
    assert!(full.bytes_read > incremental.bytes_read);
    let src_tree = |tree| {
        cairn::repo::tree::find_node(&repo, &tree, src.to_str().unwrap())
            .unwrap()
            .subtree
    };
    assert_eq!(
        src_tree(incremental.snapshot.tree),
        src_tree(full.snapshot.tree)
    );

    let (ti, tf) = (dir.path().join("ri"), dir.path().join("rf"));
    restore(
        &repo,
        &incremental.snapshot.tree,
        &ti,
        &RestoreOptions::default(),
    )
    .unwrap();
    restore(&repo, &full.snapshot.tree, &tf, &RestoreOptions::default()).unwrap();
    for rel in ["a.txt", "d/big.bin", "d/new.bin", "d/e/second"] {
        let want = std::fs::read(src.join(rel)).unwrap();
        assert_eq!(
            std::fs::read(restored_root(&ti, &src).join(rel)).unwrap(),
            want,
            "{rel}"
        );
        assert_eq!(
            std::fs::read(restored_root(&tf, &src).join(rel)).unwrap(),
            want,
            "{rel}"
        );
    }
    assert!(!restored_root(&ti, &src).join("d/e/empty").exists());
}

#[test]
fn stats_count_logical_unique_and_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 31);
    std::fs::copy(src.join("d/big.bin"), src.join("copy.bin")).unwrap();
    let mut repo = Repository::init(Backend::memory(), PW, fast_kdf())
        .unwrap()
        .into_indexed()
        .unwrap();
    backup_paths(&mut repo, &[&src]);
    backup_paths(&mut repo, &[&src]);
    let st = cairn::ops::stats::stats(&repo, &Default::default()).unwrap();
    let tree_bytes = 3_000_000 * 2 + "hello 31".len() as u64;
    assert_eq!(st.snapshots_count, 2);
    assert_eq!(st.total_file_count, 8);
    assert_eq!(st.total_size, 2 * tree_bytes);
    assert_eq!(
        st.raw_data_size,
        3_000_000 + "hello 31".len() as u64,
        "the copy and the second snapshot dedup away"
    );
    assert!(
        st.dedup_ratio > 3.9 && st.dedup_ratio < 4.1,
        "{}",
        st.dedup_ratio
    );
    assert!(
        st.stored_size > 3_000_000 && st.stored_size < 3_200_000,
        "{}",
        st.stored_size
    );
}

/// `forget` takes no lock (prune protocol, rule 12): even while another
/// process holds an exclusive lock (a key change), it proceeds, never exit 11.
#[test]
fn forget_takes_no_lock_and_never_exits_11() {
    use assert_cmd::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 41);
    let repo_dir = dir.path().join("repo");
    let loc = repo_dir.to_str().unwrap();
    let mut repo =
        Repository::init(Backend::open(loc, &[], true).unwrap(), PW, fast_kdf()).unwrap();
    backup_paths(&mut repo, &[&src]);
    backup_paths(&mut repo, &[&src]);
    let forget = || {
        std::process::Command::cargo_bin("cairn")
            .unwrap()
            .env("CAIRN_PASSWORD", std::str::from_utf8(PW).unwrap())
            .args([
                "-r",
                loc,
                "--event-log",
                dir.path().join("ev").to_str().unwrap(),
            ])
            .args(["forget", "--keep-last", "1"])
            .output()
            .unwrap()
    };
    let held = cairn::repo::lock::acquire(&repo, true).unwrap();
    let out = forget();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(repo.snapshot_ids().unwrap().len(), 1);
    drop(held);
}

/// The tree view reads any byte range of a file, touching only the blobs it
/// covers, and ranges past the end read short or empty.
#[test]
fn tree_view_reads_a_file_by_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Larger than twice the largest chunk (4 MiB): several blobs.
    let whole = random_bytes(9_000_000, 7);
    std::fs::write(src.join("big.bin"), &whole).unwrap();
    let mut repo = Repository::init(Backend::memory(), PW, fast_kdf())
        .unwrap()
        .into_indexed()
        .unwrap();
    let out = backup_paths(&mut repo, &[&src]);
    let path = format!("{}/big.bin", src.display());
    let node = cairn::repo::tree::find_node(&repo, &out.snapshot.tree, &path).unwrap();
    assert!(node.content.len() > 2, "a file of several blobs");
    let n = whole.len() as u64;
    let boundary = node.content[0].size as u64;
    for (offset, len) in [
        (0, 10),
        (boundary - 5, 10),
        (1_000_000, 5_500_000),
        (0, whole.len()),
        (n - 10, 100),
        (n, 5),
        (n + 1000, 5),
        (17, 0),
    ] {
        let got = cairn::repo::tree::read_file_at(&repo, &node, offset, len).unwrap();
        let from = (offset.min(n)) as usize;
        let to = (offset.saturating_add(len as u64).min(n)) as usize;
        assert_eq!(got, whole[from..to], "offset {offset} len {len}");
    }
}

/// A snapshot of a directory chain 20,000 levels deep walks (and finds its
/// deepest entry) without running out of the test thread's 2 MiB stack:
/// walks keep their own stack. (Every entry carries its full path, so the
/// cost grows with the square of the depth: 100,000 works but takes minutes
/// in a debug build.)
#[test]
fn tree_view_walks_a_very_deep_tree() {
    use cairn::format::tree::Tree;
    use cairn::repo::saver::{save_tree, BlobSaver};

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let mut repo = Repository::init(Backend::memory(), PW, fast_kdf())
        .unwrap()
        .into_indexed()
        .unwrap();
    let out = backup_paths(&mut repo, &[&src]);
    let dir =
        cairn::repo::tree::find_node(&repo, &out.snapshot.tree, &format!("{}/d", src.display()))
            .unwrap();
    const DEPTH: usize = 20_000;
    let saver = BlobSaver::new(&repo, false).unwrap();
    let mut below = save_tree(&saver, &mut Tree { nodes: vec![] }).unwrap().0;
    for _ in 0..DEPTH {
        let mut node = dir.clone();
        node.subtree = Some(below);
        below = save_tree(&saver, &mut Tree { nodes: vec![node] })
            .unwrap()
            .0;
    }
    saver.finish().unwrap();
    let (mut entries, mut deepest_seen) = (0, 0);
    cairn::repo::tree::walk_tree(&repo, &below, Path::new("/"), &mut |item| {
        entries += 1;
        deepest_seen = item.path.as_os_str().len();
        Ok(true)
    })
    .unwrap();
    assert_eq!(entries, DEPTH);
    assert_eq!(deepest_seen, 2 * DEPTH, "the last entry is the deepest");
    let deepest = "d/".repeat(DEPTH);
    cairn::repo::tree::find_node(&repo, &below, &deepest).unwrap();
}

/// A program embedding cairn needs only the crate root: init, back up two
/// generations, keep the last, prune, open for reading, restore, check.
#[test]
fn the_crate_root_is_enough_to_embed_cairn() {
    use cairn::{
        backup, check, forget_plan, prune, restore, Backend, BackupOptions, NoProgress, Policy,
        PruneOptions, ReadData, Repository, RestoreOptions, Source,
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let backend = Backend::memory();
    let mut repo = Repository::init(backend.clone(), PW, fast_kdf()).unwrap();
    repo.load_index().unwrap();
    for seed in [1, 2] {
        make_tree(&src, seed);
        let paths = Source::Paths(vec![src.clone()]);
        backup(&mut repo, paths, &BackupOptions::default(), &NoProgress).unwrap();
    }
    let policy = Policy {
        last: Some(1),
        ..Default::default()
    };
    for group in forget_plan(repo.list_snapshots().unwrap(), &policy) {
        assert_eq!((group.keep.len(), group.remove.len()), (1, 1));
        for (id, _) in &group.remove {
            repo.delete_snapshot(id).unwrap();
        }
    }
    prune(&mut repo, &PruneOptions::default()).unwrap();
    let reader = Repository::open(backend, PW)
        .unwrap()
        .into_indexed()
        .unwrap();
    let (_, latest) = reader.list_snapshots().unwrap().pop().unwrap();
    let target = tmp.path().join("t");
    let out = restore(&reader, &latest.tree, &target, &RestoreOptions::default()).unwrap();
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_same_files(&src, &restored_root(&target, &src));
    let report = check(&mut reader.into_inner(), ReadData::All).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

/// A copy that started before another host's forget + prune collected one of
/// its snapshots skips that snapshot and copies the rest (a fleet's verifier
/// copies while its admin applies retention).
#[test]
fn a_copy_skips_a_snapshot_forgotten_and_pruned_while_it_ran() {
    use cairn::{copy, prune, PruneOptions};
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let backend = Backend::memory();
    let mut repo = Repository::init(backend.clone(), PW, fast_kdf()).unwrap();
    repo.load_index().unwrap();
    for seed in [21, 22] {
        make_tree(&src, seed);
        let paths = Source::Paths(vec![src.clone()]);
        backup(&mut repo, paths, &BackupOptions::default(), &NoProgress).unwrap();
    }
    let listed = repo.list_snapshots().unwrap();
    let (old, new) = (listed[0].0, listed[1].0);
    repo.delete_snapshot(&old).unwrap();
    let pruned = prune(&mut repo, &PruneOptions::default()).unwrap();
    assert!(pruned.packs_deleted >= 1, "{pruned:?}");

    let dst_backend = Backend::memory();
    let mut dst = Repository::init(dst_backend, PW, fast_kdf()).unwrap();
    let mut src_repo = Repository::open(backend, PW).unwrap();
    let out = copy(&mut src_repo, &mut dst, listed).unwrap();
    assert_eq!(out.forgotten_meanwhile, vec![old]);
    assert_eq!(out.copied.len(), 1);
    assert_eq!(out.copied[0].0, new);
    let report = check(&mut dst, ReadData::All).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.snapshots, 1);
}

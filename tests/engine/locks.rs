//! Prune beside objects the store will not delete (issue 22): an Azure
//! immutability policy or a GCS retention policy refuses the delete of a young
//! object with 409 or 403. The gate store (a TEST DOUBLE, tests/common/gates.rs)
//! locks what is written while its lock is on (packs and index objects, as
//! such a policy would), and refuses their deletes until it is lifted. Prune must complete, count what stayed,
//! leave a repository that checks clean, and take the rest once the lock ends.

use crate::common;

#[path = "../common/gates.rs"]
mod gates;

use std::sync::Arc;

use object_store::memory::InMemory;

use cairn::ops::backup::{backup, BackupOptions, NoProgress};
use cairn::ops::check::{check, ReadData};
use cairn::ops::prune::{prune, PruneOptions};
use cairn::source::Source;
use cairn::{Backend, Repository};
use common::random_bytes;
use gates::GateStore;

const PW: &[u8] = b"lock password";

/// Packs and index objects, as a lock on the bucket holds them.
fn packs_and_index(key: &str) -> bool {
    ["data/", "tree/", "index/"]
        .iter()
        .any(|d| key.starts_with(d))
}

/// A repository in memory behind a store that can lock what is written.
fn lockable_repo() -> (Arc<GateStore>, Backend) {
    let store = Arc::new(GateStore::new(Arc::new(InMemory::new())));
    let b = Backend::from_store(store.clone(), "locked");
    Repository::init(b.clone(), PW, common::fast_kdf()).unwrap();
    (store, b)
}

fn back_up(b: &Backend, src: &std::path::Path) {
    let mut repo = Repository::open(b.clone(), PW).unwrap();
    repo.load_index().unwrap();
    backup(
        &mut repo,
        Source::Paths(vec![src.to_path_buf()]),
        &BackupOptions::default(),
        &NoProgress,
    )
    .unwrap();
}

fn checks_clean(b: &Backend) -> cairn::ops::check::CheckReport {
    let mut repo = Repository::open(b.clone(), PW).unwrap();
    let report = check(&mut repo, ReadData::All).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    report
}

#[test]
fn prune_beside_locked_packs_completes_and_takes_them_once_the_lock_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let (store, b) = lockable_repo();
    store.lock_writes(packs_and_index);
    for seed in [1, 2] {
        std::fs::write(src.join("big"), random_bytes(3_000_000, seed)).unwrap();
        std::fs::write(src.join("small"), format!("generation {seed}")).unwrap();
        back_up(&b, &src);
    }
    let mut repo = Repository::open(b.clone(), PW).unwrap();
    let first = repo.list_snapshots().unwrap()[0].0;
    repo.delete_snapshot(&first).unwrap();

    // The first generation's packs are condemned, and the store refuses to
    // delete them (and the index objects naming them): prune completes.
    let out = prune(&mut repo, &PruneOptions::default()).unwrap();
    assert!(out.swept, "{out:?}");
    assert!(out.packs_refused >= 1, "{out:?}");
    assert_eq!(out.packs_deleted, 0, "{out:?}");
    assert!(out.bytes_refused >= 3_000_000, "{out:?}");
    let report = checks_clean(&b);
    assert!(report.unused_packs >= 1, "{report:?}");

    // The lock ends: the next prune deletes what stayed.
    store.lift_locks();
    let mut repo = Repository::open(b.clone(), PW).unwrap();
    let out = prune(&mut repo, &PruneOptions::default()).unwrap();
    assert!(out.packs_deleted >= 1, "{out:?}");
    assert_eq!(out.packs_refused, 0, "{out:?}");
    let report = checks_clean(&b);
    assert_eq!(report.unused_packs, 0, "{report:?}");
    assert_eq!(report.snapshots, 1, "{report:?}");
}

#[test]
fn a_recorded_minimum_retention_keeps_young_packs_out_of_the_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let b = Backend::memory();
    let opts = cairn::InitOptions {
        min_retention: Some(std::time::Duration::from_secs(86_400)),
        ..common::fast_kdf()
    };
    Repository::init(b.clone(), PW, opts).unwrap();
    for seed in [3, 4] {
        std::fs::write(src.join("big"), random_bytes(2_000_000, seed)).unwrap();
        back_up(&b, &src);
    }
    let mut repo = Repository::open(b.clone(), PW).unwrap();
    assert_eq!(repo.config().min_retention_secs, Some(86_400));
    let first = repo.list_snapshots().unwrap()[0].0;
    repo.delete_snapshot(&first).unwrap();
    let before = chrono::Utc::now();
    let out = prune(&mut repo, &PruneOptions::default()).unwrap();
    let p = &out.plan;
    assert_eq!(p.packs_delete + p.packs_repack, 0, "{p:?}");
    assert!(p.packs_locked >= 1 && p.bytes_locked >= 2_000_000, "{p:?}");
    let until = p.locked_until.expect("a time");
    assert!(until > before + chrono::Duration::hours(23), "{until}");
    assert!(until < before + chrono::Duration::hours(25), "{until}");
    assert_eq!(out.packs_deleted, 0);
    checks_clean(&b);
}

#[test]
fn a_locked_snapshot_object_stays_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"locked snapshot").unwrap();
    let (store, b) = lockable_repo();
    store.lock_writes(|k| packs_and_index(k) || k.starts_with("snapshots/"));
    back_up(&b, &src);
    let repo = Repository::open(b.clone(), PW).unwrap();
    let id = repo.list_snapshots().unwrap()[0].0;
    assert!(!repo.delete_snapshot_unless_locked(&id).unwrap());
    assert_eq!(repo.list_snapshots().unwrap().len(), 1);
    store.lift_locks();
    assert!(repo.delete_snapshot_unless_locked(&id).unwrap());
    assert!(repo.list_snapshots().unwrap().is_empty());
}

//! Backups through a store that fails, delays and cuts uploads short (the
//! fault-injecting wrapper in tests/common/faults.rs, wired in with
//! `Backend::from_store`). Each attempt either completes or fails with an
//! error; afterwards `check --read-data` passes on the undisturbed store and
//! a rerun completes, reusing what was uploaded.

use crate::common;
#[path = "../common/faults.rs"]
mod faults;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cairn::ops::backup::{backup, BackupOptions, NoProgress};
use cairn::ops::check::{check, ReadData};
use cairn::source::Source;
use cairn::{Backend, Repository};
use common::random_bytes;
use faults::{FaultStore, Faults, PutFault};
use object_store::ObjectStore;

const PW: &[u8] = b"fault password";

fn make_source(root: &Path) {
    std::fs::create_dir_all(root.join("d")).unwrap();
    for i in 0..4 {
        std::fs::write(root.join(format!("small{i}")), format!("small file {i}")).unwrap();
    }
    std::fs::write(root.join("d/big.bin"), random_bytes(1_500_000, 9)).unwrap();
}

fn init(clean: &Backend) {
    let opts = common::fast_kdf();
    Repository::init(clean.clone(), PW, opts).unwrap();
}

fn backup_once(b: &Backend, src: &Path) -> cairn::Result<cairn::ops::backup::BackupOutcome> {
    let mut repo = Repository::open(b.clone(), PW)?;
    repo.load_index()?;
    let source = Source::Paths(vec![src.to_path_buf()]);
    backup(&mut repo, source, &BackupOptions::default(), &NoProgress)
}

/// Backs up through the faulty store until an attempt completes; then checks
/// everything on the clean store and reruns there.
fn faulty_then_clean(inner: Arc<dyn ObjectStore>, put: PutFault, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    make_source(dir.path());
    let clean = Backend::from_store(inner.clone(), "clean");
    init(&clean);
    let faults = Faults {
        share: 0.05,
        delay: Duration::from_millis(1),
        put,
    };
    let store = Arc::new(FaultStore::new(inner, faults, seed));
    let faulty = Backend::from_store(store.clone(), "faulty");
    let mut failures = 0;
    let mut completed = false;
    for _ in 0..40 {
        match backup_once(&faulty, dir.path()) {
            Ok(out) => {
                assert!(out.errors.is_empty(), "{:?}", out.errors);
                completed = true;
                break;
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
                failures += 1;
            }
        }
    }
    assert!(completed, "no attempt completed ({put:?})");
    assert!(
        store.injected.load(Ordering::Relaxed) > 0,
        "no fault injected ({put:?})"
    );
    eprintln!("{put:?}: {failures} failed attempts before one completed");

    let mut repo = Repository::open(clean.clone(), PW).unwrap();
    let report = check(&mut repo, ReadData::All).unwrap();
    assert_data_intact(&report, put);

    // A rerun on the clean store completes and uploads no file data again.
    let before = clean.request_counts();
    let again = backup_once(&clean, dir.path()).unwrap();
    let s = again.snapshot.summary.unwrap();
    assert_eq!(s.files_unmodified, 5, "{put:?}");
    let up = clean.request_counts().bytes_up - before.bytes_up;
    assert!(up < 50_000, "{put:?}: rerun uploaded {up} bytes");
    let mut repo = Repository::open(clean, PW).unwrap();
    assert_data_intact(&check(&mut repo, ReadData::All).unwrap(), put);
}

/// Check finds nothing wrong. A store that keeps the part of an upload it
/// then fails (no real object store does: their uploads are atomic) can
/// leave a cut-short session record of a failed attempt; check rightly
/// names that as damage, and only that.
fn assert_data_intact(report: &cairn::ops::check::CheckReport, put: PutFault) {
    let allowed = |object: &str| {
        matches!(put, PutFault::StoreTruncatedThenFail) && object.starts_with("sessions/")
    };
    let other: Vec<_> = report
        .errors
        .iter()
        .filter(|p| !allowed(&p.object))
        .collect();
    assert!(other.is_empty(), "{put:?}: {other:?}");
}

#[test]
fn uploads_refused_memory() {
    let inner = Arc::new(object_store::memory::InMemory::new());
    faulty_then_clean(inner, PutFault::FailBefore, 11);
}

#[test]
fn uploads_stored_but_answer_lost_memory() {
    let inner = Arc::new(object_store::memory::InMemory::new());
    faulty_then_clean(inner, PutFault::FailAfterStoring, 12);
}

#[test]
fn uploads_cut_short_memory() {
    let inner = Arc::new(object_store::memory::InMemory::new());
    faulty_then_clean(inner, PutFault::StoreTruncatedThenFail, 13);
}

#[test]
fn uploads_cut_short_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    let inner =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    faulty_then_clean(inner, PutFault::StoreTruncatedThenFail, 14);
}

/// Slow requests are only slow: a backup through a store that delays every
/// request completes.
#[test]
fn delayed_requests_complete() {
    let dir = tempfile::tempdir().unwrap();
    make_source(dir.path());
    let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    init(&Backend::from_store(inner.clone(), "clean"));
    let faults = Faults {
        share: 0.0,
        delay: Duration::from_millis(20),
        put: PutFault::FailBefore,
    };
    let faulty = Backend::from_store(Arc::new(FaultStore::new(inner, faults, 1)), "slow");
    let out = backup_once(&faulty, dir.path()).unwrap();
    assert_eq!(out.snapshot.summary.unwrap().files_new, 5);
    let counts = faulty.request_counts();
    assert!(
        counts.put >= 3 && counts.bytes_up >= 1_500_000,
        "{counts:?}"
    );
}

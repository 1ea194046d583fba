//! Prune beside objects the store will not delete (issue 22): an Azure
//! immutability policy or a GCS retention policy refuses the delete of a young
//! object with 409 or 403. A TEST DOUBLE store locks what is written while its
//! lock is on (packs and index objects, as such a policy would), and refuses
//! their deletes until it is lifted. Prune must complete, count what stayed,
//! leave a repository that checks clean, and take the rest once the lock ends.

use crate::common;

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use cairn::ops::backup::{backup, BackupOptions, NoProgress};
use cairn::ops::check::{check, ReadData};
use cairn::ops::prune::{prune, PruneOptions};
use cairn::source::Source;
use cairn::{Backend, Repository};
use common::random_bytes;

const PW: &[u8] = b"lock password";

/// Locks every pack and index object written while `locking` is on.
#[derive(Debug, Default)]
struct LockStore {
    inner: Arc<InMemory>,
    locking: AtomicBool,
    /// Snapshot objects too (an immutability policy on the whole container).
    locks_snapshots: AtomicBool,
    locked: Mutex<HashSet<Path>>,
}

impl std::fmt::Display for LockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockStore")
    }
}

impl LockStore {
    fn lifts_every_lock(&self) {
        self.locking.store(false, Ordering::SeqCst);
        self.locked.lock().unwrap().clear();
    }
}

fn lockable(p: &Path) -> bool {
    let s = p.as_ref();
    ["data/", "tree/", "index/"]
        .iter()
        .any(|d| s.starts_with(d))
}

#[async_trait::async_trait]
impl ObjectStore for LockStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        let snapshot = self.locks_snapshots.load(Ordering::SeqCst)
            && location.as_ref().starts_with("snapshots/");
        if self.locking.load(Ordering::SeqCst) && (lockable(location) || snapshot) {
            self.locked.lock().unwrap().insert(location.clone());
        }
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // Decide per path now; InMemory deletes what passes.
        let locked = self.locked.lock().unwrap().clone();
        let inner = self.inner.clone();
        locations
            .then(move |p| {
                let locked = locked.clone();
                let inner = inner.clone();
                async move {
                    let p = p?;
                    if locked.contains(&p) {
                        return Err(object_store::Error::PermissionDenied {
                            path: p.to_string(),
                            source: "the object is under a retention policy".into(),
                        });
                    }
                    let mut s = inner.delete_stream(futures::stream::once(async { Ok(p) }).boxed());
                    s.next().await.expect("one answer")
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
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
    let store = Arc::new(LockStore::default());
    let b = Backend::from_store(store.clone(), "locked");
    Repository::init(b.clone(), PW, common::fast_kdf()).unwrap();
    store.locking.store(true, Ordering::SeqCst);
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
    store.lifts_every_lock();
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
    let store = Arc::new(LockStore::default());
    let b = Backend::from_store(store.clone(), "locked");
    Repository::init(b.clone(), PW, common::fast_kdf()).unwrap();
    store.locking.store(true, Ordering::SeqCst);
    store.locks_snapshots.store(true, Ordering::SeqCst);
    back_up(&b, &src);
    let repo = Repository::open(b.clone(), PW).unwrap();
    let id = repo.list_snapshots().unwrap()[0].0;
    assert!(!repo.delete_snapshot_unless_locked(&id).unwrap());
    assert_eq!(repo.list_snapshots().unwrap().len(), 1);
    store.lifts_every_lock();
    assert!(repo.delete_snapshot_unless_locked(&id).unwrap());
    assert!(repo.list_snapshots().unwrap().is_empty());
}

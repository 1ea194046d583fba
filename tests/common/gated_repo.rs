//! A repository on local disk behind the gate store (tests/common/gates.rs),
//! with the few operations the schedule tests drive through the library.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use cairn::format::id::SnapshotId;
use cairn::ops::backup::{backup, BackupOptions, NoProgress};
use cairn::ops::check::{check, CheckReport, ReadData};
use cairn::ops::prune::{prune, PruneOptions, PruneOutcome};
use cairn::ops::restore::{restore, RestoreOptions};
use cairn::source::Source;
use cairn::{Backend, Repository};

use super::common::random_bytes;
use super::gates::GateStore;

pub const PW: &[u8] = b"schedules";

/// A repository on local disk behind a gate store.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub gates: Arc<GateStore>,
    pub backend: Backend,
    work: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let local = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let gates = Arc::new(GateStore::new(Arc::new(local)));
        let backend = Backend::from_store(gates.clone(), "gated");
        Repository::init(backend.clone(), PW, super::common::fast_kdf()).unwrap();
        Repo {
            dir,
            gates,
            backend,
            work: tempfile::tempdir().unwrap(),
        }
    }

    pub fn open(&self) -> Repository {
        Repository::open(self.backend.clone(), PW).unwrap()
    }

    /// A folder of `n` files of `size` random bytes (seeded), for backups.
    pub fn tree(&self, name: &str, files: &[(&str, usize, u64)]) -> PathBuf {
        let d = self.work.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (f, size, seed) in files {
            std::fs::write(d.join(f), random_bytes(*size, *seed)).unwrap();
        }
        d
    }

    /// Garbage for a prune to collect: a folder backed up, then forgotten.
    pub fn garbage(&self, name: &str, seed: u64) {
        let d = self.tree(name, &[("g.bin", 200_000, seed)]);
        let id = self.backup(&d).unwrap();
        self.forget(&id);
    }

    pub fn backup(&self, dir: &Path) -> cairn::Result<SnapshotId> {
        backup_at(&self.backend, dir)
    }

    pub fn backup_in_background(&self, dir: &Path) -> JoinHandle<cairn::Result<SnapshotId>> {
        let (b, d) = (self.backend.clone(), dir.to_path_buf());
        std::thread::spawn(move || backup_at(&b, &d))
    }

    pub fn prune(&self, opts: &PruneOptions) -> cairn::Result<PruneOutcome> {
        prune(&mut self.open(), opts)
    }

    pub fn prune_in_background(
        &self,
        opts: PruneOptions,
    ) -> JoinHandle<cairn::Result<PruneOutcome>> {
        let b = self.backend.clone();
        std::thread::spawn(move || prune(&mut Repository::open(b, PW).unwrap(), &opts))
    }

    pub fn forget(&self, id: &SnapshotId) {
        self.open().delete_snapshot(id).unwrap();
    }

    pub fn check(&self) -> CheckReport {
        check(&mut self.open(), ReadData::All).unwrap()
    }

    /// Every snapshot in `saved` restores without error, to what `dirs` hold.
    pub fn assert_restores(&self, saved: &[(SnapshotId, &Path)]) {
        let repo = self.open().into_indexed().unwrap();
        for (id, dir) in saved {
            let snap = repo.load_snapshot(id).unwrap();
            let target = tempfile::tempdir().unwrap();
            let out = restore(&repo, &snap.tree, target.path(), &RestoreOptions::default())
                .unwrap_or_else(|e| panic!("snapshot {id} does not restore: {e}"));
            assert!(out.errors.is_empty(), "snapshot {id}: {:?}", out.errors);
            for f in std::fs::read_dir(dir).unwrap() {
                let f = f.unwrap();
                let restored = find(target.path(), &f.file_name()).expect("restored file");
                assert_eq!(
                    std::fs::read(restored).unwrap(),
                    std::fs::read(f.path()).unwrap(),
                    "snapshot {id}: {:?}",
                    f.file_name()
                );
            }
        }
        let report = self.check();
        assert!(report.ok(), "check: {:?}", report.errors);
    }

    pub fn sessions(&self) -> Vec<String> {
        names(&self.dir.path().join("sessions"))
    }
}

pub fn backup_at(b: &Backend, dir: &Path) -> cairn::Result<SnapshotId> {
    let mut repo = Repository::open(b.clone(), PW)?;
    let out = backup(
        &mut repo,
        Source::Paths(vec![dir.to_path_buf()]),
        &BackupOptions::default(),
        &NoProgress,
    )?;
    Ok(out.snapshot_id.expect("not a dry run"))
}

/// The restored copy of a backed-up file: restore recreates the whole path.
pub fn find(root: &Path, name: &std::ffi::OsStr) -> Option<PathBuf> {
    for e in std::fs::read_dir(root).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        } else if p.file_name() == Some(name) {
            return Some(p);
        }
    }
    None
}

pub fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

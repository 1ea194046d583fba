//! Restoration drill: restore a random sample of files from the most recent
//! snapshots into a private temporary directory, compare every byte with the
//! snapshot's content hashes, remove the directory, and record the result in
//! the repository (`drills/`, for `health`). Nothing else is written, locally
//! or in the repository.

use std::fs::File;
use std::io::BufWriter;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::database::{LoadOptions, Location};
use crate::error::{Error, Result};
use crate::format::database::{differences, DatabaseRecord, Engine};
use crate::format::id::SnapshotId;
use crate::format::records::DrillRecord;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeType};
use crate::ops::restore::verify_file;
use crate::ops::restore_db::{load_into, restorable};
use crate::repo::tree::find_node;
use crate::repo::tree::{dump_file, walk_tree};
use crate::repo::{ledger, IndexedRepository};

#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// How many files to restore.
    pub files: usize,
    /// From how many of the most recent valid snapshots.
    pub snapshots: usize,
    /// At most this many bytes restored in all.
    pub max_bytes: u64,
    /// Where the private temporary directory goes (the system's by default).
    pub tmpdir: Option<PathBuf>,
    /// Only snapshots this filter accepts (host, tag, path).
    pub filter: crate::repo::SnapshotFilter,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions {
            files: 20,
            snapshots: 3,
            max_bytes: 1 << 30,
            tmpdir: None,
            filter: Default::default(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillFailure {
    pub snapshot: String,
    pub path: String,
    pub error: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct DrillReport {
    pub snapshots: Vec<String>,
    /// Files chosen and restored (or attempted).
    pub files: u64,
    pub files_ok: u64,
    pub files_failed: u64,
    /// Files left out because they would exceed `max_bytes`.
    pub files_skipped_too_large: u64,
    pub bytes_restored: u64,
    pub success_rate: f64,
    pub duration_secs: f64,
    pub bytes_per_second: f64,
    pub failures: Vec<DrillFailure>,
    /// The drill record written (`drills/...`), if any.
    pub recorded: Option<String>,
    /// Why the result could not be recorded, if it could not.
    pub record_error: Option<String>,
    /// A database drill: `files` counts databases.
    pub databases: bool,
    /// A point-in-time recovery drill: what was recovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pitr: Option<PitrDrilled>,
}

/// What a PITR drill recovered.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PitrDrilled {
    /// The base backup's snapshot and where its WAL starts.
    pub base_snapshot: String,
    pub base_start_lsn: String,
    pub timeline: u32,
    /// WAL files fetched for the replay.
    pub wal_files: usize,
    /// The databases that answered a query once recovery ended.
    pub databases: Vec<String>,
    /// The time of the last transaction replayed.
    pub recovered_to: Option<String>,
}

impl DrillReport {
    /// A drill that restored nothing proved nothing: it fails too.
    pub fn ok(&self) -> bool {
        self.files > 0 && self.files_failed == 0 && self.failures.is_empty()
    }
}

/// A private directory removed (with whatever is in it) when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create(base: &Path) -> Result<PrivateDir> {
        let dir = base.join(format!("cairn-drill-{:016x}", rand::random::<u64>()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        Ok(PrivateDir(dir))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Candidate {
    snapshot: usize,
    path: String,
    node: Node,
}

fn node_size(n: &Node) -> u64 {
    n.content.iter().map(|c| c.size as u64).sum()
}

/// Runs a drill.
/// What a drill reports as it goes (a terminal's progress line).
pub trait DrillProgress: Sync {
    /// The sample is chosen: `files` files, `bytes` bytes to restore.
    fn sampled(&self, _files: u64, _bytes: u64) {}
    /// One sampled file was restored and compared (`bytes` long).
    fn file_done(&self, _bytes: u64) {}
}

/// Reports nothing.
pub struct NoDrillProgress;
impl DrillProgress for NoDrillProgress {}

pub fn drill(repo: &IndexedRepository, opts: &DrillOptions) -> Result<DrillReport> {
    drill_with_progress(repo, opts, &NoDrillProgress)
}

/// [`drill`], reporting to `progress`.
pub fn drill_with_progress(
    repo: &IndexedRepository,
    opts: &DrillOptions,
    progress: &dyn DrillProgress,
) -> Result<DrillReport> {
    let started = Instant::now();
    let all: Vec<_> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| opts.filter.matches(s))
        .collect();
    if all.is_empty() {
        return Err(Error::InvalidArgument(
            "the repository has no snapshots to drill".into(),
        ));
    }
    let chosen: Vec<(SnapshotId, crate::format::snapshot::Snapshot)> =
        all.into_iter().rev().take(opts.snapshots.max(1)).collect();
    let mut report = DrillReport {
        snapshots: chosen.iter().map(|(id, _)| id.short()).collect(),
        ..Default::default()
    };
    // Every regular file of each snapshot, shuffled; one snapshot's tree that
    // cannot be read is a failure of the drill.
    let mut per_snap: Vec<Vec<Candidate>> = Vec::new();
    for (i, (id, s)) in chosen.iter().enumerate() {
        let mut files = Vec::new();
        let walked = walk_tree(repo, &s.tree, Path::new("/"), &mut |item| {
            if item.node.kind == NodeType::File {
                files.push(Candidate {
                    snapshot: i,
                    path: item.path.display().to_string(),
                    node: item.node,
                });
            }
            Ok(true)
        });
        if let Err(e) = walked {
            report.failures.push(DrillFailure {
                snapshot: id.short(),
                path: "/".into(),
                error: format!("tree unreadable: {e}"),
            });
        }
        files.shuffle(&mut rand::thread_rng());
        per_snap.push(files);
    }
    // Round robin over the snapshots, so each is sampled (a stdin snapshot's
    // one file is its whole dump), within the byte budget.
    let mut picked: Vec<Candidate> = Vec::new();
    let mut budget = opts.max_bytes;
    let mut iters: Vec<std::vec::IntoIter<Candidate>> =
        per_snap.into_iter().map(|v| v.into_iter()).collect();
    'outer: loop {
        let mut any = false;
        for it in iters.iter_mut() {
            if picked.len() >= opts.files {
                break 'outer;
            }
            for c in it.by_ref() {
                let size = node_size(&c.node);
                if size > budget {
                    report.files_skipped_too_large += 1;
                    continue;
                }
                budget -= size;
                picked.push(c);
                any = true;
                break;
            }
        }
        if !any {
            break;
        }
    }
    progress.sampled(
        picked.len() as u64,
        picked.iter().map(|c| node_size(&c.node)).sum(),
    );
    let base = opts.tmpdir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = PrivateDir::create(&base)?;
    let failures = Mutex::new(Vec::new());
    let restored: Vec<u64> = picked
        .par_iter()
        .enumerate()
        .map(|(i, c)| {
            let out = dir.0.join(i.to_string());
            let result = restore_one(repo, &c.node, &out);
            let _ = std::fs::remove_file(&out);
            progress.file_done(node_size(&c.node));
            match result {
                Ok(n) => n,
                Err(e) => {
                    failures.lock().unwrap().push(DrillFailure {
                        snapshot: chosen[c.snapshot].0.short(),
                        path: c.path.clone(),
                        error: e,
                    });
                    0
                }
            }
        })
        .collect();
    drop(dir);
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by(|a, b| (&a.snapshot, &a.path).cmp(&(&b.snapshot, &b.path)));
    report.files = picked.len() as u64;
    report.files_failed = failures.len() as u64;
    report.files_ok = report.files - report.files_failed;
    report.failures.extend(failures);
    report.bytes_restored = restored.iter().sum();
    report.duration_secs = started.elapsed().as_secs_f64();
    report.bytes_per_second = report.bytes_restored as f64 / report.duration_secs.max(1e-9);
    report.success_rate = if report.files == 0 {
        0.0 // nothing restored is no evidence that anything restores
    } else {
        report.files_ok as f64 / report.files as f64
    };
    record(
        repo,
        &mut report,
        chosen.iter().map(|(id, _)| *id).collect(),
    );
    Ok(report)
}

/// Writes the drill's record for `health`; a record that cannot be written
/// is reported, not fatal (the drill itself ran).
/// The record is the report's figures (a database drill's when
/// `report.databases`), the first 100 failures named.
fn record(repo: &IndexedRepository, report: &mut DrillReport, snapshots: Vec<SnapshotId>) {
    let rec = DrillRecord {
        time: chrono::Utc::now(),
        hostname: crate::repo::hostname(),
        snapshots,
        files: report.files,
        files_ok: report.files_ok,
        bytes: report.bytes_restored,
        duration_secs: report.duration_secs,
        failures: report
            .failures
            .iter()
            .take(100)
            .map(|f| format!("{}:{}", f.snapshot, f.path))
            .collect(),
        databases: report.databases,
    };
    match ledger::record_drill(repo, &rec) {
        Ok(k) => report.recorded = Some(k),
        Err(e) => report.record_error = Some(e.to_string()),
    }
}

/// Where a database drill loads server dumps: a scratch server per engine
/// (a URL; the database in it is made up and dropped afterwards). Without
/// one, the server each dump came from. SQLite dumps always go to the
/// drill's private temporary directory.
#[derive(Debug, Clone, Default)]
pub struct ScratchServers {
    pub postgres: Option<Location>,
    pub mysql: Option<Location>,
}

/// A database drill: the newest dump of each database in the most recent
/// snapshots is loaded into a scratch database (a new database on a server,
/// dropped afterwards, or a file in a private temporary directory) and
/// verified like `restore-db` verifies: tables, row counts, definitions.
/// The result is recorded for `health` like a file drill's.
pub fn drill_databases(
    repo: &IndexedRepository,
    opts: &DrillOptions,
    scratch: &ScratchServers,
) -> Result<DrillReport> {
    let started = Instant::now();
    let chosen: Vec<(SnapshotId, Snapshot)> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| {
            opts.filter.matches(s)
                && !restorable(s).is_empty()
                && !s.has_tag(crate::ops::restore_db::PRE_RESTORE_TAG)
        })
        .rev()
        .take(opts.snapshots.max(1))
        .collect();
    if chosen.is_empty() {
        return Err(Error::InvalidArgument(
            "no snapshot holds a database dump to drill (back one up with --postgres, --mysql or --sqlite)".into(),
        ));
    }
    // The newest dump of each database, newest snapshot first.
    let mut seen = std::collections::BTreeSet::new();
    let mut picked: Vec<(usize, DatabaseRecord)> = Vec::new();
    for (i, (_, s)) in chosen.iter().enumerate() {
        for r in restorable(s) {
            if seen.insert((r.engine, r.source.clone(), r.name.clone())) {
                picked.push((i, r.clone()));
            }
        }
    }
    let mut report = DrillReport {
        snapshots: chosen.iter().map(|(id, _)| id.short()).collect(),
        databases: true,
        ..Default::default()
    };
    let base = opts.tmpdir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = PrivateDir::create(&base)?;
    for (n, (i, rec)) in picked.iter().enumerate() {
        let (id, snap) = &chosen[*i];
        match drill_database(repo, snap, rec, scratch, &dir.0.join(n.to_string())) {
            Ok(bytes) => {
                report.files_ok += 1;
                report.bytes_restored += bytes;
            }
            Err(error) => report.failures.push(DrillFailure {
                snapshot: id.short(),
                path: format!("{} database {}", rec.engine, rec.name),
                error,
            }),
        }
    }
    drop(dir);
    report.files = picked.len() as u64;
    report.files_failed = report.failures.len() as u64;
    report.duration_secs = started.elapsed().as_secs_f64();
    report.bytes_per_second = report.bytes_restored as f64 / report.duration_secs.max(1e-9);
    report.success_rate = report.files_ok as f64 / report.files.max(1) as f64;
    record(
        repo,
        &mut report,
        chosen.iter().map(|(id, _)| *id).collect(),
    );
    Ok(report)
}

/// Loads one dump into a scratch database and verifies it; returns the
/// dump's size, or why it failed. The scratch database is dropped.
fn drill_database(
    repo: &IndexedRepository,
    snap: &Snapshot,
    rec: &DatabaseRecord,
    scratch: &ScratchServers,
    dir: &Path,
) -> std::result::Result<u64, String> {
    let server = |given: &Option<Location>| match given {
        Some(l) => Ok(l.clone()),
        None => Location::parse(&rec.source).map_err(|e| e.to_string()),
    };
    let name = format!("cairn_drill_{:08x}", rand::random::<u32>());
    let target = match rec.engine {
        Engine::Sqlite => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            Location::Sqlite(dir.join("drill.db"))
        }
        Engine::Postgres => server(&scratch.postgres)?,
        Engine::Mysql => server(&scratch.mysql)?,
    };
    let opts = LoadOptions {
        no_owner: true,
        ..Default::default()
    };
    let loaded = load_into(repo, snap, rec, &target, &name, opts);
    if rec.engine != Engine::Sqlite {
        let _ = crate::database::drop_database(&target, &name);
    }
    let found = loaded.map_err(|e| e.to_string())?;
    match differences(&rec.tables, &found).first() {
        None => Ok(find_node(repo, &snap.tree, &rec.path)
            .map(|n| n.size)
            .unwrap_or(0)),
        Some(d) => Err(format!("loaded, but {d}")),
    }
}

/// Restores one file's content into `out` (a new 0600 file), then re-reads it
/// and checks every chunk against the snapshot's content hashes.
fn restore_one(
    repo: &IndexedRepository,
    node: &Node,
    out: &Path,
) -> std::result::Result<u64, String> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let n = dump_file(repo, node, &mut w).map_err(|e| e.to_string())?;
    let f: File = w
        .into_inner()
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    f.sync_all().ok();
    drop(f);
    match verify_file(repo, node, out) {
        Ok(true) => Ok(n),
        Ok(false) => Err("restored content differs from the snapshot's content hashes".into()),
        Err(e) => Err(format!("verification failed: {e}")),
    }
}

/// A point-in-time recovery drill: the newest base backup whose WAL is
/// archived is unpacked into a private temporary directory with every WAL
/// file after its start (fetched there first, so that the server replays
/// from a local folder whoever it runs as), a scratch PostgreSQL server
/// replays to the end of the archive and promotes, and every database of the
/// recovered cluster must answer a query. Needs the server binaries of the
/// backup's major version. Recorded for `health` as a database drill.
pub fn drill_pitr(repo: &IndexedRepository, opts: &DrillOptions) -> Result<DrillReport> {
    use crate::ops::pitr;
    let started = Instant::now();
    let listed = pitr::list(repo)?;
    let base = listed
        .bases
        .iter()
        .filter(|b| b.consistent)
        .filter(|b| {
            repo.load_snapshot(&b.snapshot)
                .is_ok_and(|s| opts.filter.matches(&s))
        })
        .max_by_key(|b| b.time)
        .cloned()
        .ok_or_else(|| {
            Error::InvalidArgument(
                "no base backup with its WAL archived to drill (take one with backup --postgres-base, with archive_command = 'cairn ... wal-push %p')".into(),
            )
        })?;
    let mut report = DrillReport {
        snapshots: vec![base.snapshot.short()],
        databases: true,
        files: 1,
        ..Default::default()
    };
    let tmp = opts.tmpdir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = PrivateDir::create(&tmp)?;
    let mut drilled = PitrDrilled {
        base_snapshot: base.snapshot.short(),
        base_start_lsn: base.start_lsn.to_string(),
        timeline: base.timeline,
        ..Default::default()
    };
    let outcome = recover_and_probe(
        repo,
        &base,
        &dir.0,
        &mut drilled,
        &mut report.bytes_restored,
    );
    drop(dir);
    match outcome {
        Ok(()) => report.files_ok = 1,
        Err(e) => report.failures.push(DrillFailure {
            snapshot: base.snapshot.short(),
            path: format!("point-in-time recovery of {}", base.source),
            error: e.to_string(),
        }),
    }
    report.pitr = Some(drilled);
    report.files_failed = report.failures.len() as u64;
    report.duration_secs = started.elapsed().as_secs_f64();
    report.bytes_per_second = report.bytes_restored as f64 / report.duration_secs.max(1e-9);
    report.success_rate = report.files_ok as f64;
    record(repo, &mut report, vec![base.snapshot]);
    Ok(report)
}

/// Fetches the WAL, unpacks the base backup, runs the scratch server to the
/// end of recovery and asks each database a question.
fn recover_and_probe(
    repo: &IndexedRepository,
    base: &crate::ops::pitr::Base,
    dir: &Path,
    drilled: &mut PitrDrilled,
    bytes: &mut u64,
) -> Result<()> {
    use crate::database::scratch::{server_bindir, ScratchCluster};
    use crate::ops::{pitr, wal};
    let bindir = server_bindir(&base.server_version)?;
    let (wal_dir, data) = (dir.join("wal"), dir.join("data"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&wal_dir)
        .map_err(|e| Error::io(&wal_dir, e))?;
    for (name, a) in wal::catalog(repo)? {
        let wanted = match (a.entry.start_lsn, name.ends_with(".partial")) {
            (_, true) => false,
            (None, _) => true,
            // From the segment holding the base backup's start on.
            (Some(start), _) => {
                let first = base.start_lsn.0 / a.segment_size * a.segment_size;
                a.entry.timeline >= base.timeline && start.0 >= first
            }
        };
        if wanted {
            *bytes += wal::copy_out(repo, &a, &wal_dir.join(&name))?;
            drilled.wal_files += 1;
        }
    }
    let quoted = format!("'{}'", wal_dir.display().to_string().replace('\'', "'\\''"));
    let restored = pitr::restore(
        repo,
        &pitr::PitrRestoreOptions {
            target: pitr::Target::Latest,
            timeline: None,
            dir: data.clone(),
            restore_command: format!("cp {quoted}/%f %p"),
        },
    )?;
    drop(restored);
    let snap = repo.load_snapshot(&base.snapshot)?;
    *bytes += find_node(repo, &snap.tree, &base.path)?.size;
    let mut server = ScratchCluster::start(&bindir, dir)?;
    let user = server.wait_ready(std::time::Duration::from_secs(600))?;
    let (databases, replayed) = server.probe(&user)?;
    drilled.databases = databases;
    drilled.recovered_to = replayed;
    Ok(())
}

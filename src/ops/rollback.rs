//! Safe file restores (`restore --safe`) and `rollback`.
//!
//! A safe restore into a folder that holds something plans first: it lists
//! the local files the restore would replace with something else, backs the
//! folder up into a `pre-restore` snapshot, restores with verification, and
//! on any failure (an error while restoring, a file that does not verify)
//! restores the pre-restore snapshot back over the folder, removing what the
//! failed restore added, so the folder holds what it held before.
//!
//! `rollback` does that last step on demand: it makes the folder a
//! pre-restore snapshot was taken of equal to that snapshot again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeType};
use crate::ops::backup::{backup, BackupOptions, NoProgress};
use crate::ops::restore::{
    restore_with_progress, EntryAction, NoRestoreProgress, Overwrite, RestoreOptions,
    RestoreOutcome, RestoreProgress,
};
use crate::repo::tree::find_node;
use crate::repo::{IndexedRepository, Repository, SnapshotFilter};
use crate::source::fs::clean_absolute;
use crate::source::Source;

/// The tag of the snapshot a safe restore takes of its target first.
pub use crate::format::snapshot::PRE_RESTORE_TAG;

/// How many modified local files are named (the rest are counted).
pub const MODIFIED_NAMED: usize = 20;

/// What the target folder held before the restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetWas {
    Missing,
    Empty,
    NonEmpty,
}

impl TargetWas {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetWas::Missing => "missing",
            TargetWas::Empty => "empty",
            TargetWas::NonEmpty => "non-empty",
        }
    }
}

/// Whether `target` is missing, an empty folder, or holds something.
pub fn target_was(target: &Path) -> Result<TargetWas> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => Ok(match entries.next() {
            None => TargetWas::Empty,
            Some(_) => TargetWas::NonEmpty,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TargetWas::Missing),
        Err(e) => Err(Error::io(target, e)),
    }
}

/// Local entries a restore would replace with something else: how many, and
/// the first [`MODIFIED_NAMED`] of them (target paths, sorted).
#[derive(Debug, Clone, Default)]
pub struct LocalChanges {
    pub count: u64,
    pub first: Vec<PathBuf>,
}

/// Collects the entries a dry run under `if-changed` would write where
/// something exists already: those differ from the snapshot.
struct Differing<'a> {
    target: &'a Path,
    found: Mutex<(u64, BTreeSet<PathBuf>)>,
}

impl RestoreProgress for Differing<'_> {
    fn entry(&self, path: &Path, node: &Node, action: EntryAction) {
        if action != EntryAction::Write || node.kind == NodeType::Dir {
            return;
        }
        let dest = self.target.join(path.strip_prefix("/").unwrap_or(path));
        if std::fs::symlink_metadata(&dest).is_err() {
            return; // new: nothing local is replaced
        }
        let mut found = self.found.lock().unwrap();
        found.0 += 1;
        found.1.insert(dest);
        if found.1.len() > MODIFIED_NAMED {
            found.1.pop_last();
        }
    }
}

/// The local files (and links, special files) below `target` that restoring
/// tree `root` with `opts`' patterns would replace with different content:
/// a dry run under `--overwrite if-changed` (content compared by hash).
pub fn modified_local_files(
    repo: &IndexedRepository,
    root: &BlobId,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<LocalChanges> {
    let scan = RestoreOptions {
        includes: opts.includes.clone(),
        excludes: opts.excludes.clone(),
        dry_run: true,
        overwrite: Overwrite::IfChanged,
        ..Default::default()
    };
    let d = Differing {
        target,
        found: Mutex::new((0, BTreeSet::new())),
    };
    restore_with_progress(repo, root, target, &scan, &d)?;
    let (count, first) = d.found.into_inner().unwrap();
    Ok(LocalChanges {
        count,
        first: first.into_iter().collect(),
    })
}

/// What a safe restore found and did.
#[derive(Debug)]
pub struct SafeRestoreOutcome {
    pub target_was: TargetWas,
    /// A pre-restore snapshot protects the target (or, in a dry run, would).
    pub safe: bool,
    /// Local files the restore replaces (or would) with different ones.
    pub modified: LocalChanges,
    pub pre_snapshot: Option<SnapshotId>,
    /// The restore's figures (None when it stopped with an error).
    pub restore: Option<RestoreOutcome>,
    /// Why the restore failed or did not verify, if it did.
    pub failure: Option<String>,
    /// The pre-restore snapshot was restored back (and verified).
    pub rolled_back: bool,
    /// Why the rollback failed, if it did: the target needs a hand.
    pub rollback_failure: Option<String>,
    /// Older pre-restore snapshots of the target forgotten after a verified
    /// restore (`keep_pre_restore`).
    pub forgotten: Vec<SnapshotId>,
}

impl SafeRestoreOutcome {
    /// Restored and verified.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Restores tree `root` into `target` safely: a non-empty target is backed
/// up first into a `pre-restore` snapshot; the restore is verified, and on
/// any failure the pre-restore snapshot is restored back (see the module
/// documentation). `opts.verify` is implied. An empty or missing target has
/// nothing to protect: it is restored as usual. After a verified restore,
/// the pre-restore snapshots of the same target beyond the newest
/// `keep_pre_restore` are forgotten (their data goes with the next prune).
pub fn safe_restore(
    repo: &mut IndexedRepository,
    root: &BlobId,
    target: &Path,
    opts: &RestoreOptions,
    keep_pre_restore: Option<usize>,
    progress: &dyn RestoreProgress,
) -> Result<SafeRestoreOutcome> {
    let was = target_was(target)?;
    let safe = was == TargetWas::NonEmpty;
    let modified = match safe {
        true => modified_local_files(repo, root, target, opts)?,
        false => LocalChanges::default(),
    };
    let mut out = SafeRestoreOutcome {
        target_was: was,
        safe,
        modified,
        pre_snapshot: None,
        restore: None,
        failure: None,
        rolled_back: false,
        rollback_failure: None,
        forgotten: Vec::new(),
    };
    let run = RestoreOptions {
        includes: opts.includes.clone(),
        excludes: opts.excludes.clone(),
        verify: !opts.dry_run,
        dry_run: opts.dry_run,
        overwrite: opts.overwrite,
        delete: opts.delete,
    };
    if opts.dry_run {
        out.restore = Some(restore_with_progress(repo, root, target, &run, progress)?);
        return Ok(out);
    }
    let pre = match safe {
        true => {
            let pre = pre_restore_snapshot(repo, target)?;
            // The rollback reads what that backup just stored.
            repo.load_index()?;
            Some(pre)
        }
        false => None,
    };
    out.pre_snapshot = pre.as_ref().map(|(id, _)| *id);
    match restore_with_progress(repo, root, target, &run, progress) {
        Ok(o) => {
            if let Some((p, why)) = o.errors.first() {
                out.failure = Some(format!(
                    "{}: {why}{}",
                    p.display(),
                    match o.errors.len() {
                        1 => String::new(),
                        n => format!(" (and {} more errors)", n - 1),
                    }
                ));
            }
            out.restore = Some(o);
        }
        Err(e) => out.failure = Some(e.to_string()),
    }
    let pre_snap = pre.as_ref().map(|(_, s)| s);
    if let (None, Some(keep), Some(newest)) = (&out.failure, keep_pre_restore, pre_snap) {
        out.forgotten = crate::ops::restore_db::forget_old_pre_restores(repo, newest, keep)?;
    }
    if let Some(pre_snap) = pre_snap.filter(|_| out.failure.is_some()) {
        match rollback_into(repo, pre_snap, target, false) {
            Ok(o) => match o.errors.first() {
                None => out.rolled_back = true,
                Some((p, why)) => {
                    out.rollback_failure = Some(format!(
                        "{}: {why} ({} errors)",
                        p.display(),
                        o.errors.len()
                    ))
                }
            },
            Err(e) => out.rollback_failure = Some(e.to_string()),
        }
    }
    Ok(out)
}

/// Backs `target` up, tagged `pre-restore`. A file it cannot read would be
/// missing from the copy: then nothing is restored.
fn pre_restore_snapshot(repo: &mut Repository, target: &Path) -> Result<(SnapshotId, Snapshot)> {
    let opts = BackupOptions {
        tags: vec![PRE_RESTORE_TAG.to_string()],
        ..Default::default()
    };
    let outcome = backup(
        repo,
        Source::Paths(vec![target.to_path_buf()]),
        &opts,
        &NoProgress,
    )?;
    let id = outcome
        .snapshot_id
        .ok_or_else(|| Error::CommandFailed("the pre-restore snapshot was not saved".into()))?;
    if let Some((p, why)) = outcome.errors.first() {
        return Err(Error::CommandFailed(format!(
            "the pre-restore snapshot {} could not read {}: {why}; nothing was restored",
            id.short(),
            p.display()
        )));
    }
    Ok((id, outcome.snapshot))
}

/// The folder a pre-restore snapshot was taken of.
pub fn pre_restore_folder(snap: &Snapshot) -> Result<PathBuf> {
    snap.paths
        .first()
        .map(PathBuf::from)
        .ok_or_else(|| Error::corrupt("the pre-restore snapshot", "it names no folder"))
}

/// Makes `target` equal to the folder the pre-restore snapshot `pre` holds:
/// every entry restored (verified), everything else removed (as `restore
/// --delete`). In a dry run nothing is written; the outcome says what would be.
pub fn rollback_into(
    repo: &IndexedRepository,
    pre: &Snapshot,
    target: &Path,
    dry_run: bool,
) -> Result<RestoreOutcome> {
    let folder = pre_restore_folder(pre)?;
    let root = match folder.as_os_str() == "/" {
        true => pre.tree,
        false => {
            let node = find_node(repo, &pre.tree, &folder.to_string_lossy())?;
            match (node.kind, node.subtree) {
                (NodeType::Dir, Some(t)) => t,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{} is not a folder in the pre-restore snapshot",
                        folder.display()
                    )))
                }
            }
        }
    };
    let opts = RestoreOptions {
        verify: !dry_run,
        dry_run,
        delete: true,
        ..Default::default()
    };
    restore_with_progress(repo, &root, target, &opts, &NoRestoreProgress)
}

/// The pre-restore snapshot `selector` names (an ID or prefix; None or
/// "latest": the newest pre-restore snapshot, of `target` when given).
/// A snapshot that is not a pre-restore snapshot, or one of another folder
/// than `target`, is refused.
pub fn pick_pre_restore(
    repo: &Repository,
    selector: Option<&str>,
    target: Option<&Path>,
) -> Result<(SnapshotId, Snapshot)> {
    let target = target.map(clean_absolute).transpose()?;
    let of_target = |s: &Snapshot| match &target {
        None => true,
        Some(t) => s.paths.first().map(Path::new) == Some(t.as_path()),
    };
    match selector.filter(|s| *s != "latest") {
        Some(sel) => {
            let (id, snap) = repo.find_snapshot(sel, &SnapshotFilter::default())?;
            if !snap.is_pre_restore() {
                return Err(Error::NotPreRestore(id.short()));
            }
            if !of_target(&snap) {
                return Err(Error::InvalidArgument(format!(
                    "snapshot {} was taken of {}, not of {}",
                    id.short(),
                    snap.paths.join(", "),
                    target.as_deref().unwrap_or(Path::new("")).display()
                )));
            }
            Ok((id, snap))
        }
        None => repo
            .list_snapshots()?
            .into_iter()
            .filter(|(_, s)| s.is_pre_restore() && of_target(s))
            .max_by_key(|(_, s)| s.time)
            .ok_or_else(|| {
                Error::CommandFailed(match &target {
                    Some(t) => format!("no pre-restore snapshot of {}", t.display()),
                    None => "no pre-restore snapshot in the repository".into(),
                })
            }),
    }
}

/// `rollback`: restores the pre-restore snapshot `snap` into the folder it
/// was taken of, making that folder equal to it.
pub fn rollback(
    repo: &IndexedRepository,
    id: &SnapshotId,
    snap: &Snapshot,
    dry_run: bool,
) -> Result<(PathBuf, RestoreOutcome)> {
    if !snap.is_pre_restore() {
        return Err(Error::NotPreRestore(id.short()));
    }
    let folder = pre_restore_folder(snap)?;
    let o = rollback_into(repo, snap, &folder, dry_run)?;
    Ok((folder, o))
}

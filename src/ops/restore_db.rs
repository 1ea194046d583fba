//! `restore-db`: load a database dump from a snapshot into a server or a
//! SQLite file, then verify the result (tables, row counts, schema
//! fingerprints) against what the snapshot recorded at dump time.
//!
//! A safe restore (`--safe`, and the default when the target database holds
//! tables) plans first: it lists how the target differs from the snapshot,
//! backs the target up into a `pre-restore` snapshot, restores, verifies,
//! and on any failure loads the pre-restore snapshot back and verifies that
//! too. PostgreSQL loads in one transaction and SQLite renames a verified
//! file into place, so a failed load there changes nothing by itself;
//! MariaDB cannot undo DDL, so there the pre-restore snapshot is what brings
//! the old rows back.

use std::io::Write;

use crate::database::{self, DatabaseSource, LoadOptions, Location, TargetState};
use crate::error::{Error, Result};
use crate::format::database::{differences, DatabaseRecord, Difference, TableRecord};
use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;
use crate::ops::backup::{backup, BackupOptions, NoProgress};
use crate::repo::tree::{dump_file, find_node};
use crate::repo::{IndexedRepository, Repository};
use crate::source::Source;

/// The tag of the snapshot a safe restore takes of its target first.
pub use crate::format::snapshot::PRE_RESTORE_TAG;

/// Whether a restore protects what the target holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Safety {
    /// Safe when the target holds tables.
    #[default]
    Auto,
    Safe,
    Off,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreDbOptions {
    /// Which of the snapshot's databases (by name); needed when it holds several.
    pub database: Option<String>,
    pub safety: Safety,
    /// Skip ownership and privileges (PostgreSQL `--no-owner --no-privileges`).
    pub no_owner: bool,
    /// Parallel loaders (PostgreSQL `pg_restore -j`; not in one transaction).
    pub jobs: u32,
    /// After a verified safe restore, keep this many `pre-restore` snapshots
    /// of the target (the newest); older ones are forgotten. None: keep all.
    pub keep_pre_restore: Option<usize>,
    /// Plan only: say what differs and what would be done.
    pub dry_run: bool,
}

/// What a restore found and did.
#[derive(Debug, Clone)]
pub struct RestoreDbOutcome {
    pub record: DatabaseRecord,
    /// The target, as shown (no password), and the database name in it.
    pub target: String,
    pub target_name: String,
    /// How the target differed from the snapshot before the restore (empty
    /// for a missing or empty target).
    pub differences_before: Vec<Difference>,
    pub target_was: TargetWas,
    pub safe: bool,
    pub pre_snapshot: Option<SnapshotId>,
    /// The tables found after the load (empty when it failed or in a dry run).
    pub found: Vec<TableRecord>,
    /// How the restored database differs from the snapshot; tables the target
    /// held beyond the snapshot's are in `left_in_place`, not here.
    pub differences: Vec<Difference>,
    pub left_in_place: Vec<String>,
    /// Why the load failed, if it did.
    pub failure: Option<String>,
    /// The pre-restore snapshot was loaded back (and verified).
    pub rolled_back: bool,
    /// Why the rollback failed, if it did: the target needs a hand.
    pub rollback_failure: Option<String>,
    /// Older `pre-restore` snapshots of the target forgotten (`keep_pre_restore`).
    pub forgotten: Vec<SnapshotId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetWas {
    Missing,
    Empty,
    NonEmpty,
}

impl RestoreDbOutcome {
    /// Restored and verified.
    pub fn verified(&self) -> bool {
        self.failure.is_none() && self.differences.is_empty() && !self.rolled_back
    }
}

/// The snapshot's database records that hold a database (not cluster globals).
pub fn restorable(snapshot: &Snapshot) -> Vec<&DatabaseRecord> {
    snapshot
        .databases
        .iter()
        .filter(|d| d.format.is_database())
        .collect()
}

/// The record `--database` picks (or the only one).
pub fn pick<'a>(snapshot: &'a Snapshot, database: Option<&str>) -> Result<&'a DatabaseRecord> {
    let all = restorable(snapshot);
    let names = || {
        all.iter()
            .map(|d| format!("{} ({})", d.name, d.engine))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match database {
        Some(name) => all.iter().copied().find(|d| d.name == name).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the snapshot holds no database '{name}'; it holds: {}",
                if all.is_empty() { "none".to_string() } else { names() }
            ))
        }),
        None => match all.as_slice() {
            [] => Err(Error::InvalidArgument(
                "the snapshot holds no database dump (back one up with --postgres, --mysql or --sqlite)".into(),
            )),
            [one] => Ok(one),
            _ => Err(Error::InvalidArgument(format!(
                "the snapshot holds several databases; pick one with --database: {}",
                names()
            ))),
        },
    }
}

/// The database name a target URL names, else the snapshot's.
fn target_name(target: &Location, record: &DatabaseRecord) -> String {
    match target {
        Location::Postgres(p) => p.dbname.clone().unwrap_or_else(|| record.name.clone()),
        Location::Mysql(m) => m.dbname.clone().unwrap_or_else(|| record.name.clone()),
        Location::Sqlite(path) => path.display().to_string(),
    }
}

/// The target as a backup source of exactly that database.
fn target_source(target: &Location, name: &str) -> DatabaseSource {
    DatabaseSource {
        location: target.with_database(name),
        all: false,
        dump_options: Vec::new(),
        base_backup: false,
    }
}

/// Restores `record` of snapshot `snap` into `target`. `repo` is opened for
/// writing: a safe restore saves the pre-restore snapshot into it.
pub fn restore_db(
    repo: Repository,
    snap: &Snapshot,
    record: &DatabaseRecord,
    target: &Location,
    opts: &RestoreDbOptions,
) -> Result<RestoreDbOutcome> {
    if target.engine() != record.engine {
        return Err(Error::InvalidArgument(format!(
            "{} is a {} dump; it cannot be loaded into {} ({})",
            record.name,
            record.engine,
            target.display(),
            target.engine()
        )));
    }
    let name = target_name(target, record);
    let state = database::target_state(target, &name)?;
    let (target_was, differences_before, tables_before) = match &state {
        TargetState::Missing => (TargetWas::Missing, Vec::new(), Vec::new()),
        TargetState::Empty => (TargetWas::Empty, Vec::new(), Vec::new()),
        TargetState::NonEmpty(t) => (
            TargetWas::NonEmpty,
            differences(&record.tables, t),
            t.clone(),
        ),
    };
    let safe = match opts.safety {
        Safety::Off => false,
        Safety::Auto | Safety::Safe => target_was == TargetWas::NonEmpty,
    };
    let mut out = RestoreDbOutcome {
        record: record.clone(),
        target: target.display(),
        target_name: name.clone(),
        differences_before,
        target_was,
        safe,
        pre_snapshot: None,
        found: Vec::new(),
        differences: Vec::new(),
        left_in_place: Vec::new(),
        failure: None,
        rolled_back: false,
        rollback_failure: None,
        forgotten: Vec::new(),
    };
    if opts.dry_run {
        return Ok(out);
    }
    let mut repo = repo;
    let pre = match safe {
        false => None,
        true => Some(pre_restore_snapshot(&mut repo, target, &name)?),
    };
    out.pre_snapshot = pre.as_ref().map(|(id, _)| *id);
    let repo = repo.into_indexed()?;
    let load_opts = LoadOptions {
        clean: target_was == TargetWas::NonEmpty,
        no_owner: opts.no_owner,
        jobs: opts.jobs,
    };
    match load_into(&repo, snap, record, target, &name, load_opts) {
        Ok(found) => {
            let (diffs, extra) = split_extra(differences(&record.tables, &found), &tables_before);
            out.found = found;
            out.differences = diffs;
            out.left_in_place = extra;
        }
        Err(e) => out.failure = Some(e.to_string()),
    }
    let failed = out.failure.is_some() || !out.differences.is_empty();
    // A SQLite file is renamed into place only once verified: a failure
    // leaves the target as it was, with nothing to roll back.
    if failed && target.engine() != crate::format::database::Engine::Sqlite {
        if let Some((_, pre_snap)) = &pre {
            match roll_back(&repo, pre_snap, target, &name, opts.no_owner) {
                Ok(()) => out.rolled_back = true,
                Err(e) => out.rollback_failure = Some(e.to_string()),
            }
        }
    }
    if let (false, Some(keep), Some((_, pre_snap))) = (failed, opts.keep_pre_restore, &pre) {
        out.forgotten = forget_old_pre_restores(&repo, pre_snap, keep)?;
    }
    Ok(out)
}

/// Forgets the `pre-restore` snapshots of the same target (same paths) but
/// the newest `keep`; their data goes with the next prune.
pub(crate) fn forget_old_pre_restores(
    repo: &Repository,
    newest: &Snapshot,
    keep: usize,
) -> Result<Vec<SnapshotId>> {
    let mut same: Vec<(SnapshotId, Snapshot)> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| s.has_tag(PRE_RESTORE_TAG) && s.paths == newest.paths)
        .collect();
    same.sort_by_key(|(_, s)| std::cmp::Reverse(s.time));
    let mut forgotten = Vec::new();
    for (id, _) in same.into_iter().skip(keep.max(1)) {
        repo.delete_snapshot(&id)?;
        forgotten.push(id);
    }
    Ok(forgotten)
}

/// Tables found after the load that the snapshot does not have but the
/// target held before are the target's own, left in place (a restore
/// replaces the snapshot's tables; it does not drop others): reported, not
/// failures.
fn split_extra(diffs: Vec<Difference>, before: &[TableRecord]) -> (Vec<Difference>, Vec<String>) {
    let mut kept = Vec::new();
    let mut extra = Vec::new();
    for d in diffs {
        match &d {
            Difference::ExtraTable { table } if before.iter().any(|t| &t.name == table) => {
                extra.push(table.clone())
            }
            _ => kept.push(d),
        }
    }
    (kept, extra)
}

/// Backs the target database up, tagged `pre-restore`, host and time now.
fn pre_restore_snapshot(
    repo: &mut Repository,
    target: &Location,
    name: &str,
) -> Result<(SnapshotId, Snapshot)> {
    let opts = BackupOptions {
        tags: vec![PRE_RESTORE_TAG.to_string()],
        ..Default::default()
    };
    let source = Source::Databases {
        databases: vec![target_source(target, name)],
        paths: Vec::new(),
    };
    let outcome = backup(repo, source, &opts, &NoProgress)?;
    let id = outcome
        .snapshot_id
        .ok_or_else(|| Error::CommandFailed("the pre-restore snapshot was not saved".into()))?;
    Ok((id, outcome.snapshot))
}

/// Loads the pre-restore snapshot's dump back into the target and checks it.
fn roll_back(
    repo: &IndexedRepository,
    pre: &Snapshot,
    target: &Location,
    name: &str,
    no_owner: bool,
) -> Result<()> {
    let record = pre
        .databases
        .iter()
        .find(|d| d.format.is_database())
        .ok_or_else(|| Error::CommandFailed("the pre-restore snapshot holds no database".into()))?;
    let opts = LoadOptions {
        clean: true,
        no_owner,
        jobs: 0,
    };
    let found = load_into(repo, pre, record, target, name, opts)?;
    let diffs = differences(&record.tables, &found);
    if let Some(d) = diffs.first() {
        return Err(Error::CommandFailed(format!(
            "after the rollback, {d} ({} differences)",
            diffs.len()
        )));
    }
    Ok(())
}

/// Streams a record's dump file from the snapshot into the engine's loader
/// (the database `name` on the target's server, or the target file);
/// returns the tables found afterwards.
pub fn load_into(
    repo: &IndexedRepository,
    snap: &Snapshot,
    record: &DatabaseRecord,
    target: &Location,
    name: &str,
    opts: LoadOptions,
) -> Result<Vec<TableRecord>> {
    let node = find_node(repo, &snap.tree, &record.path)?;
    let mut write = |out: &mut dyn Write| dump_file(repo, &node, out).map(|_| ());
    database::load(record, target, name, opts, &mut write)
}

//! `restore` and `dump`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use serde_json::json;

use crate::format::tree::NodeType;
use crate::ops::restore::{self, NoRestoreProgress, Overwrite, RestoreOptions};
use crate::ops::rollback;

use super::events::{emit, Severity};
use super::output::{self, line};
use super::{select_snapshot, usage, FilterArgs, Finished, Global, EXIT_FAILURE};

#[derive(Clone, Copy, ValueEnum)]
enum OverwriteArg {
    Always,
    IfChanged,
    Never,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot ID, unique prefix, or "latest"
    snapshot: String,
    /// Directory to restore into (created if missing)
    #[arg(short, long, value_name = "DIR")]
    target: PathBuf,
    /// Restore only paths matching this glob (repeatable)
    #[arg(short, long = "include", value_name = "GLOB")]
    includes: Vec<String>,
    /// Do not restore paths matching this glob (repeatable)
    #[arg(short, long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Re-read restored files and compare their hashes with the snapshot
    #[arg(long)]
    verify: bool,
    /// Show what would be restored; write nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// What to do with files that already exist
    #[arg(long, value_enum, default_value = "always")]
    overwrite: OverwriteArg,
    /// Make the target equal to the snapshot: afterwards remove what its
    /// folders hold that the snapshot does not (see it first with --dry-run)
    #[arg(long)]
    delete: bool,
    /// Into a non-empty target: list the local files that differ, save a
    /// pre-restore snapshot of it first, verify, and roll back on failure
    #[arg(long)]
    safe: bool,
    /// With --safe: after a verified restore, keep only this many
    /// pre-restore snapshots of the target (older ones are forgotten)
    #[arg(long, value_name = "N", default_value_t = 5, requires = "safe")]
    keep_pre_restore: usize,
    #[command(flatten)]
    filter: FilterArgs,
}

/// Include/exclude globs as the restorer reads them: a bad one is a usage
/// error, found before any password is asked.
fn check_patterns(patterns: &[String], flag: &str) -> Result<()> {
    restore::check_patterns(patterns).map_err(|e| usage(format!("{flag}: {e}")))
}

/// The target, or the first of its ancestors that exists, must be a directory.
fn check_target(target: &std::path::Path) -> Result<()> {
    for dir in target.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(usage(format!(
                    "cannot restore to {}: {} is a file, not a directory",
                    target.display(),
                    dir.display()
                )))
            }
            Err(_) => continue,
        }
    }
    Ok(())
}

pub fn restore(g: &Global, a: &RestoreArgs) -> Result<()> {
    if a.keep_pre_restore == 0 {
        return Err(usage("--keep-pre-restore must be at least 1"));
    }
    super::keep_freed_buffers();
    check_patterns(&a.includes, "--include")?;
    check_patterns(&a.excludes, "--exclude")?;
    check_target(&a.target)?;
    if a.delete && !(a.includes.is_empty() && a.excludes.is_empty()) {
        return Err(usage(
            "--delete makes the target equal to the whole snapshot: not with --include or --exclude",
        ));
    }
    let mut repo = g.open_indexed()?;
    let (id, snap) = select_snapshot(&repo, &a.snapshot, &a.filter)?;
    let opts = RestoreOptions {
        delete: a.delete,
        includes: a.includes.clone(),
        excludes: a.excludes.clone(),
        verify: a.verify,
        dry_run: a.dry_run,
        overwrite: match a.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::Never => Overwrite::Never,
        },
    };
    if !g.json && !g.quiet {
        line(format!(
            "restoring snapshot {} of {} to {}",
            id.short(),
            snap.paths.join(", "),
            a.target.display()
        ));
    }
    if a.safe {
        return safe_restore(g, a, &mut repo, &id, &snap, &opts);
    }
    let started = std::time::Instant::now();
    let list = (g.verbose > 0 && !g.json && !g.quiet).then_some(a.dry_run);
    // The snapshot's own total is the bar's length when everything is restored.
    let total = (a.includes.is_empty() && a.excludes.is_empty())
        .then(|| snap.summary.as_ref().map(|s| s.total_bytes_processed))
        .flatten();
    let o = if g.progress() || list.is_some() {
        let display = output::RestoreDisplay::new(g.progress(), total, list, a.dry_run);
        let o = restore::restore_with_progress(&repo, &snap.tree, &a.target, &opts, &display);
        display.finish();
        o?
    } else {
        restore::restore(&repo, &snap.tree, &a.target, &opts)?
    };
    let secs = started.elapsed().as_secs_f64();
    let figures = json!({
        "message_type": "summary",
        "snapshot_id": id.to_hex(),
        "dry_run": a.dry_run,
        "files_restored": o.files_restored,
        "files_skipped": o.files_skipped,
        "dirs": o.dirs,
        "bytes_restored": o.bytes_written,
        "files_verified": o.files_verified,
        "errors": o.errors.len(),
        "deleted": o.deleted,
        "total_duration": secs,
    });
    if g.json {
        output::json(&figures);
    } else if !g.quiet {
        let verb = if a.dry_run {
            "Would restore"
        } else {
            "Restored"
        };
        line(format!(
            "Summary: {verb} {} files ({}), skipped {}, in {}",
            o.files_restored,
            output::size(o.bytes_written),
            o.files_skipped,
            output::duration(secs)
        ));
        if a.verify {
            line(format!("verified {} files", o.files_verified));
        }
        for p in &o.deleted {
            line(format!(
                "{} {}",
                if a.dry_run { "would remove" } else { "removed" },
                p.display()
            ));
        }
    }
    for (p, why) in &o.errors {
        eprintln!("error: {}: {why}", p.display());
    }
    if !a.dry_run {
        let (event, sev) = if o.errors.is_empty() {
            ("restore.completed", Severity::Info)
        } else {
            ("restore.failed", Severity::Critical)
        };
        emit(g, event, sev, Some(id.to_hex()), figures);
    }
    if !o.errors.is_empty() {
        return Err(Finished(
            EXIT_FAILURE,
            format!(
                "{} during restore",
                output::count(o.errors.len() as u64, "error")
            ),
        )
        .into());
    }
    Ok(())
}

/// How many modified local files the human output names.
const MODIFIED_SHOWN: usize = 10;

/// `restore --safe`: the library plans, backs the target up, restores,
/// verifies and rolls back; this prints and emits what it did.
fn safe_restore(
    g: &Global,
    a: &RestoreArgs,
    repo: &mut crate::repo::IndexedRepository,
    id: &crate::format::id::SnapshotId,
    snap: &crate::format::snapshot::Snapshot,
    opts: &RestoreOptions,
) -> Result<()> {
    let started = std::time::Instant::now();
    let o = if g.progress() {
        let total = (a.includes.is_empty() && a.excludes.is_empty())
            .then(|| snap.summary.as_ref().map(|s| s.total_bytes_processed))
            .flatten();
        let display = output::RestoreDisplay::new(true, total, None, a.dry_run);
        let o = rollback::safe_restore(
            repo,
            &snap.tree,
            &a.target,
            opts,
            Some(a.keep_pre_restore),
            &display,
        );
        display.finish();
        o?
    } else {
        rollback::safe_restore(
            repo,
            &snap.tree,
            &a.target,
            opts,
            Some(a.keep_pre_restore),
            &NoRestoreProgress,
        )?
    };
    let secs = started.elapsed().as_secs_f64();
    let target = std::path::absolute(&a.target)
        .unwrap_or_else(|_| a.target.clone())
        .display()
        .to_string();
    if let Some(pre) = o.pre_snapshot {
        emit(
            g,
            "restore.pre_snapshot",
            Severity::Info,
            Some(pre.to_hex()),
            json!({"target": target, "modified_local_files": o.modified.count}),
        );
    }
    if o.rolled_back {
        emit(
            g,
            "restore.rolled_back",
            Severity::Warning,
            o.pre_snapshot.map(|p| p.to_hex()),
            json!({"target": target, "restoring": id.to_hex(), "error": o.failure}),
        );
    }
    let r = o.restore.as_ref();
    let figures = json!({
        "message_type": "summary",
        "snapshot_id": id.to_hex(),
        "dry_run": a.dry_run,
        "safe": o.safe,
        "target_was": o.target_was.as_str(),
        "modified_local_files": o.modified.first.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "modified_local_files_count": o.modified.count,
        "pre_restore_snapshot": o.pre_snapshot.map(|p| p.to_hex()),
        "pre_restore_forgotten": o.forgotten.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
        "files_restored": r.map_or(0, |r| r.files_restored),
        "files_skipped": r.map_or(0, |r| r.files_skipped),
        "dirs": r.map_or(0, |r| r.dirs),
        "bytes_restored": r.map_or(0, |r| r.bytes_written),
        "files_verified": r.map_or(0, |r| r.files_verified),
        "errors": r.map_or(usize::from(o.failure.is_some()), |r| r.errors.len()),
        "deleted": r.map(|r| r.deleted.clone()).unwrap_or_default(),
        "verified": !a.dry_run && o.ok(),
        "error": o.failure,
        "rolled_back": o.rolled_back,
        "rollback_error": o.rollback_failure,
        "total_duration": secs,
    });
    if g.json {
        output::json(&figures);
    } else if !g.quiet {
        safe_report(a, &o);
    }
    if let Some(r) = r {
        for (p, why) in &r.errors {
            eprintln!("error: {}: {why}", p.display());
        }
    }
    if a.dry_run {
        return Ok(());
    }
    let (event, sev) = match o.ok() {
        true => ("restore.completed", Severity::Info),
        false => ("restore.failed", Severity::Critical),
    };
    emit(g, event, sev, Some(id.to_hex()), figures);
    let Some(failure) = &o.failure else {
        return Ok(());
    };
    let after = match (o.rolled_back, &o.rollback_failure, o.pre_snapshot) {
        (true, _, Some(p)) => format!(
            "; rolled {} back to the pre-restore snapshot {} (verified)",
            a.target.display(),
            p.short()
        ),
        (_, Some(why), Some(p)) => format!(
            "; the rollback failed too ({why}): the pre-restore snapshot {} holds the old files (`cairn rollback {}`)",
            p.short(),
            p.short()
        ),
        _ => String::new(),
    };
    Err(Finished(
        EXIT_FAILURE,
        format!("the restore failed: {failure}{after}"),
    )
    .into())
}

/// The human account of a safe restore.
fn safe_report(a: &RestoreArgs, o: &rollback::SafeRestoreOutcome) {
    let m = &o.modified;
    if m.count > 0 {
        eprintln!(
            "{} under {} {} the snapshot's and {}:",
            output::count(m.count, "local file"),
            a.target.display(),
            if m.count == 1 {
                "differs from"
            } else {
                "differ from"
            },
            if a.dry_run {
                "would be replaced"
            } else {
                "will be replaced"
            },
        );
        for p in m.first.iter().take(MODIFIED_SHOWN) {
            eprintln!("  {}", p.display());
        }
        if m.count > MODIFIED_SHOWN as u64 {
            eprintln!("  ... and {} more", m.count - MODIFIED_SHOWN as u64);
        }
    }
    match (o.safe, a.dry_run, o.pre_snapshot) {
        (false, _, _) => line(format!(
            "{} is {}: no pre-restore snapshot needed",
            a.target.display(),
            o.target_was.as_str()
        )),
        (true, true, _) => line(format!(
            "would save a pre-restore snapshot of {}, restore, verify, and roll back on failure",
            a.target.display()
        )),
        (true, false, Some(p)) => line(format!(
            "saved pre-restore snapshot {} of {}",
            p.short(),
            a.target.display()
        )),
        (true, false, None) => {}
    }
    if let Some(r) = &o.restore {
        let verb = match (a.dry_run, &o.failure) {
            (true, _) => "Would restore",
            (false, Some(_)) => "Failed after restoring",
            (false, None) => "Restored",
        };
        line(format!(
            "Summary: {verb} {} files ({}), skipped {}",
            r.files_restored,
            output::size(r.bytes_written),
            r.files_skipped,
        ));
        if !a.dry_run && o.failure.is_none() {
            line(format!("verified {} files", r.files_verified));
        }
        for p in &r.deleted {
            line(format!(
                "{} {}",
                if a.dry_run { "would remove" } else { "removed" },
                p.display()
            ));
        }
    }
    if o.rolled_back {
        if let Some(p) = o.pre_snapshot {
            line(format!(
                "rolled back: {} holds again what it held before (pre-restore snapshot {})",
                a.target.display(),
                p.short()
            ));
        }
    }
}

#[derive(Args)]
pub struct DumpArgs {
    /// Snapshot ID, unique prefix, or "latest"
    snapshot: String,
    /// Path of the file in the snapshot (e.g. /home/ann/notes.txt, or the --stdin-filename)
    path: String,
    /// Write the path (a file or a folder, with everything below it) as an
    /// archive: tar or zip
    #[arg(long, value_name = "FORMAT")]
    archive: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

/// Where a path that `latest` lacks is: the newest snapshot (of the last 100
/// the filters allow) that holds it, as a hint; empty when none does.
fn newest_holding(
    repo: &crate::repo::IndexedRepository,
    path: &str,
    filter: &super::FilterArgs,
) -> String {
    let f = filter.filter();
    let Ok(snaps) = repo.list_snapshots() else {
        return String::new();
    };
    for (id, s) in snaps.iter().rev().filter(|(_, s)| f.matches(s)).take(100) {
        if crate::repo::tree::find_node(repo, &s.tree, path).is_ok() {
            let narrow = s
                .paths
                .first()
                .map(|p| format!(", or narrow `latest` with --path {p}"))
                .unwrap_or_default();
            return format!(
                "; the newest snapshot holding it is {} ({}): `cairn dump {} {path}`{narrow}",
                id.short(),
                s.time.format("%Y-%m-%d %H:%M:%S UTC"),
                id.short()
            );
        }
    }
    format!("; no recent snapshot holds {path} (list one with `cairn ls SNAP`)")
}

pub fn dump(g: &Global, a: &DumpArgs) -> Result<()> {
    super::keep_freed_buffers();
    let repo = g.open_indexed()?;
    let (id, snap) = select_snapshot(&repo, &a.snapshot, &a.filter)?;
    let node = match crate::repo::tree::find_node(&repo, &snap.tree, &a.path) {
        Err(crate::Error::PathNotInSnapshot(_)) => {
            return Err(anyhow!(
                "{} is not in snapshot {} ({}){}",
                a.path,
                id.short(),
                snap.time.format("%Y-%m-%d %H:%M:%S UTC"),
                newest_holding(&repo, &a.path, &a.filter)
            ))
        }
        other => other?,
    };
    if let Some(format) = &a.archive {
        let write = match format.as_str() {
            "tar" => crate::ops::dump::dump_tar,
            "zip" => crate::ops::dump::dump_zip,
            _ => {
                return Err(usage(format!(
                    "--archive {format}: the archive formats are: tar, zip"
                )))
            }
        };
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            return Err(usage(format!(
                "refusing to write an archive to a terminal: redirect it, e.g. > out.{format}"
            )));
        }
        let path = std::path::Path::new("/").join(a.path.trim_start_matches('/'));
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        return match write(&repo, &node, &path, &mut out).and_then(|_| {
            std::io::Write::flush(&mut out).map_err(|e| crate::Error::io("<stdout>", e))
        }) {
            Err(crate::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                Ok(())
            }
            other => other.map(|_| ()).map_err(Into::into),
        };
    }
    if node.kind != NodeType::File {
        return Err(anyhow!(
            "{} is not a regular file in the snapshot (give --archive tar or zip for a folder)",
            a.path
        ));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    match crate::repo::tree::dump_file(&repo, &node, &mut out) {
        Err(crate::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

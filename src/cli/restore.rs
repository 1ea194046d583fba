//! `restore` and `dump`.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use serde_json::json;

use cairn::format::tree::NodeType;
use cairn::ops::restore::{self, Overwrite, RestoreOptions};

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
    super::keep_freed_buffers();
    check_patterns(&a.includes, "--include")?;
    check_patterns(&a.excludes, "--exclude")?;
    check_target(&a.target)?;
    if a.delete && !(a.includes.is_empty() && a.excludes.is_empty()) {
        return Err(usage(
            "--delete makes the target equal to the whole snapshot: not with --include or --exclude",
        ));
    }
    let repo = g.open_indexed()?;
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
    repo: &cairn::repo::IndexedRepository,
    path: &str,
    filter: &super::FilterArgs,
) -> String {
    let f = filter.filter();
    let Ok(snaps) = repo.list_snapshots() else {
        return String::new();
    };
    for (id, s) in snaps.iter().rev().filter(|(_, s)| f.matches(s)).take(100) {
        if cairn::repo::tree::find_node(repo, &s.tree, path).is_ok() {
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
    let node = match cairn::repo::tree::find_node(&repo, &snap.tree, &a.path) {
        Err(cairn::Error::PathNotInSnapshot(_)) => {
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
            "tar" => cairn::ops::dump::dump_tar,
            "zip" => cairn::ops::dump::dump_zip,
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
            std::io::Write::flush(&mut out).map_err(|e| cairn::Error::io("<stdout>", e))
        }) {
            Err(cairn::Error::Io { source, .. })
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
    match cairn::repo::tree::dump_file(&repo, &node, &mut out) {
        Err(cairn::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

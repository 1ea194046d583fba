//! `backup`: paths, `--stdin`, or `--stdin-from-command -- CMD...`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::storage::RequestCounts;
use anyhow::{Context, Result};
use chrono::{Local, NaiveDateTime, TimeZone, Utc};
use clap::Args;
use serde_json::json;

use crate::ops::backup::{self, BackupOptions, BackupOutcome, NoProgress};
use crate::source::Source;

use super::events::{self, emit, Severity};
use super::output::{self, line};
use super::{usage, Finished, Global, EXIT_PARTIAL};

#[derive(Args)]
pub struct BackupArgs {
    /// Files and folders to back up
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Add a tag (repeatable; "a,b" adds both)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Record this host name instead of the machine's
    #[arg(long, visible_alias = "hostname", value_name = "HOST")]
    host: Option<String>,
    /// Exclude paths matching a glob (repeatable)
    #[arg(short = 'e', long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Read exclude globs from a file, one per line (repeatable)
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Exclude paths matching a glob, ignoring case (repeatable)
    #[arg(long = "iexclude", value_name = "GLOB")]
    iexcludes: Vec<String>,
    /// Leave out folders that hold a file of this name (repeatable)
    #[arg(long = "exclude-if-present", value_name = "FILE")]
    exclude_if_present: Vec<String>,
    /// Leave out folders that hold a valid CACHEDIR.TAG
    #[arg(long)]
    exclude_caches: bool,
    /// Leave out files larger than this (e.g. 2G, 500M)
    #[arg(long, value_name = "SIZE")]
    exclude_larger_than: Option<String>,
    /// Read the paths to back up from a file, one per line ('#' comments; repeatable)
    #[arg(long = "files-from", value_name = "FILE")]
    files_from: Vec<PathBuf>,
    /// Stay on the file system of each source path
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Use this snapshot as the parent (default: latest with the same host and paths)
    #[arg(long, value_name = "SNAP")]
    parent: Option<String>,
    /// Read every file, ignoring the parent's metadata
    #[arg(short, long)]
    force: bool,
    /// Record this time instead of now ("2024-01-31 02:00:00", local time)
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    /// Do everything but write to the repository
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Back up standard input as one file
    #[arg(long)]
    stdin: bool,
    /// File name for --stdin / --stdin-from-command
    #[arg(
        long,
        visible_alias = "stdin-name",
        value_name = "NAME",
        default_value = "stdin"
    )]
    stdin_filename: String,
    /// Run the command after `--` and back up its standard output
    #[arg(long)]
    stdin_from_command: bool,
    /// Dump a PostgreSQL database: postgresql://USER@HOST:PORT/DB (repeatable)
    #[arg(long = "postgres", value_name = "URL")]
    postgres: Vec<String>,
    /// A base backup of a whole PostgreSQL cluster for point-in-time recovery (pg_basebackup)
    #[arg(long = "postgres-base", value_name = "URL")]
    postgres_base: Vec<String>,
    /// Dump a MariaDB or MySQL database: mysql://USER@HOST:PORT/DB (repeatable)
    #[arg(long = "mysql", value_name = "URL")]
    mysql: Vec<String>,
    /// Copy a live SQLite database consistently (repeatable)
    #[arg(long = "sqlite", value_name = "FILE")]
    sqlite: Vec<PathBuf>,
    /// With --postgres or --mysql: dump every database of the server
    #[arg(long)]
    all_databases: bool,
    /// An extra argument for the dump tool of every --postgres/--mysql source (repeatable)
    #[arg(long = "dump-option", value_name = "ARG", allow_hyphen_values = true)]
    dump_options: Vec<String>,
    /// The dump command and its arguments (after `--`)
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) fn parse_time(s: &str) -> Result<chrono::DateTime<Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    // PostgreSQL prints times as "2026-12-01 14:03:00.123456+00": an offset
    // of hours alone, a space before it or none, and fractional seconds.
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
        if let Ok(t) = chrono::DateTime::parse_from_str(s, fmt) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            if let Some(t) = Local.from_local_datetime(&n).earliest() {
                return Ok(t.with_timezone(&Utc));
            }
        }
    }
    Err(usage(format!(
        "'{s}' is not a time like \"2024-01-31 02:00:00\" or \"2024-01-31 02:00:00+00\""
    )))
}

/// Paths listed in `--files-from` files: one a line, blank lines and `#`
/// comments skipped.
fn files_from(a: &BackupArgs) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for f in &a.files_from {
        let text = std::fs::read_to_string(f)
            .map_err(|e| usage(format!("cannot read --files-from {}: {e}", f.display())))?;
        paths.extend(
            text.lines()
                .map(|l| l.trim_end_matches('\r'))
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .map(PathBuf::from),
        );
    }
    Ok(paths)
}

/// The database sources given, parsed (mistakes are usage errors).
fn database_sources(a: &BackupArgs) -> Result<Vec<crate::database::DatabaseSource>> {
    use crate::database::{DatabaseSource, Location};
    let mut out = Vec::new();
    let urls = a.postgres.iter().map(|u| ("--postgres", u.clone()));
    let urls = urls.chain(
        a.postgres_base
            .iter()
            .map(|u| ("--postgres-base", u.clone())),
    );
    let urls = urls.chain(a.mysql.iter().map(|u| ("--mysql", u.clone())));
    for (flag, url) in urls {
        let location = Location::parse(&url).map_err(|e| usage(format!("{flag}: {e}")))?;
        let expected = if flag == "--mysql" {
            "mysql"
        } else {
            "postgresql"
        };
        if location.engine().name() != expected {
            return Err(usage(format!(
                "{flag} takes a {expected}:// URL, not '{}'",
                location.display()
            )));
        }
        let base_backup = flag == "--postgres-base";
        out.push(DatabaseSource {
            location,
            all: a.all_databases && !base_backup,
            dump_options: match base_backup {
                true => Vec::new(),
                false => a.dump_options.clone(),
            },
            base_backup,
        });
    }
    for f in &a.sqlite {
        let path = crate::source::fs::clean_absolute(f).map_err(|e| usage(e.to_string()))?;
        out.push(DatabaseSource {
            location: Location::Sqlite(path),
            all: false,
            dump_options: Vec::new(),
            base_backup: false,
        });
    }
    if a.all_databases && a.postgres.is_empty() && a.mysql.is_empty() {
        return Err(usage("--all-databases goes with --postgres or --mysql"));
    }
    if !a.dump_options.is_empty() && a.postgres.is_empty() && a.mysql.is_empty() {
        return Err(usage("--dump-option goes with --postgres or --mysql"));
    }
    Ok(out)
}

fn source(a: &BackupArgs) -> Result<Source> {
    let databases = database_sources(a)?;
    if !databases.is_empty() {
        if a.stdin || a.stdin_from_command {
            return Err(usage(
                "databases go beside paths, not beside --stdin or --stdin-from-command",
            ));
        }
        let mut paths = a.paths.clone();
        paths.extend(files_from(a)?);
        paths.extend(a.command.iter().map(PathBuf::from));
        return Ok(Source::Databases { databases, paths });
    }
    let listed = files_from(a)?;
    if !a.files_from.is_empty() && listed.is_empty() && a.paths.is_empty() {
        return Err(usage("the --files-from files list no path"));
    }
    let modes = [
        !a.paths.is_empty() || !listed.is_empty(),
        a.stdin,
        a.stdin_from_command,
    ]
    .iter()
    .filter(|m| **m)
    .count();
    if modes > 1 {
        return Err(usage(
            "give paths, --stdin, or --stdin-from-command, not several",
        ));
    }
    if a.stdin_from_command {
        if a.command.is_empty() {
            return Err(usage("--stdin-from-command needs a command after `--`"));
        }
        return Ok(Source::Command {
            name: a.stdin_filename.clone(),
            argv: a.command.clone(),
        });
    }
    // Without --stdin-from-command, arguments after `--` are paths (a file may
    // be called `--weird`), as in restic.
    let mut paths = a.paths.clone();
    paths.extend(listed);
    paths.extend(a.command.iter().map(PathBuf::from));
    if a.stdin && !paths.is_empty() {
        return Err(usage(
            "give paths, --stdin, or --stdin-from-command, not several",
        ));
    }
    if a.stdin {
        return Ok(Source::Stdin {
            name: a.stdin_filename.clone(),
        });
    }
    if paths.is_empty() {
        return Err(usage(
            "nothing to back up: give paths, --stdin, --stdin-from-command or a database (--postgres, --mysql, --sqlite)",
        ));
    }
    Ok(Source::Paths(paths))
}

fn excludes(a: &BackupArgs) -> Result<Vec<String>> {
    let mut ex = a.excludes.clone();
    for f in &a.exclude_files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read exclude file {}", f.display()))?;
        ex.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(ex)
}

pub fn run(g: &Global, a: &BackupArgs) -> Result<()> {
    let src = source(a)?;
    let time = a.time.as_deref().map(parse_time).transpose()?;
    let excludes = excludes(a)?;
    let selectors = crate::source::Selectors {
        iexcludes: a.iexcludes.clone(),
        if_present: a.exclude_if_present.clone(),
        caches: a.exclude_caches,
        larger_than: match &a.exclude_larger_than {
            Some(s) => Some(crate::format::size::parse_size(s).ok_or_else(|| {
                usage(format!(
                    "--exclude-larger-than '{s}' is not a size like 2G or 500M"
                ))
            })?),
            None => None,
        },
    };
    // Mistakes in the arguments are usage errors, found before any password is asked.
    crate::source::Excludes::with(&excludes, &selectors).map_err(|e| usage(e.to_string()))?;
    if let Source::Stdin { name } | Source::Command { name, .. } = &src {
        crate::source::validate_stdin_name(name).map_err(|e| usage(e.to_string()))?;
    }
    let mut repo = g.open()?;
    let parent = match &a.parent {
        Some(p) => Some(super::select_snapshot(&repo, p, &Default::default())?.0),
        None => None,
    };
    let opts = BackupOptions {
        tags: a.tags.clone(),
        host: a.host.clone(),
        excludes: excludes.clone(),
        one_file_system: a.one_file_system,
        time,
        dry_run: a.dry_run,
        parent,
        force: a.force,
        selectors,
    };
    let list_files = g.verbose > 0 && !g.json && !g.quiet;
    let progress = (g.progress() || list_files)
        .then(|| Arc::new(output::BackupProgress::new(g.progress(), g.verbose)));
    if let (Some(p), Source::Paths(paths)) = (progress.as_ref().filter(|p| p.draws_bar()), &src) {
        // The total for the ETA comes from a concurrent scan, as restic does.
        let (p, paths, ex) = (p.clone(), paths.clone(), excludes.clone());
        std::thread::spawn(move || {
            if let Ok(ex) = crate::source::Excludes::new(&ex) {
                let (files, bytes) = crate::source::fs::scan_totals(&paths, &ex);
                p.set_total(files, bytes);
            }
        });
    }
    let result = match &progress {
        Some(p) => backup::backup(&mut repo, src, &opts, p.as_ref()),
        None => backup::backup(&mut repo, src, &opts, &NoProgress),
    };
    if let Some(p) = &progress {
        p.finish();
    }
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            let e = anyhow::Error::from(e);
            events::failed(g, "backup.failed", &e);
            return Err(e);
        }
    };
    // The whole command's requests, index loading included.
    let requests = repo.backend().request_counts();
    report(g, &outcome, &requests);
    for (path, why) in &outcome.errors {
        eprintln!("error: {}: {why}", path.display());
    }
    let sid = outcome.snapshot_id.map(|i| i.to_hex());
    let severity = if outcome.errors.is_empty() && !outcome.empty_input {
        Severity::Info
    } else {
        Severity::Warning
    };
    if !a.dry_run {
        set_figures(&outcome);
        emit(
            g,
            "backup.completed",
            severity,
            sid,
            summary_json(&outcome, &requests),
        );
    }
    if outcome.empty_input && !a.dry_run {
        // A dump that writes nothing has almost always failed (`pg_dump nosuchdb |
        // cairn backup --stdin`): the snapshot is kept, but it is not a success.
        return Err(Finished(
            EXIT_PARTIAL,
            "snapshot saved, but its input was empty (0 bytes): if it came from a dump, the dump probably failed; prefer --stdin-from-command, which fails when the command does".to_string(),
        )
        .into());
    }
    if !outcome.errors.is_empty() {
        return Err(Finished(
            EXIT_PARTIAL,
            format!(
                "snapshot saved, but {} source(s) could not be read",
                outcome.errors.len()
            ),
        )
        .into());
    }
    Ok(())
}

/// The backup's series for the metrics file, labelled with its host.
fn set_figures(o: &BackupOutcome) {
    let s = o.snapshot.summary.clone().unwrap_or_default();
    let host = [("host", o.snapshot.hostname.as_str())];
    events::figure(
        "cairn_backup_bytes_added",
        &host,
        s.data_added_packed as f64,
    );
    events::figure(
        "cairn_backup_files_processed",
        &host,
        s.total_files_processed as f64,
    );
    let age = (chrono::Utc::now() - o.snapshot.time).num_seconds().max(0);
    events::figure("cairn_latest_snapshot_age_seconds", &host, age as f64);
}

fn summary_json(o: &BackupOutcome, requests: &RequestCounts) -> serde_json::Value {
    let s = o.snapshot.summary.clone().unwrap_or_default();
    json!({
        "message_type": "summary",
        "snapshot_id": o.snapshot_id.map(|i| i.to_hex()),
        "parent": o.parent.map(|i| i.to_hex()),
        "dry_run": o.snapshot_id.is_none(),
        "files_new": s.files_new,
        "files_changed": s.files_changed,
        "files_unmodified": s.files_unmodified,
        "dirs_new": s.dirs_new,
        "dirs_changed": s.dirs_changed,
        "dirs_unmodified": s.dirs_unmodified,
        "data_blobs": s.data_blobs,
        "tree_blobs": s.tree_blobs,
        "data_added": s.data_added,
        "data_added_packed": s.data_added_packed,
        "bytes_read": o.bytes_read,
        "bytes_added": s.data_added_packed,
        "total_files_processed": s.total_files_processed,
        "total_bytes_processed": s.total_bytes_processed,
        "total_duration": o.duration_secs,
        "errors": o.errors.len(),
        "databases": o.snapshot.databases,
        "requests": requests,
    })
}

fn report(g: &Global, o: &BackupOutcome, requests: &RequestCounts) {
    if g.json {
        output::json(&summary_json(o, requests));
        return;
    }
    if g.quiet {
        return;
    }
    let s = o.snapshot.summary.clone().unwrap_or_default();
    if let Some(p) = o.parent {
        line(format!("using parent snapshot {}", p.short()));
    }
    line(format!(
        "Files:       {:>6} new, {:>6} changed, {:>6} unmodified",
        s.files_new, s.files_changed, s.files_unmodified
    ));
    line(format!(
        "Dirs:        {:>6} new, {:>6} changed, {:>6} unmodified",
        s.dirs_new, s.dirs_changed, s.dirs_unmodified
    ));
    line(format!(
        "Added to the repository: {} ({} stored)",
        output::size(s.data_added),
        output::size(s.data_added_packed)
    ));
    line("");
    line(format!(
        "processed {} files, {} in {}",
        s.total_files_processed,
        output::size(s.total_bytes_processed),
        output::duration(o.duration_secs)
    ));
    for d in &o.snapshot.databases {
        line(database_line(d));
    }
    match o.snapshot_id {
        Some(id) => line(format!("snapshot {} saved", id.short())),
        None => line("dry run: nothing was written"),
    }
}

/// One dump, as the backup reports it.
fn database_line(d: &crate::format::database::DatabaseRecord) -> String {
    if let Some(b) = &d.base {
        return format!(
            "{} base backup of {}: timeline {}, WAL {}..{} → {}",
            d.engine, d.source, b.timeline, b.start_lsn, b.stop_lsn, d.path
        );
    }
    if !d.format.is_database() {
        return format!(
            "{} {}: roles and tablespaces → {}",
            d.engine, d.source, d.path
        );
    }
    let rows: u64 = d.tables.iter().map(|t| t.rows).sum();
    format!(
        "{} database {}: {} tables, {} rows → {}",
        d.engine,
        d.name,
        d.tables.len(),
        rows,
        d.path
    )
}

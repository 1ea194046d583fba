//! `drill`: a restoration drill.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::ops::drill::{self, DrillOptions};

use super::events::{self, emit, Severity};
use super::output::{self, line};
use super::prune::parse_size;
use super::{usage, Finished, Global, EXIT_FAILURE};

#[derive(Args)]
pub struct DrillArgs {
    /// How many files to restore
    #[arg(long, value_name = "N", default_value_t = 20)]
    files: usize,
    /// Sample from this many of the most recent snapshots
    #[arg(long, value_name = "N", default_value_t = 3)]
    snapshots: usize,
    /// Restore at most this much in all (e.g. 500M, 1G)
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    max_bytes: String,
    /// Make the private temporary directory here (default: the system's)
    #[arg(long, value_name = "DIR")]
    tmpdir: Option<PathBuf>,
    /// Load the latest database dumps into scratch databases and verify them
    #[arg(long, conflicts_with = "pitr")]
    databases: bool,
    /// Recover the newest PostgreSQL base backup with its archived WAL in a
    /// scratch server, and check every database answers
    #[arg(long)]
    pitr: bool,
    /// With --databases: the PostgreSQL server to load into (default: the one dumped from)
    #[arg(long, value_name = "URL", requires = "databases")]
    scratch_postgres: Option<String>,
    /// With --databases: the MariaDB/MySQL server to load into (default: the one dumped from)
    #[arg(long, value_name = "URL", requires = "databases")]
    scratch_mysql: Option<String>,
    #[command(flatten)]
    filter: super::FilterArgs,
}

/// A `--scratch-*` URL, which must name a server of that engine.
fn scratch(
    flag: &str,
    url: &Option<String>,
    engine: &str,
) -> Result<Option<crate::database::Location>> {
    let Some(url) = url else { return Ok(None) };
    let l = crate::database::Location::parse(url).map_err(|e| usage(format!("{flag}: {e}")))?;
    if l.engine().name() != engine {
        return Err(usage(format!("{flag} takes a {engine}:// URL")));
    }
    Ok(Some(l))
}

pub fn run(g: &Global, a: &DrillArgs) -> Result<()> {
    super::keep_freed_buffers();
    let max_bytes = parse_size(&a.max_bytes).ok_or_else(|| {
        usage(format!(
            "--max-bytes '{}' is not a size like 500M or 1G",
            a.max_bytes
        ))
    })?;
    if a.files == 0 || a.snapshots == 0 {
        return Err(usage("--files and --snapshots must be at least 1"));
    }
    if let Some(t) = &a.tmpdir {
        if !t.is_dir() {
            return Err(usage(format!(
                "--tmpdir {} is not a directory",
                t.display()
            )));
        }
    }
    let scratch = drill::ScratchServers {
        postgres: scratch("--scratch-postgres", &a.scratch_postgres, "postgresql")?,
        mysql: scratch("--scratch-mysql", &a.scratch_mysql, "mysql")?,
    };
    let repo = g.open_indexed()?;
    let opts = DrillOptions {
        files: a.files,
        snapshots: a.snapshots,
        max_bytes,
        tmpdir: a.tmpdir.clone(),
        filter: a.filter.filter(),
    };
    let display = super::output::DrillDisplay::new(g.progress());
    let drilled = match (a.databases, a.pitr) {
        (_, true) => drill::drill_pitr(&repo, &opts),
        (true, _) => drill::drill_databases(&repo, &opts, &scratch),
        _ => drill::drill_with_progress(&repo, &opts, &display),
    };
    display.finish();
    let report = match drilled {
        Ok(r) => r,
        Err(e) => {
            emit(
                g,
                "drill.failed",
                Severity::Critical,
                None,
                json!({"error": e.to_string()}),
            );
            return Err(e.into());
        }
    };
    events::figure("cairn_drill_success_ratio", &[], report.success_rate);
    if g.json {
        output::json(&serde_json::to_value(&report)?);
    } else if !g.quiet && a.pitr {
        let p = report.pitr.clone().unwrap_or_default();
        line(format!(
            "drill: base backup {} (timeline {}, from {}) with {} WAL files ({}) {} in {}{}",
            p.base_snapshot,
            p.timeline,
            p.base_start_lsn,
            p.wal_files,
            output::size(report.bytes_restored),
            if report.ok() {
                format!("recovered; {} databases answered", p.databases.len())
            } else {
                "did not recover".to_string()
            },
            output::duration(report.duration_secs),
            p.recovered_to
                .map(|t| format!("; last transaction replayed {t}"))
                .unwrap_or_default()
        ));
    } else if !g.quiet && a.databases {
        line(format!(
            "drill: loaded and verified {} of {} databases ({} of dumps) from snapshots {} in {}; success rate {:.1}%",
            report.files_ok,
            report.files,
            output::size(report.bytes_restored),
            report.snapshots.join(", "),
            output::duration(report.duration_secs),
            report.success_rate * 100.0
        ));
    } else if !g.quiet {
        line(format!(
            "drill: restored {} of {} files ({}) from snapshots {} in {} ({}/s); success rate {:.1}%",
            report.files_ok,
            report.files,
            output::size(report.bytes_restored),
            report.snapshots.join(", "),
            output::duration(report.duration_secs),
            output::size(report.bytes_per_second as u64),
            report.success_rate * 100.0
        ));
        if report.files_skipped_too_large > 0 {
            line(format!(
                "{} files were left out: larger than what --max-bytes left",
                report.files_skipped_too_large
            ));
        }
    }
    if let Some(e) = &report.record_error {
        eprintln!("warning: the drill's result could not be recorded in the repository: {e}");
    }
    for f in &report.failures {
        eprintln!("failed: snapshot {}: {}: {}", f.snapshot, f.path, f.error);
    }
    let figures = json!({"databases": report.databases, "snapshots": report.snapshots, "files": report.files, "files_ok": report.files_ok,
        "files_failed": report.files_failed, "bytes_restored": report.bytes_restored,
        "success_rate": report.success_rate, "duration_secs": report.duration_secs,
        "failures": report.failures.iter().map(|f| format!("{}:{}", f.snapshot, f.path)).collect::<Vec<_>>()});
    if report.ok() {
        emit(g, "drill.completed", Severity::Info, None, figures);
        Ok(())
    } else {
        emit(g, "drill.failed", Severity::Critical, None, figures);
        let why = if a.pitr {
            "drill failed: the base backup and its WAL did not recover into a server that answers"
                .to_string()
        } else if a.databases {
            format!(
                "drill failed: {} of {} databases did not load and verify",
                report.failures.len(),
                report.files
            )
        } else if report.files == 0 {
            "drill failed: it restored no file (the chosen snapshots hold no file to restore)"
                .to_string()
        } else {
            format!(
                "drill failed: {} of {} files not restored intact",
                report.failures.len(),
                report.files
            )
        };
        Err(Finished(EXIT_FAILURE, why).into())
    }
}

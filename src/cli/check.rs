//! `check`: structure, and with --read-data the contents of packs; with
//! --max-duration / --max-bytes a budgeted verification pass.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::ops::check::{self, Budget, ReadData};

use super::events::{self, emit, Severity};
use super::output::{self, line};
use super::prune::parse_size;
use super::{usage, Finished, Global, EXIT_FAILURE};
use crate::format::duration::parse_duration;

#[derive(Args)]
pub struct CheckArgs {
    /// Also download, decrypt and hash every pack
    #[arg(long)]
    read_data: bool,
    /// Read only a subset: a share ("10%") or slice n of m ("3/7")
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    read_data_subset: Option<String>,
    /// A verification pass: read the packs verified least recently first and
    /// stop after this long (e.g. 10m, 2h); implies --read-data
    #[arg(long, value_name = "DURATION")]
    max_duration: Option<String>,
    /// A verification pass: stop after reading this much (e.g. 500M, 5G);
    /// implies --read-data
    #[arg(long, value_name = "SIZE")]
    max_bytes: Option<String>,
}

fn budget(a: &CheckArgs) -> Result<Budget> {
    let max_duration = match &a.max_duration {
        Some(s) => Some(parse_duration(s).ok_or_else(|| {
            usage(format!(
                "--max-duration '{s}' is not a duration like 10m, 2h or 45s"
            ))
        })?),
        None => None,
    };
    let max_bytes =
        match &a.max_bytes {
            Some(s) => Some(parse_size(s).filter(|n| *n > 0).ok_or_else(|| {
                usage(format!("--max-bytes '{s}' is not a size like 500M or 5G"))
            })?),
            None => None,
        };
    Ok(Budget {
        max_duration,
        max_bytes,
    })
}

fn percent(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

pub fn run(g: &Global, a: &CheckArgs) -> Result<()> {
    super::keep_freed_buffers();
    let budget = budget(a)?;
    let read = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => s.parse::<ReadData>().map_err(usage)?,
        (None, true) => ReadData::All,
        (None, false) if budget.is_limited() => ReadData::All,
        (None, false) => ReadData::None,
    };
    // A reader: no lock, no session (a concurrent prune's deletions are
    // recognised by its records, not reported as damage).
    let mut repo = g.open()?;
    let spinner = output::Spinner::new(g.progress());
    let report = check::check_with_progress(&mut repo, read, budget, &|p| spinner.phase(p));
    spinner.finish();
    let report = report?;
    if let Some(cov) = report.coverage_30d {
        events::figure("cairn_verification_coverage_ratio", &[], cov);
    }
    if g.json {
        output::json(&serde_json::to_value(&report)?);
    } else if !g.quiet {
        line(format!(
            "checked {} snapshots, {} trees, {} packs ({} read), {} indexed blobs",
            report.snapshots, report.trees, report.packs, report.packs_read, report.blobs_indexed
        ));
        if let Some(cov) = report.coverage_30d {
            line(format!(
                "verified {} packs ({}){}; coverage (last 30 days): {} of {} live",
                report.packs_read,
                output::size(report.bytes_read),
                if report.budget_exhausted {
                    ", budget reached"
                } else {
                    ""
                },
                percent(cov),
                output::size(report.live_bytes)
            ));
            match report.oldest_verification {
                Some(t) => line(format!(
                    "oldest verification: {}",
                    t.format("%Y-%m-%d %H:%M:%S UTC")
                )),
                None => line(format!(
                    "oldest verification: never ({} packs not yet verified)",
                    report.packs_never_verified
                )),
            }
        }
    }
    for i in &report.info {
        if !g.quiet && !g.json {
            line(format!("info: {}: {}", i.object, i.message));
        }
    }
    for w in &report.warnings {
        if !g.quiet {
            eprintln!("warning: {}: {}", w.object, w.message);
        }
    }
    for p in &report.errors {
        eprintln!("error: {}: {}", p.object, p.message);
    }
    for d in &report.damaged_packs {
        eprintln!(
            "damaged pack {}: needed by {} files in snapshots {}",
            d.pack,
            d.files.len(),
            if d.snapshots.is_empty() {
                "(none)".to_string()
            } else {
                d.snapshots.join(", ")
            }
        );
    }
    for (snap, path) in &report.damaged_files {
        eprintln!("damaged: snapshot {snap}: {path}");
    }
    if !report.damaged_packs.is_empty() {
        eprintln!(
            "to heal: `cairn repair packs` salvages what still reads and deletes the damaged packs; then back up the intact sources again"
        );
    }
    let figures = json!({"snapshots": report.snapshots, "packs": report.packs, "packs_read": report.packs_read,
        "bytes_read": report.bytes_read, "coverage_30d": report.coverage_30d,
        "oldest_verification": report.oldest_verification,
        "errors": report.errors.len(), "damaged_files": report.damaged_files.len(),
        "damaged_packs": report.damaged_packs.iter().map(|d| json!({"pack": d.pack, "snapshots": d.snapshots, "files": d.files})).collect::<Vec<_>>()});
    if report.ok() {
        emit(g, "check.completed", Severity::Info, None, figures);
        if !g.json && !g.quiet {
            line("no errors were found");
        }
        Ok(())
    } else {
        emit(g, "check.failed", Severity::Critical, None, figures);
        Err(Finished(
            EXIT_FAILURE,
            format!("check found {} problems", report.errors.len()),
        )
        .into())
    }
}

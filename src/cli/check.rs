//! `check`: structure, and with --read-data the contents of packs.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use cairn::ops::check::{self, ReadData};

use super::events::{emit, Severity};
use super::output::{self, line};
use super::{usage, Finished, Global, EXIT_FAILURE};

#[derive(Args)]
pub struct CheckArgs {
    /// Also download, decrypt and hash every pack
    #[arg(long)]
    read_data: bool,
    /// Read only a subset: a share ("10%") or slice n of m ("3/7")
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    read_data_subset: Option<String>,
}

pub fn run(g: &Global, a: &CheckArgs) -> Result<()> {
    super::keep_freed_buffers();
    let read = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => s.parse::<ReadData>().map_err(usage)?,
        (None, true) => ReadData::All,
        (None, false) => ReadData::None,
    };
    // A reader: no lock, no session (a concurrent prune's deletions are
    // recognised by its records, not reported as damage).
    let mut repo = g.open()?;
    let report = check::check(&mut repo, read)?;
    if g.json {
        output::json(&serde_json::to_value(&report)?);
    } else if !g.quiet {
        line(format!(
            "checked {} snapshots, {} trees, {} packs ({} read), {} indexed blobs",
            report.snapshots, report.trees, report.packs, report.packs_read, report.blobs_indexed
        ));
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
    for (snap, path) in &report.damaged_files {
        eprintln!("damaged: snapshot {snap}: {path}");
    }
    let figures = json!({"snapshots": report.snapshots, "packs": report.packs, "packs_read": report.packs_read,
        "errors": report.errors.len(), "damaged_files": report.damaged_files.len()});
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

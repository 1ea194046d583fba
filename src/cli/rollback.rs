//! `rollback [SNAP] [--target DIR] [--dry-run]`: put a folder back as a
//! pre-restore snapshot holds it (plan, then execute).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::ops::rollback;

use super::events::{emit, Severity};
use super::output::{self, line};
use super::{usage, Finished, Global, EXIT_FAILURE};

#[derive(Args)]
pub struct RollbackArgs {
    /// A pre-restore snapshot (ID or unique prefix); default: the newest one
    #[arg(value_name = "SNAP")]
    snapshot: Option<String>,
    /// The folder to roll back: picks its newest pre-restore snapshot (it must
    /// be the folder the snapshot was taken of)
    #[arg(short, long, value_name = "DIR")]
    target: Option<PathBuf>,
    /// Show what would be restored and removed; write nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
}

pub fn run(g: &Global, a: &RollbackArgs) -> Result<()> {
    super::keep_freed_buffers();
    if let Some(sel) = a.snapshot.as_deref() {
        if sel != "latest" && sel.len() < 4 {
            return Err(usage(format!(
                "snapshot '{sel}' is too short: give at least 4 hex digits of its ID, or \"latest\""
            )));
        }
    }
    let repo = g.open_indexed()?;
    let (id, snap) =
        match rollback::pick_pre_restore(&repo, a.snapshot.as_deref(), a.target.as_deref()) {
            Ok(picked) => picked,
            Err(
                e @ (crate::Error::NotPreRestore(_)
                | crate::Error::InvalidArgument(_)
                | crate::Error::PrefixTooShort(_)),
            ) => return Err(usage(e.to_string())),
            Err(e) => return Err(e.into()),
        };
    let folder = rollback::pre_restore_folder(&snap)?;
    let time = snap.time.format("%Y-%m-%d %H:%M:%S UTC");
    if !g.json && !g.quiet {
        line(format!(
            "{} {} back to pre-restore snapshot {} ({time})",
            if a.dry_run { "would roll" } else { "rolling" },
            folder.display(),
            id.short()
        ));
    }
    let started = std::time::Instant::now();
    let (_, o) = rollback::rollback(&repo, &id, &snap, a.dry_run)?;
    let figures = json!({
        "message_type": "summary",
        "snapshot_id": id.to_hex(),
        "target": folder,
        "dry_run": a.dry_run,
        "files_restored": o.files_restored,
        "dirs": o.dirs,
        "bytes_restored": o.bytes_written,
        "files_verified": o.files_verified,
        "deleted": o.deleted,
        "errors": o.errors.len(),
        "total_duration": started.elapsed().as_secs_f64(),
    });
    if g.json {
        output::json(&figures);
    } else if !g.quiet {
        let verb = if a.dry_run {
            "would restore"
        } else {
            "restored"
        };
        line(format!(
            "{verb} {} files ({}){}",
            o.files_restored,
            output::size(o.bytes_written),
            if a.dry_run {
                String::new()
            } else {
                format!(", verified {}", o.files_verified)
            }
        ));
        for p in &o.deleted {
            line(format!(
                "{} {}",
                if a.dry_run { "would remove" } else { "removed" },
                p.display()
            ));
        }
        if !a.dry_run && o.errors.is_empty() {
            line(format!(
                "rolled {} back to pre-restore snapshot {} ({time})",
                folder.display(),
                id.short()
            ));
        }
    }
    for (p, why) in &o.errors {
        eprintln!("error: {}: {why}", p.display());
    }
    if a.dry_run {
        return Ok(());
    }
    let (event, sev) = match o.errors.is_empty() {
        true => ("rollback.completed", Severity::Info),
        false => ("rollback.failed", Severity::Critical),
    };
    emit(g, event, sev, Some(id.to_hex()), figures);
    if !o.errors.is_empty() {
        return Err(Finished(
            EXIT_FAILURE,
            format!(
                "{} during the rollback of {}",
                output::count(o.errors.len() as u64, "error"),
                folder.display()
            ),
        )
        .into());
    }
    Ok(())
}

//! `copy --to URL [SNAP...]`: send snapshots to another repository.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::ops::copy;
use crate::{Backend, Repository};

use super::events::{emit, Severity};
use super::output::{self, line};
use super::{password, select_snapshots, FilterArgs, Global};

#[derive(Args)]
pub struct CopyArgs {
    /// The destination repository (initialised; `init --from` makes copies cheaper)
    #[arg(long, value_name = "URL")]
    to: String,
    /// Storage option for the destination, KEY=VALUE (repeatable)
    #[arg(long = "to-option", value_name = "KEY=VALUE")]
    to_options: Vec<String>,
    /// Password file for the destination (else CAIRN_TO_PASSWORD, else the same password)
    #[arg(long, value_name = "FILE", conflicts_with = "to_password_command")]
    to_password_file: Option<PathBuf>,
    /// Shell command that prints the destination's password
    #[arg(long, value_name = "CMD")]
    to_password_command: Option<String>,
    /// Snapshots to copy (IDs, prefixes or "latest"); default: all that match the filters
    #[arg(value_name = "SNAP")]
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &Global, a: &CopyArgs) -> Result<()> {
    let mut to_options = super::parse_options(&a.to_options)?;
    to_options.extend(super::env_options("CAIRN_TO_OPTIONS")?);
    let mut src = g.open()?;
    let chosen = select_snapshots(&src, &a.snapshots, &a.filter)?;
    let dst_backend =
        Backend::open(&a.to, &to_options, false)?.with_limits(g.limit_upload, g.limit_download);
    if !Repository::exists(&dst_backend)? {
        return Err(crate::Error::RepoNotFound(format!(
            "{} (make it with `cairn -r {} init --from {}`)",
            a.to,
            a.to,
            g.location()?
        ))
        .into());
    }
    let pw = password::other_password(
        &a.to_password_file,
        &a.to_password_command,
        "CAIRN_TO_PASSWORD",
        g,
    )?;
    let mut dst = g.open_other(dst_backend, pw.as_bytes())?;
    let display = output::CopyDisplay::new(g.progress());
    let copied = copy::copy_with_progress(&mut src, &mut dst, chosen, &display);
    display.finish();
    let outcome = match copied {
        Ok(o) => o,
        Err(e) => {
            emit(
                g,
                "copy.failed",
                Severity::Critical,
                None,
                json!({"error": e.to_string(), "to": a.to}),
            );
            return Err(e.into());
        }
    };
    let figures = json!({
        "message_type": "summary",
        "to": a.to,
        "snapshots_copied": outcome.copied.len(),
        "snapshots_skipped": outcome.skipped.len(),
        "snapshots_forgotten_meanwhile": outcome.forgotten_meanwhile.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
        "copied": outcome.copied.iter().map(|(s, d)| json!({"source": s.to_hex(), "copy": d.to_hex()})).collect::<Vec<_>>(),
        "blobs_uploaded": outcome.blobs_uploaded,
        "bytes_uploaded": outcome.bytes_uploaded,
        "packs_uploaded": outcome.packs_uploaded,
        "same_blob_ids": outcome.same_blob_ids,
        "total_duration": outcome.duration_secs,
    });
    emit(g, "copy.completed", Severity::Info, None, figures.clone());
    if g.json {
        output::json(&figures);
        return Ok(());
    }
    if !outcome.same_blob_ids && !outcome.copied.is_empty() {
        eprintln!(
            "note: the repositories name blobs with different keys, so every blob was re-hashed; \
             a destination made with `init --from` would move blobs as they are"
        );
    }
    if !g.quiet {
        for (s, d) in &outcome.copied {
            line(format!("copied snapshot {} as {}", s.short(), d.short()));
        }
        for s in &outcome.forgotten_meanwhile {
            line(format!(
                "snapshot {} was forgotten and pruned while the copy ran: not copied",
                s.short()
            ));
        }
        line(format!(
            "{} snapshots copied, {} already there; uploaded {} blobs ({}) in {}",
            outcome.copied.len(),
            outcome.skipped.len(),
            outcome.blobs_uploaded,
            output::size(outcome.bytes_uploaded),
            output::duration(outcome.duration_secs)
        ));
    }
    Ok(())
}

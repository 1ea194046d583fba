//! `prune`, and `forget --prune`: delete unreferenced data without a lock.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::ops::prune::{self, Action, MaxUnused, PruneOptions, PruneOutcome};

use super::events::{self, emit, Severity};
use super::output::{self, line};
use super::{usage, Global};

/// The options `prune` and `forget --prune` share.
#[derive(Args, Clone)]
pub struct PruneOpts {
    /// Repack packs whose unused share exceeds this ("5%", or "unlimited" to only delete)
    #[arg(long, value_name = "SHARE", default_value = "5%")]
    max_unused: String,
    /// Rewrite at most this much data when repacking (e.g. 500M, 2G)
    #[arg(long, value_name = "SIZE")]
    max_repack_size: Option<String>,
    /// Fence a writer (backup, copy) silent for longer than this, by the storage's
    /// clock (e.g. 30m, 2h); a fenced backup fails and says a rerun is safe
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    stale_after: String,
    /// Also fence a writer that still sends heartbeats but has been running for
    /// longer than this (a stuck backup), e.g. 2d; off by default
    #[arg(long, value_name = "DURATION")]
    fence_older_than: Option<String>,
    /// Prune even when no snapshot exists but data does (deletes everything)
    #[arg(long)]
    allow_empty: bool,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Show what would be deleted and repacked, and why; change nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[command(flatten)]
    opts: PruneOpts,
}

pub(super) use crate::format::size::parse_size;

impl PruneOpts {
    pub fn options(&self, dry_run: bool) -> Result<PruneOptions> {
        let max_unused: MaxUnused = self.max_unused.parse().map_err(usage)?;
        let max_repack_bytes = match &self.max_repack_size {
            Some(s) => Some(parse_size(s).ok_or_else(|| {
                usage(format!(
                    "--max-repack-size '{s}' is not a size like 500M or 2G"
                ))
            })?),
            None => None,
        };
        let stale_after =
            crate::format::duration::parse_duration(&self.stale_after).ok_or_else(|| {
                usage(format!(
                    "--stale-after '{}' is not a duration like 30m or 2h",
                    self.stale_after
                ))
            })?;
        let fence_older_than = match &self.fence_older_than {
            Some(s) => Some(crate::format::duration::parse_duration(s).ok_or_else(|| {
                usage(format!(
                    "--fence-older-than '{s}' is not a duration like 12h or 2d"
                ))
            })?),
            None => None,
        };
        Ok(PruneOptions {
            max_unused,
            max_repack_bytes,
            dry_run,
            stale_after,
            allow_empty: self.allow_empty,
            fence_older_than,
        })
    }
}

pub fn run(g: &Global, a: &PruneArgs) -> Result<()> {
    let opts = a.opts.options(a.dry_run)?;
    execute(g, &opts)
}

/// Runs a prune and reports it (also the tail of `forget --prune`).
pub fn execute(g: &Global, opts: &PruneOptions) -> Result<()> {
    let mut repo = g.open()?;
    let spinner = output::Spinner::new(g.progress());
    let outcome = prune::prune_with_progress(&mut repo, opts, &|p| spinner.phase(p));
    spinner.finish();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            let e = anyhow::Error::from(e);
            events::failed(g, "prune.failed", &e);
            return Err(e);
        }
    };
    events::figure("cairn_snapshots", &[], outcome.plan.snapshots as f64);
    let mut figures = summary_json(&outcome, opts.dry_run);
    // The whole command's requests (a fleet's admin watches the listings).
    figures["requests"] = json!(repo.backend().request_counts());
    if !opts.dry_run {
        let severity = if outcome.swept {
            Severity::Info
        } else {
            Severity::Warning
        };
        emit(g, "prune.completed", severity, None, figures.clone());
    }
    if g.json {
        output::json(&figures);
    } else if !g.quiet {
        report(g, &outcome, opts.dry_run);
    }
    Ok(())
}

fn summary_json(o: &PruneOutcome, dry_run: bool) -> serde_json::Value {
    let p = &o.plan;
    json!({
        "message_type": "summary",
        "dry_run": dry_run,
        "generation": p.generation,
        "snapshots": p.snapshots,
        "packs_to_delete": p.packs_delete,
        "packs_to_repack": p.packs_repack,
        "packs_to_keep": p.packs_keep,
        "bytes_to_remove": p.bytes_removed,
        "bytes_to_rewrite": p.bytes_rewritten,
        "bytes_freed": p.bytes_freed,
        "bytes_unused_kept": p.bytes_unused_kept,
        "packs_locked": p.packs_locked,
        "bytes_locked": p.bytes_locked,
        "locked_until": p.locked_until,
        "waiting_for_first_snapshot": p.waiting_for_first_snapshot,
        "packs_written": o.packs_written,
        "packs_deleted": o.packs_deleted,
        "bytes_deleted": o.bytes_deleted,
        "packs_delete_refused": o.packs_refused,
        "bytes_delete_refused": o.bytes_refused,
        "swept": o.swept,
        "sessions_pending": o.sessions_pending,
        "sessions_fenced": o.sessions_fenced,
        "finished_earlier_generation": o.finished_earlier,
        "lost_race": o.lost_race,
        "fenced_late": o.fenced_late,
        "pending_sessions": o.pending_sessions,
        "packs": p.decisions.iter().map(|d| json!({
            "pack": d.pack.to_hex(), "type": d.kind, "size": d.size, "used": d.used,
            "action": d.action, "reason": d.reason,
        })).collect::<Vec<_>>(),
    })
}

fn report(g: &Global, o: &PruneOutcome, dry_run: bool) {
    let p = &o.plan;
    if let Some(n) = o.finished_earlier {
        let what = if dry_run {
            "is unfinished; a prune finishes it first"
        } else {
            "finished"
        };
        line(format!("earlier prune generation {n} {what}"));
    }
    if g.verbose > 0 {
        for d in &p.decisions {
            let verb = match d.action {
                Action::Keep => "keep  ",
                Action::Repack => "repack",
                Action::Delete => "delete",
            };
            line(format!(
                "{verb} {} {} ({} used of {}): {}",
                d.kind.dir(),
                d.pack.short(),
                output::size(d.used),
                output::size(d.size),
                d.reason
            ));
        }
    }
    let (would_be, would) = if dry_run {
        ("would be ", "would ")
    } else {
        ("", "")
    };
    line(format!(
        "{} analysed; {} {would_be}deleted, {} {would_be}repacked, {} kept",
        output::count(p.snapshots as u64, "snapshot"),
        output::count(p.packs_delete as u64, "pack"),
        p.packs_repack,
        p.packs_keep
    ));
    line(format!(
        "{would}remove {}, {would}rewrite {}: {would}free {}",
        output::size(p.bytes_removed),
        output::size(p.bytes_rewritten),
        output::size(p.bytes_freed)
    ));
    if p.waiting_for_first_snapshot {
        line("no snapshot is committed yet and backups are running: nothing to prune");
    }
    if let Some(until) = p.locked_until {
        line(format!(
            "{} ({}) {would}stay under the minimum retention until {}; a later prune takes them",
            output::count(p.packs_locked as u64, "pack"),
            output::size(p.bytes_locked),
            until
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
        ));
    }
    if o.packs_refused > 0 {
        line(format!(
            "the store refused to delete {} ({}): locked (object lock, immutability or retention policy); they stay until a later prune",
            output::count(o.packs_refused as u64, "pack"),
            output::size(o.bytes_refused)
        ));
    }
    if dry_run {
        line("dry run: nothing was changed");
    } else if o.lost_race {
        line(format!(
            "another prune published generation {} first: nothing more deleted ({} packs deleted finishing an earlier one); run prune again later",
            p.generation, o.packs_deleted
        ));
    } else if o.swept {
        line(format!(
            "deleted {} ({})",
            output::count(o.packs_deleted as u64, "pack"),
            output::size(o.bytes_deleted)
        ));
    } else {
        line(format!(
            "sweep pending: {} backups or copies still running may need condemned data; the next prune deletes it",
            o.sessions_pending
        ));
        for w in &o.pending_sessions {
            line(format!(
                "  waiting for {} {} on {} (pid {}), last alive {} ago",
                w.kind.as_deref().unwrap_or("writer"),
                &w.session[..8],
                w.hostname
                    .as_deref()
                    .unwrap_or("an unknown host (its start record does not read)"),
                w.pid.map_or("?".to_string(), |p| p.to_string()),
                output::duration(w.silent_secs.max(0) as f64),
            ));
        }
    }
    if o.sessions_fenced > 0 {
        line(format!(
            "fenced {} silent writers (their backups fail and can be rerun)",
            o.sessions_fenced
        ));
    }
}

//! `rewrite [SNAP...] --exclude GLOB [--forget] [--dry-run]`.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::ops::rewrite;

use super::events::{emit, Severity};
use super::output::{self, count, line};
use super::{select_snapshots, usage, FilterArgs, Global};

#[derive(Args)]
pub struct RewriteArgs {
    /// Snapshots to rewrite (IDs, prefixes or "latest"); default: every one
    /// the filters select
    #[arg(value_name = "SNAP")]
    snapshots: Vec<String>,
    /// Leave out paths matching a glob (repeatable), as backup's --exclude
    #[arg(short = 'e', long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Remove each original once its rewrite is saved
    #[arg(long)]
    forget: bool,
    /// Print what would be left out; write nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &Global, a: &RewriteArgs) -> Result<()> {
    if a.excludes.is_empty() {
        return Err(usage("give --exclude GLOB: what to leave out"));
    }
    let excludes = crate::source::Excludes::new(&a.excludes).map_err(|e| usage(e.to_string()))?;
    let repo = g.open_indexed()?;
    let chosen = select_snapshots(&repo, &a.snapshots, &a.filter)?;
    let mut plans = rewrite::plan(&repo, &chosen, &excludes)?;
    if !a.dry_run {
        let mut repo = repo.into_inner();
        rewrite::execute(&mut repo, &mut plans, &chosen, &excludes, a.forget)?;
        emit(
            g,
            "rewrite.completed",
            Severity::Info,
            None,
            json!({"rewritten": plans.iter().map(|p| json!({"snapshot": p.snapshot.to_hex(), "rewritten": p.rewritten.map(|r| r.to_hex())})).collect::<Vec<_>>()}),
        );
    }
    if g.json {
        output::json(&json!({"dry_run": a.dry_run, "snapshots": plans}));
        return Ok(());
    }
    if !g.quiet {
        for p in &plans {
            line(format!(
                "snapshot {}: {} left out{}",
                p.snapshot.short(),
                count(p.removed.len() as u64, "path"),
                match (&p.rewritten, a.dry_run) {
                    (_, true) => " (would be rewritten)".to_string(),
                    (Some(n), false) => format!(
                        "; saved as {}{}",
                        n.short(),
                        if a.forget {
                            ", the original removed"
                        } else {
                            ""
                        }
                    ),
                    (None, false) => String::new(),
                }
            ));
            for r in &p.removed {
                line(format!("  {}", r.display()));
            }
        }
        line(format!(
            "{} checked, {} to rewrite",
            count(chosen.len() as u64, "snapshot"),
            plans.len()
        ));
    }
    Ok(())
}

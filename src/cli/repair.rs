//! `repair index|packs`: heal after damage, plan then execute (`--dry-run`
//! prints the plan and changes nothing).

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::ops::repair;

use super::events::{emit, Severity};
use super::output::{self, count, line};
use super::{select_snapshots, usage, FilterArgs, Global};

#[derive(Args)]
pub struct RepairArgs {
    #[command(subcommand)]
    command: RepairCommand,
}

#[derive(Subcommand)]
enum RepairCommand {
    /// Index the packs storage holds that no index names (additive)
    Index(DryRun),
    /// Salvage the readable blobs of damaged packs into new packs, then delete
    /// the damaged packs, so the next backup uploads the lost blobs again
    Packs(PacksArgs),
    /// Write repaired copies of snapshots whose data is gone (lost files left
    /// out, lost directories empty, tagged "repaired"); originals stay unless
    /// --forget
    Snapshots(SnapshotsArgs),
}

#[derive(Args)]
struct SnapshotsArgs {
    /// Snapshots to look at (IDs, prefixes or "latest"); default: all
    #[arg(value_name = "SNAP")]
    snapshots: Vec<String>,
    /// Remove each damaged snapshot once its repaired copy is saved
    #[arg(long)]
    forget: bool,
    #[command(flatten)]
    dry: DryRun,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Args)]
struct DryRun {
    /// Print the plan; change nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
}

#[derive(Args)]
struct PacksArgs {
    /// Damaged packs (full IDs, as `check --read-data` names them); default:
    /// those the latest verification pass recorded as damaged
    #[arg(value_name = "PACK")]
    packs: Vec<String>,
    #[command(flatten)]
    dry: DryRun,
}

pub fn run(g: &Global, a: &RepairArgs) -> Result<()> {
    match &a.command {
        RepairCommand::Index(d) => index(g, d.dry_run),
        RepairCommand::Packs(p) => packs(g, p),
        RepairCommand::Snapshots(s) => snapshots(g, s),
    }
}

fn snapshots(g: &Global, a: &SnapshotsArgs) -> Result<()> {
    let mut repo = g.open()?;
    repo.load_index()?;
    let chosen = select_snapshots(&repo, &a.snapshots, &a.filter)?;
    let spinner = output::Spinner::new(g.progress());
    spinner.phase(&format!(
        "planning: walking the trees of {}",
        count(chosen.len() as u64, "snapshot")
    ));
    let mut plan = repair::plan_snapshots(&repo, &chosen)?;
    if !a.dry.dry_run {
        spinner.phase("saving the repaired snapshots");
        repair::repair_snapshots(&mut repo, &mut plan, &chosen, a.forget)?;
    }
    spinner.finish();
    if g.json {
        output::json(
            &json!({"dry_run": a.dry.dry_run, "checked": chosen.len(), "snapshots": plan}),
        );
    } else if !g.quiet {
        for r in &plan {
            line(format!(
                "snapshot {}: {} lost, {} lost{}",
                r.snapshot.short(),
                count(r.lost_files.len() as u64, "file"),
                count(r.lost_dirs.len() as u64, "directory"),
                match (&r.repaired, a.dry.dry_run) {
                    (_, true) => " (would be repaired)".to_string(),
                    (Some(n), false) => format!(
                        ": repaired as {}{}",
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
            for f in r.lost_files.iter().chain(&r.lost_dirs) {
                line(format!("  lost: {f}"));
            }
        }
        line(format!(
            "{} checked, {} need repair",
            count(chosen.len() as u64, "snapshot"),
            plan.len()
        ));
    }
    if !a.dry.dry_run && !plan.is_empty() {
        emit(
            g,
            "repair.completed",
            Severity::Info,
            None,
            json!({"what": "snapshots", "repaired": plan.iter().map(|r| json!({"snapshot": r.snapshot.to_hex(), "repaired": r.repaired.map(|n| n.to_hex())})).collect::<Vec<_>>()}),
        );
    }
    Ok(())
}

fn index(g: &Global, dry_run: bool) -> Result<()> {
    let mut repo = g.open()?;
    repo.load_index()?;
    let spinner = output::Spinner::new(g.progress());
    spinner.phase("planning: reading the headers of packs no index names");
    let plan = repair::plan_index(&repo)?;
    spinner.finish();
    if !g.json && !g.quiet {
        line(format!(
            "{} no index names{}",
            count(plan.unindexed.len() as u64, "stored pack"),
            if plan.unreadable.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} unreadable headers (run `cairn repair packs {}`)",
                    plan.unreadable.len(),
                    plan.unreadable
                        .iter()
                        .map(|p| p.to_hex())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        ));
    }
    let adopted = if dry_run {
        0
    } else {
        let spinner = output::Spinner::new(g.progress());
        spinner.phase(&format!(
            "indexing {}",
            count(plan.unindexed.len() as u64, "pack")
        ));
        let adopted = repair::repair_index(&mut repo, &plan);
        spinner.finish();
        adopted?
    };
    if g.json {
        output::json(&json!({"dry_run": dry_run, "plan": plan, "packs_indexed": adopted}));
    } else if !g.quiet {
        line(if dry_run {
            format!("would index {}", count(plan.unindexed.len() as u64, "pack"))
        } else {
            format!("indexed {}", count(adopted as u64, "pack"))
        });
    }
    if !dry_run {
        emit(
            g,
            "repair.completed",
            Severity::Info,
            None,
            json!({"what": "index", "packs_indexed": adopted}),
        );
    }
    Ok(())
}

fn packs(g: &Global, a: &PacksArgs) -> Result<()> {
    let named = repair::parse_packs(&a.packs).map_err(usage)?;
    let mut repo = g.open()?;
    repo.load_index()?;
    let damaged = if named.is_empty() {
        repair::recorded_damage(&repo)?
    } else {
        named
    };
    let spinner = output::Spinner::new(g.progress());
    spinner.phase(&format!(
        "planning: reading {}",
        count(damaged.len() as u64, "damaged pack")
    ));
    let plan = repair::plan_packs(&repo, &damaged);
    spinner.finish();
    let plan = plan?;
    if !g.json && !g.quiet {
        if damaged.is_empty() {
            line("no damaged pack is recorded (run `cairn check --read-data` first, or name the packs)");
        }
        for p in &plan.packs {
            line(format!(
                "pack {}: salvage {}, {} stored elsewhere, {} lost{}",
                p.pack,
                count(p.salvage.len() as u64, "blob"),
                p.elsewhere,
                p.lost.len(),
                if a.dry.dry_run {
                    "; would be deleted"
                } else {
                    ""
                }
            ));
        }
        for p in &plan.intact {
            line(format!("pack {p}: reads intact now, left alone"));
        }
        for p in &plan.missing {
            line(format!("pack {p}: no longer stored"));
        }
    }
    let outcome = if a.dry.dry_run {
        repair::PackRepairOutcome::default()
    } else {
        let spinner = output::Spinner::new(g.progress());
        spinner.phase(&format!(
            "salvaging {} into new packs",
            count(
                plan.packs.iter().map(|p| p.salvage.len() as u64).sum(),
                "blob"
            )
        ));
        let outcome = repair::repair_packs(&repo, &plan);
        spinner.finish();
        outcome?
    };
    if g.json {
        output::json(&json!({"dry_run": a.dry.dry_run, "plan": plan, "outcome": outcome}));
    } else if !g.quiet && !a.dry.dry_run && !plan.packs.is_empty() {
        line(format!(
            "salvaged {} into {}, deleted {}; {} lost: back up the intact source again to store them anew (`cairn check` lists what they held until then)",
            count(outcome.blobs_salvaged as u64, "blob"),
            count(outcome.packs_written as u64, "new pack"),
            count(outcome.packs_deleted as u64, "damaged pack"),
            count(outcome.blobs_lost as u64, "blob"),
        ));
    }
    if !a.dry.dry_run {
        emit(
            g,
            "repair.completed",
            Severity::Info,
            None,
            json!({"what": "packs", "packs_deleted": outcome.packs_deleted,
                   "blobs_salvaged": outcome.blobs_salvaged, "blobs_lost": outcome.blobs_lost}),
        );
    }
    Ok(())
}

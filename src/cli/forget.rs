//! `forget`: remove snapshots by ID or by a retention policy.

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};

use crate::ops::forget::{self, Policy};

use super::events::{self, emit, Severity};
use super::inspect::snapshot_json;
use super::output::{self, line};
use super::{select_snapshot, usage, FilterArgs, Global};

#[derive(Args)]
pub struct ForgetArgs {
    /// Snapshots to remove (IDs, prefixes or "latest"); otherwise the policy decides
    #[arg(value_name = "SNAP")]
    snapshots: Vec<String>,
    /// Keep the N most recent snapshots
    #[arg(long, value_name = "N")]
    keep_last: Option<usize>,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N")]
    keep_hourly: Option<usize>,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N")]
    keep_daily: Option<usize>,
    /// Keep the newest snapshot of each of the last N weeks that have one
    #[arg(long, value_name = "N")]
    keep_weekly: Option<usize>,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N")]
    keep_monthly: Option<usize>,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N")]
    keep_yearly: Option<usize>,
    /// Keep snapshots this close to the newest of their group (e.g. 30d, 1y6m, 12h)
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    /// Keep snapshots with this tag ("a,b": both) (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,
    /// Of what the other rules keep, keep at most N per group (the newest)
    #[arg(long, value_name = "N")]
    keep_at_most: Option<usize>,
    /// Show what would be removed; remove nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Prune afterwards: delete the data no remaining snapshot needs
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_opts: super::prune::PruneOpts,
    #[command(flatten)]
    filter: FilterArgs,
}

fn policy(a: &ForgetArgs) -> Result<Policy> {
    let within = match &a.keep_within {
        Some(s) => Some(crate::format::duration::parse_span(s).ok_or_else(|| {
            usage(format!(
                "--keep-within '{s}' is not a duration like 30d or 1y6m"
            ))
        })?),
        None => None,
    };
    Ok(Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within,
        tags: a.keep_tags.clone(),
        at_most: a.keep_at_most,
    })
}

pub fn run(g: &Global, a: &ForgetArgs) -> Result<()> {
    let policy = policy(a)?;
    if !a.snapshots.is_empty() && !policy.is_empty() {
        return Err(usage("give snapshot IDs or a --keep policy, not both"));
    }
    if a.snapshots.is_empty() && policy.is_empty() {
        return Err(usage(
            "no policy given: use --keep-last, --keep-daily, ... or name snapshots to forget",
        ));
    }
    if a.snapshots.is_empty() && policy.keeps_nothing() {
        return Err(usage(
            "this policy keeps nothing (every --keep-* rule is 0 or empty; --keep-at-most only caps what the others keep) and would remove every snapshot; \
             give a non-zero --keep-* rule, or name the snapshots to forget",
        ));
    }
    let prune_opts = a
        .prune
        .then(|| a.prune_opts.options(a.dry_run))
        .transpose()?;
    // No lock: deleting a snapshot object is safe beside any backup or prune (a
    // backup whose parent vanishes re-reads files; a prune that analysed it
    // merely keeps its data one generation longer).
    let repo = g.open()?;
    let (remove, report): (Vec<crate::format::id::SnapshotId>, Vec<Value>) =
        if a.snapshots.is_empty() {
            let f = a.filter.filter();
            // Every snapshot goes in: those the filters leave out are kept,
            // and their base backups keep their WAL.
            let plan = forget::plan_selected(repo.list_snapshots()?, |s| f.matches(s), &policy);
            let ids = plan
                .iter()
                .flat_map(|g| g.remove.iter().map(|(id, _)| *id))
                .collect();
            (ids, plan.iter().map(|grp| group_report(g, grp)).collect())
        } else {
            let mut ids = Vec::new();
            for sel in &a.snapshots {
                ids.push(select_snapshot(&repo, sel, &a.filter)?.0);
            }
            ids.sort();
            ids.dedup();
            (ids, Vec::new())
        };
    let mut locked = Vec::new();
    if !a.dry_run {
        for id in &remove {
            if !repo.delete_snapshot_unless_locked(id)? {
                locked.push(*id);
            }
        }
        if !locked.is_empty() {
            return Err(forget_refused(g, &locked, remove.len()));
        }
        emit(
            g,
            "forget.completed",
            Severity::Info,
            None,
            json!({"removed": remove.len()}),
        );
    }
    if g.json {
        if a.snapshots.is_empty() {
            output::json(&Value::Array(report));
        } else {
            output::json(
                &json!({"removed": remove.iter().map(|i| i.to_hex()).collect::<Vec<_>>(), "dry_run": a.dry_run}),
            );
        }
    } else if !g.quiet {
        let verb = if a.dry_run { "would remove" } else { "removed" };
        for id in &remove {
            if !a.snapshots.is_empty() {
                line(format!("{verb} snapshot {}", id.short()));
            }
        }
        line(format!("{verb} {} snapshots", remove.len()));
    }
    if let Some(opts) = prune_opts {
        drop(repo);
        // One JSON document per command: the prune's summary follows as a
        // second line only with --json (JSON lines), as restic prints two parts.
        super::prune::execute(g, &opts)?;
    }
    Ok(())
}

/// Prints one group (human) and returns its JSON form.
fn group_report(g: &Global, grp: &forget::GroupPlan) -> Value {
    if !g.json && !g.quiet {
        line(format!(
            "snapshots for host {}, paths [{}]:",
            grp.hostname,
            grp.paths.join(", ")
        ));
        line(format!("keep {} snapshots:", grp.keep.len()));
        for (id, s, why) in &grp.keep {
            let t = s
                .time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S");
            line(format!(
                "  {}  {t}  {:<20} {}",
                id.short(),
                s.tags.join(","),
                why.join(", ")
            ));
        }
        line(format!("remove {} snapshots:", grp.remove.len()));
        for (id, s) in &grp.remove {
            let t = s
                .time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S");
            line(format!("  {}  {t}  {}", id.short(), s.tags.join(",")));
        }
        line("");
    }
    json!({
        "host": grp.hostname,
        "paths": grp.paths,
        "keep": grp.keep.iter().map(|(id, s, _)| snapshot_json(id, s)).collect::<Vec<_>>(),
        "remove": grp.remove.iter().map(|(id, s)| snapshot_json(id, s)).collect::<Vec<_>>(),
        "reasons": grp.keep.iter().map(|(id, s, why)| json!({"snapshot": snapshot_json(id, s), "matches": why})).collect::<Vec<_>>(),
    })
}

/// A store that refuses to delete snapshot objects (an immutability or
/// retention policy) leaves those snapshots in place: one line naming them,
/// exit 1, and no prune (the keep rules were not carried out).
fn forget_refused(
    g: &Global,
    locked: &[crate::format::id::SnapshotId],
    planned: usize,
) -> anyhow::Error {
    let names: Vec<String> = locked.iter().map(|i| i.short()).collect();
    let e = anyhow::anyhow!(
        "the store refused to delete {} of the {planned} snapshots to remove (locked by its retention policy): {}; they stay until their lock ends, then run forget again",
        locked.len(),
        names.join(", ")
    );
    events::failed(g, "forget.failed", &e);
    e
}

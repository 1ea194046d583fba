//! `restore-db SNAP --to URL|FILE`: load a database dump and verify it.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::database::Location;
use crate::ops::restore_db::{self, RestoreDbOptions, RestoreDbOutcome, Safety, TargetWas};

use super::events::{self, emit, Severity};
use super::output::line;
use super::{usage, FilterArgs, Finished, Global, EXIT_FAILURE};

#[derive(Args)]
pub struct RestoreDbArgs {
    /// Snapshot ID, unique prefix, or "latest" (the latest holding a database)
    #[arg(value_name = "SNAP")]
    snapshot: String,
    /// Where to load it: postgresql://USER@HOST/DB, mysql://USER@HOST/DB, or a SQLite file
    #[arg(long, value_name = "URL|FILE")]
    to: String,
    /// Which of the snapshot's databases (needed when it holds several)
    #[arg(long, value_name = "NAME")]
    database: Option<String>,
    /// Snapshot the target first and roll back on failure (the default when the target holds tables)
    #[arg(long, conflicts_with = "no_safety")]
    safe: bool,
    /// Never take a pre-restore snapshot
    #[arg(long)]
    no_safety: bool,
    /// PostgreSQL: skip ownership and privileges (a server without the source's roles)
    #[arg(long)]
    no_owner: bool,
    /// PostgreSQL: load with N parallel jobs (pg_restore -j; via a temporary file, not in one transaction)
    #[arg(short = 'j', long, value_name = "N", default_value_t = 1)]
    jobs: u32,
    /// Keep the newest N pre-restore snapshots of the target; forget older ones
    #[arg(long, value_name = "N", default_value_t = 5)]
    keep_pre_restore: usize,
    /// Only say how the target differs and what would be done
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &Global, a: &RestoreDbArgs) -> Result<()> {
    let target = Location::parse(&a.to).map_err(|e| usage(format!("--to: {e}")))?;
    if a.keep_pre_restore == 0 {
        return Err(usage("--keep-pre-restore must be at least 1"));
    }
    if a.jobs > 1 && target.engine() != crate::format::database::Engine::Postgres {
        return Err(usage("--jobs is for PostgreSQL targets"));
    }
    let repo = g.open()?;
    let (id, snap) = if a.snapshot == "latest" {
        // "latest" is the latest backup, not the copy a safe restore took of
        // its target (unless --tag asks for those).
        let filter = a.filter.filter();
        let pre_restore_ok = a
            .filter
            .tags
            .iter()
            .any(|t| t.split(',').any(|t| t == restore_db::PRE_RESTORE_TAG));
        repo.list_snapshots()?
            .into_iter()
            .rfind(|(_, s)| {
                filter.matches(s)
                    && !restore_db::restorable(s).is_empty()
                    && (pre_restore_ok || !s.has_tag(restore_db::PRE_RESTORE_TAG))
            })
            .ok_or_else(|| anyhow::anyhow!("no snapshot holds a database dump"))?
    } else {
        super::select_snapshot(&repo, &a.snapshot, &a.filter)?
    };
    let record = restore_db::pick(&snap, a.database.as_deref())?.clone();
    let opts = RestoreDbOptions {
        database: a.database.clone(),
        safety: match (a.safe, a.no_safety) {
            (true, _) => Safety::Safe,
            (_, true) => Safety::Off,
            _ => Safety::Auto,
        },
        no_owner: a.no_owner,
        jobs: a.jobs,
        keep_pre_restore: Some(a.keep_pre_restore),
        dry_run: a.dry_run,
    };
    let outcome = match restore_db::restore_db(repo, &snap, &record, &target, &opts) {
        Ok(o) => o,
        Err(e) => {
            let e = anyhow::Error::from(e);
            events::failed(g, "restore_db.failed", &e);
            return Err(e);
        }
    };
    let sid = Some(id.to_hex());
    if let Some(pre) = outcome.pre_snapshot {
        emit(
            g,
            "restore.pre_snapshot",
            Severity::Info,
            Some(pre.to_hex()),
            json!({"target": outcome.target, "database": outcome.target_name}),
        );
    }
    if outcome.rolled_back {
        emit(
            g,
            "restore.rolled_back",
            Severity::Warning,
            outcome.pre_snapshot.map(|p| p.to_hex()),
            json!({"target": outcome.target, "database": outcome.target_name, "restoring": id.to_hex()}),
        );
    }
    if !a.dry_run {
        let (event, severity) = match outcome.verified() {
            true => ("restore_db.completed", Severity::Info),
            false => ("restore_db.failed", Severity::Critical),
        };
        emit(g, event, severity, sid, outcome_json(&id, &outcome));
    }
    report(g, &id, &outcome, a.dry_run);
    if a.dry_run || outcome.verified() {
        return Ok(());
    }
    Err(Finished(EXIT_FAILURE, failure_line(&outcome)).into())
}

fn failure_line(o: &RestoreDbOutcome) -> String {
    let what = match (&o.failure, o.differences.first()) {
        (Some(f), _) => format!("the restore failed: {f}"),
        (None, Some(d)) => format!(
            "the restored database does not match the snapshot: {d}{}",
            match o.differences.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            }
        ),
        (None, None) => "the restore did not verify".into(),
    };
    let after = match (o.rolled_back, &o.rollback_failure, o.pre_snapshot) {
        (true, _, Some(p)) => format!(
            "; rolled back to the pre-restore snapshot {} (verified)",
            p.short()
        ),
        (_, Some(r), Some(p)) => format!(
            "; the rollback failed too ({r}): the pre-restore snapshot {} holds the old database",
            p.short()
        ),
        _ if o.record.engine == crate::format::database::Engine::Sqlite => {
            "; the target file was left as it was".into()
        }
        _ if o.record.engine == crate::format::database::Engine::Postgres
            && o.failure.is_some() =>
        {
            "; the load ran in one transaction, so the database is as it was".into()
        }
        _ => String::new(),
    };
    format!("{what}{after}")
}

fn outcome_json(id: &crate::format::id::SnapshotId, o: &RestoreDbOutcome) -> serde_json::Value {
    json!({
        "snapshot_id": id.to_hex(),
        "engine": o.record.engine,
        "database": o.record.name,
        "target": o.target,
        "target_database": o.target_name,
        "target_was": match o.target_was {
            TargetWas::Missing => "missing",
            TargetWas::Empty => "empty",
            TargetWas::NonEmpty => "non-empty",
        },
        "differences_before": o.differences_before,
        "safe": o.safe,
        "pre_restore_snapshot": o.pre_snapshot.map(|p| p.to_hex()),
        "tables": o.found.len(),
        "rows": o.found.iter().map(|t| t.rows).sum::<u64>(),
        "verified": o.verified(),
        "differences": o.differences,
        "left_in_place": o.left_in_place,
        "error": o.failure,
        "rolled_back": o.rolled_back,
        "rollback_error": o.rollback_failure,
        "pre_restore_forgotten": o.forgotten.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
    })
}

fn report(g: &Global, id: &crate::format::id::SnapshotId, o: &RestoreDbOutcome, dry_run: bool) {
    if g.json {
        let mut v = outcome_json(id, o);
        v["dry_run"] = json!(dry_run);
        super::output::json(&v);
        return;
    }
    if g.quiet {
        return;
    }
    let expected_rows: u64 = o.record.tables.iter().map(|t| t.rows).sum();
    match o.target_was {
        TargetWas::Missing => line(format!(
            "target {} does not exist: it will be created",
            o.target_name
        )),
        TargetWas::Empty => line(format!("target {} is empty", o.target_name)),
        TargetWas::NonEmpty => {
            line(format!(
                "target {} holds tables; how it differs from the snapshot:",
                o.target_name
            ));
            if o.differences_before.is_empty() {
                line("  nothing: it already matches");
            }
            for d in &o.differences_before {
                line(format!("  {d}"));
            }
        }
    }
    if dry_run {
        line(format!(
            "dry run: would load {} {} ({} tables, {} rows){}",
            o.record.engine,
            o.record.name,
            o.record.tables.len(),
            expected_rows,
            if o.safe {
                ", after a pre-restore snapshot of the target"
            } else {
                ""
            }
        ));
        return;
    }
    if let Some(p) = o.pre_snapshot {
        line(format!(
            "pre-restore snapshot {} saved (tag pre-restore)",
            p.short()
        ));
    }
    for f in &o.forgotten {
        line(format!(
            "forgot older pre-restore snapshot {} (--keep-pre-restore)",
            f.short()
        ));
    }
    for t in &o.left_in_place {
        line(format!("table {t} is not in the snapshot; left in place"));
    }
    if o.verified() {
        line(format!(
            "restored {} {} into {}: {} tables, {} rows, verified against snapshot {}",
            o.record.engine,
            o.record.name,
            o.target_name,
            o.found.len(),
            expected_rows,
            id.short()
        ));
    } else {
        for d in &o.differences {
            line(format!("difference: {d}"));
        }
    }
}

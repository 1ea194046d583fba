//! `find PATTERN [--newest N]`, `find --blob ID`: which snapshots hold a
//! path, which files use a blob.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::ops::find::{self, Query};

use super::output::{self, line};
use super::{usage, FilterArgs, Global};

#[derive(Args)]
pub struct FindArgs {
    /// A glob: a name (`*.conf`), or a path when it holds a '/'
    #[arg(value_name = "PATTERN", required_unless_present = "blob")]
    pattern: Option<String>,
    /// Files that use this blob (a full ID), or folders whose tree it is
    #[arg(long, value_name = "ID", conflicts_with = "pattern")]
    blob: Option<String>,
    /// Look only in the N newest snapshots
    #[arg(long, value_name = "N")]
    newest: Option<usize>,
    /// Match the pattern without regard to case
    #[arg(short = 'i', long)]
    ignore_case: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(g: &Global, a: &FindArgs) -> Result<()> {
    let query = match (&a.pattern, &a.blob) {
        (_, Some(b)) => Query::Blob(
            b.parse()
                .map_err(|_| usage(format!("--blob '{b}' is not a blob ID (64 hex digits)")))?,
        ),
        (Some(p), None) => Query::pattern(p, a.ignore_case).map_err(|e| usage(e.to_string()))?,
        (None, None) => return Err(usage("give a PATTERN or --blob ID")),
    };
    let repo = g.open_indexed()?;
    let f = a.filter.filter();
    let mut snaps: Vec<_> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| f.matches(s))
        .collect();
    snaps.reverse();
    if let Some(n) = a.newest {
        snaps.truncate(n);
    }
    let found = find::find(&repo, &snaps, &query)?;
    if g.json {
        output::json(&json!(found
            .iter()
            .map(|fd| json!({
                "snapshot": fd.snapshot.to_hex(),
                "time": fd.time,
                "hits": fd.hits.len(),
                "matches": fd.hits.iter().map(|(p, n)| json!({
                    "path": p,
                    "type": n.kind,
                    "size": n.size,
                    "mode": n.mode,
                    "mtime": chrono::DateTime::from_timestamp_nanos(n.mtime_ns),
                    "uid": n.uid,
                    "gid": n.gid,
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>()));
        return Ok(());
    }
    for fd in &found {
        line(format!(
            "Found matching entries in snapshot {} from {}",
            fd.snapshot.short(),
            fd.time
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
        ));
        for (p, n) in &fd.hits {
            line(format!(
                "{:>12}  {}  {}",
                output::size(n.size),
                chrono::DateTime::from_timestamp_nanos(n.mtime_ns)
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S"),
                p.display()
            ));
        }
        line(String::new());
    }
    if found.is_empty() && !g.quiet {
        eprintln!("nothing found in {} snapshots", snaps.len());
    }
    Ok(())
}

//! `tag --add/--remove/--set [SNAP...]`: change snapshots' tags.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::ops::tag::{self, TagChange};

use super::events::{emit, Severity};
use super::output::{self, count, line};
use super::{select_snapshots, usage, FilterArgs, Global};

#[derive(Args)]
pub struct TagArgs {
    /// Snapshots to change (IDs, prefixes or "latest"); default: every one
    /// the filters select
    #[arg(value_name = "SNAP")]
    snapshots: Vec<String>,
    /// Add this tag (repeatable; "a,b" adds both)
    #[arg(long, value_name = "TAG")]
    add: Vec<String>,
    /// Remove this tag (repeatable)
    #[arg(long, value_name = "TAG")]
    remove: Vec<String>,
    /// Replace all tags with these (repeatable)
    #[arg(long, value_name = "TAG")]
    set: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

fn split(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|t| t.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

pub fn run(g: &Global, a: &TagArgs) -> Result<()> {
    let change = TagChange {
        add: split(&a.add),
        remove: split(&a.remove),
        set: (!a.set.is_empty()).then(|| split(&a.set)),
    };
    if change.is_empty() {
        return Err(usage("give --add, --remove or --set"));
    }
    if change.set.is_some() && !(change.add.is_empty() && change.remove.is_empty()) {
        return Err(usage(
            "--set replaces all tags: give it alone, not with --add or --remove",
        ));
    }
    let mut repo = g.open()?;
    let chosen = select_snapshots(&repo, &a.snapshots, &a.filter)?;
    let changed = tag::tag(&mut repo, chosen, &change)?;
    emit(
        g,
        "tag.completed",
        Severity::Info,
        None,
        json!({"changed": changed.iter().map(|(o, n)| json!({"old": o.to_hex(), "new": n.to_hex()})).collect::<Vec<_>>()}),
    );
    if g.json {
        output::json(
            &json!({"changed": changed.iter().map(|(o, n)| json!({"old": o.to_hex(), "new": n.to_hex()})).collect::<Vec<_>>()}),
        );
    } else if !g.quiet {
        for (o, n) in &changed {
            line(format!("snapshot {} saved as {}", o.short(), n.short()));
        }
        line(format!(
            "{} changed",
            count(changed.len() as u64, "snapshot")
        ));
    }
    Ok(())
}

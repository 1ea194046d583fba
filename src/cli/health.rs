//! `health`: freshness and integrity summary for monitoring. Every problem is
//! logged on every run, but notifications go out only when the set of
//! problems changes (ok → failing, failing → ok, a new problem), so a
//! monitoring loop does not flood its webhook.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::format::duration::parse_duration;
use crate::format::size::parse_size;
use crate::ops::health::{self, HealthOptions, HealthReport, PROBLEM_KINDS};

use super::events::{self, Severity};
use super::output::{self, line};
use super::{usage, FilterArgs, Finished, Global, EXIT_FAILURE};

#[derive(Args)]
pub struct HealthArgs {
    /// A host+paths group whose latest snapshot is older than this is stale
    #[arg(long, value_name = "DURATION", default_value = "26h")]
    max_age: String,
    /// A verification pass (`check --read-data ...`) must have completed
    /// within this long
    #[arg(long, value_name = "DURATION", default_value = "8d")]
    max_verify_age: String,
    /// Verification passes must have covered at least this share of the
    /// stored data in the last 30 days (e.g. 50%)
    #[arg(long, value_name = "PERCENT")]
    min_coverage: Option<String>,
    /// A drill must have run within this long
    #[arg(long, value_name = "DURATION")]
    max_drill_age: Option<String>,
    /// A group's latest snapshot smaller than this share of the previous one
    /// is a problem (0% turns it off; an empty one after a non-empty one
    /// always is)
    #[arg(long, value_name = "PERCENT", default_value = "50%")]
    min_size_ratio: String,
    /// At least this much free space where a local repository lives (e.g. 10G)
    #[arg(long, value_name = "SIZE")]
    min_free: Option<String>,
    /// Each PostgreSQL cluster archiving WAL (`wal-push`) must have had WAL
    /// reach the repository within this long
    #[arg(long, value_name = "DURATION")]
    max_wal_lag: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

/// `50%`, `50`, `0.5%`: a share between 0 and 1.
fn parse_percent(flag: &str, s: &str) -> Result<f64> {
    s.trim()
        .trim_end_matches('%')
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .map(|p| p / 100.0)
        .ok_or_else(|| usage(format!("{flag} '{s}' is not a percentage like 50%")))
}

fn duration(flag: &str, s: &str) -> Result<std::time::Duration> {
    parse_duration(s).ok_or_else(|| usage(format!("{flag} '{s}' is not a duration like 26h or 8d")))
}

impl HealthArgs {
    fn options(&self) -> Result<HealthOptions> {
        let mut o = HealthOptions::new(duration("--max-age", &self.max_age)?);
        o.max_verify_age = duration("--max-verify-age", &self.max_verify_age)?;
        o.min_coverage = match &self.min_coverage {
            Some(s) => Some(parse_percent("--min-coverage", s)?),
            None => None,
        };
        o.max_drill_age = match &self.max_drill_age {
            Some(s) => Some(duration("--max-drill-age", s)?),
            None => None,
        };
        o.min_size_ratio = parse_percent("--min-size-ratio", &self.min_size_ratio)?;
        o.min_free = match &self.min_free {
            Some(s) => Some(parse_size(s).ok_or_else(|| {
                usage(format!("--min-free '{s}' is not a size like 10G or 500M"))
            })?),
            None => None,
        };
        o.max_wal_lag = match &self.max_wal_lag {
            Some(s) => Some(duration("--max-wal-lag", s)?),
            None => None,
        };
        o.filter = self.filter.filter();
        Ok(o)
    }
}

pub fn run(g: &Global, a: &HealthArgs) -> Result<()> {
    let opts = a.options()?;
    let repo = g.open()?;
    let report = health::health(&repo, &opts, chrono::Utc::now())?;
    if opts.min_free.is_some() && report.free_bytes.is_none() {
        // A bucket has no free space to report: say the check did not run
        // rather than pass it silently.
        eprintln!(
            "warning: --min-free not checked: {} reports no free space (a bucket grows as needed)",
            repo.backend().location()
        );
    }
    set_figures(&report);
    if g.json {
        output::json(&serde_json::to_value(&report)?);
    } else if !g.quiet {
        print(&report);
    }
    for p in &report.problems {
        eprintln!("problem: {}", p.message);
    }
    let changed = remember(g, a, &report);
    for p in &report.problems {
        let severity = match p.kind.as_str() {
            "verification_failed" | "drill_failed" | "size_dropped" | "low_free_space" => {
                Severity::Critical
            }
            _ => Severity::Warning,
        };
        events::emit_notifying(
            g,
            &format!("health.{}", p.kind),
            severity,
            p.snapshot.clone(),
            json!({"message": p.message}),
            changed,
        );
    }
    let figures = json!({"snapshots": report.snapshots, "groups": report.groups.len(),
        "stale_groups": report.groups.iter().filter(|g| g.stale).count(),
        "problems": report.problems.len(),
        "coverage_30d": report.verification.as_ref().map(|v| v.coverage_30d),
        "drill_success_rate": report.drill.as_ref().map(|d| d.success_rate),
        "free_bytes": report.free_bytes});
    if report.healthy {
        // Recovery is news: say so to the notifications once.
        let event = if changed {
            "health.recovered"
        } else {
            "health.ok"
        };
        events::emit_notifying(g, event, Severity::Info, None, figures, changed);
        if !g.json && !g.quiet {
            line("healthy");
        }
        Ok(())
    } else {
        events::emit_notifying(
            g,
            "health.failed",
            Severity::Warning,
            None,
            figures,
            changed,
        );
        Err(Finished(
            EXIT_FAILURE,
            format!(
                "health found {}",
                output::count(report.problems.len() as u64, "problem")
            ),
        )
        .into())
    }
}

/// A metric per problem kind (0 when absent), so an alert rule can name one.
fn set_figures(report: &HealthReport) {
    // One series a host: stale when any of its path groups is.
    let mut stale_hosts: std::collections::BTreeMap<&str, bool> = Default::default();
    for gr in &report.groups {
        *stale_hosts.entry(gr.host.as_str()).or_default() |= gr.stale;
    }
    for (host, stale) in stale_hosts {
        events::figure("cairn_stale", &[("host", host)], stale as u8 as f64);
    }
    for kind in PROBLEM_KINDS {
        let n = report.problems.iter().filter(|p| p.kind == *kind).count();
        events::figure("cairn_health_problems", &[("kind", kind)], n as f64);
    }
    events::figure("cairn_healthy", &[], report.healthy as u8 as f64);
    if let Some(v) = &report.verification {
        events::figure("cairn_verification_coverage_ratio", &[], v.coverage_30d);
        events::figure("cairn_verification_age_seconds", &[], v.age_seconds as f64);
    }
    if let Some(d) = &report.drill {
        events::figure("cairn_drill_success_ratio", &[], d.success_rate);
        events::figure("cairn_drill_age_seconds", &[], d.age_seconds as f64);
    }
    if let Some(free) = report.free_bytes {
        events::figure("cairn_repository_free_bytes", &[], free as f64);
    }
}

fn print(report: &HealthReport) {
    line(format!(
        "repository reachable; {} snapshots in {} groups",
        report.snapshots,
        report.groups.len()
    ));
    for gr in &report.groups {
        line(format!(
            "{} {}:{}: latest {} at {} ({} ago){}",
            if gr.stale {
                "STALE"
            } else if gr.shrunk {
                "SHRUNK"
            } else {
                "ok   "
            },
            gr.host,
            gr.paths.join(","),
            gr.latest_snapshot,
            gr.latest_time.format("%Y-%m-%d %H:%M:%S UTC"),
            health::human_age(gr.age_seconds),
            gr.size
                .map(|s| format!(", {}", output::size(s)))
                .unwrap_or_default()
        ));
    }
    for w in &report.wal {
        line(format!(
            "{} WAL of PostgreSQL cluster {} ({}): newest {} at {} ({} ago)",
            if w.lagging { "LAG  " } else { "ok   " },
            w.system_identifier,
            w.host,
            w.latest_segment.as_deref().unwrap_or("-"),
            w.latest_time.format("%Y-%m-%d %H:%M:%S UTC"),
            health::human_age(w.age_seconds)
        ));
    }
    match &report.verification {
        Some(v) => line(format!(
            "last verification: {} on {} ({} ago): {}, {} packs read, coverage (30 days) {:.1}%",
            v.time.format("%Y-%m-%d %H:%M:%S UTC"),
            v.hostname,
            health::human_age(v.age_seconds),
            v.result,
            v.packs_ok + v.packs_damaged,
            v.coverage_30d * 100.0
        )),
        None => line("last verification: never (run `cairn check --read-data --max-duration 10m`)"),
    }
    match &report.drill {
        Some(d) => line(format!(
            "last drill: {} on {} ({} ago): {}, {} of {} files intact",
            d.time.format("%Y-%m-%d %H:%M:%S UTC"),
            d.hostname,
            health::human_age(d.age_seconds),
            d.result,
            d.files_ok,
            d.files
        )),
        None => line("last drill: never (run `cairn drill`)"),
    }
    if let Some(free) = report.free_bytes {
        line(format!(
            "free space where the repository lives: {}",
            output::size(free)
        ));
    }
}

/// Where the last run's verdict for this repository and these filters is
/// kept: `$XDG_STATE_HOME/cairn/health/<hash>.json`.
fn state_file(g: &Global, a: &HealthArgs) -> Option<PathBuf> {
    let base = events::state_dir()?;
    let mut h = blake3::Hasher::new();
    h.update(g.repo.clone().unwrap_or_default().as_bytes());
    for part in [&a.filter.hosts, &a.filter.tags, &a.filter.paths] {
        h.update(b"\0");
        h.update(part.join("\x1f").as_bytes());
    }
    let name = h.finalize().to_hex()[..16].to_string();
    Some(base.join("health").join(format!("{name}.json")))
}

/// Records this run's problems (kind and subject, not the wording, which
/// changes as ages grow) and says whether they differ from the last run's.
/// With no state to compare against, everything is news.
fn remember(g: &Global, a: &HealthArgs, report: &HealthReport) -> bool {
    let now: BTreeSet<String> = report
        .problems
        .iter()
        .map(|p| format!("{}:{}", p.kind, p.snapshot.clone().unwrap_or_default()))
        .collect();
    let Some(path) = state_file(g, a) else {
        return true;
    };
    let before: Option<BTreeSet<String>> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let changed = before.as_ref() != Some(&now);
    if changed {
        if let Err(e) = events::write_state(&path, &serde_json::to_vec(&now).unwrap_or_default()) {
            eprintln!(
                "warning: cannot record the health state in {}: {e:#}",
                path.display()
            );
        }
    }
    // A first run that is healthy has nothing to announce.
    changed && !(before.is_none() && now.is_empty())
}

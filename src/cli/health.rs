//! `health`: freshness and integrity summary for monitoring.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use cairn::ops::health;

use super::events::{self, emit, Severity};
use super::output::{self, line};
use super::{usage, Finished, Global, EXIT_FAILURE};
use cairn::format::duration::parse_duration;

#[derive(Args)]
pub struct HealthArgs {
    /// A host+paths group whose latest snapshot is older than this is stale
    #[arg(long, value_name = "DURATION", default_value = "26h")]
    max_age: String,
}

pub fn run(g: &Global, a: &HealthArgs) -> Result<()> {
    let max_age = parse_duration(&a.max_age).ok_or_else(|| {
        usage(format!(
            "--max-age '{}' is not a duration like 26h or 2d",
            a.max_age
        ))
    })?;
    let repo = g.open()?;
    let report = health::health(&repo, max_age, chrono::Utc::now())?;
    // One series a host: stale when any of its path groups is.
    let mut stale_hosts: std::collections::BTreeMap<&str, bool> = Default::default();
    for gr in &report.groups {
        *stale_hosts.entry(gr.host.as_str()).or_default() |= gr.stale;
    }
    for (host, stale) in stale_hosts {
        events::figure("cairn_stale", &[("host", host)], stale as u8 as f64);
    }
    if let Some(v) = &report.verification {
        events::figure("cairn_verification_coverage_ratio", &[], v.coverage_30d);
    }
    if let Some(d) = &report.drill {
        events::figure("cairn_drill_success_ratio", &[], d.success_rate);
    }
    if g.json {
        output::json(&serde_json::to_value(&report)?);
    } else if !g.quiet {
        line(format!(
            "repository reachable; {} snapshots in {} groups",
            report.snapshots,
            report.groups.len()
        ));
        for gr in &report.groups {
            line(format!(
                "{} {}:{}: latest {} at {} ({} ago){}",
                if gr.stale { "STALE" } else { "ok   " },
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
        match &report.verification {
            Some(v) => line(format!(
                "last verification: {} on {}: {}, {} packs read, coverage (30 days) {:.1}%",
                v.time.format("%Y-%m-%d %H:%M:%S UTC"),
                v.hostname,
                v.result,
                v.packs_ok + v.packs_damaged,
                v.coverage_30d * 100.0
            )),
            None => {
                line("last verification: never (run `cairn check --read-data --max-duration 10m`)")
            }
        }
        match &report.drill {
            Some(d) => line(format!(
                "last drill: {} on {}: {}, {} of {} files intact",
                d.time.format("%Y-%m-%d %H:%M:%S UTC"),
                d.hostname,
                d.result,
                d.files_ok,
                d.files
            )),
            None => line("last drill: never (run `cairn drill`)"),
        }
    }
    for p in &report.problems {
        eprintln!("problem: {}", p.message);
        let severity = match p.kind.as_str() {
            "verification_failed" | "drill_failed" => Severity::Critical,
            _ => Severity::Warning,
        };
        emit(
            g,
            &format!("health.{}", p.kind),
            severity,
            p.snapshot.clone(),
            json!({"message": p.message}),
        );
    }
    let figures = json!({"snapshots": report.snapshots, "groups": report.groups.len(),
        "stale_groups": report.groups.iter().filter(|g| g.stale).count(),
        "problems": report.problems.len(),
        "coverage_30d": report.verification.as_ref().map(|v| v.coverage_30d),
        "drill_success_rate": report.drill.as_ref().map(|d| d.success_rate)});
    if report.healthy {
        emit(g, "health.ok", Severity::Info, None, figures);
        if !g.json && !g.quiet {
            line("healthy");
        }
        Ok(())
    } else {
        emit(g, "health.failed", Severity::Warning, None, figures);
        Err(Finished(
            EXIT_FAILURE,
            format!("health found {} problems", report.problems.len()),
        )
        .into())
    }
}

//! `cairn config check`: validate the config file, list jobs and next runs.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use cairn::ops::schedule::config::Config;
use cairn::source::Source;

use super::Global;

#[derive(Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the file; errors name line and column (exit 2)
    Check,
}

/// One line (or JSON object) per job.
pub fn jobs_json(c: &Config) -> serde_json::Value {
    let now = chrono::Utc::now();
    let jobs: Vec<_> = c
        .jobs
        .values()
        .map(|j| {
            json!({
                "job": j.name,
                "repository": j.repository,
                "source": match &j.source {
                    Source::Paths(paths) => json!({"paths": paths}),
                    Source::Stdin { name } | Source::Command { name, .. } => json!({"dump": name}),
                },
                "schedule": j.schedule.as_ref().map(|s| s.expr.clone()),
                "timezone": j.schedule.as_ref().map(|s| s.zone()),
                "next_run": j.schedule.as_ref().and_then(|s| s.next_after(now)).map(|t| t.to_rfc3339()),
                "copy_to": j.copy_to,
            })
        })
        .collect();
    json!({"config": c.path, "jobs": jobs})
}

pub fn print_jobs(c: &Config) {
    let now = chrono::Utc::now();
    for j in c.jobs.values() {
        let when = match &j.schedule {
            Some(s) => format!(
                "{} ({}), next {}",
                s.expr,
                s.zone(),
                s.next_after(now)
                    .map(|t| t
                        .with_timezone(&chrono::Local)
                        .format("%Y-%m-%d %H:%M:%S %Z")
                        .to_string())
                    .unwrap_or_else(|| "never".into())
            ),
            None => "no schedule (run by hand)".into(),
        };
        println!("{}  -> {}  {when}", j.name, j.repository);
    }
}

pub fn run(g: &Global, a: &ConfigArgs) -> Result<()> {
    match a.command {
        ConfigCommand::Check => {
            let c = super::run::load(g)?;
            if g.json {
                println!("{}", jobs_json(&c));
            } else {
                println!(
                    "{}: {} repositories, {} jobs: OK",
                    c.path.display(),
                    c.repositories.len(),
                    c.jobs.len()
                );
                print_jobs(&c);
            }
            Ok(())
        }
    }
}

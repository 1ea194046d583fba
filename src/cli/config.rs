//! `cairn config check|show`: validate the config file, list jobs and next
//! runs, or show everything it resolves to.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::ops::schedule::config::{Config, Job, OptionValue, PasswordSource, Repo, VerifyLimit};
use crate::ops::schedule::runner::JobState;
use crate::source::Source;

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
    /// Everything the file resolves to: repositories, jobs with their sources,
    /// schedules, retention, verification, drills, notifications and last runs
    /// (literal secrets shown as "<redacted>"); --json for one document
    Show,
}

/// What a job's last run left: its time and exit code.
fn last_run(j: &Job) -> serde_json::Value {
    let st = JobState::load(&j.name);
    json!({"last_run": st.last_run.map(|t| t.to_rfc3339()), "last_exit_code": st.last_exit_code})
}

/// One line (or JSON object) per job.
pub fn jobs_json(c: &Config) -> serde_json::Value {
    let now = chrono::Utc::now();
    let jobs: Vec<_> = c
        .jobs
        .values()
        .map(|j| {
            let last = last_run(j);
            json!({
                "job": j.name,
                "repository": j.repository,
                "source": match &j.source {
                    Source::Paths(paths) => json!({"paths": paths}),
                    Source::Stdin { name } | Source::Command { name, .. } => json!({"dump": name}),
                    Source::Databases { databases, paths } => json!({"databases": database_names(databases), "paths": paths}),
                    Source::WalFiles { .. } => json!(null),
                },
                "schedule": j.schedule.as_ref().map(|s| s.expr.clone()),
                "timezone": j.schedule.as_ref().map(|s| s.zone()),
                "next_run": j.schedule.as_ref().and_then(|s| s.next_after(now)).map(|t| t.to_rfc3339()),
                "copy_to": j.copy_to,
                "last_run": last["last_run"],
                "last_exit_code": last["last_exit_code"],
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
        let st = JobState::load(&j.name);
        let last = match (st.last_run, st.last_exit_code) {
            (Some(t), code) => format!(
                ", last run {} (exit {})",
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S %Z"),
                code.map_or("?".to_string(), |c| c.to_string())
            ),
            (None, _) => ", never run".into(),
        };
        println!("{}  -> {}  {when}{last}", j.name, j.repository);
    }
}

/// Storage option values whose key suggests a secret are not shown.
fn option_json(key: &str, v: &OptionValue) -> serde_json::Value {
    let secret = ["secret", "key", "token", "password", "credential", "sas"]
        .iter()
        .any(|w| key.to_ascii_lowercase().contains(w));
    match v {
        OptionValue::Literal(_) if secret => json!("<redacted>"),
        OptionValue::Literal(s) => json!(s),
        OptionValue::Env(n) => json!(format!("env:{n}")),
        OptionValue::File(p) => json!(format!("file:{}", p.display())),
    }
}

fn repo_json(r: &Repo) -> serde_json::Value {
    let options: serde_json::Map<String, serde_json::Value> = r
        .options
        .iter()
        .map(|(k, v)| (k.clone(), option_json(k, v)))
        .collect();
    json!({
        "name": r.name,
        "url": r.url,
        "options": options,
        "password": match &r.password {
            PasswordSource::File(p) => json!({"file": p}),
            PasswordSource::Command(c) => json!({"command": c}),
            PasswordSource::Inherit => json!("environment"),
        },
    })
}

/// One job, everything resolved.
fn job_json(j: &Job) -> serde_json::Value {
    let now = chrono::Utc::now();
    let retention_json = |r: &crate::ops::schedule::config::Retention| {
        let p = &r.policy;
        json!({
            "keep_last": p.last, "keep_hourly": p.hourly, "keep_daily": p.daily,
            "keep_weekly": p.weekly, "keep_monthly": p.monthly, "keep_yearly": p.yearly,
            "keep_within_seconds": p.within.map(|d| d.num_seconds()),
            "keep_tag": p.tags, "keep_at_most": p.at_most, "prune": r.prune,
        })
    };
    let retention = j.retention.as_ref().map(retention_json);
    let copy_retention = j.copy_retention.as_ref().map(retention_json);
    let verify = j.verify.as_ref().map(|v| {
        let mut o = match &v.limit {
            VerifyLimit::Pass {
                max_duration,
                max_bytes,
            } => json!({"max_duration": max_duration, "max_bytes": max_bytes}),
            VerifyLimit::Share(s) => json!({"share": s}),
        };
        o["every_seconds"] = json!(v.every.map(|d| d.as_secs()));
        o
    });
    let drill = j
        .drill
        .as_ref()
        .map(|d| json!({"every_seconds": d.every.map(|e| e.as_secs()), "files": d.files}));
    let st = JobState::load(&j.name);
    json!({
        "job": j.name,
        "repository": j.repository,
        "source": match &j.source {
            Source::Paths(paths) if paths.is_empty() => json!(null),
            Source::Paths(paths) => json!({"paths": paths}),
            Source::Stdin { name } => json!({"stdin": name}),
            Source::Command { name, argv } => json!({"dump": name, "command": argv}),
            Source::Databases { databases, paths } => json!({"databases": database_names(databases), "paths": paths}),
            Source::WalFiles { .. } => json!(null),
        },
        "exclude": j.exclude,
        "tags": j.tags,
        "host": j.host,
        "schedule": j.schedule.as_ref().map(|s| s.expr.clone()),
        "timezone": j.schedule.as_ref().map(|s| s.zone()),
        "next_run": j.schedule.as_ref().and_then(|s| s.next_after(now)).map(|t| t.to_rfc3339()),
        "randomized_delay_seconds": j.randomized_delay.as_secs(),
        "retries": j.retries,
        "retry_delay_seconds": j.retry_delay.as_secs(),
        "tag_commands": j.tag_commands.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "retention": retention,
        "copy_retention": copy_retention,
        "verify": verify,
        "drill": drill,
        "notify": {"urls": j.notify.urls, "ping": j.notify.ping, "command": j.notify.command,
                   "all": j.notify.all},
        "before": j.before,
        "after": j.after,
        "copy_to": j.copy_to,
        "last_run": st.last_run.map(|t| t.to_rfc3339()),
        "last_exit_code": st.last_exit_code,
        "last_verify": st.last_verify.map(|t| t.to_rfc3339()),
        "last_drill": st.last_drill.map(|t| t.to_rfc3339()),
    })
}

/// The whole resolved config.
pub fn config_json(c: &Config) -> serde_json::Value {
    json!({
        "config": c.path,
        "repositories": c.repositories.values().map(repo_json).collect::<Vec<_>>(),
        "jobs": c.jobs.values().map(job_json).collect::<Vec<_>>(),
    })
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
        ConfigCommand::Show => {
            let c = super::run::load(g)?;
            let doc = config_json(&c);
            if g.json {
                println!("{doc}");
            } else {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            }
            Ok(())
        }
    }
}

/// Database sources as a config shows them (no passwords).
fn database_names(databases: &[crate::database::DatabaseSource]) -> Vec<serde_json::Value> {
    databases
        .iter()
        .map(|d| json!({"engine": d.location.engine().name(), "location": d.location.display(), "all": d.all}))
        .collect()
}

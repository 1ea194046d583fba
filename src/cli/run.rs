//! `cairn run JOB`: one job of the config file, now. Also the config loading
//! and job events shared with `config` and `schedule`.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::ops::schedule::config::{self, Config};
use crate::ops::schedule::runner::{self, RunError, RunReport, Step, StepOutcome};

use super::events::{emit, Severity};
use super::{Finished, Global, EXIT_LOCKED, EXIT_USAGE};

#[derive(Args)]
pub struct RunArgs {
    /// The job to run (a [jobs.NAME] table of the config file)
    #[arg(value_name = "JOB")]
    job: String,
}

/// `--config`, else `$XDG_CONFIG_HOME/cairn/cairn.toml` (default
/// `~/.config`) when it exists, else `/etc/cairn/cairn.toml`.
pub fn config_path(g: &Global) -> PathBuf {
    if let Some(p) = &g.config {
        return p.clone();
    }
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("cairn").join("cairn.toml"));
    match user {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("/etc/cairn/cairn.toml"),
    }
}

/// The validated config; each mistake is printed as its own `error:` line
/// (FILE:LINE:COLUMN: ...), then exit 2.
pub fn load(g: &Global) -> Result<Config> {
    let path = config_path(g);
    if g.config.is_none() && !path.exists() {
        return Err(super::usage(format!(
            "no config file: give --config FILE, or create ~/.config/cairn/cairn.toml or {}",
            path.display()
        )));
    }
    match config::load(&path) {
        Ok(c) => {
            refuse_if_others_may_write(&c)?;
            Ok(c)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            Err(Finished(EXIT_USAGE, String::new()).into())
        }
    }
}

/// Whether a job or repository of the file runs a command (hooks, dump
/// commands, notification or password commands).
fn runs_commands(c: &Config) -> bool {
    use crate::ops::schedule::config::PasswordSource;
    c.jobs.values().any(|j| {
        j.before.is_some()
            || j.after.is_some()
            || j.notify.command.is_some()
            || matches!(j.source, crate::source::Source::Command { .. })
    }) || c
        .repositories
        .values()
        .any(|r| matches!(r.password, PasswordSource::Command(_)))
}

/// Run as root, a config file that runs commands is code run as root: it is
/// refused when another user could change it (the file, or the folder it is
/// in, writable by group or others, or owned by another user), as sudo and
/// cron refuse such files.
fn refuse_if_others_may_write(c: &Config) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() || !runs_commands(c) {
        return Ok(());
    }
    let file = c.path.clone();
    let dir = std::path::absolute(&file)
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()));
    for (what, path) in [
        ("config file", Some(file)),
        ("folder of the config file", dir),
    ] {
        let Some(path) = path else { continue };
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        let sticky_dir = m.is_dir() && m.mode() & 0o1000 != 0;
        let writable = m.mode() & 0o022 != 0 && !(sticky_dir && what != "config file");
        if writable || m.uid() != 0 {
            return Err(super::usage(format!(
                "{what} {} may be changed by users other than root (mode {:o}, owner uid {}), and the config runs commands as root; chown root and chmod go-w it",
                path.display(),
                m.mode() & 0o7777,
                m.uid()
            )));
        }
    }
    Ok(())
}

/// Global options every step inherits from `cairn run` itself: where events
/// and metrics go, notifications (pings stay with the run: one start and one
/// result per job, not per step), the cache and bandwidth limits, verbosity.
pub fn common_args(g: &Global) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    let mut flag = |name: &str, value: Option<OsString>| {
        if let Some(value) = value {
            v.push(name.into());
            v.push(value);
        }
    };
    flag("--event-log", g.event_log.clone().map(Into::into));
    flag("--metrics-file", g.metrics_file.clone().map(Into::into));
    flag("--cache-dir", g.cache_dir.clone().map(Into::into));
    flag(
        "--limit-upload",
        g.limit_upload.map(|n| n.to_string().into()),
    );
    flag(
        "--limit-download",
        g.limit_download.map(|n| n.to_string().into()),
    );
    for url in &g.notify {
        flag("--notify", Some(url.into()));
    }
    for cmd in &g.notify_command {
        flag("--notify-command", Some(cmd.into()));
    }
    if g.notify_all {
        v.push("--notify-all".into());
    }
    if g.no_cache {
        v.push("--no-cache".into());
    }
    if g.quiet {
        v.push("-q".into());
    }
    for _ in 0..g.verbose {
        v.push("-v".into());
    }
    v
}

/// Events of a job carry its repository's URL.
/// and notify as the job says (its webhooks, command and ping), so that a
/// failing `before` hook or a skipped run reaches someone.
fn job_global(g: &Global, c: &Config, job: &str) -> Global {
    let mut g = g.clone();
    if let Some(j) = c.job(job) {
        g.repo = Some(c.repo(&j.repository).url.clone());
        g.notify.extend(j.notify.urls.iter().cloned());
        g.notify_command.extend(j.notify.command.iter().cloned());
        g.notify_all |= j.notify.all;
        // Pings given to `cairn run` itself are sent by the command's
        // wrapper; the job's own ping is sent per run here.
        g.notify_ping = j.notify.ping.iter().cloned().collect();
    }
    g
}

/// Logs one step (stderr and event log).
pub fn step_seen(g: &Global, job: &str, _step: &Step, o: &StepOutcome) {
    if !g.json && !g.quiet {
        match (&o.exit_code, &o.skipped) {
            (Some(c), _) => eprintln!(
                "cairn run {job}: {} exited {c} ({:.1} s)",
                o.step, o.duration
            ),
            (None, Some(why)) => eprintln!("cairn run {job}: {} skipped: {why}", o.step),
            _ => {}
        }
    }
    let severity = match o.exit_code {
        Some(0) | None => Severity::Info,
        Some(3) => Severity::Warning,
        Some(_) => Severity::Critical,
    };
    // Logged, not notified: the run's summary (run.failed) is the alert.
    super::events::emit_notifying(
        g,
        "run.step",
        severity,
        None,
        json!({
            "job": job,
            "step": o.step,
            "exit_code": o.exit_code,
            "duration": o.duration,
            "skipped": o.skipped,
        }),
        false,
    );
}

/// The summary event of a run.
pub fn report_event(g: &Global, r: &RunReport) {
    let (event, severity) = match r.exit_code {
        0 => ("run.completed", Severity::Info),
        3 => ("run.completed", Severity::Warning),
        _ => ("run.failed", Severity::Critical),
    };
    emit(
        g,
        event,
        severity,
        None,
        serde_json::to_value(r).unwrap_or_default(),
    );
}

/// Runs one job with events; `Err` only when it could not start.
pub fn run_logged(g: &Global, c: &Config, job: &str) -> std::result::Result<RunReport, RunError> {
    let exe = std::env::current_exe().map_err(RunError::Io)?;
    let jg = job_global(g, c, job);
    let started = std::time::Instant::now();
    super::events::set_job(Some((job.to_string(), jg.repo.clone().unwrap_or_default())));
    super::notify::ping(&jg, super::notify::Ping::Start, None);
    let mut children = super::process::ChildProcesses;
    let result = runner::run_job(c, job, &exe, &common_args(g), &mut children, &mut |s, o| {
        step_seen(&jg, job, s, o)
    });
    match &result {
        Ok(report) => {
            for w in &report.warnings {
                eprintln!("warning: job {job}: {w}");
            }
            if let Some(e) = &report.error {
                eprintln!("error: job {job}: {e}");
            }
            report_event(&jg, report);
        }
        Err(e @ RunError::Locked(_)) => emit(
            &jg,
            "run.skipped",
            Severity::Warning,
            None,
            json!({"job": job, "reason": e.to_string()}),
        ),
        Err(e) => emit(
            &jg,
            "run.failed",
            Severity::Critical,
            None,
            json!({"job": job, "error": e.to_string()}),
        ),
    }
    let ok = matches!(&result, Ok(r) if r.exit_code == 0);
    let stage = if ok {
        super::notify::Ping::Success
    } else {
        super::notify::Ping::Fail
    };
    super::notify::ping(&jg, stage, super::events::last_event().as_ref());
    // The job's own series (command "run", its job and repository labels),
    // written per job so that a scheduler running many jobs keeps each.
    if let Some(path) = &g.metrics_file {
        let code = match &result {
            Ok(r) => r.exit_code,
            Err(RunError::Locked(_)) => super::EXIT_LOCKED,
            Err(_) => super::EXIT_FAILURE,
        };
        if let Err(e) = super::metrics::write(path, &jg, "run", code, started.elapsed()) {
            eprintln!("warning: cannot write metrics to {}: {e:#}", path.display());
        }
        RUN_METRICS_WRITTEN.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    super::events::set_job(None);
    result
}

/// Set once `run_logged` wrote the `run` series itself.
pub static RUN_METRICS_WRITTEN: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

pub fn run(g: &Global, a: &RunArgs) -> Result<()> {
    let c = load(g)?;
    if c.job(&a.job).is_none() {
        return Err(super::usage(format!(
            "no job '{}' in {} (jobs: {})",
            a.job,
            c.path.display(),
            c.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    super::process::install_signal_handlers();
    if g.json {
        super::process::child_stdout_to_stderr();
    }
    let report = match run_logged(g, &c, &a.job) {
        Ok(r) => r,
        Err(e @ RunError::Locked(_)) => {
            return Err(Finished(EXIT_LOCKED, format!("job {}: {e}", a.job)).into())
        }
        Err(e) => return Err(anyhow::anyhow!("job {}: {e}", a.job)),
    };
    if g.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if !g.quiet {
        println!(
            "job {}: exit {} after {:.1} s",
            report.job, report.exit_code, report.duration
        );
    }
    match report.exit_code {
        0 => Ok(()),
        code => Err(Finished(code, String::new()).into()),
    }
}

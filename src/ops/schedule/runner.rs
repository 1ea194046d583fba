//! `cairn run JOB`: the job's steps as child processes of this binary, in
//! order, with the per-job lock and state file.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::{Config, Job, OptionValue, PasswordSource, Repo, Retention, VerifyLimit};
use crate::ops::forget::Policy;
use crate::source::Source;

/// Where per-job state and locks live: `$XDG_STATE_HOME/cairn/jobs`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("cairn")
        .join("jobs")
}

/// What `cairn run` remembers of a job between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobState {
    pub last_run: Option<DateTime<Utc>>,
    pub last_exit_code: Option<i32>,
    pub last_verify: Option<DateTime<Utc>>,
    pub last_drill: Option<DateTime<Utc>>,
}

impl JobState {
    pub fn path(job: &str) -> PathBuf {
        state_dir().join(format!("{job}.json"))
    }

    /// The saved state, or none (a missing or unreadable file: never ran).
    pub fn load(job: &str) -> JobState {
        std::fs::read(Self::path(job))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, job: &str) -> std::io::Result<()> {
        let path = Self::path(job);
        std::fs::create_dir_all(state_dir())?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)
    }
}

/// The per-job lock (`JOB.lock`, flock): held while a run is in progress.
pub struct JobLock {
    _file: File,
    pub path: PathBuf,
}

impl JobLock {
    pub fn path(job: &str) -> PathBuf {
        state_dir().join(format!("{job}.lock"))
    }

    /// The lock, or None when another process holds it.
    pub fn try_acquire(job: &str) -> std::io::Result<Option<JobLock>> {
        std::fs::create_dir_all(state_dir())?;
        let path = Self::path(job);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(JobLock { _file: file, path })),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Before,
    Backup,
    Forget,
    Verify,
    Drill,
    Copy,
    After,
}

/// One step: a program, its arguments and environment changes.
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: StepKind,
    /// `backup`, `forget`, `verify`, `copy:s3`, ...
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
    pub env_remove: Vec<String>,
    /// Set when the step is planned but not due (verification and drills).
    pub not_due: bool,
}

impl Step {
    /// The command line, for logs (secrets never are in it).
    pub fn display(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// What happened to one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    pub step: String,
    /// None: not run (not due, or skipped after an earlier failure).
    pub exit_code: Option<i32>,
    pub duration: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// A finished run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub job: String,
    pub exit_code: i32,
    pub duration: f64,
    pub steps: Vec<StepOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Problems that did not change the outcome (for the caller to print).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Runs made (more than 1 after retries); `steps` are the last one's.
    pub attempts: u32,
}

/// Whether a pass done at `last` is due again at `now`. A pass due within
/// 1/24 of its interval counts as due, so that a weekly verification on a
/// daily job does not slip by a day because the last one ended a bit later.
pub fn due(
    every: Option<std::time::Duration>,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    match (every, last) {
        (None, _) | (_, None) => true,
        (Some(e), Some(l)) => {
            let e = chrono::Duration::from_std(e).unwrap_or(chrono::Duration::MAX);
            now - l >= e - e / 24
        }
    }
}

/// A repository's global options for a child: `-r`, literal `-o`, the
/// password source; resolved secret options go into `CAIRN_OPTIONS`.
struct RepoArgs {
    args: Vec<OsString>,
    env: Vec<(String, OsString)>,
}

fn resolve(v: &OptionValue, key: &str) -> Result<String, String> {
    match v {
        OptionValue::Literal(s) => Ok(s.clone()),
        OptionValue::Env(var) => std::env::var(var)
            .map_err(|_| format!("option {key}: environment variable {var} is not set")),
        OptionValue::File(p) => std::fs::read_to_string(p)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("option {key}: cannot read {}: {e}", p.display())),
    }
}

/// Options for `--to-option`-style use: literals as arguments, secrets as
/// `KEY=VALUE` lines for an environment variable.
fn split_options(r: &Repo) -> Result<(Vec<String>, Vec<String>), String> {
    let mut literal = Vec::new();
    let mut secret = Vec::new();
    for (k, v) in &r.options {
        let val = resolve(v, k)?;
        match v {
            OptionValue::Literal(_) => literal.push(format!("{k}={val}")),
            _ => secret.push(format!("{k}={val}")),
        }
    }
    Ok((literal, secret))
}

fn repo_args(r: &Repo, common: &[OsString]) -> Result<RepoArgs, String> {
    let mut args: Vec<OsString> = vec!["-r".into(), r.url.clone().into()];
    let (literal, secret) = split_options(r)?;
    for o in literal {
        args.push("-o".into());
        args.push(o.into());
    }
    match &r.password {
        PasswordSource::File(f) => {
            args.push("--password-file".into());
            args.push(f.clone().into());
        }
        PasswordSource::Command(c) => {
            args.push("--password-command".into());
            args.push(c.into());
        }
        PasswordSource::Inherit => {}
    }
    args.extend(common.iter().cloned());
    let mut env = Vec::new();
    if !secret.is_empty() {
        env.push(("CAIRN_OPTIONS".to_string(), secret.join("\n").into()));
    }
    Ok(RepoArgs { args, env })
}

/// `forget` (and prune) on a copy destination, with the job's copy retention:
/// the destination's own repository arguments, so it needs no `--to`.
fn destination_forget(
    exe: &Path,
    dest: &Repo,
    common: &[OsString],
    r: &Retention,
    filter: &[OsString],
    name: &str,
) -> Result<Step, String> {
    let ra = repo_args(dest, common)?;
    let mut args = ra.args.clone();
    args.push("forget".into());
    args.extend(policy_args(&r.policy));
    if r.prune {
        args.push("--prune".into());
    }
    args.extend(filter.iter().cloned());
    let mut env_remove: Vec<String> = vec!["CAIRN_REPO".into(), "CAIRN_OPTIONS".into()];
    if dest.password != PasswordSource::Inherit {
        env_remove.extend(
            [
                "CAIRN_PASSWORD",
                "CAIRN_PASSWORD_FILE",
                "CAIRN_PASSWORD_COMMAND",
            ]
            .map(String::from),
        );
    }
    Ok(Step {
        kind: StepKind::Forget,
        name: format!("forget:{name}"),
        program: exe.to_path_buf(),
        args,
        env: ra.env,
        env_remove,
        not_due: false,
    })
}

/// The job's `tag-commands`, run now: `name=output` each. A command that
/// fails, prints nothing or prints a ',' fails the plan (a tag that silently
/// went missing would break the retention or search that relies on it).
fn computed_tags(job: &Job) -> Result<Vec<String>, String> {
    let mut tags = Vec::new();
    for (name, cmd) in &job.tag_commands {
        let mut sh = Command::new("sh");
        crate::source::remove_secret_env(&mut sh);
        let out = sh
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("tag command '{name}' did not start: {e}"))?;
        let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || value.is_empty() || value.contains(',') || value.contains('\n')
        {
            return Err(format!(
                "tag command '{name}' gave no usable tag ({}, output {value:?})",
                out.status
            ));
        }
        tags.push(format!("{name}={value}"));
    }
    Ok(tags)
}

/// The tag every snapshot of a job carries, so that its retention and copies
/// touch its own snapshots only.
pub fn job_tag(job: &str) -> String {
    format!("job={job}")
}

/// Plans a job's steps. `common` are global options for every child (e.g.
/// `--event-log`). Options read from `env:`/`file:` are resolved here.
pub fn plan(
    config: &Config,
    job: &Job,
    exe: &Path,
    common: &[OsString],
    state: &JobState,
    now: DateTime<Utc>,
) -> Result<Vec<Step>, String> {
    let repo = config.repo(&job.repository);
    let mut common = common.to_vec();
    for u in &job.notify.urls {
        common.push("--notify".into());
        common.push(u.into());
    }
    // The job's ping is the run's (one start and one result per job, sent
    // by `cairn run`), not each step's.
    if let Some(c) = &job.notify.command {
        common.push("--notify-command".into());
        common.push(c.into());
    }
    if job.notify.all {
        common.push("--notify-all".into());
    }
    let ra = repo_args(repo, &common)?;
    // The child takes its repository, options and password from its
    // arguments, never from the environment of `cairn run`, unless the
    // repository names no password source.
    let mut env_remove: Vec<String> = vec![
        "CAIRN_REPO".into(),
        "CAIRN_OPTIONS".into(),
        "CAIRN_TO_OPTIONS".into(),
    ];
    if repo.password != PasswordSource::Inherit {
        env_remove.extend(
            [
                "CAIRN_PASSWORD",
                "CAIRN_PASSWORD_FILE",
                "CAIRN_PASSWORD_COMMAND",
            ]
            .map(String::from),
        );
    }
    let cairn = |kind: StepKind, name: &str, extra: Vec<OsString>| Step {
        kind,
        name: name.to_string(),
        program: exe.to_path_buf(),
        args: ra.args.iter().cloned().chain(extra).collect(),
        // The job's name labels the step's events and metrics.
        env: ra
            .env
            .iter()
            .cloned()
            .chain([("CAIRN_JOB".to_string(), job.name.clone().into())])
            .collect(),
        env_remove: env_remove.clone(),
        not_due: false,
    };
    let hook = |kind: StepKind, name: &str, cmd: &str| Step {
        kind,
        name: name.to_string(),
        program: "sh".into(),
        args: vec!["-c".into(), cmd.into()],
        env: vec![
            ("CAIRN_JOB".into(), job.name.clone().into()),
            ("CAIRN_JOB_REPOSITORY".into(), repo.url.clone().into()),
        ],
        env_remove: std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| crate::source::is_secret_env(k))
            .collect(),
        not_due: false,
    };
    let mut steps = Vec::new();
    if let Some(b) = &job.before {
        steps.push(hook(StepKind::Before, "before", b));
    }

    // A job that backs up touches its own snapshots only (its tag); a
    // maintenance job (no source) the repository's, or one host's.
    let backs_up = !matches!(&job.source, Source::Paths(p) if p.is_empty());
    let mut filter: Vec<OsString> = Vec::new();
    if backs_up {
        filter.extend(["--tag".into(), job_tag(&job.name).into()]);
    }
    if let Some(h) = &job.host {
        filter.push("--host".into());
        filter.push(h.into());
    }
    let mut backup: Vec<OsString> = vec!["backup".into()];
    for t in job.tags.iter().cloned().chain([job_tag(&job.name)]) {
        backup.push("--tag".into());
        backup.push(t.into());
    }
    if backs_up {
        for t in computed_tags(job)? {
            backup.push("--tag".into());
            backup.push(t.into());
        }
    }
    if let Some(h) = &job.host {
        backup.push("--host".into());
        backup.push(h.into());
    }
    backup.extend(source_args(&job.source, &job.exclude));
    if backs_up {
        let mut step = cairn(StepKind::Backup, "backup", backup);
        step.env.extend(database_passwords(job)?);
        steps.push(step);
    }

    if let Some(r) = &job.retention {
        let mut a: Vec<OsString> = vec!["forget".into()];
        a.extend(policy_args(&r.policy));
        if r.prune {
            a.push("--prune".into());
        }
        a.extend(filter.iter().cloned());
        steps.push(cairn(StepKind::Forget, "forget", a));
    }

    if let Some(v) = &job.verify {
        let mut a: Vec<OsString> = vec!["check".into()];
        match &v.limit {
            VerifyLimit::Share(s) => {
                a.push("--read-data-subset".into());
                a.push(s.into());
            }
            VerifyLimit::Pass {
                max_duration,
                max_bytes,
            } => {
                a.push("--read-data".into());
                if let Some(d) = max_duration {
                    a.push("--max-duration".into());
                    a.push(d.into());
                }
                if let Some(b) = max_bytes {
                    a.push("--max-bytes".into());
                    a.push(b.into());
                }
            }
        }
        let mut s = cairn(StepKind::Verify, "verify", a);
        s.not_due = !due(v.every, state.last_verify, now);
        steps.push(s);
    }

    if let Some(d) = &job.drill {
        let mut a: Vec<OsString> = vec!["drill".into()];
        if let Some(n) = d.files {
            a.push("--files".into());
            a.push(n.to_string().into());
        }
        a.extend(filter.iter().cloned());
        let mut s = cairn(StepKind::Drill, "drill", a);
        s.not_due = !due(d.every, state.last_drill, now);
        steps.push(s);
    }

    for c in &job.copy_to {
        let dest = config.repo(c);
        let mut a: Vec<OsString> = vec!["copy".into(), "--to".into(), dest.url.clone().into()];
        let (literal, secret) = split_options(dest)?;
        for o in literal {
            a.push("--to-option".into());
            a.push(o.into());
        }
        let mut s = cairn(StepKind::Copy, &format!("copy:{c}"), Vec::new());
        match &dest.password {
            PasswordSource::File(f) => {
                a.push("--to-password-file".into());
                a.push(f.clone().into());
            }
            PasswordSource::Command(cmd) => {
                // Run by the copy step itself, when it runs: the plan runs
                // nothing.
                a.push("--to-password-command".into());
                a.push(cmd.into());
            }
            PasswordSource::Inherit => {}
        }
        if dest.password != PasswordSource::Inherit {
            s.env_remove.push("CAIRN_TO_PASSWORD".into());
            s.env_remove.push("CAIRN_TO_PASSWORD_FILE".into());
        }
        if !secret.is_empty() {
            s.env
                .push(("CAIRN_TO_OPTIONS".into(), secret.join("\n").into()));
        }
        a.extend(filter.iter().cloned());
        s.args.extend(a);
        // env (set) wins over env_remove: keep the handed-over password.
        let set: Vec<String> = s.env.iter().map(|(k, _)| k.clone()).collect();
        s.env_remove.retain(|k| !set.contains(k));
        steps.push(s);
        if let Some(r) = &job.copy_retention {
            steps.push(destination_forget(exe, dest, &common, r, &filter, c)?);
        }
    }

    if let Some(a) = &job.after {
        steps.push(hook(StepKind::After, "after", a));
    }
    Ok(steps)
}

/// Runs planned steps in order with `runner`, calling `seen` after each:
/// stops at the first failing step, except that verification and the drill
/// still run after a backup that exited 3 (then forget, copies and `after`
/// do not). Hooks that fail count as exit 1. The result is the first
/// failure's code, else 3 if the backup exited 3, else 0.
pub fn execute(
    steps: &[Step],
    runner: &mut dyn StepRunner,
    seen: &mut dyn FnMut(&Step, &StepOutcome),
) -> (i32, Vec<StepOutcome>) {
    let mut outcomes = Vec::new();
    let mut failed: Option<i32> = None;
    let mut partial = false;
    for step in steps {
        let skip = if let Some(code) = failed {
            Some(format!("an earlier step failed (exit {code})"))
        } else if runner.stopped() {
            Some("interrupted".into())
        } else if partial && !matches!(step.kind, StepKind::Verify | StepKind::Drill) {
            Some("the backup could not read some files (exit 3)".into())
        } else if step.not_due {
            Some("not due".into())
        } else {
            None
        };
        let outcome = if let Some(why) = skip {
            StepOutcome {
                step: step.name.clone(),
                exit_code: None,
                duration: 0.0,
                skipped: Some(why),
            }
        } else {
            let t = Instant::now();
            let mut code = runner.run(step);
            if matches!(step.kind, StepKind::Before | StepKind::After) && code != 0 {
                code = 1;
            }
            if code == 3 && step.kind == StepKind::Backup {
                partial = true;
            } else if code != 0 {
                failed = Some(code);
            }
            StepOutcome {
                step: step.name.clone(),
                exit_code: Some(code),
                duration: t.elapsed().as_secs_f64(),
                skipped: None,
            }
        };
        seen(step, &outcome);
        outcomes.push(outcome);
    }
    let code = match failed {
        Some(c) => c,
        None if runner.stopped()
            && outcomes
                .iter()
                .any(|o| o.skipped.as_deref() == Some("interrupted")) =>
        {
            1
        }
        None if partial => 3,
        None => 0,
    };
    (code, outcomes)
}

/// Why a run did not start.
#[derive(Debug)]
pub enum RunError {
    UnknownJob(String),
    /// Another process holds the job's lock.
    Locked(PathBuf),
    Io(std::io::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::UnknownJob(j) => write!(f, "no job '{j}' in the config file"),
            RunError::Locked(p) => write!(
                f,
                "the job is already running (lock {} is held by another process)",
                p.display()
            ),
            RunError::Io(e) => write!(f, "cannot use the job state directory: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// How a job's steps are carried out: the command-line layer runs each as
/// a child process and knows when a signal asked to stop.
pub trait StepRunner {
    /// Runs one step; its exit code.
    fn run(&mut self, step: &Step) -> i32;
    /// Whether the run was asked to stop (the remaining steps are skipped).
    fn stopped(&self) -> bool;
}

/// Runs a job now: takes its lock, plans, executes with `runner`, records
/// its state.
pub fn run_job(
    config: &Config,
    name: &str,
    exe: &Path,
    common: &[OsString],
    runner: &mut dyn StepRunner,
    seen: &mut dyn FnMut(&Step, &StepOutcome),
) -> Result<RunReport, RunError> {
    let job = config
        .job(name)
        .ok_or_else(|| RunError::UnknownJob(name.to_string()))?;
    let lock = JobLock::try_acquire(name)
        .map_err(RunError::Io)?
        .ok_or_else(|| RunError::Locked(JobLock::path(name)))?;
    let started = Instant::now();
    let now = Utc::now();
    let mut state = JobState::load(name);
    let mut warnings = Vec::new();
    let mut attempts = 0;
    let (code, steps, error) = loop {
        attempts += 1;
        let (code, steps, error) = match plan(config, job, exe, common, &state, now) {
            Ok(steps) => {
                let (code, outcomes) = execute(&steps, runner, seen);
                (code, outcomes, None)
            }
            Err(e) => (1, Vec::new(), Some(e)),
        };
        let retry = !matches!(code, 0 | 3) && attempts <= job.retries && !runner.stopped();
        if !retry {
            break (code, steps, error);
        }
        // Exponential backoff: the delay, then twice as long, ...
        let wait = job.retry_delay.saturating_mul(1 << (attempts - 1).min(16));
        warnings.push(format!(
            "attempt {attempts} failed (exit {code}); retrying in {} s",
            wait.as_secs()
        ));
        let until = Instant::now() + wait;
        while Instant::now() < until && !runner.stopped() {
            std::thread::sleep(std::time::Duration::from_millis(100).min(until - Instant::now()));
        }
        if runner.stopped() {
            break (code, steps, error);
        }
    };
    let ran_ok = |kind: &str| {
        steps
            .iter()
            .any(|o| o.step == kind && o.exit_code == Some(0))
    };
    if ran_ok("verify") {
        state.last_verify = Some(now);
    }
    if ran_ok("drill") {
        state.last_drill = Some(now);
    }
    state.last_run = Some(now);
    state.last_exit_code = Some(code);
    if let Err(e) = state.save(name) {
        warnings.push(format!("cannot save the job state: {e}"));
    }
    drop(lock);
    Ok(RunReport {
        job: name.to_string(),
        exit_code: code,
        duration: started.elapsed().as_secs_f64(),
        steps,
        error,
        warnings,
        attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: StepKind, name: &str) -> Step {
        Step {
            kind,
            name: name.into(),
            program: "true".into(),
            args: vec![],
            env: vec![],
            env_remove: vec![],
            not_due: false,
        }
    }

    /// Steps exit with the codes of a plan; never stopped.
    struct Scripted<'p>(&'p [(StepKind, &'p str, i32)]);

    impl StepRunner for Scripted<'_> {
        fn run(&mut self, s: &Step) -> i32 {
            self.0.iter().find(|p| p.1 == s.name).unwrap().2
        }
        fn stopped(&self) -> bool {
            false
        }
    }

    fn codes(plan: &[(StepKind, &str, i32)]) -> (i32, Vec<Option<i32>>) {
        let steps: Vec<Step> = plan.iter().map(|(k, n, _)| step(*k, n)).collect();
        let (code, out) = execute(&steps, &mut Scripted(plan), &mut |_, _| {});
        (code, out.iter().map(|o| o.exit_code).collect())
    }

    #[test]
    fn stop_rules() {
        use StepKind::*;
        let all = |b| {
            codes(&[
                (Before, "before", 0),
                (Backup, "backup", b),
                (Forget, "forget", 0),
                (Verify, "verify", 0),
                (Drill, "drill", 0),
                (Copy, "copy:x", 0),
                (After, "after", 0),
            ])
        };
        assert_eq!(all(0).0, 0);
        let (c, v) = all(3);
        assert_eq!(c, 3);
        assert_eq!(v, [Some(0), Some(3), None, Some(0), Some(0), None, None]);
        let (c, v) = all(12);
        assert_eq!(c, 12);
        assert_eq!(v[2..], [None, None, None, None, None]);
        let (c, v) = codes(&[(Before, "before", 7), (Backup, "backup", 0)]);
        assert_eq!((c, v), (1, vec![Some(1), None]));
        let (c, _) = codes(&[(Backup, "backup", 3), (Verify, "verify", 1)]);
        assert_eq!(c, 1);
    }

    #[test]
    fn due_with_slack() {
        let week = Some(std::time::Duration::from_secs(7 * 86400));
        let now = Utc::now();
        assert!(due(week, None, now));
        assert!(!due(week, Some(now - chrono::Duration::days(6)), now));
        assert!(due(
            week,
            Some(now - chrono::Duration::days(7) + chrono::Duration::minutes(1)),
            now
        ));
    }
}

/// The job's database passwords, read now, as the variables the dump tools
/// (and cairn's own connections) read: never on a command line.
fn database_passwords(job: &Job) -> Result<Vec<(String, OsString)>, String> {
    use crate::format::database::Engine;
    let mut env = Vec::new();
    for (engine, value) in &job.database_passwords {
        let var = match engine {
            Engine::Postgres => "PGPASSWORD",
            Engine::Mysql => "MYSQL_PWD",
            Engine::Sqlite => continue,
        };
        env.push((var.to_string(), resolve(value, "password")?.into()));
    }
    Ok(env)
}

/// `backup`'s flags for a source.
fn source_args(source: &Source, exclude: &[String]) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    for e in exclude {
        a.extend(["--exclude".into(), e.into()]);
    }
    match source {
        Source::Paths(paths) => {
            a.push("--".into());
            a.extend(paths.iter().map(OsString::from));
        }
        Source::Stdin { name } => {
            a.extend(["--stdin", "--stdin-filename", name].map(OsString::from));
        }
        Source::Command { name, argv } => {
            a.extend(["--stdin-from-command", "--stdin-filename", name, "--"].map(OsString::from));
            a.extend(argv.iter().map(OsString::from));
        }
        Source::Databases { databases, paths } => {
            for d in databases {
                let (flag, value) = d.location.argument();
                a.extend([OsString::from(flag), value]);
            }
            if databases.iter().any(|d| d.all) {
                a.push("--all-databases".into());
            }
            // A job's server sources share their dump options (config check).
            if let Some(d) = databases.iter().find(|d| !d.dump_options.is_empty()) {
                for o in &d.dump_options {
                    a.push(format!("--dump-option={o}").into());
                }
            }
            a.push("--".into());
            a.extend(paths.iter().map(OsString::from));
        }
        // PostgreSQL's archive_command pushes WAL, never a job.
        Source::WalFiles { .. } => {}
    }
    a
}

/// `forget`'s flags for a retention policy.
fn policy_args(p: &Policy) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let counts = [
        ("--keep-last", p.last),
        ("--keep-hourly", p.hourly),
        ("--keep-daily", p.daily),
        ("--keep-weekly", p.weekly),
        ("--keep-monthly", p.monthly),
        ("--keep-yearly", p.yearly),
    ];
    for (flag, n) in counts {
        if let Some(n) = n {
            a.extend([flag.into(), n.to_string().into()]);
        }
    }
    if let Some(w) = p.within {
        // Spans are whole hours at the finest: exact.
        a.extend(["--keep-within".into(), format!("{}h", w.num_hours()).into()]);
    }
    for t in &p.tags {
        a.extend(["--keep-tag".into(), t.into()]);
    }
    if let Some(n) = p.at_most {
        a.extend(["--keep-at-most".into(), n.to_string().into()]);
    }
    a
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    /// A job's retention reaches `forget` as the same policy the flags make:
    /// every rule, with keep-within exact (1y6m = 545 days = 13,080 hours).
    #[test]
    fn a_jobs_retention_becomes_forgets_flags() {
        let text = "[repositories.r]\nurl = \"/tmp/r\"\n\n[jobs.j]\nrepository = \"r\"\n\
                    paths = [\"/etc\"]\n[jobs.j.retention]\nkeep-daily = 7\nkeep-within = \"1y6m\"\n\
                    keep-tag = [\"keep\"]\nprune = true\n";
        let config = super::super::config::parse(text, Path::new("c.toml"), "c.toml").unwrap();
        let job = &config.jobs["j"];
        let steps = plan(
            &config,
            job,
            Path::new("cairn"),
            &[],
            &JobState::default(),
            Utc::now(),
        )
        .unwrap();
        let forget = steps
            .iter()
            .find(|s| s.name == "forget")
            .expect("a forget step");
        let args: Vec<String> = forget
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for want in [
            "--keep-daily 7",
            "--keep-within 13080h",
            "--keep-tag keep",
            "--prune",
        ] {
            assert!(joined.contains(want), "{want} in {joined}");
        }
        assert_eq!(
            crate::format::duration::parse_span("13080h"),
            crate::format::duration::parse_span("1y6m")
        );
    }
}

//! The event log (one JSON line per repository-changing or verifying command),
//! the figures a command leaves for the metrics file, and the hand-off of each
//! event to the notifications of `--notify*`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Result;
use serde_json::{json, Value};

use super::{notify, Global};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One value for the metrics file, set by the command that knows it. The
/// `repository` label is added when the file is written; `labels` holds the
/// others (`host`, ...).
#[derive(Clone, Debug)]
pub struct Figure {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// What this process has done so far: the events it emitted and the figures
/// it set. One command runs per process, so a process-wide record is enough.
struct Record {
    events: Vec<Value>,
    failure_logged: bool,
    figures: Vec<Figure>,
}

static RECORD: Mutex<Record> = Mutex::new(Record {
    events: Vec::new(),
    failure_logged: false,
    figures: Vec::new(),
});

/// The job a command runs for: set by `cairn run` (name, repository URL)
/// while it runs one; in a step, `CAIRN_JOB` from the runner.
static JOB: Mutex<Option<(String, String)>> = Mutex::new(None);

pub fn set_job(job: Option<(String, String)>) {
    *JOB.lock().unwrap_or_else(|e| e.into_inner()) = job;
}

/// The job's name and, when `cairn run` set it, its repository's URL.
pub fn job() -> Option<(String, Option<String>)> {
    if let Some((name, repo)) = JOB.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return Some((name, Some(repo)));
    }
    std::env::var("CAIRN_JOB")
        .ok()
        .filter(|j| !j.is_empty())
        .map(|j| (j, None))
}

fn record() -> std::sync::MutexGuard<'static, Record> {
    RECORD.lock().unwrap_or_else(|e| e.into_inner())
}

/// The metrics interface for commands: sets one series (see
/// `metrics::SERIES` for the names), replacing a value set earlier in this
/// run with the same labels. E.g.
/// `events::figure("cairn_drill_success_ratio", &[], 0.98)` or
/// `events::figure("cairn_stale", &[("host", "db1")], 1.0)`.
pub fn figure(name: &'static str, labels: &[(&'static str, &str)], value: f64) {
    let labels: Vec<(&'static str, String)> =
        labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let mut r = record();
    r.figures
        .retain(|f| !(f.name == name && f.labels == labels));
    r.figures.push(Figure {
        name,
        labels,
        value,
    });
}

/// The figures set so far.
pub fn figures() -> Vec<Figure> {
    record().figures.clone()
}

/// Whether this run already logged a `*.failed` event.
pub fn failure_logged() -> bool {
    record().failure_logged
}

/// The last event this run emitted (for the closing ping's body).
pub fn last_event() -> Option<Value> {
    record().events.last().cloned()
}

/// `$XDG_STATE_HOME/cairn` (else `~/.local/state/cairn`): the event log and
/// what `health` remembers between runs.
pub fn state_dir() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("cairn"))
}

fn default_log() -> Option<PathBuf> {
    Some(state_dir()?.join("events.jsonl"))
}

/// Replaces a small state file atomically (a temporary file beside it, then
/// a rename), never writing through a symlink planted at the temporary name.
pub fn write_state(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn host() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Appends one event and hands it to the notifications. Failing to log or to
/// notify never fails the command: it warns.
pub fn emit(g: &Global, event: &str, severity: Severity, snapshot: Option<String>, figures: Value) {
    emit_notifying(g, event, severity, snapshot, figures, true)
}

/// As [`emit`], but the notifications hear of it only when `notify` (the
/// event log always does): `health` notifies on change only.
pub fn emit_notifying(
    g: &Global,
    event: &str,
    severity: Severity,
    snapshot: Option<String>,
    figures: Value,
    notify: bool,
) {
    let job = job();
    let mut line = json!({
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "event": event,
        "severity": severity.as_str(),
        "repository": g.repo.clone()
            .or_else(|| job.as_ref().and_then(|j| j.1.clone()))
            .unwrap_or_default(),
        "host": host(),
        "snapshot": snapshot,
        "figures": figures,
    });
    if let Some((name, _)) = &job {
        line["job"] = json!(name);
    }
    {
        let mut r = record();
        r.events.push(line.clone());
        r.failure_logged |= event.ends_with(".failed");
    }
    if let Some(path) = g.event_log.clone().or_else(default_log) {
        if let Err(e) = append(&path, &line) {
            eprintln!("warning: cannot write event log {}: {e:#}", path.display());
        }
    }
    if notify && (severity >= Severity::Warning || g.notify_all || event == "health.recovered") {
        notify::event(g, &line);
    }
}

/// Emits a critical `event` (`backup.failed`, ...) naming the error and the
/// exit code it ends the command with.
pub fn failed(g: &Global, event: &str, err: &anyhow::Error) {
    emit(
        g,
        event,
        Severity::Critical,
        None,
        json!({"error": super::one_line(err), "exit_code": super::exit_code(err)}),
    );
}

fn append(path: &Path, v: &Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    // Never through a symlink: a log in a shared folder must not let another
    // user point cairn's writes at a file of theirs choosing.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    // One write per line, so concurrent writers never interleave within a line.
    f.write_all(format!("{v}\n").as_bytes())?;
    Ok(())
}

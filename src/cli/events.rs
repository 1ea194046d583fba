//! The event log (one JSON line per repository-changing or verifying command)
//! and Prometheus text-format metrics.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::Global;

#[derive(Clone, Copy)]
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

fn default_log() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("cairn").join("events.jsonl"))
}

/// Appends one event. Failing to log never fails the command: it warns.
pub fn emit(g: &Global, event: &str, severity: Severity, snapshot: Option<String>, figures: Value) {
    let Some(path) = g.event_log.clone().or_else(default_log) else {
        return;
    };
    let line = json!({
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "event": event,
        "severity": severity.as_str(),
        "repository": g.repo.clone().unwrap_or_default(),
        "snapshot": snapshot,
        "figures": figures,
    });
    if let Err(e) = append(&path, &line) {
        eprintln!("warning: cannot write event log {}: {e:#}", path.display());
    }
}

fn append(path: &Path, v: &Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write per line, so concurrent writers never interleave within a line.
    f.write_all(format!("{v}\n").as_bytes())?;
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes metrics atomically (temp file + rename), as node_exporter's textfile
/// collector expects.
pub fn write_metrics(
    path: &Path,
    g: &Global,
    command: &str,
    code: i32,
    took: std::time::Duration,
) -> Result<()> {
    let labels = format!(
        "command=\"{}\",repository=\"{}\"",
        command,
        escape(g.repo.as_deref().unwrap_or(""))
    );
    let now = chrono::Utc::now().timestamp();
    let text = format!(
        "# HELP cairn_last_run_success Whether the last cairn command succeeded (1) or not (0).\n\
         # TYPE cairn_last_run_success gauge\n\
         cairn_last_run_success{{{labels}}} {}\n\
         # HELP cairn_last_run_exit_code Exit code of the last cairn command.\n\
         # TYPE cairn_last_run_exit_code gauge\n\
         cairn_last_run_exit_code{{{labels}}} {code}\n\
         # HELP cairn_last_run_timestamp_seconds When the last cairn command ended.\n\
         # TYPE cairn_last_run_timestamp_seconds gauge\n\
         cairn_last_run_timestamp_seconds{{{labels}}} {now}\n\
         # HELP cairn_last_run_duration_seconds How long the last cairn command took.\n\
         # TYPE cairn_last_run_duration_seconds gauge\n\
         cairn_last_run_duration_seconds{{{labels}}} {:.3}\n",
        u8::from(code == 0),
        took.as_secs_f64()
    );
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

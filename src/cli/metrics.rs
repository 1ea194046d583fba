//! Prometheus text-format metrics for node_exporter's textfile collector.
//!
//! The file is shared by every cairn command (and every repository) that names
//! it: each run reads it, replaces only the series it owns (same name and
//! labels), and writes it back through a temp file renamed over it, all under
//! an exclusive `flock` on a sidecar `FILE.lock`, so concurrent commands lose
//! nothing and the collector never sees a half-written file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::events;
use super::Global;

/// Every series cairn writes: name, type, help.
pub const SERIES: &[(&str, &str, &str)] = &[
    (
        "cairn_last_run_success",
        "gauge",
        "Whether the last run of the command succeeded (1) or not (0).",
    ),
    (
        "cairn_last_run_exit_code",
        "gauge",
        "Exit code of the last run of the command.",
    ),
    (
        "cairn_last_run_timestamp_seconds",
        "gauge",
        "When the last run of the command ended (Unix time).",
    ),
    (
        "cairn_last_run_duration_seconds",
        "gauge",
        "How long the last run of the command took.",
    ),
    (
        "cairn_last_success_timestamp_seconds",
        "gauge",
        "When the command last succeeded (exit code 0, Unix time).",
    ),
    (
        "cairn_last_failure_timestamp_seconds",
        "gauge",
        "When the command last failed (non-zero exit code, Unix time).",
    ),
    (
        "cairn_last_duration_seconds",
        "gauge",
        "How long the last successful run of the command took.",
    ),
    (
        "cairn_failures_total",
        "counter",
        "Runs of the command that failed (non-zero exit code).",
    ),
    (
        "cairn_backup_bytes_added",
        "gauge",
        "Bytes the last backup of the host added to the repository (after compression).",
    ),
    (
        "cairn_backup_files_processed",
        "gauge",
        "Files the last backup of the host processed.",
    ),
    ("cairn_snapshots", "gauge", "Snapshots in the repository."),
    (
        "cairn_repository_size_bytes",
        "gauge",
        "Bytes stored in the repository's packs.",
    ),
    (
        "cairn_latest_snapshot_age_seconds",
        "gauge",
        "Age of the host's latest snapshot when cairn last looked.",
    ),
    (
        "cairn_stale",
        "gauge",
        "Whether the host's latest snapshot is older than the allowed age (1) or not (0).",
    ),
    (
        "cairn_verification_coverage_ratio",
        "gauge",
        "Share of live pack bytes whose data was verified within the last 30 days.",
    ),
    (
        "cairn_drill_success_ratio",
        "gauge",
        "Share of files the last restoration drill restored intact.",
    ),
    (
        "cairn_healthy",
        "gauge",
        "Whether the last health run found no problem (1) or some (0).",
    ),
    (
        "cairn_health_problems",
        "gauge",
        "Problems of each kind the last health run found.",
    ),
    (
        "cairn_verification_age_seconds",
        "gauge",
        "Age of the last verification pass when health last looked.",
    ),
    (
        "cairn_drill_age_seconds",
        "gauge",
        "Age of the last restoration drill when health last looked.",
    ),
    (
        "cairn_repository_free_bytes",
        "gauge",
        "Free bytes where a local repository lives.",
    ),
];

/// One metric family as read or to be written.
#[derive(Default)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    /// Rendered label set (`{a="x",b="y"}` or empty) → value.
    samples: BTreeMap<String, String>,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `{k="v",...}` with the keys sorted, so the same series always renders the same.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut pairs = pairs.to_vec();
    pairs.sort();
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Splits a sample line into name, label set and value; `None` for what is not one.
fn parse_sample(line: &str) -> Option<(String, String, String)> {
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = &line[..name_end];
    let rest = &line[name_end..];
    let (labels, rest) = if rest.starts_with('{') {
        // Find the closing brace outside quoted values.
        let (mut quoted, mut escaped) = (false, false);
        let mut end = None;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        (&rest[..=end], &rest[end + 1..])
    } else {
        ("", rest)
    };
    let value = rest.split_whitespace().next()?;
    if name.is_empty() {
        return None;
    }
    Some((name.to_string(), labels.to_string(), value.to_string()))
}

fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut fams: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(c) = line.strip_prefix('#') {
            let mut words = c.trim_start().splitn(3, ' ');
            let (kind, name, rest) = (words.next(), words.next(), words.next());
            if let (Some(k @ ("HELP" | "TYPE")), Some(name)) = (kind, name) {
                let f = fams.entry(name.to_string()).or_default();
                let rest = rest.unwrap_or("").to_string();
                if k == "HELP" {
                    f.help = Some(rest);
                } else {
                    f.kind = Some(rest);
                }
            }
        } else if let Some((name, labels, value)) = parse_sample(line) {
            fams.entry(name).or_default().samples.insert(labels, value);
        }
    }
    fams
}

fn render(fams: &BTreeMap<String, Family>) -> String {
    let mut out = String::new();
    for (name, f) in fams.iter().filter(|(_, f)| !f.samples.is_empty()) {
        let known = SERIES.iter().find(|(n, _, _)| n == name);
        let help = known.map(|k| k.2.to_string()).or_else(|| f.help.clone());
        let kind = known.map(|k| k.1.to_string()).or_else(|| f.kind.clone());
        if let Some(h) = help {
            out.push_str(&format!("# HELP {name} {h}\n"));
        }
        if let Some(t) = kind {
            out.push_str(&format!("# TYPE {name} {t}\n"));
        }
        for (labels, value) in &f.samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    }
    out
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// Merges this run's series into the metrics file.
pub fn write(
    path: &Path,
    g: &Global,
    command: &str,
    code: i32,
    took: std::time::Duration,
) -> Result<()> {
    let lock_path = sidecar(path, ".lock");
    use std::os::unix::fs::OpenOptionsExt;
    // Neither the lock nor the temporary file is opened through a symlink:
    // in a shared textfile folder another user could point one at a file of
    // the invoking user's (root's) to have cairn overwrite it.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut fams = parse(&existing);
    // A job's steps and its `run` are labelled with the job, and `run` with
    // the job's repository (it has no -r of its own).
    let job = events::job();
    let repo_of_job = job.as_ref().and_then(|j| j.1.clone()).unwrap_or_default();
    let repo = g.repo.as_deref().unwrap_or(&repo_of_job);
    let job_name = job.map(|j| j.0);
    let with_job = |mut pairs: Vec<(&'static str, String)>| {
        if let Some(j) = &job_name {
            pairs.push(("job", j.clone()));
        }
        pairs
    };
    let run_pairs = with_job(vec![
        ("command", command.to_string()),
        ("repository", repo.to_string()),
    ]);
    let run = labels(
        &run_pairs
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    let mut set = |name: &str, labels: &str, value: String| {
        fams.entry(name.to_string())
            .or_default()
            .samples
            .insert(labels.to_string(), value);
    };
    let now = chrono::Utc::now().timestamp();
    let secs = format!("{:.3}", took.as_secs_f64());
    set(
        "cairn_last_run_success",
        &run,
        u8::from(code == 0).to_string(),
    );
    set("cairn_last_run_exit_code", &run, code.to_string());
    set("cairn_last_run_timestamp_seconds", &run, now.to_string());
    set("cairn_last_run_duration_seconds", &run, secs.clone());
    if code == 0 {
        set(
            "cairn_last_success_timestamp_seconds",
            &run,
            now.to_string(),
        );
        set("cairn_last_duration_seconds", &run, secs);
    } else {
        set(
            "cairn_last_failure_timestamp_seconds",
            &run,
            now.to_string(),
        );
    }
    for f in events::figures() {
        let mut owned = f.labels.clone();
        owned.push(("repository", repo.to_string()));
        let owned = with_job(owned);
        let pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        set(f.name, &labels(&pairs), number(f.value));
    }
    // The counter goes on from the value the file held.
    let failures = fams
        .get("cairn_failures_total")
        .and_then(|f| f.samples.get(&run))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + f64::from(u8::from(code != 0));
    fams.entry("cairn_failures_total".into())
        .or_default()
        .samples
        .insert(run, number(failures));

    let tmp = sidecar(path, &format!(".{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        // Whatever is at the temporary name (a crashed run's leftover, a
        // planted link) goes first; create_new then makes a fresh file.
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(render(&fams).as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    drop(lock);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_braces_in_values() {
        let (n, l, v) = parse_sample(r#"a_b{x="}\"{",y="z"} 12.5 1700000000"#).unwrap();
        assert_eq!(
            (n.as_str(), l.as_str(), v.as_str()),
            ("a_b", r#"{x="}\"{",y="z"}"#, "12.5")
        );
        let (n, l, v) = parse_sample("plain 3").unwrap();
        assert_eq!((n.as_str(), l.as_str(), v.as_str()), ("plain", "", "3"));
    }

    #[test]
    fn render_keeps_foreign_families_and_round_trips() {
        let text =
            "# HELP other_thing Not ours.\n# TYPE other_thing gauge\nother_thing{a=\"1\"} 7\n";
        let fams = parse(text);
        assert_eq!(render(&fams), text);
    }
}

//! Samples, medians, the Markdown table and the JSON record.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Init,
    First,
    Unchanged,
    Changed,
    Restore,
    Check,
}

impl Step {
    pub const REPORTED: [Step; 5] = [
        Step::First,
        Step::Unchanged,
        Step::Changed,
        Step::Restore,
        Step::Check,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Step::Init => "init",
            Step::First => "first backup",
            Step::Unchanged => "unchanged re-backup",
            Step::Changed => "changed-generation backup",
            Step::Restore => "full restore",
            Step::Check => "check --read-data",
        }
    }
}

/// One measured command.
#[derive(Debug, Clone)]
pub struct Sample {
    pub round: usize,
    /// "kernel", "sqldump (file)", "sqldump (stdin)", ...
    pub row: String,
    pub step: Step,
    pub tool: String,
    pub wall_secs: f64,
    pub max_rss_kib: u64,
    pub ok: bool,
    /// Ran, but incorrectly: its data did not restore byte for byte, or a
    /// stdin backup did not read all of its input.
    pub wrong: bool,
    pub note: Option<String>,
}

/// Repository size after the changed generation was backed up.
#[derive(Debug, Clone)]
pub struct SizeSample {
    pub round: usize,
    pub row: String,
    pub tool: String,
    pub bytes: u64,
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn mb(bytes: f64) -> String {
    if bytes >= 10e9 {
        format!("{:.1} GB", bytes / 1e9)
    } else if bytes >= 1e6 {
        format!("{:.0} MB", bytes / 1e6)
    } else {
        format!("{:.2} MB", bytes / 1e6)
    }
}

/// Medians of one (row, step, tool) over the rounds whose run succeeded.
#[derive(Debug, Clone)]
pub struct Cell {
    pub secs: Option<f64>,
    pub rss_bytes: Option<f64>,
    pub runs: usize,
    pub failed: usize,
    pub wrong: usize,
}

pub fn cell(samples: &[Sample], row: &str, step: Step, tool: &str) -> Cell {
    let mine: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.row == row && s.step == step && s.tool == tool)
        .collect();
    let ok: Vec<&&Sample> = mine.iter().filter(|s| s.ok).collect();
    Cell {
        secs: median(ok.iter().map(|s| s.wall_secs).collect()),
        rss_bytes: median(ok.iter().map(|s| s.max_rss_kib as f64 * 1024.0).collect()),
        runs: mine.len(),
        failed: mine.len() - ok.len(),
        wrong: mine.iter().filter(|s| s.wrong).count(),
    }
}

fn size_cell(sizes: &[SizeSample], row: &str, tool: &str) -> Option<f64> {
    median(
        sizes
            .iter()
            .filter(|s| s.row == row && s.tool == tool)
            .map(|s| s.bytes as f64)
            .collect(),
    )
}

/// The Markdown table: one row per corpus × step, a column per tool, cairn's
/// ratios to the best peer.
pub fn table(
    samples: &[Sample],
    sizes: &[SizeSample],
    rows: &[String],
    tools: &[String],
) -> String {
    let mut t = String::new();
    let _ = write!(t, "| corpus | step |");
    for tool in tools {
        let _ = write!(t, " {tool} |");
    }
    let has_cairn = tools.iter().any(|t| t == "cairn");
    let peers: Vec<&String> = tools.iter().filter(|t| *t != "cairn").collect();
    let ratios = has_cairn && !peers.is_empty();
    if ratios {
        t.push_str(" cairn speed-up vs best peer | cairn RSS vs lowest peer |");
    }
    t.push('\n');
    let _ = write!(t, "|---|---|");
    for _ in tools {
        t.push_str("---:|");
    }
    if ratios {
        t.push_str("---:|---:|");
    }
    t.push('\n');

    for row in rows {
        for step in Step::REPORTED {
            if !samples.iter().any(|s| &s.row == row && s.step == step) {
                continue;
            }
            let _ = write!(t, "| {row} | {} |", step.label());
            let mut cells = BTreeMap::new();
            for tool in tools {
                let c = cell(samples, row, step, tool);
                let text = match (c.secs, c.rss_bytes) {
                    (Some(s), Some(r)) => {
                        let mut x = format!("{s:.2} s · {}", mb(r));
                        if c.wrong > 0 {
                            let _ = write!(x, " ({} of {} INCORRECT)", c.wrong, c.runs);
                        } else if c.failed > 0 {
                            let _ = write!(x, " ({} of {} failed)", c.failed, c.runs);
                        }
                        x
                    }
                    _ if c.runs == 0 => "—".to_string(),
                    _ if c.wrong > 0 => format!("INCORRECT ({} of {})", c.wrong, c.runs),
                    _ => format!("failed ({} of {})", c.failed, c.runs),
                };
                let _ = write!(t, " {text} |");
                cells.insert(tool.clone(), c);
            }
            if ratios {
                let cairn = &cells["cairn"];
                let best_time = peers
                    .iter()
                    .filter_map(|p| cells[*p].secs.map(|s| (s, p)))
                    .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
                let best_rss = peers
                    .iter()
                    .filter_map(|p| cells[*p].rss_bytes.map(|s| (s, p)))
                    .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
                match (cairn.secs, best_time) {
                    (Some(c), Some((b, p))) => {
                        let _ = write!(t, " {:.2}× ({p}) |", b / c);
                    }
                    _ => t.push_str(" — |"),
                }
                match (cairn.rss_bytes, best_rss) {
                    (Some(c), Some((b, p))) => {
                        let _ = write!(t, " {:.2}× ({p}) |", c / b);
                    }
                    _ => t.push_str(" — |"),
                }
            }
            t.push('\n');
        }
        if sizes.iter().any(|s| &s.row == row) {
            let _ = write!(t, "| {row} | repository size |");
            let mut vals = BTreeMap::new();
            for tool in tools {
                let v = size_cell(sizes, row, tool);
                let _ = write!(t, " {} |", v.map(mb).unwrap_or_else(|| "—".into()));
                vals.insert(tool.clone(), v);
            }
            if ratios {
                let smallest = peers
                    .iter()
                    .filter_map(|p| vals[*p].map(|s| (s, p)))
                    .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
                match (vals["cairn"], smallest) {
                    (Some(c), Some((b, p))) => {
                        let _ = write!(t, " — | size {:.2}× ({p}) |", c / b);
                    }
                    _ => t.push_str(" — | — |"),
                }
            }
            t.push('\n');
        }
    }
    t
}

pub fn samples_json(samples: &[Sample]) -> Value {
    Value::Array(
        samples
            .iter()
            .map(|s| {
                json!({
                    "round": s.round, "corpus": s.row, "step": s.step.label(), "tool": s.tool,
                    "wall_secs": s.wall_secs, "max_rss_kib": s.max_rss_kib, "ok": s.ok, "wrong_data": s.wrong, "note": s.note,
                })
            })
            .collect(),
    )
}

pub fn sizes_json(sizes: &[SizeSample]) -> Value {
    Value::Array(
        sizes
            .iter()
            .map(|s| json!({"round": s.round, "corpus": s.row, "tool": s.tool, "repo_bytes": s.bytes}))
            .collect(),
    )
}

/// Medians as JSON: {row: {step: {tool: {secs, max_rss_bytes, failed}}}}.
pub fn medians_json(
    samples: &[Sample],
    sizes: &[SizeSample],
    rows: &[String],
    tools: &[String],
) -> Value {
    let mut out = serde_json::Map::new();
    for row in rows {
        let mut steps = serde_json::Map::new();
        for step in Step::REPORTED {
            let mut per = serde_json::Map::new();
            for tool in tools {
                let c = cell(samples, row, step, tool);
                if c.runs > 0 {
                    per.insert(
                        tool.clone(),
                        json!({"secs": c.secs, "max_rss_bytes": c.rss_bytes, "runs": c.runs, "failed": c.failed, "wrong_data": c.wrong}),
                    );
                }
            }
            if !per.is_empty() {
                steps.insert(step.label().into(), Value::Object(per));
            }
        }
        let mut sz = serde_json::Map::new();
        for tool in tools {
            if let Some(v) = size_cell(sizes, row, tool) {
                sz.insert(tool.clone(), json!(v));
            }
        }
        steps.insert("repository size (bytes)".into(), Value::Object(sz));
        out.insert(row.clone(), Value::Object(steps));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(round: usize, tool: &str, secs: f64, ok: bool) -> Sample {
        Sample {
            round,
            row: "kernel".into(),
            step: Step::First,
            tool: tool.into(),
            wall_secs: secs,
            max_rss_kib: 1000,
            ok,
            wrong: false,
            note: None,
        }
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn failed_runs_are_left_out_of_medians_and_counted() {
        let v = vec![
            s(0, "cairn", 1.0, true),
            s(1, "cairn", 100.0, false),
            s(2, "cairn", 3.0, true),
        ];
        let c = cell(&v, "kernel", Step::First, "cairn");
        assert_eq!(c.secs, Some(2.0));
        assert_eq!((c.runs, c.failed), (3, 1));
    }

    #[test]
    fn table_has_ratio_columns_against_the_best_peer() {
        let v = vec![
            s(0, "cairn", 1.0, true),
            s(0, "restic", 2.0, true),
            s(0, "borg", 4.0, true),
        ];
        let tools: Vec<String> = ["cairn", "restic", "borg"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        let t = table(&v, &[], &["kernel".to_string()], &tools);
        assert!(t.contains("| kernel | first backup |"), "{t}");
        assert!(t.contains("2.00× (restic)"), "{t}");
        assert!(t.contains("1.00× (restic)"), "{t}");
    }
}

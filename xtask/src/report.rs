//! Samples, medians, the Markdown table and the JSON record.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::measure::Io;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Init,
    First,
    /// `snapshots` (borg: `list`): the cost of opening the repository, the
    /// floor that other steps of the same row are compared with.
    Snapshots,
    Unchanged,
    Changed,
    Restore,
    /// `check` without reading pack data.
    CheckStructure,
    Check,
    /// `forget --keep-last 1` (scale bench).
    Forget,
    PruneDryRun,
    Prune,
    /// `forget --keep-last 5` and prune (bench's prune row).
    ForgetPrune,
    Copy,
}

impl Step {
    pub const REPORTED: [Step; 12] = [
        Step::First,
        Step::Snapshots,
        Step::Unchanged,
        Step::Changed,
        Step::Restore,
        Step::CheckStructure,
        Step::Check,
        Step::Forget,
        Step::PruneDryRun,
        Step::Prune,
        Step::ForgetPrune,
        Step::Copy,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Step::Init => "init",
            Step::First => "first backup",
            Step::Snapshots => "snapshots (floor)",
            Step::Unchanged => "unchanged re-backup",
            Step::Changed => "changed-generation backup",
            Step::Restore => "full restore",
            Step::CheckStructure => "check",
            Step::Check => "check --read-data",
            Step::Forget => "forget --keep-last 1",
            Step::PruneDryRun => "prune --dry-run",
            Step::Prune => "prune",
            Step::ForgetPrune => "forget --keep-last 5 + prune",
            Step::Copy => "copy to a new repository",
        }
    }

    /// Steps whose bytes read and written get a line of their own in the table.
    pub fn shows_io(self) -> bool {
        self == Step::ForgetPrune
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
    /// System CPU time: a restore spending it in the kernel (confined opens,
    /// inode allocation) shows here before its wall time moves.
    pub sys_secs: f64,
    pub ok: bool,
    /// Ran, but incorrectly: its data did not restore byte for byte, or a
    /// stdin backup did not read all of its input.
    pub wrong: bool,
    pub note: Option<String>,
    /// Bytes read and written by the command and the children it reaped.
    pub io: Option<Io>,
}

/// A repository's apparent size at a named moment of a row.
#[derive(Debug, Clone)]
pub struct SizeSample {
    pub round: usize,
    pub row: String,
    pub tool: String,
    /// What the size is of: [`REPO_SIZE`], [`SIZE_BEFORE_PRUNE`], ...
    pub label: String,
    pub bytes: u64,
}

/// After the changed generation was backed up.
pub const REPO_SIZE: &str = "repository size";
pub const SIZE_BEFORE_PRUNE: &str = "repository size before prune";
pub const SIZE_AFTER_PRUNE: &str = "repository size after prune";

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
    /// Median system CPU time of the successful runs.
    pub sys_secs: Option<f64>,
    pub rss_bytes: Option<f64>,
    pub runs: usize,
    pub failed: usize,
    pub wrong: usize,
    /// Medians of each counter, over the successful runs that had them.
    pub io: Option<Io>,
}

pub fn cell(samples: &[Sample], row: &str, step: Step, tool: &str) -> Cell {
    let mine: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.row == row && s.step == step && s.tool == tool)
        .collect();
    let ok: Vec<&&Sample> = mine.iter().filter(|s| s.ok).collect();
    let ios: Vec<Io> = ok.iter().filter_map(|s| s.io).collect();
    let med =
        |f: fn(&Io) -> u64| median(ios.iter().map(|i| f(i) as f64).collect()).unwrap_or(0.0) as u64;
    let io = (!ios.is_empty()).then(|| Io {
        rchar: med(|i| i.rchar),
        wchar: med(|i| i.wchar),
        read_bytes: med(|i| i.read_bytes),
        write_bytes: med(|i| i.write_bytes),
    });
    Cell {
        io,
        secs: median(ok.iter().map(|s| s.wall_secs).collect()),
        sys_secs: median(ok.iter().map(|s| s.sys_secs).collect()),
        rss_bytes: median(ok.iter().map(|s| s.max_rss_kib as f64 * 1024.0).collect()),
        runs: mine.len(),
        failed: mine.len() - ok.len(),
        wrong: mine.iter().filter(|s| s.wrong).count(),
    }
}

fn size_cell(sizes: &[SizeSample], row: &str, label: &str, tool: &str) -> Option<f64> {
    median(
        sizes
            .iter()
            .filter(|s| s.row == row && s.label == label && s.tool == tool)
            .map(|s| s.bytes as f64)
            .collect(),
    )
}

/// The size labels of a row, in the order they were first recorded.
fn size_labels(sizes: &[SizeSample], row: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for s in sizes.iter().filter(|s| s.row == row) {
        if !v.contains(&s.label) {
            v.push(s.label.clone());
        }
    }
    v
}

/// The Markdown table: one row per corpus × step, a column per tool, cairn's
/// ratios to the best peer. Where a row measured `snapshots` for a tool, that
/// tool's other cells of the row also show their peak RSS above it, "(+N MB)".
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
        let floors: BTreeMap<&String, Option<f64>> = tools
            .iter()
            .map(|tool| (tool, cell(samples, row, Step::Snapshots, tool).rss_bytes))
            .collect();
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
                        if let (Some(f), false) = (floors[tool], step == Step::Snapshots) {
                            let _ = write!(x, " (+{})", mb((r - f).max(0.0)));
                        }
                        if let (Some(sys), false) = (c.sys_secs, step == Step::Snapshots) {
                            let _ = write!(x, " · sys {sys:.2} s");
                        }
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
            if step.shows_io() && cells.values().any(|c| c.io.is_some()) {
                let _ = write!(t, "| {row} | {}: read / written |", step.label());
                for tool in tools {
                    let text = match cells[tool].io {
                        Some(io) => format!(
                            "{} / {} (disk {} / {})",
                            mb(io.rchar as f64),
                            mb(io.wchar as f64),
                            mb(io.read_bytes as f64),
                            mb(io.write_bytes as f64)
                        ),
                        None => "—".into(),
                    };
                    let _ = write!(t, " {text} |");
                }
                if ratios {
                    t.push_str(" — | — |");
                }
                t.push('\n');
            }
        }
        let labels = size_labels(sizes, row);
        for label in &labels {
            let _ = write!(t, "| {row} | {label} |");
            let mut vals = BTreeMap::new();
            for tool in tools {
                let v = size_cell(sizes, row, label, tool);
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
        if labels.iter().any(|l| l == SIZE_BEFORE_PRUNE)
            && labels.iter().any(|l| l == SIZE_AFTER_PRUNE)
        {
            let _ = write!(t, "| {row} | space freed |");
            for tool in tools {
                let before = size_cell(sizes, row, SIZE_BEFORE_PRUNE, tool);
                let after = size_cell(sizes, row, SIZE_AFTER_PRUNE, tool);
                let text = match (before, after) {
                    (Some(b), Some(a)) if b > 0.0 => {
                        format!("{} ({:.1} %)", mb(b - a), (b - a) / b * 100.0)
                    }
                    _ => "—".into(),
                };
                let _ = write!(t, " {text} |");
            }
            if ratios {
                t.push_str(" — | — |");
            }
            t.push('\n');
        }
    }
    t
}

fn io_json(io: Option<Io>) -> Value {
    match io {
        Some(i) => {
            json!({"rchar": i.rchar, "wchar": i.wchar, "read_bytes": i.read_bytes, "write_bytes": i.write_bytes})
        }
        None => Value::Null,
    }
}

pub fn samples_json(samples: &[Sample]) -> Value {
    Value::Array(
        samples
            .iter()
            .map(|s| {
                json!({
                    "round": s.round, "corpus": s.row, "step": s.step.label(), "tool": s.tool,
                    "wall_secs": s.wall_secs, "sys_secs": s.sys_secs, "max_rss_kib": s.max_rss_kib, "ok": s.ok, "wrong_data": s.wrong, "note": s.note,
                    "io": io_json(s.io),
                })
            })
            .collect(),
    )
}

pub fn sizes_json(sizes: &[SizeSample]) -> Value {
    Value::Array(
        sizes
            .iter()
            .map(|s| json!({"round": s.round, "corpus": s.row, "tool": s.tool, "what": s.label, "repo_bytes": s.bytes}))
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
                        json!({"secs": c.secs, "max_rss_bytes": c.rss_bytes, "runs": c.runs, "failed": c.failed, "wrong_data": c.wrong, "io": io_json(c.io)}),
                    );
                }
            }
            if !per.is_empty() {
                steps.insert(step.label().into(), Value::Object(per));
            }
        }
        for label in size_labels(sizes, row) {
            let mut sz = serde_json::Map::new();
            for tool in tools {
                if let Some(v) = size_cell(sizes, row, &label, tool) {
                    sz.insert(tool.clone(), json!(v));
                }
            }
            steps.insert(format!("{label} (bytes)"), Value::Object(sz));
        }
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
            sys_secs: secs / 2.0,
            ok,
            wrong: false,
            note: None,
            io: None,
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
        // Each cell shows its system time (the samples' is half the wall).
        assert!(t.contains("1.00 s · 1 MB · sys 0.50 s"), "{t}");
        assert!(t.contains("· sys 0.50 s"), "{t}");
        assert!(t.contains("· sys 2.00 s"), "{t}");
    }

    #[test]
    fn floor_io_and_space_freed_lines() {
        let mut snap = s(0, "cairn", 0.5, true);
        snap.step = Step::Snapshots;
        snap.max_rss_kib = 500;
        let mut prune = s(0, "cairn", 2.0, true);
        prune.step = Step::ForgetPrune;
        prune.max_rss_kib = 1500;
        prune.io = Some(Io {
            rchar: 3_000_000,
            wchar: 1_000_000,
            read_bytes: 0,
            write_bytes: 0,
        });
        let size = |label: &str, bytes| SizeSample {
            round: 0,
            row: "kernel".into(),
            tool: "cairn".into(),
            label: label.into(),
            bytes,
        };
        let sizes = vec![
            size(SIZE_BEFORE_PRUNE, 100_000_000),
            size(SIZE_AFTER_PRUNE, 75_000_000),
        ];
        let t = table(
            &[snap, prune],
            &sizes,
            &["kernel".to_string()],
            &["cairn".to_string()],
        );
        // 1500 KiB − 500 KiB above the floor.
        assert!(t.contains("2.00 s · 2 MB (+1 MB)"), "{t}");
        assert!(
            t.contains("| kernel | snapshots (floor) | 0.50 s · 0.51 MB |"),
            "{t}"
        );
        assert!(
            t.contains("read / written | 3 MB / 1 MB (disk 0.00 MB / 0.00 MB) |"),
            "{t}"
        );
        assert!(
            t.contains("| kernel | space freed | 25 MB (25.0 %) |"),
            "{t}"
        );
    }
}

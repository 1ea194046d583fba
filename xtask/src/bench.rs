//! `cargo xtask bench`: every tool through the same steps on the same corpora,
//! interleaved: within a round, each step runs for every tool before the next
//! step starts, and the tool order rotates from round to round.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::corpus::{self, Corpus, Mode, STDIN_NAME};
use crate::measure::{self, Invocation};
use crate::report::{self, Sample, SizeSample, Step};
use crate::tools::{self, Ctx, Op, Tool};
use crate::{cache_dir, workspace_root, Opts};

pub fn run(o: &Opts) -> Result<()> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)?;
    let tools = detect_tools(o)?;
    if tools.is_empty() {
        bail!("no tool to benchmark");
    }
    let corpora = corpus::prepare_all(o)?;
    let drops = o.drop_caches && measure::drop_caches();
    if o.drop_caches && !drops {
        eprintln!("xtask: cannot drop the page cache (needs root); steps run with a warm cache");
    }
    let work = cache.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let floor = floor_rss(&work)?;
    let header = header(o, &tools, &corpora, drops, floor);
    eprintln!("{header}");
    let mut b = Bench {
        o,
        tools: &tools,
        work: &work,
        drops,
        samples: Vec::new(),
        sizes: Vec::new(),
    };
    for c in &corpora {
        c.setup_working_copy(&work)?;
    }
    for round in 0..o.rounds {
        for (ci, c) in corpora.iter().enumerate() {
            for (mi, &mode) in c.modes().iter().enumerate() {
                b.variant(round, c, mode, round + ci + mi)?;
            }
        }
    }
    if !o.keep {
        let _ = std::fs::remove_dir_all(&work);
    }

    let rows: Vec<String> = corpora
        .iter()
        .flat_map(|c| c.modes().iter().map(move |&m| row_name(c, m)))
        .collect();
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    let table = report::table(&b.samples, &b.sizes, &rows, &names);
    let notes = footnotes(&b.samples);
    let text = format!("{header}\n{table}{notes}");
    println!("{text}");

    let results = cache.join("results");
    std::fs::create_dir_all(&results)?;
    let stamp = now_utc().replace(':', "");
    let json_path = results.join(format!("bench-{stamp}.json"));
    let doc = json!({
        "date": now_utc(),
        "machine": machine(),
        "tools": tools.iter().map(|t| json!({"name": t.name, "version": t.version, "path": t.bin})).collect::<Vec<_>>(),
        "rounds": o.rounds,
        "quick": o.quick,
        "page_cache_dropped": drops,
        "rss_floor_kib": floor,
        "corpora": corpora.iter().map(|c| json!({"name": c.name, "description": c.description, "files": c.files, "bytes": c.bytes})).collect::<Vec<_>>(),
        "medians": report::medians_json(&b.samples, &b.sizes, &rows, &names),
        "samples": report::samples_json(&b.samples),
        "repo_sizes": report::sizes_json(&b.sizes),
        "markdown": text,
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)?)?;
    std::fs::write(json_path.with_extension("md"), &text)?;
    eprintln!(
        "xtask: results written to {} (and .md)",
        json_path.display()
    );
    Ok(())
}

fn row_name(c: &Corpus, m: Mode) -> String {
    if c.modes().len() == 1 {
        c.name.to_string()
    } else {
        format!("{} ({})", c.name, m.label())
    }
}

struct Bench<'a> {
    o: &'a Opts,
    tools: &'a [Tool],
    work: &'a Path,
    drops: bool,
    samples: Vec<Sample>,
    sizes: Vec<SizeSample>,
}

/// Per tool, within one corpus variant.
struct Lane<'a> {
    tool: &'a Tool,
    repo: PathBuf,
    home: PathBuf,
    restore: PathBuf,
    logs: PathBuf,
    alive: bool,
}

impl Bench<'_> {
    /// One corpus in one mode, one round: every step, every tool.
    fn variant(&mut self, round: usize, c: &Corpus, mode: Mode, rotate: usize) -> Result<()> {
        let row = row_name(c, mode);
        let vdir = self.work.join(format!("{}-{}", c.name, mode.label()));
        if vdir.exists() {
            std::fs::remove_dir_all(&vdir)?;
        }
        let mut order: Vec<&Tool> = self.tools.iter().collect();
        let len = order.len();
        order.rotate_left(rotate % len);
        let mut lanes: Vec<Lane> = order
            .into_iter()
            .map(|tool| {
                let d = vdir.join(tool.name);
                Lane {
                    tool,
                    repo: d.join("repo"),
                    home: d.join("home"),
                    restore: d.join("restore"),
                    logs: d.join("logs"),
                    alive: true,
                }
            })
            .collect();
        for l in &lanes {
            std::fs::create_dir_all(&l.home)?;
            std::fs::create_dir_all(&l.logs)?;
        }
        eprintln!(
            "\nxtask: round {}/{} · {row} · order {}",
            round + 1,
            self.o.rounds,
            lanes
                .iter()
                .map(|l| l.tool.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let source = c.source(self.work);
        if mode == Mode::Path {
            c.set_generation(self.work, 1)?;
        }

        let steps = [
            (Step::Init, Op::Init, 1u8, "init"),
            (Step::First, Op::Backup, 1, "first"),
            (Step::Unchanged, Op::Backup, 1, "unchanged"),
            (Step::Changed, Op::Backup, 2, "changed"),
            (Step::Restore, Op::Restore, 2, "changed"),
            (Step::Check, Op::Check, 2, ""),
        ];
        for (step, op, generation, archive) in steps {
            if step == Step::Changed && mode == Mode::Path {
                c.set_generation(self.work, 2)?;
            }
            if step == Step::Restore {
                for l in &lanes {
                    if l.alive {
                        self.sizes.push(SizeSample {
                            round,
                            row: row.clone(),
                            tool: l.tool.name.into(),
                            bytes: measure::dir_size(&l.repo),
                        });
                    }
                }
            }
            for l in lanes.iter_mut().filter(|l| l.alive) {
                let stdin_file = c.stdin_file(generation);
                let ctx = Ctx {
                    repo: &l.repo,
                    home: &l.home,
                    source: (mode == Mode::Path).then_some(source.as_path()),
                    stdin_file,
                    stdin_name: STDIN_NAME,
                    archive,
                    restore_archive: "changed",
                    restore_dir: &l.restore,
                };
                if op == Op::Restore {
                    if l.restore.exists() {
                        std::fs::remove_dir_all(&l.restore)?;
                    }
                    std::fs::create_dir_all(&l.restore)?;
                }
                let inv = l.tool.invocation(op, &ctx);
                let s = self.measure_one(round, &row, step, l, &inv)?;
                let mut s = s;
                if op == Op::Restore && s.ok {
                    // Correct restore: byte-identical to generation 2 of the source.
                    let expected: PathBuf = match mode {
                        Mode::Path => source.clone(),
                        Mode::Stdin => c.stdin_file(2).unwrap().to_path_buf(),
                    };
                    let stdin_name = (mode == Mode::Stdin).then_some(STDIN_NAME);
                    let verdict = match crate::verify::locate(&l.restore, &source, stdin_name) {
                        None => Err(vec![format!(
                            "nothing restored where expected below {}",
                            l.restore.display()
                        )]),
                        Some(actual) => crate::verify::compare(&expected, &actual),
                    };
                    if let Err(errs) = verdict {
                        eprintln!(
                            "xtask:   RESTORE WRONG ({}): {}",
                            l.tool.name,
                            errs.join("; ")
                        );
                        s.ok = false;
                        s.wrong = true;
                        s.note = Some(format!(
                            "restore differs from the source: {}",
                            errs.join("; ")
                        ));
                        // The changed-generation backup it restored was wrong too.
                        if let Some(prev) = self.samples.iter_mut().rev().find(|p| {
                            p.round == round
                                && p.row == row
                                && p.tool == l.tool.name
                                && p.step == Step::Changed
                        }) {
                            prev.ok = false;
                            prev.wrong = true;
                            prev.note = Some(
                                "its snapshot restored different data (see full restore)".into(),
                            );
                        }
                    } else {
                        eprintln!("xtask:   restore verified ({})", l.tool.name);
                    }
                    let _ = std::fs::remove_dir_all(&l.restore);
                }
                if !s.ok && matches!(step, Step::Init | Step::First) {
                    l.alive = false;
                }
                self.samples.push(s);
            }
        }
        if !self.o.keep {
            std::fs::remove_dir_all(&vdir).with_context(|| format!("remove {}", vdir.display()))?;
        }
        Ok(())
    }

    fn measure_one(
        &self,
        round: usize,
        row: &str,
        step: Step,
        l: &Lane,
        inv: &Invocation,
    ) -> Result<Sample> {
        if self.drops {
            measure::drop_caches();
        }
        let log = l.logs.join(format!("{}-{:?}", round, step).to_lowercase());
        let m = measure::run(inv, &log, Duration::from_secs(self.o.timeout_secs))?;
        let ok = l.tool.succeeded(m.code) && !m.timed_out;
        let note = (!ok).then(|| {
            let why = if m.timed_out {
                "timed out".to_string()
            } else {
                format!("exit {}", m.code)
            };
            format!("{why}: {}", m.output_tail(3).replace('\n', " | "))
        });
        eprintln!(
            "xtask: {:>9} {:<26} {:<7} {:>8.2} s {:>7.0} MB{}",
            row,
            step.label(),
            l.tool.name,
            m.wall_secs,
            m.max_rss_kib as f64 * 1024.0 / 1e6,
            note.as_ref()
                .map(|n| format!("  FAILED {n}\n           command: {}", inv.display()))
                .unwrap_or_default()
        );
        Ok(Sample {
            round,
            row: row.to_string(),
            step,
            tool: l.tool.name.to_string(),
            wall_secs: m.wall_secs,
            max_rss_kib: m.max_rss_kib,
            ok,
            wrong: false,
            note,
        })
    }
}

fn footnotes(samples: &[Sample]) -> String {
    let mut out = String::new();
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| !s.ok && s.step != Step::Init)
        .collect();
    let init_failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| !s.ok && s.step == Step::Init)
        .collect();
    if failed.is_empty() && init_failed.is_empty() {
        out.push_str("\nEvery command succeeded and every restore was verified byte for byte against its source.\n");
        return out;
    }
    out.push_str("\nFailures (left out of the medians):\n");
    for s in init_failed.iter().chain(&failed) {
        out.push_str(&format!(
            "- round {}, {}, {}, {}: {}\n",
            s.round + 1,
            s.row,
            s.step.label(),
            s.tool,
            s.note.as_deref().unwrap_or("failed")
        ));
    }
    out.push_str("Every other restore was verified byte for byte against its source.\n");
    out
}

fn detect_tools(o: &Opts) -> Result<Vec<Tool>> {
    let mut out = Vec::new();
    for name in tools::ALL_TOOLS {
        if let Some(sel) = &o.tools {
            if !sel.iter().any(|s| s == name) {
                continue;
            }
        }
        let bin = if name == "cairn" {
            Some(cairn_binary(o)?)
        } else {
            tools::which(name)
        };
        match bin {
            Some(bin) => {
                let mut version = tools::version_of(name, &bin);
                if name == "cairn" {
                    version = format!("{version} ({})", git_revision());
                }
                eprintln!("xtask: {name}: {} ({})", version, bin.display());
                out.push(Tool { name, bin, version });
            }
            None => eprintln!("xtask: {name} is not installed (not on PATH); skipped. `cargo xtask install-peers` installs it."),
        }
    }
    Ok(out)
}

fn cairn_binary(o: &Opts) -> Result<PathBuf> {
    if let Some(p) = &o.cairn {
        return Ok(p.clone());
    }
    let root = workspace_root();
    if o.build {
        eprintln!("xtask: cargo build --release --package cairn --bin cairn ...");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--release", "--package", "cairn", "--bin", "cairn"])
            .status()?;
        if !status.success() {
            bail!("building cairn failed; fix the build or pass --tools without cairn");
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join("cairn");
    if !bin.exists() {
        bail!("{} does not exist", bin.display());
    }
    Ok(bin)
}

fn git_revision() -> String {
    let root = workspace_root();
    let rev = crate::sh(&[
        "git",
        "-C",
        &root.to_string_lossy(),
        "rev-parse",
        "--short",
        "HEAD",
    ])
    .unwrap_or_default();
    let dirty = crate::sh(&[
        "git",
        "-C",
        &root.to_string_lossy(),
        "status",
        "--porcelain",
        "--",
        "src",
        "Cargo.toml",
    ])
    .map(|s| !s.trim().is_empty())
    .unwrap_or(false);
    format!(
        "git {}{}",
        rev.trim(),
        if dirty { ", uncommitted changes" } else { "" }
    )
}

pub fn now_utc() -> String {
    crate::sh(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn machine() -> serde_json::Value {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json!({"cpus": cpus, "cpu_model": model, "memory_bytes": mem_kib * 1024, "kernel": kernel})
}

/// Peak RSS that `true` shows through this harness: the floor below which no
/// figure can go (a child spawned with vfork inherits its parent's high-water mark).
fn floor_rss(work: &Path) -> Result<u64> {
    let inv = Invocation {
        argv: vec!["true".into()],
        ..Default::default()
    };
    let m = measure::run(&inv, &work.join("floor"), Duration::from_secs(10))?;
    Ok(m.max_rss_kib)
}

fn header(o: &Opts, tools: &[Tool], corpora: &[Corpus], drops: bool, floor_kib: u64) -> String {
    let m = machine();
    let mut h = String::new();
    h.push_str("### cargo xtask bench\n\n");
    h.push_str(&format!("- date: {}\n", now_utc()));
    h.push_str(&format!(
        "- machine: {} CPUs ({}), {:.1} GiB RAM, Linux {}\n",
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["memory_bytes"].as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64,
        m["kernel"].as_str().unwrap_or("?")
    ));
    h.push_str(&format!(
        "- tools: {}\n",
        tools
            .iter()
            .map(|t| t.version.clone())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let missing: Vec<&str> = tools::ALL_TOOLS
        .iter()
        .copied()
        .filter(|n| !tools.iter().any(|t| t.name == *n))
        .filter(|n| {
            o.tools
                .as_ref()
                .is_none_or(|sel| sel.iter().any(|s| s == n))
        })
        .collect();
    if !missing.is_empty() {
        h.push_str(&format!(
            "- not installed, skipped: {}\n",
            missing.join(", ")
        ));
    }
    h.push_str(
        "- settings: all repositories encrypted; cairn defaults (zstd 3), restic defaults (compression auto), \
         rustic defaults, borg `init -e repokey-blake2` + `create --compression zstd,3`; \
         check = `check --read-data` (borg: `check --verify-data`)\n",
    );
    h.push_str(&format!(
        "- method: median of {} round(s); within a round every tool runs a step before the next step starts, tool order \
         rotates each round; page cache dropped before every command: {}; wall time and peak RSS from wait4(2); \
         peak RSS of `true` measured the same way: {:.1} MB; repository size = apparent bytes after the changed generation; \
         every restore compared byte for byte with its source\n",
        o.rounds,
        if drops { "yes" } else { "no" },
        floor_kib as f64 * 1024.0 / 1e6
    ));
    for c in corpora {
        h.push_str(&format!("- corpus {}: {}\n", c.name, c.description));
    }
    let mut cmd = format!("cargo xtask bench --rounds {}", o.rounds);
    if o.quick {
        cmd.push_str(" --quick");
    }
    if o.corpora.len() < corpus::Kind::ALL.len() {
        cmd.push_str(&format!(
            " --corpus {}",
            o.corpora
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if let Some(t) = &o.tools {
        cmd.push_str(&format!(" --tools {}", t.join(",")));
    }
    h.push_str(&format!("- reproduce: `{cmd}`\n"));
    h
}

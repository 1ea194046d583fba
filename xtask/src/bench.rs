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
    let _lock = RunLock::take(&cache)?;
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
    let rows: Vec<String> = corpora
        .iter()
        .flat_map(|c| {
            let prune = (o.prune_row && prunable(c)).then(|| prune_row_name(c));
            c.modes().iter().map(move |&m| row_name(c, m)).chain(prune)
        })
        .collect();
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    let results = cache.join("results");
    std::fs::create_dir_all(&results)?;
    let out = Output {
        json_path: results.join(format!("bench-{}.json", now_utc().replace(':', ""))),
        header,
        rows,
        names,
        meta: json!({
            "date": now_utc(),
            "machine": machine(),
            "tools": tools.iter().map(|t| json!({"name": t.name, "version": t.version, "path": t.bin})).collect::<Vec<_>>(),
            "rounds": o.rounds,
            "quick": o.quick,
            "page_cache_dropped": drops,
            "rss_floor_kib": floor,
            "corpora": corpora.iter().map(|c| json!({"name": c.name, "description": c.description, "files": c.files, "bytes": c.bytes})).collect::<Vec<_>>(),
        }),
    };

    for c in &corpora {
        c.setup_working_copy(&work)?;
    }
    for round in 0..o.rounds {
        for (ci, c) in corpora.iter().enumerate() {
            for (mi, &mode) in c.modes().iter().enumerate() {
                b.variant(round, c, mode, round + ci + mi)?;
                // Saved after every variant, so an interrupted run keeps what it measured.
                out.write(&b.samples, &b.sizes, "", false)?;
            }
            if o.prune_row && prunable(c) {
                b.prune_variant(round, c, round + ci)?;
                out.write(&b.samples, &b.sizes, "", false)?;
            }
        }
    }
    if !o.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    let text = out.write(&b.samples, &b.sizes, "", true)?;
    println!("{text}");
    eprintln!(
        "xtask: results written to {} (and .md)",
        out.json_path.display()
    );
    Ok(())
}

/// One benchmark at a time per cache directory: two runs would share the work
/// directory and, worse, each other's CPU and disk.
pub(crate) struct RunLock(PathBuf);

impl RunLock {
    pub(crate) fn take(cache: &Path) -> Result<RunLock> {
        let path = cache.join("bench.lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    write!(f, "{}", std::process::id())?;
                    return Ok(RunLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid: i32 = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                    // SAFETY: signal 0 only checks that the process exists.
                    if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 {
                        bail!(
                            "another `cargo xtask bench` (pid {pid}) is running on {}; \
                             concurrent runs would disturb each other's timings",
                            cache.display()
                        );
                    }
                    let _ = std::fs::remove_file(&path); // stale: its process is gone
                }
                Err(e) => return Err(e).context("create bench.lock"),
            }
        }
        bail!("could not take {}", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Where and how results are written.
pub(crate) struct Output {
    pub json_path: PathBuf,
    pub header: String,
    pub rows: Vec<String>,
    pub names: Vec<String>,
    pub meta: serde_json::Value,
}

impl Output {
    /// Writes the JSON record and the Markdown text (`extra`, when not empty,
    /// follows the table); returns the text.
    pub fn write(
        &self,
        samples: &[Sample],
        sizes: &[SizeSample],
        extra: &str,
        complete: bool,
    ) -> Result<String> {
        let table = report::table(samples, sizes, &self.rows, &self.names);
        let notes = footnotes(samples);
        let partial = if complete {
            ""
        } else {
            "\n(partial: the run has not finished)\n"
        };
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!("\n{extra}")
        };
        let text = format!("{}\n{table}{extra}{notes}{partial}", self.header);
        let mut doc = self.meta.clone();
        doc["complete"] = json!(complete);
        doc["medians"] = report::medians_json(samples, sizes, &self.rows, &self.names);
        doc["samples"] = report::samples_json(samples);
        doc["repo_sizes"] = report::sizes_json(sizes);
        doc["markdown"] = json!(text);
        std::fs::write(&self.json_path, serde_json::to_string_pretty(&doc)?)?;
        std::fs::write(self.json_path.with_extension("md"), &text)?;
        Ok(text)
    }
}

/// Whether a corpus gets the prune row: trees, which have ten generations.
fn prunable(c: &Corpus) -> bool {
    matches!(c.shape, corpus::Shape::Tree { .. })
}

fn prune_row_name(c: &Corpus) -> String {
    format!("{} ({} snapshots)", c.name, corpus::TREE_GENERATIONS)
}

/// Snapshots kept by the prune row.
const PRUNE_KEEP: usize = 5;

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
pub(crate) struct Lane<'a> {
    pub tool: &'a Tool,
    pub repo: PathBuf,
    pub home: PathBuf,
    pub restore: PathBuf,
    pub logs: PathBuf,
    pub alive: bool,
}

/// A fresh directory `vdir` with one lane per tool below it, the tool order
/// rotated left by `rotate`.
pub(crate) fn make_lanes<'a>(
    tools: &'a [Tool],
    vdir: &Path,
    rotate: usize,
) -> Result<Vec<Lane<'a>>> {
    if vdir.exists() {
        std::fs::remove_dir_all(vdir)?;
    }
    let mut order: Vec<&Tool> = tools.iter().collect();
    let len = order.len();
    order.rotate_left(rotate % len);
    let lanes: Vec<Lane> = order
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
    Ok(lanes)
}

pub(crate) fn lane_names(lanes: &[Lane]) -> String {
    lanes
        .iter()
        .map(|l| l.tool.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Bench<'_> {
    /// One corpus in one mode, one round: every step, every tool.
    fn variant(&mut self, round: usize, c: &Corpus, mode: Mode, rotate: usize) -> Result<()> {
        let row = row_name(c, mode);
        let vdir = self.work.join(format!("{}-{}", c.name, mode.label()));
        let mut lanes = make_lanes(self.tools, &vdir, rotate)?;
        eprintln!(
            "\nxtask: round {}/{} · {row} · order {}",
            round + 1,
            self.o.rounds,
            lane_names(&lanes)
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
                            label: report::REPO_SIZE.into(),
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
                    peer: None,
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
        measure_step(self.o, self.drops, round, row, step, l, inv)
    }

    /// The prune row, one round: ten backups of the tree's ten generations,
    /// `snapshots` (the floor), then forget all but the last five and prune,
    /// with the repository size before and after; `check` must pass afterwards.
    fn prune_variant(&mut self, round: usize, c: &Corpus, rotate: usize) -> Result<()> {
        let row = prune_row_name(c);
        let vdir = self.work.join(format!("{}-prune", c.name));
        let mut lanes = make_lanes(self.tools, &vdir, rotate)?;
        eprintln!(
            "\nxtask: round {}/{} · {row} · order {}",
            round + 1,
            self.o.rounds,
            lane_names(&lanes)
        );
        let source = c.source(self.work);
        let archives: Vec<String> = (1..=corpus::TREE_GENERATIONS)
            .map(|g| format!("gen{g}"))
            .collect();
        let timeout = Duration::from_secs(self.o.timeout_secs);
        // Init and the ten backups: set-up, measured but not reported unless they fail.
        for l in lanes.iter_mut() {
            let inv = l.tool.invocation(Op::Init, &lane_ctx(l, None, "gen1"));
            let s = self.measure_one(round, &row, Step::Init, l, &inv)?;
            l.alive = s.ok;
            self.samples.push(s);
        }
        for (gi, archive) in archives.iter().enumerate() {
            c.set_generation(self.work, gi as u8 + 1)?;
            for l in lanes.iter_mut().filter(|l| l.alive) {
                let inv = l
                    .tool
                    .invocation(Op::Backup, &lane_ctx(l, Some(&source), archive));
                let log = l.logs.join(format!("{round}-{archive}"));
                let m = measure::run(&inv, &log, timeout)?;
                if !l.tool.succeeded(m.code) || m.timed_out {
                    l.alive = false;
                    eprintln!(
                        "xtask:   {} backup of generation {} FAILED: {}",
                        l.tool.name,
                        gi + 1,
                        m.output_tail(3).replace('\n', " | ")
                    );
                    self.samples.push(Sample {
                        round,
                        row: row.clone(),
                        step: Step::ForgetPrune,
                        tool: l.tool.name.into(),
                        wall_secs: m.wall_secs,
                        max_rss_kib: m.max_rss_kib,
                        sys_secs: m.sys_secs,
                        ok: false,
                        wrong: false,
                        note: Some(format!(
                            "backup of generation {} failed (exit {}): {}",
                            gi + 1,
                            m.code,
                            m.output_tail(3).replace('\n', " | ")
                        )),
                        io: m.io,
                    });
                }
            }
        }
        eprintln!("xtask:   {} backups made", corpus::TREE_GENERATIONS);
        for l in lanes.iter().filter(|l| l.alive) {
            let inv = l.tool.invocation(Op::Snapshots, &lane_ctx(l, None, "gen1"));
            let s = self.measure_one(round, &row, Step::Snapshots, l, &inv)?;
            self.samples.push(s);
        }
        for l in lanes.iter().filter(|l| l.alive) {
            self.sizes.push(SizeSample {
                round,
                row: row.clone(),
                tool: l.tool.name.into(),
                label: report::SIZE_BEFORE_PRUNE.into(),
                bytes: measure::dir_size(&l.repo),
            });
        }
        for l in lanes.iter().filter(|l| l.alive) {
            let inv = l
                .tool
                .invocation(Op::ForgetPrune(PRUNE_KEEP), &lane_ctx(l, None, "gen1"));
            let mut s = self.measure_one(round, &row, Step::ForgetPrune, l, &inv)?;
            self.sizes.push(SizeSample {
                round,
                row: row.clone(),
                tool: l.tool.name.into(),
                label: report::SIZE_AFTER_PRUNE.into(),
                bytes: measure::dir_size(&l.repo),
            });
            if s.ok {
                // The pruned repository must still be whole.
                let inv = l
                    .tool
                    .invocation(Op::CheckStructure, &lane_ctx(l, None, "gen1"));
                let m = measure::run(
                    &inv,
                    &l.logs.join(format!("{round}-check-after-prune")),
                    timeout,
                )?;
                if l.tool.succeeded(m.code) && !m.timed_out {
                    eprintln!("xtask:   check after prune passed ({})", l.tool.name);
                } else {
                    let why = m.output_tail(3).replace('\n', " | ");
                    eprintln!("xtask:   CHECK AFTER PRUNE FAILED ({}): {why}", l.tool.name);
                    s.ok = false;
                    s.wrong = true;
                    s.note = Some(format!(
                        "`check` failed after the prune (exit {}): {why}",
                        m.code
                    ));
                }
            }
            self.samples.push(s);
        }
        if !self.o.keep {
            std::fs::remove_dir_all(&vdir).with_context(|| format!("remove {}", vdir.display()))?;
        }
        Ok(())
    }
}

/// A step's context for a lane that only names its repository (and, for
/// backups, the source tree).
pub(crate) fn lane_ctx<'a>(l: &'a Lane, source: Option<&'a Path>, archive: &'a str) -> Ctx<'a> {
    Ctx {
        repo: &l.repo,
        home: &l.home,
        source,
        stdin_file: None,
        stdin_name: STDIN_NAME,
        archive,
        restore_archive: archive,
        restore_dir: &l.restore,
        peer: None,
    }
}

/// Runs one step of one lane (dropping the page cache first when `drops`)
/// and turns what it cost into a sample.
pub(crate) fn measure_step(
    o: &Opts,
    drops: bool,
    round: usize,
    row: &str,
    step: Step,
    l: &Lane,
    inv: &Invocation,
) -> Result<Sample> {
    if drops {
        measure::drop_caches();
    }
    let log = l.logs.join(format!("{}-{:?}", round, step).to_lowercase());
    let m = measure::run(inv, &log, Duration::from_secs(o.timeout_secs))?;
    let ran = l.tool.succeeded(m.code) && !m.timed_out;
    let mut note = (!ran).then(|| {
        let why = if m.timed_out {
            "timed out".to_string()
        } else {
            format!("exit {}", m.code)
        };
        format!("{why}: {}", m.output_tail(3).replace('\n', " | "))
    });
    // A stdin backup that stopped reading early saved something other than its input.
    let mut incorrect = false;
    if let (true, Some((read, size))) = (ran, m.stdin_read) {
        if read < size {
            incorrect = true;
            note = Some(format!(
                "read only {read} of the {size} bytes given on stdin, so its snapshot is not of its input"
            ));
        }
    }
    let ok = ran && !incorrect;
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
        sys_secs: m.sys_secs,
        ok,
        wrong: incorrect,
        note,
        io: m.io,
    })
}

fn footnotes(samples: &[Sample]) -> String {
    let mut out = String::new();
    let restores = samples.iter().any(|s| s.step == Step::Restore);
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| !s.ok && s.step != Step::Init)
        .collect();
    let init_failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| !s.ok && s.step == Step::Init)
        .collect();
    if failed.is_empty() && init_failed.is_empty() {
        out.push_str(if restores {
            "\nEvery command succeeded and every restore was verified byte for byte against its source.\n"
        } else {
            "\nEvery command succeeded.\n"
        });
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
    if restores {
        out.push_str("Every other restore was verified byte for byte against its source.\n");
    }
    out
}

pub(crate) fn detect_tools(o: &Opts) -> Result<Vec<Tool>> {
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

pub(crate) fn cairn_binary(o: &Opts) -> Result<PathBuf> {
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

pub(crate) fn git_revision() -> String {
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

pub(crate) fn machine() -> serde_json::Value {
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
    // SAFETY: plain syscall. Nice value of this run (the tools inherit it).
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    json!({"cpus": cpus, "cpu_model": model, "memory_bytes": mem_kib * 1024, "kernel": kernel, "nice": nice})
}

/// Peak RSS that `true` shows through this harness: the floor below which no
/// figure can go (a child spawned with vfork inherits its parent's high-water mark).
pub(crate) fn floor_rss(work: &Path) -> Result<u64> {
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
        "- machine: {} CPUs ({}), {:.1} GiB RAM, Linux {}{}\n",
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["memory_bytes"].as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64,
        m["kernel"].as_str().unwrap_or("?"),
        match m["nice"].as_i64() {
            Some(0) | None => String::new(),
            Some(n) => format!("; benchmark ran at nice {n}"),
        }
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
    if o.prune_row && corpora.iter().any(prunable) {
        h.push_str(&format!(
            "- prune row: {n} backups of the tree (generation g ≥ 2 edits its own 1% of the files, \
             every 100th from the (g−2)th), then `snapshots` (borg `list`: the floor; \"(+N MB)\" = peak RSS above it), \
             then forget all but the last {PRUNE_KEEP} and prune: cairn `forget --keep-last {PRUNE_KEEP} --prune`, \
             restic `forget --keep-last {PRUNE_KEEP} --prune`, rustic `forget --keep-last {PRUNE_KEEP} --prune --instant-delete`, \
             borg `prune --keep-last {PRUNE_KEEP}` + `compact` (one measurement through sh); \
             read / written = rchar / wchar of /proc/PID/io (disk = read_bytes / write_bytes; after the cache drop, \
             disk reads include paging in the program itself, and rchar does not count reads through mmap); \
             space freed = apparent size before − after; each repository must pass `check` (borg `check --archives-only`) afterwards; \
             `--no-prune-row` leaves it out\n",
            n = corpus::TREE_GENERATIONS
        ));
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

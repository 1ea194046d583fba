//! `cargo xtask scale`: how each command's wall time and peak RSS grow with the
//! number of blobs. Trees of N tiny files (200–400 random bytes, so one data
//! blob each, 1,000 files a directory) go through every command that reads or
//! rewrites the whole index, at two or more sizes; the slopes between the
//! smallest and the largest size give the cost per blob.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::json;

use crate::bench::{self, lane_ctx, make_lanes, measure_step, Lane, Output, RunLock};
use crate::corpus::{fresh_tmp, publish, stamp, thousands, Rng};
use crate::measure;
use crate::report::{self, Sample, SizeSample, Step};
use crate::tools::{Op, Tool};
use crate::{cache_dir, Opts};

/// Files a directory.
const PER_DIR: u64 = 1000;
/// The changed generation rewrites every 100th file (1 %).
const CHANGE_EVERY: u64 = 100;
const SEED: u64 = 0x5CA1E;
const CHANGED_SEED: u64 = 0xC4A9_6ED0;
/// A peak this close to the `snapshots` floor is taken as the floor itself.
const FLOOR_BOUND_BYTES: f64 = 2e6;

/// The steps after `init`, in order, with the operation and the tree
/// generation each one backs up.
const STEPS: [(Step, Op); 10] = [
    (Step::First, Op::Backup),
    (Step::Snapshots, Op::Snapshots),
    (Step::Unchanged, Op::Backup),
    (Step::Changed, Op::Backup),
    (Step::CheckStructure, Op::CheckStructure),
    (Step::Check, Op::Check),
    (Step::Forget, Op::Forget(1)),
    (Step::PruneDryRun, Op::Prune(true)),
    (Step::Prune, Op::Prune(false)),
    (Step::Copy, Op::Copy),
];

pub fn run(o: &Opts) -> Result<()> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)?;
    let _lock = RunLock::take(&cache)?;
    let mut o = o.clone();
    if o.tools.is_none() {
        o.tools = Some(vec!["cairn".into(), "restic".into()]);
    }
    let tools = bench::detect_tools(&o)?;
    if tools.is_empty() {
        bail!("no tool to measure");
    }
    let mut sizes = o.files.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let trees: Vec<PathBuf> = sizes
        .iter()
        .map(|&n| prepare_tree(&cache, n))
        .collect::<Result<_>>()?;
    let drops = o.drop_caches && measure::drop_caches();
    if o.drop_caches && !drops {
        eprintln!("xtask: cannot drop the page cache (needs root); steps run with a warm cache");
    }
    let work = cache.join("scale-work");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let floor = bench::floor_rss(&work)?;
    let header = header(&o, &tools, &sizes, drops, floor);
    eprintln!("{header}");
    let rows: Vec<String> = sizes.iter().map(|&n| row_name(n)).collect();
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    let results = cache.join("results");
    std::fs::create_dir_all(&results)?;
    let mut out = Output {
        json_path: results.join(format!("scale-{}.json", bench::now_utc().replace(':', ""))),
        header,
        rows: rows.clone(),
        names: names.clone(),
        meta: json!({
            "date": bench::now_utc(),
            "machine": bench::machine(),
            "tools": tools.iter().map(|t| json!({"name": t.name, "version": t.version, "path": t.bin})).collect::<Vec<_>>(),
            "files": sizes,
            "page_cache_dropped": drops,
            "rss_floor_kib": floor,
        }),
    };
    let mut samples: Vec<Sample> = Vec::new();
    let mut repo_sizes: Vec<SizeSample> = Vec::new();
    for (i, (&n, tree)) in sizes.iter().zip(&trees).enumerate() {
        let r = one_size(
            &o,
            &tools,
            &work,
            drops,
            n,
            tree,
            i,
            &mut samples,
            &mut repo_sizes,
        );
        // Whatever happened, the cached tree goes back to generation 1.
        set_generation(tree, n, 1)?;
        r?;
        out.write(&samples, &repo_sizes, "", false)?;
    }
    let (slopes_md, slopes_json) = slopes(&samples, &sizes, &rows, &names);
    out.meta["slopes"] = slopes_json;
    if !o.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    let text = out.write(&samples, &repo_sizes, &slopes_md, true)?;
    println!("{text}");
    eprintln!(
        "xtask: results written to {} (and .md)",
        out.json_path.display()
    );
    Ok(())
}

fn row_name(n: u64) -> String {
    format!("{} files", thousands(n))
}

/// Every step at one size, tools interleaved step by step.
#[allow(clippy::too_many_arguments)]
fn one_size(
    o: &Opts,
    tools: &[Tool],
    work: &Path,
    drops: bool,
    n: u64,
    tree: &Path,
    rotate: usize,
    samples: &mut Vec<Sample>,
    repo_sizes: &mut Vec<SizeSample>,
) -> Result<()> {
    let row = row_name(n);
    let vdir = work.join(format!("n{n}"));
    let mut lanes = make_lanes(tools, &vdir, rotate)?;
    eprintln!("\nxtask: {row} · order {}", bench::lane_names(&lanes));
    set_generation(tree, n, 1)?;
    let peer_of = |l: &Lane| l.repo.with_file_name("copy");
    let size = |l: &Lane, label: &str| SizeSample {
        round: 0,
        row: row.clone(),
        tool: l.tool.name.into(),
        label: label.into(),
        bytes: measure::dir_size(&l.repo),
    };

    for l in lanes.iter_mut() {
        let inv = l.tool.invocation(Op::Init, &lane_ctx(l, None, "first"));
        let s = measure_step(o, drops, 0, &row, Step::Init, l, &inv)?;
        l.alive = s.ok;
        samples.push(s);
    }
    for (step, op) in STEPS {
        if step == Step::Changed {
            set_generation(tree, n, 2)?;
        }
        let archive = match step {
            Step::Unchanged => "unchanged",
            Step::Changed => "changed",
            _ => "first",
        };
        for l in lanes.iter_mut().filter(|l| l.alive) {
            if !l.tool.supports(op) {
                continue;
            }
            let peer = peer_of(l);
            let mut ctx = lane_ctx(l, Some(tree), archive);
            ctx.peer = Some(&peer);
            if op == Op::Copy {
                // The destination, made with the source's chunker parameters: set-up.
                let inv = l.tool.invocation(Op::InitFrom, &ctx);
                let log = l.logs.join("init-copy-destination");
                let m = measure::run(&inv, &log, std::time::Duration::from_secs(o.timeout_secs))?;
                if !l.tool.succeeded(m.code) {
                    eprintln!(
                        "xtask:   {}: could not make the copy destination: {}",
                        l.tool.name,
                        m.output_tail(3).replace('\n', " | ")
                    );
                }
            }
            let inv = l.tool.invocation(op, &ctx);
            let s = measure_step(o, drops, 0, &row, step, l, &inv)?;
            if !s.ok && step == Step::First {
                l.alive = false;
            }
            samples.push(s);
            match step {
                Step::Changed => repo_sizes.push(size(l, report::REPO_SIZE)),
                Step::Forget => repo_sizes.push(size(l, report::SIZE_BEFORE_PRUNE)),
                Step::Prune => repo_sizes.push(size(l, report::SIZE_AFTER_PRUNE)),
                _ => {}
            }
        }
    }
    drop(lanes);
    if !o.keep {
        std::fs::remove_dir_all(&vdir)?;
    }
    Ok(())
}

// ---- the trees ------------------------------------------------------------------

/// The contents of file `i` in a generation: 200–400 random bytes.
fn contents(i: u64, generation: u8) -> Vec<u8> {
    let seed = if generation == 1 {
        SEED ^ i
    } else {
        CHANGED_SEED ^ (i << 8) ^ generation as u64
    };
    let mut rng = Rng::new(seed);
    let len = 200 + rng.below(201) as usize;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

fn file_path(tree: &Path, i: u64) -> PathBuf {
    tree.join(format!("d{:05}", i / PER_DIR))
        .join(format!("f{:04}.bin", i % PER_DIR))
}

/// `$CAIRN_BENCH_DIR/scale-N/tree`, generated once.
fn prepare_tree(cache: &Path, n: u64) -> Result<PathBuf> {
    let dir = cache.join(format!("scale-{n}"));
    if !stamp(&dir).exists() {
        eprintln!(
            "xtask: generating {} files in {} ...",
            thousands(n),
            dir.display()
        );
        let tmp = fresh_tmp(&dir)?;
        let tree = tmp.join("tree");
        for i in 0..n {
            if i % PER_DIR == 0 {
                std::fs::create_dir_all(file_path(&tree, i).parent().unwrap())?;
            }
            std::fs::write(file_path(&tree, i), contents(i, 1))?;
        }
        publish(
            &tmp,
            &dir,
            &format!(
                "{n} files of 200-400 random bytes, {PER_DIR} a directory (cargo xtask scale)"
            ),
        )?;
    }
    Ok(dir.join("tree"))
}

/// Rewrites the changing 1 % of the files in place with a generation's contents
/// (generation 1 is the tree as generated).
fn set_generation(tree: &Path, n: u64, generation: u8) -> Result<()> {
    for i in (0..n).step_by(CHANGE_EVERY as usize) {
        std::fs::write(file_path(tree, i), contents(i, generation))?;
    }
    Ok(())
}

// ---- the report -----------------------------------------------------------------

/// The slopes between the smallest and the largest size, per step and tool:
/// wall µs per blob and peak-RSS bytes per blob.
fn slopes(
    samples: &[Sample],
    sizes: &[u64],
    rows: &[String],
    tools: &[String],
) -> (String, serde_json::Value) {
    if sizes.len() < 2 {
        return (String::new(), json!(null));
    }
    let (n0, n1) = (sizes[0], sizes[sizes.len() - 1]);
    let (r0, r1) = (&rows[0], &rows[rows.len() - 1]);
    let dn = (n1 - n0) as f64;
    let mut md = format!(
        "Slopes between {r0} and {r1}: (value at {} − value at {}) / {} files. \
         One file is one data blob (plus one tree blob per {PER_DIR} files).\n\n| step |",
        thousands(n1),
        thousands(n0),
        thousands(n1 - n0)
    );
    for t in tools {
        let _ = write!(md, " {t} µs/blob | {t} RSS bytes/blob |");
    }
    md.push_str("\n|---|");
    for _ in tools {
        md.push_str("---:|---:|");
    }
    md.push('\n');
    let mut js = serde_json::Map::new();
    let mut floor_bound = false;
    for step in Step::REPORTED {
        if !samples.iter().any(|s| s.step == step) {
            continue;
        }
        let _ = write!(md, "| {} |", step.label());
        let mut per = serde_json::Map::new();
        for t in tools {
            let a = report::cell(samples, r0, step, t);
            let b = report::cell(samples, r1, step, t);
            match (a.secs, b.secs, a.rss_bytes, b.rss_bytes) {
                (Some(s0), Some(s1), Some(m0), Some(m1)) => {
                    let us = (s1 - s0) / dn * 1e6;
                    let bytes = (m1 - m0) / dn;
                    // At the floor (the key derivation's buffer, for cairn) the
                    // peak hides the work's memory: the slope understates it.
                    let floor = report::cell(samples, r0, Step::Snapshots, t).rss_bytes;
                    let bound = step != Step::Snapshots
                        && floor.is_some_and(|f| m0 - f < FLOOR_BOUND_BYTES);
                    floor_bound |= bound;
                    let _ = write!(
                        md,
                        " {us:.1} | {bytes:.0}{} |",
                        if bound { " †" } else { "" }
                    );
                    per.insert(
                        t.clone(),
                        json!({"us_per_blob": us, "rss_bytes_per_blob": bytes, "floor_bound": bound}),
                    );
                }
                _ => md.push_str(" — | — |"),
            }
        }
        md.push('\n');
        js.insert(step.label().into(), serde_json::Value::Object(per));
    }
    if floor_bound {
        let _ = write!(
            md,
            "\n† at {r0} this step's peak RSS is within {:.0} MB of the tool's `snapshots` floor (for cairn, the \
             key derivation's buffer), so the work's own memory is hidden below it and the slope understates \
             the bytes per blob; larger sizes measure it.\n",
            FLOOR_BOUND_BYTES / 1e6
        );
    }
    (md, json!({"from_files": n0, "to_files": n1, "steps": js}))
}

fn header(o: &Opts, tools: &[Tool], sizes: &[u64], drops: bool, floor_kib: u64) -> String {
    let m = bench::machine();
    let mut h = String::new();
    h.push_str("### cargo xtask scale\n\n");
    let _ = writeln!(h, "- date: {}", bench::now_utc());
    let _ = writeln!(
        h,
        "- machine: {} CPUs ({}), {:.1} GiB RAM, Linux {}",
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["memory_bytes"].as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64,
        m["kernel"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        h,
        "- tools: {}",
        tools
            .iter()
            .map(|t| t.version.clone())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        h,
        "- trees: {} files of 200–400 random bytes (one blob each), {PER_DIR} a directory; \
         changed generation: every {CHANGE_EVERY}th file rewritten",
        sizes
            .iter()
            .map(|&n| thousands(n))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let _ = writeln!(
        h,
        "- steps, in order: init, first backup, `snapshots` (the floor; borg `list`), unchanged re-backup, \
         changed backup, `check`, `check --read-data`, `forget --keep-last 1`, `prune --dry-run`, `prune` \
         (rustic `--instant-delete`; borg `compact`), `copy` of what is left to a repository made with the \
         source's chunker parameters (cairn `init --from` + `copy --to`, restic `init --copy-chunker-params` + \
         `copy --from-repo`); each tool at default settings (KDF included)"
    );
    let _ = writeln!(
        h,
        "- method: one run per size, tools interleaved step by step; page cache dropped before every command: {}; \
         wall time and peak RSS from wait4(2), \"(+N MB)\" = peak RSS above the tool's own `snapshots` at that size; \
         peak RSS of `true` through this harness: {:.1} MB",
        if drops { "yes" } else { "no" },
        floor_kib as f64 * 1024.0 / 1e6
    );
    let mut cmd = format!(
        "cargo xtask scale --files {}",
        sizes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    if let Some(t) = &o.tools {
        let _ = write!(cmd, " --tools {}", t.join(","));
    }
    let _ = writeln!(h, "- reproduce: `{cmd}`");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_200_to_400_bytes_distinct_and_change_between_generations() {
        let a: Vec<Vec<u8>> = (0..300).map(|i| contents(i, 1)).collect();
        assert!(a.iter().all(|f| (200..=400).contains(&f.len())));
        let mut d = a.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), a.len());
        assert_eq!(contents(7, 1), a[7]);
        assert_ne!(contents(7, 2), a[7]);
        assert_eq!(
            file_path(Path::new("/t"), 12_345),
            Path::new("/t/d00012/f0345.bin")
        );
    }

    #[test]
    fn slopes_are_per_blob() {
        let s = |row: &str, secs: f64, kib: u64| Sample {
            round: 0,
            row: row.into(),
            step: Step::First,
            tool: "cairn".into(),
            wall_secs: secs,
            max_rss_kib: kib,
            sys_secs: 0.0,
            ok: true,
            wrong: false,
            note: None,
            io: None,
        };
        let samples = vec![s("a", 1.0, 1000), s("b", 11.0, 2000)];
        let (md, js) = slopes(
            &samples,
            &[1000, 11_000],
            &["a".into(), "b".into()],
            &["cairn".into()],
        );
        // 10 s over 10,000 blobs = 1000 µs; 1,024,000 bytes over 10,000 = 102 bytes.
        assert!(md.contains("| first backup | 1000.0 | 102 |"), "{md}");
        assert_eq!(js["steps"]["first backup"]["cairn"]["us_per_blob"], 1000.0);
    }
}

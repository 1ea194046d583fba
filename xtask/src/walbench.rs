//! `cargo xtask bench-wal`: how fast `wal-push` archives PostgreSQL WAL
//! beside `cp` (what an `archive_command` usually is), and how much
//! repository a stretch of pgbench WAL takes against its raw size.
//!
//! A throwaway cluster (Debian's PostgreSQL; as the `postgres` user when
//! run as root) archives with `cp` into a folder while pgbench runs for
//! `--seconds`; the collected segments are then archived again, one
//! process a segment as PostgreSQL runs them, by each contender in turn:
//! `cp`, `cairn wal-push` (spooled, a background flusher) and `cairn
//! wal-push --sync`. Medians of `--rounds`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::measure::dir_size;
use crate::Opts;

const PASSWORD: &str = "bench-wal";

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the cluster's owner (postgres under root).
pub(crate) fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(crate) fn bindir() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (apt-get install postgresql)")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file() && b.join("pgbench").is_file())
        .collect();
    found.sort();
    found
        .pop()
        .context("no PostgreSQL with initdb and pgbench under /usr/lib/postgresql")
}

/// Runs pgbench against a fresh cluster archiving with `cp` into `raw`.
fn generate_wal(work: &Path, raw: &Path, seconds: u64, scale: u32) -> Result<()> {
    std::fs::create_dir_all(raw)?;
    let archive = format!("cp %p {}/%f", raw.display());
    let c = crate::dbbench::Cluster::start(
        work,
        &[
            ("wal_level", "replica"),
            ("archive_mode", "on"),
            ("archive_command", &archive),
            ("max_wal_size", "4GB"),
            ("synchronous_commit", "off"),
        ],
    )?;
    eprintln!("xtask: pgbench -i -s {scale}, then pgbench -T {seconds} -c 4 ...");
    run(
        c.tool("pgbench")
            .args(["-i", "-q", "-s", &scale.to_string(), "postgres"]),
        "pgbench -i",
    )?;
    run(
        c.tool("pgbench")
            .args(["-T", &seconds.to_string(), "-c", "4", "-j", "2", "postgres"]),
        "pgbench",
    )?;
    run(
        c.tool("psql")
            .args(["-X", "-c", "SELECT pg_switch_wal()", "postgres"]),
        "pg_switch_wal",
    )?;
    std::thread::sleep(Duration::from_secs(2));
    // Dropping the cluster shuts it down fast, which archives what is left.
    Ok(())
}

/// The archived segments, sorted (history and backup files left out).
fn segments(raw: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(raw)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.len() == 24))
        .collect();
    out.sort();
    Ok(out)
}

struct Round {
    /// Until the last archive command returned.
    acknowledged: Duration,
    /// Until everything was in the repository (the flusher finished).
    stored: Duration,
    repo_bytes: u64,
}

fn cairn(bin: &Path, repo: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("-r")
        .arg(repo)
        .env("CAIRN_PASSWORD", PASSWORD)
        .env_remove("CAIRN_REPO");
    c
}

fn archive_round(
    contender: &str,
    cairn_bin: &Path,
    segs: &[PathBuf],
    work: &Path,
) -> Result<Round> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;
    let (repo, spool, dest) = (work.join("repo"), work.join("spool"), work.join("cp"));
    if contender != "cp" {
        run(cairn(cairn_bin, &repo).args(["init"]), "cairn init")?;
    } else {
        std::fs::create_dir_all(&dest)?;
    }
    crate::measure::drop_caches();
    let start = Instant::now();
    for s in segs {
        let mut cmd = match contender {
            "cp" => {
                let mut c = Command::new("cp");
                c.arg(s).arg(dest.join(s.file_name().unwrap()));
                c
            }
            _ => {
                let mut c = cairn(cairn_bin, &repo);
                c.arg("wal-push").arg("--spool").arg(&spool);
                if contender.ends_with("--sync") {
                    c.arg("--sync");
                }
                c.arg(s);
                c
            }
        };
        run(&mut cmd, contender)?;
    }
    let acknowledged = start.elapsed();
    if contender == "cp" {
        // cp returns before the data is on disk; wal-push does not.
        run(Command::new("sync").arg("-f").arg(&dest), "sync")?;
        return Ok(Round {
            acknowledged,
            stored: start.elapsed(),
            repo_bytes: dir_size(&dest),
        });
    }
    // The flusher is done when the spool holds no segment and its lock is free.
    let flusher_done = || {
        let spooled = std::fs::read_dir(&spool)
            .map(|rd| rd.flatten().any(|e| e.file_name().len() == 24))
            .unwrap_or(false);
        !spooled
            && Command::new("flock")
                .args(["-n"])
                .arg(spool.join(".flusher"))
                .arg("true")
                .status()
                .is_ok_and(|s| s.success())
    };
    while !flusher_done() {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Round {
        acknowledged,
        stored: start.elapsed(),
        repo_bytes: dir_size(&repo),
    })
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn run_bench(o: &Opts, seconds: u64) -> Result<()> {
    let cairn_bin = crate::bench::cairn_binary(o)?;
    let base = crate::cache_dir().join("wal");
    let raw = base.join(format!("raw-{seconds}s"));
    if segments(&raw).map(|s| s.len()).unwrap_or(0) == 0 {
        // The server's user must reach the cluster and the archive: both
        // under /tmp while generating, the WAL moved into the cache after.
        let gen = std::env::temp_dir().join(format!("cairn-bench-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&gen);
        std::fs::create_dir_all(&gen)?;
        let made = generate_wal(
            &gen,
            &gen.join("raw"),
            seconds,
            if o.quick { 5 } else { 50 },
        );
        if made.is_ok() {
            let _ = std::fs::remove_dir_all(&raw);
            std::fs::create_dir_all(&raw)?;
            for s in segments(&gen.join("raw"))? {
                std::fs::copy(&s, raw.join(s.file_name().unwrap()))?;
            }
        }
        let _ = std::fs::remove_dir_all(&gen);
        made?;
    }
    let segs = segments(&raw)?;
    let raw_bytes: u64 = segs
        .iter()
        .map(|s| s.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    eprintln!(
        "xtask: {} segments, {:.0} MB of WAL from {seconds} s of pgbench",
        segs.len(),
        raw_bytes as f64 / 1e6
    );
    let contenders = ["cp", "cairn wal-push", "cairn wal-push --sync"];
    let rounds = if o.rounds == 0 {
        if o.quick {
            1
        } else {
            3
        }
    } else {
        o.rounds
    };
    let mut results: Vec<Vec<Round>> = contenders.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        for (i, c) in contenders.iter().enumerate() {
            eprintln!("xtask: round {}/{rounds}: {c} ...", r + 1);
            results[i].push(archive_round(c, &cairn_bin, &segs, &base.join("work"))?);
        }
    }
    let _ = std::fs::remove_dir_all(base.join("work"));
    let n = segs.len() as f64;
    println!("WAL archiving, {} segments ({:.0} MB) of pgbench WAL, median of {rounds} rounds, one process a segment:\n", segs.len(), raw_bytes as f64 / 1e6);
    println!("| archive_command | acknowledged, segments/s | in the archive, segments/s | archive size | vs raw WAL |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let cp_rate = n / median(
        results[0]
            .iter()
            .map(|r| r.acknowledged.as_secs_f64())
            .collect(),
    );
    for (c, rs) in contenders.iter().zip(&results) {
        let ack = n / median(rs.iter().map(|r| r.acknowledged.as_secs_f64()).collect());
        let stored = n / median(rs.iter().map(|r| r.stored.as_secs_f64()).collect());
        let size = median(rs.iter().map(|r| r.repo_bytes as f64).collect());
        println!(
            "| `{c}` | {ack:.1} ({:.2}× cp) | {stored:.1} | {:.0} MB | {:.1}% |",
            ack / cp_rate,
            size / 1e6,
            100.0 * size / raw_bytes.max(1) as f64
        );
    }
    Ok(())
}

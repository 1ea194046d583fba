//! `cargo xtask fleet`: many hosts, one bucket (issue 22). For each fleet
//! size, H processes with distinct `--host` (each with its own cache folder,
//! as separate machines would have) back up their own trees into one S3
//! bucket (a local moto server) at once, round after round, while an admin
//! runs `forget --keep-last 2` + `prune` in a loop and a verifier runs
//! budgeted `check` passes and `copy --to` a second bucket. Afterwards every
//! host's kept snapshots must be listed and its newest must restore to its
//! tree byte for byte, and both repositories must check clean.
//!
//! Printed per fleet size: backups, failures, lock waits (exit 11), the
//! medians per backup of wall time, CPU time and requests (as each backup's
//! `--json` counts them), and per prune the list requests. On a small machine
//! wall time grows with H because H clients and the server share its cores;
//! CPU time and requests are what must stay flat.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::{self, RunLock};
use crate::cloud::Moto;
use crate::measure::{self, Invocation};
use crate::walbench::median;
use crate::{cache_dir, Opts};

const PASSWORD: &str = "fleet password";
const UNIQUE_FILES: usize = 40;
const SHARED_FILES: usize = 20;
const CHANGED_PER_ROUND: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(900);

/// One command a fleet member ran.
#[derive(Debug, Clone)]
struct Ran {
    wall: f64,
    cpu: f64,
    code: i32,
    out: Value,
    stderr: String,
}

/// What one fleet size measured.
#[derive(Debug, Default)]
struct FleetResult {
    hosts: usize,
    backups: Vec<Ran>,
    prunes: Vec<Ran>,
    checks: Vec<Ran>,
    copies: Vec<Ran>,
    /// Per host, the snapshot IDs its backups reported, in order.
    reported: BTreeMap<usize, Vec<String>>,
    problems: Vec<String>,
}

pub fn run(o: &Opts, hosts: &[usize]) -> Result<()> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache)?;
    let _lock = RunLock::take(&cache)?;
    let cairn = bench::cairn_binary(o)?;
    let rounds = if o.quick { 2 } else { o.rounds.max(2) };
    let work = cache.join("fleet-work");
    let mut results = Vec::new();
    for &h in hosts {
        if work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;
        eprintln!("xtask: fleet of {h} hosts, {rounds} backups each ...");
        let r = one_fleet(&cairn, h, rounds, &work)?;
        eprintln!("{}", row(&r));
        results.push(r);
    }
    if !o.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    let table = report(&results, rounds);
    println!("{table}");
    let json_out = cache.join("fleet-results.json");
    std::fs::write(
        &json_out,
        serde_json::to_vec_pretty(&json!({
            "revision": bench::git_revision(),
            "time": bench::now_utc(),
            "machine": bench::machine(),
            "rounds": rounds,
            "fleets": results.iter().map(summary).collect::<Vec<_>>(),
        }))?,
    )?;
    eprintln!("xtask: results in {}", json_out.display());
    let problems: Vec<&String> = results.iter().flat_map(|r| &r.problems).collect();
    if !problems.is_empty() {
        bail!(
            "the fleet lost or broke something:\n  {}",
            problems
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    Ok(())
}

/// How cairn is called against the fleet's buckets.
struct Fleet<'a> {
    cairn: &'a Path,
    moto: &'a Moto,
    work: &'a Path,
    url: String,
    copy_url: String,
}

impl Fleet<'_> {
    fn cmd(&self, url: &str, cache: &str, args: &[&str]) -> Invocation {
        let mut argv: Vec<OsString> = vec![self.cairn.into(), "-r".into(), url.into()];
        for o in self.moto.options() {
            argv.push("-o".into());
            argv.push(o.into());
        }
        let cache_dir = self.work.join("cache").join(cache);
        argv.extend(
            [
                "--event-log",
                "/dev/null",
                "--json",
                "--cache-dir",
                cache_dir.to_str().unwrap(),
            ]
            .map(OsString::from),
        );
        argv.extend(args.iter().map(OsString::from));
        Invocation {
            argv,
            env: vec![("CAIRN_PASSWORD".into(), PASSWORD.into())],
            ..Default::default()
        }
    }

    fn run(&self, url: &str, cache: &str, log: &str, args: &[&str]) -> Result<Ran> {
        let logs = self.work.join("logs");
        std::fs::create_dir_all(&logs)?;
        let m = measure::run(&self.cmd(url, cache, args), &logs.join(log), TIMEOUT)?;
        let stdout = std::fs::read_to_string(&m.stdout).unwrap_or_default();
        let stderr = std::fs::read_to_string(&m.stderr).unwrap_or_default();
        // The last JSON document (forget --prune prints two).
        let out = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .or_else(|| serde_json::from_str(&stdout).ok())
            .unwrap_or(Value::Null);
        Ok(Ran {
            wall: m.wall_secs,
            cpu: m.user_secs + m.sys_secs,
            code: m.code,
            out,
            stderr,
        })
    }

    fn must(&self, url: &str, cache: &str, log: &str, args: &[&str]) -> Result<Ran> {
        let r = self.run(url, cache, log, args)?;
        if r.code != 0 {
            bail!("cairn {args:?} exited {}: {}", r.code, r.stderr.trim());
        }
        Ok(r)
    }
}

fn one_fleet(cairn: &Path, h: usize, rounds: usize, work: &Path) -> Result<FleetResult> {
    let moto = Moto::start(&work.join("moto.log"))?;
    moto.make_bucket("fleet")?;
    moto.make_bucket("fleet-copy")?;
    let f = Fleet {
        cairn,
        moto: &moto,
        work,
        url: "s3://fleet/repo".into(),
        copy_url: "s3://fleet-copy/repo".into(),
    };
    f.must(&f.url, "admin", "init", &["init"])?;
    let mut from = vec!["init", "--from", f.url.as_str()];
    let from_opts: Vec<String> = moto.options();
    for o in &from_opts {
        from.extend(["--from-option", o.as_str()]);
    }
    f.must(&f.copy_url, "verifier", "init-copy", &from)?;
    let trees: Vec<PathBuf> = (0..h)
        .map(|k| work.join("trees").join(format!("h{k:02}")))
        .collect();
    for (k, t) in trees.iter().enumerate() {
        write_tree(t, k, 0)?;
    }

    let result = Mutex::new(FleetResult {
        hosts: h,
        ..Default::default()
    });
    let done = AtomicBool::new(false);
    let to_options: Vec<String> = moto.options();
    std::thread::scope(|s| -> Result<()> {
        let admin = s.spawn(|| -> Result<()> {
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                let forget = f.run(
                    &f.url,
                    "admin",
                    &format!("forget-{i}"),
                    &["forget", "--keep-last", "2"],
                )?;
                let prune = f.run(&f.url, "admin", &format!("prune-{i}"), &["prune"])?;
                let mut r = result.lock().unwrap();
                for (what, ran) in [("forget", &forget), ("prune", &prune)] {
                    if ran.code != 0 {
                        r.problems.push(format!(
                            "{h} hosts: {what} exited {}: {}",
                            ran.code,
                            ran.stderr.trim()
                        ));
                    }
                }
                r.prunes.push(prune);
                drop(r);
                i += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(())
        });
        let verifier = s.spawn(|| -> Result<()> {
            let mut i = 0;
            while !done.load(Ordering::SeqCst) {
                let check = f.run(
                    &f.url,
                    "verifier",
                    &format!("check-{i}"),
                    &["check", "--max-bytes", "4M"],
                )?;
                let mut copy_args = vec!["copy", "--to", f.copy_url.as_str()];
                for o in &to_options {
                    copy_args.extend(["--to-option", o.as_str()]);
                }
                let copy = f.run(&f.url, "verifier", &format!("copy-{i}"), &copy_args)?;
                let mut r = result.lock().unwrap();
                for (what, ran) in [("check", &check), ("copy", &copy)] {
                    if ran.code != 0 {
                        r.problems.push(format!(
                            "{h} hosts: {what} exited {}: {}",
                            ran.code,
                            ran.stderr.trim()
                        ));
                    }
                }
                r.checks.push(check);
                r.copies.push(copy);
                drop(r);
                i += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            Ok(())
        });
        let members: Vec<_> = trees
            .iter()
            .enumerate()
            .map(|(k, tree)| {
                let (f, result) = (&f, &result);
                s.spawn(move || -> Result<()> {
                    let host = format!("h{k:02}");
                    for round in 0..rounds {
                        if round > 0 {
                            write_tree(tree, k, round)?;
                        }
                        let ran = f.run(
                            &f.url,
                            &host,
                            &format!("backup-{host}-{round}"),
                            &["backup", "--host", &host, tree.to_str().unwrap()],
                        )?;
                        let mut r = result.lock().unwrap();
                        match ran.out["snapshot_id"].as_str() {
                            Some(id) if ran.code == 0 => {
                                r.reported.entry(k).or_default().push(id.to_string())
                            }
                            _ => r.problems.push(format!(
                                "{h} hosts: backup of {host} round {round} exited {}: {}",
                                ran.code,
                                ran.stderr.trim()
                            )),
                        }
                        r.backups.push(ran);
                    }
                    Ok(())
                })
            })
            .collect();
        let mut first_err = None;
        for m in members {
            if let Err(e) = m.join().expect("a fleet member panicked") {
                first_err.get_or_insert(e);
            }
        }
        done.store(true, Ordering::SeqCst);
        for t in [admin, verifier] {
            if let Err(e) = t.join().expect("the admin or verifier panicked") {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    })?;
    let mut r = result.into_inner().unwrap();
    verify_nothing_lost(&f, &trees, &mut r)?;
    Ok(r)
}

/// After the fleet: one more forget + prune, then every host's two newest
/// reported snapshots are listed, its newest restores to its tree, and both
/// repositories pass `check --read-data`.
fn verify_nothing_lost(f: &Fleet, trees: &[PathBuf], r: &mut FleetResult) -> Result<()> {
    f.must(
        &f.url,
        "admin",
        "forget-final",
        &["forget", "--keep-last", "2"],
    )?;
    let prune = f.must(&f.url, "admin", "prune-final", &["prune"])?;
    r.prunes.push(prune);
    let listed = f.must(&f.url, "admin", "snapshots", &["snapshots"])?;
    let ids: Vec<String> = listed
        .out
        .as_array()
        .context("snapshots --json is an array")?
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    let h = r.hosts;
    for (k, tree) in trees.iter().enumerate() {
        let reported = r.reported.get(&k).cloned().unwrap_or_default();
        for id in reported.iter().rev().take(2) {
            if !ids.contains(id) {
                r.problems.push(format!(
                    "{h} hosts: snapshot {id} of h{k:02} was reported saved and is gone"
                ));
            }
        }
        let Some(newest) = reported.last() else {
            continue;
        };
        let target = f.work.join("restore").join(format!("h{k:02}"));
        f.must(
            &f.url,
            "admin",
            &format!("restore-h{k:02}"),
            &["restore", newest, "--target", target.to_str().unwrap()],
        )?;
        let restored = target.join(tree.strip_prefix("/").unwrap_or(tree));
        if let Some(diff) = first_difference(tree, &restored)? {
            r.problems.push(format!(
                "{h} hosts: h{k:02}'s newest snapshot restores wrong: {diff}"
            ));
        }
    }
    for (url, cache) in [(&f.url, "admin"), (&f.copy_url, "verifier")] {
        let c = f.run(url, cache, "check-final", &["check", "--read-data"])?;
        if c.code != 0 {
            r.problems.push(format!(
                "{h} hosts: check --read-data of {url} exited {}: {}",
                c.code,
                c.stderr.trim()
            ));
        }
    }
    Ok(())
}

/// The first file that differs between two trees, if any.
fn first_difference(a: &Path, b: &Path) -> Result<Option<String>> {
    for e in std::fs::read_dir(a).with_context(|| format!("read {}", a.display()))? {
        let name = e?.file_name();
        let (x, y) = (a.join(&name), b.join(&name));
        match std::fs::read(&y) {
            Ok(bytes) if bytes == std::fs::read(&x)? => {}
            Ok(_) => return Ok(Some(format!("{} differs", y.display()))),
            Err(e) => return Ok(Some(format!("{}: {e}", y.display()))),
        }
    }
    Ok(None)
}

/// A host's tree: unique files (a share of them rewritten each round) and
/// files every host shares, which dedup across hosts.
fn write_tree(dir: &Path, host: usize, round: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if round == 0 {
        for i in 0..SHARED_FILES {
            let len = 8_192 + 1_024 * i;
            std::fs::write(
                dir.join(format!("shared-{i:02}")),
                bytes(len, 1_000 + i as u64),
            )?;
        }
    }
    for i in 0..UNIQUE_FILES {
        // Round r rewrites the r-th block of CHANGED_PER_ROUND files.
        let blocks = UNIQUE_FILES / CHANGED_PER_ROUND;
        let changed = round > 0 && i / CHANGED_PER_ROUND == round % blocks;
        if round == 0 || changed {
            let len = 4_096 + 1_536 * i;
            let seed = ((host as u64) << 32) ^ ((round as u64) << 16) ^ i as u64;
            std::fs::write(dir.join(format!("own-{i:02}")), bytes(len, seed))?;
        }
    }
    Ok(())
}

/// Incompressible bytes from a seed (xorshift64*).
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn requests(r: &Ran, kind: &str) -> f64 {
    r.out["requests"][kind].as_f64().unwrap_or(0.0)
}

fn total_requests(r: &Ran) -> f64 {
    ["put", "get", "list", "head", "delete"]
        .iter()
        .map(|k| requests(r, k))
        .sum()
}

fn med(runs: &[Ran], f: impl Fn(&Ran) -> f64) -> f64 {
    if runs.is_empty() {
        return 0.0;
    }
    median(runs.iter().map(f).collect())
}

fn lock_waits(r: &FleetResult) -> usize {
    r.backups
        .iter()
        .chain(&r.prunes)
        .chain(&r.checks)
        .chain(&r.copies)
        .filter(|x| x.code == 11)
        .count()
}

fn summary(r: &FleetResult) -> Value {
    let by = |kind: &str| med(&r.backups, |x| requests(x, kind));
    json!({
        "hosts": r.hosts,
        "backups": r.backups.len(),
        "backups_failed": r.backups.iter().filter(|b| b.code != 0).count(),
        "lock_waits": lock_waits(r),
        "backup_wall_median_s": med(&r.backups, |x| x.wall),
        "backup_cpu_median_s": med(&r.backups, |x| x.cpu),
        "backup_requests_median": med(&r.backups, total_requests),
        "backup_requests_median_by_kind": {
            "put": by("put"), "get": by("get"), "list": by("list"),
            "head": by("head"), "delete": by("delete"),
        },
        "prunes": r.prunes.len(),
        "prunes_pending": r.prunes.iter().filter(|p| p.out["swept"] == false).count(),
        "prune_list_requests_median": med(&r.prunes, |x| requests(x, "list")),
        "prune_wall_median_s": med(&r.prunes, |x| x.wall),
        "checks": r.checks.len(),
        "copies": r.copies.len(),
        "problems": r.problems,
    })
}

fn row(r: &FleetResult) -> String {
    let by = |kind: &str| med(&r.backups, |x| requests(x, kind));
    format!(
        "| {} | {} | {} | {} | {:.2} | {:.2} | {:.0} ({:.0}/{:.0}/{:.0}/{:.0}) | {} ({} pending) | {:.0} | {:.2} | {}/{} | {} |",
        r.hosts,
        r.backups.len(),
        r.backups.iter().filter(|b| b.code != 0).count(),
        lock_waits(r),
        med(&r.backups, |x| x.wall),
        med(&r.backups, |x| x.cpu),
        med(&r.backups, total_requests),
        by("put"),
        by("get"),
        by("list"),
        by("head"),
        r.prunes.len(),
        r.prunes.iter().filter(|p| p.out["swept"] == false).count(),
        med(&r.prunes, |x| requests(x, "list")),
        med(&r.prunes, |x| x.wall),
        r.checks.len(),
        r.copies.len(),
        if r.problems.is_empty() { "none".to_string() } else { r.problems.len().to_string() },
    )
}

fn report(results: &[FleetResult], rounds: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "fleet: H hosts x {rounds} backups each into one bucket (moto), beside forget+prune and check+copy loops; medians per command\n"
    );
    let _ = writeln!(s, "| hosts | backups | failed | lock waits | wall / backup (s) | CPU / backup (s) | requests / backup (put/get/list/head) | prunes | list requests / prune | wall / prune (s) | checks/copies | lost or broken |");
    let _ = writeln!(
        s,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for r in results {
        let _ = writeln!(s, "{}", row(r));
    }
    s
}

//! cairn's development tasks.
//!
//! `cargo xtask bench`          whole-program benchmark, cairn side by side with
//!                              restic, borg and rustic (those installed)
//! `cargo xtask scale`          how each command's time and memory grow with
//!                              the number of blobs (synthetic trees of tiny files)
//! `cargo xtask cloud`          the kernel corpus to S3 (a local moto server):
//!                              time, memory and requests, cairn and restic
//! `cargo xtask fleet`          1 to 16 hosts backing up into one bucket at once,
//!                              beside prune, check and copy loops (moto)
//! `cargo xtask corpora`        build (and cache) the benchmark corpora only
//! `cargo xtask install-peers`  install restic, borg (apt) and rustic (cargo)
//!
//! The xtask drives binaries only; it does not link the cairn library.

mod bench;
mod cloud;
mod corpus;
mod dbbench;
mod fleet;
mod measure;
mod mountbench;
mod report;
mod scale;
mod tools;
mod verify;
mod walbench;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  bench            run the side-by-side benchmark and print a Markdown table
  scale            time and peak RSS of every command against the blob count, and the slopes
  cloud            backups of the kernel corpus to S3 (moto_server on 127.0.0.1): time, RSS, requests
  fleet            H hosts (--hosts 1,2,4,8,16) back up into one S3 bucket (moto) at once, --rounds
                   each, beside forget+prune and check+copy loops; nothing may be lost or wait on
                   a lock; medians per backup of time, CPU and requests, list requests per prune
                   (--quick: 2 rounds; --cairn, --no-build, --keep)
  corpora          build the benchmark corpora (cached) without running anything
  bench-db         a pgbench database (scale 65, about 1 GB; --quick: 5): backup --postgres beside
                   pg_dump | restic/borg, first and unchanged re-dump, restore-db beside pg_restore
                   (--rounds, --tools, --cairn, --no-build)
  bench-mount      the kernel tree (--quick: a small one) read out of cairn/restic/borg mount
                   with tar, cold cache: wall time and the mount's peak RSS (--rounds, --tools)
  bench-wal        PostgreSQL WAL archived per second by cp, wal-push and wal-push --sync
                   (--seconds N of pgbench WAL, default 60; --rounds, --quick, --cairn, --no-build)
  install-peers    apt-get install restic borgbackup; cargo install rustic-rs --locked
  help             this text

bench / corpora options:
  --rounds N           rounds, each tool once per step per round (default 3; 1 with --quick)
  --corpus LIST        kernel, sqldump, randdump or all, comma-separated (default all)
  --quick              small synthetic corpora (a few thousand files, ~100 MB of SQL)
  --tools LIST         only these tools, e.g. cairn,restic (default: all installed)
  --cairn PATH         the cairn binary (default: build target/release/cairn)
  --no-build           do not run `cargo build --release` for cairn first
  --no-drop-caches     keep the page cache between steps (default: drop it, as root)
  --keep               keep the work directory (repositories, restores) afterwards
  --timeout SECS       kill any single command after this long (default 3600)
  --no-prune-row       bench: leave out the prune row (10 snapshots of the tree, forget 5, prune)

scale options (also --tools, --cairn, --no-build, --no-drop-caches, --keep, --timeout):
  --files N[,N...]     tree sizes in files, one 200-400 byte blob each (default 100000,1000000);
                       trees are generated once and cached in $CAIRN_BENCH_DIR/scale-N
                       (default tools: cairn,restic)

cloud options: --quick, --tools (cairn and/or restic), --cairn, --no-build, --no-drop-caches,
  --keep, --timeout; needs moto_server on PATH (pip install 'moto[s3]' flask flask-cors)

Corpora and results are cached in $CAIRN_BENCH_DIR (default ~/.cache/cairn-bench).";

/// Options of `bench` and `corpora`.
#[derive(Debug, Clone)]
pub struct Opts {
    pub rounds: usize,
    pub corpora: Vec<corpus::Kind>,
    pub quick: bool,
    pub tools: Option<Vec<String>>,
    pub cairn: Option<PathBuf>,
    pub build: bool,
    pub drop_caches: bool,
    pub keep: bool,
    pub timeout_secs: u64,
    /// bench: the prune row on tree corpora.
    pub prune_row: bool,
    /// scale: tree sizes in files.
    pub files: Vec<u64>,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        rounds: 0,
        corpora: corpus::Kind::ALL.to_vec(),
        quick: false,
        tools: None,
        cairn: None,
        build: true,
        drop_caches: true,
        keep: false,
        timeout_secs: 3600,
        prune_row: true,
        files: vec![100_000, 1_000_000],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--rounds" => {
                o.rounds = value("--rounds")?
                    .parse()
                    .context("--rounds takes a number")?
            }
            "--corpus" => {
                let v = value("--corpus")?;
                o.corpora = if v == "all" {
                    corpus::Kind::ALL.to_vec()
                } else {
                    v.split(',')
                        .map(corpus::Kind::parse)
                        .collect::<Result<_>>()?
                };
            }
            "--quick" => o.quick = true,
            "--tools" => {
                o.tools = Some(
                    value("--tools")?
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .collect(),
                )
            }
            "--cairn" => o.cairn = Some(PathBuf::from(value("--cairn")?)),
            "--no-build" => o.build = false,
            "--no-drop-caches" => o.drop_caches = false,
            "--keep" => o.keep = true,
            "--no-prune-row" => o.prune_row = false,
            "--files" => {
                o.files = value("--files")?
                    .split(',')
                    .map(|n| n.trim().replace('_', "").parse::<u64>())
                    .collect::<Result<_, _>>()
                    .context("--files takes numbers, comma-separated")?;
                if o.files.is_empty() || o.files.contains(&0) {
                    bail!("--files takes positive numbers");
                }
            }
            "--timeout" => {
                o.timeout_secs = value("--timeout")?
                    .parse()
                    .context("--timeout takes seconds")?
            }
            other => bail!("unknown option {other}\n\n{USAGE}"),
        }
    }
    if o.rounds == 0 {
        o.rounds = if o.quick { 1 } else { 3 };
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => parse_opts(&args[1..]).and_then(|o| bench::run(&o)),
        Some("scale") => parse_opts(&args[1..]).and_then(|o| scale::run(&o)),
        Some("cloud") => parse_opts(&args[1..]).and_then(|o| cloud::run(&o)),
        Some("corpora") => parse_opts(&args[1..]).and_then(|o| {
            for c in corpus::prepare_all(&o)? {
                println!("{}: {}", c.name, c.description);
            }
            Ok(())
        }),
        Some("bench-wal") => bench_wal(&args[1..]),
        Some("fleet") => fleet(&args[1..]),
        Some("bench-mount") => parse_opts(&args[1..]).and_then(|o| mountbench::run_bench(&o)),
        Some("bench-db") => parse_opts(&args[1..]).and_then(|o| dbbench::run_bench(&o)),
        Some("install-peers") => install_peers(),
        None | Some("help") | Some("--help") | Some("-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown task '{other}'\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `bench-wal`: `--seconds N` is its own; the rest are bench options.
fn bench_wal(args: &[String]) -> Result<()> {
    let mut seconds = 60;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--seconds" {
            seconds = it
                .next()
                .and_then(|s| s.parse().ok())
                .context("--seconds takes a number of seconds")?;
        } else {
            rest.push(a.clone());
        }
    }
    walbench::run_bench(&parse_opts(&rest)?, seconds)
}

/// `fleet`: `--hosts LIST` is its own; the rest are bench options.
fn fleet(args: &[String]) -> Result<()> {
    let mut hosts = vec![1, 2, 4, 8, 16];
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--hosts" {
            hosts = it
                .next()
                .context("--hosts takes numbers, comma-separated")?
                .split(',')
                .map(|n| n.trim().parse::<usize>())
                .collect::<Result<_, _>>()
                .context("--hosts takes numbers, comma-separated")?;
            if hosts.is_empty() || hosts.contains(&0) {
                bail!("--hosts takes positive numbers");
            }
        } else {
            rest.push(a.clone());
        }
    }
    let mut o = parse_opts(&rest)?;
    if !rest.iter().any(|a| a == "--rounds") {
        o.rounds = if o.quick { 2 } else { 4 };
    }
    fleet::run(&o, &hosts)
}

/// Best effort: each installer runs, failures are reported and do not stop the others.
fn install_peers() -> Result<()> {
    let steps: [(&str, &[&str]); 3] = [
        ("apt-get update", &["apt-get", "update"]),
        (
            "apt-get install restic borgbackup",
            &["apt-get", "install", "-y", "restic", "borgbackup"],
        ),
        (
            "cargo install rustic-rs",
            &["cargo", "install", "rustic-rs", "--locked"],
        ),
    ];
    let mut failed = Vec::new();
    for (what, argv) in steps {
        eprintln!("xtask: {what} ...");
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        match status {
            Ok(s) if s.success() => eprintln!("xtask: {what}: ok"),
            Ok(s) => failed.push(format!("{what}: exited with {s}")),
            Err(e) => failed.push(format!("{what}: could not run: {e}")),
        }
    }
    for t in tools::ALL_TOOLS.iter().filter(|t| **t != "cairn") {
        match tools::which(t) {
            Some(p) => eprintln!("xtask: {t}: {}", p.display()),
            None => eprintln!("xtask: {t}: not found on PATH"),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("some installs failed:\n  {}", failed.join("\n  "))
    }
}

/// The workspace root (the xtask crate sits one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Where corpora, work directories and results live: outside the repository.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAIRN_BENCH_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("cairn-bench")
}

/// Runs a command to completion, failing with its stderr if it fails.
pub fn sh(argv: &[&str]) -> Result<String> {
    sh_cmd(Command::new(argv[0]).args(&argv[1..]))
}

pub fn sh_cmd(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

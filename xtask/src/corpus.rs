//! The benchmark corpora, built once and cached below the cache directory:
//!
//! - `kernel`: the Linux source tree (Debian's linux-source-6.1, unpacked);
//!   its changed generation edits every 100th file (1%) in place. For the
//!   prune row it has generations 1 to [`TREE_GENERATIONS`]: generation g ≥ 2
//!   edits its own 1% of the files (those at index g − 2 modulo 100) and leaves
//!   the others as in generation 1.
//! - `sqldump`: a plain-SQL `pg_dump` of a `pgbench -i -s 100` database
//!   (~1 GB, compresses ~100:1); changed generation: 1% of the account rows
//!   updated, dumped again.
//! - `randdump`: a plain-SQL `pg_dump` of a table of random `bytea` (~1 GB,
//!   hex text, compresses only ~2:1); changed generation: 1% of rows rewritten.
//!
//! `--quick` replaces them with small synthetic stand-ins made here (a tree of
//! a few thousand files, a 100 MB pseudo-pgbench dump, a 50 MB random-bytea dump).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::measure::tree_stats;
use crate::{cache_dir, is_root, sh, sh_cmd, Opts};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kernel,
    SqlDump,
    RandDump,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Kernel, Kind::SqlDump, Kind::RandDump];

    pub fn parse(s: &str) -> Result<Kind> {
        match s.trim() {
            "kernel" => Ok(Kind::Kernel),
            "sqldump" | "sql" => Ok(Kind::SqlDump),
            "randdump" | "rand" => Ok(Kind::RandDump),
            other => bail!("unknown corpus '{other}' (kernel, sqldump, randdump or all)"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kernel => "kernel",
            Kind::SqlDump => "sqldump",
            Kind::RandDump => "randdump",
        }
    }
}

/// How a corpus is backed up: as files on disk, or streamed on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Path,
    Stdin,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Path => "file",
            Mode::Stdin => "stdin",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Shape {
    /// A directory tree; generation g ≥ 2 rewrites `subsets[g - 2]` (relative
    /// paths) in place, generation 1 is the pristine tree.
    Tree {
        pristine: PathBuf,
        subsets: Vec<Vec<PathBuf>>,
    },
    /// One dump file per generation.
    Dump { gen1: PathBuf, gen2: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Corpus {
    pub name: &'static str,
    pub description: String,
    pub files: u64,
    pub bytes: u64,
    pub shape: Shape,
}

/// How many generations a tree corpus has (1 pristine, then one per subset).
pub const TREE_GENERATIONS: u8 = 10;

/// The line prepended to each changed file of a tree's generation g ≥ 2.
fn generation_mark(generation: u8) -> Vec<u8> {
    format!("/* cairn-bench: generation {generation} edit */\n").into_bytes()
}
pub const STDIN_NAME: &str = "dump.sql";

impl Corpus {
    pub fn modes(&self) -> &'static [Mode] {
        match self.shape {
            Shape::Tree { .. } => &[Mode::Path],
            Shape::Dump { .. } => &[Mode::Path, Mode::Stdin],
        }
    }

    /// The absolute path that path-mode backups name (same in every round, so
    /// each tool finds its parent snapshot / files cache).
    pub fn source(&self, work: &Path) -> PathBuf {
        match self.shape {
            Shape::Tree { .. } => work.join("src").join(self.name),
            Shape::Dump { .. } => work.join("src").join(self.name).join(STDIN_NAME),
        }
    }

    /// Where the working copy's current generation is noted (beside the
    /// tree, not in it, so no backup sees it).
    fn generation_file(&self, work: &Path) -> PathBuf {
        work.join("src").join(format!("{}.generation", self.name))
    }

    /// Makes the working copy below `work` (generation 1).
    pub fn setup_working_copy(&self, work: &Path) -> Result<()> {
        let dir = work.join("src").join(self.name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(dir.parent().unwrap())?;
        match &self.shape {
            Shape::Tree { pristine, .. } => {
                sh(&[
                    "cp",
                    "-a",
                    &pristine.to_string_lossy(),
                    &dir.to_string_lossy(),
                ])?;
                std::fs::write(self.generation_file(work), "1")?;
            }
            Shape::Dump { .. } => {
                std::fs::create_dir_all(&dir)?;
                self.set_generation(work, 1)?;
            }
        }
        Ok(())
    }

    /// Puts the working copy into a generation (dumps: 1 or 2; trees: 1 to
    /// [`TREE_GENERATIONS`]), editing files in place (same inodes), as an
    /// application would. A tree rewrites only the files that differ between
    /// its current generation and the new one.
    pub fn set_generation(&self, work: &Path, generation: u8) -> Result<()> {
        let src = self.source(work);
        match &self.shape {
            Shape::Tree { pristine, subsets } => {
                if generation == 0 || generation as usize > subsets.len() + 1 {
                    bail!("{} has no generation {generation}", self.name);
                }
                let state = self.generation_file(work);
                let current: u8 = std::fs::read_to_string(&state)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(1);
                let subset = |g: u8| (g >= 2).then(|| &subsets[g as usize - 2]);
                // Back to generation 1 where the current generation edited ...
                if current != generation {
                    for rel in subset(current).into_iter().flatten() {
                        std::fs::write(src.join(rel), std::fs::read(pristine.join(rel))?)?;
                    }
                }
                // ... then this generation's edits.
                for rel in subset(generation).into_iter().flatten() {
                    let mut data = generation_mark(generation);
                    data.extend_from_slice(&std::fs::read(pristine.join(rel))?);
                    std::fs::write(src.join(rel), data)?;
                }
                std::fs::write(&state, generation.to_string())?;
            }
            Shape::Dump { gen1, gen2 } => {
                let from = if generation == 2 { gen2 } else { gen1 };
                let mut out = File::create(&src)?; // truncates in place
                std::io::copy(&mut File::open(from)?, &mut out)?;
                out.sync_all()?;
            }
        }
        Ok(())
    }

    /// What a stdin backup of generation `g` reads.
    pub fn stdin_file(&self, generation: u8) -> Option<&Path> {
        match &self.shape {
            Shape::Dump { gen1, gen2 } => Some(if generation == 2 { gen2 } else { gen1 }),
            Shape::Tree { .. } => None,
        }
    }
}

/// Builds (or finds cached) every corpus the options ask for.
pub fn prepare_all(o: &Opts) -> Result<Vec<Corpus>> {
    let base = cache_dir().join(if o.quick { "quick" } else { "corpora" });
    std::fs::create_dir_all(&base)?;
    let mut out = Vec::new();
    for &kind in &o.corpora {
        eprintln!("xtask: preparing corpus {} ...", kind.name());
        let c = match (kind, o.quick) {
            (Kind::Kernel, false) => kernel(&base)?,
            (Kind::Kernel, true) => quick_tree(&base)?,
            (k, quick) => dump(&base, k, quick)?,
        };
        eprintln!("xtask: {}: {}", c.name, c.description);
        out.push(c);
    }
    Ok(out)
}

pub(crate) fn stamp(dir: &Path) -> PathBuf {
    dir.join(".complete")
}

pub(crate) fn fresh_tmp(dir: &Path) -> Result<PathBuf> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    Ok(tmp)
}

pub(crate) fn publish(tmp: &Path, dir: &Path, about: &str) -> Result<()> {
    std::fs::write(tmp.join("ABOUT"), about)?;
    std::fs::write(stamp(tmp), "")?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(tmp, dir)?;
    Ok(())
}

fn about(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ABOUT"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Subset k (k < `n`) holds the regular files at index k modulo 100 in sorted
/// walk order: subset 0 is every 100th file starting with the first.
fn hundredths(root: &Path, n: usize) -> Result<Vec<Vec<PathBuf>>> {
    let mut files = Vec::new();
    walk_files(root, Path::new(""), &mut files)?;
    let mut subsets = vec![Vec::new(); n];
    for (i, f) in files.into_iter().enumerate() {
        if i % 100 < n {
            subsets[i % 100].push(f);
        }
    }
    Ok(subsets)
}

fn walk_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let t = e.file_type()?;
        let r = rel.join(e.file_name());
        if t.is_dir() {
            walk_files(root, &r, out)?;
        } else if t.is_file() {
            out.push(r);
        }
    }
    Ok(())
}

fn tree_corpus(kind: Kind, pristine: PathBuf, what: String) -> Result<Corpus> {
    let subsets = hundredths(&pristine, TREE_GENERATIONS as usize - 1)?;
    let (files, bytes) = tree_stats(&pristine);
    let description = format!(
        "{what}: {} in {} files; changed generation: {} files (every 100th) edited in place",
        human_bytes(bytes),
        thousands(files),
        thousands(subsets[0].len() as u64)
    );
    Ok(Corpus {
        name: kind.name(),
        description,
        files,
        bytes,
        shape: Shape::Tree { pristine, subsets },
    })
}

// ---- kernel -----------------------------------------------------------------

const KERNEL_PACKAGE: &str = "linux-source-6.1";
const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

fn kernel(base: &Path) -> Result<Corpus> {
    let dir = base.join("kernel");
    if !stamp(&dir).exists() {
        if !Path::new(KERNEL_TARBALL).exists() {
            eprintln!("xtask: apt-get install -y {KERNEL_PACKAGE} ...");
            apt_install(&[KERNEL_PACKAGE])?;
        }
        let tmp = fresh_tmp(&dir)?;
        eprintln!("xtask: unpacking {KERNEL_TARBALL} ...");
        sh(&["tar", "-xf", KERNEL_TARBALL, "-C", &tmp.to_string_lossy()])?;
        let version =
            sh(&["dpkg-query", "-W", "-f", "${Version}", KERNEL_PACKAGE]).unwrap_or_default();
        publish(
            &tmp,
            &dir,
            &format!("Linux source tree ({KERNEL_PACKAGE} {version}, unpacked)"),
        )?;
    }
    let pristine = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .context("the unpacked kernel tarball holds no directory")?;
    tree_corpus(Kind::Kernel, pristine, about(&dir))
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    if !is_root() {
        bail!("need root to apt-get install {}", pkgs.join(" "));
    }
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive");
    if sh_cmd(&mut cmd).is_err() {
        sh(&["apt-get", "update"])?;
        sh_cmd(&mut cmd)?;
    }
    Ok(())
}

// ---- synthetic data ----------------------------------------------------------

/// xorshift64*, deterministic.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "static", "int", "struct", "return", "if", "else", "for", "while", "void", "const", "unsigned",
    "long", "char", "define", "include", "device", "buffer", "lock", "unlock", "error", "size",
    "page", "kernel", "driver", "queue", "list", "node", "state", "flags", "count", "init", "exit",
    "free", "alloc", "read", "write", "irq", "mutex", "spin", "u32", "u64", "ptr", "data", "len",
    "offset", "mask", "reg", "val", "ret", "dev",
];

fn source_like(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let indent = rng.below(4) as usize;
        out.extend(std::iter::repeat_n(b'\t', indent));
        for _ in 0..3 + rng.below(8) {
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
            out.push(if rng.below(5) == 0 { b'_' } else { b' ' });
            if rng.below(7) == 0 {
                out.extend_from_slice(format!("{}", rng.below(100_000)).as_bytes());
                out.push(b' ');
            }
        }
        out.extend_from_slice(b";\n");
    }
    out.truncate(len);
    out
}

/// A kernel-like tree: 60 directories of 50 source-like files (200 B - 128 KiB),
/// a few large files, a symlink and an empty directory.
fn quick_tree(base: &Path) -> Result<Corpus> {
    let dir = base.join("kernel");
    if !stamp(&dir).exists() {
        let tmp = fresh_tmp(&dir)?;
        let root = tmp.join("tree");
        let mut rng = Rng::new(0x7EE);
        for d in 0..60 {
            let sub = root
                .join(format!("dir{:02}", d / 10))
                .join(format!("sub{d:02}"));
            std::fs::create_dir_all(&sub)?;
            for f in 0..50 {
                let len = (200.0 * (640.0f64).powf(rng.below(1000) as f64 / 1000.0)) as usize;
                std::fs::write(
                    sub.join(format!("file{f:02}.c")),
                    source_like(&mut rng, len),
                )?;
            }
        }
        let big = root.join("big");
        std::fs::create_dir_all(&big)?;
        for i in 0..6 {
            std::fs::write(
                big.join(format!("blob{i}.bin")),
                source_like(&mut rng, (1 + i) << 20),
            )?;
        }
        std::os::unix::fs::symlink("../dir00/sub00/file00.c", big.join("link.c"))?;
        std::fs::create_dir_all(root.join("empty"))?;
        publish(&tmp, &dir, "synthetic source-like tree (--quick)")?;
    }
    tree_corpus(Kind::Kernel, dir.join("tree"), about(&dir))
}

/// pg_dump-style COPY text of pgbench_accounts; generation 2 changes the
/// balance of 1% of the rows (a contiguous range at 40%).
fn synthetic_sql(path: &Path, rows: u64, generation: u8) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(
        w,
        "--\n-- PostgreSQL database dump (synthetic stand-in made by cargo xtask)\n--\n"
    )?;
    writeln!(
        w,
        "COPY public.pgbench_accounts (aid, bid, abalance, filler) FROM stdin;"
    )?;
    let filler = " ".repeat(84);
    let (lo, hi) = (rows * 40 / 100, rows * 41 / 100);
    for aid in 1..=rows {
        let balance = if generation == 2 && (lo..hi).contains(&aid) {
            (aid * 7919) % 10_000
        } else {
            0
        };
        writeln!(w, "{aid}\t{}\t{balance}\t{filler}", (aid - 1) / 100_000 + 1)?;
    }
    writeln!(w, "\\.\n")?;
    w.flush()?;
    Ok(())
}

/// pg_dump-style COPY text of a table of random 1 KiB bytea (hex output);
/// generation 2 rewrites 1% of the rows (a contiguous range at 40%).
fn synthetic_rand(path: &Path, rows: u64, generation: u8) -> Result<()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(
        w,
        "--\n-- PostgreSQL database dump (synthetic stand-in made by cargo xtask)\n--\n"
    )?;
    writeln!(w, "COPY public.blobs (id, data) FROM stdin;")?;
    let (lo, hi) = (rows * 40 / 100, rows * 41 / 100);
    let mut line = Vec::with_capacity(2100);
    for id in 1..=rows {
        let seed = if generation == 2 && (lo..hi).contains(&id) {
            id ^ 0xDEAD_BEEF_0000
        } else {
            id
        };
        let mut rng = Rng::new(seed);
        line.clear();
        line.extend_from_slice(format!("{id}\t\\\\x").as_bytes());
        for _ in 0..128 {
            for b in rng.next().to_le_bytes() {
                line.push(HEX[(b >> 4) as usize]);
                line.push(HEX[(b & 15) as usize]);
            }
        }
        line.push(b'\n');
        w.write_all(&line)?;
    }
    writeln!(w, "\\.\n")?;
    w.flush()?;
    Ok(())
}

// ---- dumps ------------------------------------------------------------------

/// pgbench scale for the ~1 GB dump (100,000 account rows of ~98 bytes each per unit).
const PGBENCH_SCALE: u64 = 100;
/// Rows of 1 KiB random bytea for the ~1 GB random dump (2 hex digits a byte).
const RAND_ROWS: u64 = 480_000;

fn dump(base: &Path, kind: Kind, quick: bool) -> Result<Corpus> {
    let dir = base.join(kind.name());
    if !stamp(&dir).exists() {
        let tmp = fresh_tmp(&dir)?;
        let (g1, g2) = (tmp.join("gen1.sql"), tmp.join("gen2.sql"));
        let how = if quick {
            synthetic_dump(kind, &g1, &g2, true)?;
            format!("synthetic pg_dump-style {} (--quick)", dump_what(kind))
        } else {
            match pg_dump_corpus(kind, &g1, &g2) {
                Ok(how) => how,
                Err(e) => {
                    eprintln!("xtask: PostgreSQL could not make the {} corpus ({e:#}); generating it instead", kind.name());
                    synthetic_dump(kind, &g1, &g2, false)?;
                    format!(
                        "SYNTHETIC pg_dump-style {} (PostgreSQL unavailable: {})",
                        dump_what(kind),
                        format!("{e:#}").lines().next().unwrap_or("")
                    )
                }
            }
        };
        publish(&tmp, &dir, &how)?;
    }
    let (gen1, gen2) = (dir.join("gen1.sql"), dir.join("gen2.sql"));
    let bytes = std::fs::metadata(&gen1)?.len();
    let description = format!(
        "{}: {} per generation; changed generation: 1% of rows changed",
        about(&dir),
        human_bytes(bytes)
    );
    Ok(Corpus {
        name: kind.name(),
        description,
        files: 1,
        bytes,
        shape: Shape::Dump { gen1, gen2 },
    })
}

fn dump_what(kind: Kind) -> &'static str {
    match kind {
        Kind::SqlDump => "dump of pgbench_accounts",
        _ => "dump of a table of random bytea",
    }
}

fn synthetic_dump(kind: Kind, g1: &Path, g2: &Path, quick: bool) -> Result<()> {
    let (sql_rows, rand_rows) = if quick {
        (1_000_000, 24_000)
    } else {
        (PGBENCH_SCALE * 100_000, RAND_ROWS)
    };
    for (g, path) in [(1, g1), (2, g2)] {
        match kind {
            Kind::SqlDump => synthetic_sql(path, sql_rows, g)?,
            _ => synthetic_rand(path, rand_rows, g)?,
        }
    }
    Ok(())
}

fn pg_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_dump").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// A throwaway PostgreSQL cluster in a temporary directory, stopped and
/// deleted on drop. The server runs as `postgres` when we are root (it refuses
/// root); clients connect over a Unix socket in the same directory.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
}

const PG_PORT: &str = "54329";

impl Cluster {
    fn start() -> Result<Cluster> {
        let bin = match pg_bindir() {
            Some(b) => b,
            None => {
                eprintln!("xtask: apt-get install -y postgresql ...");
                apt_install(&["postgresql", "postgresql-contrib"])?;
                pg_bindir()
                    .context("PostgreSQL installed but no initdb found below /usr/lib/postgresql")?
            }
        };
        let dir = std::env::temp_dir().join(format!("cairn-bench-pg-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            sh(&["chown", "postgres:", &dir.to_string_lossy()])
                .context("chown to the postgres user")?;
        }
        let c = Cluster { bin, dir };
        let data = c.dir.join("data");
        c.as_server_user(&[
            &c.bin.join("initdb").to_string_lossy(),
            "-D",
            &data.to_string_lossy(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ])?;
        let opts = format!(
            "-k {} -p {PG_PORT} -c listen_addresses= -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c synchronize_seqscans=off -c autovacuum=off \
             -c max_wal_size=8GB -c shared_buffers=256MB",
            c.dir.display()
        );
        c.as_server_user(&[
            &c.bin.join("pg_ctl").to_string_lossy(),
            "-D",
            &data.to_string_lossy(),
            "-l",
            &c.dir.join("log").to_string_lossy(),
            "-w",
            "-t",
            "120",
            "-o",
            &opts,
            "start",
        ])?;
        Ok(c)
    }

    fn as_server_user(&self, argv: &[&str]) -> Result<String> {
        if is_root() {
            let mut v = vec!["runuser", "-u", "postgres", "--"];
            v.extend_from_slice(argv);
            sh(&v)
        } else {
            sh(argv)
        }
    }

    fn client(&self, prog: &str) -> Command {
        let mut c = Command::new(self.bin.join(prog));
        c.env("PGHOST", &self.dir)
            .env("PGPORT", PG_PORT)
            .env("PGUSER", "postgres");
        c
    }

    fn psql(&self, db: &str, sql: &str) -> Result<()> {
        sh_cmd(self.client("psql").args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ]))?;
        Ok(())
    }

    fn dump(&self, db: &str, to: &Path) -> Result<()> {
        let out = File::create(to)?;
        let status = self
            .client("pg_dump")
            .args(["-d", db])
            .stdout(Stdio::from(out))
            .status()?;
        if !status.success() {
            bail!("pg_dump {db} failed ({status})");
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.as_server_user(&[
            &self.bin.join("pg_ctl").to_string_lossy(),
            "-D",
            &data.to_string_lossy(),
            "-m",
            "fast",
            "stop",
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pg_dump_corpus(kind: Kind, g1: &Path, g2: &Path) -> Result<String> {
    let pg = Cluster::start()?;
    let version = sh_cmd(pg.client("pg_dump").arg("--version")).unwrap_or_default();
    let version = version.trim();
    match kind {
        Kind::SqlDump => {
            let n = PGBENCH_SCALE * 100_000;
            let (lo, hi) = (n * 40 / 100 + 1, n * 41 / 100);
            pg.psql("postgres", "CREATE DATABASE bench_sql")?;
            eprintln!("xtask: pgbench -i -s {PGBENCH_SCALE} ...");
            sh_cmd(pg.client("pgbench").args([
                "-i",
                "-q",
                "-s",
                &PGBENCH_SCALE.to_string(),
                "bench_sql",
            ]))?;
            pg.dump("bench_sql", g1)?;
            pg.psql("bench_sql", &format!("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN {lo} AND {hi}"))?;
            pg.dump("bench_sql", g2)?;
            Ok(format!(
                "plain-SQL pg_dump of a `pgbench -i -s {PGBENCH_SCALE}` database ({version}); \
                 generation 2 after updating {} consecutive account rows",
                thousands(hi - lo + 1)
            ))
        }
        _ => {
            let (lo, hi) = (RAND_ROWS * 40 / 100 + 1, RAND_ROWS * 41 / 100);
            pg.psql("postgres", "CREATE DATABASE bench_rand")?;
            pg.psql("bench_rand", "CREATE EXTENSION pgcrypto")?;
            pg.psql(
                "bench_rand",
                "CREATE TABLE blobs (id integer PRIMARY KEY, data bytea NOT NULL)",
            )?;
            eprintln!("xtask: inserting {RAND_ROWS} rows of random bytea ...");
            pg.psql(
                "bench_rand",
                &format!("INSERT INTO blobs SELECT g, gen_random_bytes(1024) FROM generate_series(1, {RAND_ROWS}) g"),
            )?;
            pg.dump("bench_rand", g1)?;
            pg.psql(
                "bench_rand",
                &format!(
                    "UPDATE blobs SET data = gen_random_bytes(1024) WHERE id BETWEEN {lo} AND {hi}"
                ),
            )?;
            pg.dump("bench_rand", g2)?;
            Ok(format!(
                "plain-SQL pg_dump of a table of {} random 1 KiB bytea values ({version}); \
                 generation 2 after rewriting {} consecutive rows",
                thousands(RAND_ROWS),
                thousands(hi - lo + 1)
            ))
        }
    }
}

// ---- formatting ----------------------------------------------------------------

pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

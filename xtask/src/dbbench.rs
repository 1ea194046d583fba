//! `cargo xtask bench-db`: a pgbench database backed up by `cairn backup
//! --postgres` beside `pg_dump | restic backup --stdin` and `pg_dump | borg
//! create -` (those installed): the first backup, an unchanged re-dump (and
//! what it adds to the repository), and a restore into a new database
//! (`cairn restore-db` against `restic dump | pg_restore` and `borg extract
//! --stdout | pg_restore`). Wall time and peak RSS (of the largest process)
//! per step, medians of `--rounds`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::measure::dir_size;
use crate::walbench::{as_owner, bindir, is_root, median, run};
use crate::Opts;

const PASSWORD: &str = "bench-db";

/// A throwaway cluster on a private socket, stopped (a fast shutdown) on
/// drop. bench-wal runs one too, with archiving settings.
pub(crate) struct Cluster {
    child: std::process::Child,
    socket: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: kill with a child's pid and SIGINT has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

impl Cluster {
    /// initdb in `work/data` (trust, superuser `postgres`; as the postgres
    /// user under root) and a server with these `-c` settings besides no
    /// TCP listener, its socket in `work`.
    pub(crate) fn start(work: &Path, settings: &[(&str, &str)]) -> Result<Cluster> {
        let bin = bindir()?;
        let data = work.join("data");
        if is_root() {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(work),
                "chown",
            )?;
        }
        run(
            as_owner(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres"]),
            "initdb",
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = as_owner(&bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(work)
            .args(["-c", "listen_addresses="]);
        for (k, v) in settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(work.join("postgres.log"))?)
            .spawn()?;
        let c = Cluster {
            child,
            socket: work.to_path_buf(),
            port,
            bin,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !c.tool("pg_isready").status()?.success() {
            if Instant::now() > deadline {
                bail!(
                    "the benchmark cluster did not start: {}",
                    crate::measure::tail(&work.join("postgres.log"), 5)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(c)
    }

    /// A client tool pointed at the cluster as `postgres`.
    pub(crate) fn tool(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.arg("-h")
            .arg(&self.socket)
            .args(["-p", &self.port.to_string(), "-U", "postgres"]);
        c
    }

    /// The same as a shell word list, for pipelines.
    fn tool_sh(&self, program: &str) -> String {
        format!(
            "{} -h {} -p {} -U postgres",
            self.bin.join(program).display(),
            self.socket.display(),
            self.port
        )
    }

    fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres@/{db}?host={}&port={}",
            self.socket.display(),
            self.port
        )
    }

    fn sql(&self, db: &str, sql: &str) -> Result<String> {
        let out = self
            .tool("psql")
            .args(["-X", "-At", "-d", db, "-c", sql])
            .output()?;
        if !out.status.success() {
            bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Wall seconds and peak RSS (KB) of a shell command line.
fn timed(sh: &str, env: &[(&str, &str)]) -> Result<(f64, u64)> {
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "bash", "-o", "pipefail", "-c", sh])
        .envs(env.iter().copied())
        .output()
        .context("/usr/bin/time (apt-get install time)")?;
    let secs = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("`{sh}` failed: {}", err.trim());
    }
    let rss = err
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    Ok((secs, rss))
}

struct Tool {
    name: &'static str,
    backup: String,
    restore: String,
    repo: PathBuf,
    env: Vec<(&'static str, String)>,
}

fn tools(o: &Opts, c: &Cluster, cairn: &Path, work: &Path) -> Result<Vec<Tool>> {
    let dump = format!("{} -Fc -Z0 postgres", c.tool_sh("pg_dump"));
    let restore_into = format!("{} -d restored --no-owner", c.tool_sh("pg_restore"));
    let mut out = Vec::new();
    let wanted = |t: &str| o.tools.as_ref().is_none_or(|l| l.iter().any(|x| x == t));
    if wanted("cairn") {
        let repo = work.join("cairn");
        run(
            Command::new(cairn)
                .arg("-r")
                .arg(&repo)
                .arg("init")
                .env("CAIRN_PASSWORD", PASSWORD),
            "cairn init",
        )?;
        let r = format!("{} -r {} -q", cairn.display(), repo.display());
        out.push(Tool {
            name: "cairn",
            backup: format!("{r} backup --postgres '{}'", c.url("postgres")),
            restore: format!(
                "{r} restore-db latest --to '{}' --no-owner",
                c.url("restored")
            ),
            repo,
            env: vec![("CAIRN_PASSWORD", PASSWORD.into())],
        });
    }
    if wanted("restic") && crate::tools::which("restic").is_some() {
        let repo = work.join("restic");
        run(
            Command::new("restic")
                .arg("-r")
                .arg(&repo)
                .arg("init")
                .env("RESTIC_PASSWORD", PASSWORD),
            "restic init",
        )?;
        let r = format!("restic -r {} -q", repo.display());
        out.push(Tool {
            name: "restic",
            backup: format!("{dump} | {r} backup --stdin --stdin-filename db.pgdump"),
            restore: format!("{r} dump latest db.pgdump | {restore_into}"),
            repo,
            env: vec![("RESTIC_PASSWORD", PASSWORD.into())],
        });
    }
    if wanted("borg") && crate::tools::which("borg").is_some() {
        let repo = work.join("borg");
        run(
            Command::new("borg")
                .args(["init", "--encryption=repokey"])
                .arg(&repo)
                .env("BORG_PASSPHRASE", PASSWORD),
            "borg init",
        )?;
        let r = repo.display().to_string();
        out.push(Tool {
            name: "borg",
            backup: format!(
                "{dump} | borg create --compression zstd,3 {r}::\"db-$(date +%s%N)\" -"
            ),
            restore: format!(
                "borg extract --stdout {r}::\"$(borg list --last 1 --short {r})\" | {restore_into}"
            ),
            repo,
            env: vec![
                ("BORG_PASSPHRASE", PASSWORD.into()),
                ("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes".into()),
            ],
        });
    }
    Ok(out)
}

#[derive(Default)]
struct Row {
    first: Vec<(f64, u64)>,
    again: Vec<(f64, u64)>,
    growth: Vec<u64>,
    restore: Vec<(f64, u64)>,
    size: u64,
}

pub fn run_bench(o: &Opts) -> Result<()> {
    let cairn = crate::bench::cairn_binary(o)?;
    let scale = if o.quick { 5 } else { 65 };
    let rounds = if o.rounds == 0 {
        if o.quick {
            1
        } else {
            3
        }
    } else {
        o.rounds
    };
    let work = std::env::temp_dir().join(format!("cairn-bench-db-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let result = (|| -> Result<()> {
        let c = Cluster::start(&work, &[("max_wal_size", "4GB"), ("fsync", "off")])?;
        eprintln!("xtask: pgbench -i -s {scale} ...");
        run(
            c.tool("pgbench")
                .args(["-i", "-q", "-s", &scale.to_string(), "postgres"]),
            "pgbench -i",
        )?;
        let db_size: u64 = c
            .sql("postgres", "SELECT pg_database_size('postgres')")?
            .parse()?;
        let dump = format!("{} -Fc -Z0 postgres | wc -c", c.tool_sh("pg_dump"));
        let dump_size: u64 =
            String::from_utf8_lossy(&Command::new("bash").args(["-c", &dump]).output()?.stdout)
                .trim()
                .parse()?;
        let repos = work.join("repos");
        let mut rows: Vec<(&'static str, Row)> = Vec::new();
        for r in 0..rounds {
            let _ = std::fs::remove_dir_all(&repos);
            std::fs::create_dir_all(&repos)?;
            for (i, t) in tools(o, &c, &cairn, &repos)?.into_iter().enumerate() {
                if rows.len() <= i {
                    rows.push((t.name, Row::default()));
                }
                let env: Vec<(&str, &str)> = t.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                eprintln!("xtask: round {}/{rounds}: {} ...", r + 1, t.name);
                crate::measure::drop_caches();
                let first = timed(&t.backup, &env)?;
                let before = dir_size(&t.repo);
                crate::measure::drop_caches();
                let again = timed(&t.backup, &env)?;
                let growth = dir_size(&t.repo).saturating_sub(before);
                c.sql("postgres", "DROP DATABASE IF EXISTS restored")?;
                if t.name != "cairn" {
                    c.sql("postgres", "CREATE DATABASE restored")?;
                }
                crate::measure::drop_caches();
                let restore = timed(&t.restore, &env)?;
                let row = &mut rows[i].1;
                row.first.push(first);
                row.again.push(again);
                row.growth.push(growth);
                row.restore.push(restore);
                row.size = dir_size(&t.repo);
            }
        }
        print(&rows, rounds, db_size, dump_size);
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn print(rows: &[(&str, Row)], rounds: usize, db_size: u64, dump_size: u64) {
    let t = |v: &[(f64, u64)]| median(v.iter().map(|x| x.0).collect());
    let m = |v: &[(f64, u64)]| median(v.iter().map(|x| x.1 as f64).collect()) / 1024.0;
    println!(
        "pgbench database {:.0} MB ({:.0} MB as pg_dump -Fc -Z0), median of {rounds} rounds, cold cache:\n",
        db_size as f64 / 1e6,
        dump_size as f64 / 1e6
    );
    println!("| tool | first backup | unchanged re-dump | re-dump adds | restore into a new database | repository after two backups |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, r) in rows {
        let growth = median(r.growth.iter().map(|g| *g as f64).collect());
        println!(
            "| {name} | {:.2} s · {:.0} MB | {:.2} s · {:.0} MB | {:.2} MB ({:.3}% of the dump) | {:.2} s · {:.0} MB | {:.0} MB |",
            t(&r.first),
            m(&r.first),
            t(&r.again),
            m(&r.again),
            growth / 1e6,
            100.0 * growth / dump_size.max(1) as f64,
            t(&r.restore),
            m(&r.restore),
            r.size as f64 / 1e6
        );
    }
}

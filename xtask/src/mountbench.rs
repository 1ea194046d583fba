//! `cargo xtask bench-mount`: reading a backed-up tree back out of a FUSE
//! mount, `cairn mount` beside `restic mount` and `borg mount` (those
//! installed): `tar cf - | cat > /dev/null` of the whole tree (GNU tar
//! skips reading files when it writes to /dev/null itself), cold cache,
//! and the mount process's peak RSS. The tree is the kernel corpus
//! (`--quick`: the small synthetic tree).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::corpus::{Kind, Shape};
use crate::walbench::{median, run};
use crate::Opts;

const PASSWORD: &str = "bench-mount";

struct Tool {
    name: &'static str,
    env: Vec<(&'static str, String)>,
    /// argv of the mount command, the mount point last.
    mount: Vec<String>,
    /// Where the pristine tree appears below the mount point.
    inside: PathBuf,
}

fn is_mounted(at: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(at.to_str().unwrap_or("")))
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Backs `tree` up with each tool installed; returns how to mount each.
fn prepare(o: &Opts, cairn: &Path, tree: &Path, work: &Path) -> Result<Vec<Tool>> {
    let rel = tree.strip_prefix("/").unwrap_or(tree).to_path_buf();
    let wanted = |t: &str| o.tools.as_ref().is_none_or(|l| l.iter().any(|x| x == t));
    let mut out = Vec::new();
    if wanted("cairn") {
        let repo = work.join("cairn");
        let env = vec![("CAIRN_PASSWORD", PASSWORD.to_string())];
        let c = |args: &[&str]| {
            let mut c = Command::new(cairn);
            c.arg("-r")
                .arg(&repo)
                .arg("-q")
                .args(args)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            c
        };
        run(&mut c(&["init"]), "cairn init")?;
        run(&mut c(&["backup", tree.to_str().unwrap()]), "cairn backup")?;
        out.push(Tool {
            name: "cairn",
            mount: vec![
                cairn.display().to_string(),
                "-r".into(),
                repo.display().to_string(),
                "-q".into(),
                "mount".into(),
            ],
            inside: Path::new("snapshots/latest").join(&rel),
            env,
        });
    }
    if wanted("restic") && crate::tools::which("restic").is_some() {
        let repo = work.join("restic");
        let env = vec![("RESTIC_PASSWORD", PASSWORD.to_string())];
        let c = |args: &[&str]| {
            let mut c = Command::new("restic");
            c.arg("-r")
                .arg(&repo)
                .arg("-q")
                .args(args)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            c
        };
        run(&mut c(&["init"]), "restic init")?;
        run(&mut c(&["backup", tree.to_str().unwrap()]), "restic backup")?;
        out.push(Tool {
            name: "restic",
            mount: vec![
                "restic".into(),
                "-r".into(),
                repo.display().to_string(),
                "mount".into(),
            ],
            inside: Path::new("snapshots/latest").join(&rel),
            env,
        });
    }
    if wanted("borg") && crate::tools::which("borg").is_some() {
        let repo = work.join("borg");
        let env = vec![
            ("BORG_PASSPHRASE", PASSWORD.to_string()),
            (
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK",
                "yes".to_string(),
            ),
        ];
        let c = |args: &[&str]| {
            let mut c = Command::new("borg");
            c.args(args).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            c
        };
        run(c(&["init", "--encryption=repokey"]).arg(&repo), "borg init")?;
        run(
            c(&["create", "--compression", "zstd,3"])
                .arg(format!("{}::bench", repo.display()))
                .arg(tree),
            "borg create",
        )?;
        out.push(Tool {
            name: "borg",
            // Foreground (-f): the mount lives as long as the process.
            mount: vec![
                "borg".into(),
                "mount".into(),
                "-f".into(),
                format!("{}::bench", repo.display()),
            ],
            inside: rel,
            env,
        });
    }
    Ok(out)
}

struct Mounted {
    child: Child,
    at: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // SAFETY: kill with a child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_mounted(&self.at) {
            for t in ["fusermount3", "fusermount"] {
                let _ = Command::new(t).args(["-u", "-z"]).arg(&self.at).status();
            }
        }
    }
}

/// Mounts, reads the tree out once, and returns (wall seconds, peak RSS KB).
fn read_round(t: &Tool, at: &Path) -> Result<(f64, u64)> {
    std::fs::create_dir_all(at)?;
    crate::measure::drop_caches();
    let child = Command::new(&t.mount[0])
        .args(&t.mount[1..])
        .arg(at)
        .envs(t.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {} mount", t.name))?;
    let m = Mounted {
        child,
        at: at.to_path_buf(),
    };
    let dir = at.join(&t.inside);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(is_mounted(at) && dir.is_dir()) {
        if Instant::now() > deadline {
            bail!("{} mount did not show {}", t.name, dir.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let start = Instant::now();
    let sh = format!("tar cf - -C '{}' . | cat > /dev/null", dir.display());
    let ok = Command::new("bash")
        .args(["-o", "pipefail", "-c", &sh])
        .status()?
        .success();
    let secs = start.elapsed().as_secs_f64();
    let rss = peak_rss_kb(m.child.id());
    drop(m);
    if !ok {
        bail!("reading the tree out of the {} mount failed", t.name);
    }
    Ok((secs, rss))
}

pub fn run_bench(o: &Opts) -> Result<()> {
    let cairn = crate::bench::cairn_binary(o)?;
    let mut co = o.clone();
    co.corpora = vec![Kind::Kernel];
    let corpus = crate::corpus::prepare_all(&co)?.remove(0);
    let Shape::Tree { pristine, .. } = &corpus.shape else {
        bail!("the kernel corpus is a tree");
    };
    let work = crate::cache_dir().join("mount-work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let rounds = if o.rounds == 0 {
        if o.quick {
            1
        } else {
            3
        }
    } else {
        o.rounds
    };
    let tools = prepare(o, &cairn, pristine, &work)?;
    let mut results: Vec<Vec<(f64, u64)>> = tools.iter().map(|_| Vec::new()).collect();
    for r in 0..rounds {
        for (i, t) in tools.iter().enumerate() {
            eprintln!("xtask: round {}/{rounds}: {} mount ...", r + 1, t.name);
            results[i].push(read_round(t, &work.join("mnt"))?);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "Reading {} ({} files, {:.0} MB) out of a FUSE mount with tar, cold cache, median of {rounds}:\n",
        corpus.name,
        corpus.files,
        corpus.bytes as f64 / 1e6
    );
    println!("| tool | wall | MB/s | mount process peak RSS |");
    println!("| --- | ---: | ---: | ---: |");
    for (t, rs) in tools.iter().zip(&results) {
        let wall = median(rs.iter().map(|x| x.0).collect());
        let rss = median(rs.iter().map(|x| x.1 as f64).collect()) / 1024.0;
        println!(
            "| {} | {wall:.2} s | {:.0} | {rss:.0} MB |",
            t.name,
            corpus.bytes as f64 / 1e6 / wall
        );
    }
    Ok(())
}

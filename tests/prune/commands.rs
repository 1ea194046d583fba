//! Prune beside other commands, black-box (the CLI) on local disk and on S3
//! (moto): prune next to a running backup, a backup paused with SIGSTOP while
//! prunes fence it, prunes killed with SIGKILL at random points, two prunes at
//! once, and dry runs that must change nothing (repo-format.md §15).

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::servers::{start_moto, Moto};
use common::{num, random_bytes, text, Sandbox};
use serde_json::Value;

const FENCED: &str = "invalidated by a concurrent prune; nothing was saved; a rerun is safe";

/// `n` files of `size` random bytes under `dir` (seeded).
fn random_tree(dir: &Path, n: usize, size: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(
            dir.join(format!("f{i:03}.bin")),
            random_bytes(size, seed * 1000 + i as u64),
        )
        .unwrap();
    }
}

/// Every file below `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Every object of a local repository: (path, size, mtime).
fn listing(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len(), m.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Where a restore puts a backed-up folder.
fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").unwrap())
}

/// How the repository is reached: the sandbox's local folder, or an S3 URL.
struct Repo<'a> {
    s: &'a Sandbox,
    s3: Option<(&'a Moto, String)>,
}

impl Repo<'_> {
    fn command(&self, args: &[&str]) -> Command {
        match &self.s3 {
            None => self.s.std_cmd(args),
            Some((moto, url)) => {
                let mut c = self.s.base();
                c.args(["-r", url])
                    .args(moto.option_args())
                    .args(["--event-log", "/dev/null"])
                    .args(args);
                c
            }
        }
    }

    /// Runs to the end: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let o = self.command(args).stdin(Stdio::null()).output().unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        common::assert_no_panic(&args.join(" "), out.as_bytes(), err.as_bytes());
        (o.status.code(), out, err)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, Some(0), "`{}`: {out}\n{err}", args.join(" "));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"))
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn backup(&self, src: &Path) -> String {
        let v = self.json(&["backup", src.to_str().unwrap()]);
        text(&v, "snapshot_id").to_string()
    }

    fn snapshot_ids(&self) -> Vec<String> {
        match self.json(&["snapshots"]) {
            Value::Array(v) => v.iter().map(|s| text(s, "id").to_string()).collect(),
            other => panic!("{other}"),
        }
    }

    /// Restores a snapshot and compares it with the files it was made of.
    fn assert_restores(&self, id: &str, src: &Path, want: &BTreeMap<PathBuf, Vec<u8>>) {
        let target = self.s.path(format!("restore-{}", rand::random::<u32>()));
        self.ok(&["restore", id, "--target", target.to_str().unwrap()]);
        let got = files(&restored(&target, src));
        assert!(
            got == *want,
            "snapshot {id} does not restore what was backed up"
        );
        std::fs::remove_dir_all(&target).unwrap();
    }

    fn check_read_data(&self) {
        let (code, out, err) = self.run(&["check", "--read-data"]);
        assert_eq!(code, Some(0), "check --read-data: {out}\n{err}");
    }

    fn prune_json(&self, extra: &[&str]) -> Value {
        let mut a = vec!["prune"];
        a.extend_from_slice(extra);
        self.json(&a)
    }
}

/// Waits for a child: (exit code, stdout, stderr).
fn finish(c: Child) -> (Option<i32>, String, String) {
    let o = c.wait_with_output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Waits until the local repository holds at least `n` data packs (or the
/// child ended).
fn wait_for_packs(s: &Sandbox, n: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.data_packs().len() < n {
        assert!(Instant::now() < deadline, "no packs appeared");
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A repository with garbage: three small snapshots of a changing folder, the
/// first forgotten (the tests forget the second). Returns the folder and its current content.
fn with_garbage(r: &Repo, name: &str) -> (PathBuf, BTreeMap<PathBuf, Vec<u8>>) {
    let src = r.s.path(name);
    random_tree(&src, 4, 300_000, 1);
    let first = r.backup(&src);
    random_tree(&src, 4, 300_000, 2);
    r.backup(&src);
    random_tree(&src, 4, 300_000, 3);
    r.backup(&src);
    r.ok(&["forget", &first]);
    (src.clone(), files(&src))
}

fn prune_beside_running_backup(r: &Repo) {
    let (small, small_files) = with_garbage(r, "small");
    let big = r.s.path("big");
    random_tree(&big, 40, 1_000_000, 7);
    let want = files(&big);
    let mut child = r.spawn(&["--json", "backup", big.to_str().unwrap()]);
    match r.s3 {
        None => wait_for_packs(r.s, 2, &mut child),
        Some(_) => std::thread::sleep(Duration::from_millis(700)),
    }
    let old = r.snapshot_ids();
    r.ok(&["forget", &old[0]]);
    let p = r.prune_json(&[]);
    let running = child.try_wait().unwrap().is_none();
    if p["swept"] == false {
        assert!(num(&p, "sessions_pending") >= 1, "{p}");
    } else {
        assert_eq!(p["swept"], true, "{p}");
    }
    let (code, out, err) = finish(child);
    assert_eq!(
        code,
        Some(0),
        "the backup beside the prune failed: {out}\n{err}"
    );
    let id = serde_json::from_str::<Value>(out.lines().last().unwrap()).unwrap()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let later = r.prune_json(&[]);
    assert_eq!(later["swept"], true, "a later prune finishes: {later}");
    r.check_read_data();
    r.assert_restores(&id, &big, &want);
    // The forgotten snapshot's neighbour is still whole too.
    for s in r.snapshot_ids() {
        if s != id {
            r.assert_restores(&s, &small, &small_files);
        }
    }
    eprintln!(
        "prune beside backup: first prune swept {} (backup still running: {running})",
        p["swept"]
    );
}

#[test]
fn prune_beside_a_running_backup_local() {
    let s = Sandbox::init_with(&["--pack-size", "1"]);
    prune_beside_running_backup(&Repo { s: &s, s3: None });
}

#[test]
fn prune_beside_a_running_backup_s3() {
    let Some(moto) = start_moto() else { return };
    moto.make_bucket("prune");
    let s = Sandbox::new();
    let r = Repo {
        s: &s,
        s3: Some((&moto, "s3://prune/repo".to_string())),
    };
    r.ok(&[
        "init",
        "--kdf-memory",
        "8",
        "--kdf-time",
        "1",
        "--pack-size",
        "1",
    ]);
    prune_beside_running_backup(&r);
}

/// rustic-rs/docs#144: a backup paused for longer than --stale-after while
/// prunes run must either save a whole snapshot or fail saying a rerun is safe.
#[test]
fn sigstopped_backup_is_fenced_or_whole() {
    let s = Sandbox::init_with(&["--pack-size", "1"]);
    let r = Repo { s: &s, s3: None };
    let (small, small_files) = with_garbage(&r, "small");
    let big = s.path("big");
    random_tree(&big, 40, 1_000_000, 9);
    let want = files(&big);
    let mut child = r.spawn(&["--json", "backup", big.to_str().unwrap()]);
    let before = s.data_packs().len();
    wait_for_packs(&s, before + 2, &mut child);
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let ids = r.snapshot_ids();
    r.ok(&["forget", &ids[0]]);
    std::thread::sleep(Duration::from_millis(1500));
    let p1 = r.prune_json(&["--stale-after", "1s"]);
    let p2 = r.prune_json(&["--stale-after", "1s"]);
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let (code, out, err) = finish(child);
    let fenced_some = num(&p1, "sessions_fenced") + num(&p2, "sessions_fenced");
    match code {
        Some(0) => {
            let id = serde_json::from_str::<Value>(out.lines().last().unwrap()).unwrap()
                ["snapshot_id"]
                .as_str()
                .unwrap()
                .to_string();
            r.assert_restores(&id, &big, &want);
        }
        Some(1) => assert!(err.contains(FENCED), "{err}"),
        other => panic!("backup exited {other:?}: {out}\n{err}"),
    }
    eprintln!("SIGSTOP: backup exited {code:?}; prunes fenced {fenced_some}: {p1}\n{p2}");
    if fenced_some > 0 {
        assert_eq!(code, Some(1), "a fenced backup must not save a snapshot");
    }
    r.check_read_data();
    let Value::Array(snaps) = r.json(&["snapshots"]) else {
        panic!("snapshots --json is not an array")
    };
    for snap in &snaps {
        let id = text(snap, "id");
        if snap["paths"][0] == big.to_str().unwrap() {
            r.assert_restores(id, &big, &want);
        } else {
            r.assert_restores(id, &small, &small_files);
        }
    }
    // Later: the rerun is safe, and a prune finishes everything.
    let id = r.backup(&big);
    r.assert_restores(&id, &big, &want);
    assert_eq!(r.prune_json(&[])["swept"], true);
    r.check_read_data();
}

/// A repository with much garbage: five backups of a changing folder, all but
/// the last forgotten. Returns the folder, its content, the kept snapshot.
fn much_garbage(r: &Repo) -> (PathBuf, BTreeMap<PathBuf, Vec<u8>>, String) {
    let src = r.s.path("src");
    let mut last = String::new();
    for round in 0..5u64 {
        random_tree(&src, 6, 200_000, 100 + round);
        // Keep some files across rounds, so packs end up partly used.
        std::fs::write(src.join("keep.bin"), random_bytes(150_000, 5)).unwrap();
        last = r.backup(&src);
    }
    r.ok(&["forget", "--keep-last", "1"]);
    (src.clone(), files(&src), last)
}

#[test]
fn prune_killed_at_random_points_leaves_a_whole_repository() {
    let s = Sandbox::init_with(&["--pack-size", "1"]);
    let r = Repo { s: &s, s3: None };
    let (src, want, kept) = much_garbage(&r);
    let seed: u64 = rand::random();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut delays: Vec<u64> = vec![0, 1, 3];
    delays.extend((0..4).map(|_| rand::Rng::gen_range(&mut rng, 0..400)));
    let mut killed = 0;
    for (round, ms) in delays.iter().enumerate() {
        // Some garbage again each round, so every prune has work to be killed in.
        if round % 2 == 1 {
            let extra = s.path(format!("extra{round}"));
            random_tree(&extra, 2, 200_000, 500 + round as u64);
            let id = r.backup(&extra);
            r.ok(&["forget", &id]);
        }
        let mut child = r.spawn(&["prune", "--stale-after", "0s", "--max-unused", "0%"]);
        std::thread::sleep(Duration::from_millis(*ms));
        if child.try_wait().unwrap().is_none() {
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            killed += 1;
        }
        let (code, out, err) = finish(child);
        assert!(
            code.is_none() || code == Some(0),
            "seed {seed}, delay {ms} ms: prune exited {code:?}: {out}\n{err}"
        );
        r.check_read_data();
        assert_eq!(r.snapshot_ids(), vec![kept.clone()], "seed {seed}");
        r.assert_restores(&kept, &src, &want);
    }
    eprintln!(
        "killed {killed} of {} prunes (seed {seed}, delays {delays:?})",
        delays.len()
    );
    assert!(killed > 0, "no prune was killed: the delays are too long");
    let fin = r.prune_json(&["--stale-after", "0s"]);
    assert_eq!(fin["swept"], true, "{fin}");
    let again = r.prune_json(&["--stale-after", "0s"]);
    assert_eq!(num(&again, "packs_to_delete"), 0, "{again}");
    let c = r.json(&["check", "--read-data"]);
    assert_eq!(num(&c, "unused_packs"), 0, "{c}");
    r.assert_restores(&kept, &src, &want);
}

#[test]
fn two_prunes_at_once_beside_backups() {
    let s = Sandbox::init_with(&["--pack-size", "1"]);
    let r = Repo { s: &s, s3: None };
    let (src, want, kept) = much_garbage(&r);
    let b1 = s.path("b1");
    random_tree(&b1, 8, 1_000_000, 41);
    let b1_files = files(&b1);
    let backup = r.spawn(&["--json", "backup", b1.to_str().unwrap()]);
    let p1 = r.spawn(&["--json", "prune", "--max-unused", "0%"]);
    let p2 = r.spawn(&["--json", "prune", "--max-unused", "0%"]);
    let mut marked = Vec::new();
    for p in [p1, p2] {
        let (code, out, err) = finish(p);
        assert_eq!(code, Some(0), "{out}\n{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        eprintln!("prune: {}", {
            let mut v = v.clone();
            v["packs"] = Value::Null;
            v
        });
        if v["lost_race"] == false && num(&v, "packs_to_delete") + num(&v, "packs_to_repack") > 0 {
            marked.push(num(&v, "generation"));
        }
    }
    marked.sort();
    let before = marked.len();
    marked.dedup();
    assert_eq!(before, marked.len(), "two prunes marked one generation");
    let (code, out, err) = finish(backup);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let b1_id = serde_json::from_str::<Value>(out.lines().last().unwrap()).unwrap()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Marks are created once each: one object per generation number.
    let marks: Vec<String> = std::fs::read_dir(s.repo.join("gc"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".mark"))
                .collect()
        })
        .unwrap_or_default();
    let mut gens: Vec<&str> = marks.iter().map(|m| m.trim_end_matches(".mark")).collect();
    gens.dedup();
    assert_eq!(gens.len(), marks.len());
    r.check_read_data();
    r.assert_restores(&kept, &src, &want);
    r.assert_restores(&b1_id, &b1, &b1_files);
    let fin = r.prune_json(&[]);
    assert_eq!(fin["swept"], true, "{fin}");
    r.check_read_data();
    r.assert_restores(&kept, &src, &want);
    r.assert_restores(&b1_id, &b1, &b1_files);
}

#[test]
fn dry_runs_change_no_object() {
    let s = Sandbox::init_with(&["--pack-size", "1"]);
    let r = Repo { s: &s, s3: None };
    let (_src, _want, kept) = much_garbage(&r);
    let before = listing(&s.repo);
    let v = r.prune_json(&["--dry-run", "--max-unused", "0%"]);
    assert_eq!(v["dry_run"], true);
    assert!(num(&v, "packs_to_delete") > 0, "{v}");
    assert_eq!(
        listing(&s.repo),
        before,
        "prune --dry-run changed the repository"
    );
    let out = r.ok(&["--json", "forget", "--dry-run", "--prune", &kept]);
    let docs: Vec<Value> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{out}");
    assert!(num(&docs[1], "packs_to_delete") > 0, "{out}");
    assert_eq!(
        listing(&s.repo),
        before,
        "forget --dry-run --prune changed the repository"
    );
    // And the real thing does change it (the comparison can fail).
    r.prune_json(&[]);
    assert_ne!(listing(&s.repo), before);
}

/// Schedule 3 of issue 16, black-box: a prune slowed by `--limit-upload` is
/// stopped with SIGSTOP while it uploads its repack output; two other prunes
/// fence it and finish two generations (keeping partly used packs whole);
/// SIGCONT. The stopped prune must delete nothing and say so truthfully, and
/// every snapshot restores. (The first implementation's zombie re-marked the
/// cleaned-up generation and deleted the pack it had repacked from: most files
/// of the kept snapshot were lost, and it printed "nothing was saved".)
#[test]
fn sigstopped_repacking_prune_deletes_nothing() {
    let s = Sandbox::init_with(&["--pack-size", "4"]);
    let r = Repo { s: &s, s3: None };
    let src = s.path("src");
    random_tree(&src, 8, 40_000, 70);
    std::fs::write(src.join("big.bin"), random_bytes(1_500_000, 71)).unwrap();
    let first = r.backup(&src);
    std::fs::remove_file(src.join("big.bin")).unwrap();
    let kept = r.backup(&src);
    let want = files(&src);
    r.ok(&["forget", &first]);
    // The one pack holds 320 KB the kept snapshot needs and 1.5 MB it does
    // not: this prune repacks it, at 40 KiB/s (about 8 s of upload).
    let mut zombie = r.spawn(&["--limit-upload", "40", "prune", "--stale-after", "0s"]);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        zombie.try_wait().unwrap().is_none(),
        "the prune ended too soon"
    );
    let pid = zombie.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let keep_packs = ["--stale-after", "0s", "--max-unused", "unlimited"];
    let mut fenced = 0;
    for g in 0..2u64 {
        let garbage = s.path(format!("g{g}"));
        random_tree(&garbage, 2, 200_000, 80 + g);
        let id = r.backup(&garbage);
        r.ok(&["forget", &id]);
        let p = r.prune_json(&keep_packs);
        assert_eq!(p["swept"], true, "{p}");
        fenced += num(&p, "sessions_fenced");
    }
    assert_eq!(fenced, 1, "the stopped prune is fenced once");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let (code, out, err) = finish(zombie);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("fenced") && err.contains("deleted nothing"),
        "{err}"
    );
    r.assert_restores(&kept, &src, &want);
    r.check_read_data();
    // A prune now collects what is left, and the snapshot still restores.
    assert_eq!(r.prune_json(&["--stale-after", "0s"])["swept"], true);
    r.assert_restores(&kept, &src, &want);
    r.check_read_data();
}

//! Concurrency and interruption: two backups at once on one repository, and a
//! backup killed half way.

use crate::common;

use std::io::Write;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn finished(what: &str, o: &Output) -> Value {
    assert_no_panic(what, &o.stdout, &o.stderr);
    assert!(
        o.status.success(),
        "`{what}` failed ({})\n--- stdout:\n{}\n--- stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("`{what}`: stdout is not JSON: {e}"))
}

/// User + system CPU ticks of a process (Linux /proc).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[test]
fn concurrent_backups_both_succeed() {
    let s = Sandbox::init();
    let trees = [s.path("tree1"), s.path("tree2")];
    for (i, t) in trees.iter().enumerate() {
        write(&t.join("own.bin"), random_bytes(1_500_000, 100 + i as u64));
        // The same content in both: both processes store (or dedup) it at once.
        write(&t.join("shared.bin"), random_bytes(1_000_000, 7));
        write(&t.join(format!("sub/small{i}.txt")), format!("tree {i}"));
        write(&t.join("sub/same.txt"), "same small file");
    }
    let children: Vec<_> = trees
        .iter()
        .map(|t| {
            s.std_cmd(["backup", "--json", t.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let ids: Vec<String> = children
        .into_iter()
        .map(|c| {
            let v = finished("concurrent backup", &c.wait_with_output().unwrap());
            text(&v, "snapshot_id").to_string()
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
    assert_eq!(s.snapshot_count(), 2);
    let check = s.ok(["check", "--read-data"]);
    assert!(check.stdout().contains("no errors"), "{}", check.dump());
    for (i, (id, t)) in ids.iter().zip(&trees).enumerate() {
        let target = s.path(format!("restore{i}"));
        s.restore(id, &target, &[]);
        assert_same_tree(t, &restored_path(&target, t));
        // Only this snapshot's tree is restored.
        let other = &trees[1 - i];
        assert!(!restored_path(&target, other).exists());
    }
}

/// A backup killed (SIGKILL) after it uploaded at least one pack leaves a
/// repository that checks clean; the next backup adopts the uploaded packs,
/// reuses their chunks, and restores correctly. The backup reads a stream the
/// test controls, so the kill always lands mid-backup whatever the speed.
#[test]
fn killed_backup_leaves_a_usable_repository() {
    const SEED: u64 = 77;
    const CAP: u64 = 512 * MIB;
    let s = Sandbox::init_with(&["--pack-size", "1"]);
    let mut child = s
        .std_cmd(["backup", "--stdin", "--stdin-filename", "big.img"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rng = XorShift::new(SEED);
            let mut buf = vec![0u8; MIB as usize];
            let mut written = 0u64;
            // Keep stdin open until told: cairn must never see the end of input.
            while !stop.load(Ordering::Relaxed) {
                if written < CAP {
                    rng.fill(&mut buf);
                    if stdin.write_all(&buf).is_err() {
                        break;
                    }
                    written += buf.len() as u64;
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            written
        })
    };
    // Poll for the first pack. A backup that stops using CPU while its input
    // keeps coming is stuck (deadlocked), not slow: fail early and say so.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut last_cpu, mut last_change) = (0, Instant::now());
    while s.data_packs().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no pack was written within 300 s"
        );
        if let Some(st) = child.try_wait().unwrap() {
            panic!("backup ended ({st}) before the test could interrupt it");
        }
        let cpu = cpu_ticks(child.id()).unwrap_or(0);
        if cpu != last_cpu {
            (last_cpu, last_change) = (cpu, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            stop.store(true, Ordering::Relaxed);
            panic!("backup --stdin stalled: no pack written and no CPU used for 20 s while input was available (deadlock?)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    let streamed = writer.join().unwrap();
    assert_no_panic("killed backup", &out.stdout, &out.stderr);
    assert!(
        out.status.code().is_none(),
        "backup was not killed: {}",
        out.status
    );
    let orphans = s.data_packs();
    assert!(!orphans.is_empty());
    eprintln!(
        "killed after streaming {streamed} bytes; {} data packs on disk",
        orphans.len()
    );

    assert_eq!(
        s.snapshot_count(),
        0,
        "an interrupted backup saved a snapshot"
    );
    // Warnings about unindexed packs are fine; errors are not.
    s.ok(["check"]);
    // The dead process took no lock: its session simply never ended.
    let u = s.json(["unlock"]);
    assert_eq!(num(&u, "removed"), 0, "a backup took a lock: {u}");

    // Back up the stream's first 12 MiB as a file: its chunks in the packs
    // uploaded before the kill are reused.
    const LEN: u64 = 12 * MIB;
    let dir = s.path("data");
    let file = dir.join("big.img");
    std::fs::create_dir_all(&dir).unwrap();
    write_random(&file, LEN, SEED);
    let b = s.backup([&dir]);
    let added = num(&b, "data_added");
    assert!(
        added + 256 * 1024 <= LEN,
        "nothing of the interrupted upload was reused: {b}"
    );
    let check = s.ok(["check"]);
    assert!(
        !check.stderr.contains("warning"),
        "packs left unadopted after a new backup\n{}",
        check.dump()
    );
    let target = s.path("t");
    s.restore("latest", &target, &[]);
    assert!(
        same_content(&file, &restored_path(&target, &file)),
        "restored file differs"
    );
    s.ok(["check", "--read-data"]);
    // Everything the dead backup uploaded was adopted and is used: a prune
    // finds nothing to collect (and needs no generation to say so).
    let p = s.json(["prune"]);
    assert_eq!(num(&p, "packs_to_delete"), 0, "{p}");
    assert_eq!(p["swept"], true, "{p}");
    s.ok(["check", "--read-data"]);
    let target = s.path("t2");
    s.restore("latest", &target, &[]);
    assert!(same_content(&file, &restored_path(&target, &file)));
}

/// A tree 2,000 levels deep backs up (no stack overflow: below a depth the
/// walker keeps its own stack), lists and dumps.
#[test]
fn a_tree_two_thousand_levels_deep_backs_up() {
    let s = Sandbox::init();
    let mut dir = s.path("deep");
    for _ in 0..2000 {
        dir.push("d");
    }
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir.join("leaf"), "bottom");
    let root = s.path("deep");
    let v = s.backup([&root]);
    assert_eq!(num(&v, "files_new"), 1, "{v}");
    let listed = s.ok(["ls", "latest"]).lines();
    assert!(listed.len() > 2000, "{} entries listed", listed.len());
    let leaf = dir.join("leaf");
    assert_eq!(
        s.ok(["dump", "latest", leaf.to_str().unwrap()]).stdout,
        b"bottom"
    );
}

/// A tree 100,000 levels deep (paths of 200 KB, far beyond PATH_MAX) backs
/// up through directory handles, backs up again unchanged, and checks;
/// restore writes the levels whose paths the system takes and says in one
/// line where it stopped.
#[test]
fn a_tree_a_hundred_thousand_levels_deep_backs_up() {
    const DEPTH: usize = 100_000;
    let s = Sandbox::init();
    let base = s.path("deep");
    std::fs::create_dir(&base).unwrap();
    make_deep_chain(&base, "top", DEPTH);
    let root = base.join("top");
    let v = s.backup([&root]);
    assert_eq!(num(&v, "files_new"), 1, "{v}");
    assert_eq!(num(&v, "dirs_new"), DEPTH as u64 + 1, "{v}");
    let v = s.backup([&root]);
    assert_eq!(num(&v, "dirs_unmodified"), DEPTH as u64 + 1, "{v}");
    assert_eq!(num(&v, "files_unmodified"), 1, "{v}");
    s.ok(["check", "--read-data"]);
    remove_deep(&base);

    let target = s.path("t");
    let o = s
        .cmd(["restore", "latest", "--target", target.to_str().unwrap()])
        .code(1);
    let errors: Vec<_> = o
        .stderr
        .lines()
        .filter(|l| l.contains("longer than the system's limit"))
        .map(str::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "{}", o.dump());
    assert!(errors[0].contains("nor anything below it"), "{}", errors[0]);
    assert!(restored_path(&target, &root).join("d/d/d").is_dir());
    remove_deep(&target);
}

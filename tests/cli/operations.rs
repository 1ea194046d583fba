//! Unattended operation: health, verification passes, restoration drills.

use crate::common;
use common::*;

use std::fs;
use std::path::Path;

/// Flips one byte in the middle of a stored pack.
fn flip_byte(pack: &Path) {
    let mut bytes = fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(pack, &bytes).unwrap();
}

fn pack_id(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn health_reports_stale_and_fresh_groups() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a"), "alpha");
    let src = src.to_str().unwrap();
    let now = chrono::Utc::now();
    let fresh = (now - chrono::Duration::hours(2))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let stale = (now - chrono::Duration::hours(30))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    s.backup([src, "--host", "fresh", "--time", &fresh]);
    s.backup([src, "--host", "stale", "--time", &stale]);

    let out = s.cmd(["health"]).code(1);
    let problems: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("problem: "))
        .collect();
    assert_eq!(problems.len(), 1, "{}", out.dump());
    assert!(problems[0].contains("stale:"), "{}", out.dump());
    let js = s.cmd(["health", "--json"]).code(1).json();
    assert_eq!(js["healthy"], false, "{js}");
    assert_eq!(js["reachable"], true, "{js}");
    let groups = js["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{js}");
    let by_host = |h: &str| groups.iter().find(|g| g["host"] == h).unwrap().clone();
    assert_eq!(by_host("fresh")["stale"], false, "{js}");
    assert_eq!(by_host("stale")["stale"], true, "{js}");
    assert_eq!(num(&by_host("fresh"), "size"), 5, "{js}");
    assert!(num(&by_host("stale"), "age_seconds") >= 30 * 3600, "{js}");
    assert!(s
        .events()
        .iter()
        .any(|e| e["event"] == "health.stale" && e["severity"] == "warning"));

    // A wider limit: healthy, exit 0.
    let js = s.json(["health", "--max-age", "2d"]);
    assert_eq!(js["healthy"], true, "{js}");
    assert!(
        js["verification"].is_null() && js["drill"].is_null(),
        "{js}"
    );
    s.cmd(["health", "--max-age", "soon"]).code(2);
    Sandbox::new().cmd(["health"]).code(10);
}

#[test]
fn verification_pass_finds_a_flipped_byte_and_health_sees_it() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("victim.bin"), random_bytes(300_000, 11));
    let snap = text(&s.backup([&src]), "snapshot_id").to_string();
    let first = s.json(["check", "--max-duration", "10m"]);
    assert_eq!(num(&first, "packs_read"), num(&first, "packs"), "{first}");
    assert_eq!(first["coverage_30d"], 1.0, "{first}");
    assert!(first["oldest_verification"].is_string(), "{first}");
    assert!(num(&first, "bytes_read") > 300_000, "{first}");
    assert_eq!(s.json(["health"])["verification"]["result"], "ok");

    let packs = s.data_packs();
    assert_eq!(packs.len(), 1, "{packs:?}");
    flip_byte(&packs[0]);
    let out = s.cmd(["check", "--read-data", "--max-bytes", "5G"]).code(1);
    assert!(
        out.stderr.contains(&format!(
            "damaged pack data/{}/{}",
            &pack_id(&packs[0])[..2],
            pack_id(&packs[0])
        )),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("victim.bin") && out.stderr.contains(&snap[..8]),
        "{}",
        out.dump()
    );
    let js = s.cmd(["check", "--read-data", "--json"]).code(1).json();
    let dp = &js["damaged_packs"][0];
    assert!(text(dp, "pack").ends_with(&pack_id(&packs[0])), "{js}");
    assert_eq!(dp["snapshots"][0], snap[..8], "{js}");
    assert!(
        dp["files"][0][1].as_str().unwrap().ends_with("victim.bin"),
        "{js}"
    );
    assert!(js["coverage_30d"].as_f64().unwrap() < 1.0, "{js}");
    assert!(s.events().iter().any(|e| e["event"] == "check.failed"
        && e["severity"] == "critical"
        && e["figures"]["damaged_packs"][0]["pack"]
            .as_str()
            .is_some_and(|p| p.ends_with(&pack_id(&packs[0])))));

    let out = s.cmd(["health", "--json"]).code(1);
    let js = out.json();
    assert_eq!(js["verification"]["result"], "damaged", "{js}");
    assert_eq!(num(&js["verification"], "packs_damaged"), 1, "{js}");
    assert!(
        out.stderr
            .contains("found damaged by their latest verification (the last verification pass"),
        "{}",
        out.dump()
    );
    assert!(s
        .events()
        .iter()
        .any(|e| e["event"] == "health.verification_failed"));
}

#[test]
fn budgeted_passes_cover_everything_least_recently_verified_first() {
    let s = Sandbox::init_with(&["--pack-size", "1"]);
    let src = s.path("src");
    for i in 0..8 {
        write(&src.join(format!("f{i}")), random_bytes(700_000, 100 + i));
    }
    s.backup([&src]);
    let packs = num(&s.json(["check"]), "packs");
    assert!(packs >= 4, "{packs}");
    let pass = |budget: &str| s.json(["check", "--max-bytes", budget]);
    let first = pass("1M");
    let read1 = num(&first, "packs_read");
    assert!(read1 >= 1 && read1 < packs, "{first}");
    // Within the budget, except that one pack is always read.
    assert!(
        read1 == 1 || num(&first, "bytes_read") <= 1 << 20,
        "{first}"
    );
    assert_eq!(first["budget_exhausted"], true, "{first}");
    assert!(first["oldest_verification"].is_null(), "{first}");
    let cov1 = first["coverage_30d"].as_f64().unwrap();
    assert!(cov1 > 0.0 && cov1 < 1.0, "{first}");

    // Each pass reads packs no earlier pass read, until all are verified:
    // coverage grows by every byte a pass reads. Only the pass that reads
    // the last unverified packs may spend what is left of its budget on the
    // least recently verified ones (how the blobs fall into packs, and so
    // how big each pack is, depends on thread timing).
    let ledger_records = |s: &Sandbox| fs::read_dir(s.repo.join("verify")).unwrap().count();
    let live = num(&first, "live_bytes");
    let mut covered_bytes = num(&first, "covered_bytes_30d");
    assert_eq!(covered_bytes, num(&first, "bytes_read"), "{first}");
    let mut passes = 1;
    let mut last = first;
    while covered_bytes < live {
        last = pass("1M");
        assert!(num(&last, "packs_read") >= 1, "{last}");
        let now_covered = num(&last, "covered_bytes_30d");
        let read = num(&last, "bytes_read");
        if now_covered < live {
            assert_eq!(
                now_covered - covered_bytes,
                read,
                "a pass read a verified pack while others were never read: {last}"
            );
        } else {
            assert!(read >= now_covered - covered_bytes, "{last}");
        }
        covered_bytes = now_covered;
        passes += 1;
        assert!(passes <= packs, "passes do not make progress: {last}");
    }
    assert_eq!(last["coverage_30d"], 1.0, "{last}");
    assert!(last["oldest_verification"].is_string(), "{last}");
    assert_eq!(ledger_records(&s), passes as usize);
    // Subsets keep working and are recorded too. (A share, not a slice: a
    // slice of 6 packs named by content may hold none of them.)
    let sub = s.json(["check", "--read-data-subset", "50%"]);
    assert!(
        sub["recorded"].as_str().unwrap().starts_with("verify/"),
        "{sub}"
    );
    assert_eq!(ledger_records(&s), passes as usize + 1);
    s.cmd(["check", "--max-bytes", "lots"]).code(2);
    s.cmd(["check", "--max-duration", "forever"]).code(2);
}

#[test]
fn drill_on_a_healthy_repository_passes_and_health_sees_it() {
    let s = Sandbox::init();
    let src = s.path("src");
    for i in 0..5 {
        write(
            &src.join(format!("d/f{i}")),
            random_bytes(50_000 + i as usize, 200 + i),
        );
    }
    s.backup([&src]);
    s.cmd(["backup", "--stdin", "--stdin-filename", "db.sql"])
        .stdin(random_bytes(100_000, 7))
        .ok();
    let tmp = s.path("drilltmp");
    fs::create_dir(&tmp).unwrap();
    let js = s.json(["drill", "--files", "3", "--tmpdir", tmp.to_str().unwrap()]);
    assert_eq!(num(&js, "files"), 3, "{js}");
    assert_eq!(num(&js, "files_ok"), 3, "{js}");
    assert_eq!(js["success_rate"], 1.0, "{js}");
    assert!(
        num(&js, "bytes_restored") >= 100_000,
        "the dump was not drilled: {js}"
    );
    assert_eq!(js["snapshots"].as_array().unwrap().len(), 2, "{js}");
    assert!(
        js["recorded"].as_str().unwrap().starts_with("drills/"),
        "{js}"
    );
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "the drill left files behind"
    );
    assert!(s.events().iter().any(|e| e["event"] == "drill.completed"));
    let h = s.json(["health"]);
    assert_eq!(h["drill"]["result"], "ok", "{h}");
    assert_eq!(num(&h["drill"], "files_ok"), 3, "{h}");
    // The byte budget: nothing larger than what is left is restored.
    let js = s.json(["drill", "--max-bytes", "60000", "--files", "50"]);
    assert!(num(&js, "bytes_restored") <= 60_000, "{js}");
    assert!(num(&js, "files_skipped_too_large") >= 1, "{js}");
    s.cmd(["drill", "--tmpdir", s.path("nope").to_str().unwrap()])
        .code(2);
}

#[test]
fn drill_on_a_damaged_pack_fails_naming_the_file() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("victim.bin"), random_bytes(300_000, 31));
    s.backup([&src]);
    flip_byte(&s.data_packs()[0]);
    let out = s.cmd(["drill"]).code(1);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("failed: ") && l.contains("victim.bin")),
        "{}",
        out.dump()
    );
    let js = s.cmd(["drill", "--json"]).code(1).json();
    assert_eq!(num(&js, "files_failed"), 1, "{js}");
    assert!(
        js["failures"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("victim.bin"),
        "{js}"
    );
    assert!(s
        .events()
        .iter()
        .any(|e| e["event"] == "drill.failed" && e["severity"] == "critical"));
    let out = s.cmd(["health", "--json"]).code(1);
    assert_eq!(out.json()["drill"]["result"], "failed");
    assert!(
        out.stderr.contains("problem: the last drill") && out.stderr.contains("victim.bin"),
        "{}",
        out.dump()
    );
    assert!(s
        .events()
        .iter()
        .any(|e| e["event"] == "health.drill_failed"));
}

/// A drill that restores nothing proves nothing: it fails (exit 1), and
/// `health` then reports the failed drill (issue 18).
#[test]
fn a_drill_that_restores_no_file_fails() {
    let s = Sandbox::init();
    let empty = s.path("empty");
    fs::create_dir_all(&empty).unwrap();
    s.backup([&empty]);
    let tmp = s.path("drilltmp");
    fs::create_dir(&tmp).unwrap();
    let out = s.cmd(["drill", "--tmpdir", tmp.to_str().unwrap()]).code(1);
    assert!(out.stderr.contains("restored no file"), "{}", out.dump());
    let h = s.cmd(["health", "--json"]).code(1).json();
    assert_eq!(h["drill"]["result"], "failed", "{h}");
}

/// A budgeted pass that reads only intact packs after an earlier pass found
/// damage does not make `health` green: damage counts until the pack is
/// verified intact or gone (issue 18).
#[test]
fn health_stays_red_after_a_budgeted_pass_reads_other_packs() {
    let s = Sandbox::init_with(&["--pack-size", "1"]);
    let src = s.path("src");
    for i in 0..3 {
        write(
            &src.join(format!("f{i}.bin")),
            random_bytes(700_000, 40 + i),
        );
    }
    s.backup([&src]);
    let packs = s.data_packs();
    assert!(packs.len() >= 2, "{packs:?}");
    flip_byte(&packs[0]);
    s.cmd(["check", "--read-data"]).code(1);
    // Budgeted passes of one pack each, until one reads an intact pack (the
    // least recently verified go first; ties in any order).
    let mut green_pass = false;
    for _ in 0..3 {
        let out = s.cmd(["check", "--read-data", "--max-bytes", "1"]).run();
        if out.code == Some(0) {
            green_pass = true;
            break;
        }
    }
    assert!(green_pass, "no budgeted pass read an intact pack");
    let out = s.cmd(["health", "--json"]).code(1);
    let h = out.json();
    assert_eq!(h["verification"]["result"], "damaged", "{h}");
    assert_eq!(
        num(&h["verification"], "packs_damaged_outstanding"),
        1,
        "{h}"
    );
    assert!(out.stderr.contains("found damaged"), "{}", out.dump());
}

/// The heal path a user follows: a verification pass names a damaged pack,
/// `repair packs` salvages what still reads and deletes it, a backup of the
/// intact source stores the lost blobs again, and the earlier snapshot
/// restores whole.
#[test]
fn damaged_pack_then_repair_then_backup_makes_old_snapshots_whole() {
    let s = Sandbox::init();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..6 {
        write_random(&src.join(format!("f{i}")), 700 << 10, 40 + i);
    }
    let first = text(&s.backup([&src]), "snapshot_id").to_string();
    let packs = s.data_packs();
    let damaged = packs[0].clone();
    flip_byte(&damaged);

    let out = s.cmd(["check", "--read-data"]).code(1);
    assert!(out.stderr.contains("cairn repair packs"), "{}", out.dump());
    let js = s.cmd(["health", "--json"]).code(1).json();
    assert!(
        js["problems"].to_string().contains("verification_failed"),
        "{js}"
    );

    // The plan first: nothing changes.
    let out = s.ok(["repair", "packs", "--dry-run"]);
    assert!(out.stdout().contains("would be deleted"), "{}", out.dump());
    assert!(out.stdout().contains(&pack_id(&damaged)), "{}", out.dump());
    assert!(damaged.exists());
    // On a terminal the plan says what it reads while it reads.
    let shown = s.on_terminal(&["repair", "packs", "--dry-run"]);
    assert!(
        shown.contains("planning: reading 1 damaged pack"),
        "{shown}"
    );

    let js = s.json(["repair", "packs"]);
    assert_eq!(js["outcome"]["packs_deleted"], 1, "{js}");
    assert!(num(&js["outcome"], "blobs_lost") >= 1, "{js}");
    assert!(!damaged.exists());
    // Lost data is reported until it is stored again.
    s.cmd(["check"]).code(1);

    s.backup([&src]);
    let target = s.path("restored");
    s.restore(&first, &target, &[]);
    assert_same_tree(&src, &restored_path(&target, &src));
    s.ok(["check", "--read-data"]);
    s.json(["health"]);
    // Nothing left to repair.
    let js = s.json(["repair", "packs"]);
    assert_eq!(js["outcome"]["packs_deleted"], 0, "{js}");
}

#[test]
fn repair_index_indexes_packs_whose_index_object_was_lost() {
    let s = Sandbox::init();
    let (src, first) = s.small_tree();
    for entry in fs::read_dir(s.repo.join("index")).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let js = s.json(["repair", "index", "--dry-run"]);
    assert_eq!(js["plan"]["unindexed"].as_array().unwrap().len(), 2, "{js}");
    assert_eq!(js["packs_indexed"], 0, "{js}");
    let js = s.json(["repair", "index"]);
    assert_eq!(js["packs_indexed"], 2, "{js}");
    s.ok(["check", "--read-data"]);
    let target = s.path("t");
    s.restore(&first, &target, &[]);
    assert_same_tree(&src, &restored_path(&target, &src));
    s.cmd(["repair", "packs", "nothex"]).code(2);
}

/// Without the source to back up again, `repair snapshots` keeps what is
/// left: the lost files go, the rest restores, the original stays until
/// `--forget`.
#[test]
fn repair_snapshots_keeps_what_survived() {
    let s = Sandbox::init();
    let src = s.path("src");
    fs::create_dir_all(src.join("keep")).unwrap();
    write_random(&src.join("keep/a"), 300 << 10, 1);
    write_random(&src.join("keep/b"), 300 << 10, 2);
    s.backup([&src]);
    let before = s.data_packs();
    fs::create_dir_all(src.join("new")).unwrap();
    write_random(&src.join("new/c"), 300 << 10, 3);
    let second = text(&s.backup([&src]), "snapshot_id").to_string();
    let added: Vec<_> = s
        .data_packs()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(added.len(), 1);
    flip_byte(&added[0]);
    s.cmd(["check", "--read-data"]).code(1);
    s.ok(["repair", "packs"]);

    let js = s.json(["repair", "snapshots", "--dry-run"]);
    let plan = js["snapshots"].as_array().unwrap();
    assert_eq!(plan.len(), 1, "{js}");
    assert!(
        plan[0]["snapshot"].as_str().unwrap().starts_with(&second),
        "{js}"
    );
    assert_eq!(plan[0]["lost_files"].as_array().unwrap().len(), 1, "{js}");
    assert!(
        plan[0]["lost_files"][0]
            .as_str()
            .unwrap()
            .ends_with("/new/c"),
        "{js}"
    );
    assert_eq!(s.snapshot_count(), 2);

    let out = s.ok(["repair", "snapshots", "--forget"]);
    assert!(out.stdout().contains("repaired as"), "{}", out.dump());
    assert_eq!(s.snapshot_count(), 2);
    let repaired = s.snapshots(&["--tag", "repaired"]);
    assert_eq!(repaired.len(), 1);
    s.ok(["check"]);
    let target = s.path("t");
    s.restore(repaired[0]["id"].as_str().unwrap(), &target, &[]);
    let back = restored_path(&target, &src);
    assert!(same_content(&src.join("keep/a"), &back.join("keep/a")));
    assert!(same_content(&src.join("keep/b"), &back.join("keep/b")));
    assert!(!back.join("new/c").exists());
    // Nothing left to repair.
    let js = s.json(["repair", "snapshots"]);
    assert!(js["snapshots"].as_array().unwrap().is_empty(), "{js}");
}

/// On a terminal, a drill shows how many sampled files it has restored and
/// compared.
#[test]
fn drill_shows_progress_on_a_terminal() {
    let s = Sandbox::init();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..30 {
        write_random(&src.join(format!("f{i}")), 64 << 10, 100 + i);
    }
    s.backup([&src]);
    let shown = s.on_terminal(&["drill", "--files", "30"]);
    assert!(shown.contains("files restored and compared"), "{shown}");
    assert!(
        shown.contains("30 of 30 files intact") || shown.contains("30 of 30"),
        "{shown}"
    );
}

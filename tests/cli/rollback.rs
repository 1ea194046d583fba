//! `restore --safe` and `rollback`: a safe restore into a folder that holds
//! something lists the local files it replaces, saves a `pre-restore`
//! snapshot of the folder first and, when the restore fails, puts the folder
//! back as it was; `rollback` does that on demand.

use crate::common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// Every file below `dir` (relative path → content); folders as empty
/// entries ending in '/'.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                out.insert(rel.join(""), Vec::new());
                walk(root, &p, out);
            } else {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn restore_cmd(s: &Sandbox, snap: &str, target: &Path, extra: &[&str]) -> Run {
    let mut a: Vec<&OsStr> = vec![
        OsStr::new("restore"),
        OsStr::new(snap),
        OsStr::new("--target"),
        target.as_os_str(),
    ];
    a.extend(extra.iter().map(OsStr::new));
    s.cmd(a)
}

fn event_names(s: &Sandbox) -> Vec<String> {
    s.events()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A target restored from the small tree, then changed locally (one file
/// edited, one added), and a second snapshot of the source with one file
/// changed and one new: (source, target, second snapshot).
fn changed_target(s: &Sandbox) -> (PathBuf, PathBuf, String) {
    let (src, id1) = s.small_tree();
    let t = s.path("t");
    s.restore(&id1, &t, &[]);
    write(&restored_path(&t, &src.join("a/1.txt")), "edited here");
    write(&restored_path(&t, &src.join("a/mine.txt")), "mine");
    write(&src.join("b/3.txt"), "three, second version");
    write(&src.join("b/new.txt"), "new in the second snapshot");
    let id2 = text(&s.backup([&src]), "snapshot_id").to_string();
    (src, t, id2)
}

#[test]
fn safe_restore_lists_modified_files_and_saves_a_pre_restore_snapshot() {
    let s = Sandbox::init();
    let (src, t, id2) = changed_target(&s);
    let before = files(&t);
    let snaps_before = s.snapshot_count();

    // A dry run says what differs and what it would do, and writes nothing.
    let plan = s.json([
        "restore",
        &id2,
        "--target",
        t.to_str().unwrap(),
        "--safe",
        "--dry-run",
    ]);
    assert_eq!(plan["safe"], true, "{plan}");
    assert_eq!(num(&plan, "modified_local_files_count"), 2, "{plan}");
    assert!(plan["pre_restore_snapshot"].is_null(), "{plan}");
    assert_eq!(files(&t), before);
    assert_eq!(s.snapshot_count(), snaps_before);

    let out = restore_cmd(&s, &id2, &t, &["--safe"]).ok();
    assert!(
        out.stderr.contains("2 local files") && out.stderr.contains("1.txt"),
        "{}",
        out.dump()
    );
    assert!(
        out.stdout().contains("pre-restore snapshot"),
        "{}",
        out.dump()
    );

    // Another local edit, and the fields of a real run.
    write(&restored_path(&t, &src.join("b/3.txt")), "edited again");
    let v = s.json(["restore", &id2, "--target", t.to_str().unwrap(), "--safe"]);
    assert_eq!(v["safe"], true, "{v}");
    assert_eq!(v["verified"], true, "{v}");
    assert_eq!(num(&v, "modified_local_files_count"), 1, "{v}");
    let listed = v["modified_local_files"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{v}");
    assert!(listed[0].as_str().unwrap().ends_with("b/3.txt"), "{v}");
    let pre = text(&v, "pre_restore_snapshot").to_string();

    let snaps = s.snapshots(&[]);
    let p = snaps
        .iter()
        .find(|x| x["id"] == pre.as_str())
        .unwrap_or_else(|| panic!("no snapshot {pre}: {snaps:?}"));
    assert!(
        p["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "pre-restore"),
        "{p}"
    );
    assert_eq!(p["paths"][0], t.to_str().unwrap(), "{p}");
    assert_eq!(s.snapshot_count(), snaps_before + 2);

    // Retention of the pre-restore snapshots: --keep-pre-restore 1 leaves
    // only the newest of this target.
    write(
        &restored_path(&t, &src.join("b/3.txt")),
        "edited a third time",
    );
    let v = s.json([
        "restore",
        &id2,
        "--target",
        t.to_str().unwrap(),
        "--safe",
        "--keep-pre-restore",
        "1",
    ]);
    assert_eq!(
        v["pre_restore_forgotten"].as_array().unwrap().len(),
        2,
        "{v}"
    );
    let pre_left: Vec<_> = s
        .snapshots(&["--tag", "pre-restore"])
        .into_iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pre_left, [text(&v, "pre_restore_snapshot").to_string()]);
    s.cmd([
        "restore",
        &id2,
        "--target",
        t.to_str().unwrap(),
        "--safe",
        "--keep-pre-restore",
        "0",
    ])
    .code(2)
    .assert_one_error_line("--keep-pre-restore");
    write(
        &restored_path(&t, &src.join("b/3.txt")),
        "three, second version",
    );

    // Restored as the snapshot has it; the file only the target has stays.
    let r = |rel: &str| fs::read_to_string(restored_path(&t, &src.join(rel))).unwrap();
    assert_eq!(r("a/1.txt"), "one");
    assert_eq!(r("b/3.txt"), "three, second version");
    assert_eq!(r("b/new.txt"), "new in the second snapshot");
    assert_eq!(r("a/mine.txt"), "mine");
    let events = event_names(&s);
    assert!(
        events
            .iter()
            .filter(|e| *e == "restore.pre_snapshot")
            .count()
            == 3,
        "{events:?}"
    );

    // An empty target needs no pre-restore snapshot.
    let empty = s.path("empty");
    fs::create_dir_all(&empty).unwrap();
    let v = s.json([
        "restore",
        &id2,
        "--target",
        empty.to_str().unwrap(),
        "--safe",
    ]);
    assert_eq!(v["safe"], false, "{v}");
    assert_eq!(v["target_was"], "empty", "{v}");
    assert!(v["pre_restore_snapshot"].is_null(), "{v}");
    assert_eq!(s.snapshot_count(), snaps_before + 1);
}

#[test]
fn failed_safe_restore_rolls_back() {
    let s = Sandbox::init();
    let src = s.path("src");
    let names: Vec<String> = (0..24).map(|i| format!("f{i:02}.bin")).collect();
    for (i, n) in names.iter().enumerate() {
        write(&src.join(n), random_bytes(64 * 1024, 1000 + i as u64));
    }
    let id1 = text(&s.backup([&src]), "snapshot_id").to_string();
    let t = s.path("t");
    s.restore(&id1, &t, &[]);
    write(&t.join("local-only.txt"), "kept");

    // A second version of every file, in packs of its own, half cut away.
    let old_packs = s.data_packs();
    for (i, n) in names.iter().enumerate() {
        write(&src.join(n), random_bytes(64 * 1024, 2000 + i as u64));
    }
    let id2 = text(&s.backup([&src]), "snapshot_id").to_string();
    let new_packs: Vec<PathBuf> = s
        .data_packs()
        .into_iter()
        .filter(|p| !old_packs.contains(p))
        .collect();
    let biggest = new_packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("the second backup stored a pack");
    let len = fs::metadata(biggest).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(biggest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let before = files(&t);
    let out = restore_cmd(&s, &id2, &t, &["--safe"]).code(1);
    assert!(out.stderr.contains("rolled"), "{}", out.dump());
    assert!(
        out.stderr.contains("pre-restore snapshot"),
        "{}",
        out.dump()
    );
    assert_eq!(
        files(&t),
        before,
        "the target differs from before the failed restore\n{}",
        out.dump()
    );
    let events = event_names(&s);
    for e in [
        "restore.pre_snapshot",
        "restore.rolled_back",
        "restore.failed",
    ] {
        assert!(events.iter().any(|x| x == e), "no {e}: {events:?}");
    }
    let rolled = s
        .events()
        .into_iter()
        .find(|e| e["event"] == "restore.rolled_back")
        .unwrap();
    assert_eq!(rolled["severity"], "warning", "{rolled}");
    assert_eq!(rolled["figures"]["target"], t.to_str().unwrap(), "{rolled}");
    assert_eq!(rolled["figures"]["restoring"], id2.as_str(), "{rolled}");
}

#[test]
fn rollback_puts_the_target_back_as_it_was() {
    let s = Sandbox::init();
    let (src, t, id2) = changed_target(&s);
    let before = files(&t);
    s.restore(&id2, &t, &["--safe"]);
    let added = restored_path(&t, &src.join("b/new.txt"));
    assert!(added.exists());
    assert_ne!(files(&t), before);
    let pre = s.snapshots(&["--tag", "pre-restore"]);
    assert_eq!(pre.len(), 1, "{pre:?}");
    let pre_id = pre[0]["id"].as_str().unwrap().to_string();

    // The plan names what it would remove and changes nothing.
    let after_restore = files(&t);
    let plan = s.ok(["rollback", "--target", t.to_str().unwrap(), "--dry-run"]);
    let plan_text = plan.stdout();
    assert!(plan_text.contains(&pre_id[..8]), "{}", plan.dump());
    assert!(
        plan_text.contains("would remove") && plan_text.contains("new.txt"),
        "{}",
        plan.dump()
    );
    assert_eq!(files(&t), after_restore);

    let out = s.ok(["rollback", "--target", t.to_str().unwrap()]);
    assert!(
        out.stdout()
            .contains(&format!("pre-restore snapshot {}", &pre_id[..8])),
        "{}",
        out.dump()
    );
    assert!(!added.exists(), "the file the restore added is still there");
    assert_eq!(files(&t), before);
    assert!(event_names(&s).iter().any(|e| e == "rollback.completed"));

    // Without arguments: the newest pre-restore snapshot, here the same.
    let v = s.json(["rollback"]);
    assert_eq!(v["snapshot_id"], pre_id.as_str(), "{v}");
    assert_eq!(files(&t), before);
}

#[test]
fn rollback_refuses_a_snapshot_that_is_not_pre_restore() {
    let s = Sandbox::init();
    let (_, id) = s.small_tree();
    let out = s.cmd(["rollback", &id]).code(2);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.dump());
    assert!(
        lines[0].contains("not a pre-restore snapshot"),
        "{}",
        out.dump()
    );
    // None to roll back to: a failure, not a usage error.
    let out = s.cmd(["rollback"]).code(1);
    assert!(
        out.stderr.contains("no pre-restore snapshot"),
        "{}",
        out.dump()
    );
}

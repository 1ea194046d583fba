//! The hardening issue's repository-side findings, each pinned by a test that
//! failed before its fix: objects checked against their names, bounded and
//! authenticated keys, stray or damaged objects that stop nothing, a config
//! that is junk, and format 1 repositories that are read but never written.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes an object into a local repository folder under its SHA-256 name, as an
/// attacker with write access to the storage could.
fn plant(dir: &Path, bytes: &[u8]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let p = dir.join(sha256_hex(bytes));
    fs::write(&p, bytes).unwrap();
    p
}

/// Two snapshots of one folder, oldest first.
fn two_snapshots(s: &Sandbox) -> (PathBuf, String, String) {
    let src = s.path("src");
    write(&src.join("f.txt"), "old");
    let a = text(
        &s.backup(["--time", "2026-01-01 00:00:00", src.to_str().unwrap()]),
        "snapshot_id",
    )
    .to_string();
    write(&src.join("f.txt"), "new");
    let b = text(
        &s.backup(["--time", "2026-01-02 00:00:00", src.to_str().unwrap()]),
        "snapshot_id",
    )
    .to_string();
    (src, a, b)
}

fn snapshot_file(s: &Sandbox, id: &str) -> PathBuf {
    s.repo.join("snapshots").join(id)
}

fn key_files(s: &Sandbox) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(s.repo.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn old_snapshot_stored_under_a_newer_name_is_refused_and_reported() {
    let s = Sandbox::init();
    let (src, a, b) = two_snapshots(&s);
    let old = fs::read(snapshot_file(&s, &a)).unwrap();
    fs::remove_file(snapshot_file(&s, &b)).unwrap();
    fs::write(snapshot_file(&s, &b), &old).unwrap();

    // Restoring the newer ID must not quietly restore the old content.
    let t = s.path("t");
    s.cmd(["restore", &b, "--target", t.to_str().unwrap()])
        .code(1)
        .assert_one_error_line("does not match its name");
    assert!(!restored_path(&t, &src.join("f.txt")).exists());
    // Listing skips it with a warning; `latest` is the real old one.
    let out = s.cmd(["snapshots", "--json"]).ok();
    assert!(
        out.stderr.contains("warning:") && out.stderr.contains(&b),
        "{}",
        out.stderr
    );
    assert_eq!(out.json().as_array().unwrap().len(), 1);
    // check names the object.
    let out = s.cmd(["check"]).code(1);
    assert!(
        out.stdout().contains(&b) || out.stderr.contains(&b),
        "{}{}",
        out.stdout(),
        out.stderr
    );
}

#[test]
fn planted_copies_of_a_snapshot_do_not_count_for_retention() {
    let s = Sandbox::init();
    let (_, a, b) = two_snapshots(&s);
    // Copies of the newest snapshot under other names (they cannot carry their
    // own SHA-256 name: that name is b's).
    let newest = fs::read(snapshot_file(&s, &b)).unwrap();
    for i in 0..3u8 {
        let name = sha256_hex(&[i; 7]);
        fs::write(s.repo.join("snapshots").join(name), &newest).unwrap();
    }
    s.ok(["forget", "--keep-last", "2"]);
    for id in [&a, &b] {
        assert!(
            snapshot_file(&s, id).exists(),
            "forget removed real snapshot {id}"
        );
    }
}

fn edit_key(path: &Path, edit: impl Fn(&mut Value)) -> PathBuf {
    let mut v: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    let bytes = serde_json::to_vec_pretty(&v).unwrap();
    fs::remove_file(path).unwrap();
    plant(path.parent().unwrap(), &bytes)
}

#[test]
fn planted_key_files_with_huge_costs_are_skipped_not_run() {
    let s = Sandbox::init();
    let key = key_files(&s)[0].clone();
    // Ten keys asking for 4 GiB and a thousand passes each: trying even one
    // would take hours. The real key must still open, and a wrong password fail
    // quickly.
    let template: Value = serde_json::from_slice(&fs::read(&key).unwrap()).unwrap();
    for i in 0..10 {
        let mut v = template.clone();
        v["params"] =
            serde_json::json!({"m_cost_kib": 4 * 1024 * 1024, "t_cost": 1000, "p_cost": 1});
        v["hostname"] = Value::String(format!("planted-{i}"));
        plant(&s.repo.join("keys"), &serde_json::to_vec(&v).unwrap());
    }
    let limit = Duration::from_secs(120);
    s.cmd(["snapshots"]).timeout(limit).ok();
    s.cmd(["snapshots"])
        .env("CAIRN_PASSWORD", "wrong")
        .timeout(limit)
        .code(12);
}

/// Plants `n` key objects at the lowest cost a key may ask for (8 KiB, one
/// pass), named by their SHA-256 and parsing as keys, that no password opens:
/// the real key's object with other parameters (its seal no longer matches).
fn plant_cheap_keys(s: &Sandbox, n: usize) {
    let template: Value = serde_json::from_slice(&fs::read(&key_files(s)[0]).unwrap()).unwrap();
    for i in 0..n {
        let mut v = template.clone();
        v["params"] = serde_json::json!({"m_cost_kib": 8, "t_cost": 1, "p_cost": 1});
        v["hostname"] = Value::String(format!("planted-{i}"));
        plant(&s.repo.join("keys"), &serde_json::to_vec(&v).unwrap());
    }
}

/// The ID (file name) of the repository's only key, before anything is planted.
fn real_key_id(s: &Sandbox) -> String {
    let keys = key_files(s);
    assert_eq!(keys.len(), 1);
    keys[0].file_name().unwrap().to_str().unwrap().to_string()
}

/// A key-ID prefix that `id` does not start with.
fn other_prefix(id: &str) -> &'static str {
    if id.starts_with('f') {
        "eeeeeeee"
    } else {
        "ffffffff"
    }
}

#[test]
fn cheap_planted_keys_do_not_lock_the_owner_out() {
    let s = Sandbox::init(); // the real key: 8 MiB, one pass
    let real = real_key_id(&s);
    // Sixteen keys cheaper than the real one used to fill every slot a reader
    // tried. Nothing hinted, nothing remembered: cost decides, and their cost
    // is next to nothing.
    plant_cheap_keys(&s, 16);
    s.ok(["snapshots", "--no-cache"]);
    // A hint that names no key is reported, and the other keys are tried.
    let out = s
        .cmd(["snapshots", "--no-cache", "--key-hint", other_prefix(&real)])
        .ok();
    assert!(
        out.stderr.contains("warning: --key-hint") && out.stderr.contains("matches no key"),
        "{}",
        out.stderr
    );
    // Every key was tried: a wrong password says nothing of untried keys.
    let out = s
        .cmd(["snapshots", "--no-cache"])
        .env("CAIRN_PASSWORD", "wrong")
        .code(12);
    assert!(!out.stderr.contains("not tried"), "{}", out.stderr);
}

#[test]
fn the_hinted_and_the_remembered_key_come_before_planted_ones() {
    let s = Sandbox::init();
    let real = real_key_id(&s);
    // Objects under names that list before the real key's fill the reader's
    // bound (64 objects), so without a hint or a memory the real key is not
    // even read.
    for i in 0..64 {
        fs::write(s.repo.join("keys").join(format!("{i:064x}")), "planted").unwrap();
    }
    let cache = s.path("cache");
    let c = cache.to_str().unwrap();
    let out = s.cmd(["snapshots", "--cache-dir", c]).code(12);
    assert!(
        out.stderr
            .contains("1 key file was not tried: give --key-hint ID"),
        "{}",
        out.stderr
    );
    // (a) A hint, as `key list` shows IDs (any case), opens...
    let short = real[..8].to_uppercase();
    s.ok(["snapshots", "--cache-dir", c, "--key-hint", short.as_str()]);
    // (b) ...and the key that worked is remembered: no hint needed any more.
    s.ok(["snapshots", "--cache-dir", c]);
    // (c) A hint that names no key warns; the remembered key still opens.
    let out = s
        .cmd([
            "snapshots",
            "--cache-dir",
            c,
            "--key-hint",
            other_prefix(&real),
        ])
        .ok();
    assert!(out.stderr.contains("matches no key"), "{}", out.stderr);
    // It was the memory that opened: another cache, or none, remembers nothing.
    let other = s.path("other-cache");
    s.cmd(["snapshots", "--cache-dir", other.to_str().unwrap()])
        .code(12);
    s.cmd(["snapshots", "--cache-dir", c, "--no-cache"])
        .code(12);
    // The default cache (under HOME here) remembers too, and CAIRN_KEY_HINT
    // is the same as --key-hint.
    s.cmd(["snapshots"]).code(12);
    s.cmd(["snapshots"]).env("CAIRN_KEY_HINT", &real[..8]).ok();
    s.ok(["snapshots"]);
}

#[test]
fn kdf_options_and_key_passwd_keeps_the_cost() {
    let s = Sandbox::init(); // --kdf-memory 8 --kdf-time 1
    let params = |p: &Path| -> (u64, u64) {
        let v: Value = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
        (num(&v["params"], "m_cost_kib"), num(&v["params"], "t_cost"))
    };
    assert_eq!(params(&key_files(&s)[0]), (8 * 1024, 1));
    // key passwd keeps the key's parameters...
    s.cmd(["key", "passwd"])
        .env("CAIRN_NEW_PASSWORD", "pw2")
        .ok();
    assert_eq!(params(&key_files(&s)[0]), (8 * 1024, 1));
    // ...unless told otherwise.
    s.cmd(["key", "passwd", "--kdf-time", "2"])
        .env("CAIRN_PASSWORD", "pw2")
        .env("CAIRN_NEW_PASSWORD", "pw3")
        .ok();
    assert_eq!(params(&key_files(&s)[0]), (8 * 1024, 2));
    // key add uses the defaults: 64 MiB, 3 passes.
    s.cmd(["key", "add"])
        .env("CAIRN_PASSWORD", "pw3")
        .env("CAIRN_NEW_PASSWORD", "pw4")
        .ok();
    let all: Vec<_> = key_files(&s).iter().map(|p| params(p)).collect();
    assert!(all.contains(&(64 * 1024, 3)), "{all:?}");
    // Out-of-bounds costs are usage errors.
    let t = Sandbox::new();
    t.cmd(["init", "--kdf-memory", "4096"]).code(2);
    t.cmd(["init", "--kdf-time", "0"]).code(2);
}

#[test]
fn edited_key_metadata_is_detected() {
    let s = Sandbox::init();
    let key = key_files(&s)[0].clone();
    edit_key(&key, |v| {
        v["hostname"] = Value::String("someone-else".into())
    });
    s.cmd(["snapshots"]).code(12);
}

#[test]
fn stray_and_oversized_index_objects_are_skipped_and_reported() {
    let s = Sandbox::init();
    let (src, _, _) = two_snapshots(&s);
    fs::write(s.repo.join("index/README"), "notes").unwrap();
    let sparse = s.repo.join("index").join("ab".repeat(32));
    fs::File::create(&sparse).unwrap().set_len(4 << 40).unwrap();
    let out = s.cmd(["backup", src.to_str().unwrap()]).ok();
    assert!(out.stderr.contains("index/README"), "{}", out.stderr);
    let t = s.path("t");
    s.restore("latest", &t, &[]);
    assert_eq!(
        fs::read_to_string(restored_path(&t, &src.join("f.txt"))).unwrap(),
        "new"
    );
    let out = s.cmd(["check"]).code(1);
    let all = format!("{}{}", out.stdout(), out.stderr);
    assert!(
        all.contains("index/README") && all.contains(&"ab".repeat(32)),
        "{all}"
    );
}

#[test]
fn a_damaged_snapshot_blocks_neither_backup_nor_latest() {
    let s = Sandbox::init();
    let (src, a, b) = two_snapshots(&s);
    // Damage the newest snapshot (it stays under its name).
    let p = snapshot_file(&s, &b);
    let mut bytes = fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    fs::write(&p, bytes).unwrap();
    write(&src.join("f.txt"), "newer");
    s.ok(["backup", src.to_str().unwrap()]);
    let t = s.path("t");
    s.restore("latest", &t, &[]);
    assert_eq!(
        fs::read_to_string(restored_path(&t, &src.join("f.txt"))).unwrap(),
        "newer"
    );
    s.restore(&a, &s.path("t2"), &[]);
    let out = s.cmd(["check"]).code(1);
    assert!(format!("{}{}", out.stdout(), out.stderr).contains(&b));
}

#[test]
fn a_folder_with_a_junk_config_is_not_a_repository() {
    let s = Sandbox::new();
    fs::create_dir_all(&s.repo).unwrap();
    fs::write(s.repo.join("config"), "this is not a cairn config").unwrap();
    s.cmd(["snapshots"])
        .code(10)
        .assert_one_error_line("not a cairn repository, or its config is damaged");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A repository made by cairn 0.1.0 (`tests/fixtures/repo-v1`, password
/// `fixture`): two snapshots of `/tmp/v1fix/src` (hello.txt, sub/data.bin of
/// 20,000 random bytes), the second after appending "more" to hello.txt.
#[test]
fn format_1_repositories_are_read_but_not_written() {
    let s = Sandbox::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1");
    copy_dir(&fixture, &s.repo);
    let run = |args: &[&str]| s.cmd(args).env("CAIRN_PASSWORD", "fixture");
    let snaps = run(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    let t = s.path("t");
    run(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--verify",
    ])
    .ok();
    let root = t.join("tmp/v1fix/src");
    assert_eq!(
        fs::read_to_string(root.join("hello.txt")).unwrap(),
        "hello from cairn 0.1.0\nmore\n"
    );
    assert_eq!(
        fs::metadata(root.join("sub/data.bin")).unwrap().len(),
        20_000
    );
    run(&["check", "--read-data"]).ok();
    run(&["ls", "latest"]).ok();
    // Writes are refused with one clear line, and nothing is added.
    let before = file_count(&s.repo);
    let src = s.path("src");
    write(&src.join("x"), "x");
    for args in [
        vec!["backup", src.to_str().unwrap()],
        vec!["forget", "--keep-last", "1"],
    ] {
        run(&args)
            .code(1)
            .assert_one_error_line("format version 1, which this cairn reads but does not write");
    }
    run(&["key", "add"])
        .env("CAIRN_NEW_PASSWORD", "other")
        .code(1);
    assert_eq!(
        file_count(&s.repo),
        before,
        "a format 1 repository was written to"
    );
}

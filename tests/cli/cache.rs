//! The local metadata cache: filled on use, checked on every read (a damaged
//! entry is refetched, never trusted), off for local repositories by default
//! (which keep there only the ID of the key that last worked, `last-key/`).

use crate::common;

use std::path::{Path, PathBuf};

use common::*;

/// Whether a cache file is a remembered key ID, not a cached object.
fn remembered_key(p: &Path) -> bool {
    p.to_string_lossy().contains("/last-key/")
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_below(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_damaged_cache_entry_is_refetched_never_trusted() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("f"), "one");
    s.backup([&src]);
    let cache = s.path("cache");
    let c = cache.to_str().unwrap();
    let first = s.json(["snapshots", "--cache-dir", c]);
    let cached = files_below(&cache);
    assert!(
        cached
            .iter()
            .any(|p| p.to_string_lossy().contains("/snapshots/")),
        "nothing cached: {cached:?}"
    );
    // Damage every cached file; the next command must read the repository's
    // objects again and give the same answer.
    let mut damaged = std::collections::HashMap::new();
    for p in &cached {
        let mut b = std::fs::read(p).unwrap();
        b[0] ^= 0xff;
        std::fs::write(p, &b).unwrap();
        damaged.insert(p.clone(), b);
    }
    let again = s.json(["snapshots", "--cache-dir", c]);
    assert_eq!(first, again);
    let t = s.path("t");
    s.cmd([
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--cache-dir",
        c,
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(restored_path(&t, &src.join("f"))).unwrap(),
        "one"
    );
    // The entries were replaced by good copies: named by their content, or
    // (session end records, authenticated by their reader) rewritten.
    for p in files_below(&cache)
        .into_iter()
        .filter(|p| !remembered_key(p))
    {
        use sha2::Digest;
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".end") {
            assert_ne!(Some(&std::fs::read(&p).unwrap()), damaged.get(&p), "{p:?}");
            continue;
        }
        assert_eq!(
            hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap())),
            name
        );
    }
}

#[test]
fn local_repositories_are_not_cached_unless_asked() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("f"), "one");
    s.backup([&src]);
    s.ok(["snapshots"]);
    let cached = files_below(&s.root.join("home/.cache"));
    assert!(cached.iter().all(|p| remembered_key(p)), "{cached:?}");
}

/// Makes a bucket on moto and a repository in it (cheap KDF); returns the
/// arguments that name the repository.
fn init_in_bucket(s: &Sandbox, moto: &servers::Moto, bucket: &str) -> Vec<String> {
    moto.make_bucket(bucket);
    let mut base = vec!["-r".to_string(), format!("s3://{bucket}/r")];
    base.extend(moto.option_args());
    let mut init = base.clone();
    init.extend(["init", "--kdf-memory", "8", "--kdf-time", "1"].map(String::from));
    s.bare(init).ok();
    base
}

#[test]
fn a_bucket_repository_is_cached_by_default() {
    let Some(moto) = servers::start_moto() else {
        return;
    };
    let s = Sandbox::new();
    let base = init_in_bucket(&s, &moto, "cairn-cache");
    let run = |extra: &[&str]| s.bare(base.iter().map(String::as_str).chain(extra.iter().copied()));
    let src = s.path("src");
    write(&src.join("f"), "one");
    run(&["backup", src.to_str().unwrap()]).ok();
    // The second backup reads the index written by the first.
    run(&["backup", src.to_str().unwrap()]).ok();
    let cached = files_below(&s.root.join("home/.cache/cairn"));
    assert!(
        cached
            .iter()
            .any(|p| p.to_string_lossy().contains("/index/")),
        "{cached:?}"
    );
    run(&["snapshots", "--no-cache"]).ok();
}

/// An unchanged backup to a bucket reads its parent's trees from the cached
/// tree packs: no request per directory (it was one GET each).
#[test]
fn parent_trees_come_from_the_cache() {
    let Some(moto) = servers::start_moto() else {
        return;
    };
    let s = Sandbox::new();
    let base = init_in_bucket(&s, &moto, "cairn-trees");
    let run = |extra: &[&str]| s.bare(base.iter().map(String::as_str).chain(extra.iter().copied()));
    let src = s.path("src");
    for d in 0..40 {
        write(&src.join(format!("d{d}/f")), format!("file {d}"));
    }
    let src = src.to_str().unwrap();
    run(&["backup", src]).ok();
    let gets = |out: Out| -> u64 {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["requests"]["get"].as_u64().unwrap()
    };
    // The first unchanged backup caches the tree pack; the next reads no tree.
    let warm = gets(run(&["backup", src, "--json"]).ok());
    let cached = gets(run(&["backup", src, "--json"]).ok());
    assert!(
        files_below(&s.root.join("home/.cache/cairn"))
            .iter()
            .any(|p| p.to_string_lossy().contains("/tree/")),
        "no tree pack cached"
    );
    assert!(
        cached < 10,
        "{cached} GETs for an unchanged backup of 41 directories (warm run: {warm})"
    );
    // A damaged cached tree pack is dropped and the repository's copy read.
    for p in files_below(&s.root.join("home/.cache/cairn")) {
        if p.to_string_lossy().contains("/tree/") {
            let mut b = std::fs::read(&p).unwrap();
            for x in b.iter_mut().take(4096) {
                *x ^= 0x55;
            }
            std::fs::write(&p, b).unwrap();
        }
    }
    let t = s.path("t");
    run(&["restore", "latest", "--target", t.to_str().unwrap()]).ok();
    assert_eq!(
        std::fs::read_to_string(restored_path(&t, &std::path::Path::new(src).join("d7/f")))
            .unwrap(),
        "file 7"
    );
}

/// A cache folder other users may write to (a shared `--cache-dir`) is not
/// used: a warning, and the command works without a cache.
#[test]
fn a_cache_folder_others_may_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::init();
    let (_src, _) = s.small_tree();
    let shared = s.path("shared-cache");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = s.ok(["snapshots", "--cache-dir", shared.to_str().unwrap()]);
    assert!(
        out.stderr.contains("is writable by other users") && out.stderr.contains("without a cache"),
        "{}",
        out.dump()
    );
    assert!(
        files_below(&shared).is_empty(),
        "the shared folder was used"
    );
    // A private one is used.
    let own = s.path("own-cache");
    s.ok(["snapshots", "--cache-dir", own.to_str().unwrap()]);
    assert!(!files_below(&own).is_empty());
}

/// Listing snapshots reads each one's session end record: cached (they never
/// change once created), so what a backup asks of the bucket does not grow
/// with the number of snapshots. A damaged cached record is refetched.
#[test]
fn end_records_come_from_the_cache() {
    let Some(moto) = servers::start_moto() else {
        return;
    };
    let s = Sandbox::new();
    let base = init_in_bucket(&s, &moto, "cairn-ends");
    let run = |extra: &[&str]| s.bare(base.iter().map(String::as_str).chain(extra.iter().copied()));
    let src = s.path("src");
    write(&src.join("f"), "unchanged");
    let src = src.to_str().unwrap();
    let requests = |out: Out| -> u64 {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let r = &v["requests"];
        ["get", "head", "list"]
            .iter()
            .map(|k| r[k].as_u64().unwrap())
            .sum()
    };
    for _ in 0..3 {
        run(&["backup", src]).ok();
    }
    let at_four = requests(run(&["backup", src, "--json"]).ok());
    for _ in 0..6 {
        run(&["backup", src]).ok();
    }
    let at_eleven = requests(run(&["backup", src, "--json"]).ok());
    assert_eq!(
        at_four, at_eleven,
        "reads grew with the snapshots: {at_four} with 3 before, {at_eleven} with 10"
    );
    let ends: Vec<PathBuf> = files_below(&s.root.join("home/.cache/cairn"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".end"))
        .collect();
    assert!(ends.len() >= 10, "{ends:?}");
    for p in &ends {
        let mut b = std::fs::read(p).unwrap();
        b[0] ^= 0x55;
        std::fs::write(p, b).unwrap();
    }
    let out = run(&["snapshots", "--json"]).ok();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 11);
}

/// Finding the parent asks whether a snapshot committed only of the backup's
/// own host's snapshots: another host's new snapshots cost their one cached
/// read each, not a read of their session records too (a fleet on one bucket).
#[test]
fn other_hosts_snapshots_cost_one_read_each() {
    let Some(moto) = servers::start_moto() else {
        return;
    };
    let s = Sandbox::new();
    let base = init_in_bucket(&s, &moto, "cairn-hosts");
    let run = |extra: &[&str]| s.bare(base.iter().map(String::as_str).chain(extra.iter().copied()));
    let (mine, theirs) = (s.path("mine"), s.path("theirs"));
    write(&mine.join("f"), "mine");
    write(&theirs.join("f"), "theirs");
    let (mine, theirs) = (mine.to_str().unwrap(), theirs.to_str().unwrap());
    let gets = |out: Out| -> u64 {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["requests"]["get"].as_u64().unwrap()
    };
    // Host b is another machine: a cache of its own.
    let b_cache = s.path("b-cache");
    let b_cache = b_cache.to_str().unwrap();
    let b = ["backup", "--host", "b", "--cache-dir", b_cache, theirs];
    run(&["backup", "--host", "a", mine]).ok();
    run(&b).ok();
    // This one reads b's index object and snapshot; the next reads nothing new.
    run(&["backup", "--host", "a", mine]).ok();
    let quiet = gets(run(&["backup", "--host", "a", mine, "--json"]).ok());
    for _ in 0..4 {
        run(&b).ok();
    }
    let after_four = gets(run(&["backup", "--host", "a", mine, "--json"]).ok());
    // One GET each, 4 (requests retried on a loaded test machine may add a
    // few); reading each one's session record too made it at least 8.
    assert!(
        (quiet + 4..quiet + 8).contains(&after_four),
        "4 new snapshots of another host: {quiet} GETs before, {after_four} after"
    );
}

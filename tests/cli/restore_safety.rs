//! Restore hardening: restore never writes outside `--target` (symlinks in the
//! target or in a hostile snapshot are never followed), `--overwrite` holds
//! for every kind of entry, 255-byte names restore, and a short read from the
//! store is an error, never a panic.

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;

/// Every path below `dir` (empty when `dir` holds nothing).
fn contents(dir: &Path) -> Vec<PathBuf> {
    scan(dir)
        .into_keys()
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
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

// ---- 1. never outside the target ------------------------------------------

/// A symlink already in the target, where the snapshot has a directory, is
/// replaced by a real directory (`always`, `if-changed`) or kept with an error
/// for everything below it (`never`); nothing reaches the directory it points to.
#[test]
fn symlinked_directory_in_the_target_is_never_followed() {
    let s = Sandbox::init();
    let (src, id) = s.small_tree();
    let outside = s.path("outside");
    fs::create_dir_all(&outside).unwrap();

    for policy in ["always", "if-changed", "never"] {
        let t = s.path(format!("t-{policy}"));
        let b = restored_path(&t, &src.join("b"));
        fs::create_dir_all(b.parent().unwrap()).unwrap();
        symlink(&outside, &b).unwrap();
        let out = restore_cmd(&s, &id, &t, &["--overwrite", policy]).run();
        assert_eq!(
            contents(&outside),
            Vec::<PathBuf>::new(),
            "--overwrite {policy}: restore wrote through a symlink in the target\n{}",
            out.dump()
        );
        assert_eq!(
            fs::read_to_string(restored_path(&t, &src.join("a/1.txt"))).unwrap(),
            "one",
            "--overwrite {policy}"
        );
        if policy == "never" {
            assert_eq!(out.code, Some(1), "{}", out.dump());
            assert!(
                fs::symlink_metadata(&b).unwrap().file_type().is_symlink(),
                "--overwrite never replaced a symlink"
            );
            assert!(out.stderr.contains("3.txt"), "{}", out.dump());
        } else {
            assert_eq!(out.code, Some(0), "--overwrite {policy}\n{}", out.dump());
            assert!(fs::symlink_metadata(&b).unwrap().is_dir());
            assert_eq!(fs::read_to_string(b.join("c/4.txt")).unwrap(), "four");
        }
    }
}

/// A symlink in the target where the snapshot has a file is replaced by the
/// file; the file it pointed to is untouched.
#[test]
fn symlinked_file_in_the_target_is_replaced_not_written_through() {
    let s = Sandbox::init();
    let (src, id) = s.small_tree();
    let victim = s.path("victim.txt");
    write(&victim, "precious");
    let t = s.path("t");
    let one = restored_path(&t, &src.join("a/1.txt"));
    fs::create_dir_all(one.parent().unwrap()).unwrap();
    symlink(&victim, &one).unwrap();
    set_mode(&victim, 0o600);
    s.restore(&id, &t, &[]);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(entry(&victim).meta.mode, 0o600);
    assert!(fs::symlink_metadata(&one).unwrap().is_file());
    assert_eq!(fs::read_to_string(&one).unwrap(), "one");
}

/// Restoring a snapshot with a symlink `x/a -> OUTSIDE` (absolute) and
/// `x/r -> ../../outside` (relative), then a later snapshot of the same source
/// where `a` and `r` are directories, into the same target.
#[test]
fn symlink_restored_earlier_is_not_followed_by_a_later_restore() {
    let s = Sandbox::init();
    let outside = s.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let src = s.path("src");
    let x = src.join("x");
    fs::create_dir_all(&x).unwrap();
    symlink(&outside, x.join("a")).unwrap();
    // From TARGET/<src>/x/r, enough `..` to reach the sandbox root, then `outside`.
    let t = s.path("t");
    let depth = restored_path(&t, &x)
        .strip_prefix(&s.root)
        .unwrap()
        .components()
        .count();
    let rel = format!("{}outside", "../".repeat(depth));
    symlink(&rel, x.join("r")).unwrap();
    let snap1 = text(&s.backup([&src]), "snapshot_id").to_string();
    fs::remove_file(x.join("a")).unwrap();
    fs::remove_file(x.join("r")).unwrap();
    write(&x.join("a/passwd"), "root::0:0");
    write(&x.join("r/passwd"), "root::0:0");
    let snap2 = text(&s.backup([&src]), "snapshot_id").to_string();

    s.restore(&snap1, &t, &[]);
    let ra = restored_path(&t, &x.join("a"));
    let rr = restored_path(&t, &x.join("r"));
    assert_eq!(
        fs::read_link(&ra).unwrap(),
        outside,
        "symlink restored as is"
    );
    assert_eq!(fs::read_link(&rr).unwrap(), Path::new(&rel));
    assert_eq!(
        fs::canonicalize(&rr).unwrap(),
        fs::canonicalize(&outside).unwrap(),
        "the relative link really points outside"
    );

    let out = restore_cmd(&s, &snap2, &t, &[]).run();
    assert_eq!(
        contents(&outside),
        Vec::<PathBuf>::new(),
        "restore wrote outside the target\n{}",
        out.dump()
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(fs::read_to_string(ra.join("passwd")).unwrap(), "root::0:0");
    assert_eq!(fs::read_to_string(rr.join("passwd")).unwrap(), "root::0:0");

    // Under --overwrite never the links stay, and nothing goes through them.
    let t2 = s.path("t2");
    s.restore(&snap1, &t2, &[]);
    let out = restore_cmd(&s, &snap2, &t2, &["--overwrite", "never"]).code(1);
    assert_eq!(contents(&outside), Vec::<PathBuf>::new(), "{}", out.dump());
    assert!(out.stderr.contains("passwd"), "{}", out.dump());
}

/// A crafted snapshot (not one a backup makes): in one directory, symlinks
/// `a -> OUTSIDE` and `b -> ../outside` and, under the same names, directories
/// holding `passwd`. Whatever restore does with the clash, nothing lands outside.
#[test]
fn crafted_snapshot_with_symlink_and_directory_of_one_name_stays_inside() {
    use cairn::format::blob::BlobType;
    use cairn::format::tree::{ContentRef, Node, NodeType, Tree};
    use cairn::ops::restore::{restore, Overwrite, RestoreOptions};
    use cairn::repo::saver::{save_tree, BlobSaver};
    use cairn::{Backend, Repository};

    let opts = common::fast_kdf();
    let repo = Repository::init(Backend::memory(), b"pw", opts)
        .unwrap()
        .into_indexed()
        .unwrap();
    let node = |name: &str, kind: NodeType| Node {
        mtime_ns: 1_600_000_000_000_000_000,
        links: 1,
        ..Node::new(
            name,
            kind,
            if kind == NodeType::Dir { 0o755 } else { 0o644 },
        )
    };
    let sb = Sandbox::new();
    let outside = sb.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let t = sb.path("t");

    let saver = BlobSaver::new(&repo, false).unwrap();
    let data = b"root::0:0\n";
    let (data_id, _) = saver.save(BlobType::Data, data).unwrap();
    let mut passwd = node("passwd", NodeType::File);
    passwd.size = data.len() as u64;
    passwd.content = vec![ContentRef {
        id: data_id,
        size: data.len() as u32,
    }];
    let (sub, _) = save_tree(
        &saver,
        &mut Tree {
            nodes: vec![passwd],
        },
    )
    .unwrap();
    let mut nodes = Vec::new();
    for (name, to) in [
        ("a", outside.to_str().unwrap().to_string()),
        ("b", "../outside".to_string()),
    ] {
        let mut link = node(name, NodeType::Symlink);
        link.target = Some(to);
        let mut dir = node(name, NodeType::Dir);
        dir.subtree = Some(sub);
        // Both orders: symlink first (a), directory first (b).
        if name == "a" {
            nodes.extend([link, dir]);
        } else {
            nodes.extend([dir, link]);
        }
    }
    let (root, _) = save_tree(&saver, &mut Tree { nodes }).unwrap();
    saver.finish().unwrap();

    for overwrite in [Overwrite::Always, Overwrite::IfChanged, Overwrite::Never] {
        for _round in 0..2 {
            let o = RestoreOptions {
                overwrite,
                ..Default::default()
            };
            let _ = restore(&repo, &root, &t, &o);
            assert_eq!(
                contents(&outside),
                Vec::<PathBuf>::new(),
                "{overwrite:?}: restore wrote outside the target"
            );
        }
    }
}

// ---- 2. --overwrite for symlinks and hard links ----------------------------

/// `src/{f, l -> f, h1, h2 (hard link of h1)}`, backed up.
fn links_tree(s: &Sandbox) -> (PathBuf, String) {
    let src = s.path("src");
    write(&src.join("f"), "file");
    symlink("f", src.join("l")).unwrap();
    write(&src.join("h1"), "linked");
    fs::hard_link(src.join("h1"), src.join("h2")).unwrap();
    let id = text(&s.backup([&src]), "snapshot_id").to_string();
    (src, id)
}

/// Changes the restored link entries: `l -> elsewhere`, `h2` a separate copy.
fn change_links(r: &Path) {
    fs::remove_file(r.join("l")).unwrap();
    symlink("elsewhere", r.join("l")).unwrap();
    fs::remove_file(r.join("h2")).unwrap();
    write(&r.join("h2"), "linked");
}

fn linked(r: &Path) -> bool {
    entry(&r.join("h1")).ino == entry(&r.join("h2")).ino
}

#[test]
fn overwrite_never_keeps_symlinks_and_hard_links() {
    let s = Sandbox::init();
    let (src, id) = links_tree(&s);
    let t = s.path("t");
    s.restore(&id, &t, &[]);
    let r = restored_path(&t, &src);
    assert!(linked(&r));
    change_links(&r);
    let out = s.restore_json(&id, &t, &["--overwrite", "never"]);
    assert_eq!(fs::read_link(r.join("l")).unwrap(), Path::new("elsewhere"));
    assert!(!linked(&r), "--overwrite never re-linked h2");
    assert_eq!(
        (num(&out, "files_restored"), num(&out, "files_skipped")),
        (0, 4),
        "{out}"
    );
    // A dry run reports the same.
    let out = s.restore_json(&id, &t, &["--overwrite", "never", "--dry-run"]);
    assert_eq!(
        (num(&out, "files_restored"), num(&out, "files_skipped")),
        (0, 4),
        "{out}"
    );
}

#[test]
fn overwrite_if_changed_replaces_only_changed_symlinks_and_hard_links() {
    let s = Sandbox::init();
    let (src, id) = links_tree(&s);
    let t = s.path("t");
    s.restore(&id, &t, &[]);
    let r = restored_path(&t, &src);

    // Unchanged: nothing is written (the symlink keeps a time set after restore).
    set_mtime(&r.join("l"), 1_000_000, 0);
    let out = s.restore_json(&id, &t, &["--overwrite", "if-changed"]);
    assert_eq!(
        (num(&out, "files_restored"), num(&out, "files_skipped")),
        (0, 4),
        "an unchanged symlink or hard link was rewritten: {out}"
    );
    assert_eq!(entry(&r.join("l")).meta.mtime, (1_000_000, 0));

    // Changed: the symlink and the hard link are restored, the rest kept.
    change_links(&r);
    let out = s.restore_json(&id, &t, &["--overwrite", "if-changed"]);
    assert_eq!(
        (num(&out, "files_restored"), num(&out, "files_skipped")),
        (2, 2),
        "{out}"
    );
    assert_eq!(fs::read_link(r.join("l")).unwrap(), Path::new("f"));
    assert!(linked(&r));
    assert_same_tree(&src, &r);
}

#[test]
fn overwrite_always_replaces_symlinks_and_hard_links() {
    let s = Sandbox::init();
    let (src, id) = links_tree(&s);
    let t = s.path("t");
    s.restore(&id, &t, &[]);
    let r = restored_path(&t, &src);
    change_links(&r);
    let out = s.restore_json(&id, &t, &["--overwrite", "always"]);
    assert_eq!(num(&out, "files_restored"), 4, "{out}");
    assert_eq!(fs::read_link(r.join("l")).unwrap(), Path::new("f"));
    assert!(linked(&r));
    assert_same_tree(&src, &r);
}

// ---- 3. 255-byte names ---------------------------------------------------

#[test]
fn names_of_255_bytes_restore() {
    let s = Sandbox::init();
    let src = s.path("src");
    let file = "f".repeat(255);
    let link = "l".repeat(255);
    let hard = "h".repeat(255);
    let dir = "d".repeat(255);
    write(&src.join(&file), "long name");
    write(&src.join(&dir).join(&file), "deeper");
    symlink(&file, src.join(&link)).unwrap();
    fs::hard_link(src.join(&file), src.join(&hard)).unwrap();
    let id = text(&s.backup([&src]), "snapshot_id").to_string();
    let t = s.path("t");
    // Twice: the second restore replaces every entry (through temporary names).
    for _ in 0..2 {
        let out = s.restore_json(&id, &t, &["--verify"]);
        assert_eq!(num(&out, "errors"), 0, "{out}");
        assert_same_tree(&src, &restored_path(&t, &src));
    }
    let r = restored_path(&t, &src);
    assert_eq!(entry(&r.join(&file)).ino, entry(&r.join(&hard)).ino);
    // And no temporary file is left behind.
    let leftovers: Vec<_> = contents(&r)
        .into_iter()
        .filter(|p| {
            p.as_os_str()
                .as_bytes()
                .windows(9)
                .any(|w| w == b"cairn-tmp")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

// ---- 4. short reads --------------------------------------------------------

#[test]
fn truncated_pack_is_an_error_not_a_panic() {
    let s = Sandbox::init();
    let src = s.path("src");
    let big = src.join("big.bin");
    write(&big, random_bytes(3 * MIB as usize, 77));
    let id = text(&s.backup([&src]), "snapshot_id").to_string();
    let packs = s.data_packs();
    assert_eq!(packs.len(), 1, "{packs:?}");
    let pack = &packs[0];
    let len = fs::metadata(pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();

    let t = s.path("t");
    let out = restore_cmd(&s, &id, &t, &[]).code(1);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("big.bin"))
        .unwrap_or_else(|| panic!("no error line for the file\n{}", out.dump()));
    assert!(
        line.contains(&pack_name),
        "error should name the pack: {line}"
    );
    assert!(
        !restored_path(&t, &big).exists(),
        "a damaged file was renamed into place"
    );

    let out = s.cmd(["dump", &id, big.to_str().unwrap()]).code(1);
    assert!(out.stderr.contains(&pack_name), "{}", out.dump());
}

/// Blobs read together in one range request each get their own verdict: a
/// pack cut in half still gives back the files that lie in its first half
/// (one failed range read used to fail every file of the run).
#[test]
fn truncated_pack_still_restores_the_files_before_the_cut() {
    let s = Sandbox::init();
    let src = s.path("src");
    let names: Vec<String> = (0..24).map(|i| format!("f{i:02}.bin")).collect();
    for (i, n) in names.iter().enumerate() {
        write(&src.join(n), random_bytes(64 * 1024, 1000 + i as u64));
    }
    let id = text(&s.backup([&src]), "snapshot_id").to_string();
    let packs = s.data_packs();
    assert_eq!(packs.len(), 1, "{packs:?}");
    let len = fs::metadata(&packs[0]).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&packs[0])
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let t = s.path("t");
    let out = restore_cmd(&s, &id, &t, &[]).code(1);
    let restored = names
        .iter()
        .filter(|n| restored_path(&t, &src.join(n)).exists())
        .count();
    let failed = names
        .iter()
        .filter(|n| out.stderr.lines().any(|l| l.contains(n.as_str())))
        .count();
    assert!(
        restored >= 6 && failed >= 6 && restored + failed == names.len(),
        "restored {restored}, failed {failed} of {}\n{}",
        names.len(),
        out.dump()
    );
    for n in names
        .iter()
        .filter(|n| restored_path(&t, &src.join(n)).exists())
    {
        assert_eq!(
            fs::read(restored_path(&t, &src.join(n))).unwrap(),
            fs::read(src.join(n)).unwrap()
        );
    }
}

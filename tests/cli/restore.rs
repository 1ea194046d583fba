//! Backup → restore round trips: a tree with everything a file system holds,
//! deduplication, incremental backups, and restore's options.

use crate::common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::*;

/// Size of the large pseudo-random file in the full tree: many chunks, more
/// than one 16 MiB pack. (Modest: a debug build stores a few MB/s.)
const BIG: u64 = 20 * MIB;

#[test]
fn full_tree_roundtrip_then_unchanged_backup_adds_little() {
    let s = Sandbox::init();
    let src = s.path("src");
    let tree = build_full_tree(&src, BIG);
    let files = file_count(&src);

    let b1 = s.backup([&src]);
    assert_eq!(num(&b1, "files_new"), files, "{b1}");
    assert_eq!(num(&b1, "files_changed"), 0, "{b1}");
    assert_eq!(num(&b1, "files_unmodified"), 0, "{b1}");
    assert_eq!(num(&b1, "errors"), 0, "{b1}");
    assert!(num(&b1, "bytes_read") >= BIG + tree.sparse_len, "{b1}");
    let id = text(&b1, "snapshot_id").to_string();
    assert_eq!(id.len(), 64);

    let target = s.path("target");
    s.restore(&id, &target, &[]);
    let restored = restored_path(&target, &src);
    assert_same_tree(&src, &restored);

    // Holes come back as holes.
    let src_alloc = entry(&tree.sparse).blocks * 512;
    let dst_alloc = entry(&restored.join("sparse.img")).blocks * 512;
    if src_alloc < tree.sparse_len / 8 {
        assert!(
            dst_alloc < tree.sparse_len / 8,
            "sparse file restored dense: {dst_alloc} bytes allocated for {} (source: {src_alloc})",
            tree.sparse_len
        );
    } else {
        eprintln!("note: this file system does not keep holes; sparse restore not checked");
    }

    // A second backup of the unchanged tree reads nothing and adds < 1%.
    let before = dir_size(&s.repo);
    let b2 = s.backup([&src]);
    assert_eq!(num(&b2, "files_unmodified"), files, "{b2}");
    assert_eq!(num(&b2, "files_new"), 0, "{b2}");
    assert_eq!(num(&b2, "files_changed"), 0, "{b2}");
    assert_eq!(num(&b2, "data_blobs"), 0, "{b2}");
    assert_eq!(
        text(&b2, "parent"),
        id,
        "second backup should use the first as parent: {b2}"
    );
    let after = dir_size(&s.repo);
    assert!(after >= before);
    assert!(
        (after - before) * 100 < before,
        "unchanged re-backup grew the repository from {before} to {after} bytes"
    );
    assert_eq!(s.snapshot_count(), 2);
}

/// Names made of arbitrary bytes (but '/' and NUL) survive backup, ls and restore.
#[test]
fn random_byte_names_roundtrip() {
    let s = Sandbox::init();
    let src = s.path("names");
    fs::create_dir_all(&src).unwrap();
    let mut rng = XorShift::new(99);
    let mut made = 0;
    while made < 150 {
        let len = 1 + (rng.next_u64() % 40) as usize;
        let mut name: Vec<u8> = (0..len)
            .map(|_| (rng.next_u64() % 255 + 1) as u8)
            .filter(|b| *b != b'/')
            .collect();
        if name.is_empty() || name == b"." || name == b".." {
            continue;
        }
        // Occasionally a name made only of high bytes or only of spaces.
        if made % 37 == 0 {
            name = vec![0xC0 + (made % 16) as u8; 3];
        }
        let p = src.join(OsStr::from_bytes(&name));
        if p.exists() {
            continue;
        }
        if made % 5 == 0 {
            fs::create_dir(&p).unwrap();
            write(&p.join(OsStr::from_bytes(&name)), &name);
        } else {
            write(&p, &name);
        }
        made += 1;
    }
    let id = text(&s.backup([&src]), "snapshot_id").to_string();
    // ls prints one line per entry: as many lines below src as entries.
    let ls = s.ok(["ls", &id]).lines();
    let src_s = src.to_string_lossy().into_owned();
    let below = ls
        .iter()
        .filter(|l| l.starts_with(&format!("{src_s}/")))
        .count();
    assert_eq!(below, scan(&src).len() - 1, "ls lines below the source");
    let target = s.path("t");
    s.restore(&id, &target, &[]);
    assert_same_tree(&src, &restored_path(&target, &src));
}

#[test]
fn front_insert_adds_only_a_few_chunks() {
    const LEN: u64 = 50 * MIB;
    let s = Sandbox::init();
    let dir = s.path("data");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("db.img");
    let original = random_bytes(LEN as usize, 42);
    write(&file, &original);
    let b1 = s.backup([&dir]);
    let snap1 = text(&b1, "snapshot_id").to_string();
    assert!(
        num(&b1, "data_added") >= LEN,
        "first backup stored less than the file: {b1}"
    );

    let mut changed = b"0123456789".to_vec();
    changed.extend_from_slice(&original);
    write(&file, &changed);
    let before = dir_size(&s.repo);
    let b2 = s.backup([&dir]);
    assert_eq!(num(&b2, "files_changed"), 1, "{b2}");
    assert_eq!(num(&b2, "bytes_read"), LEN + 10, "{b2}");
    // Content-defined chunks (1 MiB average, 4 MiB max): only the chunks
    // around the insert are new; a fixed-size chunker would store it all again.
    let added = num(&b2, "data_added");
    assert!(
        added <= 8 * MIB,
        "10-byte insert added {added} bytes of data: {b2}"
    );
    assert!(
        num(&b2, "data_blobs") <= 3,
        "10-byte insert added too many chunks: {b2}"
    );
    let grown = dir_size(&s.repo) - before;
    assert!(
        grown <= 9 * MIB,
        "repository grew by {grown} bytes for a 10-byte insert"
    );

    // Old and new chunks reassemble into the new file.
    let dumped = s.ok(["dump", "latest", file.to_str().unwrap()]).stdout;
    assert!(
        dumped == changed,
        "dump of the second snapshot differs from the changed file"
    );
    // And the first snapshot still names the original (a cheap check: one chunk).
    let ls = s
        .cmd(["ls", &snap1, file.to_str().unwrap(), "--json"])
        .ok()
        .json_lines();
    // As restic: the snapshot line comes first, then the nodes.
    assert_eq!(ls[0]["struct_type"], "snapshot", "{:?}", ls[0]);
    assert_eq!(num(&ls[1], "size"), LEN, "{:?}", ls[1]);
}

#[test]
fn incremental_backup_reads_only_changed_files() {
    let s = Sandbox::init();
    let src = s.path("src");
    for (i, name) in ["a.txt", "b.txt", "sub/c.txt", "sub/deeper/d.txt", "e.bin"]
        .iter()
        .enumerate()
    {
        write(&src.join(name), random_bytes(10_000 + i * 1000, i as u64));
    }
    let total: u64 = scan(&src).values().map(|e| e.meta.size).sum();
    let b1 = s.backup([&src]);
    assert_eq!(num(&b1, "files_new"), 5);
    let snap1 = text(&b1, "snapshot_id").to_string();

    let modified = src.join("sub/c.txt");
    let old = fs::read(&modified).unwrap();
    let new_content = b"modified content of c\n".repeat(100);
    write(&modified, &new_content);
    let b2 = s.backup([&src]);
    assert_eq!(num(&b2, "files_changed"), 1, "{b2}");
    assert_eq!(num(&b2, "files_unmodified"), 4, "{b2}");
    assert_eq!(num(&b2, "files_new"), 0, "{b2}");
    assert_eq!(
        num(&b2, "bytes_read"),
        new_content.len() as u64,
        "only the changed file is read: {b2}"
    );
    assert_eq!(text(&b2, "parent"), snap1);
    let snap2 = text(&b2, "snapshot_id").to_string();

    // A new file is "new", the others unmodified.
    write(&src.join("sub/new.txt"), "new file");
    let b3 = s.backup([&src]);
    assert_eq!(
        (num(&b3, "files_new"), num(&b3, "files_unmodified")),
        (1, 5),
        "{b3}"
    );

    // --force rereads everything (and stores nothing new).
    let bf = s.backup([src.as_os_str(), OsStr::new("--force")]);
    assert_eq!(
        num(&bf, "files_unmodified"),
        0,
        "--force must not skip files: {bf}"
    );
    let total_now = total - old.len() as u64 + new_content.len() as u64 + 8;
    assert_eq!(
        num(&bf, "bytes_read"),
        total_now,
        "--force reads every byte: {bf}"
    );
    assert_eq!(num(&bf, "data_blobs"), 0, "{bf}");

    let (t1, t2) = (s.path("t1"), s.path("t2"));
    s.restore(&snap1, &t1, &[]);
    s.restore(&snap2, &t2, &[]);
    assert_eq!(fs::read(restored_path(&t1, &modified)).unwrap(), old);
    assert_eq!(
        fs::read(restored_path(&t2, &modified)).unwrap(),
        new_content
    );
    assert!(!restored_path(&t2, &src.join("sub/new.txt")).exists());
    assert_eq!(
        fs::read(restored_path(&t2, &src.join("a.txt"))).unwrap(),
        fs::read(src.join("a.txt")).unwrap()
    );
}

fn exists_below(target: &Path, src: &Path, rel: &str) -> bool {
    restored_path(target, &src.join(rel)).exists()
}

#[test]
fn restore_include_and_exclude() {
    let s = Sandbox::init();
    let (src, id) = s.small_tree();
    let all = ["a/1.txt", "a/2.log", "b/3.txt", "b/c/4.txt"];
    let present = |t: &Path| -> Vec<&str> {
        all.iter()
            .copied()
            .filter(|r| exists_below(t, &src, r))
            .collect()
    };

    let t = s.path("inc_txt");
    s.restore(&id, &t, &["--include", "*.txt"]);
    assert_eq!(present(&t), ["a/1.txt", "b/3.txt", "b/c/4.txt"]);
    assert_eq!(
        fs::read_to_string(restored_path(&t, &src.join("b/c/4.txt"))).unwrap(),
        "four"
    );

    let t = s.path("exc_b");
    s.restore(&id, &t, &["--exclude", "b"]);
    assert_eq!(present(&t), ["a/1.txt", "a/2.log"]);
    assert!(!restored_path(&t, &src.join("b")).exists());

    let t = s.path("inc_dir");
    let dir = format!("{}/b/c", src.display());
    s.restore(&id, &t, &["--include", &dir]);
    assert_eq!(present(&t), ["b/c/4.txt"]);

    let t = s.path("both");
    s.restore(&id, &t, &["--include", "*.txt", "--exclude", "3.txt"]);
    assert_eq!(present(&t), ["a/1.txt", "b/c/4.txt"]);
}

#[test]
fn restore_dry_run_writes_nothing() {
    let s = Sandbox::init();
    let (_src, id) = s.small_tree();
    let t = s.path("never");
    let out = s.restore_json(&id, &t, &["--dry-run"]);
    assert_eq!(out["dry_run"], true, "{out}");
    assert_eq!(
        num(&out, "files_restored"),
        4,
        "dry run should count what it would restore: {out}"
    );
    assert!(!t.exists(), "restore --dry-run created the target");

    // Into an existing target: nothing appears either.
    fs::create_dir_all(&t).unwrap();
    s.ok(["restore", &id, "--target", t.to_str().unwrap(), "--dry-run"]);
    assert_eq!(
        fs::read_dir(&t).unwrap().count(),
        0,
        "restore --dry-run wrote into the target"
    );
}

#[test]
fn restore_overwrite_policies() {
    let s = Sandbox::init();
    let (src, id) = s.small_tree();
    let t = s.path("t");
    s.restore(&id, &t, &[]);
    let one = restored_path(&t, &src.join("a/1.txt"));
    write(&one, "local edit");

    let out = s.restore_json(&id, &t, &["--overwrite", "never"]);
    assert_eq!(
        fs::read_to_string(&one).unwrap(),
        "local edit",
        "--overwrite never replaced a file"
    );
    assert_eq!(num(&out, "files_skipped"), 4, "{out}");

    let out = s.restore_json(&id, &t, &["--overwrite", "if-changed"]);
    assert_eq!(
        fs::read_to_string(&one).unwrap(),
        "one",
        "--overwrite if-changed kept a changed file"
    );
    assert_eq!(
        (num(&out, "files_restored"), num(&out, "files_skipped")),
        (1, 3),
        "{out}"
    );

    write(&one, "edit again");
    s.restore(&id, &t, &["--overwrite", "always"]);
    assert_eq!(fs::read_to_string(&one).unwrap(), "one");
    s.restore(&id, &t, &[]);
    assert_same_tree(&src, &restored_path(&t, &src));
}

#[test]
fn restore_verify_succeeds_on_a_good_repository() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("small.txt"), "small");
    write(
        &src.join("multi_chunk.bin"),
        random_bytes(3 * MIB as usize, 8),
    );
    write(&src.join("empty"), "");
    let id = text(&s.backup([&src]), "snapshot_id").to_string();
    let t = s.path("t");
    let out = s.restore_json(&id, &t, &["--verify"]);
    assert_eq!(num(&out, "files_verified"), 3, "{out}");
    assert_eq!(num(&out, "errors"), 0, "{out}");
    assert_same_tree(&src, &restored_path(&t, &src));
}

#[test]
fn restore_dry_run_verbose_lists_what_would_be_written() {
    let s = Sandbox::init();
    let (src, id) = s.small_tree();
    let t = s.path("t");
    let out = s.restore(&id, &t, &["--dry-run", "-v"]);
    let one = src.join("a/1.txt");
    let listed =
        |out: &Out, prefix: &str| out.lines().iter().filter(|l| l.starts_with(prefix)).count();
    assert!(
        out.stdout()
            .contains(&format!("would restore {} (3 B)", one.display())),
        "{}",
        out.stdout()
    );
    assert_eq!(
        listed(&out, "would restore"),
        4 + 6,
        "4 files, src with its 3 folders and the 2 folders above it: {}",
        out.stdout()
    );
    assert!(!t.exists(), "restore --dry-run -v created the target");

    // With --overwrite never over a full restore, every file would be kept.
    s.restore(&id, &t, &[]);
    let out = s.restore(&id, &t, &["--dry-run", "-v", "--overwrite", "never"]);
    assert_eq!(listed(&out, "would keep"), 4, "{}", out.stdout());
    // Without -v nothing is listed.
    let out = s.restore(&id, &t, &["--dry-run"]);
    assert_eq!(listed(&out, "would"), 0, "{}", out.stdout());
}

/// A restore keeps each temporary file open from creation to rename only
/// while the descriptor limit allows; beyond it, files are reopened. With a
/// limit of 300 open files, 600 files still restore, each byte for byte.
#[test]
fn restore_under_a_low_descriptor_limit() {
    use std::os::unix::process::CommandExt;
    let s = Sandbox::init();
    let src = s.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..600 {
        std::fs::write(
            src.join(format!("f{i:03}")),
            format!("file {i}").repeat(i + 1),
        )
        .unwrap();
    }
    let id = text(&s.backup([&src]), "snapshot_id").to_string();
    let t = s.path("t");
    let mut c = s.std_cmd(["restore", &id, "--target", t.to_str().unwrap()]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        c.pre_exec(|| {
            rustix::process::setrlimit(
                rustix::process::Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(300),
                    maximum: Some(300),
                },
            )
            .map_err(std::io::Error::from)
        });
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = t.join(src.strip_prefix("/").unwrap());
    for i in 0..600 {
        let name = format!("f{i:03}");
        assert_eq!(
            std::fs::read(r.join(&name)).unwrap(),
            std::fs::read(src.join(&name)).unwrap(),
            "{name}"
        );
    }
}

/// One conflict is one error line: a file kept where the snapshot has a
/// directory of 40 files says so once, with a count, not 40 times.
#[test]
fn one_conflict_is_one_error_line() {
    let s = Sandbox::init();
    let src = s.path("src");
    for i in 0..40 {
        write(&src.join(format!("a/f{i}")), "x");
    }
    let snap = text(&s.backup([&src]), "snapshot_id").to_string();
    let target = s.path("t");
    let blocked = restored_path(&target, &src.join("a"));
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    write(&blocked, "a file where the snapshot has a folder");
    let out = s
        .cmd([
            "restore",
            &snap,
            "--target",
            target.to_str().unwrap(),
            "--overwrite",
            "never",
        ])
        .code(1);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 2, "{}", out.dump());
    assert!(
        errors[0].contains("40 entries below it not restored"),
        "{}",
        out.dump()
    );
    assert!(
        errors[1].contains("1 error during restore"),
        "{}",
        out.dump()
    );
}

/// `dump SNAP FOLDER --archive tar` streams the folder as a tar that `tar`
/// unpacks to the same files, modes and links.
#[test]
fn dump_a_folder_as_tar() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a/one.txt"), "one");
    write_random(&src.join("a/big"), 5 << 20, 3);
    set_mode(&src.join("a/one.txt"), 0o640);
    std::os::unix::fs::symlink("one.txt", src.join("a/link")).unwrap();
    let long = "n".repeat(150);
    write(&src.join("a").join(&long), "long name");
    s.backup([&src]);
    let folder = src.join("a");
    let out = s.ok([
        "dump",
        "latest",
        folder.to_str().unwrap(),
        "--archive",
        "tar",
    ]);
    let tarball = s.path("a.tar");
    std::fs::write(&tarball, &out.stdout).unwrap();
    let x = s.path("x");
    std::fs::create_dir_all(&x).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    let back = x.join(folder.strip_prefix("/").unwrap());
    // (tar keeps whole seconds of mtime; contents, modes and links exactly.)
    for f in ["one.txt", "big", long.as_str()] {
        assert!(same_content(&folder.join(f), &back.join(f)), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(back.join("one.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(
        std::fs::read_link(back.join("link")).unwrap(),
        std::path::Path::new("one.txt")
    );

    // A single file too; a bad format is a usage error.
    let f = src.join("a/one.txt");
    let out = s.ok(["dump", "latest", f.to_str().unwrap(), "--archive", "tar"]);
    assert!(out.stdout.len() >= 1024);
    s.cmd(["dump", "latest", f.to_str().unwrap(), "--archive", "rar"])
        .code(2)
        .assert_one_error_line("--archive");
}

/// `dump SNAP FOLDER --archive zip` streams a zip (data descriptors, no
/// seeking) that a zip reader opens with the same contents, modes and links.
#[test]
fn dump_a_folder_as_zip() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a/one.txt"), "one");
    write_random(&src.join("a/big"), 5 << 20, 3);
    write(&src.join("a/sub/deep.txt"), "deep");
    set_mode(&src.join("a/one.txt"), 0o640);
    std::os::unix::fs::symlink("one.txt", src.join("a/link")).unwrap();
    s.backup([&src]);
    let folder = src.join("a");
    let out = s.ok([
        "dump",
        "latest",
        folder.to_str().unwrap(),
        "--archive",
        "zip",
    ]);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(out.stdout.clone())).unwrap();
    let base = folder
        .strip_prefix("/")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let read = |zip: &mut zip::ZipArchive<_>, name: &str| {
        let mut f = zip.by_name(&format!("{base}/{name}")).unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut v).unwrap();
        (v, f.unix_mode())
    };
    let (one, mode) = read(&mut zip, "one.txt");
    assert_eq!(one, b"one");
    assert_eq!(mode.unwrap() & 0o777, 0o640);
    assert_eq!(
        read(&mut zip, "big").0,
        std::fs::read(folder.join("big")).unwrap()
    );
    assert_eq!(read(&mut zip, "sub/deep.txt").0, b"deep");
    let link = zip.by_name(&format!("{base}/link")).unwrap();
    assert!(link.is_symlink());
    drop(link);
    assert_eq!(
        read(&mut zip, "link").0,
        b"one.txt",
        "a symlink holds its target"
    );
    // `unzip -t` agrees, where it is installed.
    if std::process::Command::new("unzip")
        .arg("-v")
        .output()
        .is_ok()
    {
        let z = s.path("a.zip");
        std::fs::write(&z, &out.stdout).unwrap();
        let t = std::process::Command::new("unzip")
            .arg("-tq")
            .arg(&z)
            .output()
            .unwrap();
        assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stdout));
    }
}

/// On a terminal, the restore bar says it is reading the first packs until
/// bytes arrive, instead of "0 B ... ETA 0s".
#[test]
fn restore_progress_says_what_it_waits_for() {
    let s = Sandbox::init();
    let src = s.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big"), 3 << 20, 5);
    s.backup([&src]);
    let t = s.path("t");
    let shown = s.on_terminal(&[
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--limit-download",
        "1024",
    ]);
    assert!(shown.contains("reading the first packs"), "{shown}");
    assert!(same_content(
        &src.join("big"),
        &restored_path(&t, &src).join("big")
    ));
}

/// `restore --delete` makes the target equal to the snapshot: what its
/// folders hold beyond the snapshot goes (a dry run lists it first), links
/// are removed, never followed.
#[test]
fn restore_delete_makes_the_target_equal_to_the_snapshot() {
    let s = Sandbox::init();
    let (src, snap) = s.small_tree();
    let t = s.path("t");
    s.restore(&snap, &t, &[]);
    let r = restored_path(&t, &src);
    write(&r.join("a/extra.txt"), "extra");
    write(&r.join("b/newdir/deep/x"), "x");
    let outside = s.path("outside");
    write(&outside.join("keep.me"), "mine");
    std::os::unix::fs::symlink(&outside, r.join("a/link")).unwrap();
    write(&t.join("stray"), "top level");

    let js = s.restore_json(&snap, &t, &["--delete", "--dry-run"]);
    assert_eq!(js["deleted"].as_array().unwrap().len(), 4, "{js}");
    assert!(r.join("a/extra.txt").exists() && t.join("stray").exists());

    let js = s.restore_json(&snap, &t, &["--delete"]);
    assert_eq!(js["deleted"].as_array().unwrap().len(), 4, "{js}");
    assert_same_tree(&src, &r);
    assert!(!t.join("stray").exists());
    assert_eq!(
        std::fs::read_to_string(outside.join("keep.me")).unwrap(),
        "mine"
    );
    s.cmd([
        "restore",
        &snap,
        "--target",
        t.to_str().unwrap(),
        "--delete",
        "--include",
        "*.txt",
    ])
    .code(2)
    .assert_one_error_line("--delete");
}

//! Bad input and damaged repositories: exit codes and messages per the product
//! contract (1 failure, 2 usage, 3 partial backup, 10 no repository, 12 wrong
//! password), and nothing damaged by a refused command.

use crate::common;

use std::fs;
use std::path::PathBuf;

use common::*;

#[test]
fn wrong_password_exits_12() {
    let s = Sandbox::init();
    let out = s
        .cmd(["snapshots"])
        .env("CAIRN_PASSWORD", "not the password")
        .code(12);
    out.assert_one_error_line("password");
    let bad = s.path("bad");
    write(&bad, "also wrong\n");
    s.cmd(["backup", "--stdin"])
        .env_remove("CAIRN_PASSWORD")
        .arg("--password-file")
        .arg(&bad)
        .stdin("x")
        .code(12);
    assert_eq!(s.snapshot_count(), 0);
    assert!(
        s.data_packs().is_empty(),
        "a backup with the wrong password wrote data"
    );
}

#[test]
fn missing_repository_exits_10() {
    let s = Sandbox::new();
    let src = s.path("src");
    write(&src.join("f"), "x");
    s.cmd(["snapshots"]).code(10).assert_one_error_line("init");
    s.cmd(["backup", src.to_str().unwrap()]).code(10);
    s.cmd([
        "restore",
        "latest",
        "--target",
        s.path("t").to_str().unwrap(),
    ])
    .code(10);
    s.cmd(["check"]).code(10);
    let url = format!("file://{}", s.path("nothing/here").display());
    s.bare(["snapshots", "-r", &url]).code(10);
    // Even without any password source: the missing repository is reported first.
    s.cmd(["snapshots"]).env_remove("CAIRN_PASSWORD").code(10);
    assert!(
        !s.repo.exists(),
        "a failed command created the repository directory"
    );
    assert!(!s.path("t").exists());
}

#[test]
fn init_over_an_existing_repository_is_refused() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("f"), "precious");
    s.ok(["backup", src.to_str().unwrap()]);
    let config = fs::read(s.repo.join("config")).unwrap();
    let keys = fs::read_dir(s.repo.join("keys")).unwrap().count();

    let out = s.cmd(["init"]).fails();
    assert!(out.stderr.contains("already exists"), "{}", out.dump());
    s.cmd(["init"])
        .env("CAIRN_PASSWORD", "a different password")
        .fails();
    s.cmd(["init", "--pack-size", "4"]).fails();

    assert_eq!(
        fs::read(s.repo.join("config")).unwrap(),
        config,
        "config was rewritten"
    );
    assert_eq!(
        fs::read_dir(s.repo.join("keys")).unwrap().count(),
        keys,
        "a key was added or removed"
    );
    assert_eq!(s.snapshot_count(), 1);
    assert_eq!(
        s.ok(["dump", "latest", src.join("f").to_str().unwrap()])
            .stdout,
        b"precious"
    );
    s.cmd(["snapshots"])
        .env("CAIRN_PASSWORD", "a different password")
        .code(12);
}

#[test]
fn nonexistent_source_paths() {
    let s = Sandbox::init();
    let missing = s.path("no/such/dir");
    s.cmd(["backup", missing.to_str().unwrap()]).fails();
    assert_eq!(
        s.snapshot_count(),
        0,
        "a backup of nothing saved a snapshot"
    );

    // One good and one missing source: saved, exit 3, the missing one named.
    let src = s.path("src");
    write(&src.join("f"), "x");
    let gone = s.path("gone.txt");
    let out = s
        .cmd(["backup", src.to_str().unwrap(), gone.to_str().unwrap()])
        .code(3);
    assert!(
        out.stderr.contains(gone.to_str().unwrap()),
        "{}",
        out.dump()
    );
    assert_eq!(s.snapshot_count(), 1);
    assert_eq!(
        s.ok(["dump", "latest", src.join("f").to_str().unwrap()])
            .stdout,
        b"x"
    );
    let warn = s
        .events()
        .into_iter()
        .find(|e| e["event"] == "backup.completed")
        .expect("event logged");
    assert_eq!(warn["severity"], "warning");

    // The same when the missing source's parent directories are missing too.
    let out = s
        .cmd(["backup", src.to_str().unwrap(), missing.to_str().unwrap()])
        .run();
    assert_eq!(
        out.code,
        Some(3),
        "a missing nested source should be skipped like a missing leaf\n{}",
        out.dump()
    );
    assert!(
        out.stderr.contains(missing.to_str().unwrap()),
        "{}",
        out.dump()
    );
    assert_eq!(s.snapshot_count(), 2);
}

#[test]
fn unknown_and_ambiguous_snapshots_exit_1() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("f"), "x");
    let id = text(&s.backup([&src]), "snapshot_id").to_string();
    // A prefix that is not this snapshot's.
    let other = if id.starts_with("dead") {
        "beefbeef"
    } else {
        "deadbeef"
    };
    let t = s.path("t");
    s.cmd(["restore", other, "--target", t.to_str().unwrap()])
        .code(1)
        .assert_one_error_line(other);
    assert!(
        !t.exists(),
        "restore of an unknown snapshot created the target"
    );
    s.cmd(["ls", other]).code(1).assert_one_error_line(other);
    s.cmd(["dump", other, "/f"]).code(1);
    s.cmd(["cat", "snapshot", other]).code(1);
    s.cmd(["ls", "zzzz"]).code(1);
    // Fewer than 4 digits is a usage error (see tests/cli/usage.rs).
    s.cmd(["ls", &id[..3]]).code(2);
    s.cmd(["ls", &format!("{id}0")]).code(1);

    // Two snapshots sharing a 60-digit prefix (made by copying the object).
    let twin = format!(
        "{}{}",
        &id[..60],
        if &id[60..] == "0000" { "1111" } else { "0000" }
    );
    fs::copy(
        s.repo.join("snapshots").join(&id),
        s.repo.join("snapshots").join(&twin),
    )
    .unwrap();
    s.cmd(["ls", &id[..60]])
        .code(1)
        .assert_one_error_line("ambiguous");
    s.ok(["ls", &id]);
}

fn one_data_pack(s: &Sandbox) -> PathBuf {
    let packs = s.data_packs();
    assert_eq!(packs.len(), 1, "expected exactly one data pack: {packs:?}");
    packs[0].clone()
}

#[test]
fn corrupted_pack_is_named_by_check_read_data() {
    let s = Sandbox::init();
    let src = s.path("src");
    // One file with content (one chunk below the minimum chunk size), so the
    // only data pack holds only its blob.
    write(&src.join("victim.bin"), random_bytes(300_000, 5));
    write(&src.join("empty"), "");
    let snap = text(&s.backup([&src]), "snapshot_id").to_string();
    s.ok(["check", "--read-data"]);

    let pack = one_data_pack(&s);
    let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&pack, &bytes).unwrap();

    let out = s.cmd(["check", "--read-data"]).code(1);
    assert!(
        out.stderr.contains(&pack_id),
        "check does not name the pack {pack_id}\n{}",
        out.dump()
    );
    let victim = src.join("victim.bin");
    assert!(
        out.stderr.contains(victim.to_str().unwrap()),
        "check does not name the damaged file\n{}",
        out.dump()
    );
    assert!(
        out.stderr.contains(&snap[..8]),
        "check does not name the snapshot\n{}",
        out.dump()
    );
    let js = s.cmd(["check", "--read-data", "--json"]).code(1).json();
    assert!(!js["errors"].as_array().unwrap().is_empty(), "{js}");
    assert!(s.events().iter().any(|e| e["event"] == "check.failed"));

    let t = s.path("t");
    let out = s
        .cmd(["restore", &snap, "--target", t.to_str().unwrap()])
        .fails();
    assert!(
        out.stderr.contains("victim.bin"),
        "restore error should name the file\n{}",
        out.dump()
    );
    assert!(
        !restored_path(&t, &victim).exists(),
        "a damaged file was restored under its real name"
    );
    s.cmd(["dump", &snap, victim.to_str().unwrap()]).fails();
    // The undamaged parts still restore.
    assert!(restored_path(&t, &src.join("empty")).is_file());
}

#[test]
fn deleted_pack_fails_check() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("lost.bin"), random_bytes(200_000, 6));
    let snap = text(&s.backup([&src]), "snapshot_id").to_string();
    let pack = one_data_pack(&s);
    let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();
    fs::remove_file(&pack).unwrap();

    let out = s.cmd(["check"]).code(1);
    assert!(
        out.stderr.contains(&pack_id),
        "check does not name the missing pack\n{}",
        out.dump()
    );
    let out = s.cmd(["check", "--read-data"]).code(1);
    assert!(
        out.stderr.contains("lost.bin"),
        "check --read-data does not name the file that lost its data\n{}",
        out.dump()
    );
    s.cmd(["restore", &snap, "--target", s.path("t").to_str().unwrap()])
        .fails();
}

#[test]
fn usage_errors_exit_2() {
    let s = Sandbox::init();
    let t = s.path("t");
    let t = t.to_str().unwrap();
    for args in [
        vec!["backup", "--no-such-flag", "x"],
        vec!["frobnicate"],
        vec!["restore", "latest"],
        vec![
            "restore",
            "latest",
            "--target",
            t,
            "--overwrite",
            "sometimes",
        ],
        vec!["check", "--read-data-subset", "0/2"],
        vec!["check", "--read-data-subset", "3/2"],
        vec!["check", "--read-data-subset", "150%"],
        vec!["check", "--read-data-subset", "half"],
        vec!["backup", "/tmp", "--time", "yesterday-ish"],
        vec!["backup"],
        vec!["backup", "--stdin", "/tmp"],
        vec!["backup", "--stdin-from-command", "--stdin-filename", "x"],
        vec!["snapshots", "-o", "novalue"],
    ] {
        let out = s.cmd(&args).code(2);
        assert!(!out.stderr.trim().is_empty(), "`{}`: no message", out.desc);
    }
    assert_eq!(s.snapshot_count(), 0);
    assert!(!s.path("t").exists());
    // --help and --version are not errors.
    s.bare(["--help"]).ok();
    s.bare(["--version"]).ok();
}

#[test]
fn no_password_source_and_no_tty() {
    let s = Sandbox::new();
    // init: refused, nothing created.
    let out = s.cmd(["init"]).env_remove("CAIRN_PASSWORD").fails();
    out.assert_one_error_line("password");
    assert!(
        !s.repo.join("config").exists(),
        "init without a password created a repository"
    );

    s.ok(["init"]);
    let out = s.cmd(["snapshots"]).env_remove("CAIRN_PASSWORD").fails();
    out.assert_one_error_line("CAIRN_PASSWORD");
    // Never read the password from a non-TTY stdin (it may be the data).
    s.cmd(["backup", "--stdin", "--stdin-filename", "x"])
        .env_remove("CAIRN_PASSWORD")
        .stdin(format!("{PASSWORD}\n"))
        .fails();
    // A password file that does not exist is named.
    let out = s
        .cmd(["snapshots"])
        .env_remove("CAIRN_PASSWORD")
        .arg("--password-file")
        .arg(s.path("nope"))
        .fails();
    out.assert_one_error_line("nope");
    s.cmd(["snapshots"])
        .env_remove("CAIRN_PASSWORD")
        .env("CAIRN_PASSWORD_FILE", s.path("nope"))
        .fails();
    assert_eq!(s.snapshot_count(), 0);
}

/// A restic-style location (`b2:bucket/x`, `sftp:host:/srv`) is refused with
/// a clear line instead of silently becoming a local folder of that name;
/// `./b2:x` is still a local folder.
#[test]
fn restic_style_locations_are_refused_not_made_folders() {
    let s = Sandbox::new();
    for loc in ["b2:bucket/x", "sftp:host:/srv/repo", "rest:http://h:8000/"] {
        let out = s.bare(["-r", loc, "init"]).code(2);
        assert!(
            out.stderr.contains("is a restic backend"),
            "{loc}: {}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
    assert!(!s.root.join("b2:bucket").exists());
    assert!(!s.root.join("sftp:host:").exists());
    s.bare(["-r", "./b2:local", "init"]).code(0);
    assert!(s.root.join("b2:local").is_dir());
}

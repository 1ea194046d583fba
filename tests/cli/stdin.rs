//! Standard input and dump commands: `backup --stdin`, `--stdin-from-command`,
//! and `dump`.

use crate::common;

use std::fs;

use common::*;

#[test]
fn stdin_backup_dump_and_restore() {
    let s = Sandbox::init();
    // Several chunks, so the stream is really chunked (chunks are >= 512 KiB).
    let mut input = b"-- SQL dump\nCREATE TABLE t (x int);\n".to_vec();
    input.extend(random_bytes(2 * MIB as usize + 12345, 11));
    let b = s
        .cmd([
            "backup",
            "--stdin",
            "--stdin-filename",
            "mydb.sql",
            "--json",
        ])
        .stdin(input.clone())
        .ok()
        .json();
    assert_eq!(num(&b, "files_new"), 1, "{b}");
    assert_eq!(num(&b, "bytes_read"), input.len() as u64, "{b}");
    let snaps = s.snapshots(&[]);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["paths"], serde_json::json!(["/mydb.sql"]));

    let dumped = s.ok(["dump", "latest", "mydb.sql"]).stdout;
    assert!(
        dumped == input,
        "dump differs from the input ({} vs {} bytes)",
        dumped.len(),
        input.len()
    );

    let t = s.path("t");
    s.restore("latest", &t, &[]);
    assert!(
        fs::read(t.join("mydb.sql")).unwrap() == input,
        "restored stdin file differs"
    );
    let entries: Vec<_> = fs::read_dir(&t)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        entries,
        ["mydb.sql"],
        "a stdin snapshot restores as TARGET/NAME only"
    );
}

#[test]
fn stdin_name_alias_and_nested_name() {
    let s = Sandbox::init();
    s.cmd(["backup", "--stdin", "--stdin-name", "other.sql"])
        .stdin("via alias")
        .ok();
    assert_eq!(s.ok(["dump", "latest", "other.sql"]).stdout, b"via alias");
    // An empty stream is saved as an empty file, but exits 3 (a dump that
    // writes nothing has almost always failed).
    s.cmd(["backup", "--stdin", "--stdin-filename", "empty.sql"])
        .stdin("")
        .code(3);
    assert_eq!(s.ok(["dump", "latest", "empty.sql"]).stdout, b"");
    s.cmd(["backup", "--stdin", "--stdin-filename", "dumps/pg/db.sql"])
        .stdin("nested")
        .ok();
    let t = s.path("t");
    s.restore("latest", &t, &[]);
    assert_eq!(fs::read(t.join("dumps/pg/db.sql")).unwrap(), b"nested");
    // With or without the leading slash.
    assert_eq!(
        s.ok(["dump", "latest", "/dumps/pg/db.sql"]).stdout,
        b"nested"
    );
}

/// Pins rustic bug #1793: a stdin file with the same name and length as in the
/// parent snapshot must still be read and stored, never taken as unchanged.
#[test]
fn stdin_backups_are_never_treated_as_unchanged() {
    let s = Sandbox::init();
    let a = "A".repeat(5000);
    let b = "B".repeat(5000);
    let first = s
        .cmd(["backup", "--stdin", "--stdin-filename", "db.sql", "--json"])
        .stdin(a.clone())
        .ok()
        .json();
    let second = s
        .cmd(["backup", "--stdin", "--stdin-filename", "db.sql", "--json"])
        .stdin(b.clone())
        .ok()
        .json();
    assert_eq!(num(&second, "files_unmodified"), 0, "{second}");
    assert_eq!(num(&second, "bytes_read"), 5000, "{second}");
    assert_eq!(
        s.ok(["dump", "latest", "db.sql"]).stdout,
        b.as_bytes(),
        "dump latest gave the old content"
    );
    assert_eq!(
        s.ok(["dump", text(&first, "snapshot_id"), "db.sql"]).stdout,
        a.as_bytes()
    );
    let t = s.path("t");
    s.restore("latest", &t, &[]);
    assert_eq!(
        fs::read_to_string(t.join("db.sql")).unwrap(),
        b,
        "restore latest gave the old content"
    );
    // Same again with a dump command.
    s.ok([
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "db.sql",
        "--",
        "sh",
        "-c",
        "printf %5000s | tr ' ' C",
    ]);
    assert_eq!(
        s.ok(["dump", "latest", "db.sql"]).stdout,
        "C".repeat(5000).as_bytes()
    );
}

#[test]
fn stdin_from_command() {
    let s = Sandbox::init();
    let b = s.backup([
        "--stdin-from-command",
        "--stdin-filename",
        "x.sql",
        "--",
        "sh",
        "-c",
        "printf data",
    ]);
    assert_eq!(num(&b, "bytes_read"), 4, "{b}");
    assert_eq!(s.ok(["dump", "latest", "x.sql"]).stdout, b"data");
    // The command's arguments are passed as given, not re-split by a shell.
    s.ok([
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "y.sql",
        "--",
        "printf",
        "%s|%s",
        "a b",
        "--json",
    ]);
    assert_eq!(s.ok(["dump", "latest", "y.sql"]).stdout, b"a b|--json");
    assert_eq!(s.snapshot_count(), 2);
}

#[test]
fn failing_dump_command_saves_no_snapshot() {
    let s = Sandbox::init();
    s.cmd([
        "backup",
        "--stdin-from-command",
        "--stdin-filename",
        "ok.sql",
        "--",
        "true",
    ])
    .code(3);
    assert_eq!(s.snapshot_count(), 1);
    let out = s
        .command_backup("x.sql", &["sh", "-c", "printf partial; exit 3"])
        .fails();
    assert!(
        out.stderr.contains("sh"),
        "error should name the failed command: {}",
        out.stderr
    );
    assert_eq!(
        s.snapshot_count(),
        1,
        "a failed dump command must not save a snapshot"
    );
    // A command that does not exist.
    s.command_backup("x.sql", &["/nonexistent/pg_dump"]).fails();
    // A command killed by a signal.
    s.command_backup("x.sql", &["sh", "-c", "printf x; kill -9 $$"])
        .fails();
    assert_eq!(s.snapshot_count(), 1);
    let failed: Vec<_> = s
        .events()
        .into_iter()
        .filter(|e| e["event"] == "backup.failed")
        .collect();
    assert!(
        failed.len() >= 3,
        "each failed backup should log backup.failed: {failed:?}"
    );
    assert_eq!(failed[0]["severity"], "critical");
    s.ok(["check"]);
}

#[test]
fn dump_errors() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("f.txt"), "file");
    s.ok(["backup", src.to_str().unwrap()]);
    let f = format!("{}/f.txt", src.display());
    assert_eq!(s.ok(["dump", "latest", &f]).stdout, b"file");
    // A directory is not dumpable; a missing path is an error.
    s.cmd(["dump", "latest", src.to_str().unwrap()])
        .code(1)
        .assert_one_error_line("not a regular file");
    s.cmd(["dump", "latest", &format!("{}/missing.txt", src.display())])
        .code(1)
        .assert_one_error_line("missing.txt");

    // A dump is saved, then a file backup becomes `latest`: the error names
    // the snapshot and where the dump is.
    s.cmd(["backup", "--stdin", "--stdin-filename", "db.sql"])
        .stdin("dump")
        .ok();
    s.ok(["backup", src.to_str().unwrap()]);
    let out = s.cmd(["dump", "latest", "db.sql"]).code(1);
    out.assert_one_error_line("the newest snapshot holding it is");
    assert!(out.stderr.contains("--path /db.sql"), "{}", out.dump());
    assert_eq!(
        s.ok(["dump", "latest", "db.sql", "--path", "/db.sql"])
            .stdout,
        b"dump"
    );
}

/// `pg_dump nosuchdb | cairn backup --stdin` reads nothing: the snapshot is
/// kept (as restic does) but the backup is not a success: exit 3, a warning
/// event, and a line saying why (issue 18).
#[test]
fn an_empty_stdin_saves_but_exits_3() {
    let s = Sandbox::init();
    let out = s
        .cmd(["backup", "--stdin", "--stdin-filename", "db.sql"])
        .stdin(Vec::new())
        .code(3);
    assert!(out.stderr.contains("input was empty"), "{}", out.dump());
    assert_eq!(s.snapshot_count(), 1);
    // A command that succeeds but writes nothing is the same.
    let out = s
        .cmd([
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "db.sql",
            "--",
            "true",
        ])
        .code(3);
    assert!(out.stderr.contains("input was empty"), "{}", out.dump());
}

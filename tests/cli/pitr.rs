//! PostgreSQL point-in-time recovery against a real server: WAL archived by
//! `wal-push` (PostgreSQL's archive_command), a base backup, and
//! `pitr restore` to a time between two sets of writes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::dbservers::Postgres;

/// cairn as the cluster's owner runs it, with the test's repository.
struct Archive {
    repo: PathBuf,
    pass: PathBuf,
    spool: PathBuf,
    events: PathBuf,
}

impl Archive {
    fn args(&self) -> Vec<String> {
        vec![
            "-r".into(),
            self.repo.display().to_string(),
            "--password-file".into(),
            self.pass.display().to_string(),
            "--event-log".into(),
            self.events.display().to_string(),
        ]
    }

    fn cairn(&self, pg: &Postgres, args: &[&str]) -> std::process::Output {
        let out = pg
            .as_owner(Path::new(env!("CARGO_BIN_EXE_cairn")))
            .args(self.args())
            .args(args)
            .env_remove("CAIRN_PASSWORD")
            .output()
            .unwrap();
        out
    }

    fn ok(&self, pg: &Postgres, args: &[&str]) -> String {
        let out = self.cairn(pg, args);
        assert!(
            out.status.success(),
            "cairn {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The archive_command: cairn pushing synchronously into the repository.
    fn archive_command(&self) -> String {
        let mut words = vec![env!("CARGO_BIN_EXE_cairn").to_string()];
        words.extend(self.args());
        words.extend([
            "wal-push".into(),
            "--sync".into(),
            "--spool".into(),
            self.spool.display().to_string(),
            "%p".into(),
        ]);
        words.join(" ")
    }
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// psql against another port.
fn sql_at(pg: &Postgres, port: u16, sql: &str) -> Option<String> {
    let out = Command::new(pg.bindir.join("psql"))
        .args([
            "-X",
            "-At",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", "postgres")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn recover_to_a_time_between_two_sets_of_writes() {
    // The archive lives in a folder the server's user owns: it is the
    // server that runs archive_command.
    let dir = tempfile::Builder::new()
        .prefix("cairn-pitr-")
        .tempdir_in("/tmp")
        .unwrap();
    let archive = Archive {
        repo: dir.path().join("repo"),
        pass: dir.path().join("pass"),
        spool: dir.path().join("spool"),
        events: dir.path().join("events.jsonl"),
    };
    std::fs::write(&archive.pass, "pitr-test\n").unwrap();
    std::fs::set_permissions(
        &archive.pass,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let Some(probe) = Postgres::start() else {
        return;
    };
    probe.chown_to_owner(dir.path());
    archive.ok(&probe, &["init", "--kdf-memory", "8", "--kdf-time", "1"]);
    drop(probe);
    let command = archive.archive_command();
    let Some(pg) = Postgres::start_with(&[
        ("wal_level", "replica"),
        ("archive_mode", "on"),
        ("archive_command", &command),
        ("archive_timeout", "0"),
    ]) else {
        return;
    };
    pg.sql("postgres", "CREATE TABLE t(id int PRIMARY KEY, note text)");
    pg.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'before base' FROM generate_series(1, 1000) g",
    );
    // The base backup starts past segment 1, so that retention has WAL to drop.
    pg.sql("postgres", "SELECT pg_switch_wal()");
    pg.sql("postgres", "INSERT INTO t VALUES (0, 'in segment 2')");
    let url = format!(
        "postgresql://postgres:postgres@127.0.0.1:{}/postgres",
        pg.port
    );
    let out = archive.ok(&pg, &["backup", "--postgres-base", &url, "--tag", "base"]);
    assert!(out.contains("base backup"), "{out}");

    pg.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'kept' FROM generate_series(1001, 1500) g",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let target = pg.sql(
        "postgres",
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    std::thread::sleep(Duration::from_millis(1100));
    pg.sql(
        "postgres",
        "INSERT INTO t SELECT g, 'too late' FROM generate_series(1501, 2200) g",
    );
    pg.sql("postgres", "CREATE TABLE dropped_later(x int)");
    pg.sql("postgres", "DROP TABLE dropped_later");
    let last = pg.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    wait_until("the last segment to be archived", || {
        pg.sql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        ) >= last
    });

    let listed = archive.ok(&pg, &["pitr", "list"]);
    assert!(listed.contains("recoverable"), "{listed}");
    assert!(listed.contains("timeline 1"), "{listed}");

    let data = dir.path().join("restored");
    let out = archive.ok(
        &pg,
        &[
            "pitr",
            "restore",
            "--to-time",
            &target,
            "--target",
            data.to_str().unwrap(),
            "--spool",
            archive.spool.to_str().unwrap(),
        ],
    );
    assert!(out.contains("unpacked"), "{out}");
    let (_server, port) = pg.start_other(&data, &[("archive_mode", "off")]);
    wait_until("recovery to end and promote", || {
        sql_at(&pg, port, "SELECT pg_is_in_recovery()").as_deref() == Some("f")
    });
    assert_eq!(sql_at(&pg, port, "SELECT count(*) FROM t").unwrap(), "1501");
    assert_eq!(
        sql_at(&pg, port, "SELECT count(*) FROM t WHERE note = 'too late'").unwrap(),
        "0"
    );

    // The same name pushed again with the same content is fine; with other
    // content it is refused (PostgreSQL must never lose a segment silently).
    let seg = dir.path().join(&last);
    let restored_seg = data.join("pg_wal").join(&last);
    let fetched = archive.cairn(
        &pg,
        &[
            "wal-fetch",
            &last,
            restored_seg.to_str().unwrap(),
            "--spool",
            archive.spool.to_str().unwrap(),
        ],
    );
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    std::fs::copy(&restored_seg, &seg).unwrap();
    pg.chown_to_owner(&seg);
    archive.ok(
        &pg,
        &[
            "wal-push",
            "--sync",
            "--spool",
            archive.spool.to_str().unwrap(),
            seg.to_str().unwrap(),
        ],
    );
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let out = archive.cairn(
        &pg,
        &[
            "wal-push",
            "--sync",
            "--spool",
            archive.spool.to_str().unwrap(),
            seg.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("different content"));
    // wal-fetch of what was never archived: a quiet exit 1.
    let out = archive.cairn(
        &pg,
        &[
            "wal-fetch",
            "00000009.history",
            "/tmp/nowhere",
            "--spool",
            archive.spool.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // health reports the archive, and its lag past --max-wal-lag.
    let out = archive.ok(&pg, &["health", "--max-wal-lag", "1h"]);
    assert!(out.contains("WAL of PostgreSQL cluster"), "{out}");
    std::thread::sleep(Duration::from_millis(2100));
    let out = archive.cairn(&pg, &["health", "--max-wal-lag", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no WAL archived for"));

    // Retention: the base backup stays, the WAL before its start goes, the
    // WAL it needs stays (wal-fetch through an empty spool asks the repository).
    let first = "000000010000000000000001";
    let probe_spool = dir.path().join("probe-spool");
    let fetch = |name: &str| {
        let dest = dir.path().join("fetched");
        archive.cairn(
            &pg,
            &[
                "wal-fetch",
                name,
                dest.to_str().unwrap(),
                "--spool",
                probe_spool.to_str().unwrap(),
            ],
        )
    };
    assert_eq!(fetch(first).status.code(), Some(0));
    let listed = archive.ok(&pg, &["pitr", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let base_first = listed["bases"][0]["first_segment"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(base_first.as_str() > first, "{listed}");
    archive.ok(&pg, &["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(
        fetch(first).status.code(),
        Some(1),
        "segment 1 is older than the only base backup"
    );
    assert_eq!(fetch(&base_first).status.code(), Some(0));
    assert_eq!(fetch(&last).status.code(), Some(0));
}

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
    assert!(listed.contains("recoverable window: 20"), "{listed}");
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
    // The recovered cluster promotes onto timeline 2 and archives into the
    // same repository (same cluster: the same system identifier).
    let (server, port) = pg.start_other(
        &data,
        &[("archive_mode", "on"), ("archive_command", &command)],
    );
    wait_until("recovery to end and promote", || {
        sql_at(&pg, port, "SELECT pg_is_in_recovery()").as_deref() == Some("f")
    });
    assert_eq!(sql_at(&pg, port, "SELECT count(*) FROM t").unwrap(), "1501");
    assert_eq!(
        sql_at(&pg, port, "SELECT count(*) FROM t WHERE note = 'too late'").unwrap(),
        "0"
    );

    // A second timeline: writes after the promotion, archived, and a
    // recovery to the end that follows timeline 1 to the branch point and
    // timeline 2 after it.
    sql_at(
        &pg,
        port,
        "INSERT INTO t SELECT g, 'timeline 2' FROM generate_series(5001, 5100) g",
    )
    .unwrap();
    let tl2_last = sql_at(&pg, port, "SELECT pg_walfile_name(pg_switch_wal())").unwrap();
    assert!(tl2_last.starts_with("00000002"), "{tl2_last}");
    wait_until("timeline 2 to be archived", || {
        sql_at(
            &pg,
            port,
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        )
        .is_some_and(|w| w >= tl2_last)
    });
    drop(server);
    let listed = archive.ok(&pg, &["pitr", "list"]);
    assert!(listed.contains("timeline 2"), "{listed}");
    let data2 = dir.path().join("restored-tl2");
    archive.ok(
        &pg,
        &[
            "pitr",
            "restore",
            "latest",
            "--target",
            data2.to_str().unwrap(),
            "--spool",
            archive.spool.to_str().unwrap(),
        ],
    );
    let (server, port) = pg.start_other(&data2, &[("archive_mode", "off")]);
    wait_until("recovery along timeline 2", || {
        sql_at(&pg, port, "SELECT pg_is_in_recovery()").as_deref() == Some("f")
    });
    assert_eq!(sql_at(&pg, port, "SELECT count(*) FROM t").unwrap(), "1601");
    assert_eq!(
        sql_at(&pg, port, "SELECT count(*) FROM t WHERE note = 'too late'").unwrap(),
        "0"
    );
    drop(server);

    // drill --pitr recovers the newest base backup with all archived WAL in
    // a scratch server (as the postgres user when run as root, as here in CI).
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(archive.args())
        .args(["--json", "drill", "--pitr"])
        .env_remove("CAIRN_PASSWORD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let drilled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(drilled["files_ok"], 1, "{drilled}");
    assert!(
        drilled["pitr"]["databases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "postgres"),
        "{drilled}"
    );
    assert!(
        drilled["pitr"]["wal_files"].as_u64().unwrap() >= 3,
        "{drilled}"
    );
    // (A drill run as root wrote its record as root: the server's user
    // runs the rest.)
    pg.chown_to_owner(&archive.repo);

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

/// A WAL segment of cluster 42 with 1 MiB segments: the long page header
/// PostgreSQL writes, then bytes that differ per segment.
fn synthetic_segment(n: u64) -> (String, Vec<u8>) {
    let size: u64 = 1 << 20;
    let mut bytes = vec![0u8; size as usize];
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    bytes[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    bytes[2..4].copy_from_slice(&2u16.to_le_bytes()); // XLP_LONG_HEADER
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    bytes[8..16].copy_from_slice(&(n * size).to_le_bytes());
    bytes[24..32].copy_from_slice(&42u64.to_le_bytes());
    bytes[32..36].copy_from_slice(&(size as u32).to_le_bytes());
    bytes[36..40].copy_from_slice(&8192u32.to_le_bytes());
    (format!("00000001{:08X}{:08X}", n / 4096, n % 4096), bytes)
}

/// PostgreSQL retries an archive_command until it exits 0, and recycles the
/// segment then. Pushes killed (SIGKILL) at arbitrary points, while spooling
/// or while flushing into the repository, must never lose a segment that a
/// push acknowledged, nor leave the repository invalid.
#[test]
fn killed_pushes_never_lose_an_acknowledged_segment() {
    let sb = crate::common::Sandbox::init();
    let spool = sb.path("spool");
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut kills, mut acknowledged) = (0, Vec::new());
    for n in 1..=24u64 {
        let (name, bytes) = synthetic_segment(n);
        let path = sb.path(&name);
        std::fs::write(&path, &bytes).unwrap();
        // Up to three attempts are killed at a random moment; the fourth
        // runs to the end (PostgreSQL retries until one succeeds).
        for attempt in 0.. {
            let mut child = sb
                .std_cmd([
                    "wal-push",
                    "--sync",
                    "--spool",
                    spool.to_str().unwrap(),
                    path.to_str().unwrap(),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            if attempt < 3 {
                std::thread::sleep(Duration::from_millis(next() % 400));
                if child.try_wait().unwrap().is_none() {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    kills += 1;
                    continue;
                }
            }
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            acknowledged.push((name.clone(), bytes.clone()));
            break;
        }
        // PostgreSQL may now recycle the file.
        std::fs::remove_file(&path).unwrap();
    }
    assert!(kills > 0, "no push was killed: the test proved nothing");
    sb.ok(["check"]);
    // Every acknowledged segment comes back from the repository alone.
    let empty_spool = sb.path("empty-spool");
    for (name, bytes) in &acknowledged {
        let dest = sb.path("fetched");
        sb.ok([
            "wal-fetch",
            name,
            dest.to_str().unwrap(),
            "--prefetch",
            "0",
            "--spool",
            empty_spool.to_str().unwrap(),
        ]);
        assert!(
            std::fs::read(&dest).unwrap() == *bytes,
            "{name} came back different"
        );
    }
    let listed = sb.json(["pitr", "list"]);
    assert_eq!(listed["timelines"][0]["segments"], 24, "{listed}");
    assert_eq!(
        listed["timelines"][0]["gaps"].as_array().unwrap().len(),
        0,
        "{listed}"
    );
}

/// Mistakes get one line and the documented exit code; a repository without
/// WAL or base backups says what to do.
#[test]
fn pitr_mistakes_and_an_empty_archive() {
    let sb = crate::common::Sandbox::init();
    let d = sb.path("data");
    let d = d.to_str().unwrap();
    sb.cmd(["pitr", "restore", "--target", d])
        .code(2)
        .assert_one_error_line("give one recovery target");
    sb.cmd(["pitr", "restore", "--to-time", "yesterday", "--target", d])
        .code(2)
        .assert_one_error_line("is not a time");
    sb.cmd(["pitr", "restore", "--to-lsn", "bogus", "--target", d])
        .code(2)
        .assert_one_error_line("is not an LSN");
    sb.cmd(["pitr", "restore", "latest", "--target", d])
        .code(1)
        .assert_one_error_line("no base backup");
    sb.cmd(["drill", "--pitr"])
        .code(1)
        .assert_one_error_line("no base backup");
    sb.cmd(["health", "--max-wal-lag", "5x"])
        .code(2)
        .assert_one_error_line("--max-wal-lag");
    let out = sb.cmd(["health", "--max-wal-lag", "1h"]).code(1);
    assert!(
        out.dump().contains("no WAL has been archived"),
        "{}",
        out.dump()
    );
    sb.cmd(["wal-push", "/etc/hostname"])
        .code(1)
        .assert_one_error_line("is not a WAL file name");
    let listed = sb.json(["pitr", "list"]);
    assert!(listed["bases"].as_array().unwrap().is_empty());
    assert!(listed["window"].is_null());
    // Never archived: a quiet exit 1, as PostgreSQL's restore_command needs.
    let out = sb
        .cmd([
            "wal-fetch",
            "000000010000000000000001",
            sb.path("x").to_str().unwrap(),
        ])
        .code(1);
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "{}",
        out.dump()
    );
}

/// A spooled file the repository already holds with other content (a spool
/// that lost its log) is set aside, not archived, and does not hold up the
/// segments after it.
#[test]
fn a_conflicting_spooled_segment_is_set_aside_not_in_the_way() {
    let sb = crate::common::Sandbox::init();
    let spool = sb.path("spool");
    let spool_s = spool.to_str().unwrap();
    let push = |name: &str, bytes: &[u8]| {
        let p = sb.path(name);
        std::fs::write(&p, bytes).unwrap();
        sb.cmd([
            "wal-push",
            "--sync",
            "--spool",
            spool_s,
            p.to_str().unwrap(),
        ])
    };
    let (one, bytes) = synthetic_segment(1);
    push(&one, &bytes).ok();
    // The spool forgets what it archived; the same name comes with other bytes.
    std::fs::remove_file(spool.join("archived")).unwrap();
    let mut other = bytes.clone();
    other[5000] ^= 0xff;
    push(&one, &other)
        .code(1)
        .assert_one_error_line("different content");
    let aside: Vec<_> = std::fs::read_dir(spool.join("conflicts"))
        .unwrap()
        .collect();
    assert_eq!(aside.len(), 1);
    // The next segment is archived as usual.
    let (two, bytes2) = synthetic_segment(2);
    push(&two, &bytes2).ok();
    let dest = sb.path("fetched");
    let empty = sb.path("empty-spool");
    sb.ok([
        "wal-fetch",
        &one,
        dest.to_str().unwrap(),
        "--spool",
        empty.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&dest).unwrap() == bytes,
        "the first content stays archived"
    );
    sb.ok([
        "wal-fetch",
        &two,
        dest.to_str().unwrap(),
        "--spool",
        empty.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&dest).unwrap() == bytes2);
    assert!(
        sb.events().iter().any(|e| e["event"] == "wal.conflict"),
        "{:?}",
        sb.events()
    );
}

/// Segments are numbered by the cluster's own segment size: 1 MiB segments
/// across a 4 GiB "log" boundary (names ...00000000/00000FFF then
/// ...00000001/00000000) are one run without a gap, and wal-fetch
/// prefetches across it.
#[test]
fn other_segment_sizes_number_their_segments_right() {
    let sb = crate::common::Sandbox::init();
    let spool = sb.path("spool");
    let mut names = Vec::new();
    for n in 4094..=4097u64 {
        let (name, bytes) = synthetic_segment(n);
        let p = sb.path(&name);
        std::fs::write(&p, bytes).unwrap();
        sb.ok([
            "wal-push",
            "--sync",
            "--spool",
            spool.to_str().unwrap(),
            p.to_str().unwrap(),
        ]);
        names.push(name);
    }
    assert_eq!(names[2], "000000010000000100000000");
    let listed = sb.json(["pitr", "list"]);
    let tl = &listed["timelines"][0];
    assert_eq!(tl["segments"], 4, "{listed}");
    assert_eq!(tl["gaps"].as_array().unwrap().len(), 0, "{listed}");
    assert_eq!(tl["first"], names[0].as_str(), "{listed}");
    assert_eq!(tl["last"], names[3].as_str(), "{listed}");
    // Fetching the first prefetches the next ones, across the boundary.
    let fresh = sb.path("fresh-spool");
    let dest = sb.path("fetched");
    sb.ok([
        "wal-fetch",
        &names[0],
        dest.to_str().unwrap(),
        "--spool",
        fresh.to_str().unwrap(),
    ]);
    for n in &names[1..] {
        assert!(
            fresh.join("prefetch").join(n).is_file(),
            "{n} was not prefetched"
        );
    }
}

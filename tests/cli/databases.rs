//! Databases as sources: PostgreSQL, MariaDB and SQLite dumped into
//! snapshots with their tables' row counts and schema fingerprints, loaded
//! back with `restore-db` and verified, safe restores that roll back.
//! Servers are throwaway ones the tests start (tests/common/dbservers.rs).

use std::path::Path;

use crate::common::dbservers::{Mariadb, Postgres};
use crate::common::Sandbox;

fn record<'a>(snap: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    snap["databases"]
        .as_array()
        .expect("a databases list")
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no record of {name} in {snap}"))
}

fn table_rows(rec: &serde_json::Value, table: &str) -> u64 {
    rec["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == table)
        .unwrap_or_else(|| panic!("no table {table} in {rec}"))["rows"]
        .as_u64()
        .unwrap()
}

#[test]
fn postgres_round_trip_with_files_verified_and_deduplicated() {
    let Some(pg) = Postgres::start() else { return };
    pg.fill("appdb", 3); // 300,000 pgbench accounts
    let s = Sandbox::init();
    let (files, _) = s.small_tree();
    let first = s.backup(["--postgres", &pg.url("appdb"), files.to_str().unwrap()]);
    let snap = s.json(["cat", "snapshot", "latest"]);
    let rec = record(&snap, "appdb");
    assert_eq!(rec["engine"], "postgresql");
    assert_eq!(rec["format"], "pg-custom");
    assert_eq!(table_rows(rec, "public.pgbench_accounts"), 300_000);
    assert_eq!(table_rows(rec, "public.notes"), 5000);
    assert!(
        !snap.to_string().contains(":postgres@"),
        "no password in the snapshot: {snap}"
    );
    assert!(
        rec["server_version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric),
        "{rec}"
    );
    // Roles and tablespaces beside the database (a superuser dumped it).
    assert!(snap["databases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["format"] == "pg-globals"));
    let ls = s.ok(["ls", "latest"]).stdout();
    assert!(ls.contains("/databases/postgresql/127.0.0.1-"), "{ls}");
    assert!(ls.contains(files.to_str().unwrap()), "{ls}");

    // An unchanged database adds under 1% of its size to the repository.
    // (Only the dump's header differs, its creation time: the first chunk is
    // stored anew. pgbench's blank-padded rows make chunks of the maximum
    // size, so that is up to 4 MiB before compression, 40 KiB after.)
    let again = s.backup(["--postgres", &pg.url("appdb"), files.to_str().unwrap()]);
    let read = again["bytes_read"].as_u64().unwrap();
    let added = again["data_added_packed"].as_u64().unwrap();
    assert!(
        added * 100 < read,
        "an unchanged dump added {added} of {read} bytes (first backup added {})",
        first["data_added_packed"]
    );

    // Into a new database on the same server, verified.
    let out = s.json(["restore-db", "latest", "--to", &pg.url("appcopy")]);
    assert_eq!(out["verified"], true, "{out}");
    assert_eq!(out["target_was"], "missing");
    assert_eq!(pg.count("appcopy", "pgbench_accounts"), 300_000);
    assert_eq!(
        pg.sql("appcopy", "SELECT count(*) FROM notes WHERE body IS NULL"),
        pg.sql("appdb", "SELECT count(*) FROM notes WHERE body IS NULL")
    );
    let events = s.events();
    assert!(events.iter().any(|e| e["event"] == "restore_db.completed"));
}

#[test]
fn postgres_failures_save_nothing() {
    let Some(pg) = Postgres::start() else { return };
    pg.fill("appdb", 1);
    let s = Sandbox::init();
    // A login the server refuses.
    let bad = format!("postgresql://postgres:wrong@127.0.0.1:{}/appdb", pg.port);
    let out = s.cmd(["backup", "--postgres", &bad]).code(1);
    assert!(
        out.stderr.contains("password authentication failed"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("wrong"), "no password in errors");
    // A database that does not exist.
    let out = s.cmd(["backup", "--postgres", &pg.url("nosuchdb")]).code(1);
    assert!(out.stderr.contains("nosuchdb"), "{}", out.stderr);
    // pg_dump killed midway: the truncated dump is not saved.
    let bin = s.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("pg_dump");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n{}/pg_dump \"$@\" | head -c 200000\nkill -9 $$\n",
            pg.bindir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = s
        .cmd(["backup", "--postgres", &pg.url("appdb")])
        .env("PATH", path)
        .code(1);
    assert!(out.stderr.contains("pg_dump"), "{}", out.stderr);
    assert_eq!(s.snapshot_count(), 0, "nothing saved");
    assert!(s.events().iter().any(|e| e["event"] == "backup.failed"));
    // Bad URLs are usage errors.
    s.cmd(["backup", "--postgres", "http://x/y"]).code(2);
    s.cmd(["backup", "--all-databases", "/etc"]).code(2);
}

#[test]
fn postgres_safe_restore_verifies_rolls_back_and_keeps_a_pre_restore_snapshot() {
    let Some(pg) = Postgres::start() else { return };
    pg.fill("appdb", 1);
    let s = Sandbox::init();
    s.backup(["--postgres", &pg.url("appdb"), "--tag", "nightly"]);
    // The live database moves on: rows deleted, a table added.
    pg.sql("appdb", "DELETE FROM pgbench_accounts WHERE aid > 50000; CREATE TABLE later(x int); INSERT INTO later VALUES (1)");
    let plan = s.json([
        "restore-db",
        "latest",
        "--to",
        &pg.url("appdb"),
        "--dry-run",
    ]);
    assert_eq!(plan["target_was"], "non-empty");
    assert_eq!(plan["safe"], true, "safe by default on a non-empty target");
    assert!(
        plan["differences_before"]
            .to_string()
            .contains("pgbench_accounts"),
        "{plan}"
    );
    assert_eq!(
        pg.count("appdb", "pgbench_accounts"),
        50_000,
        "a dry run changes nothing"
    );

    let out = s.json(["restore-db", "latest", "--to", &pg.url("appdb")]);
    assert_eq!(out["verified"], true, "{out}");
    assert_eq!(pg.count("appdb", "pgbench_accounts"), 100_000);
    assert_eq!(out["left_in_place"][0], "public.later");
    let pre = out["pre_restore_snapshot"].as_str().unwrap().to_string();
    let pre_snap = s.json(["cat", "snapshot", &pre]);
    assert!(pre_snap["tags"].to_string().contains("pre-restore"));
    assert_eq!(
        table_rows(record(&pre_snap, "appdb"), "public.pgbench_accounts"),
        50_000
    );
    // `latest` is still the nightly backup, not the pre-restore copy.
    let again = s.json([
        "restore-db",
        "latest",
        "--to",
        &pg.url("appdb"),
        "--dry-run",
    ]);
    assert_ne!(again["snapshot_id"].as_str().unwrap(), pre);

    // A restore that fails halfway (the dump's owner role is missing on the
    // target side: ALTER ... OWNER TO fails): the old rows are intact.
    pg.sql("postgres", "CREATE ROLE appowner LOGIN PASSWORD 'x'");
    pg.sql("postgres", "CREATE DATABASE owned OWNER appowner");
    pg.sql(
        "owned",
        "SET ROLE appowner; CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 10)",
    );
    s.backup(["--postgres", &pg.url("owned")]);
    pg.sql("owned", "DELETE FROM t WHERE x > 3");
    pg.sql("owned", "REASSIGN OWNED BY appowner TO postgres");
    pg.sql("postgres", "ALTER DATABASE owned OWNER TO postgres");
    pg.sql("owned", "DROP OWNED BY appowner");
    pg.sql("postgres", "DROP ROLE appowner");
    let out = s
        .cmd([
            "restore-db",
            "latest",
            "--database",
            "owned",
            "--to",
            &pg.url("owned"),
        ])
        .code(1);
    assert!(out.stderr.contains("appowner"), "{}", out.stderr);
    assert_eq!(pg.count("owned", "t"), 3, "the old rows are intact");
    assert!(s.events().iter().any(|e| e["event"] == "restore_db.failed"));
    // Without the owners, it loads.
    let out = s.json([
        "restore-db",
        "latest",
        "--database",
        "owned",
        "--to",
        &pg.url("owned"),
        "--no-owner",
    ]);
    assert_eq!(out["verified"], true, "{out}");
    assert_eq!(pg.count("owned", "t"), 10);
}

#[test]
fn postgres_verification_catches_a_dropped_table() {
    let Some(pg) = Postgres::start() else { return };
    pg.fill("appdb", 1);
    let s = Sandbox::init();
    s.backup(["--postgres", &pg.url("appdb")]);
    s.json(["restore-db", "latest", "--to", &pg.url("copy1")]);
    pg.sql("copy1", "DROP TABLE notes");
    // The library's inspection is what restore-db verifies with: a dropped
    // table is a difference.
    let target = cairn::database::Location::parse(&pg.url("copy1")).unwrap();
    let found = cairn::database::inspect(&target, "copy1").unwrap();
    let snap = s.json(["cat", "snapshot", "latest"]);
    let expected: Vec<cairn::format::database::TableRecord> =
        serde_json::from_value(record(&snap, "appdb")["tables"].clone()).unwrap();
    let diffs = cairn::format::database::differences(&expected, &found);
    assert_eq!(
        diffs,
        [cairn::format::database::Difference::MissingTable {
            table: "public.notes".into()
        }]
    );
}

#[test]
fn postgres_all_databases() {
    let Some(pg) = Postgres::start() else { return };
    pg.fill("one", 1);
    pg.sql("postgres", "CREATE DATABASE two");
    pg.sql(
        "two",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2)",
    );
    let s = Sandbox::init();
    s.backup([
        "--postgres",
        &format!("postgresql://postgres:postgres@127.0.0.1:{}", pg.port),
        "--all-databases",
    ]);
    let snap = s.json(["cat", "snapshot", "latest"]);
    for db in ["one", "two", "postgres"] {
        record(&snap, db);
    }
    // Several databases: restore-db asks which.
    let out = s
        .cmd(["restore-db", "latest", "--to", &pg.url("x")])
        .code(1);
    assert!(out.stderr.contains("--database"), "{}", out.stderr);
    let out = s.json([
        "restore-db",
        "latest",
        "--database",
        "two",
        "--to",
        &pg.url("two_copy"),
    ]);
    assert_eq!(out["verified"], true);
    assert_eq!(pg.count("two_copy", "t"), 2);
}

fn make_sqlite(path: &Path, rows: u64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER);
         CREATE INDEX items_name ON items(name);
         CREATE TABLE log(id INTEGER PRIMARY KEY, at TEXT);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute(
            "INSERT INTO items(name, qty) VALUES (?1, ?2)",
            rusqlite::params![format!("item {i}"), i as i64],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn sqlite_written_during_the_backup_restores_consistent() {
    let s = Sandbox::init();
    let db = s.path("app.db");
    make_sqlite(&db, 200_000);
    // Another process writes throughout: each transaction adds one row to
    // each table, so a consistent copy has as many `log` rows as items
    // beyond the first 200,000.
    let writer_db = db.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_w = stop.clone();
    let writer = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&writer_db).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        let mut n = 0u64;
        while !stop_w.load(std::sync::atomic::Ordering::Relaxed) {
            let tx = c.unchecked_transaction().unwrap();
            tx.execute("INSERT INTO items(name, qty) VALUES ('late', 0)", [])
                .unwrap();
            tx.execute("INSERT INTO log(at) VALUES (datetime('now'))", [])
                .unwrap();
            tx.commit().unwrap();
            n += 1;
        }
        n
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    s.backup(["--sqlite", db.to_str().unwrap()]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0);
    let snap = s.json(["cat", "snapshot", "latest"]);
    let rec = record(&snap, "app.db");
    let (items, log) = (table_rows(rec, "items"), table_rows(rec, "log"));
    assert_eq!(items - 200_000, log, "the copy is one moment: {rec}");

    let target = s.path("restored/app.db");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let out = s.json(["restore-db", "latest", "--to", target.to_str().unwrap()]);
    assert_eq!(out["verified"], true, "{out}");
    let c = rusqlite::Connection::open(&target).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n as u64, items);
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn sqlite_safe_restore_over_a_live_file_and_its_errors() {
    let s = Sandbox::init();
    let db = s.path("app.db");
    make_sqlite(&db, 1000);
    s.backup(["--sqlite", db.to_str().unwrap()]);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute("DELETE FROM items WHERE id > 10", []).unwrap();
    drop(c);
    let out = s.json(["restore-db", "latest", "--to", db.to_str().unwrap()]);
    assert_eq!(out["verified"], true, "{out}");
    assert!(out["pre_restore_snapshot"].is_string(), "{out}");
    let c = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1000);
    // Health judges the backups, not the copy the restore took of its
    // target (same path, newer): the group's latest is the backup.
    let health = s.cmd(["--json", "health"]).ok().json();
    let pre = out["pre_restore_snapshot"].as_str().unwrap();
    for g in health["groups"].as_array().unwrap() {
        assert!(
            !pre.starts_with(g["latest_snapshot"].as_str().unwrap()),
            "{health}"
        );
        assert_eq!(g["snapshots"], 1, "{health}");
    }
    // --no-safety takes no pre-restore snapshot.
    let before = s.snapshot_count();
    s.json([
        "restore-db",
        "latest",
        "--to",
        db.to_str().unwrap(),
        "--no-safety",
    ]);
    assert_eq!(s.snapshot_count(), before);
    // Wrong engine, missing file, unknown scheme.
    let out = s
        .cmd([
            "restore-db",
            "latest",
            "--to",
            "postgresql://u@127.0.0.1:1/x",
        ])
        .code(1);
    assert!(out.stderr.contains("sqlite dump"), "{}", out.stderr);
    let out = s
        .cmd(["backup", "--sqlite", s.path("nope.db").to_str().unwrap()])
        .code(1);
    assert!(out.stderr.contains("no such file"), "{}", out.stderr);
    s.cmd(["restore-db", "latest", "--to", "oracle://x/y"])
        .code(2);
    s.cmd(["backup", "--sqlite", db.to_str().unwrap(), "--stdin"])
        .code(2);
}

#[test]
fn mariadb_round_trip_counts_rows_from_the_dump_and_rolls_back() {
    let Some(m) = Mariadb::start() else { return };
    m.fill("shop", 200_000);
    let s = Sandbox::init();
    s.backup(["--mysql", &m.url("shop")]);
    let snap = s.json(["cat", "snapshot", "latest"]);
    let rec = record(&snap, "shop");
    assert_eq!(rec["engine"], "mysql");
    assert_eq!(table_rows(rec, "orders"), 200_000);
    assert_eq!(table_rows(rec, "customers"), 2000);
    assert_eq!(table_rows(rec, "empty_one"), 0);

    let out = s.json(["restore-db", "latest", "--to", &m.url("shop_copy")]);
    assert_eq!(out["verified"], true, "{out}");
    assert_eq!(m.count("shop_copy", "orders"), 200_000);
    assert_eq!(
        m.sql("shop_copy", "SELECT note FROM customers WHERE id = 3"),
        m.sql("shop", "SELECT note FROM customers WHERE id = 3")
    );

    // A safe restore whose load fails halfway: MariaDB cannot undo the
    // tables already replaced, so cairn loads the pre-restore snapshot back.
    m.sql("shop", "DELETE FROM orders WHERE id > 1000");
    let bin = s.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for client in ["mariadb", "mysql"] {
        let wrapper = bin.join(client);
        // Loads the first 60% of a dump, then fails, only for the restore
        // into `shop` (the rollback's own load runs the real client).
        std::fs::write(
            &wrapper,
            "#!/bin/bash\ncase \" $* \" in *\" --execute \"*) exec /usr/bin/mariadb \"$@\";; esac\n\
             if [ -e \"$FAIL_ONCE\" ]; then rm -f \"$FAIL_ONCE\"; \
             head -c 4000000 | /usr/bin/mariadb \"$@\"; exit 1; fi\nexec /usr/bin/mariadb \"$@\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let flag = s.path("fail-once");
    std::fs::write(&flag, "").unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = s
        .cmd(["--json", "restore-db", "latest", "--to", &m.url("shop")])
        .env("PATH", &path)
        .env("FAIL_ONCE", &flag)
        .code(1);
    assert!(out.stderr.contains("rolled back"), "{}", out.stderr);
    assert_eq!(m.count("shop", "orders"), 1000, "the old rows are back");
    assert!(s
        .events()
        .iter()
        .any(|e| e["event"] == "restore.rolled_back"));
}

#[test]
fn database_drills_load_into_scratch_and_health_counts_them() {
    let Some(pg) = Postgres::start() else { return };
    pg.fill("appdb", 1);
    let s = Sandbox::init();
    let db = s.path("app.db");
    make_sqlite(&db, 500);
    s.backup([
        "--postgres",
        &pg.url("appdb"),
        "--sqlite",
        db.to_str().unwrap(),
    ]);
    // Into a scratch database on the server it came from (the URL in the
    // record has no password: PGPASSWORD gives it), dropped afterwards.
    let out = s
        .cmd(["--json", "drill", "--databases"])
        .env("PGPASSWORD", "postgres")
        .ok()
        .json();
    assert_eq!(out["databases"], true);
    assert_eq!(out["files"], 2, "{out}");
    assert_eq!(out["files_ok"], 2, "{out}");
    let left = pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'cairn_drill_%'",
    );
    assert_eq!(left, "0", "scratch databases are dropped");
    let health = s.cmd(["--json", "health"]).ok().json();
    assert_eq!(health["database_drill"]["result"], "ok", "{health}");

    // A scratch server that refuses the login: the drill fails, and health
    // says so even after a later file drill succeeded.
    let refused = format!("postgresql://postgres:wrong@127.0.0.1:{}/x", pg.port);
    let out = s
        .cmd(["drill", "--databases", "--scratch-postgres", &refused])
        .code(1);
    assert!(
        out.stderr.contains("password authentication failed"),
        "{}",
        out.stderr
    );
    s.ok(["drill"]);
    let out = s.cmd(["health"]).code(1);
    assert!(out.stderr.contains("database drill"), "{}", out.stderr);
    // A scratch URL of the wrong engine is a usage error.
    s.cmd([
        "drill",
        "--databases",
        "--scratch-postgres",
        "mysql://x@y/z",
    ])
    .code(2);
}

/// `cairn.toml` with the sandbox's repository as `main`, plus `jobs`.
fn config_with(s: &Sandbox, jobs: &str) -> std::path::PathBuf {
    let p = s.path("cairn.toml");
    std::fs::write(
        &p,
        format!(
            "[repositories.main]\nurl = \"{}\"\n\n{jobs}",
            s.repo.display()
        ),
    )
    .unwrap();
    p
}

fn run_job(s: &Sandbox, cfg: &Path, job: &str) -> crate::common::Out {
    s.bare(["--config", cfg.to_str().unwrap(), "--event-log"])
        .arg(&s.events)
        .arg("run")
        .arg(job)
        .run()
}

#[test]
fn jobs_back_up_databases_with_passwords_from_files_and_failed_dumps_fail_them() {
    let Some(pg) = Postgres::start() else { return };
    pg.fill("appdb", 1);
    let s = Sandbox::init();
    let db = s.path("app.db");
    make_sqlite(&db, 100);
    let pass = s.path("pg.pass");
    std::fs::write(&pass, "postgres\n").unwrap();
    let cfg = config_with(
        &s,
        &format!(
            "[jobs.app]\nrepository = \"main\"\npaths = [\"{files}\"]\n\n\
             [[jobs.app.databases]]\npostgres = \"{url}\"\ndatabase = \"appdb\"\npassword = \"file:{pass}\"\n\
             dump-options = [\"--exclude-table-data=notes\"]\n\n\
             [[jobs.app.databases]]\nsqlite = \"{db}\"\n\n\
             [jobs.broken]\nrepository = \"main\"\n\n\
             [[jobs.broken.databases]]\npostgres = \"{url}\"\ndatabase = \"nosuchdb\"\npassword = \"file:{pass}\"\n\n\
             [jobs.pipeline]\nrepository = \"main\"\ndump-command = \"pg_dump '{full}nosuchdb' | gzip\"\ndump-name = \"db.sql.gz\"\n",
            files = s.path("").display(),
            url = pg.url_nopw("postgres"),
            pass = pass.display(),
            db = db.display(),
            full = pg.url("").trim_end_matches('/').to_string() + "/",
        ),
    );
    let out = s
        .bare(["--config", cfg.to_str().unwrap(), "config", "check"])
        .run();
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let shown = s
        .bare([
            "--config",
            cfg.to_str().unwrap(),
            "config",
            "show",
            "--json",
        ])
        .run();
    assert!(!shown.stdout().contains("postgres\\n"), "no password shown");
    let out = run_job(&s, &cfg, "app");
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let snap = s.json(["cat", "snapshot", "latest"]);
    assert_eq!(
        table_rows(record(&snap, "appdb"), "public.pgbench_accounts"),
        100_000
    );
    record(&snap, "app.db");
    // The dump option reached pg_dump: the notes table's rows were left out,
    // so its count (taken in the database) differs from what the dump holds;
    // a restore then reports the difference.
    let out = s
        .cmd([
            "restore-db",
            "latest",
            "--database",
            "appdb",
            "--to",
            &pg.url("fromjob"),
        ])
        .code(1);
    assert!(out.stderr.contains("notes"), "{}", out.stderr);

    // A database that does not exist: the job fails, nothing saved.
    let before = s.snapshot_count();
    let out = run_job(&s, &cfg, "broken");
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert_eq!(s.snapshot_count(), before);
    // The failing pg_dump of a shell pipeline fails the job too (pipefail).
    let out = run_job(&s, &cfg, "pipeline");
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert_eq!(s.snapshot_count(), before);
    // `pg_dump nosuchdb | cairn backup --stdin`: cairn cannot see pg_dump
    // fail, but the empty input is not a success (exit 3, a warning).
    let out = s
        .std_cmd(["backup", "--stdin", "--stdin-filename", "db.sql"])
        .stdin(
            std::process::Command::new("pg_dump")
                .arg(pg.url("nosuchdb"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
                .stdout
                .unwrap(),
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

#[test]
fn database_config_mistakes_are_named() {
    let s = Sandbox::init();
    let cfg = config_with(
        &s,
        "[jobs.a]\nrepository = \"main\"\n\n[[jobs.a.databases]]\npostgres = \"postgresql://u@h/db\"\npassword = \"hunter2\"\n\n\
         [jobs.b]\nrepository = \"main\"\n\n[[jobs.b.databases]]\nsqlite = \"/x.db\"\nmysql = \"mysql://u@h/db\"\n\n\
         [jobs.c]\nrepository = \"main\"\n\n[[jobs.c.databases]]\npostgres = \"mysql://u@h/db\"\n",
    );
    let out = s
        .bare(["--config", cfg.to_str().unwrap(), "config", "check"])
        .run();
    assert_eq!(out.code, Some(2), "{}", out.dump());
    for needle in [
        "must not be written in the config file",
        "one of postgres",
        "not a postgresql location",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    assert!(!out.stderr.contains("hunter2"));
}

#[test]
fn postgres_parallel_restore_and_pre_restore_retention() {
    let Some(pg) = Postgres::start() else { return };
    pg.fill("appdb", 1);
    let s = Sandbox::init();
    s.backup(["--postgres", &pg.url("appdb")]);
    let out = s.json([
        "restore-db",
        "latest",
        "--to",
        &pg.url("par"),
        "--jobs",
        "2",
    ]);
    assert_eq!(out["verified"], true, "{out}");
    assert_eq!(pg.count("par", "pgbench_accounts"), 100_000);
    // Three safe restores over the live database, keeping two pre-restore
    // snapshots: the oldest is forgotten after the third.
    for _ in 0..3 {
        pg.sql(
            "appdb",
            "DELETE FROM notes WHERE id IN (SELECT id FROM notes LIMIT 1)",
        );
        s.json([
            "restore-db",
            "latest",
            "--to",
            &pg.url("appdb"),
            "--keep-pre-restore",
            "2",
        ]);
    }
    assert_eq!(s.snapshots(&["--tag", "pre-restore"]).len(), 2);
    s.cmd(["restore-db", "latest", "--to", "/tmp/x.db", "--jobs", "2"])
        .code(2);
}

#[test]
fn rewriting_a_dump_out_drops_its_record() {
    let s = Sandbox::init();
    let db = s.path("app.db");
    make_sqlite(&db, 10);
    let (files, _) = s.small_tree();
    s.backup(["--sqlite", db.to_str().unwrap(), files.to_str().unwrap()]);
    s.ok(["rewrite", "latest", "--exclude", "/databases/sqlite/*"]);
    let snaps = s.snapshots(&[]);
    let newest = snaps
        .iter()
        .find(|x| !x["original"].is_null())
        .expect("a rewritten snapshot");
    let snap = s.json(["cat", "snapshot", newest["id"].as_str().unwrap()]);
    assert!(snap.get("databases").is_none(), "{snap}");
    s.ok(["rewrite", "latest", "--exclude", "*.nothing"]);
}

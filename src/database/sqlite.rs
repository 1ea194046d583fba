//! SQLite through SQLite itself (rusqlite, bundled): a live database is
//! copied with the online backup API, never by reading its file, which in WAL
//! mode misses commits still in `-wal` and in any mode can catch a write
//! halfway. The copy is taken in one step, under one read lock, so writers
//! cannot restart it; it is page for page, so consecutive copies dedup.
//!
//! The backup API writes into a database, not a stream: the copy goes to a
//! private temporary folder and is streamed from there, then deleted. A
//! restore writes a temporary file beside the target, verifies it, and only
//! then renames it over the target.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{db_error, quote_ident, Dump, DumpStarter, TargetState};
use crate::error::{Error, Result};
use crate::format::database::{
    differences, fingerprint, path_component, DatabaseRecord, DumpFormat, Engine, TableRecord,
};

/// How long a copy waits for a writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

fn what(path: &Path) -> String {
    format!("SQLite database {}", path.display())
}

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    db_error(what(path), e)
}

fn open_read_only(path: &Path) -> Result<Connection> {
    if !path.is_file() {
        return Err(db_error(what(path), "no such file"));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_error(path, e))?;
    Ok(conn)
}

/// The tables of a database file, with row counts and fingerprints (the
/// table's `CREATE` statement, then its indexes' and triggers').
pub fn inspect_file(path: &Path) -> Result<Vec<TableRecord>> {
    let conn = open_read_only(path)?;
    inspect(&conn).map_err(|e| sql_error(path, e))
}

fn inspect(conn: &Connection) -> rusqlite::Result<Vec<TableRecord>> {
    // One read transaction: counts and definitions from one moment.
    conn.execute_batch("BEGIN")?;
    let tables: Vec<(String, String)> = conn
        .prepare(
            "SELECT name, coalesce(sql, '') FROM sqlite_schema \
             WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(tables.len());
    for (name, sql) in tables {
        let mut lines = vec![sql];
        let mut stmt = conn.prepare(
            "SELECT type || ' ' || name || ' ' || sql FROM sqlite_schema \
             WHERE tbl_name = ?1 AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY name",
        )?;
        for l in stmt.query_map([&name], |r| r.get::<_, String>(0))? {
            lines.push(l?);
        }
        let rows: i64 = conn.query_row(
            &format!("SELECT count(*) FROM {}", quote_ident(&name)),
            [],
            |r| r.get(0),
        )?;
        out.push(TableRecord {
            name,
            rows: rows as u64,
            schema: fingerprint(lines.iter().map(String::as_str)),
        });
    }
    conn.execute_batch("COMMIT")?;
    Ok(out)
}

/// Copies the live database into `dest` with the online backup API, in one
/// step (one read lock), retrying while a writer holds the lock.
fn backup_into(src_path: &Path, dest: &Path) -> Result<()> {
    let src = open_read_only(src_path)?;
    let mut dst = Connection::open(dest).map_err(|e| sql_error(dest, e))?;
    let backup = Backup::new(&src, &mut dst).map_err(|e| sql_error(src_path, e))?;
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match backup.step(-1).map_err(|e| sql_error(src_path, e))? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked => {
                if std::time::Instant::now() > deadline {
                    return Err(db_error(
                        what(src_path),
                        "stayed locked by a writer for 60 s; try again when it is quieter",
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

struct SqliteDump {
    source: PathBuf,
    /// Holds the copy; removed when the dump is dropped.
    _dir: tempfile::TempDir,
    copy: Option<std::fs::File>,
    tables: Vec<TableRecord>,
}

pub fn dump_starter(path: PathBuf) -> DumpStarter {
    Box::new(move || start(path))
}

fn start(source: PathBuf) -> Result<Box<dyn Dump>> {
    let dir = tempfile::Builder::new()
        .prefix("cairn-sqlite-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let copy_path = dir.path().join("copy.db");
    backup_into(&source, &copy_path)?;
    let tables = inspect_file(&copy_path)?;
    let copy = std::fs::File::open(&copy_path).map_err(|e| Error::io(&copy_path, e))?;
    Ok(Box::new(SqliteDump {
        source,
        _dir: dir,
        copy: Some(copy),
        tables,
    }))
}

impl Dump for SqliteDump {
    fn path(&self) -> Vec<String> {
        let name = self
            .source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec!["sqlite".into(), path_component(&name)]
    }
    fn take_reader(&mut self) -> Box<dyn std::io::Read + Send> {
        Box::new(self.copy.take().expect("a dump is read once"))
    }
    fn finish(self: Box<Self>) -> Result<DatabaseRecord> {
        Ok(DatabaseRecord {
            engine: Engine::Sqlite,
            format: DumpFormat::SqliteFile,
            server_version: rusqlite::version().to_string(),
            source: format!("sqlite:{}", self.source.display()),
            name: self
                .source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: String::new(),
            tables: self.tables,
            base: None,
        })
    }
}

pub fn target_state(path: &Path) -> Result<TargetState> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TargetState::Missing),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.len() == 0 => Ok(TargetState::Empty),
        Ok(_) => Ok(TargetState::of(inspect_file(path)?)),
    }
}

/// Writes the database beside the target, checks it (SQLite's own
/// `quick_check`, then tables, counts and definitions against the record)
/// and renames it over the target only if it matches: a failed restore
/// leaves the target untouched. Returns the tables found.
pub fn load(
    record: &DatabaseRecord,
    target: &Path,
    write_dump: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<Vec<TableRecord>> {
    let dir = target.parent().unwrap_or(Path::new("/"));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.cairn-restore-"))
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    write_dump(tmp.as_file_mut())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    let check: String = open_read_only(tmp.path())?
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| sql_error(target, e))?;
    if check != "ok" {
        return Err(db_error(
            what(target),
            format!("the restored file fails SQLite's check: {check}"),
        ));
    }
    let tables = inspect_file(tmp.path())?;
    if !differences(&record.tables, &tables).is_empty() {
        // The caller reports the differences; the target stays as it was.
        return Ok(tables);
    }
    let mode = std::fs::metadata(target)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(tmp.path(), e))?;
    // A WAL or journal of the old database would be replayed into the new one.
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = PathBuf::from(format!("{}{suffix}", target.display()));
        match std::fs::remove_file(&side) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(side, e)),
            _ => {}
        }
    }
    tmp.persist(target)
        .map_err(|e| Error::io(target, e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(path: &Path, rows: i64) {
        let c = Connection::open(path).unwrap();
        c.execute_batch(
            "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             CREATE INDEX items_name ON items(name);",
        )
        .unwrap();
        let tx = c.unchecked_transaction().unwrap();
        for i in 0..rows {
            tx.execute("INSERT INTO items(name) VALUES (?1)", [format!("item {i}")])
                .unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn a_backup_copy_has_the_same_tables() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("app.db");
        make(&src, 1000);
        let copy = d.path().join("copy.db");
        backup_into(&src, &copy).unwrap();
        let (a, b) = (inspect_file(&src).unwrap(), inspect_file(&copy).unwrap());
        assert_eq!(a, b);
        assert_eq!(a[0].rows, 1000);
        assert_eq!(a[0].name, "items");
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let e = inspect_file(Path::new("/nonexistent/x.db"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
    }
}

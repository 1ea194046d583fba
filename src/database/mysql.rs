//! MariaDB and MySQL: `mariadb-dump` (or `mysqldump`) with
//! `--single-transaction --routines --triggers --events`, one database a
//! dump, without `CREATE DATABASE`/`USE` so it loads under any name; loads
//! with the `mariadb` (or `mysql`) client.
//!
//! MySQL cannot share a transaction's snapshot with a second session, so
//! row counts are taken from the dump itself: the stream is scanned as it
//! passes into the snapshot and each `INSERT` tuple counted, exact for the
//! dump's own snapshot at no extra table scan. Table definitions come from
//! `information_schema` just before the dump (a dump with
//! `--single-transaction` must not run beside DDL anyway).
//!
//! The password reaches the tools as `MYSQL_PWD`, never on their command line.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};

use super::process::{run_load, run_output, ChildDump};
use super::{db_error, Dump, DumpStarter, LoadOptions};
use crate::error::{Error, Result};
use crate::format::database::{
    fingerprint, path_component, DatabaseRecord, DumpFormat, Engine, TableRecord,
};

/// A MariaDB/MySQL server and database, as a URL gives them.
#[derive(Clone, PartialEq, Eq)]
pub struct MyLocation {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub dbname: Option<String>,
    /// A unix socket (`?socket=/run/mysqld/mysqld.sock`).
    pub socket: Option<String>,
}

impl std::fmt::Debug for MyLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The first of these programs on PATH.
fn program(candidates: &[&'static str]) -> &'static str {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for c in candidates {
        if std::env::split_paths(&path).any(|d| d.join(c).is_file()) {
            return c;
        }
    }
    candidates[0]
}

/// A string as an SQL literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn quote_name(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

impl MyLocation {
    pub fn parse(s: &str) -> Result<MyLocation> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "not a MySQL URL ({why}); give mysql://USER@HOST:PORT/DATABASE"
            ))
        };
        let (url, no_host) = super::parse_url(s).map_err(|e| bad(&e.to_string()))?;
        let mut loc = MyLocation {
            host: url
                .host_str()
                .filter(|h| !h.is_empty() && !no_host)
                .map(decode)
                .unwrap_or_else(|| "localhost".into()),
            port: url.port().unwrap_or(3306),
            user: Some(decode(url.username()))
                .filter(|u| !u.is_empty())
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "root".into()),
            password: url
                .password()
                .map(decode)
                .or_else(|| std::env::var("MYSQL_PWD").ok()),
            dbname: Some(decode(url.path().trim_start_matches('/'))).filter(|d| !d.is_empty()),
            socket: None,
        };
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "socket" => loc.socket = Some(v.into_owned()),
                other => return Err(bad(&format!("unknown parameter '{other}'"))),
            }
        }
        Ok(loc)
    }

    pub fn redacted(&self) -> String {
        let db = self.dbname.as_deref().unwrap_or("");
        match &self.socket {
            Some(s) => format!("mysql://{}@/{db}?socket={s}", self.user),
            None => format!("mysql://{}@{}:{}/{db}", self.user, self.host, self.port),
        }
    }

    fn label(&self) -> String {
        match self.port {
            3306 => path_component(&self.host),
            p => path_component(&format!("{}-{p}", self.host)),
        }
    }

    fn what(&self) -> String {
        format!("MySQL at {}", self.redacted())
    }

    pub fn with_db(&self, db: &str) -> MyLocation {
        MyLocation {
            dbname: Some(db.to_string()),
            ..self.clone()
        }
    }

    /// A client tool pointed at this server.
    fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        // Option files of the machine's own server must not redirect us.
        cmd.arg("--no-defaults");
        cmd.arg(format!("--user={}", self.user));
        match &self.socket {
            Some(s) => {
                cmd.arg(format!("--socket={s}"));
            }
            None => {
                cmd.args([
                    format!("--host={}", self.host),
                    format!("--port={}", self.port),
                    "--protocol=TCP".into(),
                ]);
            }
        }
        cmd.env_remove("MYSQL_PWD");
        if let Some(p) = &self.password {
            cmd.env("MYSQL_PWD", p);
        }
        cmd
    }

    fn client(&self) -> Command {
        self.tool(program(&["mariadb", "mysql"]))
    }

    /// Runs SQL in `db` (or none); returns rows of tab-separated fields.
    fn query(&self, db: Option<&str>, sql: &str) -> Result<Vec<Vec<String>>> {
        let mut cmd = self.client();
        cmd.args(["--batch", "--skip-column-names", "--raw"]);
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        cmd.arg("--execute").arg(sql);
        let out = run_output(&self.what(), &mut cmd)?;
        Ok(out
            .lines()
            .map(|l| l.split('\t').map(String::from).collect())
            .collect())
    }
}

/// Tables with their definition fingerprints (no row counts yet).
fn definitions(loc: &MyLocation, db: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let rows = loc.query(
        Some(db),
        "SELECT 't', TABLE_NAME, '' FROM information_schema.TABLES \
           WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'; \
         SELECT 'c', TABLE_NAME, CONCAT('column ', COLUMN_NAME, ' ', COLUMN_TYPE, ' null=', IS_NULLABLE, \
                ' default=', IFNULL(COLUMN_DEFAULT, 'NULL'), ' ', EXTRA) \
           FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
           ORDER BY TABLE_NAME, ORDINAL_POSITION; \
         SELECT 'i', TABLE_NAME, CONCAT('index ', INDEX_NAME, ' ', SEQ_IN_INDEX, ' ', COLUMN_NAME, \
                ' unique=', 1 - NON_UNIQUE) \
           FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
           ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
    )?;
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &rows {
        if r.len() == 3 && r[0] == "t" {
            tables.insert(r[1].clone(), Vec::new());
        }
    }
    for r in rows {
        if r.len() == 3 && r[0] != "t" {
            if let Some(lines) = tables.get_mut(&r[1]) {
                lines.push(r[2].clone());
            }
        }
    }
    Ok(tables)
}

fn records(
    defs: BTreeMap<String, Vec<String>>,
    counts: &BTreeMap<String, u64>,
) -> Vec<TableRecord> {
    defs.into_iter()
        .map(|(name, lines)| TableRecord {
            rows: counts.get(&name).copied().unwrap_or(0),
            schema: fingerprint(lines.iter().map(String::as_str)),
            name,
        })
        .collect()
}

pub fn inspect_database(loc: &MyLocation, db: &str) -> Result<Vec<TableRecord>> {
    let defs = definitions(loc, db)?;
    let mut counts = BTreeMap::new();
    if !defs.is_empty() {
        let sql = defs
            .keys()
            .map(|t| format!("SELECT {}, COUNT(*) FROM {}", literal(t), quote_name(t)))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        for r in loc.query(Some(db), &sql)? {
            if let [name, n] = &r[..] {
                counts.insert(name.clone(), n.parse().unwrap_or(0));
            }
        }
    }
    Ok(records(defs, &counts))
}

pub fn dumps(loc: &MyLocation, all: bool, options: &[String]) -> Result<Vec<DumpStarter>> {
    let databases: Vec<String> = match (&loc.dbname, all) {
        (_, true) => loc
            .query(None, "SHOW DATABASES")?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .filter(|d| {
                !["information_schema", "performance_schema", "mysql", "sys"].contains(&d.as_str())
            })
            .collect(),
        (Some(db), false) => vec![db.clone()],
        (None, false) => {
            return Err(Error::InvalidArgument(format!(
                "{} names no database: add /DATABASE to the URL, or give --all-databases",
                loc.redacted()
            )))
        }
    };
    let version = loc
        .query(None, "SELECT VERSION()")?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .unwrap_or_default();
    Ok(databases
        .into_iter()
        .map(|db| {
            let (loc, version, options) = (loc.with_db(&db), version.clone(), options.to_vec());
            Box::new(move || start(loc, db, version, options)) as DumpStarter
        })
        .collect())
}

struct MysqlDump {
    loc: MyLocation,
    db: String,
    version: String,
    child: ChildDump,
    defs: BTreeMap<String, Vec<String>>,
    counter: Arc<Mutex<InsertCounter>>,
}

fn start(
    loc: MyLocation,
    db: String,
    version: String,
    options: Vec<String>,
) -> Result<Box<dyn Dump>> {
    let defs = definitions(&loc, &db)?;
    let mut cmd = loc.tool(program(&["mariadb-dump", "mysqldump"]));
    cmd.args([
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--skip-dump-date",
        "--hex-blob",
    ])
    .args(&options)
    .arg(&db);
    let child = ChildDump::start(&loc.what(), &mut cmd)?;
    Ok(Box::new(MysqlDump {
        loc,
        db,
        version,
        child,
        defs,
        counter: Arc::new(Mutex::new(InsertCounter::default())),
    }))
}

/// A reader that counts INSERT tuples in what passes through it.
struct Counting<R> {
    inner: R,
    counter: Arc<Mutex<InsertCounter>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.lock().unwrap().feed(&buf[..n]);
        Ok(n)
    }
}

impl Dump for MysqlDump {
    fn path(&self) -> Vec<String> {
        vec![
            "mysql".into(),
            self.loc.label(),
            format!("{}.sql", path_component(&self.db)),
        ]
    }
    fn take_reader(&mut self) -> Box<dyn Read + Send> {
        Box::new(Counting {
            inner: self.child.take_stdout(),
            counter: self.counter.clone(),
        })
    }
    fn finish(self: Box<Self>) -> Result<DatabaseRecord> {
        let MysqlDump {
            loc,
            db,
            version,
            child,
            defs,
            counter,
        } = *self;
        child.finish()?;
        let counter = counter.lock().unwrap();
        if !counter.complete() {
            return Err(db_error(
                loc.what(),
                "the dump ended inside a statement (truncated)",
            ));
        }
        Ok(DatabaseRecord {
            engine: Engine::Mysql,
            format: DumpFormat::MysqlSql,
            server_version: version,
            source: loc.redacted(),
            name: db,
            path: String::new(),
            tables: records(defs, &counter.rows),
            base: None,
        })
    }
}

pub fn database_exists(loc: &MyLocation, db: &str) -> Result<bool> {
    Ok(!loc
        .query(
            None,
            &format!(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
                literal(db)
            ),
        )?
        .is_empty())
}

/// Loads the SQL into `db` (created when missing). The dump drops each table
/// before creating it; MySQL cannot do DDL in a transaction, so a load that
/// fails halfway is undone by the caller's rollback, not here.
pub fn load(
    loc: &MyLocation,
    db: &str,
    _opts: LoadOptions,
    write_dump: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<Vec<TableRecord>> {
    loc.query(
        None,
        &format!("CREATE DATABASE IF NOT EXISTS {}", quote_name(db)),
    )?;
    let mut cmd = loc.client();
    cmd.arg(format!("--database={db}"));
    run_load(&loc.with_db(db).what(), &mut cmd, write_dump)?;
    inspect_database(loc, db)
}

pub fn drop_database(loc: &MyLocation, db: &str) -> Result<()> {
    loc.query(None, &format!("DROP DATABASE IF EXISTS {}", quote_name(db)))
        .map(|_| ())
}

/// Counts the tuples of `INSERT INTO `t` VALUES (...),(...);` statements in
/// a mysqldump stream fed in pieces. Strings are single-quoted with
/// backslash escapes (mysqldump's own quoting), so parentheses and quotes
/// inside values are not counted.
#[derive(Default)]
struct InsertCounter {
    rows: BTreeMap<String, u64>,
    state: ScanState,
    head: Vec<u8>,
    table: Vec<u8>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum ScanState {
    /// At the start of a line, matching `INSERT INTO `` in `head`.
    #[default]
    LineStart,
    SkipLine,
    TableName,
    /// After the table name's closing backtick (or a doubled one).
    TableNameQuote,
    /// Between the table name and `VALUES`.
    BeforeValues,
    Values {
        depth: u32,
    },
    Str {
        depth: u32,
    },
    StrEscape {
        depth: u32,
    },
}

const INSERT_HEAD: &[u8] = b"INSERT INTO `";

impl InsertCounter {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.step(b);
        }
    }

    /// Whether the stream ended between statements.
    fn complete(&self) -> bool {
        matches!(self.state, ScanState::LineStart | ScanState::SkipLine)
    }

    fn step(&mut self, b: u8) {
        use ScanState::*;
        self.state = match self.state {
            LineStart => {
                if b == b'\n' {
                    self.head.clear();
                    LineStart
                } else {
                    self.head.push(b);
                    if !INSERT_HEAD.starts_with(&self.head) {
                        self.head.clear();
                        SkipLine
                    } else if self.head.len() == INSERT_HEAD.len() {
                        self.head.clear();
                        self.table.clear();
                        TableName
                    } else {
                        LineStart
                    }
                }
            }
            SkipLine => match b {
                b'\n' => LineStart,
                _ => SkipLine,
            },
            TableName => match b {
                b'`' => TableNameQuote,
                _ => {
                    self.table.push(b);
                    TableName
                }
            },
            TableNameQuote => match b {
                b'`' => {
                    self.table.push(b'`');
                    TableName
                }
                b'(' => self.open_tuple(0),
                _ => BeforeValues,
            },
            BeforeValues => match b {
                b'(' => self.open_tuple(0),
                _ => BeforeValues,
            },
            Values { depth } => match (b, depth) {
                (b'(', d) => self.open_tuple(d),
                (b')', d) => Values {
                    depth: d.saturating_sub(1),
                },
                (b'\'', d) => Str { depth: d },
                (b';', 0) => SkipLine,
                (_, d) => Values { depth: d },
            },
            Str { depth } => match b {
                b'\\' => StrEscape { depth },
                b'\'' => Values { depth },
                _ => Str { depth },
            },
            StrEscape { depth } => Str { depth },
        };
    }

    fn open_tuple(&mut self, depth: u32) -> ScanState {
        if depth == 0 {
            let name = String::from_utf8_lossy(&self.table).into_owned();
            *self.rows.entry(name).or_default() += 1;
        }
        ScanState::Values { depth: depth + 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(dump: &str, piece: usize) -> (BTreeMap<String, u64>, bool) {
        let mut c = InsertCounter::default();
        for chunk in dump.as_bytes().chunks(piece) {
            c.feed(chunk);
        }
        let done = c.complete();
        (c.rows, done)
    }

    #[test]
    fn tuples_are_counted_across_pieces_and_strings() {
        let dump = "-- MariaDB dump\n\
            CREATE TABLE `t` (\n  `a` int\n);\n\
            INSERT INTO `t` VALUES (1,'x'),(2,'(y),(z)'),(3,'it\\'s; (a)');\n\
            INSERT INTO `we``ird` VALUES (1,NULL);\n\
            INSERT INTO `t` VALUES (4,'line\\nbreak');\n";
        for piece in [1, 3, 7, 4096] {
            let (rows, done) = count(dump, piece);
            assert_eq!(rows["t"], 4, "piece {piece}");
            assert_eq!(rows["we`ird"], 1);
            assert!(done);
        }
    }

    #[test]
    fn a_dump_cut_inside_an_insert_is_incomplete() {
        let (_, done) = count("INSERT INTO `t` VALUES (1,'x'),(2,", 5);
        assert!(!done);
    }

    #[test]
    fn urls_parse() {
        let l = MyLocation::parse("mysql://backup:pw@127.0.0.1:3307/shop").unwrap();
        assert_eq!((l.host.as_str(), l.port), ("127.0.0.1", 3307));
        assert_eq!(l.redacted(), "mysql://backup@127.0.0.1:3307/shop");
        assert_eq!(l.label(), "127.0.0.1-3307");
        assert!(!format!("{l:?}").contains("pw"));
    }
}

//! PostgreSQL: `pg_dump --format=custom --compress=0` per database (cairn's
//! chunks compress; a compressed dump would defeat dedup), in the snapshot of
//! a `REPEATABLE READ` transaction that cairn opens and exports, so the row
//! counts and schema fingerprints it records come from the very snapshot the
//! dump holds; roles and tablespaces from `pg_dumpall --globals-only`; loads
//! with `pg_restore --single-transaction --exit-on-error`.
//!
//! Connection settings follow libpq: the URL, then `PGHOST`, `PGPORT`,
//! `PGUSER`, `PGPASSWORD`, `PGDATABASE`, and the password file (`PGPASSFILE`
//! or `~/.pgpass`). The tools get them as arguments and `PGPASSWORD`, never a
//! password on their command line.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::{Client, NoTls};

use super::process::{run_load, ChildDump};
use super::{db_error, quote_ident, Dump, DumpStarter, LoadOptions};
use crate::error::{Error, Result};
use crate::format::database::{
    fingerprint, path_component, BaseBackup, DatabaseRecord, DumpFormat, Engine, TableRecord,
};
use crate::format::wal::Lsn;

/// A PostgreSQL server and database, as a URL gives them.
#[derive(Clone, PartialEq, Eq)]
pub struct PgLocation {
    /// A host name, an address, or a socket directory (starting with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    /// The URL's database, if it names one.
    pub dbname: Option<String>,
    sslmode: Option<String>,
}

impl std::fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// libpq's default socket directory, where the server's socket is.
fn default_host() -> String {
    ["/run/postgresql", "/var/run/postgresql", "/tmp"]
        .iter()
        .find(|d| {
            std::fs::read_dir(d)
                .map(|mut r| {
                    r.any(|e| {
                        e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".s.PGSQL."))
                    })
                })
                .unwrap_or(false)
        })
        .map(|d| d.to_string())
        .unwrap_or_else(|| "localhost".into())
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl PgLocation {
    pub fn parse(s: &str) -> Result<PgLocation> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "'{}' is not a PostgreSQL URL ({why}); give postgresql://USER@HOST:PORT/DATABASE",
                redact_text(s)
            ))
        };
        let (url, no_host) = super::parse_url(s).map_err(|e| bad(&e.to_string()))?;
        let mut host = url
            .host_str()
            .filter(|h| !h.is_empty() && !no_host)
            .map(decode);
        let mut port = url.port();
        let mut user = Some(decode(url.username())).filter(|u| !u.is_empty());
        let mut password = url.password().map(decode);
        let mut dbname = Some(decode(url.path().trim_start_matches('/'))).filter(|d| !d.is_empty());
        let mut sslmode = None;
        for (k, v) in url.query_pairs() {
            let v = v.into_owned();
            match k.as_ref() {
                "host" => host = Some(v),
                "port" => port = Some(v.parse().map_err(|_| bad("port is not a number"))?),
                "user" => user = Some(v),
                "password" => password = Some(v),
                "dbname" => dbname = Some(v),
                "sslmode" => sslmode = Some(v),
                "connect_timeout" | "application_name" => {}
                other => return Err(bad(&format!("unknown parameter '{other}'"))),
            }
        }
        let host = host.or_else(|| env("PGHOST")).unwrap_or_else(default_host);
        let port = match port {
            Some(p) => p,
            None => match env("PGPORT") {
                Some(p) => p.parse().map_err(|_| bad("PGPORT is not a number"))?,
                None => 5432,
            },
        };
        let user = user
            .or_else(|| env("PGUSER"))
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        let dbname = dbname.or_else(|| env("PGDATABASE"));
        let mut loc = PgLocation {
            host,
            port,
            user,
            password,
            dbname,
            sslmode: sslmode.or_else(|| env("PGSSLMODE")),
        };
        if loc.password.is_none() {
            loc.password = env("PGPASSWORD").or_else(|| loc.password_file_entry());
        }
        Ok(loc)
    }

    /// The URL without its password, as a snapshot records it.
    pub fn redacted(&self) -> String {
        let db = self.dbname.as_deref().unwrap_or("");
        if self.host.starts_with('/') {
            format!(
                "postgresql://{}@/{}?host={}&port={}",
                self.user, db, self.host, self.port
            )
        } else {
            format!(
                "postgresql://{}@{}:{}/{}",
                self.user, self.host, self.port, db
            )
        }
    }

    /// The server's name in a snapshot's tree (`localhost`, `db-5433`).
    fn label(&self) -> String {
        let host = if self.host.starts_with('/') {
            "localhost"
        } else {
            &self.host
        };
        match self.port {
            5432 => path_component(host),
            p => path_component(&format!("{host}-{p}")),
        }
    }

    /// The matching line of the password file (`PGPASSFILE` or `~/.pgpass`),
    /// read as libpq does: `host:port:db:user:password`, `*` matches
    /// anything, `\` escapes; ignored unless private to its owner.
    fn password_file_entry(&self) -> Option<String> {
        use std::os::unix::fs::PermissionsExt;
        let path = env("PGPASSFILE")
            .map(std::path::PathBuf::from)
            .or_else(|| env("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
        let meta = std::fs::metadata(&path).ok()?;
        if meta.permissions().mode() & 0o077 != 0 {
            return None;
        }
        let text = std::fs::read_to_string(&path).ok()?;
        let host = if self.host.starts_with('/') {
            "localhost"
        } else {
            &self.host
        };
        let port = self.port.to_string();
        let db = self.dbname.as_deref().unwrap_or(&self.user);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let fields = split_pgpass(line);
            if fields.len() != 5 {
                continue;
            }
            let want = [host, &port, db, &self.user];
            if fields[..4]
                .iter()
                .zip(want)
                .all(|(f, w)| f == "*" || f == w)
            {
                return Some(fields[4].clone());
            }
        }
        None
    }

    pub fn with_db(&self, db: &str) -> PgLocation {
        PgLocation {
            dbname: Some(db.to_string()),
            ..self.clone()
        }
    }

    fn what(&self) -> String {
        format!("PostgreSQL at {}", self.redacted())
    }

    fn connect(&self) -> Result<Client> {
        let mut cfg = postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(self.dbname.as_deref().unwrap_or(&self.user))
            .application_name("cairn")
            .connect_timeout(Duration::from_secs(30));
        if let Some(p) = &self.password {
            cfg.password(p);
        }
        if self.sslmode.as_deref() == Some("disable") {
            cfg.ssl_mode(postgres::config::SslMode::Disable);
        } else if matches!(
            self.sslmode.as_deref(),
            Some("require" | "verify-ca" | "verify-full")
        ) {
            return Err(db_error(
                self.what(),
                "sslmode=require is not supported yet: connect over a socket, localhost or an SSH tunnel",
            ));
        }
        cfg.connect(NoTls).map_err(|e| pg_error(&self.what(), e))
    }

    /// A command for one of the client tools, pointed at this server.
    fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args([
            "--no-password",
            "-h",
            &self.host,
            "-p",
            &self.port.to_string(),
            "-U",
            &self.user,
        ]);
        cmd.env_remove("PGPASSWORD");
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        if let Some(m) = &self.sslmode {
            cmd.env("PGSSLMODE", m);
        }
        cmd
    }

    /// A connection to a database that always exists, for creating and
    /// dropping others.
    fn connect_maintenance(&self) -> Result<Client> {
        match self.with_db("postgres").connect() {
            Ok(c) => Ok(c),
            Err(_) => self.with_db("template1").connect(),
        }
    }
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().unwrap().push(n);
                }
            }
            ':' => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// A URL as text with any password replaced, for error messages about URLs
/// that did not parse.
fn redact_text(s: &str) -> String {
    match (s.find("://"), s.rfind('@')) {
        (Some(a), Some(at)) if at > a => {
            let userinfo = &s[a + 3..at];
            match userinfo.split_once(':') {
                Some((u, _)) => format!("{}{u}:***{}", &s[..a + 3], &s[at..]),
                None => s.to_string(),
            }
        }
        _ => s.to_string(),
    }
}

/// A driver error as one line: the server's own message when it sent one.
fn pg_error(what: &str, e: postgres::Error) -> Error {
    let reason = match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(inner) = src {
                s = format!("{s}: {inner}");
                src = inner.source();
            }
            s
        }
    };
    db_error(what, reason)
}

/// Every user table (not system, not an extension's) with its row count and
/// schema fingerprint, as this connection's transaction sees them.
fn inspect(client: &mut Client, what: &str) -> Result<Vec<TableRecord>> {
    let q = |client: &mut Client, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]| {
        client.query(sql, params).map_err(|e| pg_error(what, e))
    };
    let tables = q(
        client,
        "SELECT c.oid, n.nspname, c.relname FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' \
           AND n.nspname NOT LIKE 'pg\\_%' \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                           AND d.objid = c.oid AND d.deptype = 'e') \
         ORDER BY n.nspname, c.relname",
        &[],
    )?;
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let oid: u32 = t.get(0);
        let (schema, name): (String, String) = (t.get(1), t.get(2));
        let mut lines = Vec::new();
        for c in q(
            client,
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    coalesce(pg_get_expr(d.adbin, d.adrelid), '') \
             FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )? {
            let (n, ty, notnull, default): (String, String, bool, String) =
                (c.get(0), c.get(1), c.get(2), c.get(3));
            lines.push(format!("column {n} {ty} notnull={notnull} default={default}"));
        }
        for c in q(
            client,
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1 ORDER BY conname",
            &[&oid],
        )? {
            let (n, def): (String, String) = (c.get(0), c.get(1));
            lines.push(format!("constraint {n} {def}"));
        }
        for c in q(
            client,
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1 ORDER BY 1",
            &[&oid],
        )? {
            let def: String = c.get(0);
            lines.push(format!("index {def}"));
        }
        let count_sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&name)
        );
        let rows: i64 = client
            .query_one(count_sql.as_str(), &[])
            .map_err(|e| pg_error(what, e))?
            .get(0);
        out.push(TableRecord {
            name: format!("{schema}.{name}"),
            rows: rows as u64,
            schema: fingerprint(lines.iter().map(String::as_str)),
        });
    }
    Ok(out)
}

/// The tables of a live database, counted in one consistent snapshot.
pub fn inspect_database(loc: &PgLocation, db: &str) -> Result<Vec<TableRecord>> {
    let loc = loc.with_db(db);
    let what = loc.what();
    let mut client = loc.connect()?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .map_err(|e| pg_error(&what, e))?;
    let tables = inspect(&mut client, &what)?;
    client
        .batch_execute("COMMIT")
        .map_err(|e| pg_error(&what, e))?;
    Ok(tables)
}

fn server_version(client: &mut Client, what: &str) -> Result<String> {
    Ok(client
        .query_one("SHOW server_version", &[])
        .map_err(|e| pg_error(what, e))?
        .get(0))
}

/// The dumps of a server: the URL's database (or every one) and, for a whole
/// server or a superuser, its roles and tablespaces.
pub fn dumps(loc: &PgLocation, all: bool, options: &[String]) -> Result<Vec<DumpStarter>> {
    let first = match (&loc.dbname, all) {
        (Some(_), _) => loc.clone(),
        (None, true) => loc.with_db("postgres"),
        (None, false) => {
            return Err(Error::InvalidArgument(format!(
                "{} names no database: add /DATABASE to the URL, or give --all-databases",
                loc.redacted()
            )))
        }
    };
    let what = first.what();
    let mut client = first.connect()?;
    let databases: Vec<String> = if all {
        client
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
                &[],
            )
            .map_err(|e| pg_error(&what, e))?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        vec![first.dbname.clone().expect("a database")]
    };
    let superuser: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .map_err(|e| pg_error(&what, e))?
        .get(0);
    let version = server_version(&mut client, &what)?;
    drop(client);
    let mut starters: Vec<DumpStarter> = Vec::new();
    if all || superuser {
        let (loc, version) = (first.clone(), version);
        starters.push(Box::new(move || start_globals(loc, version)));
    }
    for db in databases {
        let (loc, options) = (loc.with_db(&db), options.to_vec());
        starters.push(Box::new(move || start_database(loc, options)));
    }
    Ok(starters)
}

struct GlobalsDump {
    loc: PgLocation,
    version: String,
    child: ChildDump,
}

/// The record of a dump of the whole cluster (its globals or a base
/// backup): no database name, no tables; the path is set by the archiver.
fn cluster_record(
    loc: PgLocation,
    server_version: String,
    format: DumpFormat,
    base: Option<BaseBackup>,
) -> DatabaseRecord {
    DatabaseRecord {
        engine: Engine::Postgres,
        format,
        server_version,
        source: PgLocation {
            dbname: None,
            ..loc
        }
        .redacted(),
        name: String::new(),
        path: String::new(),
        tables: Vec::new(),
        base,
    }
}

fn start_globals(loc: PgLocation, version: String) -> Result<Box<dyn Dump>> {
    let mut cmd = loc.tool("pg_dumpall");
    cmd.arg("--globals-only");
    if let Some(db) = &loc.dbname {
        cmd.args(["-l", db]);
    }
    let child = ChildDump::start(&format!("{} (roles and tablespaces)", loc.what()), &mut cmd)?;
    Ok(Box::new(GlobalsDump {
        loc,
        version,
        child,
    }))
}

impl Dump for GlobalsDump {
    fn path(&self) -> Vec<String> {
        vec!["postgresql".into(), self.loc.label(), "globals.sql".into()]
    }
    fn take_reader(&mut self) -> Box<dyn std::io::Read + Send> {
        self.child.take_stdout()
    }
    fn finish(self: Box<Self>) -> Result<DatabaseRecord> {
        let GlobalsDump {
            loc,
            version,
            child,
            ..
        } = *self;
        child.finish()?;
        Ok(cluster_record(loc, version, DumpFormat::PgGlobals, None))
    }
}

/// The counting thread's result: its connection (transaction still open),
/// the tables, the server's version.
type Counted = (Client, Vec<TableRecord>, String);

/// One database's dump: the transaction whose snapshot `pg_dump` imports
/// stays open on the counting thread until the dump has ended.
struct DatabaseDump {
    loc: PgLocation,
    db: String,
    child: ChildDump,
    counting: Option<JoinHandle<Result<Counted>>>,
}

fn start_database(loc: PgLocation, options: Vec<String>) -> Result<Box<dyn Dump>> {
    let db = loc.dbname.clone().expect("a database");
    let what = loc.what();
    let mut client = loc.connect()?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .map_err(|e| pg_error(&what, e))?;
    let snapshot: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .map_err(|e| pg_error(&what, e))?
        .get(0);
    // A sequential scan of a big table may start where a concurrent scan of
    // it is (synchronized scans): the dump's rows would then start midway and
    // wrap, the same table dumping in another order each time, which dedups
    // badly. Neither the dump nor the count beside it joins another scan.
    client
        .batch_execute("SET LOCAL synchronize_seqscans = off")
        .map_err(|e| pg_error(&what, e))?;
    let mut cmd = loc.tool("pg_dump");
    let server_options = std::env::var("PGOPTIONS").unwrap_or_default();
    cmd.env(
        "PGOPTIONS",
        format!("{server_options} -c synchronize_seqscans=off"),
    );
    cmd.args(["--format=custom", "--compress=0"])
        .args(&options)
        .arg(format!("--snapshot={snapshot}"))
        .arg("--dbname")
        .arg(&db);
    let child = ChildDump::start(&what, &mut cmd)?;
    // Counting runs beside the dump, in the same snapshot: each table is
    // read twice at once rather than one after the other.
    let counting = std::thread::spawn(move || {
        let version = server_version(&mut client, &what)?;
        let tables = inspect(&mut client, &what)?;
        Ok((client, tables, version))
    });
    Ok(Box::new(DatabaseDump {
        loc,
        db,
        child,
        counting: Some(counting),
    }))
}

impl Dump for DatabaseDump {
    fn path(&self) -> Vec<String> {
        vec![
            "postgresql".into(),
            self.loc.label(),
            format!("{}.pgdump", path_component(&self.db)),
        ]
    }
    fn take_reader(&mut self) -> Box<dyn std::io::Read + Send> {
        self.child.take_stdout()
    }
    fn finish(mut self: Box<Self>) -> Result<DatabaseRecord> {
        let counting = self.counting.take().expect("finished once");
        let DatabaseDump { loc, db, child, .. } = *self;
        let dumped = child.finish();
        let counted = counting
            .join()
            .map_err(|_| db_error(loc.what(), "the counting thread panicked"))?;
        dumped?;
        let (mut client, tables, version) = counted?;
        client
            .batch_execute("COMMIT")
            .map_err(|e| pg_error(&loc.what(), e))?;
        Ok(DatabaseRecord {
            engine: Engine::Postgres,
            format: DumpFormat::PgCustom,
            server_version: version,
            source: loc.redacted(),
            name: db,
            path: String::new(),
            tables,
            base: None,
        })
    }
}

/// A base backup of the whole cluster for point-in-time recovery:
/// `pg_basebackup` streaming one tar of the data directory, without WAL (the
/// archive has it: `wal-push`). Its start and stop positions come from
/// pg_basebackup's own report (`--verbose`).
pub fn base_backup_starter(loc: PgLocation) -> DumpStarter {
    Box::new(move || start_base_backup(loc))
}

struct BaseDump {
    loc: PgLocation,
    version: String,
    system: Option<String>,
    child: ChildDump,
    scanner: std::sync::Arc<std::sync::Mutex<TarScanner>>,
}

fn start_base_backup(loc: PgLocation) -> Result<Box<dyn Dump>> {
    let what = format!("{} (base backup)", loc.what());
    let mut client = loc.connect()?;
    let version = server_version(&mut client, &what)?;
    // Readable by superusers and pg_monitor members; without it, the
    // cluster is still named by its WAL.
    let system = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .ok()
        .map(|r| r.get::<_, String>(0));
    drop(client);
    let mut cmd = loc.tool("pg_basebackup");
    cmd.args([
        "--pgdata=-",
        "--format=tar",
        "--wal-method=none",
        "--checkpoint=fast",
    ]);
    let child = ChildDump::start(&what, &mut cmd)?;
    Ok(Box::new(BaseDump {
        loc,
        version,
        system,
        child,
        scanner: Default::default(),
    }))
}

/// Watches a tar stream go by and keeps two small top-level members:
/// `backup_label` and `backup_manifest` (ustar headers of 512 bytes, each
/// member's data padded to 512).
#[derive(Default)]
struct TarScanner {
    header: Vec<u8>,
    /// Bytes of the current member's data (with padding) still to come.
    remaining: u64,
    padding: u64,
    capture: Option<String>,
    captured: BTreeMap<String, Vec<u8>>,
}

/// Members larger than this are never captured (a manifest lists every
/// file: large clusters have large ones).
const CAPTURE_LIMIT: u64 = 64 << 20;

impl TarScanner {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(bytes.len() as u64)) as usize;
                let data_left = self.remaining.saturating_sub(self.padding);
                if let Some(name) = &self.capture {
                    let take = (data_left.min(n as u64)) as usize;
                    self.captured
                        .entry(name.clone())
                        .or_default()
                        .extend_from_slice(&bytes[..take]);
                }
                self.remaining -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let need = 512 - self.header.len();
            let n = need.min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 512 {
                self.start_member();
                self.header.clear();
            }
        }
    }

    fn start_member(&mut self) {
        let h = &self.header;
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let size_field = String::from_utf8_lossy(&h[124..136]);
        let size = u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
            .unwrap_or(0);
        let padded = size.div_ceil(512) * 512;
        self.remaining = padded;
        self.padding = padded - size;
        let wanted = matches!(
            name.trim_start_matches("./"),
            "backup_label" | "backup_manifest"
        );
        self.capture =
            (wanted && size <= CAPTURE_LIMIT).then(|| name.trim_start_matches("./").to_string());
    }

    fn member(&self, name: &str) -> Option<String> {
        self.captured
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// A reader that shows what it reads to a [`TarScanner`].
struct Scanned<R> {
    inner: R,
    scanner: std::sync::Arc<std::sync::Mutex<TarScanner>>,
}

impl<R: std::io::Read> std::io::Read for Scanned<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.scanner.lock().unwrap().feed(&buf[..n]);
        Ok(n)
    }
}

/// The base backup's WAL range from its manifest (`WAL-Ranges`: timeline,
/// start and end LSN), PostgreSQL 13 and later.
fn base_positions(manifest: &str) -> Option<(u32, Lsn, Lsn)> {
    let v: serde_json::Value = serde_json::from_str(manifest).ok()?;
    let r = v.get("WAL-Ranges")?.as_array()?.first()?;
    Some((
        r.get("Timeline")?.as_u64()? as u32,
        Lsn::parse(r.get("Start-LSN")?.as_str()?)?,
        Lsn::parse(r.get("End-LSN")?.as_str()?)?,
    ))
}

impl Dump for BaseDump {
    fn path(&self) -> Vec<String> {
        vec!["postgresql".into(), self.loc.label(), "base.tar".into()]
    }
    fn take_reader(&mut self) -> Box<dyn std::io::Read + Send> {
        Box::new(Scanned {
            inner: self.child.take_stdout(),
            scanner: self.scanner.clone(),
        })
    }
    fn finish(self: Box<Self>) -> Result<DatabaseRecord> {
        let BaseDump {
            loc,
            version,
            system,
            child,
            scanner,
        } = *self;
        let what = format!("{} (base backup)", loc.what());
        child.finish()?;
        let manifest = scanner.lock().unwrap().member("backup_manifest");
        let (timeline, start_lsn, stop_lsn) =
            manifest.as_deref().and_then(base_positions).ok_or_else(|| {
                db_error(
                    &what,
                    "the base backup carries no backup_manifest with its WAL range (PostgreSQL 13 or later is needed)",
                )
            })?;
        let base = BaseBackup {
            timeline,
            start_lsn,
            stop_lsn,
            system_identifier: system,
        };
        Ok(cluster_record(
            loc,
            version,
            DumpFormat::PgBaseTar,
            Some(base),
        ))
    }
}

pub fn database_exists(loc: &PgLocation, db: &str) -> Result<bool> {
    let mut admin = loc.connect_maintenance()?;
    Ok(!admin
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .map_err(|e| pg_error(&loc.what(), e))?
        .is_empty())
}

/// Loads a custom-format dump into `db` (created when missing) in one
/// transaction: a load that fails leaves the database as it was.
pub fn load(
    record: &DatabaseRecord,
    loc: &PgLocation,
    db: &str,
    opts: LoadOptions,
    write_dump: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<Vec<TableRecord>> {
    if record.format != DumpFormat::PgCustom {
        return Err(Error::InvalidArgument(
            "this dump holds roles and tablespaces, not a database: apply it with `cairn dump SNAP PATH | psql`"
                .into(),
        ));
    }
    if !database_exists(loc, db)? {
        let mut admin = loc.connect_maintenance()?;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(db)
            ))
            .map_err(|e| pg_error(&loc.what(), e))?;
    }
    let target = loc.with_db(db);
    let mut cmd = target.tool("pg_restore");
    cmd.args(["--exit-on-error", "--dbname"]).arg(db);
    if opts.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    if opts.no_owner {
        cmd.args(["--no-owner", "--no-privileges"]);
    }
    if opts.jobs > 1 {
        load_parallel(&target, cmd, opts.jobs, write_dump)?;
    } else {
        cmd.arg("--single-transaction");
        run_load(&target.what(), &mut cmd, write_dump)?;
    }
    inspect_database(loc, db)
}

/// `pg_restore -j N` reads a file, not a pipe (it seeks to each table's
/// data): the dump goes to a private temporary file first, removed after.
/// Parallel loaders cannot share one transaction, so a failure midway
/// leaves a partial database; a safe restore rolls it back.
fn load_parallel(
    target: &PgLocation,
    mut cmd: Command,
    jobs: u32,
    write_dump: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let mut file = tempfile::Builder::new()
        .prefix("cairn-pg-restore-")
        .tempfile()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file.as_file_mut());
        write_dump(&mut w)?;
        w.flush().map_err(|e| Error::io("<temporary dump>", e))?;
    }
    cmd.arg(format!("--jobs={jobs}")).arg(file.path());
    run_load(&target.what(), &mut cmd, &mut |_| Ok(()))
}

pub fn drop_database(loc: &PgLocation, db: &str) -> Result<()> {
    let mut admin = loc.connect_maintenance()?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(db)))
        .map_err(|e| pg_error(&loc.what(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_like_libpq() {
        let l = PgLocation::parse("postgresql://app:s%40cret@db.example:5433/appdb").unwrap();
        assert_eq!(
            (l.host.as_str(), l.port, l.user.as_str()),
            ("db.example", 5433, "app")
        );
        assert_eq!(l.password.as_deref(), Some("s@cret"));
        assert_eq!(l.dbname.as_deref(), Some("appdb"));
        assert_eq!(l.redacted(), "postgresql://app@db.example:5433/appdb");
        assert!(!format!("{l:?}").contains("cret"));
        assert_eq!(l.label(), "db.example-5433");
        let s = PgLocation::parse("postgresql://postgres@/?host=/run/postgresql").unwrap();
        assert_eq!(s.host, "/run/postgresql");
        assert_eq!(s.dbname, None);
        assert_eq!(s.label(), "localhost");
        let d = PgLocation::parse("postgresql://x@/appdb").unwrap();
        assert_eq!((d.user.as_str(), d.dbname.as_deref()), ("x", Some("appdb")));
        assert!(!d.host.contains("invalid"));
        assert!(PgLocation::parse("postgresql://x@h/db?frobnicate=1").is_err());
    }

    #[test]
    fn base_backup_positions_come_from_the_manifest_in_the_tar() {
        let manifest = br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [],
            "WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }]}"#;
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("base/1/1259", &[7u8; 700][..]),
            ("backup_manifest", &manifest[..]),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            tar.append_data(&mut h, name, data).unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        for piece in [1, 100, 511, 512, 4096] {
            let mut sc = TarScanner::default();
            for c in bytes.chunks(piece) {
                sc.feed(c);
            }
            let m = sc.member("backup_manifest").unwrap();
            let (tli, start, stop) = base_positions(&m).unwrap();
            assert_eq!(
                (tli, start.to_string(), stop.to_string()),
                (1, "0/2000028".into(), "0/2000100".into())
            );
        }
        assert!(base_positions("{}").is_none());
    }

    #[test]
    fn password_file_lines_split_on_unescaped_colons() {
        assert_eq!(
            split_pgpass("h:5432:*:u:pa\\:ss"),
            ["h", "5432", "*", "u", "pa:ss"]
        );
    }

    #[test]
    fn unparsed_urls_are_redacted_in_errors() {
        assert_eq!(
            redact_text("postgresql://u:pw@h:x/db"),
            "postgresql://u:***@h:x/db"
        );
    }
}

//! Database engines: dump a database as a stream together with its record
//! (tables, row counts, schema fingerprints taken in the dump's own
//! transaction), load a dump into a server or file, and inspect a live
//! database to verify a restore against the record. Each engine uses its own
//! tools (`pg_dump`, `mariadb-dump`) or library (SQLite's online backup API).
//!
//! Nothing here knows the repository: backup (`ops/backup.rs`) streams what a
//! [`Dump`] yields into the snapshot, and `ops/restore_db.rs` feeds a dump
//! from the snapshot into [`load`].

pub mod mysql;
pub mod postgres;
mod process;
pub mod scratch;
pub mod sqlite;

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::database::{DatabaseRecord, Engine, TableRecord};

pub use process::ChildDump;

/// Where a database lives: a server connection or a SQLite file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Postgres(postgres::PgLocation),
    Mysql(mysql::MyLocation),
    Sqlite(PathBuf),
}

impl Location {
    /// `postgresql://` (or `postgres://`), `mysql://` (or `mariadb://`), or a
    /// SQLite file path.
    pub fn parse(s: &str) -> Result<Location> {
        let scheme = s.split_once("://").map(|(a, _)| a.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgresql" | "postgres") => Ok(Location::Postgres(postgres::PgLocation::parse(s)?)),
            Some("mysql" | "mariadb") => Ok(Location::Mysql(mysql::MyLocation::parse(s)?)),
            Some(other) => Err(Error::InvalidArgument(format!(
                "'{other}://' is not a database cairn knows: give postgresql://, mysql:// or a SQLite file path"
            ))),
            None => Ok(Location::Sqlite(crate::source::fs::clean_absolute(
                std::path::Path::new(s),
            )?)),
        }
    }

    pub fn engine(&self) -> Engine {
        match self {
            Location::Postgres(_) => Engine::Postgres,
            Location::Mysql(_) => Engine::Mysql,
            Location::Sqlite(_) => Engine::Sqlite,
        }
    }

    /// The `backup` flag and value that name this location (no password:
    /// that travels in the engine's environment variable).
    pub fn argument(&self) -> (&'static str, std::ffi::OsString) {
        match self {
            Location::Postgres(p) => ("--postgres", p.redacted().into()),
            Location::Mysql(m) => ("--mysql", m.redacted().into()),
            Location::Sqlite(p) => ("--sqlite", p.clone().into_os_string()),
        }
    }

    /// The same server with another database (a SQLite file is itself).
    pub fn with_database(&self, name: &str) -> Location {
        match self {
            Location::Postgres(p) => Location::Postgres(p.with_db(name)),
            Location::Mysql(m) => Location::Mysql(m.with_db(name)),
            Location::Sqlite(p) => Location::Sqlite(p.clone()),
        }
    }

    /// How the location is written in a snapshot (no password).
    pub fn display(&self) -> String {
        match self {
            Location::Postgres(p) => p.redacted(),
            Location::Mysql(m) => m.redacted(),
            Location::Sqlite(p) => format!("sqlite:{}", p.display()),
        }
    }
}

/// A database source of a backup: one database, or every database of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSource {
    pub location: Location,
    /// Every database of the server (`--all-databases`), not only the URL's.
    pub all: bool,
    /// Extra arguments for the dump tool (`pg_dump`, `mariadb-dump`), e.g.
    /// `--exclude-table=audit_log`; not for SQLite.
    pub dump_options: Vec<String>,
    /// PostgreSQL: a base backup of the whole cluster (`--postgres-base`),
    /// for point-in-time recovery, instead of logical dumps.
    pub base_backup: bool,
}

/// One dump being taken: its path below `databases/` in the snapshot, the
/// stream of its bytes, and, once the stream is read to its end, the record
/// (or the error that makes the backup fail: a dump tool that exited
/// non-zero, a transaction that broke).
pub trait Dump: Send {
    /// Components below the snapshot's `databases/` folder.
    fn path(&self) -> Vec<String>;
    /// The dump's bytes; called once.
    fn take_reader(&mut self) -> Box<dyn Read + Send>;
    /// Waits for the dump to end and returns its record (with `path` unset).
    fn finish(self: Box<Self>) -> Result<DatabaseRecord>;
}

/// The dumps a source makes, each started only when the previous one is
/// saved (one transaction open at a time).
pub type DumpStarter = Box<dyn FnOnce() -> Result<Box<dyn Dump>> + Send>;

/// The dumps of one source, in order.
pub fn dumps(source: &DatabaseSource) -> Result<Vec<DumpStarter>> {
    match &source.location {
        Location::Postgres(p) if source.base_backup => {
            Ok(vec![postgres::base_backup_starter(p.clone())])
        }
        Location::Postgres(p) => postgres::dumps(p, source.all, &source.dump_options),
        Location::Mysql(m) => mysql::dumps(m, source.all, &source.dump_options),
        Location::Sqlite(path) => {
            if source.all || !source.dump_options.is_empty() {
                return Err(Error::InvalidArgument(
                    "--all-databases and dump options are for servers, not SQLite files".into(),
                ));
            }
            Ok(vec![sqlite::dump_starter(path.clone())])
        }
    }
}

/// How a load treats what the target already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Drop the dump's objects before creating them (target not empty).
    pub clean: bool,
    /// Skip ownership and privileges (a server without the source's roles).
    pub no_owner: bool,
    /// Parallel loaders where the engine has them (PostgreSQL `pg_restore
    /// -j`); 0 or 1: one, in one transaction.
    pub jobs: u32,
}

/// The state of a restore target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    Missing,
    Empty,
    /// Holds these tables.
    NonEmpty(Vec<TableRecord>),
}

impl TargetState {
    /// An existing database that holds these tables.
    pub fn of(tables: Vec<TableRecord>) -> TargetState {
        match tables.is_empty() {
            true => TargetState::Empty,
            false => TargetState::NonEmpty(tables),
        }
    }
}

/// What the target of a restore holds now.
pub fn target_state(target: &Location, name: &str) -> Result<TargetState> {
    let exists = match target {
        Location::Postgres(p) => postgres::database_exists(p, name)?,
        Location::Mysql(m) => mysql::database_exists(m, name)?,
        Location::Sqlite(path) => return sqlite::target_state(path),
    };
    match exists {
        false => Ok(TargetState::Missing),
        true => Ok(TargetState::of(inspect(target, name)?)),
    }
}

/// Loads a dump (written into the returned writer by the caller) into the
/// target. For SQLite the file appears only after `verify` accepted it.
pub fn load(
    record: &DatabaseRecord,
    target: &Location,
    name: &str,
    opts: LoadOptions,
    write_dump: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<Vec<TableRecord>> {
    match target {
        Location::Postgres(p) => postgres::load(record, p, name, opts, write_dump),
        Location::Mysql(m) => mysql::load(m, name, opts, write_dump),
        Location::Sqlite(path) => sqlite::load(record, path, write_dump),
    }
}

/// The tables of a live database, as a dump records them.
pub fn inspect(target: &Location, name: &str) -> Result<Vec<TableRecord>> {
    match target {
        Location::Postgres(p) => postgres::inspect_database(p, name),
        Location::Mysql(m) => mysql::inspect_database(m, name),
        Location::Sqlite(path) => sqlite::inspect_file(path),
    }
}

/// Drops a database a drill made (servers only).
pub fn drop_database(target: &Location, name: &str) -> Result<()> {
    match target {
        Location::Postgres(p) => postgres::drop_database(p, name),
        Location::Mysql(m) => mysql::drop_database(m, name),
        Location::Sqlite(path) => std::fs::remove_file(path).map_err(|e| Error::io(path, e)),
    }
}

/// Parses a database URL whose host may be empty (`postgresql://u@/db?host=/run/x`
/// is libpq's way to name a socket): the url crate refuses an empty host
/// after a user name, so such a URL is parsed with a placeholder host that
/// the caller reads as "none".
pub(crate) fn parse_url(s: &str) -> std::result::Result<(url::Url, bool), url::ParseError> {
    const PLACEHOLDER: &str = "cairn-default-host.invalid";
    let Some((scheme, rest)) = s.split_once("://") else {
        return url::Url::parse(s).map(|u| (u, false));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_part = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    if host_part.is_empty() {
        let filled = format!("{scheme}://{authority}{PLACEHOLDER}{}", &rest[end..]);
        return url::Url::parse(&filled).map(|u| (u, true));
    }
    url::Url::parse(s).map(|u| (u, false))
}

pub(crate) fn db_error(what: impl std::fmt::Display, reason: impl std::fmt::Display) -> Error {
    Error::Database {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// An SQL identifier, quoted (`"` doubled inside), for PostgreSQL and SQLite.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_by_scheme() {
        assert_eq!(
            Location::parse("postgresql://app@db/appdb")
                .unwrap()
                .engine(),
            Engine::Postgres
        );
        assert_eq!(
            Location::parse("mariadb://backup@127.0.0.1/shop")
                .unwrap()
                .engine(),
            Engine::Mysql
        );
        assert_eq!(
            Location::parse("/srv/app.db").unwrap(),
            Location::Sqlite("/srv/app.db".into())
        );
        assert!(Location::parse("oracle://x/y").is_err());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}

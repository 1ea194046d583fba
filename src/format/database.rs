//! What a snapshot records about the databases it holds (repo-format.md §10,
//! "Database records"): engine, server version, each database's dump file in
//! the snapshot tree, and per table the row count and a schema fingerprint,
//! taken in the same transaction as the dump. Restoring compares a live
//! database against these; the comparison is here, pure.

use serde::{Deserialize, Serialize};

/// A database engine cairn dumps and restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Engine {
    #[serde(rename = "postgresql")]
    Postgres,
    #[serde(rename = "mysql")]
    Mysql,
    #[serde(rename = "sqlite")]
    Sqlite,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgresql",
            Engine::Mysql => "mysql",
            Engine::Sqlite => "sqlite",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What one dump file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DumpFormat {
    /// `pg_dump --format=custom --compress=0`, restored with `pg_restore`.
    PgCustom,
    /// `pg_dumpall --globals-only`: roles and tablespaces, plain SQL for `psql`.
    PgGlobals,
    /// `mysqldump`/`mariadb-dump` SQL of one database (no `CREATE DATABASE`/`USE`).
    MysqlSql,
    /// A SQLite database file made with SQLite's online backup API.
    SqliteFile,
    /// `pg_basebackup --format=tar --wal-method=none -D -`: the whole
    /// cluster's data directory as one tar, for point-in-time recovery with
    /// the archived WAL.
    PgBaseTar,
}

impl DumpFormat {
    /// Whether the dump is one database (with tables to verify), not cluster globals.
    pub fn is_database(self) -> bool {
        !matches!(self, DumpFormat::PgGlobals | DumpFormat::PgBaseTar)
    }
}

/// One table as recorded at dump time (or as found after a restore).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRecord {
    /// Schema-qualified where the engine has schemas (`public.accounts`).
    pub name: String,
    pub rows: u64,
    /// Hex BLAKE3 of the table's canonical definition: columns in order with
    /// type, nullability and default, constraints, indexes.
    pub schema: String,
}

/// One dump in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    pub engine: Engine,
    pub format: DumpFormat,
    /// The server's version (SQLite: the library's).
    pub server_version: String,
    /// Where it was dumped from: the connection URL without its password, or
    /// the SQLite file's absolute path.
    pub source: String,
    /// The database's name (SQLite: the file name; globals: empty).
    pub name: String,
    /// The dump file's path in the snapshot tree (`/databases/...`).
    pub path: String,
    /// Tables sorted by name; empty for globals.
    #[serde(default)]
    pub tables: Vec<TableRecord>,
    /// For a base backup: the WAL it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseBackup>,
}

/// Where a base backup sits in the WAL: recovery replays from `start_lsn`
/// and is consistent from `stop_lsn` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseBackup {
    pub timeline: u32,
    pub start_lsn: crate::format::wal::Lsn,
    pub stop_lsn: crate::format::wal::Lsn,
    /// The cluster's system identifier (decimal), when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
}

/// The top folder of a snapshot's tree that holds its dumps.
pub const DATABASES_DIR: &str = "databases";

/// One way a restored database differs from its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Difference {
    MissingTable {
        table: String,
    },
    ExtraTable {
        table: String,
    },
    RowCount {
        table: String,
        expected: u64,
        found: u64,
    },
    Schema {
        table: String,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::MissingTable { table } => write!(f, "table {table} is missing"),
            Difference::ExtraTable { table } => write!(f, "table {table} is not in the snapshot"),
            Difference::RowCount {
                table,
                expected,
                found,
            } => write!(f, "table {table} has {found} rows, the snapshot {expected}"),
            Difference::Schema { table } => {
                write!(f, "table {table}'s definition differs from the snapshot's")
            }
        }
    }
}

/// How `found` differs from `expected`, in table order. An empty list means
/// the restore is verified.
pub fn differences(expected: &[TableRecord], found: &[TableRecord]) -> Vec<Difference> {
    use std::collections::BTreeMap;
    let want: BTreeMap<&str, &TableRecord> =
        expected.iter().map(|t| (t.name.as_str(), t)).collect();
    let have: BTreeMap<&str, &TableRecord> = found.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&str> = want.keys().chain(have.keys()).copied().collect();
    for name in names {
        let table = name.to_string();
        match (want.get(name), have.get(name)) {
            (Some(_), None) => out.push(Difference::MissingTable { table }),
            (None, Some(_)) => out.push(Difference::ExtraTable { table }),
            (Some(w), Some(h)) => {
                if w.schema != h.schema {
                    out.push(Difference::Schema {
                        table: table.clone(),
                    });
                }
                if w.rows != h.rows {
                    out.push(Difference::RowCount {
                        table,
                        expected: w.rows,
                        found: h.rows,
                    });
                }
            }
            (None, None) => unreachable!("a name comes from one of the maps"),
        }
    }
    out
}

/// A table's fingerprint: BLAKE3 over its definition lines, each
/// length-prefixed so that no two lists hash alike.
pub fn fingerprint<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = blake3::Hasher::new();
    for l in lines {
        h.update(&(l.len() as u64).to_le_bytes());
        h.update(l.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// A file-name-safe form of a database or server name, for the dump's path in
/// the tree: anything but letters, digits, `.`, `-`, `_` becomes `_`, and a
/// name of only dots becomes `_`.
pub fn path_component(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "_".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, rows: u64, schema: &str) -> TableRecord {
        TableRecord {
            name: name.into(),
            rows,
            schema: schema.into(),
        }
    }

    #[test]
    fn differences_name_every_kind() {
        let want = [t("a", 1, "x"), t("b", 2, "y"), t("c", 3, "z")];
        let have = [t("a", 1, "x"), t("b", 5, "y2"), t("d", 0, "w")];
        assert_eq!(
            differences(&want, &have),
            [
                Difference::Schema { table: "b".into() },
                Difference::RowCount {
                    table: "b".into(),
                    expected: 2,
                    found: 5
                },
                Difference::MissingTable { table: "c".into() },
                Difference::ExtraTable { table: "d".into() },
            ]
        );
        assert!(differences(&want, &want).is_empty());
    }

    #[test]
    fn fingerprints_separate_lines() {
        assert_ne!(fingerprint(["ab", "c"]), fingerprint(["a", "bc"]));
        assert_eq!(fingerprint(["ab", "c"]), fingerprint(["ab", "c"]));
    }

    #[test]
    fn path_components_are_safe() {
        assert_eq!(path_component("app db/x"), "app_db_x");
        assert_eq!(path_component(".."), "_");
        assert_eq!(path_component(""), "_");
        assert_eq!(path_component("shop-2.db"), "shop-2.db");
    }
}

//! Sources: where a backup's data comes from (a filesystem walk, standard
//! input, a dump command's output, databases), described by one type
//! that the command line and the config file both make, and the pieces that
//! read them: path filters, the metadata of a file as a tree node, and the
//! environment a dump command runs in.
//!
//! Backup (`ops/backup.rs`) reads a source into the repository; nothing here
//! knows the repository.

pub mod fs;
pub mod prefetch;

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Where a backup's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Paths(Vec<PathBuf>),
    /// Standard input, stored as one file of this name.
    Stdin {
        name: String,
    },
    /// A command's standard output; the snapshot is saved only if it exits 0.
    Command {
        name: String,
        argv: Vec<String>,
    },
    /// Database dumps (`databases/...` in the snapshot's tree), and the files
    /// and folders saved beside them in the same snapshot (maybe none).
    Databases {
        databases: Vec<crate::database::DatabaseSource>,
        paths: Vec<PathBuf>,
    },
    /// PostgreSQL WAL files (`wal-push`): each stored under `pg_wal/` by its
    /// name (the local file it is read from beside it), the snapshot's path
    /// `pg-wal:<system identifier>` and its `wal` record `archive`.
    WalFiles {
        archive: crate::format::wal::WalArchive,
        files: Vec<(String, PathBuf)>,
    },
}

impl Source {
    /// A dump written as a shell command line (a job's `dump-command`), run
    /// with `pipefail` so a failing dump in a pipeline fails the backup.
    pub fn dump(name: &str, shell_command: &str) -> Source {
        let mut argv: Vec<String> = pipefail_shell().iter().map(|s| s.to_string()).collect();
        argv.push(shell_command.to_string());
        Source::Command {
            name: name.to_string(),
            argv,
        }
    }

    /// The name a stream is stored under (none for paths).
    pub fn stream_name(&self) -> Option<&str> {
        match self {
            Source::Paths(_) | Source::Databases { .. } | Source::WalFiles { .. } => None,
            Source::Stdin { name } | Source::Command { name, .. } => Some(name),
        }
    }
}

/// The shell a dump command runs in, with `pipefail` where the shell has it:
/// in `pg_dump nosuchdb | gzip` the pipeline's status is otherwise gzip's,
/// and a failed dump would be saved as a success. dash (Debian's `sh`) has
/// no pipefail, so bash is used when it is installed.
pub fn pipefail_shell() -> &'static [&'static str] {
    let bash = ["/bin/bash", "/usr/bin/bash"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    if bash {
        &["bash", "-o", "pipefail", "-c"]
    } else {
        &["sh", "-c"]
    }
}

/// restic's other selectors, beside exclude globs.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    /// Exclude globs matched without regard to case (`--iexclude`).
    pub iexcludes: Vec<String>,
    /// A folder holding a file of one of these names is left out
    /// (`--exclude-if-present`).
    pub if_present: Vec<String>,
    /// A folder holding a valid `CACHEDIR.TAG` is left out, but for the tag
    /// itself (`--exclude-caches`).
    pub caches: bool,
    /// Files larger than this are left out (`--exclude-larger-than`).
    pub larger_than: Option<u64>,
}

/// The first bytes of a valid `CACHEDIR.TAG` (bford.info/cachedir).
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Path filters in restic's spirit: a pattern without `/` matches a name at any
/// depth; one with `/` matches the whole absolute path. Also restic's other
/// selectors ([`Selectors`]).
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
    /// The same, case-insensitive (`--iexclude`).
    inames: GlobSet,
    ipaths: GlobSet,
    selectors: Selectors,
}

fn glob_sets(patterns: &[String], case_insensitive: bool) -> Result<(GlobSet, GlobSet)> {
    let mut names = GlobSetBuilder::new();
    let mut paths = GlobSetBuilder::new();
    for p in patterns
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty() && !p.starts_with('#'))
    {
        let anchored = p.contains('/');
        // "a/b" matches that path ending anywhere; "/a/b" only from the root.
        let trimmed = p.trim_end_matches('/');
        let full = if anchored && !trimmed.starts_with('/') {
            format!("**/{trimmed}")
        } else {
            trimmed.to_string()
        };
        let glob = GlobBuilder::new(&full)
            .literal_separator(anchored)
            .case_insensitive(case_insensitive)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("bad exclude pattern '{p}': {e}")))?;
        if anchored {
            paths.add(glob);
        } else {
            names.add(glob);
        }
    }
    let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::InvalidArgument(e.to_string()));
    Ok((build(names)?, build(paths)?))
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        Excludes::with(patterns, &Selectors::default())
    }

    /// Exclude globs and the other selectors.
    pub fn with(patterns: &[String], selectors: &Selectors) -> Result<Excludes> {
        let (names, paths) = glob_sets(patterns, false)?;
        let (inames, ipaths) = glob_sets(&selectors.iexcludes, true)?;
        Ok(Excludes {
            names,
            paths,
            inames,
            ipaths,
            selectors: selectors.clone(),
        })
    }

    /// Whether an entry the walker found (and already let through
    /// [`is_excluded`](Self::is_excluded), which needs no `stat`) is left out
    /// by what it is: a folder with a marker file or a cache tag, a file
    /// larger than the limit.
    pub fn excludes_by_kind(&self, path: &Path, meta: &std::fs::Metadata) -> bool {
        if meta.is_file() {
            return self
                .selectors
                .larger_than
                .is_some_and(|max| meta.len() > max);
        }
        if meta.is_dir() {
            if self
                .selectors
                .if_present
                .iter()
                .any(|m| path.join(m).symlink_metadata().is_ok())
            {
                return true;
            }
            if self.selectors.caches && is_cache_dir(path) {
                return true;
            }
        }
        false
    }

    pub fn is_excluded(&self, path: &Path) -> bool {
        path.file_name()
            .is_some_and(|n| self.names.is_match(n) || self.inames.is_match(n))
            || self.paths.is_match(path)
            || self.ipaths.is_match(path)
    }
}

/// A folder with a `CACHEDIR.TAG` that starts with the standard signature.
fn is_cache_dir(dir: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(dir.join("CACHEDIR.TAG")) else {
        return false;
    };
    let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
    f.read_exact(&mut head).is_ok() && head == CACHEDIR_SIGNATURE
}

/// Keeps secrets out of the environment of a child process (a dump command,
/// a password, notification or hook command): every `CAIRN_*` variable naming
/// a password (`CAIRN_PASSWORD`, `CAIRN_PASSWORD_FILE`, `CAIRN_TO_PASSWORD`,
/// ...) or storage options (`CAIRN_OPTIONS`, `CAIRN_TO_OPTIONS`) is removed.
pub fn remove_secret_env(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars_os() {
        if is_secret_env(&k.to_string_lossy()) {
            cmd.env_remove(&k);
        }
    }
}

/// cairn's own secrets in the environment: passwords, and storage options
/// (`CAIRN_OPTIONS`, how `cairn run` hands cloud keys from `env:`/`file:` to
/// its steps), which a dump, notification or password command must not see.
pub fn is_secret_env(name: &str) -> bool {
    name.starts_with("CAIRN_")
        && ["PASSWORD", "OPTIONS", "SECRET", "TOKEN", "KEY"]
            .iter()
            .any(|w| name.contains(w))
        && name != "CAIRN_KEY_HINT"
}

/// Checks a `--stdin-filename`: a relative name (`db.sql`, `dumps/db.sql`)
/// without empty, `.` or `..` components and without NUL bytes.
pub fn validate_stdin_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.contains('\0')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::InvalidArgument(format!(
            "'{}' is not a usable --stdin-filename: give a relative name like db.sql or dumps/db.sql \
             (no leading or doubled '/', no '.' or '..' parts)",
            name.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_patterns_follow_restic() {
        let ex = Excludes::new(&[
            "*.tmp".into(),
            "cache/".into(),
            "sub/dir".into(),
            "/abs/only".into(),
        ])
        .unwrap();
        assert!(ex.is_excluded(Path::new("/home/a/x.tmp")));
        assert!(ex.is_excluded(Path::new("/home/a/cache")));
        assert!(ex.is_excluded(Path::new("/home/a/sub/dir")));
        assert!(!ex.is_excluded(Path::new("/home/a/sub/dir2")));
        assert!(ex.is_excluded(Path::new("/abs/only")));
        assert!(!ex.is_excluded(Path::new("/x/abs/only")));
        assert!(!ex.is_excluded(Path::new("/home/a/keep.txt")));
    }

    #[test]
    fn a_dump_runs_in_a_pipefail_shell() {
        let Source::Command { name, argv } = Source::dump("db.sql", "pg_dump x | gzip") else {
            panic!("a dump is a command");
        };
        assert_eq!(name, "db.sql");
        assert_eq!(argv.last().unwrap(), "pg_dump x | gzip");
        assert_eq!(argv[..argv.len() - 1], *pipefail_shell());
    }
}

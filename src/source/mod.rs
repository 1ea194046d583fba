//! Sources: where a backup's data comes from (a filesystem walk, standard
//! input, a dump command's output; databases next), described by one type
//! that the command line and the config file both make, and the pieces that
//! read them: path filters, the metadata of a file as a tree node, and the
//! environment a dump command runs in.
//!
//! Backup (`ops/backup.rs`) reads a source into the repository; nothing here
//! knows the repository.

pub mod fs;

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
            Source::Paths(_) => None,
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

/// Path filters in restic's spirit: a pattern without `/` matches a name at any
/// depth; one with `/` matches the whole absolute path.
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes> {
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
                .build()
                .map_err(|e| Error::InvalidArgument(format!("bad exclude pattern '{p}': {e}")))?;
            if anchored {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build =
            |b: GlobSetBuilder| b.build().map_err(|e| Error::InvalidArgument(e.to_string()));
        Ok(Excludes {
            names: build(names)?,
            paths: build(paths)?,
        })
    }

    pub fn is_excluded(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| self.names.is_match(n)) || self.paths.is_match(path)
    }
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

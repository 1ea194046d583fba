//! The tools under test and how each one is invoked for each step, with
//! comparable settings: every repository encrypted; compression at each tool's
//! default or zstd level 3 (cairn's default, restic "auto", rustic's default,
//! borg `--compression zstd,3`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::measure::Invocation;

pub const ALL_TOOLS: [&str; 4] = ["cairn", "restic", "borg", "rustic"];

pub const PASSWORD: &str = "cairn-bench-password";

/// One installed tool.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: &'static str,
    pub bin: PathBuf,
    pub version: String,
}

/// What a step works on.
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    pub repo: &'a Path,
    /// Private cache/config/state home of this tool run, deleted with the repository.
    pub home: &'a Path,
    /// Absolute source path (tree or file), or None for a stdin backup.
    pub source: Option<&'a Path>,
    /// The file fed on stdin, for stdin backups.
    pub stdin_file: Option<&'a Path>,
    pub stdin_name: &'a str,
    /// A name for this backup, unique within the repository (borg archives need one).
    pub archive: &'a str,
    /// The archive to restore (borg has no `latest`).
    pub restore_archive: &'a str,
    pub restore_dir: &'a Path,
    /// The other repository of [`Op::InitFrom`] and [`Op::Copy`]: the one made
    /// or copied to (`repo` is the one copied from).
    pub peer: Option<&'a Path>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Init,
    Backup,
    Restore,
    /// `check --read-data` (borg: `check --verify-data`).
    Check,
    /// `check` of the structure only (borg: `check --archives-only`).
    CheckStructure,
    /// `snapshots` (borg: `list`).
    Snapshots,
    /// `forget --keep-last N` without pruning (borg: `prune --keep-last N`, no compact).
    Forget(usize),
    /// `prune` (borg: `compact`); with `true`, `prune --dry-run`.
    Prune(bool),
    /// `forget --keep-last N` and prune in one go (borg: `prune` then `compact`).
    ForgetPrune(usize),
    /// Initialise `ctx.peer` with `repo`'s chunker parameters, for copies.
    InitFrom,
    /// Copy every snapshot of `repo` to `ctx.peer`.
    Copy,
}

/// Looks a tool up on PATH, then in cargo's bin directory (where
/// `cargo install` puts rustic).
pub fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first line a tool prints about its version, trimmed to "name x.y.z".
pub fn version_of(name: &str, bin: &Path) -> String {
    let args: &[&str] = if name == "restic" {
        &["version"]
    } else {
        &["--version"]
    };
    let out = Command::new(bin).args(args).output();
    let text = match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => return format!("{name} (version unknown: {e})"),
    };
    let line = text.lines().next().unwrap_or("").trim();
    let words: Vec<&str> = line.split_whitespace().take(2).collect();
    if words.is_empty() {
        format!("{name} (version unknown)")
    } else {
        words.join(" ")
    }
}

fn env_common(ctx: &Ctx) -> Vec<(String, OsString)> {
    let h = |s: &str| ctx.home.join(s).into_os_string();
    vec![
        ("XDG_CACHE_HOME".into(), h("cache")),
        ("XDG_CONFIG_HOME".into(), h("config")),
        ("XDG_STATE_HOME".into(), h("state")),
        ("XDG_DATA_HOME".into(), h("data")),
        ("BORG_BASE_DIR".into(), h("borg")),
        ("CAIRN_PASSWORD".into(), PASSWORD.into()),
        ("RESTIC_PASSWORD".into(), PASSWORD.into()),
        ("RUSTIC_PASSWORD".into(), PASSWORD.into()),
        ("BORG_PASSPHRASE".into(), PASSWORD.into()),
        // The other repository of copies (cairn defaults to the same password).
        ("RESTIC_FROM_PASSWORD".into(), PASSWORD.into()),
        ("BORG_RELOCATED_REPO_ACCESS_IS_OK".into(), "yes".into()),
        ("BORG_DISPLAY_PASSPHRASE".into(), "no".into()),
        // Nobody reads progress: no tool sees a TTY.
        ("RUSTIC_NO_PROGRESS".into(), "true".into()),
    ]
}

impl Tool {
    /// Whether this tool has the operation (rustic's copy needs a config file,
    /// borg 1.x has no copy, borg `compact` no dry run).
    pub fn supports(&self, op: Op) -> bool {
        !matches!(
            (self.name, op),
            ("borg", Op::Copy | Op::InitFrom | Op::Prune(true))
                | ("rustic", Op::Copy | Op::InitFrom)
        )
    }

    /// The command for one operation (see [`Tool::supports`]).
    pub fn invocation(&self, op: Op, ctx: &Ctx) -> Invocation {
        let repo = ctx.repo.as_os_str().to_os_string();
        let bin = self.bin.as_os_str().to_os_string();
        let mut argv: Vec<OsString> = vec![bin];
        let mut cwd = None;
        let mut stdin = None;
        match (self.name, op) {
            ("borg", Op::Init) => {
                push(&mut argv, &["init", "-e", "repokey-blake2"]);
                argv.push(repo);
            }
            ("borg", Op::Backup) => {
                push(&mut argv, &["create", "--compression", "zstd,3"]);
                if ctx.source.is_none() {
                    push(&mut argv, &["--stdin-name", ctx.stdin_name]);
                }
                argv.push(borg_archive(&repo, ctx.archive));
                match ctx.source {
                    Some(s) => argv.push(s.as_os_str().into()),
                    None => push(&mut argv, &["-"]),
                }
            }
            ("borg", Op::Restore) => {
                push(&mut argv, &["extract"]);
                argv.push(borg_archive(&repo, ctx.restore_archive));
                cwd = Some(ctx.restore_dir.to_path_buf());
            }
            ("borg", Op::Check) => {
                push(&mut argv, &["check", "--verify-data"]);
                argv.push(repo);
            }
            ("borg", Op::CheckStructure) => {
                push(&mut argv, &["check", "--archives-only"]);
                argv.push(repo);
            }
            ("borg", Op::Snapshots) => {
                push(&mut argv, &["list"]);
                argv.push(repo);
            }
            ("borg", Op::Forget(n)) => {
                push(&mut argv, &["prune", "--keep-last", &n.to_string()]);
                argv.push(repo);
            }
            ("borg", Op::Prune(_)) => {
                push(&mut argv, &["compact"]);
                argv.push(repo);
            }
            ("borg", Op::ForgetPrune(n)) => {
                // Two commands, measured as one: through sh, whose wait4 rusage
                // and /proc/PID/io include both children.
                let b = sh_quote(&self.bin.as_os_str().to_string_lossy());
                let r = sh_quote(&repo.to_string_lossy());
                argv = vec![
                    "sh".into(),
                    "-c".into(),
                    format!("{b} prune --keep-last {n} {r} && {b} compact {r}").into(),
                ];
            }
            ("borg", Op::Copy | Op::InitFrom) => unreachable!("borg has no copy"),
            // restic, rustic and cairn share restic's command shapes.
            (_, Op::Init) => {
                push(&mut argv, &["-r"]);
                argv.push(repo);
                push(&mut argv, &["init"]);
            }
            (_, Op::Backup) => {
                push(&mut argv, &["-r"]);
                argv.push(repo);
                push(&mut argv, &["backup"]);
                match (self.name, ctx.source) {
                    (_, Some(s)) => argv.push(s.as_os_str().into()),
                    ("rustic", None) => push(&mut argv, &["-", "--stdin-filename", ctx.stdin_name]),
                    (_, None) => push(&mut argv, &["--stdin", "--stdin-filename", ctx.stdin_name]),
                }
            }
            ("rustic", Op::Restore) => {
                push(&mut argv, &["-r"]);
                argv.push(repo);
                push(&mut argv, &["restore", "latest"]);
                argv.push(ctx.restore_dir.as_os_str().into());
            }
            (_, Op::Restore) => {
                push(&mut argv, &["-r"]);
                argv.push(repo);
                push(&mut argv, &["restore", "latest", "--target"]);
                argv.push(ctx.restore_dir.as_os_str().into());
            }
            (_, Op::Check) => {
                push(&mut argv, &["-r"]);
                argv.push(repo);
                push(&mut argv, &["check", "--read-data"]);
            }
            (_, Op::CheckStructure | Op::Snapshots) => {
                push(&mut argv, &["-r"]);
                argv.push(repo);
                push(
                    &mut argv,
                    &[if op == Op::Snapshots {
                        "snapshots"
                    } else {
                        "check"
                    }],
                );
            }
            (_, Op::Forget(n)) => {
                push(&mut argv, &["-r"]);
                argv.push(repo);
                push(&mut argv, &["forget", "--keep-last", &n.to_string()]);
            }
            (_, Op::Prune(dry_run)) => {
                push(&mut argv, &["-r"]);
                argv.push(repo);
                push(&mut argv, &["prune"]);
                if dry_run {
                    push(&mut argv, &["--dry-run"]);
                } else if self.name == "rustic" {
                    // rustic otherwise only marks packs, deleting them a day later.
                    push(&mut argv, &["--instant-delete"]);
                }
            }
            (_, Op::ForgetPrune(n)) => {
                push(&mut argv, &["-r"]);
                argv.push(repo);
                push(
                    &mut argv,
                    &["forget", "--keep-last", &n.to_string(), "--prune"],
                );
                if self.name == "rustic" {
                    push(&mut argv, &["--instant-delete"]);
                }
            }
            ("restic", Op::InitFrom) => {
                push(&mut argv, &["-r"]);
                argv.push(peer(ctx));
                push(&mut argv, &["init", "--copy-chunker-params", "--from-repo"]);
                argv.push(repo);
            }
            ("restic", Op::Copy) => {
                push(&mut argv, &["-r"]);
                argv.push(peer(ctx));
                push(&mut argv, &["copy", "--from-repo"]);
                argv.push(repo);
            }
            (_, Op::InitFrom) => {
                push(&mut argv, &["-r"]);
                argv.push(peer(ctx));
                push(&mut argv, &["init", "--from"]);
                argv.push(repo);
            }
            (_, Op::Copy) => {
                push(&mut argv, &["-r"]);
                argv.push(repo);
                push(&mut argv, &["copy", "--to"]);
                argv.push(peer(ctx));
            }
        }
        if op == Op::Backup && ctx.source.is_none() {
            stdin = ctx.stdin_file.map(Path::to_path_buf);
        }
        Invocation {
            argv,
            env: env_common(ctx),
            cwd,
            stdin,
        }
    }

    /// Exit codes that mean success (borg: 1 is "completed with warnings").
    pub fn succeeded(&self, code: i32) -> bool {
        code == 0 || (self.name == "borg" && code == 1)
    }
}

fn peer(ctx: &Ctx) -> OsString {
    ctx.peer
        .expect("copy and init --from need ctx.peer")
        .as_os_str()
        .to_os_string()
}

/// Single-quotes a word for sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn push(argv: &mut Vec<OsString>, args: &[&str]) {
    argv.extend(args.iter().map(OsString::from));
}

fn borg_archive(repo: &OsString, archive: &str) -> OsString {
    let mut s = repo.clone();
    s.push("::");
    s.push(archive);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(tool: &'static str, op: Op, source: Option<&Path>) -> Vec<String> {
        let t = Tool {
            name: tool,
            bin: PathBuf::from(tool),
            version: String::new(),
        };
        let ctx = Ctx {
            repo: Path::new("/r"),
            home: Path::new("/h"),
            source,
            stdin_file: Some(Path::new("/d.sql")),
            stdin_name: "dump.sql",
            archive: "first",
            restore_archive: "changed",
            restore_dir: Path::new("/t"),
            peer: Some(Path::new("/p")),
        };
        let inv = t.invocation(op, &ctx);
        if source.is_none() && op == Op::Backup {
            assert_eq!(inv.stdin.as_deref(), Some(Path::new("/d.sql")));
        }
        inv.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn each_tool_gets_its_own_command_shape() {
        let src = Some(Path::new("/src"));
        assert_eq!(
            argv("cairn", Op::Backup, src),
            ["cairn", "-r", "/r", "backup", "/src"]
        );
        assert_eq!(
            argv("cairn", Op::Backup, None),
            [
                "cairn",
                "-r",
                "/r",
                "backup",
                "--stdin",
                "--stdin-filename",
                "dump.sql"
            ]
        );
        assert_eq!(
            argv("rustic", Op::Backup, None),
            [
                "rustic",
                "-r",
                "/r",
                "backup",
                "-",
                "--stdin-filename",
                "dump.sql"
            ]
        );
        assert_eq!(
            argv("borg", Op::Backup, None),
            [
                "borg",
                "create",
                "--compression",
                "zstd,3",
                "--stdin-name",
                "dump.sql",
                "/r::first",
                "-"
            ]
        );
        assert_eq!(
            argv("borg", Op::Restore, src),
            ["borg", "extract", "/r::changed"]
        );
        assert_eq!(
            argv("restic", Op::Restore, src),
            ["restic", "-r", "/r", "restore", "latest", "--target", "/t"]
        );
        assert_eq!(
            argv("rustic", Op::Restore, src),
            ["rustic", "-r", "/r", "restore", "latest", "/t"]
        );
        assert_eq!(
            argv("borg", Op::Check, src),
            ["borg", "check", "--verify-data", "/r"]
        );
        assert_eq!(
            argv("cairn", Op::Check, src),
            ["cairn", "-r", "/r", "check", "--read-data"]
        );
    }

    #[test]
    fn retention_and_copy_commands() {
        let src = Some(Path::new("/src"));
        assert_eq!(
            argv("cairn", Op::ForgetPrune(5), src),
            ["cairn", "-r", "/r", "forget", "--keep-last", "5", "--prune"]
        );
        assert_eq!(
            argv("rustic", Op::ForgetPrune(5), src),
            [
                "rustic",
                "-r",
                "/r",
                "forget",
                "--keep-last",
                "5",
                "--prune",
                "--instant-delete"
            ]
        );
        assert_eq!(
            argv("borg", Op::ForgetPrune(5), src),
            [
                "sh",
                "-c",
                "'borg' prune --keep-last 5 '/r' && 'borg' compact '/r'"
            ]
        );
        assert_eq!(
            argv("restic", Op::Prune(true), src),
            ["restic", "-r", "/r", "prune", "--dry-run"]
        );
        assert_eq!(
            argv("cairn", Op::Copy, src),
            ["cairn", "-r", "/r", "copy", "--to", "/p"]
        );
        assert_eq!(
            argv("restic", Op::Copy, src),
            ["restic", "-r", "/p", "copy", "--from-repo", "/r"]
        );
        assert_eq!(
            argv("restic", Op::InitFrom, src),
            [
                "restic",
                "-r",
                "/p",
                "init",
                "--copy-chunker-params",
                "--from-repo",
                "/r"
            ]
        );
        assert_eq!(
            argv("cairn", Op::InitFrom, src),
            ["cairn", "-r", "/p", "init", "--from", "/r"]
        );
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        let borg = Tool {
            name: "borg",
            bin: PathBuf::from("borg"),
            version: String::new(),
        };
        assert!(!borg.supports(Op::Copy) && borg.supports(Op::ForgetPrune(5)));
    }
}

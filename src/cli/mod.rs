//! Command-line front end: parses arguments, calls the library, prints.
//! Library errors are mapped to the documented exit codes here and nowhere else.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand};

mod backup;
mod check;
mod config;
mod copy;
mod drill;
mod events;
mod find;
mod forget;
mod health;
mod inspect;
mod keys;
mod metrics;
mod mount;
mod notify;
mod output;
mod password;
mod pitr;
mod process;
mod prune;
mod repair;
mod restore;
mod restore_db;
mod rewrite;
mod rollback;
mod run;
mod schedule;
mod shell;
mod tag;
mod wal;

use crate::repo::unlock::Unlock;
use crate::{Backend, Repository};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_PARTIAL: i32 = 3;
pub const EXIT_NO_REPO: i32 = 10;
pub const EXIT_LOCKED: i32 = 11;
pub const EXIT_WRONG_PASSWORD: i32 = 12;

/// A mistake in how cairn was called (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// A command that ran but found problems (exit code given).
#[derive(Debug, thiserror::Error)]
#[error("{1}")]
pub struct Finished(pub i32, pub String);

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Content-addressed, deduplicating, encrypted backups"
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
// Every global option is listed under its own heading in each command's
// `--help`, apart from the command's own options.
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Repository location: a path, file://, s3://, gs://, az:// or memory://
    #[arg(
        short = 'r',
        long = "repo",
        env = "CAIRN_REPO",
        global = true,
        value_name = "URL"
    )]
    pub repo: Option<String>,
    /// Storage option KEY=VALUE passed to the object store builder (repeatable)
    #[arg(short = 'o', long = "option", global = true, value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Read the password from this file
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and read the password from its output
    #[arg(long, global = true, value_name = "CMD")]
    pub password_command: Option<String>,
    /// Try this key first: its ID or a unique prefix, as `key list` shows it
    #[arg(long, global = true, env = "CAIRN_KEY_HINT", value_name = "ID")]
    pub key_hint: Option<String>,
    /// Print machine-readable JSON
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors; no progress
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More detail (repeatable)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Append one JSON line per event here (default $XDG_STATE_HOME/cairn/events.jsonl)
    #[arg(long, global = true, value_name = "PATH")]
    pub event_log: Option<PathBuf>,
    /// Merge Prometheus text-format metrics into this file after the command
    #[arg(long, global = true, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Cache index objects and snapshots of remote repositories here
    /// (default $XDG_CACHE_HOME/cairn, else ~/.cache/cairn)
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not use the local metadata cache
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Limit uploads to this many KiB/s
    #[arg(long, global = true, value_name = "KIB_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_upload: Option<u64>,
    /// Limit downloads to this many KiB/s
    #[arg(long, global = true, value_name = "KIB_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_download: Option<u64>,
    /// POST warning and critical events as JSON to this URL (repeatable)
    #[arg(long, global = true, value_name = "URL")]
    pub notify: Vec<String>,
    /// Ping this healthchecks.io-style check: URL/start, then URL or URL/fail (repeatable)
    #[arg(long, global = true, value_name = "URL")]
    pub notify_ping: Vec<String>,
    /// Run this shell command with each warning or critical event as JSON on stdin (repeatable)
    #[arg(long, global = true, value_name = "CMD")]
    pub notify_command: Vec<String>,
    /// Notify every event, not only warnings and failures
    #[arg(long, global = true)]
    pub notify_all: bool,
    /// Config file for config, run and schedule (default $XDG_CONFIG_HOME/cairn/cairn.toml, else /etc/cairn/cairn.toml)
    #[arg(long, global = true, env = "CAIRN_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a repository
    Init(keys::InitArgs),
    /// Snapshot files and folders, standard input, or a command's output
    Backup(backup::BackupArgs),
    /// List snapshots
    Snapshots(inspect::SnapshotsArgs),
    /// List the entries of a snapshot
    Ls(inspect::LsArgs),
    /// Show what changed between two snapshots
    Diff(inspect::DiffArgs),
    /// Restore a snapshot into a directory
    Restore(restore::RestoreArgs),
    /// Write one file of a snapshot to standard output
    Dump(restore::DumpArgs),
    /// Load a database dump into a server or SQLite file and verify it
    RestoreDb(restore_db::RestoreDbArgs),
    /// Put a folder back as the pre-restore snapshot a safe restore took of it
    Rollback(rollback::RollbackArgs),
    /// Archive a PostgreSQL WAL file (archive_command = 'cairn -r R wal-push %p')
    WalPush(wal::WalPushArgs),
    /// Fetch an archived WAL file (restore_command = 'cairn -r R wal-fetch %f %p')
    WalFetch(wal::WalFetchArgs),
    /// PostgreSQL point-in-time recovery: list base backups and WAL, restore to a point
    Pitr(pitr::PitrArgs),
    /// Serve the snapshots as a read-only file system (FUSE) until Ctrl-C
    Mount(mount::MountArgs),
    /// Print decrypted internals as JSON
    Cat(inspect::CatArgs),
    /// Check the repository's structure and, optionally, its data
    Check(check::CheckArgs),
    /// Remove snapshots by ID or by a retention policy
    Forget(forget::ForgetArgs),
    /// Delete data no snapshot needs and repack mostly-empty packs (no lock)
    Prune(prune::PruneArgs),
    /// A snapshot without the excluded paths (a new snapshot; plan, then execute)
    Rewrite(rewrite::RewriteArgs),
    /// Which snapshots hold a path or pattern; which files use a blob
    Find(find::FindArgs),
    /// Add, remove or set snapshots' tags (a new snapshot each, the old one removed)
    Tag(tag::TagArgs),
    /// Heal after damage: index unindexed packs, salvage damaged packs, rewrite snapshots (plan, then execute)
    Repair(repair::RepairArgs),
    /// Copy snapshots to another repository, uploading only what it lacks
    Copy(copy::CopyArgs),
    /// Sizes, counts, dedup and compression ratios
    Stats(inspect::StatsArgs),
    /// Manage passwords
    Key(keys::KeyArgs),
    /// Remove stale locks
    Unlock(keys::UnlockArgs),
    /// Print a shell completion script to standard output
    Completions(shell::CompletionsArgs),
    /// Print the man page (roff) to standard output, or write every page into a directory
    Man(shell::ManArgs),
    /// Freshness and integrity summary for monitoring (exit 1 when unhealthy)
    Health(health::HealthArgs),
    /// Restoration drill: restore a sample of files into a temporary directory and verify them
    Drill(drill::DrillArgs),
    /// Validate the config file
    Config(config::ConfigArgs),
    /// Run one job of the config file now
    Run(run::RunArgs),
    /// Run jobs on their schedules, list them, or install systemd timers
    Schedule(schedule::ScheduleArgs),
}

impl Global {
    pub fn location(&self) -> Result<String> {
        self.repo
            .clone()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| usage("no repository given: use -r/--repo or set CAIRN_REPO"))
    }

    pub fn store_options(&self) -> Result<Vec<(String, String)>> {
        let mut v = parse_options(&self.options)?;
        v.extend(env_options("CAIRN_OPTIONS")?);
        Ok(v)
    }

    pub fn backend(&self, create: bool) -> Result<Backend> {
        Ok(
            Backend::open(&self.location()?, &self.store_options()?, create)?
                .with_limits(self.limit_upload, self.limit_download),
        )
    }

    /// Opens the repository: a missing one is reported before any password is asked.
    pub fn open(&self) -> Result<Repository> {
        let backend = self.backend(false)?;
        if !Repository::exists(&backend)? {
            return Err(crate::Error::RepoNotFound(backend.location().to_string()).into());
        }
        let pw = password::repository_password(self)?;
        let unlock = self.unlock(&backend, self.key_hint.as_deref());
        let mut repo = Repository::open_with(backend, pw.as_bytes(), &unlock, &print_warning)?;
        repo.set_warning_handler(print_warning);
        if let Some(dir) = self.cache_root(&repo) {
            repo.set_cache(&dir);
        }
        Ok(repo)
    }

    /// Opens the repository for reading: index loaded, as the tree view,
    /// restore, dump and drill take it.
    pub fn open_indexed(&self) -> Result<crate::repo::IndexedRepository> {
        Ok(self.open()?.into_indexed()?)
    }

    /// Opens a repository other than `-r` (a copy's destination, `init
    /// --from`): the key that last worked comes first, but `--key-hint`
    /// names a key of `-r`, so it is not used.
    pub fn open_other(&self, backend: Backend, password: &[u8]) -> Result<Repository> {
        let unlock = self.unlock(&backend, None);
        let mut repo = Repository::open_with(backend, password, &unlock, &print_warning)?;
        repo.set_warning_handler(print_warning);
        Ok(repo)
    }

    /// Which keys to try first: the hinted one, then the one that last worked
    /// here, remembered in the cache (for local repositories too: a planted
    /// key file is no less possible there) unless `--no-cache`.
    fn unlock(&self, backend: &Backend, hint: Option<&str>) -> Unlock {
        let in_memory = backend.location().starts_with("memory:");
        Unlock {
            key_hint: hint.filter(|h| !h.is_empty()).map(str::to_string),
            // Not in a folder others may write (set_cache warns about it).
            memory_root: self
                .cache_base()
                .filter(|root| !in_memory && crate::repo::cache::folder_refusal(root).is_none()),
        }
    }

    /// Where to cache metadata: only for remote repositories (a local one is
    /// its own cache), unless `--no-cache`; `--cache-dir` also caches a local one.
    fn cache_root(&self, repo: &Repository) -> Option<PathBuf> {
        let backend = repo.backend();
        let local = backend.local_dir().is_some() || backend.location().starts_with("memory:");
        if local && self.cache_dir.is_none() {
            return None;
        }
        self.cache_base()
    }

    /// `--cache-dir`, else `$XDG_CACHE_HOME/cairn`, else `~/.cache/cairn`;
    /// None with `--no-cache`.
    pub(crate) fn cache_base(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        if let Some(dir) = &self.cache_dir {
            return Some(dir.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("cairn"))
    }

    /// Whether to draw progress: only on a terminal, and never with -q or --json.
    pub fn progress(&self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }
}

/// Warnings that do not stop a command: one `warning:` line each on stderr.
fn print_warning(w: &str) {
    eprintln!("warning: {w}");
}

pub(crate) fn exit_code(err: &anyhow::Error) -> i32 {
    if let Some(f) = err.downcast_ref::<Finished>() {
        return f.0;
    }
    if err.downcast_ref::<UsageError>().is_some() {
        return EXIT_USAGE;
    }
    match err.downcast_ref::<crate::Error>() {
        Some(
            crate::Error::RepoNotFound(_)
            | crate::Error::NotARepository(_)
            | crate::Error::ContainerNotFound { .. },
        ) => EXIT_NO_REPO,
        Some(crate::Error::Locked(_)) => EXIT_LOCKED,
        Some(crate::Error::WrongPassword { .. }) => EXIT_WRONG_PASSWORD,
        Some(crate::Error::BadLocation { .. }) => EXIT_USAGE,
        _ => EXIT_FAILURE,
    }
}

/// One line, whatever the error's chain; a cause already quoted by the message
/// before it is not repeated.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out.replace('\n', " ")
}

fn install_panic_hook() {
    // A bug must still end in one clear line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr(),
            "cairn: internal error{at}: {msg}; please report this bug"
        );
    }));
}

/// Pack buffers must go back to the OS when freed. glibc otherwise raises its
/// mmap threshold after the first such free and keeps later ones on the heap,
/// so peak RSS ratchets up with every pack. Chunk-sized buffers (at most the
/// 4 MiB maximum chunk) stay below the threshold and are reused from the heap:
/// mapping and unmapping each would cost page faults and TLB shootdowns.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called at
    // start-up before any other thread exists, and any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 5 * 1024 * 1024);
    }
}

/// For commands that decode blob after blob (restore, dump, check): keep freed
/// buffers for reuse instead of trimming the heap after each free, since every
/// re-grow costs page faults. Restoring a 978 MB dump: 0.92 s → 0.51 s. Not for
/// backup, where it raised peak RSS by 7–12 MB for a few percent of speed.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter (glibc serialises it
    // with its own lock), and any value is valid.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 * 1024 * 1024);
    }
}

pub fn main() -> i32 {
    install_panic_hook();
    tune_allocator();
    // Deep directory trees recurse on rayon threads: give them room.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(32 * 1024 * 1024)
        .build_global();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    let started = std::time::Instant::now();
    let name = command_name(&cli.command);
    let g = &cli.global;
    notify::ping(g, notify::Ping::Start, None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&cli)))
        .unwrap_or_else(|_| Err(anyhow!("internal error (see above)")));
    let code = match &result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            if e.downcast_ref::<Finished>().is_none_or(|f| !f.1.is_empty()) {
                eprintln!("error: {}", one_line(e));
            }
            exit_code(e)
        }
    };
    if let Err(e) = &result {
        // Failures before the command could say so itself (no repository,
        // wrong password, locked, bad arguments) are events too. A backup that
        // saved its snapshot with unreadable files (exit 3) logged its warning.
        if logs_events(name) && !events::failure_logged() && code != EXIT_PARTIAL {
            if code == EXIT_USAGE {
                // A mistyped command is the typist's to see, not an alert.
                events::emit_notifying(
                    g,
                    &format!("{name}.failed"),
                    events::Severity::Warning,
                    None,
                    serde_json::json!({"error": one_line(e), "exit_code": code}),
                    false,
                );
            } else {
                events::failed(g, &format!("{name}.failed"), e);
            }
        }
    }
    let written_per_job =
        name == "run" && run::RUN_METRICS_WRITTEN.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(path) = g.metrics_file.as_ref().filter(|_| !written_per_job) {
        if let Err(e) = metrics::write(path, g, name, code, started.elapsed()) {
            eprintln!("warning: cannot write metrics to {}: {e:#}", path.display());
        }
    }
    let stage = if code == EXIT_OK {
        notify::Ping::Success
    } else {
        notify::Ping::Fail
    };
    notify::ping(g, stage, events::last_event().as_ref());
    code
}

/// Commands that change or verify the repository log events.
fn logs_events(command: &str) -> bool {
    matches!(
        command,
        "init"
            | "backup"
            | "restore"
            | "restore-db"
            | "rollback"
            | "wal-push"
            | "check"
            | "forget"
            | "prune"
            | "key"
            | "unlock"
            | "copy"
            | "health"
            | "tag"
            | "rewrite"
            | "repair"
            | "drill"
    )
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Init(_) => "init",
        Command::Backup(_) => "backup",
        Command::Snapshots(_) => "snapshots",
        Command::Ls(_) => "ls",
        Command::Diff(_) => "diff",
        Command::Restore(_) => "restore",
        Command::Dump(_) => "dump",
        Command::RestoreDb(_) => "restore-db",
        Command::Rollback(_) => "rollback",
        Command::WalPush(_) => "wal-push",
        Command::WalFetch(_) => "wal-fetch",
        Command::Pitr(_) => "pitr",
        Command::Mount(_) => "mount",
        Command::Cat(_) => "cat",
        Command::Check(_) => "check",
        Command::Stats(_) => "stats",
        Command::Forget(_) => "forget",
        Command::Prune(_) => "prune",
        Command::Repair(_) => "repair",
        Command::Tag(_) => "tag",
        Command::Find(_) => "find",
        Command::Rewrite(_) => "rewrite",
        Command::Copy(_) => "copy",
        Command::Key(_) => "key",
        Command::Unlock(_) => "unlock",
        Command::Completions(_) => "completions",
        Command::Man(_) => "man",
        Command::Health(_) => "health",
        Command::Drill(_) => "drill",
        Command::Config(_) => "config",
        Command::Run(_) => "run",
        Command::Schedule(_) => "schedule",
    }
}

fn run(cli: &Cli) -> Result<()> {
    let g = &cli.global;
    match &cli.command {
        Command::Init(a) => keys::init(g, a),
        Command::Backup(a) => backup::run(g, a),
        Command::Snapshots(a) => inspect::snapshots(g, a),
        Command::Ls(a) => inspect::ls(g, a),
        Command::Diff(a) => inspect::diff(g, a),
        Command::Restore(a) => restore::restore(g, a),
        Command::Dump(a) => restore::dump(g, a),
        Command::RestoreDb(a) => restore_db::run(g, a),
        Command::Rollback(a) => rollback::run(g, a),
        Command::WalPush(a) => wal::push(g, a),
        Command::WalFetch(a) => wal::fetch(g, a),
        Command::Pitr(a) => pitr::run(g, a),
        Command::Mount(a) => mount::run(g, a),
        Command::Cat(a) => inspect::cat(g, a),
        Command::Check(a) => check::run(g, a),
        Command::Stats(a) => inspect::stats(g, a),
        Command::Forget(a) => forget::run(g, a),
        Command::Prune(a) => prune::run(g, a),
        Command::Repair(a) => repair::run(g, a),
        Command::Tag(a) => tag::run(g, a),
        Command::Find(a) => find::run(g, a),
        Command::Rewrite(a) => rewrite::run(g, a),
        Command::Copy(a) => copy::run(g, a),
        Command::Key(a) => keys::key(g, a),
        Command::Unlock(a) => keys::unlock(g, a),
        Command::Completions(a) => shell::completions(a),
        Command::Man(a) => shell::man(g, a),
        Command::Health(a) => health::run(g, a),
        Command::Drill(a) => drill::run(g, a),
        Command::Config(a) => config::run(g, a),
        Command::Run(a) => run::run(g, a),
        Command::Schedule(a) => schedule::run(g, a),
    }
}

/// Snapshot selection flags shared by several commands.
#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with this tag; "a,b" means both (repeatable: either)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only snapshots of this path (repeatable)
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
}

/// `KEY=VALUE` storage options (`-o`, `--to-option`, `--from-option`).
pub fn parse_options(raw: &[String]) -> Result<Vec<(String, String)>> {
    raw.iter()
        .map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| usage(format!("option '{o}' is not KEY=VALUE")))
        })
        .collect()
}

/// Storage options from an environment variable, one `KEY=VALUE` a line (how
/// `cairn run` hands secrets from `env:`/`file:` options to its steps).
pub fn env_options(var: &str) -> Result<Vec<(String, String)>> {
    let raw: Vec<String> = std::env::var(var)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    parse_options(&raw)
}

impl FilterArgs {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tags.is_empty() && self.paths.is_empty()
    }

    pub fn filter(&self) -> crate::SnapshotFilter {
        crate::SnapshotFilter {
            hosts: self.hosts.clone(),
            tags: self.tags.clone(),
            paths: self.paths.clone(),
        }
    }
}

/// The snapshots a command that takes `[SNAP...]` works on: those named
/// (each resolved as [`select_snapshot`], each once), else every one the
/// filters select.
pub fn select_snapshots(
    repo: &Repository,
    sels: &[String],
    f: &FilterArgs,
) -> Result<
    Vec<(
        crate::format::id::SnapshotId,
        crate::format::snapshot::Snapshot,
    )>,
> {
    if sels.is_empty() {
        let filter = f.filter();
        return Ok(repo
            .list_snapshots()?
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .collect());
    }
    let mut v = Vec::new();
    for sel in sels {
        v.push(select_snapshot(repo, sel, f)?);
    }
    v.sort_by_key(|(id, _)| *id);
    v.dedup_by_key(|(id, _)| *id);
    Ok(v)
}

/// Resolves a snapshot selector, with the filter narrowing `latest`.
pub fn select_snapshot(
    repo: &Repository,
    sel: &str,
    f: &FilterArgs,
) -> Result<(
    crate::format::id::SnapshotId,
    crate::format::snapshot::Snapshot,
)> {
    if sel != "latest" && sel.len() < 4 {
        return Err(usage(format!(
            "snapshot '{sel}' is too short: give at least 4 hex digits of its ID, or \"latest\""
        )));
    }
    Ok(repo.find_snapshot(sel, &f.filter())?)
}

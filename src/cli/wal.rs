//! `wal-push PATH` (PostgreSQL's archive_command) and `wal-fetch NAME DEST`
//! (its restore_command).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::ops::wal::{self, Pushed, Spool};

use super::events::{emit, Severity};
use super::{usage, Finished, Global, EXIT_FAILURE};

/// The exit code of `wal-fetch` for anything but "not archived": above 125,
/// so PostgreSQL stops recovery instead of taking it for the end of the
/// archive (it ends recovery, and promotes, on exit codes up to 125).
pub const EXIT_FETCH_ERROR: i32 = 255;

/// Set in the environment of the flusher a push starts in the background.
const FLUSHER_ENV: &str = "CAIRN_WAL_FLUSHER";

#[derive(Args)]
pub struct WalPushArgs {
    /// The WAL file (PostgreSQL's %p)
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// Return only once the file is in the repository (default: once it is
    /// durable in the local spool; a flusher moves it on)
    #[arg(long)]
    sync: bool,
    /// The spool folder (default: the cache folder, per repository)
    #[arg(long, value_name = "DIR", env = "CAIRN_WAL_SPOOL")]
    spool: Option<PathBuf>,
}

#[derive(Args)]
pub struct WalFetchArgs {
    /// The WAL file PostgreSQL asks for (%f)
    #[arg(value_name = "NAME")]
    name: String,
    /// Where to write it (%p)
    #[arg(value_name = "DEST")]
    dest: PathBuf,
    /// Fetch this many following segments ahead into the spool
    #[arg(long, value_name = "N", default_value_t = 8)]
    prefetch: usize,
    /// The spool folder (default: the cache folder, per repository)
    #[arg(long, value_name = "DIR", env = "CAIRN_WAL_SPOOL")]
    spool: Option<PathBuf>,
}

/// `--spool`, else `<cache>/wal-spool/<hash of the repository location>`.
pub fn spool_dir(g: &Global, given: &Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d.clone());
    }
    let location = g.location()?;
    let base = g
        .cache_base()
        .ok_or_else(|| usage("with --no-cache, give the WAL spool folder with --spool DIR"))?;
    let h = blake3::hash(location.as_bytes()).to_hex();
    Ok(base.join("wal-spool").join(&h.as_str()[..16]))
}

pub fn push(g: &Global, a: &WalPushArgs) -> Result<()> {
    let spool = Spool::open(&spool_dir(g, &a.spool)?)?;
    if std::env::var_os(FLUSHER_ENV).is_some() {
        return flush_in_background(g, &spool);
    }
    let name = a
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pushed = spool.push(&a.path, &name)?;
    if a.sync {
        let flushed = wal::flush(g.open()?, &spool, None)?;
        report_conflicts(g, &flushed);
        if flushed.conflicts.iter().any(|c| {
            c.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}.")))
        }) {
            return Err(crate::Error::CommandFailed(format!(
                "WAL file {name} is already archived in the repository with different content; refusing to replace it (kept in {})",
                spool.dir().join("conflicts").display()
            ))
            .into());
        }
        emit(
            g,
            "wal.archived",
            Severity::Info,
            flushed.snapshots.last().map(|s| s.to_hex()),
            json!({"file": name, "files": flushed.files, "bytes": flushed.bytes, "duplicates": flushed.duplicates}),
        );
    } else if pushed == Pushed::Spooled && !spool.flusher_running() {
        start_flusher()?;
    }
    if !g.quiet && g.verbose > 0 {
        eprintln!("{name}: {pushed:?}");
    }
    Ok(())
}

/// Starts this very command again, detached, as the spool's flusher: it
/// inherits the repository options and the password's source.
fn start_flusher() -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(FLUSHER_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of ours; it
    // runs in the child between fork and exec, so the flusher outlives the
    // archiver's process group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()?;
    Ok(())
}

/// The background flusher: flush until the spool is empty; a file spooled
/// while it let go of the lock is picked up by checking once more.
fn flush_in_background(g: &Global, spool: &Spool) -> Result<()> {
    loop {
        let result = g.open().and_then(|repo| Ok(wal::flush(repo, spool, None)?));
        match result {
            Ok(f) if f.files > 0 => {
                report_conflicts(g, &f);
                emit(
                    g,
                    "wal.archived",
                    Severity::Info,
                    f.snapshots.last().map(|s| s.to_hex()),
                    json!({"files": f.files, "bytes": f.bytes, "duplicates": f.duplicates}),
                )
            }
            Ok(f) if !f.conflicts.is_empty() => report_conflicts(g, &f),
            Ok(_) => {}
            Err(e) => {
                // The files stay spooled (PostgreSQL was told they are
                // archived): this must reach someone.
                emit(
                    g,
                    "wal.failed",
                    Severity::Critical,
                    None,
                    json!({"error": super::one_line(&e), "spool": spool.dir()}),
                );
                return Err(e);
            }
        }
        if spool.pending()?.is_empty() || spool.flusher_running() {
            return Ok(());
        }
    }
}

/// A spooled file the repository holds with other content was set aside:
/// a critical event, for a human to look at.
fn report_conflicts(g: &Global, f: &wal::Flushed) {
    for c in &f.conflicts {
        emit(
            g,
            "wal.conflict",
            Severity::Critical,
            None,
            json!({"set_aside": c, "why": "the repository holds this WAL file name with other content"}),
        );
    }
}

pub fn fetch(g: &Global, a: &WalFetchArgs) -> Result<()> {
    match fetch_inner(g, a) {
        Ok(true) => Ok(()),
        // Not archived: PostgreSQL probes for files past the end and for
        // history files of later timelines; a quiet exit 1.
        Ok(false) => Err(Finished(EXIT_FAILURE, String::new()).into()),
        Err(e) => Err(Finished(EXIT_FETCH_ERROR, super::one_line(&e)).into()),
    }
}

fn fetch_inner(g: &Global, a: &WalFetchArgs) -> Result<bool> {
    if crate::format::wal::WalFile::parse(&a.name).is_none() {
        return Ok(false);
    }
    let spool = Spool::open(&spool_dir(g, &a.spool)?)?;
    if wal::fetch_local(&spool, &a.name, &a.dest)? {
        return Ok(true);
    }
    let repo = g.open_indexed()?;
    Ok(wal::fetch(
        &repo,
        &spool,
        &a.name,
        Path::new(&a.dest),
        a.prefetch,
    )?)
}

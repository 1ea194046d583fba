//! `pitr list` and `pitr restore`: PostgreSQL point-in-time recovery.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::format::wal::Lsn;
use crate::ops::pitr::{self, PitrRestoreOptions, Target};

use super::events::{emit, Severity};
use super::output::line;
use super::{usage, Global};

#[derive(Args)]
pub struct PitrArgs {
    #[command(subcommand)]
    command: PitrCommand,
}

#[derive(Subcommand)]
enum PitrCommand {
    /// Base backups, archived WAL per timeline, gaps
    List,
    /// Unpack the base backup before a point in time and set up recovery to it
    Restore(RestoreArgs),
}

#[derive(Args)]
struct RestoreArgs {
    /// "latest": recover to the end of the archived WAL
    #[arg(value_name = "latest")]
    latest: Option<String>,
    /// Recover to this time ("2026-12-01 14:03:00+00", RFC 3339, or local time)
    #[arg(long, value_name = "TIME")]
    to_time: Option<String>,
    /// Recover to this WAL position (e.g. 0/3000148)
    #[arg(long, value_name = "LSN")]
    to_lsn: Option<String>,
    /// Recover to the commit of this transaction
    #[arg(long, value_name = "XID")]
    to_xid: Option<u64>,
    /// Follow this timeline (default: the latest)
    #[arg(long, value_name = "N")]
    timeline: Option<u32>,
    /// The new data directory (absent or empty)
    #[arg(long, value_name = "DIR")]
    target: PathBuf,
    /// The WAL spool wal-fetch uses (as wal-push's --spool)
    #[arg(long, value_name = "DIR", env = "CAIRN_WAL_SPOOL")]
    spool: Option<PathBuf>,
}

pub fn run(g: &Global, a: &PitrArgs) -> Result<()> {
    match &a.command {
        PitrCommand::List => list(g),
        PitrCommand::Restore(r) => restore(g, r),
    }
}

fn list(g: &Global) -> Result<()> {
    let repo = g.open_indexed()?;
    let l = pitr::list(&repo)?;
    if g.json {
        super::output::json(&serde_json::to_value(&l)?);
        return Ok(());
    }
    line("base backups:");
    if l.bases.is_empty() {
        line("  none (make one with `cairn backup --postgres-base URL`)");
    }
    for b in &l.bases {
        line(format!(
            "  {}  {}  timeline {}  LSN {}..{}  {}",
            b.snapshot.short(),
            b.time.format("%Y-%m-%d %H:%M:%S UTC"),
            b.timeline,
            b.start_lsn,
            b.stop_lsn,
            if b.consistent {
                "recoverable"
            } else {
                "WAL missing"
            }
        ));
    }
    match l.window {
        Some((from, to)) => line(format!(
            "recoverable window: {} .. {}",
            from.format("%Y-%m-%d %H:%M:%S UTC"),
            to.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        None => line("recoverable window: none (no base backup with its WAL archived)"),
    }
    line("archived WAL:");
    if l.timelines.is_empty() {
        line("  none (set archive_command = 'cairn -r REPO wal-push %p')");
    }
    for t in &l.timelines {
        line(format!(
            "  timeline {}: {} .. {} ({} segments, newest archived {}){}",
            t.timeline,
            t.first,
            t.last,
            t.segments,
            t.latest_archived.format("%Y-%m-%d %H:%M:%S UTC"),
            if t.gaps.is_empty() {
                String::new()
            } else {
                format!(", {} gaps", t.gaps.len())
            }
        ));
        for (from, to) in &t.gaps {
            line(format!("    gap: {from} .. {to}"));
        }
    }
    Ok(())
}

fn target(a: &RestoreArgs) -> Result<Target> {
    let given = [
        a.latest.is_some(),
        a.to_time.is_some(),
        a.to_lsn.is_some(),
        a.to_xid.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(usage(
            "give one recovery target: latest, --to-time TIME, --to-lsn LSN or --to-xid XID",
        ));
    }
    Ok(match (&a.latest, &a.to_time, &a.to_lsn, a.to_xid) {
        (Some(l), ..) if l == "latest" => Target::Latest,
        (Some(other), ..) => {
            return Err(usage(format!(
                "'{other}' is not a target: give latest or --to-time/--to-lsn/--to-xid"
            )))
        }
        (_, Some(t), ..) => Target::Time(super::backup::parse_time(t)?),
        (_, _, Some(l), _) => Target::Lsn(
            Lsn::parse(l)
                .ok_or_else(|| usage(format!("--to-lsn '{l}' is not an LSN like 0/3000148")))?,
        ),
        (_, _, _, Some(x)) => Target::Xid(x),
        _ => unreachable!("one target is given"),
    })
}

/// A word for a POSIX shell: single-quoted, quotes spliced in.
fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `restore_command` PostgreSQL runs: this cairn, this repository, the
/// password's source as given here (a file or a command; otherwise the
/// server's environment must hold CAIRN_PASSWORD).
fn restore_command(g: &Global, a: &RestoreArgs) -> Result<String> {
    let exe = std::env::current_exe()?;
    let mut words = vec![
        shell_word(&exe.to_string_lossy()),
        "-r".into(),
        shell_word(&g.location()?),
    ];
    if let Some(f) = &g.password_file {
        let f = std::path::absolute(f)?;
        words.extend(["--password-file".into(), shell_word(&f.to_string_lossy())]);
    } else if let Some(c) = &g.password_command {
        words.extend(["--password-command".into(), shell_word(c)]);
    }
    for o in &g.options {
        words.extend(["-o".into(), shell_word(o)]);
    }
    words.push("wal-fetch".into());
    if let Some(s) = &a.spool {
        let s = std::path::absolute(s)?;
        words.extend(["--spool".into(), shell_word(&s.to_string_lossy())]);
    }
    words.extend(["%f".into(), "%p".into()]);
    Ok(words.join(" "))
}

fn restore(g: &Global, a: &RestoreArgs) -> Result<()> {
    let target = target(a)?;
    let opts = PitrRestoreOptions {
        target,
        timeline: a.timeline,
        dir: std::path::absolute(&a.target)?,
        restore_command: restore_command(g, a)?,
    };
    let repo = g.open_indexed()?;
    let done = pitr::restore(&repo, &opts)?;
    emit(
        g,
        "pitr.restored",
        Severity::Info,
        Some(done.base.snapshot.to_hex()),
        json!({"dir": done.dir, "files": done.files, "start_lsn": done.base.start_lsn.to_string()}),
    );
    if g.json {
        super::output::json(&serde_json::to_value(&done)?);
        return Ok(());
    }
    line(format!(
        "base backup {} ({}, timeline {}, LSN {}..{}) unpacked into {} ({} files)",
        done.base.snapshot.short(),
        done.base.time.format("%Y-%m-%d %H:%M:%S UTC"),
        done.base.timeline,
        done.base.start_lsn,
        done.base.stop_lsn,
        done.dir.display(),
        done.files
    ));
    for (k, v) in &done.settings {
        line(format!("  {k} = '{v}'"));
    }
    for (from, to) in &done.gaps_after {
        eprintln!("warning: the archive lacks WAL {from} .. {to}: recovery stops before it");
    }
    if let Some(end) = done.target_past_archive {
        eprintln!(
            "warning: the newest WAL reached the repository at {}, before the target: recovery may end short of it, and PostgreSQL then refuses to start (push the remaining WAL, or recover to latest)",
            end.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    line(format!(
        "start PostgreSQL on {} (as the owner of its files, mode 0700): it replays the archived WAL to the target, then promotes",
        done.dir.display()
    ));
    Ok(())
}

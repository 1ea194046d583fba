//! `cairn schedule list|run|install --systemd|uninstall`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::ops::schedule::runner::{JobState, RunError};
use crate::ops::schedule::scheduler::{self, Entry, SystemClock};
use crate::ops::schedule::systemd;

use super::events::{emit, Severity};
use super::{usage, Global};

#[derive(Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Each job's schedule and next run time
    List,
    /// Run jobs on their schedules in the foreground until SIGTERM/SIGINT
    Run,
    /// Write a systemd service and timer per scheduled job (enables nothing)
    Install(InstallArgs),
    /// Remove the units `install` wrote (every cairn-*.service/.timer it
    /// marked as its own, with their timers.target.wants links)
    Uninstall(UnitDirArgs),
}

#[derive(Args)]
struct UnitDirArgs {
    /// Remove systemd units (the default; the only kind so far)
    #[arg(long)]
    systemd: bool,
    /// User units (~/.config/systemd/user) instead of system units (/etc/systemd/system)
    #[arg(long)]
    user: bool,
    /// The directory the units were written into
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Args)]
struct InstallArgs {
    /// Write systemd units (the only kind so far)
    #[arg(long)]
    systemd: bool,
    /// User units (~/.config/systemd/user) instead of system units (/etc/systemd/system)
    #[arg(long)]
    user: bool,
    /// Write the units into this directory instead
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(g: &Global, a: &ScheduleArgs) -> Result<()> {
    match &a.command {
        ScheduleCommand::List => {
            let c = super::run::load(g)?;
            if g.json {
                println!("{}", super::config::jobs_json(&c)["jobs"]);
            } else {
                super::config::print_jobs(&c);
            }
            Ok(())
        }
        ScheduleCommand::Run => foreground(g),
        ScheduleCommand::Install(i) => install(g, i),
        ScheduleCommand::Uninstall(u) => uninstall(g, u),
    }
}

fn unit_dir(dir: &Option<PathBuf>, user: bool) -> Result<PathBuf> {
    Ok(match dir {
        Some(d) => d.clone(),
        None if user => std::env::var_os("XDG_CONFIG_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .ok_or_else(|| usage("neither XDG_CONFIG_HOME nor HOME is set: give --dir"))?
            .join("systemd/user"),
        None => PathBuf::from("/etc/systemd/system"),
    })
}

/// Removes what `install` wrote, found by its header line, so units of jobs
/// since removed from the config go too; nothing else is touched. Needs no
/// config file.
fn uninstall(g: &Global, a: &UnitDirArgs) -> Result<()> {
    let dir = unit_dir(&a.dir, a.user)?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(usage(format!(
                "{} does not exist: nothing to uninstall",
                dir.display()
            )))
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {}", dir.display())))
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("cairn-") && (n.ends_with(".service") || n.ends_with(".timer")))
        .filter(|n| systemd::written_by_cairn(&std::fs::read(dir.join(n)).unwrap_or_default()))
        .collect();
    names.sort();
    if names.is_empty() {
        if !g.quiet {
            println!(
                "no unit written by `cairn schedule install` in {}",
                dir.display()
            );
        }
        return Ok(());
    }
    let mut timers = Vec::new();
    for n in &names {
        let wants = dir.join("timers.target.wants").join(n);
        if wants.symlink_metadata().is_ok() {
            std::fs::remove_file(&wants)
                .with_context(|| format!("cannot remove {}", wants.display()))?;
        }
        let p = dir.join(n);
        std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        if !g.quiet {
            println!("removed {}", p.display());
        }
        if n.ends_with(".timer") {
            timers.push(n.clone());
        }
    }
    if !g.quiet {
        let ctl = if a.user {
            "systemctl --user"
        } else {
            "systemctl"
        };
        println!("to stop timers still loaded and forget the units:");
        if !timers.is_empty() {
            println!("  {ctl} stop {}", timers.join(" "));
        }
        println!("  {ctl} daemon-reload");
    }
    Ok(())
}

fn foreground(g: &Global) -> Result<()> {
    let c = super::run::load(g)?;
    let entries: Vec<Entry> = c
        .jobs
        .values()
        .filter_map(|j| {
            Some(Entry {
                job: j.name.clone(),
                schedule: j.schedule.clone()?,
                last_run: JobState::load(&j.name).last_run,
            })
        })
        .collect();
    if entries.is_empty() {
        return Err(usage(format!(
            "no job in {} has a schedule",
            c.path.display()
        )));
    }
    super::process::install_signal_handlers();
    if !g.quiet {
        eprintln!(
            "cairn scheduler: {} scheduled jobs from {}; stop with SIGTERM or Ctrl-C",
            entries.len(),
            c.path.display()
        );
    }
    emit(
        g,
        "schedule.started",
        Severity::Info,
        None,
        json!({"config": c.path, "jobs": entries.iter().map(|e| &e.job).collect::<Vec<_>>()}),
    );
    let clock = SystemClock {
        stop: &super::process::STOP,
    };
    scheduler::run(&clock, &entries, &mut |job, due| {
        if !g.quiet {
            eprintln!("cairn scheduler: running job {job} (due {due})");
        }
        match super::run::run_logged(g, &c, job) {
            Ok(r) => {
                if !g.quiet {
                    eprintln!("cairn scheduler: job {job} exited {}", r.exit_code);
                }
            }
            // run_logged logged and notified it (run.skipped).
            Err(e @ RunError::Locked(_)) => eprintln!("warning: job {job} skipped: {e}"),
            Err(e) => eprintln!("error: job {job}: {e}"),
        }
        !super::process::STOP.load(std::sync::atomic::Ordering::SeqCst)
    });
    emit(g, "schedule.stopped", Severity::Info, None, json!({}));
    if !g.quiet {
        eprintln!("cairn scheduler: stopped");
    }
    Ok(())
}

fn install(g: &Global, a: &InstallArgs) -> Result<()> {
    if !a.systemd {
        return Err(usage("say which kind of units: schedule install --systemd"));
    }
    let c = super::run::load(g)?;
    let config = std::path::absolute(&c.path).context("cannot resolve the config path")?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let dir = unit_dir(&a.dir, a.user)?;
    // Translate every job first: nothing is written if one has no equivalent.
    let mut all = Vec::new();
    for j in c.jobs.values().filter(|j| j.schedule.is_some()) {
        all.push((
            j.name.clone(),
            systemd::units(j, &exe, &config).map_err(usage)?,
        ));
    }
    if all.is_empty() {
        return Err(usage(format!(
            "no job in {} has a schedule",
            c.path.display()
        )));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut timers = Vec::new();
    for (_, units) in &all {
        for u in units {
            let p = dir.join(&u.name);
            std::fs::write(&p, &u.text).with_context(|| format!("cannot write {}", p.display()))?;
            if !g.quiet {
                println!("wrote {}", p.display());
            }
        }
        timers.push(units[1].name.clone());
    }
    let ctl = if a.user {
        "systemctl --user"
    } else {
        "systemctl"
    };
    if !g.quiet {
        println!("nothing is enabled yet; to start the timers:");
        println!("  {ctl} daemon-reload");
        println!("  {ctl} enable --now {}", timers.join(" "));
        if a.user {
            println!(
                "(user timers run while you are logged in unless `loginctl enable-linger` is set)"
            );
        }
    }
    Ok(())
}

//! `mount MOUNTPOINT`: snapshots as a read-only file system until SIGINT or
//! SIGTERM (or `fusermount -u MOUNTPOINT`).

use std::path::PathBuf;
use std::time::Duration;

use crate::ops::mount::{mount, MountOptions};
use anyhow::Result;
use clap::Args;

use super::output::line;
use super::{usage, Global};

#[derive(Args)]
pub struct MountArgs {
    /// An existing empty folder to mount at
    #[arg(value_name = "MOUNTPOINT")]
    mountpoint: PathBuf,
    #[command(flatten)]
    filter: super::FilterArgs,
}

/// Blocks SIGINT and SIGTERM in this thread (and so in the threads it
/// starts, the file system's among them), to take them with sigtimedwait.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; the calls
    // only read and write it and this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits up to `d` for SIGINT or SIGTERM; true when one came.
fn stop_signal_within(set: &libc::sigset_t, d: Duration) -> bool {
    let t = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid, initialised signal set and `t` a valid
    // timeout; no siginfo is asked for.
    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &t) > 0 }
}

pub fn run(g: &Global, a: &MountArgs) -> Result<()> {
    if !a.mountpoint.is_dir() {
        return Err(usage(format!(
            "mount point {} is not a folder (create an empty one)",
            a.mountpoint.display()
        )));
    }
    let set = block_stop_signals();
    let repo = g.open_indexed()?;
    let opts = MountOptions {
        filter: a.filter.filter(),
        ..Default::default()
    };
    let mounted = mount(repo, &a.mountpoint, opts)?;
    if !g.quiet {
        line(format!(
            "serving the snapshots at {} (read-only); Ctrl-C or SIGTERM unmounts",
            a.mountpoint.display()
        ));
    }
    while !stop_signal_within(&set, Duration::from_millis(500)) {
        if mounted.is_unmounted() {
            return Ok(());
        }
    }
    drop(mounted);
    Ok(())
}

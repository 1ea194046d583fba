//! A job's steps as child processes: spawning them in their own process
//! group, and SIGTERM/SIGINT, which stop the run and reach the running step.
//! The library plans the steps and decides what runs (`ops::schedule::runner`);
//! processes and signals live here, in the command-line layer.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::ops::schedule::runner::{Step, StepRunner};

/// Set by SIGTERM/SIGINT: finish (the child was told to stop), then exit.
pub static STOP: AtomicBool = AtomicBool::new(false);
/// The running child's pid (0: none), so that a signal reaches it.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// Children's standard output goes to our standard error (for `--json`).
static CHILD_STDOUT_TO_STDERR: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // The step's whole process group: a hook's `sh -c` and what it
        // started, a backup and its dump command. kill(2) is
        // async-signal-safe, and so is this wrapper: one system call.
        if let Some(group) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        }
    }
}

/// SIGTERM and SIGINT set [`STOP`] and forward SIGTERM to the running step.
pub fn install_signal_handlers() {
    // SAFETY: `on_signal` is an `extern "C" fn(c_int)`, the type signal(2)
    // expects, and does only async-signal-safe work (atomic loads and stores
    // and one kill(2)); replacing the default handlers of SIGTERM and SIGINT
    // affects no other Rust code in this process.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// Runs one step as a child (stdin closed, output inherited); its exit code
/// (a child killed by a signal counts as 1).
fn spawn(step: &Step) -> i32 {
    let mut c = Command::new(&step.program);
    c.args(&step.args).stdin(Stdio::null());
    // Its own process group, so that SIGTERM reaches everything it started.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    if CHILD_STDOUT_TO_STDERR.load(Ordering::SeqCst) {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
            c.stdout(Stdio::from(fd));
        }
    }
    for k in &step.env_remove {
        c.env_remove(k);
    }
    for (k, v) in &step.env {
        c.env(k, v);
    }
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            eprintln!("error: cannot start {}: {e}", step.program.display());
            return 1;
        }
    };
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    // A signal that came before the pid was stored still reaches the child.
    if STOP.load(Ordering::SeqCst) {
        if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        }
    }
    let status = child.wait();
    CHILD.store(0, Ordering::SeqCst);
    match status {
        Ok(s) => s.code().unwrap_or(1),
        Err(_) => 1,
    }
}

/// Runs steps as children; stopped once a signal came.
pub struct ChildProcesses;

impl StepRunner for ChildProcesses {
    fn run(&mut self, step: &Step) -> i32 {
        spawn(step)
    }
    fn stopped(&self) -> bool {
        STOP.load(Ordering::SeqCst)
    }
}

/// Children's standard output goes to our standard error (for `--json`,
/// whose standard output is the run's report alone).
pub fn child_stdout_to_stderr() {
    CHILD_STDOUT_TO_STDERR.store(true, Ordering::SeqCst);
}

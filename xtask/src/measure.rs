//! Running one command and measuring it: wall time and peak RSS (from the
//! `wait4` rusage of the child, which includes the children it reaped), and
//! the bytes it read and wrote (from `/proc/PID/io`, read after the child has
//! exited but before it is reaped; it also counts the children it reaped).

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A command to run.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    pub argv: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
    pub cwd: Option<PathBuf>,
    /// A file fed to standard input (else /dev/null).
    pub stdin: Option<PathBuf>,
}

impl Invocation {
    pub fn display(&self) -> String {
        let mut s: Vec<String> = self
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        if let Some(i) = &self.stdin {
            s.push(format!("< {}", i.display()));
        }
        s.join(" ")
    }
}

/// What one run cost.
#[derive(Debug, Clone)]
pub struct Measured {
    pub wall_secs: f64,
    pub max_rss_kib: u64,
    /// System (kernel) CPU time of the command and the children it reaped.
    pub sys_secs: f64,
    /// User CPU time, likewise.
    pub user_secs: f64,
    /// Exit code, or minus the signal number.
    pub code: i32,
    pub timed_out: bool,
    /// For a file fed on stdin: (bytes the command consumed, file size). A
    /// backup that consumed less did not back up what it was given.
    pub stdin_read: Option<(u64, u64)>,
    /// Bytes read and written, where the kernel exposes `/proc/PID/io`.
    pub io: Option<Io>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// I/O counters of `/proc/PID/io` (see proc(5)): `rchar`/`wchar` count every
/// read(2)/write(2)-like call, page cache hits included; `read_bytes`/`write_bytes`
/// count what went to and from the block device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Io {
    pub rchar: u64,
    pub wchar: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

impl Io {
    /// Parses the text of `/proc/PID/io`.
    pub fn parse(text: &str) -> Option<Io> {
        let mut io = Io::default();
        let mut seen = 0;
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let Ok(v) = v.trim().parse::<u64>() else {
                continue;
            };
            let slot = match k.trim() {
                "rchar" => &mut io.rchar,
                "wchar" => &mut io.wchar,
                "read_bytes" => &mut io.read_bytes,
                "write_bytes" => &mut io.write_bytes,
                _ => continue,
            };
            *slot = v;
            seen += 1;
        }
        (seen == 4).then_some(io)
    }
}

impl Measured {
    /// The last lines of stderr (or of stdout, when stderr is empty).
    pub fn output_tail(&self, lines: usize) -> String {
        let t = tail(&self.stderr, lines);
        if t.trim().is_empty() {
            tail(&self.stdout, lines)
        } else {
            t
        }
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs `inv`, output to `log_prefix.{stdout,stderr}`, killed after `timeout`.
pub fn run(inv: &Invocation, log_prefix: &Path, timeout: Duration) -> Result<Measured> {
    let stdout = log_prefix.with_extension("stdout");
    let stderr = log_prefix.with_extension("stderr");
    let mut cmd = Command::new(&inv.argv[0]);
    cmd.args(&inv.argv[1..]);
    for (k, v) in &inv.env {
        cmd.env(k, v);
    }
    if let Some(d) = &inv.cwd {
        cmd.current_dir(d);
    }
    // We keep a duplicate of the stdin descriptor: it shares the file offset
    // with the child's, so afterwards it tells how much of its input was read.
    let mut stdin_probe = None;
    cmd.stdin(match &inv.stdin {
        Some(p) => {
            let f = File::open(p).with_context(|| format!("open {}", p.display()))?;
            stdin_probe = Some((f.try_clone()?, f.metadata()?.len()));
            Stdio::from(f)
        }
        None => Stdio::null(),
    });
    cmd.stdout(File::create(&stdout)?);
    cmd.stderr(File::create(&stderr)?);

    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", inv.display()))?;
    let pid = child.id() as libc::pid_t;
    // We reap the child ourselves with wait4 to get its rusage; std's handle is
    // only dropped (dropping a Child neither waits nor kills).
    drop(child);

    let done = Arc::new(AtomicBool::new(false));
    let fired = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (done, fired) = (Arc::clone(&done), Arc::clone(&fired));
        std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            while !done.load(Ordering::SeqCst) {
                if Instant::now() >= deadline {
                    fired.store(true, Ordering::SeqCst);
                    // SAFETY: plain syscall; the child is not reaped before `done` is set.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Wait for the exit without reaping (WNOWAIT): the zombie's /proc/PID/io
    // still holds its totals, which reaping would discard.
    loop {
        // SAFETY: siginfo_t is plain old data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a local.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            break; // wait4 below reports it
        }
    }
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|t| Io::parse(&t));

    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            done.store(true, Ordering::SeqCst);
            return Err(err).context("wait4");
        }
    }
    let wall = start.elapsed();
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();

    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    drop(cmd);
    let stdin_read = match stdin_probe {
        Some((mut f, size)) => {
            use std::io::Seek;
            Some((f.stream_position()?, size))
        }
        None => None,
    };
    Ok(Measured {
        wall_secs: wall.as_secs_f64(),
        max_rss_kib: ru.ru_maxrss.max(0) as u64,
        sys_secs: ru.ru_stime.tv_sec as f64 + ru.ru_stime.tv_usec as f64 / 1e6,
        user_secs: ru.ru_utime.tv_sec as f64 + ru.ru_utime.tv_usec as f64 / 1e6,
        code,
        timed_out: fired.load(Ordering::SeqCst),
        stdin_read,
        io,
        stdout,
        stderr,
    })
}

/// Writes dirty pages back and drops the page cache, so each step starts cold.
/// Returns false when that is not permitted (not root, or a container).
pub fn drop_caches() -> bool {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// Apparent size of everything below `path` (what a bucket would bill).
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let Ok(rd) = std::fs::read_dir(path) else {
        return 0;
    };
    rd.flatten().map(|e| dir_size(&e.path())).sum()
}

/// File count and apparent byte size of a tree or a file.
pub fn tree_stats(path: &Path) -> (u64, u64) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return (0, 0);
    };
    if meta.is_file() {
        return (1, meta.len());
    }
    if !meta.is_dir() {
        return (0, 0);
    }
    let Ok(rd) = std::fs::read_dir(path) else {
        return (0, 0);
    };
    rd.flatten()
        .map(|e| tree_stats(&e.path()))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_io_is_parsed() {
        let t = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(
            Io::parse(t),
            Some(Io {
                rchar: 10,
                wchar: 20,
                read_bytes: 4096,
                write_bytes: 8192
            })
        );
        assert_eq!(Io::parse("rchar: 1\n"), None);
    }

    #[test]
    fn a_commands_writes_are_counted() {
        let dir = std::env::temp_dir().join(format!("xtask-measure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let inv = Invocation {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "head -c 3000000 /dev/zero > /dev/null; head -c 1000000 /dev/zero > /dev/null"
                    .into(),
            ],
            ..Default::default()
        };
        let m = run(&inv, &dir.join("io"), Duration::from_secs(30)).unwrap();
        assert_eq!(m.code, 0);
        let io = m.io.expect("/proc/PID/io of the exited child");
        // The children's writes (reaped by sh) are included.
        assert!(io.wchar >= 4_000_000, "{io:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

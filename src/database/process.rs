//! The engines' own tools as child processes: a dump read from a tool's
//! standard output, a load written to a tool's standard input. A tool's
//! standard error is collected on a thread (so a chatty tool never blocks on
//! a full pipe) and its last lines become the error when it fails.

use std::io::{Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use super::db_error;
use crate::error::Result;

/// How much of a tool's standard error is kept for its error message.
const STDERR_KEEP: usize = 4096;

/// A running tool whose standard output is a dump.
pub struct ChildDump {
    what: String,
    program: String,
    child: Child,
    stdout: Option<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
}

fn collect_stderr(child: &mut Child) -> Option<JoinHandle<String>> {
    let mut err = child.stderr.take()?;
    Some(std::thread::spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * STDERR_KEEP {
                kept.drain(..kept.len() - STDERR_KEEP);
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    }))
}

/// The last non-empty lines of a tool's standard error, as one line.
fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(2)..];
    tail.join(" / ")
}

/// A tool that could not be started, named.
fn start_error(what: &str, program: &str, e: std::io::Error) -> crate::error::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => db_error(
            what,
            format!("'{program}' is not installed (or not on PATH)"),
        ),
        _ => db_error(what, format!("cannot run '{program}': {e}")),
    }
}

fn spawn(what: &str, cmd: &mut Command, stdin: Stdio, stdout: Stdio) -> Result<Child> {
    crate::source::remove_secret_env(cmd);
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| start_error(what, &program, e))
}

fn status_error(
    what: &str,
    program: &str,
    status: std::process::ExitStatus,
    stderr: &str,
) -> crate::error::Error {
    let why = last_lines(stderr);
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    };
    db_error(what, format!("'{program}' failed ({status}){why}"))
}

impl ChildDump {
    /// Starts `cmd` with its standard output as the dump.
    pub fn start(what: &str, cmd: &mut Command) -> Result<ChildDump> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = spawn(what, cmd, Stdio::null(), Stdio::piped())?;
        let stderr = collect_stderr(&mut child);
        let stdout = child.stdout.take();
        Ok(ChildDump {
            what: what.to_string(),
            program,
            child,
            stdout,
            stderr,
        })
    }

    pub fn take_stdout(&mut self) -> Box<dyn Read + Send> {
        Box::new(self.stdout.take().expect("a dump's output is taken once"))
    }

    /// Waits for the tool: Ok only if it exited 0. A tool killed midway, or
    /// one that failed after writing part of its dump, is an error, so the
    /// truncated dump is never saved as a success.
    pub fn finish(self) -> Result<()> {
        self.finish_with_stderr().map(|_| ())
    }

    /// As [`finish`](Self::finish), returning what the tool said on standard
    /// error (its last 4 KiB), for tools that report there.
    pub fn finish_with_stderr(mut self) -> Result<String> {
        drop(self.stdout.take());
        let status = self
            .child
            .wait()
            .map_err(|e| db_error(&self.what, format!("waiting for the dump tool: {e}")))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            return Err(status_error(&self.what, &self.program, status, &stderr));
        }
        Ok(stderr)
    }
}

impl Drop for ChildDump {
    /// A dump abandoned (the backup failed elsewhere) does not outlive cairn.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` with the dump written to its standard input by `write_dump`;
/// Ok only if the tool exited 0.
pub fn run_load(
    what: &str,
    cmd: &mut Command,
    write_dump: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = spawn(what, cmd, Stdio::piped(), Stdio::null())?;
    let stderr = collect_stderr(&mut child);
    let mut stdin = child.stdin.take().expect("piped stdin");
    let written = write_dump(&mut stdin);
    drop(stdin);
    let status = child
        .wait()
        .map_err(|e| db_error(what, format!("waiting for '{program}': {e}")))?;
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if !status.success() {
        return Err(status_error(what, &program, status, &stderr));
    }
    // The tool may stop reading early only by failing; a write error with a
    // successful tool is still a failed load.
    written
}

/// Runs `cmd` to completion and returns its standard output.
pub fn run_output(what: &str, cmd: &mut Command) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    crate::source::remove_secret_env(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| start_error(what, &program, e))?;
    if !out.status.success() {
        return Err(status_error(
            what,
            &program,
            out.status,
            &String::from_utf8_lossy(&out.stderr),
        ));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| db_error(what, format!("'{program}' printed non-UTF-8 output")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_tool_fails_with_its_last_words() {
        let mut d = ChildDump::start(
            "test",
            Command::new("sh").args([
                "-c",
                "echo partial; echo 'fatal: no such database' >&2; exit 3",
            ]),
        )
        .unwrap();
        let mut out = String::new();
        d.take_stdout().read_to_string(&mut out).unwrap();
        assert_eq!(out, "partial\n");
        let e = d.finish().unwrap_err().to_string();
        assert!(e.contains("no such database"), "{e}");
    }

    #[test]
    fn a_missing_tool_says_so() {
        let e = ChildDump::start("test", &mut Command::new("/nonexistent/pg_dump"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not installed"), "{e}");
    }
}

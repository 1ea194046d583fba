//! Shared harness for the black-box CLI tests: a sandbox (temp dir + repository),
//! a runner that checks every command for panics, and file-tree helpers.
//!
//! Every command runs with the `CAIRN_*` environment cleared, `CAIRN_PASSWORD`
//! set, `HOME`/`XDG_STATE_HOME` and `--event-log` inside the sandbox (and
//! `XDG_CACHE_HOME` unset, so the cache is HOME's), `TZ=UTC`, and stdin a pipe
//! (never a TTY).

#![allow(dead_code)]

pub mod dbservers;
pub mod fsutil;
pub mod gcs_fake;
pub mod mountutil;
pub mod servers;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

pub use fsutil::*;

pub const PASSWORD: &str = "correct horse battery staple";
pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");
const TIMEOUT: Duration = Duration::from_secs(600);

/// Words that must never appear in any output: a panic leaked through.
const PANIC_MARKERS: [&str; 3] = ["panicked", "RUST_BACKTRACE", "internal error"];

pub fn assert_no_panic(what: &str, stdout: &[u8], stderr: &[u8]) {
    for m in PANIC_MARKERS {
        for (name, s) in [("stdout", stdout), ("stderr", stderr)] {
            assert!(
                !contains(s, m.as_bytes()),
                "`{what}`: {name} contains {m:?}\n--- stderr:\n{}",
                String::from_utf8_lossy(stderr)
            );
        }
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A temp dir holding a repository (`repo/`), an event log and whatever the
/// test builds. Cleaned up on drop (read-only dirs made writable first).
pub struct Sandbox {
    tmp: TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub events: PathBuf,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        make_writable(&self.root);
    }
}

impl Sandbox {
    /// A sandbox without a repository.
    pub fn new() -> Sandbox {
        let tmp = tempfile::Builder::new()
            .prefix("cairn-test-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().to_path_buf();
        Sandbox {
            repo: root.join("repo"),
            events: root.join("events.jsonl"),
            root,
            tmp,
        }
    }

    /// A sandbox with an initialised repository.
    pub fn init() -> Sandbox {
        Self::init_with(&[])
    }

    /// `init` with extra arguments (e.g. `--pack-size 1`).
    pub fn init_with(extra: &[&str]) -> Sandbox {
        let s = Sandbox::new();
        // The cheapest key derivation the CLI allows: tests run hundreds of
        // commands, each deriving the key once (the defaults are tested apart).
        let mut args = vec!["init", "--kdf-memory", "8", "--kdf-time", "1"];
        args.extend_from_slice(extra);
        s.ok(&args);
        assert!(s.repo.join("config").is_file(), "init made no config");
        s
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// The binary with a clean environment and no arguments.
    pub fn base(&self) -> std::process::Command {
        let mut c = std::process::Command::new(BIN);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CAIRN_") {
                c.env_remove(&k);
            }
        }
        std::fs::create_dir_all(self.root.join("home")).unwrap();
        // The default cache is HOME's, inside the sandbox, whatever the
        // caller's XDG_CACHE_HOME.
        c.env_remove("XDG_CACHE_HOME")
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("HOME", self.root.join("home"))
            .env("XDG_STATE_HOME", self.root.join("state"))
            .env("TZ", "UTC")
            .current_dir(&self.root);
        c
    }

    /// The binary with `-r REPO --event-log LOG` in front of `args`.
    pub fn std_cmd<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.base();
        c.arg("-r")
            .arg(&self.repo)
            .arg("--event-log")
            .arg(&self.events)
            .args(args);
        c
    }

    /// Runs `cairn -r REPO ARGS` on a terminal (a pty made by util-linux's
    /// `script`, 120 columns), as a user at a shell would, and returns what
    /// the terminal showed (stdout and stderr together, with the control
    /// sequences progress bars draw with).
    pub fn on_terminal(&self, args: &[&str]) -> String {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut line = format!("stty cols 120 rows 40; exec {}", quote(BIN));
        for a in ["-r", self.repo.to_str().unwrap()].iter().chain(args) {
            line.push(' ');
            line.push_str(&quote(a));
        }
        let base = self.base();
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &line, "/dev/null"]).current_dir(&self.root);
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let out = c.output().expect("util-linux's script runs");
        assert!(
            out.status.success(),
            "`cairn {}` on a terminal failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A runnable command against this sandbox's repository.
    pub fn cmd<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args = os_args(args);
        Run::new(self.std_cmd(&args), describe(&args))
    }

    /// A runnable command with nothing but the clean environment: no `-r`.
    pub fn bare<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args = os_args(args);
        let mut c = self.base();
        c.args(&args);
        Run::new(c, describe(&args))
    }

    /// Runs and expects exit 0.
    pub fn ok<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args).ok()
    }

    /// Runs with `--json` (put first), expects exit 0, parses stdout as one JSON document.
    pub fn json<I, S>(&self, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        // In front: anything after a `--` belongs to a dump command.
        let mut a: Vec<OsString> = vec!["--json".into()];
        a.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self.cmd(a).ok().json()
    }

    /// `backup ARGS --json`: the summary.
    pub fn backup<I, S>(&self, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut a: Vec<OsString> = vec!["backup".into()];
        a.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        let v = self.json(a);
        assert_eq!(v["message_type"], "summary", "backup --json: {v}");
        v
    }

    /// `snapshots --json` plus filters.
    pub fn snapshots(&self, filters: &[&str]) -> Vec<Value> {
        let mut a = vec!["snapshots"];
        a.extend_from_slice(filters);
        match self.json(a) {
            Value::Array(v) => v,
            other => panic!("snapshots --json is not an array: {other}"),
        }
    }

    pub fn snapshot_count(&self) -> usize {
        self.snapshots(&[]).len()
    }

    /// Restores `snap` into `target` (must exit 0).
    pub fn restore(&self, snap: &str, target: &Path, extra: &[&str]) -> Out {
        let mut a: Vec<OsString> = vec![
            "restore".into(),
            snap.into(),
            "--target".into(),
            target.into(),
        ];
        a.extend(extra.iter().map(OsString::from));
        self.ok(a)
    }

    /// `restore SNAP --target TARGET EXTRA --json` (must exit 0): the summary.
    pub fn restore_json(&self, snap: &str, target: &Path, extra: &[&str]) -> Value {
        let mut a = extra.to_vec();
        a.push("--json");
        self.restore(snap, target, &a).json()
    }

    /// `backup --stdin-from-command --stdin-filename NAME -- ARGV...`, not yet run.
    pub fn command_backup(&self, name: &str, argv: &[&str]) -> Run {
        let mut a = vec![
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            name,
            "--",
        ];
        a.extend_from_slice(argv);
        self.cmd(a)
    }

    /// A small tree for option tests, `src/{a/1.txt a/2.log b/3.txt b/c/4.txt}`,
    /// backed up: the source folder and the snapshot ID.
    pub fn small_tree(&self) -> (PathBuf, String) {
        let src = self.path("src");
        write(&src.join("a/1.txt"), "one");
        write(&src.join("a/2.log"), "two");
        write(&src.join("b/3.txt"), "three");
        write(&src.join("b/c/4.txt"), "four");
        let id = text(&self.backup([&src]), "snapshot_id").to_string();
        (src, id)
    }

    /// Event-log lines written so far.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.events).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("event line is JSON"))
            .collect()
    }

    /// Pack files currently stored under `data/`.
    pub fn data_packs(&self) -> Vec<PathBuf> {
        pack_files(&self.repo.join("data"))
    }
}

/// Repository options with the cheapest key derivation, for library-level
/// tests (each opens repositories many times).
pub fn fast_kdf() -> cairn::InitOptions {
    cairn::InitOptions {
        kdf: Some(cairn::format::crypto::KdfParams {
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
        }),
        ..Default::default()
    }
}

fn os_args<I, S>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    args.into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect()
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

/// Object files (64 hex digits) below a directory (e.g. `REPO/data`).
pub fn pack_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for sub in rd.flatten() {
        let Ok(inner) = std::fs::read_dir(sub.path()) else {
            continue;
        };
        for f in inner.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

fn describe(args: &[OsString]) -> String {
    let mut s = String::from("cairn");
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A command about to run.
pub struct Run {
    cmd: assert_cmd::Command,
    desc: String,
    stdin: Vec<u8>,
    timeout: Duration,
}

impl Run {
    fn new(c: std::process::Command, desc: String) -> Run {
        Run {
            cmd: assert_cmd::Command::from_std(c),
            desc,
            stdin: Vec::new(),
            timeout: TIMEOUT,
        }
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.desc.push(' ');
        self.desc.push_str(&a.as_ref().to_string_lossy());
        self.cmd.arg(a);
        self
    }

    /// Feeds this to standard input (otherwise stdin is an empty pipe).
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = data.into();
        self
    }

    /// Runs to completion; checks the output for panics; any exit code.
    pub fn run(mut self) -> Out {
        // Always write (possibly nothing), so stdin is closed before waiting.
        self.cmd
            .write_stdin(std::mem::take(&mut self.stdin))
            .timeout(self.timeout);
        let started = std::time::Instant::now();
        let o = self
            .cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", self.desc));
        if std::env::var_os("CAIRN_TEST_TIMING").is_some() {
            eprintln!("{:>8.3} s  {}", started.elapsed().as_secs_f64(), self.desc);
        }
        assert_no_panic(&self.desc, &o.stdout, &o.stderr);
        Out {
            code: o.status.code(),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            desc: self.desc,
        }
    }

    /// Kills the command after `d` (it then has no exit code): for tests of
    /// commands that must not hang.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Runs and expects exit 0.
    pub fn ok(self) -> Out {
        self.code(0)
    }

    /// Runs and expects this exit code.
    pub fn code(self, code: i32) -> Out {
        let o = self.run();
        assert_eq!(
            o.code,
            Some(code),
            "`{}` exited {:?}, expected {code}\n{}",
            o.desc,
            o.code,
            o.dump()
        );
        o
    }

    /// Runs and expects a non-zero exit (not a signal).
    pub fn fails(self) -> Out {
        let o = self.run();
        assert!(
            matches!(o.code, Some(c) if c != 0),
            "`{}` should have failed\n{}",
            o.desc,
            o.dump()
        );
        o
    }
}

/// A finished command.
pub struct Out {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub desc: String,
}

impl Out {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn lines(&self) -> Vec<String> {
        self.stdout().lines().map(String::from).collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}`: stdout is not one JSON document ({e})\n{}",
                self.desc,
                self.dump()
            )
        })
    }

    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("`{}`: line {l:?} is not JSON: {e}", self.desc))
            })
            .collect()
    }

    pub fn dump(&self) -> String {
        let mut out = self.stdout();
        if out.len() > 4000 {
            out.truncate(4000);
            out.push_str("...");
        }
        format!("--- stdout:\n{out}\n--- stderr:\n{}", self.stderr)
    }

    /// Errors are one clear line on stderr (product contract).
    pub fn assert_one_error_line(&self, must_mention: &str) {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "`{}`: expected one error line\n{}",
            self.desc,
            self.dump()
        );
        assert!(
            lines[0]
                .to_lowercase()
                .contains(&must_mention.to_lowercase()),
            "`{}`: error line should mention {must_mention:?}: {}",
            self.desc,
            lines[0]
        );
    }
}

/// Shorthand: a JSON number field as u64.
pub fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field} is not a number in {v}"))
}

/// Shorthand: a JSON string field.
pub fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} is not a string in {v}"))
}

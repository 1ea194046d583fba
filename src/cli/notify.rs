//! Alerts: `--notify URL` (the event POSTed as JSON), `--notify-ping URL`
//! (healthchecks.io style: `URL/start`, `URL`, `URL/fail`) and
//! `--notify-command CMD` (the event on the command's stdin). Each has a
//! 10-second timeout; a failing one is one `warning:` line, never a failure.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Global;

const TIMEOUT: Duration = Duration::from_secs(10);

fn client() -> Option<reqwest::blocking::Client> {
    match reqwest::blocking::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("warning: cannot send notifications: {e}");
            None
        }
    }
}

fn post(client: &reqwest::blocking::Client, url: &str, body: Option<&Value>) {
    let mut req = client.post(url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let result = req.send().and_then(|r| r.error_for_status());
    if let Err(e) = result {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        eprintln!("warning: notification to {url} failed: {msg}");
    }
}

/// Sends one event to every `--notify` URL and `--notify-command`.
pub fn event(g: &Global, ev: &Value) {
    if !g.notify.is_empty() {
        if let Some(c) = client() {
            for url in &g.notify {
                post(&c, url, Some(ev));
            }
        }
    }
    for cmd in &g.notify_command {
        if let Err(e) = run_command(cmd, ev) {
            eprintln!("warning: notification command `{cmd}` failed: {e}");
        }
    }
}

/// The stages of a healthchecks.io-style check.
pub enum Ping {
    Start,
    Success,
    Fail,
}

/// Pings every `--notify-ping` URL; `body` (the last event) goes along as JSON.
pub fn ping(g: &Global, stage: Ping, body: Option<&Value>) {
    if g.notify_ping.is_empty() {
        return;
    }
    let Some(c) = client() else { return };
    for url in &g.notify_ping {
        let base = url.trim_end_matches('/');
        let url = match stage {
            Ping::Start => format!("{base}/start"),
            Ping::Success => base.to_string(),
            Ping::Fail => format!("{base}/fail"),
        };
        post(&c, &url, body);
    }
}

/// Runs `sh -c CMD` with the event on stdin and no password variables in its
/// environment; its output goes to stderr, so stdout stays the command's.
fn run_command(cmd: &str, ev: &Value) -> Result<(), String> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .env("CAIRN_EVENT", ev["event"].as_str().unwrap_or_default())
        .env(
            "CAIRN_SEVERITY",
            ev["severity"].as_str().unwrap_or_default(),
        );
    crate::source::remove_secret_env(&mut c);
    let mut child = c.spawn().map_err(|e| format!("cannot start it: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let body = format!("{ev}\n");
    // A command that does not read its stdin must not block us.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(body.as_bytes());
    });
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let _ = writer.join();
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("it exited with {status}"))
                };
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("it took longer than {}s", TIMEOUT.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

//! Alerts (`--notify`, `--notify-ping`, `--notify-command`), events for early
//! failures, the merged metrics file, shell integration. Webhooks go to a tiny
//! HTTP server each test starts on 127.0.0.1.

use crate::common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// One request the test server received.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    body: String,
}

/// An HTTP server on 127.0.0.1 that answers 200 to everything and records
/// each request; it lives as long as the test.
struct Hook {
    port: u16,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Hook {
    fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let mut words = first.split_whitespace();
                record.lock().unwrap().push(Request {
                    method: words.next().unwrap_or("").to_string(),
                    path: words.next().unwrap_or("").to_string(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK",
                );
            }
        });
        Hook { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn webhook_receives_a_failed_backup() {
    let s = Sandbox::init();
    let hook = Hook::start();
    let missing = s.path("no-such-dir");
    let out = s
        .cmd([
            "backup",
            missing.to_str().unwrap(),
            "--notify",
            &hook.url("/hook"),
        ])
        .fails();
    assert!(
        !out.stderr.contains("warning: notification"),
        "{}",
        out.stderr
    );
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1, "one event notified: {reqs:?}");
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/hook");
    let ev: Value = serde_json::from_str(&reqs[0].body).expect("event JSON");
    assert_eq!(ev["event"], "backup.failed");
    assert_eq!(ev["severity"], "critical");
    assert!(ev["figures"]["error"]
        .as_str()
        .unwrap()
        .contains("no-such-dir"));

    // A wrong password fails before the repository opens: still an event, with
    // its exit code, in the log and at the webhook.
    s.cmd(["backup", s.root.join("home").to_str().unwrap()])
        .arg("--notify")
        .arg(hook.url("/hook"))
        .env("CAIRN_PASSWORD", "wrong")
        .code(12);
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let ev: Value = serde_json::from_str(&reqs[1].body).unwrap();
    assert_eq!(ev["event"], "backup.failed");
    assert_eq!(ev["figures"]["exit_code"], 12);

    // Successful (info) events notify only with --notify-all.
    let (src, _) = s.small_tree();
    s.ok([
        "backup",
        src.to_str().unwrap(),
        "--notify",
        &hook.url("/hook"),
    ]);
    assert_eq!(hook.requests().len(), 2);
    s.ok([
        "backup",
        src.to_str().unwrap(),
        "--notify",
        &hook.url("/all"),
        "--notify-all",
    ]);
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 3);
    let ev: Value = serde_json::from_str(&reqs[2].body).unwrap();
    assert_eq!(ev["event"], "backup.completed");
}

#[test]
fn ping_sends_start_then_success_or_fail() {
    let s = Sandbox::init();
    let hook = Hook::start();
    let (src, _) = s.small_tree();
    s.ok([
        "backup",
        src.to_str().unwrap(),
        "--notify-ping",
        &hook.url("/ping/abc"),
    ]);
    s.cmd([
        "backup",
        s.path("missing").to_str().unwrap(),
        "--notify-ping",
        &hook.url("/ping/abc"),
    ])
    .fails();
    let paths: Vec<String> = hook.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/ping/abc/start",
            "/ping/abc",
            "/ping/abc/start",
            "/ping/abc/fail"
        ]
    );
    // The closing pings carry the event.
    let reqs = hook.requests();
    let ev: Value = serde_json::from_str(&reqs[3].body).unwrap();
    assert_eq!(ev["event"], "backup.failed");
}

#[test]
fn notify_command_gets_the_event_without_passwords() {
    let s = Sandbox::init();
    let got = s.path("got.json");
    let env = s.path("env.txt");
    let cmd = format!("cat > '{}'; env > '{}'", got.display(), env.display());
    s.cmd([
        "backup",
        s.path("missing").to_str().unwrap(),
        "--notify-command",
        &cmd,
    ])
    .env("CAIRN_NEW_PASSWORD", "secret2")
    .env("CAIRN_TO_OPTIONS", "s3.secret_access_key=cloudsecret")
    .fails();
    let ev: Value = serde_json::from_str(&std::fs::read_to_string(&got).unwrap()).unwrap();
    assert_eq!(ev["event"], "backup.failed");
    let env = std::fs::read_to_string(&env).unwrap();
    assert!(
        !env.contains("cloudsecret"),
        "storage options reach the command: {env}"
    );
    assert!(!env.contains("CAIRN_PASSWORD"), "{env}");
    assert!(!env.contains("CAIRN_NEW_PASSWORD"), "{env}");
    assert!(!env.contains(PASSWORD), "{env}");
    assert!(env.contains("CAIRN_EVENT=backup.failed"), "{env}");
}

#[test]
fn failing_notifications_only_warn() {
    let s = Sandbox::init();
    let (src, _) = s.small_tree();
    // A closed port, and a command that fails.
    let port = common::servers::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let out = s.ok([
        "backup",
        src.to_str().unwrap(),
        "--notify-all",
        "--notify",
        &url,
        "--notify-ping",
        &url,
        "--notify-command",
        "exit 3",
    ]);
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: notification"))
        .collect();
    // --notify once, the command once, the ping at start and at the end.
    assert_eq!(warnings.len(), 4, "{}", out.stderr);
    assert_eq!(s.snapshot_count(), 2);
}

/// The metrics file as series → value.
fn metrics(path: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn metrics_survive_later_commands() {
    let s = Sandbox::init();
    let (src, _) = s.small_tree();
    let prom = s.path("cairn.prom");
    let p = prom.to_str().unwrap();
    s.ok(["backup", src.to_str().unwrap(), "--metrics-file", p]);
    s.ok(["snapshots", "--metrics-file", p]);
    s.cmd(["backup", "--metrics-file", p])
        .arg(s.path("missing"))
        .fails();
    s.cmd(["backup", "--metrics-file", p])
        .arg(s.path("missing"))
        .fails();
    let m = metrics(&prom);
    let repo = s.repo.to_str().unwrap();
    let key = |name: &str, extra: &str| format!("{name}{{{extra}repository=\"{repo}\"}}");
    // Backup's own series are still there after snapshots and two failures.
    assert!(
        m.contains_key(&key(
            "cairn_last_success_timestamp_seconds",
            "command=\"backup\","
        )),
        "{m:?}"
    );
    assert!(
        m.contains_key(&key(
            "cairn_last_failure_timestamp_seconds",
            "command=\"backup\","
        )),
        "{m:?}"
    );
    assert_eq!(m[&key("cairn_failures_total", "command=\"backup\",")], "2");
    assert_eq!(
        m[&key("cairn_last_run_success", "command=\"backup\",")],
        "0"
    );
    assert_eq!(
        m[&key("cairn_last_run_exit_code", "command=\"backup\",")],
        "1"
    );
    assert_eq!(
        m[&key("cairn_last_run_success", "command=\"snapshots\",")],
        "1"
    );
    assert_eq!(m[&key("cairn_snapshots", "")], "2");
    let host = m
        .keys()
        .find(|k| k.starts_with("cairn_backup_files_processed{host="))
        .expect("files processed, labelled by host");
    assert!(host.contains(&format!("repository=\"{repo}\"")));
    assert_eq!(m[host], "4");
    assert!(m.keys().any(|k| k.starts_with("cairn_backup_bytes_added{")));
    assert!(m
        .keys()
        .any(|k| k.starts_with("cairn_latest_snapshot_age_seconds{")));
    // Every family has its HELP and TYPE.
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains("# TYPE cairn_failures_total counter"));
    for name in m.keys().map(|k| k.split('{').next().unwrap()) {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
    }
    // No temp file is left beside it.
    let left: Vec<_> = std::fs::read_dir(&s.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn concurrent_commands_lose_no_metrics() {
    let s = Sandbox::init();
    let prom = s.path("cairn.prom");
    // Eight commands at once, each owning different series (one repository
    // label each; the repositories need not exist: a failure is a run too).
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut c = s.base();
            c.args(["-r", &format!("{}/nothing-{i}", s.root.display())])
                .arg("--event-log")
                .arg(&s.events)
                .arg("--metrics-file")
                .arg(&prom)
                .arg("snapshots")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            c.spawn().unwrap()
        })
        .collect();
    for mut c in children {
        assert_eq!(c.wait().unwrap().code(), Some(10));
    }
    let m = metrics(&prom);
    for i in 0..8 {
        assert!(
            m.keys().any(|k| k.starts_with("cairn_last_run_exit_code{")
                && k.contains(&format!("nothing-{i}\""))),
            "series of run {i} lost: {m:?}"
        );
    }
}

#[test]
fn early_failures_are_events() {
    let s = Sandbox::init();
    // Wrong password (check, prune, unlock, key), no repository (backup).
    for args in [&["check"][..], &["prune"], &["unlock"], &["key", "list"]] {
        s.cmd(args).env("CAIRN_PASSWORD", "wrong").code(12);
    }
    let missing = s.path("elsewhere");
    s.bare(["-r", missing.to_str().unwrap(), "--event-log"])
        .arg(&s.events)
        .arg("backup")
        .arg(&s.root)
        .code(10);
    let ev = s.events();
    for (name, code) in [
        ("check.failed", 12),
        ("prune.failed", 12),
        ("unlock.failed", 12),
        ("key.failed", 12),
        ("backup.failed", 10),
    ] {
        let e = ev
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name} in {ev:?}"));
        assert_eq!(e["severity"], "critical");
        assert_eq!(e["figures"]["exit_code"], code, "{e}");
        assert!(!e["figures"]["error"].as_str().unwrap().is_empty());
    }
    // Read-only commands log nothing; unlock logs what it removed.
    let before = s.events().len();
    s.cmd(["snapshots"]).env("CAIRN_PASSWORD", "wrong").code(12);
    assert_eq!(s.events().len(), before);
    s.ok(["unlock"]);
    assert!(s
        .events()
        .iter()
        .any(|e| e["event"] == "repository.unlocked"));
}

#[test]
fn completions_and_man_page() {
    let s = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = s.bare(["completions", shell]).ok().stdout();
        for cmd in ["backup", "restore", "snapshots", "prune"] {
            assert!(out.contains(cmd), "{shell} completions lack {cmd}");
        }
    }
    let man = s.bare(["man"]).ok().stdout();
    assert!(man.contains(".TH cairn"), "{}", &man[..man.len().min(200)]);
    for cmd in ["backup", "restore", "check"] {
        assert!(man.contains(cmd), "man page lacks {cmd}");
    }
    s.bare(["completions", "tcsh"]).code(2);
}

/// The gauges of unattended operation: staleness per host from health,
/// verification coverage from a verification pass, the drill's success ratio.
#[test]
fn health_check_and_drill_set_their_gauges() {
    let s = Sandbox::init();
    let (src, _) = s.small_tree();
    let prom = s.path("cairn.prom");
    let p = prom.to_str().unwrap();
    s.ok([
        "backup",
        src.to_str().unwrap(),
        "--host",
        "old",
        "--time",
        "2020-01-01 00:00:00",
    ]);
    s.ok(["backup", src.to_str().unwrap(), "--host", "fresh"]);
    s.ok(["check", "--read-data", "--metrics-file", p]);
    s.ok(["drill", "--files", "3", "--metrics-file", p]);
    // health exits 1: host "old" is stale.
    s.cmd(["health", "--metrics-file", p]).fails();
    let m = metrics(&prom);
    let repo = s.repo.to_str().unwrap();
    let key = |name: &str, extra: &str| format!("{name}{{{extra}repository=\"{repo}\"}}");
    assert_eq!(m[&key("cairn_stale", "host=\"old\",")], "1", "{m:?}");
    assert_eq!(m[&key("cairn_stale", "host=\"fresh\",")], "0", "{m:?}");
    assert_eq!(
        m[&key("cairn_verification_coverage_ratio", "")],
        "1",
        "{m:?}"
    );
    assert_eq!(m[&key("cairn_drill_success_ratio", "")], "1", "{m:?}");
}

/// `health` run by a monitoring loop notifies when its verdict changes, not
/// on every run: 3 runs with the same stale groups send one round of POSTs,
/// and a recovery sends one more.
#[test]
fn health_notifies_on_change_only() {
    let s = Sandbox::init();
    let hook = Hook::start();
    let (src, _) = s.small_tree();
    let src = src.to_str().unwrap();
    let old = (chrono::Utc::now() - chrono::Duration::hours(30))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    for host in ["a", "b", "c"] {
        s.backup([src, "--host", host, "--time", &old]);
    }
    let url = hook.url("/hook");
    for _ in 0..3 {
        s.cmd(["health", "--notify", &url]).code(1);
    }
    let reqs = hook.requests();
    // 3 stale groups and the failed verdict, once.
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    // Every run still logs its problems.
    let logged = s
        .events()
        .iter()
        .filter(|e| e["event"] == "health.stale")
        .count();
    assert_eq!(logged, 9);

    for host in ["a", "b", "c"] {
        s.backup([src, "--host", host]);
    }
    s.ok(["health", "--notify", &url]);
    s.ok(["health", "--notify", &url]);
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 5, "{reqs:?}");
    let ev: Value = serde_json::from_str(&reqs[4].body).unwrap();
    assert_eq!(ev["event"], "health.recovered", "{ev}");
}

/// A job's own notify settings hear of a failing `before` hook (one
/// run.failed) and of a skipped run, and its ping gets one start and one
/// /fail per run, not one per step. A usage mistake is logged, not notified.
#[test]
fn a_failing_hook_and_a_skipped_job_notify_the_job() {
    let s = Sandbox::init();
    let hook = Hook::start();
    let cfg = s.path("cairn.toml");
    write(
        &cfg,
        format!(
            "[repositories.main]\nurl = \"{}\"\n\n[jobs.db]\nrepository = \"main\"\npaths = [\"{}\"]\nbefore = \"exit 1\"\n\
             [jobs.db.notify]\nurls = [\"{}\"]\nping = \"{}\"\n",
            s.repo.display(),
            s.root.display(),
            hook.url("/hook"),
            hook.url("/ping"),
        ),
    );
    s.bare(["--config", cfg.to_str().unwrap(), "--event-log"])
        .arg(&s.events)
        .arg("run")
        .arg("db")
        .code(1);
    let reqs = hook.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/ping/start", "/hook", "/ping/fail"], "{reqs:?}");
    let ev: Value = serde_json::from_str(&reqs[1].body).unwrap();
    assert_eq!(ev["event"], "run.failed", "{ev}");
    assert_eq!(ev["job"], "db", "{ev}");

    s.cmd(["forget", "--notify", &hook.url("/hook")]).code(2);
    assert_eq!(hook.requests().len(), 3, "a usage error was notified");
    assert!(s
        .events()
        .iter()
        .any(|e| e["event"] == "forget.failed" && e["severity"] == "warning"));
}

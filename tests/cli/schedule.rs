//! The config file, `cairn run JOB`, the scheduler (with an injected clock and
//! for real) and systemd units.

use crate::common;
use common::*;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use cairn::ops::schedule::cron::Schedule;
use cairn::ops::schedule::scheduler::{self, Clock, Entry};

/// Writes `cairn.toml` into the sandbox: a repository `main` (the sandbox's,
/// password from the harness's CAIRN_PASSWORD) and the given jobs.
fn config(s: &Sandbox, jobs: &str) -> PathBuf {
    let p = s.path("cairn.toml");
    let text = format!(
        "[repositories.main]\nurl = \"{}\"\n\n{jobs}",
        s.repo.display()
    );
    write(&p, text);
    p
}

fn run_job(s: &Sandbox, cfg: &Path, job: &str) -> Run {
    s.bare(["--config", cfg.to_str().unwrap(), "--event-log"])
        .arg(&s.events)
        .arg("run")
        .arg(job)
}

fn events_named(s: &Sandbox, name: &str) -> Vec<Value> {
    s.events()
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

fn step_codes(summary: &Value) -> Vec<(String, Option<i64>)> {
    summary["figures"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["exit_code"].as_i64(),
            )
        })
        .collect()
}

#[test]
fn config_errors_have_line_and_column() {
    let s = Sandbox::new();
    let p = s.path("cairn.toml");
    write(
        &p,
        "[repositories.main]\nurl = \"/tmp/x\"\npassword = \"hunter2\"\n\n\
         [jobs.home]\nrepository = \"nosuch\"\npaths = [\"/home\"]\nschedule = \"0 25 * * *\"\n\
         \n[jobs.home.verify]\nmax-duration = \"ten minutes\"\n",
    );
    let out = s
        .bare(["--config", p.to_str().unwrap(), "config", "check"])
        .code(2);
    let want = [
        "cairn.toml:3:12: a password must not be written in the config file",
        "cairn.toml:6:14: repository 'nosuch' is not defined",
        "cairn.toml:8:12: schedule '0 25 * * *' is not a valid cron expression",
        "cairn.toml:11:16: max-duration 'ten minutes' is not a duration",
    ];
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), want.len(), "{}", out.dump());
    for (l, w) in lines.iter().zip(want) {
        assert!(
            l.starts_with("error: ") && l.contains(w),
            "{l:?} should contain {w:?}"
        );
    }

    // An unknown key: the parser's error, with its place.
    write(
        &p,
        "[repositories.main]\nurl = \"/tmp/x\"\n[jobs.home]\nrepository = \"main\"\npaths = [\"/home\"]\n\
         [jobs.home.retention]\nkeep-daily = 7\n    retension = 3\n",
    );
    let out = s
        .bare(["--config", p.to_str().unwrap(), "config", "check"])
        .code(2);
    assert!(
        out.stderr
            .contains("cairn.toml:8:5: unknown key 'retension'"),
        "{}",
        out.dump()
    );
    // run and schedule refuse a broken file the same way.
    let out = s
        .bare(["--config", p.to_str().unwrap(), "run", "home"])
        .code(2);
    assert!(out.stderr.contains("cairn.toml:8:5:"), "{}", out.dump());
}

#[test]
fn readme_example_configs_parse() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in readme.lines() {
        match &mut cur {
            None if line.trim() == "```toml" => cur = Some(String::new()),
            Some(b) if line.trim() == "```" => {
                blocks.push(std::mem::take(b));
                cur = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    assert!(!blocks.is_empty(), "no ```toml block in the README");
    let s = Sandbox::new();
    for (i, b) in blocks.iter().enumerate() {
        let p = s.path(format!("readme-{i}.toml"));
        write(&p, b);
        let out = s
            .bare(["--json", "--config", p.to_str().unwrap(), "config", "check"])
            .ok();
        let v = out.json();
        assert!(!v["jobs"].as_array().unwrap().is_empty(), "{v}");
        for j in v["jobs"].as_array().unwrap() {
            assert!(j["next_run"].is_string(), "job without next run: {j}");
        }
        // And each translates into systemd units.
        s.bare([
            "--config",
            p.to_str().unwrap(),
            "schedule",
            "install",
            "--systemd",
            "--dir",
        ])
        .arg(s.path(format!("units-{i}")))
        .ok();
    }
}

/// A clock that jumps: sleeping is instant; `oversleep` makes one sleep end
/// later than asked (the machine was suspended).
struct FakeClock {
    now: Cell<DateTime<Utc>>,
    end: DateTime<Utc>,
    oversleep: RefCell<Option<(DateTime<Utc>, chrono::Duration)>>,
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        self.now.get()
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> bool {
        if t > self.end {
            return false;
        }
        let mut wake = t.max(self.now.get());
        let mut o = self.oversleep.borrow_mut();
        if let Some((after, extra)) = *o {
            if t >= after {
                wake += extra;
                *o = None;
            }
        }
        self.now.set(wake);
        true
    }
}

fn utc(h: u32, m: u32, sec: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, h, m, sec).unwrap()
}

fn sched(expr: &str) -> Schedule {
    Schedule::parse(expr, Some(chrono_tz::UTC)).unwrap()
}

/// Runs the scheduler over `clock` (each run taking 90 s of fake time);
/// returns (job, start time) per run.
fn simulate(clock: &FakeClock, entries: &[Entry]) -> Vec<(String, DateTime<Utc>)> {
    let mut runs = Vec::new();
    scheduler::run(clock, entries, &mut |job, _due| {
        runs.push((job.to_string(), clock.now()));
        clock.now.set(clock.now() + chrono::Duration::seconds(90));
        true
    });
    runs
}

#[test]
fn injected_clock_runs_a_day_of_schedules() {
    let started = Instant::now();
    let start = utc(0, 0, 30);
    let clock = FakeClock {
        now: Cell::new(start),
        end: start + chrono::Duration::days(1),
        oversleep: RefCell::new(None),
    };
    let entries = [
        Entry {
            job: "hourly".into(),
            schedule: sched("hourly"),
            last_run: None,
        },
        Entry {
            job: "nightly".into(),
            schedule: sched("0 2 * * *"),
            last_run: None,
        },
        Entry {
            job: "quarter".into(),
            schedule: sched("*/15 * * * *"),
            last_run: None,
        },
    ];
    let runs = simulate(&clock, &entries);
    let count = |j: &str| runs.iter().filter(|(n, _)| n == j).count();
    assert_eq!(count("hourly"), 24, "{runs:?}");
    assert_eq!(count("nightly"), 1, "{runs:?}");
    // Every quarter hour; the ones at full hours wait 90 s behind "hourly" but still run.
    assert_eq!(count("quarter"), 96, "{runs:?}");
    let nightly = runs.iter().find(|(n, _)| n == "nightly").unwrap().1;
    // Due at 02:00 together with "hourly", which was first: it starts when that run ends.
    assert_eq!(nightly, utc(2, 1, 30));
    // Never two at once: each run starts after the previous one ended.
    for w in runs.windows(2) {
        assert!(w[1].1 >= w[0].1 + chrono::Duration::seconds(90), "{w:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn injected_clock_catches_up_once_after_a_sleep() {
    let start = utc(0, 0, 30);
    // The machine sleeps from before 06:00 to 11:10: five hourly runs missed.
    let clock = FakeClock {
        now: Cell::new(start),
        end: start + chrono::Duration::days(1),
        oversleep: RefCell::new(Some((utc(6, 0, 0), chrono::Duration::minutes(310)))),
    };
    let entries = [Entry {
        job: "hourly".into(),
        schedule: sched("hourly"),
        last_run: None,
    }];
    let times: Vec<DateTime<Utc>> = simulate(&clock, &entries)
        .into_iter()
        .map(|r| r.1)
        .collect();
    let mut want: Vec<DateTime<Utc>> = (1..=5).map(|h| utc(h, 0, 0)).collect();
    want.push(utc(11, 10, 0)); // the one catch-up
    want.extend((12..=23).map(|h| utc(h, 0, 0)));
    want.push(Utc.with_ymd_and_hms(2024, 3, 2, 0, 0, 0).unwrap());
    assert_eq!(times, want);

    // A run missed while no scheduler ran (last run yesterday 02:00, now 03:00):
    // caught up once at start, then the normal time.
    let clock = FakeClock {
        now: Cell::new(utc(3, 0, 0)),
        end: utc(3, 0, 0) + chrono::Duration::days(1),
        oversleep: RefCell::new(None),
    };
    let entries = [Entry {
        job: "nightly".into(),
        schedule: sched("0 2 * * *"),
        last_run: Some(utc(2, 0, 0) - chrono::Duration::days(1)),
    }];
    let times: Vec<DateTime<Utc>> = simulate(&clock, &entries)
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        times,
        [
            utc(3, 0, 0),
            Utc.with_ymd_and_hms(2024, 3, 2, 2, 0, 0).unwrap()
        ]
    );
}

#[test]
fn run_job_steps_and_exit_codes() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a.txt"), "alpha");
    let gone = s.path("gone.txt");
    let cfg = config(
        &s,
        &format!(
            "[jobs.ok]\nrepository = \"main\"\npaths = [\"{src}\"]\ntags = [\"files\"]\n\
             [jobs.ok.retention]\nkeep-last = 1\nprune = true\n\
             [jobs.ok.verify]\nshare = \"100%\"\nevery = \"weekly\"\n\n\
             [jobs.partial]\nrepository = \"main\"\npaths = [\"{src}\", \"{gone}\"]\n\
             [jobs.partial.retention]\nkeep-last = 1\n\
             [jobs.partial.verify]\nshare = \"100%\"\n\n\
             [jobs.blocked]\nrepository = \"main\"\npaths = [\"{src}\"]\nbefore = \"echo not today >&2; exit 4\"\n",
            src = src.display(),
            gone = gone.display()
        ),
    );

    // All steps succeed; the verification is then not due for a week.
    run_job(&s, &cfg, "ok").ok();
    run_job(&s, &cfg, "ok").ok();
    let done = events_named(&s, "run.completed");
    assert_eq!(done.len(), 2);
    assert_eq!(
        step_codes(&done[0]),
        [
            ("backup".to_string(), Some(0)),
            ("forget".into(), Some(0)),
            ("verify".into(), Some(0))
        ]
    );
    assert_eq!(step_codes(&done[1])[2], ("verify".to_string(), None));
    assert_eq!(done[1]["figures"]["steps"][2]["skipped"], "not due");
    let snaps = s.snapshots(&["--tag", "job=ok"]);
    assert_eq!(snaps.len(), 1, "keep-last 1 of the job's snapshots");
    assert!(snaps[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "files"));
    let state: Value =
        serde_json::from_slice(&std::fs::read(s.path("state/cairn/jobs/ok.json")).unwrap())
            .unwrap();
    assert!(
        state["last_verify"].is_string() && state["last_run"].is_string(),
        "{state}"
    );

    // A backup that could not read a file: exit 3, verification still runs,
    // retention does not.
    let out = run_job(&s, &cfg, "partial").code(3);
    assert!(out.stderr.contains("gone.txt"), "{}", out.dump());
    let sum = events_named(&s, "run.completed").pop().unwrap();
    assert_eq!(sum["severity"], "warning");
    assert_eq!(sum["figures"]["exit_code"], 3);
    assert_eq!(
        step_codes(&sum),
        [
            ("backup".to_string(), Some(3)),
            ("forget".into(), None),
            ("verify".into(), Some(0))
        ]
    );

    // A failing `before` skips the job and is reported.
    let before = s.snapshot_count();
    let out = run_job(&s, &cfg, "blocked").code(1);
    assert!(out.stderr.contains("not today"), "{}", out.dump());
    assert_eq!(s.snapshot_count(), before, "the job ran despite its before");
    let failed = events_named(&s, "run.failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["severity"], "critical");
    assert_eq!(
        step_codes(&failed[0]),
        [("before".to_string(), Some(1)), ("backup".into(), None)]
    );

    // An unknown job is a usage error.
    run_job(&s, &cfg, "nosuch").code(2);
}

#[test]
fn run_job_verification_and_drill_steps_run() {
    // The verification pass and the drill run after the backup (both are due
    // on a first run), with the job's tag as their filter; the run's exit code
    // is the first failing step's, else 0.
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a.txt"), "alpha");
    let cfg = config(
        &s,
        &format!(
            "[jobs.j]\nrepository = \"main\"\npaths = [\"{}\"]\n\
             [jobs.j.verify]\nmax-duration = \"10m\"\n[jobs.j.drill]\nfiles = 3\n",
            src.display()
        ),
    );
    let o = run_job(&s, &cfg, "j").run();
    let sum = events_named(&s, "run.completed")
        .into_iter()
        .chain(events_named(&s, "run.failed"))
        .next()
        .unwrap();
    let steps = step_codes(&sum);
    assert_eq!(steps[0], ("backup".to_string(), Some(0)));
    assert_eq!(steps[1].0, "verify");
    assert_eq!(
        o.code.map(i64::from),
        steps[1].1.filter(|c| *c != 0).or(Some(0))
    );
}

/// Holds a job's lock from the test process, as another `cairn run` would.
fn hold_lock(s: &Sandbox, job: &str) -> std::fs::File {
    let dir = s.path("state/cairn/jobs");
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{job}.lock")))
        .unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    f
}

#[test]
fn job_lock_prevents_overlapping_runs() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a.txt"), "alpha");
    let cfg = config(
        &s,
        &format!(
            "[jobs.j]\nrepository = \"main\"\npaths = [\"{}\"]\nschedule = \"* * * * * *\"\n",
            src.display()
        ),
    );
    let lock = hold_lock(&s, "j");
    let out = run_job(&s, &cfg, "j").code(11);
    out.assert_one_error_line("already running");
    assert_eq!(s.snapshot_count(), 0);

    // The scheduler skips the job's times while the lock is held.
    let mut child = s
        .base()
        .args(["--config", cfg.to_str().unwrap(), "--event-log"])
        .arg(&s.events)
        .args(["schedule", "run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while events_named(&s, "run.skipped").len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(events_named(&s, "run.skipped").len() >= 2);
    assert!(events_named(&s, "run.completed").is_empty());
    assert_eq!(s.snapshot_count(), 0);

    drop(lock);
    run_job(&s, &cfg, "j").ok();
    assert_eq!(s.snapshot_count(), 1);
}

#[test]
fn schedule_run_every_second_then_sigterm() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a.txt"), "alpha");
    let cfg = config(
        &s,
        &format!(
            "[jobs.tick]\nrepository = \"main\"\npaths = [\"{}\"]\nschedule = \"* * * * * *\"\n",
            src.display()
        ),
    );
    let child = s
        .base()
        .args(["--config", cfg.to_str().unwrap(), "--event-log"])
        .arg(&s.events)
        .args(["schedule", "run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while events_named(&s, "run.completed").len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_no_panic("schedule run", &out.stdout, &out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let done = events_named(&s, "run.completed");
    assert!(done.len() >= 2, "{stderr}");
    assert!(events_named(&s, "run.failed").is_empty(), "{stderr}");
    // Each step was logged, and runs never overlapped (the lock was free each time).
    assert!(events_named(&s, "run.step").len() >= 2);
    assert!(events_named(&s, "run.skipped").is_empty());
    assert!(s.snapshot_count() >= 2);
    assert_eq!(events_named(&s, "schedule.stopped").len(), 1, "{stderr}");
}

#[test]
fn sigterm_reaches_the_running_step() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a.txt"), "alpha");
    let marker = s.path("hook-finished");
    let cfg = config(
        &s,
        &format!(
            "[jobs.slow]\nrepository = \"main\"\npaths = [\"{}\"]\nschedule = \"* * * * * *\"\n\
             before = \"sleep 30; touch {}\"\n",
            src.display(),
            marker.display()
        ),
    );
    let child = s
        .base()
        .args(["--config", cfg.to_str().unwrap(), "--event-log"])
        .arg(&s.events)
        .args(["schedule", "run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the hook runs (its job lock is taken), then stop the scheduler.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.path("state/cairn/jobs/slow.lock").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "the step was not stopped"
    );
    let failed = events_named(&s, "run.failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(step_codes(&failed[0])[0], ("before".to_string(), Some(1)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists(), "the hook's children outlived the stop");
    assert_eq!(s.snapshot_count(), 0);
}

fn systemd_analyze() -> Option<&'static str> {
    let p = "/usr/bin/systemd-analyze";
    if Path::new(p).exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").is_err(),
        "systemd-analyze is missing under CI=true: .ci/run installs Debian's systemd package"
    );
    eprintln!("skipping the systemd-analyze checks: systemd-analyze is not installed");
    None
}

#[test]
fn systemd_units_are_written_and_verified() {
    let s = Sandbox::new();
    let cfg = config(
        &s,
        "[jobs.home]\nrepository = \"main\"\npaths = [\"/home\"]\nschedule = \"30 1 * * *\"\ntimezone = \"Europe/Berlin\"\n\n\
         [jobs.db]\nrepository = \"main\"\ndump-command = \"pg_dumpall\"\ndump-name = \"all.sql\"\nschedule = \"0 */6 * * 1-5\"\nrandomized-delay = \"2m\"\n\n\
         [jobs.manual]\nrepository = \"main\"\npaths = [\"/srv\"]\n",
    );
    let dir = s.path("units");
    let out = s
        .bare([
            "--config",
            cfg.to_str().unwrap(),
            "schedule",
            "install",
            "--systemd",
            "--user",
            "--dir",
        ])
        .arg(&dir)
        .ok();
    assert!(
        out.stdout().contains("systemctl --user enable --now"),
        "{}",
        out.dump()
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "cairn-db.service",
            "cairn-db.timer",
            "cairn-home.service",
            "cairn-home.timer"
        ]
    );
    let timer = std::fs::read_to_string(dir.join("cairn-home.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=*-*-* 01:30:00 Europe/Berlin\n"),
        "{timer}"
    );
    assert!(timer.contains("Persistent=true\n") && timer.contains("RandomizedDelaySec=300\n"));
    let db = std::fs::read_to_string(dir.join("cairn-db.timer")).unwrap();
    assert!(
        db.contains("OnCalendar=Mon..Fri *-*-* 00/6:00:00\n"),
        "{db}"
    );
    assert!(db.contains("RandomizedDelaySec=120\n"));
    let service = std::fs::read_to_string(dir.join("cairn-home.service")).unwrap();
    assert!(
        service.contains(" run home\n") && service.contains("--config"),
        "{service}"
    );

    if let Some(sa) = systemd_analyze() {
        let units: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        let o = std::process::Command::new(sa)
            .arg("verify")
            .args(&units)
            .output()
            .unwrap();
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "systemd-analyze verify: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        for cal in [
            "*-*-* 01:30:00 Europe/Berlin",
            "Mon..Fri *-*-* 00/6:00:00",
            "*-*-* *:00/15:00",
            "Sat,Sun *-01,07-* 09..17:00:00",
        ] {
            let o = std::process::Command::new(sa)
                .args(["calendar", cal])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "systemd-analyze calendar {cal:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    // No equivalent: refused, nothing written.
    let cfg2 = s.path("bad.toml");
    write(
        &cfg2,
        "[repositories.main]\nurl = \"/x\"\n[jobs.odd]\nrepository = \"main\"\npaths = [\"/\"]\nschedule = \"0 0 1 * 1\"\n",
    );
    let dir2 = s.path("units2");
    let out = s
        .bare([
            "--config",
            cfg2.to_str().unwrap(),
            "schedule",
            "install",
            "--systemd",
            "--dir",
        ])
        .arg(&dir2)
        .code(2);
    out.assert_one_error_line("no systemd OnCalendar= equivalent");
    assert!(!dir2.exists());
}

/// A dump command whose first stage fails is a failed backup even when the
/// last stage of its pipeline succeeds (`pg_dump nosuchdb | gzip`): dump
/// commands run with pipefail (issue 18).
#[test]
fn a_failing_stage_of_a_dump_pipeline_fails_the_job() {
    if !std::path::Path::new("/bin/bash").exists()
        && !std::path::Path::new("/usr/bin/bash").exists()
    {
        eprintln!("skipping: no bash here, so dump commands run without pipefail");
        return;
    }
    let s = Sandbox::init();
    let cfg = config(
        &s,
        "[jobs.pipe]\nrepository = \"main\"\ndump-command = \"sh -c 'echo half; exit 5' | gzip\"\ndump-name = \"db.sql.gz\"\n",
    );
    let out = run_job(&s, &cfg, "pipe").run();
    assert_ne!(out.code, Some(0), "{}", out.dump());
    assert_eq!(s.snapshot_count(), 0, "a failed dump saves no snapshot");
}

/// With no config file anywhere, `config check` says so and how to give one,
/// without naming a place in a file nobody gave; an unreadable `--config`
/// names the file, with no line or column.
#[test]
fn missing_config_files_are_named_plainly() {
    let s = Sandbox::new();
    if std::path::Path::new("/etc/cairn/cairn.toml").exists() {
        return; // this machine has a system-wide config
    }
    let out = s.bare(["config", "check"]).code(2);
    assert!(
        out.stderr.contains("no config file: give --config FILE"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(":0:0"), "{}", out.stderr);
    let missing = s.path("none.toml");
    let out = s
        .bare(["--config", missing.to_str().unwrap(), "config", "check"])
        .code(2);
    assert!(
        out.stderr.contains(&format!(
            "{}: cannot read the config file",
            missing.display()
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(":0:0"), "{}", out.stderr);
}

#[test]
fn schedule_uninstall_removes_only_what_install_wrote() {
    let s = Sandbox::new();
    let cfg = config(
        &s,
        "[jobs.home]\nrepository = \"main\"\npaths = [\"/home\"]\nschedule = \"30 1 * * *\"\n",
    );
    let dir = s.path("units");
    let cfg = cfg.to_str().unwrap();
    s.bare(["--config", cfg, "schedule", "install", "--systemd", "--dir"])
        .arg(&dir)
        .ok();
    // An enabled timer's link, and a unit of the user's own.
    std::fs::create_dir_all(dir.join("timers.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        dir.join("cairn-home.timer"),
        dir.join("timers.target.wants/cairn-home.timer"),
    )
    .unwrap();
    write(
        &dir.join("cairn-mine.service"),
        "[Service]\nExecStart=/bin/true\n",
    );
    // Needs no config: the job may be gone from it already.
    let out = s
        .bare(["schedule", "uninstall", "--systemd", "--dir"])
        .arg(&dir)
        .ok();
    assert!(out.stdout().contains("removed"), "{}", out.dump());
    assert!(
        out.stdout().contains("stop cairn-home.timer"),
        "{}",
        out.dump()
    );
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["cairn-mine.service", "timers.target.wants"]);
    assert!(std::fs::read_dir(dir.join("timers.target.wants"))
        .unwrap()
        .next()
        .is_none());
    // Again: nothing left to remove, still exit 0.
    let out = s.bare(["schedule", "uninstall", "--dir"]).arg(&dir).ok();
    assert!(
        out.stdout().contains("no unit written by"),
        "{}",
        out.dump()
    );
    s.bare(["schedule", "uninstall", "--dir"])
        .arg(s.path("nowhere"))
        .code(2);
}

#[test]
fn a_line_break_in_a_path_cannot_inject_into_a_unit() {
    let s = Sandbox::new();
    let odd = s.path("odd\nExecStartPre=/bin/sh -c evil\n");
    std::fs::create_dir_all(&odd).unwrap();
    let cfg = odd.join("cairn.toml");
    write(
        &cfg,
        format!(
            "[repositories.main]\nurl = \"{}\"\n\n[jobs.home]\nrepository = \"main\"\npaths = [\"/home\"]\nschedule = \"30 1 * * *\"\n",
            s.repo.display()
        ),
    );
    let dir = s.path("units");
    let out = s
        .bare(["schedule", "install", "--systemd", "--dir"])
        .arg(&dir)
        .arg("--config")
        .arg(&cfg)
        .code(2);
    out.assert_one_error_line("control character");
    assert!(!dir.join("cairn-home.service").exists());
}

#[test]
fn config_show_and_schedule_list_say_everything_resolved() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a"), "alpha");
    let cfg = config(
        &s,
        &format!(
            "[jobs.home]\nrepository = \"main\"\npaths = [\"{}\"]\nschedule = \"30 1 * * *\"\ntags = [\"nightly\"]\n\
             [jobs.home.retention]\nkeep-daily = 7\nkeep-within = \"30d\"\nkeep-at-most = 20\nprune = true\n\
             [jobs.home.verify]\nmax-duration = \"10m\"\nevery = \"7d\"\n\
             [jobs.home.drill]\nevery = \"30d\"\nfiles = 5\n",
            src.display()
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let js = s
        .bare(["--config", cfg, "config", "show", "--json"])
        .ok()
        .json();
    let job = &js["jobs"][0];
    assert_eq!(job["job"], "home", "{js}");
    assert_eq!(job["retention"]["keep_daily"], 7, "{js}");
    assert_eq!(job["retention"]["keep_at_most"], 20, "{js}");
    assert_eq!(job["retention"]["keep_within_seconds"], 30 * 86400, "{js}");
    assert_eq!(job["retention"]["prune"], true, "{js}");
    assert_eq!(job["verify"]["max_duration"], "10m", "{js}");
    assert_eq!(job["verify"]["every_seconds"], 7 * 86400, "{js}");
    assert_eq!(job["drill"]["files"], 5, "{js}");
    assert!(job["next_run"].is_string(), "{js}");
    assert!(job["last_run"].is_null(), "{js}");
    assert_eq!(js["repositories"][0]["name"], "main", "{js}");

    let out = s.bare(["--config", cfg, "schedule", "list"]).ok();
    assert!(out.stdout().contains("never run"), "{}", out.dump());
    run_job(&s, Path::new(cfg), "home").ok();
    let out = s.bare(["--config", cfg, "schedule", "list"]).ok();
    assert!(out.stdout().contains("last run"), "{}", out.dump());
    assert!(out.stdout().contains("(exit 0)"), "{}", out.dump());
    let js = s
        .bare(["--config", cfg, "schedule", "list", "--json"])
        .ok()
        .json();
    assert_eq!(js[0]["last_exit_code"], 0, "{js}");
}

/// Run as root, a config that runs commands and that others may change is
/// refused (as sudo and cron refuse such files).
#[test]
fn a_config_others_may_write_is_refused_when_it_runs_commands_as_root() {
    if !is_root() {
        eprintln!("skipping: only root is refused such a file");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let s = Sandbox::init();
    let cfg = config(
        &s,
        "[jobs.j]\nrepository = \"main\"\npaths = [\"/etc/hostname\"]\nbefore = \"true\"\n",
    );
    let c = cfg.to_str().unwrap();
    s.bare(["--config", c, "config", "check"]).ok();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = s.bare(["--config", c, "config", "check"]).code(2);
    out.assert_one_error_line("chmod go-w");
    run_job(&s, &cfg, "j").code(2);
    // Without commands there is nothing to run as root: accepted.
    write(&cfg, format!("[repositories.main]\nurl = \"{}\"\n\n[jobs.j]\nrepository = \"main\"\npaths = [\"/etc/hostname\"]\n", s.repo.display()));
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    s.bare(["--config", c, "config", "check"]).ok();
}

/// Each step of a scheduled job writes its own series, labelled with the job
/// and its repository, and so does the run: the "last success older than
/// 26 h" alert works for jobs.
#[test]
fn a_jobs_steps_write_their_metrics_with_job_labels() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a"), "alpha");
    let cfg = config(
        &s,
        &format!(
            "[jobs.home]\nrepository = \"main\"\npaths = [\"{}\"]\n[jobs.home.retention]\nkeep-last = 3\nprune = true\n",
            src.display()
        ),
    );
    let metrics = s.path("m.prom");
    run_job(&s, &cfg, "home")
        .arg("--metrics-file")
        .arg(&metrics)
        .ok();
    let text = std::fs::read_to_string(&metrics).unwrap();
    let repo = s.repo.display().to_string();
    for command in ["backup", "forget", "run"] {
        let series = format!(
            "cairn_last_success_timestamp_seconds{{command=\"{command}\",job=\"home\",repository=\"{repo}\"}}"
        );
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "cairn_backup_files_processed{{host=\"{}\",job=\"home\",repository=\"{repo}\"}} 1",
            hostname::get().unwrap().to_string_lossy()
        )),
        "{text}"
    );
    let steps: Vec<Value> = events_named(&s, "backup.completed");
    assert_eq!(steps.last().unwrap()["job"], "home", "{steps:?}");
    let run = events_named(&s, "run.completed");
    assert_eq!(run.last().unwrap()["repository"], repo.as_str(), "{run:?}");
    assert!(run.last().unwrap()["figures"].get("command").is_none());
}

/// Offsite copies get their own retention, and a job may only maintain (no
/// backup): the bucket does not grow forever.
#[test]
fn copy_destinations_get_retention_and_maintenance_jobs_run() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a"), "alpha");
    let dest = s.path("offsite");
    s.bare(["-r", dest.to_str().unwrap(), "init"]).ok();
    let cfg = config(
        &s,
        &format!(
            "[repositories.offsite]\nurl = \"{}\"\n\n\
             [jobs.home]\nrepository = \"main\"\npaths = [\"{}\"]\ncopy-to = [\"offsite\"]\n\
             [jobs.home.copy-retention]\nkeep-last = 1\nprune = true\n\n\
             [jobs.tidy]\nrepository = \"main\"\n[jobs.tidy.retention]\nkeep-last = 2\n",
            dest.display(),
            src.display()
        ),
    );
    for i in 0..3 {
        write(&src.join("a"), format!("alpha {i}"));
        let summary = run_job(&s, &cfg, "home").arg("--json").ok().json();
        let names: Vec<String> = summary["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| st["step"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            ["backup", "copy:offsite", "forget:offsite"],
            "{summary}"
        );
    }
    let count = |repo: &Path| {
        s.bare(["-r", repo.to_str().unwrap(), "snapshots", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(&dest), 1);
    assert_eq!(count(&s.repo), 3);
    let summary = run_job(&s, &cfg, "tidy").arg("--json").ok().json();
    assert_eq!(summary["steps"][0]["step"], "forget", "{summary}");
    assert_eq!(count(&s.repo), 2);
    let js = s
        .bare([
            "--config",
            cfg.to_str().unwrap(),
            "config",
            "show",
            "--json",
        ])
        .ok()
        .json();
    let home = js["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "home")
        .unwrap()
        .clone();
    assert_eq!(home["copy_retention"]["keep_last"], 1, "{js}");

    // A job with nothing to do is still an error.
    let bad = config(&s, "[jobs.idle]\nrepository = \"main\"\n");
    let out = s
        .bare(["--config", bad.to_str().unwrap(), "config", "check"])
        .code(2);
    assert!(out.stderr.contains("has nothing to do"), "{}", out.dump());
}

/// A job that fails runs again after its retry delay; computed tags are
/// taken when it runs.
#[test]
fn jobs_retry_with_backoff_and_compute_tags() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a"), "alpha");
    let flag = s.path("flag");
    let cfg = config(
        &s,
        &format!(
            "[jobs.home]\nrepository = \"main\"\npaths = [\"{}\"]\nretries = 2\nretry-delay = \"1s\"\n\
             before = \"test -e '{}' || {{ touch '{}'; exit 1; }}\"\n\
             tag-commands = {{ commit = \"echo abc123\" }}\n",
            src.display(),
            flag.display(),
            flag.display()
        ),
    );
    let t = std::time::Instant::now();
    let summary = run_job(&s, &cfg, "home").arg("--json").ok().json();
    assert_eq!(summary["attempts"], 2, "{summary}");
    assert_eq!(summary["exit_code"], 0, "{summary}");
    assert!(t.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(s.snapshots(&["--tag", "commit=abc123"]).len(), 1);

    // Out of retries: the last failure is the result.
    let cfg = config(
        &s,
        &format!(
            "[jobs.home]\nrepository = \"main\"\npaths = [\"{}\"]\nretries = 1\nretry-delay = \"1s\"\nbefore = \"exit 1\"\n",
            src.display()
        ),
    );
    let out = run_job(&s, &cfg, "home").arg("--json").code(1);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["attempts"], 2, "{summary}");
}

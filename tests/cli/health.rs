//! `health` that cannot be fooled: verification age and coverage, drills,
//! shrunken snapshots, free space, filters, and bad flags.

use crate::common;
use common::*;

use serde_json::Value;

fn ago(hours: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::hours(hours))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn kinds(js: &Value) -> Vec<String> {
    js["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_repository_never_verified_fails_once_it_is_older_than_the_limit() {
    let s = Sandbox::init();
    let (src, _) = s.small_tree();
    let src = src.to_str().unwrap();
    // Data from 10 days ago and from an hour ago: nothing is stale, but
    // nothing was ever verified in 10 days.
    s.backup([src, "--time", &ago(240)]);
    s.backup([src, "--time", &ago(1)]);
    let js = s.cmd(["health", "--json"]).code(1).json();
    assert_eq!(kinds(&js), ["verification_missing"], "{js}");
    let out = s.cmd(["health"]).code(1);
    assert!(
        out.stderr
            .contains("problem: no verification pass has ever completed"),
        "{}",
        out.dump()
    );
    // A wider limit gives the repository time.
    s.json(["health", "--max-verify-age", "30d"]);

    // A complete pass makes it healthy; a pass older than the limit does not.
    s.ok(["check", "--read-data"]);
    let js = s.json(["health"]);
    assert_eq!(js["healthy"], true, "{js}");
    assert_eq!(js["verification"]["result"], "ok", "{js}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let js = s
        .cmd(["health", "--json", "--max-verify-age", "1s"])
        .code(1)
        .json();
    assert_eq!(kinds(&js), ["verification_stale"], "{js}");
}

#[test]
fn low_coverage_and_a_missing_drill_fail_when_asked_for() {
    let s = Sandbox::init();
    let src = s.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        write_random(&src.join(format!("f{i}")), 3 << 20, i);
    }
    s.backup([src.to_str().unwrap(), "--time", &ago(100)]);
    s.backup([src.to_str().unwrap()]);
    // A budgeted pass that reads one pack of several.
    s.ok(["check", "--read-data", "--max-bytes", "1"]);
    let js = s
        .cmd(["health", "--json", "--min-coverage", "100%"])
        .code(1)
        .json();
    assert_eq!(kinds(&js), ["coverage_low"], "{js}");
    let covered = js["verification"]["coverage_30d"].as_f64().unwrap();
    assert!(covered > 0.0 && covered < 1.0, "{js}");
    // The pass may have read a small tree pack or a large data pack: ask for
    // half of what it covered.
    s.json(["health", "--min-coverage", &format!("{}%", covered * 50.0)]);

    let js = s
        .cmd(["health", "--json", "--max-drill-age", "2d"])
        .code(1)
        .json();
    assert_eq!(kinds(&js), ["drill_missing"], "{js}");
    s.ok(["drill"]);
    s.json(["health", "--max-drill-age", "2d"]);
}

#[test]
fn a_snapshot_that_shrank_sharply_is_a_problem() {
    let s = Sandbox::init();
    let src = s.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big"), 1 << 20, 1);
    write(&src.join("small"), "x");
    let p = src.to_str().unwrap();
    s.backup([p, "--time", &ago(3)]);
    std::fs::remove_file(src.join("big")).unwrap();
    s.backup([p, "--time", &ago(2)]);
    let js = s.cmd(["health", "--json"]).code(1).json();
    assert_eq!(kinds(&js), ["size_dropped"], "{js}");
    assert_eq!(js["groups"][0]["shrunk"], true, "{js}");
    let out = s.cmd(["health"]).code(1);
    assert!(
        out.stderr.contains("0% of the previous one's"),
        "{}",
        out.dump()
    );
    // The check can be turned off; an emptied snapshot still counts.
    s.json(["health", "--min-size-ratio", "0%"]);
    std::fs::remove_file(src.join("small")).unwrap();
    s.backup([p, "--time", &ago(1)]);
    let js = s
        .cmd(["health", "--json", "--min-size-ratio", "0"])
        .code(1)
        .json();
    assert_eq!(kinds(&js), ["size_dropped"], "{js}");
    // The next backup of the same size is healthy again.
    s.backup([p]);
    s.json(["health"]);
}

#[test]
fn free_space_and_filters() {
    let s = Sandbox::init();
    let (src, _) = s.small_tree();
    let src = src.to_str().unwrap();
    s.backup([src, "--host", "fresh"]);
    s.backup([src, "--host", "old", "--time", &ago(30)]);
    let js = s.cmd(["health", "--json"]).code(1).json();
    assert_eq!(kinds(&js), ["stale"], "{js}");
    assert!(num(&js, "free_bytes") > 0, "{js}");
    let js = s.json(["health", "--host", "fresh"]);
    assert_eq!(js["groups"].as_array().unwrap().len(), 1, "{js}");
    s.cmd(["health", "--host", "old"]).code(1);
    let js = s
        .cmd(["health", "--json", "--host", "nobody"])
        .code(1)
        .json();
    assert_eq!(kinds(&js), ["no_snapshots"], "{js}");

    let js = s
        .cmd(["health", "--json", "--host", "fresh", "--min-free", "1000P"])
        .code(1)
        .json();
    assert_eq!(kinds(&js), ["low_free_space"], "{js}");
    s.json(["health", "--host", "fresh", "--min-free", "1K"]);
}

#[test]
fn bad_health_flags_are_usage_errors() {
    let s = Sandbox::init();
    for args in [
        ["--min-coverage", "150%"],
        ["--min-coverage", "lots"],
        ["--max-verify-age", "soon"],
        ["--max-drill-age", "-1d"],
        ["--min-free", "10Q"],
        ["--min-size-ratio", "half"],
    ] {
        let out = s
            .cmd(["health"])
            .arg(format!("{}={}", args[0], args[1]))
            .code(2);
        out.assert_one_error_line(args[0]);
    }
}

#[test]
fn health_metrics_name_each_problem_kind() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a"), "alpha");
    s.backup([src.to_str().unwrap(), "--time", &ago(30)]);
    let metrics = s.path("m.prom");
    s.cmd(["health", "--metrics-file", metrics.to_str().unwrap()])
        .code(1);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("cairn_health_problems{kind=\"stale\",repository="),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("cairn_health_problems{kind=\"stale\"") && l.ends_with(" 1")),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("cairn_health_problems{kind=\"drill_failed\"") && l.ends_with(" 0")
        ),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("cairn_healthy{") && l.ends_with(" 0")),
        "{text}"
    );
}

//! `copy --to`: incremental, skips what was copied, re-keys when it must, and
//! its errors; also to S3 (moto).

use crate::common;

use common::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// A second repository in the sandbox (`init --from` the first when `from`).
fn second_repo(sb: &Sandbox, name: &str, from: bool) -> std::path::PathBuf {
    let dst = sb.path(name);
    let mut args = vec!["init", "--kdf-memory", "8", "--kdf-time", "1"];
    let repo = sb.repo.to_str().unwrap().to_string();
    if from {
        args.extend(["--from", &repo]);
    }
    sb.bare(
        ["-r", s(&dst)]
            .iter()
            .chain(args.iter())
            .copied()
            .collect::<Vec<_>>(),
    )
    .ok();
    dst
}

fn copy_json(sb: &Sandbox, to: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["copy", "--to", s(to)];
    a.extend_from_slice(extra);
    sb.json(a)
}

#[test]
fn copy_is_incremental_and_never_copies_twice() {
    let sb = Sandbox::init();
    let src = sb.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big.bin"), 3 << 20, 1);
    write(&src.join("small.txt"), "hello");
    sb.backup([&src]);
    let dst = second_repo(&sb, "dst", true);

    let first = copy_json(&sb, &dst, &[]);
    assert_eq!(num(&first, "snapshots_copied"), 1, "{first}");
    assert_eq!(first["same_blob_ids"], true);
    assert!(num(&first, "blobs_uploaded") >= 3, "{first}");

    // Unchanged source: nothing uploaded.
    let again = copy_json(&sb, &dst, &[]);
    assert_eq!(num(&again, "snapshots_copied"), 0, "{again}");
    assert_eq!(num(&again, "snapshots_skipped"), 1, "{again}");
    assert_eq!(num(&again, "blobs_uploaded"), 0, "{again}");

    // A small change: only its blobs go up.
    write(&src.join("small.txt"), "hello again");
    sb.backup([&src]);
    let third = copy_json(&sb, &dst, &[]);
    assert_eq!(num(&third, "snapshots_copied"), 1, "{third}");
    assert!(num(&third, "bytes_uploaded") < 100_000, "{third}");

    let other = |args: &[&str]| {
        let mut a = vec!["-r", s(&dst)];
        a.extend_from_slice(args);
        sb.bare(a).env("CAIRN_PASSWORD", PASSWORD)
    };
    other(&["check", "--read-data"]).ok();
    let t = sb.path("t");
    other(&["restore", "latest", "--target", s(&t)]).ok();
    assert_same_tree(&src, &restored_path(&t, &src));
    // Copies remember their original.
    let snaps = other(&["snapshots", "--json"]).ok().json();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
}

#[test]
fn copy_to_a_repository_with_its_own_keys_rewrites_blobs() {
    let sb = Sandbox::init();
    let src = sb.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("a.bin"), 1 << 20, 2);
    write(&src.join("d/b.txt"), "b");
    sb.backup([&src]);
    let dst = second_repo(&sb, "other", false);
    let out = sb.cmd(["copy", "--to", s(&dst)]).ok();
    assert!(out.stderr.contains("init --from"), "{}", out.stderr);
    let again = copy_json(&sb, &dst, &[]);
    assert_eq!(again["same_blob_ids"], false);
    assert_eq!(num(&again, "snapshots_copied"), 0);
    let t = sb.path("t");
    sb.bare(["-r", s(&dst), "restore", "latest", "--target", s(&t)])
        .env("CAIRN_PASSWORD", PASSWORD)
        .ok();
    assert_same_tree(&src, &restored_path(&t, &src));
    sb.bare(["-r", s(&dst), "check", "--read-data"])
        .env("CAIRN_PASSWORD", PASSWORD)
        .ok();
}

#[test]
fn copy_selects_by_id_and_filter() {
    let sb = Sandbox::init();
    let src = sb.path("src");
    write(&src.join("f"), "1");
    let a = text(&sb.backup(["--host", "alpha", s(&src)]), "snapshot_id").to_string();
    write(&src.join("f"), "2");
    sb.backup(["--host", "beta", s(&src)]);
    let dst = second_repo(&sb, "dst", true);
    let out = copy_json(&sb, &dst, &["--host", "beta"]);
    assert_eq!(num(&out, "snapshots_copied"), 1, "{out}");
    let out = copy_json(&sb, &dst, &[&a[..8]]);
    assert_eq!(num(&out, "snapshots_copied"), 1, "{out}");
    let out = copy_json(&sb, &dst, &[]);
    assert_eq!(num(&out, "snapshots_copied"), 0, "{out}");
}

#[test]
fn copy_errors_name_the_destination() {
    let sb = Sandbox::init();
    let src = sb.path("src");
    write(&src.join("f"), "1");
    sb.backup([&src]);
    let missing = sb.path("nowhere");
    sb.cmd(["copy", "--to", s(&missing)]).code(10);
    let dst = second_repo(&sb, "dst", true);
    sb.cmd(["copy", "--to", s(&dst)])
        .env("CAIRN_TO_PASSWORD", "not the password")
        .code(12);
    sb.cmd(["copy", "--to", s(&dst), "--to-option", "novalue"])
        .code(2);
}

#[test]
fn copy_to_s3_is_incremental() {
    let Some(moto) = servers::start_moto() else {
        return;
    };
    moto.make_bucket("cairn-copy");
    let sb = Sandbox::init();
    let src = sb.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big.bin"), 2 << 20, 3);
    sb.backup([&src]);
    let url = "s3://cairn-copy/home";
    let opts = moto.option_args();
    let mut init = vec!["-r".to_string(), url.to_string()];
    init.extend(opts.iter().cloned());
    init.extend(["init", "--kdf-memory", "8", "--kdf-time", "1", "--from"].map(String::from));
    init.push(s(&sb.repo).to_string());
    sb.bare(&init).ok();
    let to_opts: Vec<String> = moto
        .options()
        .into_iter()
        .flat_map(|(k, v)| ["--to-option".to_string(), format!("{k}={v}")])
        .collect();
    let mut args = vec!["copy".to_string(), "--to".into(), url.into()];
    args.extend(to_opts);
    let first = sb.json(&args);
    assert_eq!(num(&first, "snapshots_copied"), 1, "{first}");
    let again = sb.json(&args);
    assert_eq!(num(&again, "blobs_uploaded"), 0, "{again}");
    let mut check = vec!["-r".to_string(), url.to_string()];
    check.extend(opts);
    check.extend(["check", "--read-data"].map(String::from));
    sb.bare(&check).env("CAIRN_PASSWORD", PASSWORD).ok();
}

/// On a terminal, a copy shows which snapshot it copies and what it stored
/// (a first copy to a bucket runs for hours; it must not be silent).
#[test]
fn copy_shows_progress_on_a_terminal() {
    let sb = Sandbox::init();
    let src = sb.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big"), 3 << 20, 7);
    sb.backup([&src]);
    let dst = second_repo(&sb, "dst", true);
    // 1 MiB/s: the copy takes seconds, so the line is drawn.
    let shown = sb.on_terminal(&["copy", "--to", s(&dst), "--limit-upload", "1024"]);
    assert!(shown.contains("copying snapshot 1 of 1"), "{shown}");
    assert!(shown.contains("stored"), "{shown}");
    assert!(shown.contains("1 snapshots copied"), "{shown}");
    // Piped (not a terminal), nothing of it.
    let piped = sb.ok(["copy", "--to", s(&dst)]);
    assert!(
        !piped.stderr.contains("copying snapshot"),
        "{}",
        piped.dump()
    );
}

/// `--to-password-command` (what a job's destination with a password
/// command uses): the right password copies, a wrong one is exit 12.
#[test]
fn copy_takes_the_destination_password_from_a_command() {
    let sb = Sandbox::init();
    let (_src, _) = sb.small_tree();
    let dst = second_repo(&sb, "dst", true);
    let right = format!("printf %s '{PASSWORD}'");
    sb.cmd(["copy", "--to", s(&dst), "--to-password-command", &right])
        .ok();
    sb.cmd([
        "copy",
        "--to",
        s(&dst),
        "--to-password-command",
        "echo wrong",
    ])
    .code(12);
}

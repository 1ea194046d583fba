//! Hardening: usage mistakes exit 2 with one clear line, failed commands leave
//! nothing behind, local repositories are private, secrets do not leak to child
//! processes or `cat config`, and locks that are lost or dated in the future are
//! handled.

use crate::common;

use std::fs;
use std::path::Path;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---- A. usage mistakes ------------------------------------------------------

#[test]
fn forget_with_a_policy_that_keeps_nothing_is_a_usage_error() {
    let sb = Sandbox::init();
    let src = sb.path("src");
    write(&src.join("f"), "x");
    sb.ok(["backup", s(&src), "--time", "2024-01-01 10:00:00"]);
    sb.ok(["backup", s(&src), "--time", "2024-01-02 10:00:00"]);
    for args in [
        vec!["forget", "--keep-last", "0"],
        vec!["forget", "--keep-last", "0", "--keep-daily", "0"],
        vec!["forget", "--keep-within", "0d"],
        vec!["forget", "--keep-tag", ""],
        vec!["forget", "--keep-last", "0", "--dry-run"],
        vec!["forget", "--keep-at-most", "3"],
        vec!["forget", "--keep-last", "5", "--keep-at-most", "0"],
        vec!["forget"],
    ] {
        sb.cmd(&args).code(2).assert_one_error_line("keep");
    }
    assert_eq!(sb.snapshot_count(), 2, "a refused forget removed snapshots");
    // A zero rule next to a real one is fine.
    sb.ok(["forget", "--keep-last", "1", "--keep-daily", "0"]);
    assert_eq!(sb.snapshot_count(), 1);
}

#[test]
fn keep_at_most_caps_what_the_rules_keep() {
    let sb = Sandbox::init();
    let src = sb.path("src");
    write(&src.join("f"), "x");
    for day in 1..=6 {
        sb.ok([
            "backup",
            s(&src),
            "--time",
            &format!("2024-01-0{day} 10:00:00"),
        ]);
    }
    let js = sb.json([
        "forget",
        "--keep-daily",
        "10",
        "--keep-at-most",
        "4",
        "--dry-run",
    ]);
    let group = &js[0];
    assert_eq!(group["keep"].as_array().unwrap().len(), 4, "{js}");
    assert_eq!(group["remove"].as_array().unwrap().len(), 2, "{js}");
    assert_eq!(sb.snapshot_count(), 6);
    sb.ok(["forget", "--keep-within", "30d", "--keep-at-most", "2"]);
    let left: Vec<String> = sb
        .snapshots(&[])
        .iter()
        .map(|v| v["time"].as_str().unwrap()[..10].to_string())
        .collect();
    assert_eq!(left, ["2024-01-05", "2024-01-06"]);
}

#[test]
fn bad_globs_and_stdin_names_are_usage_errors() {
    let sb = Sandbox::init();
    let (src, _) = sb.small_tree();
    let t = sb.path("t");
    sb.cmd(["backup", s(&src), "--exclude", "["])
        .code(2)
        .assert_one_error_line("[");
    let ex = sb.path("excludes");
    write(&ex, "*.log\na{b\n");
    sb.cmd(["backup", s(&src), "--exclude-file", s(&ex)])
        .code(2)
        .assert_one_error_line("a{b");
    sb.cmd(["restore", "latest", "--target", s(&t), "--include", "["])
        .code(2)
        .assert_one_error_line("[");
    sb.cmd(["restore", "latest", "--target", s(&t), "--exclude", "a{"])
        .code(2)
        .assert_one_error_line("a{");
    assert!(!t.exists(), "a refused restore created the target");
    for name in ["", "..", "/abs", "a/../b", "a//b", "./x", "dir/"] {
        sb.cmd(["backup", "--stdin", "--stdin-filename", name])
            .stdin("data")
            .code(2)
            .assert_one_error_line("--stdin-filename");
        sb.command_backup(name, &["echo", "hi"])
            .code(2)
            .assert_one_error_line("--stdin-filename");
    }
    assert_eq!(sb.snapshot_count(), 1);
}

#[test]
fn init_options_are_checked_before_anything_is_created() {
    let sb = Sandbox::new();
    for args in [
        vec!["init", "--pack-size", "0"],
        vec!["init", "--pack-size", "2048"],
        vec!["init", "--compression", "99"],
        vec!["init", "--compression", "-99"],
        vec!["init", "--min-retention", "forever"],
        vec!["init", "--min-retention", "0d"],
        vec!["init", "--min-retention", "200y"],
    ] {
        let out = sb.cmd(&args).code(2);
        out.assert_one_error_line(match args[1] {
            "--pack-size" => "pack size",
            "--min-retention" => "--min-retention",
            _ => "compression",
        });
        assert!(!sb.repo.exists(), "`{}` left {:?}", out.desc, sb.repo);
    }
    // A negative level parses without `=`.
    sb.ok(["init", "--compression", "-5"]);
    let cfg = sb.json(["cat", "config"]);
    assert_eq!(cfg["compression"], -5, "{cfg}");
    assert!(cfg.get("min_retention_secs").is_none(), "{cfg}");
    let locked = Sandbox::new();
    locked.ok(["init", "--min-retention", "1y6m"]);
    let cfg = locked.json(["cat", "config"]);
    assert_eq!(cfg["min_retention_secs"], (365 + 180) * 86_400, "{cfg}");
}

#[test]
fn a_failed_init_removes_the_directory_it_created() {
    let sb = Sandbox::new();
    // No password source: fails after the location was checked.
    sb.cmd(["init"])
        .env_remove("CAIRN_PASSWORD")
        .fails()
        .assert_one_error_line("password");
    assert!(!sb.repo.exists(), "failed init left {:?}", sb.repo);
    // Several missing levels: all removed.
    let deep = sb.path("a/b/c");
    sb.bare(["-r", s(&deep), "init"])
        .env("CAIRN_PASSWORD", "")
        .fails();
    assert!(!sb.path("a").exists(), "failed init left a/b/c");
    // A directory that was there before stays.
    fs::create_dir(&sb.repo).unwrap();
    sb.cmd(["init"]).env_remove("CAIRN_PASSWORD").fails();
    assert!(
        sb.repo.is_dir(),
        "init removed a directory it did not create"
    );
    // The same failure, but the directory holds someone's file: kept as is.
    let deep2 = sb.path("x/y");
    fs::create_dir_all(&deep2).unwrap();
    write(&deep2.join("keep.txt"), "mine");
    sb.bare(["-r", s(&deep2), "init"])
        .env_remove("CAIRN_PASSWORD")
        .fails();
    assert_eq!(fs::read_to_string(deep2.join("keep.txt")).unwrap(), "mine");
}

#[test]
fn files_where_directories_belong_are_named() {
    let sb = Sandbox::new();
    let f = sb.path("plain-file");
    write(&f, "not a repository");
    sb.bare(["-r", s(&f), "init"])
        .fails()
        .assert_one_error_line("is a file, not a directory");
    assert_eq!(fs::read_to_string(&f).unwrap(), "not a repository");

    sb.ok(["init"]);
    let src = sb.path("src");
    write(&src.join("a"), "x");
    sb.ok(["backup", s(&src)]);
    sb.cmd(["restore", "latest", "--target", s(&f)])
        .fails()
        .assert_one_error_line("is a file, not a directory");
    sb.cmd(["restore", "latest", "--target", s(&f.join("below"))])
        .fails()
        .assert_one_error_line("is a file, not a directory");
    assert_eq!(fs::read_to_string(&f).unwrap(), "not a repository");
}

#[test]
fn short_snapshot_prefixes_ask_for_four_digits() {
    let sb = Sandbox::init();
    let (_, id) = sb.small_tree();
    let t = sb.path("t");
    for sel in [&id[..1], &id[..3]] {
        sb.cmd(["restore", sel, "--target", s(&t)])
            .code(2)
            .assert_one_error_line("at least 4 hex digits");
        sb.cmd(["ls", sel])
            .code(2)
            .assert_one_error_line("at least 4 hex digits");
        sb.cmd(["forget", sel])
            .code(2)
            .assert_one_error_line("at least 4 hex digits");
    }
    assert_eq!(sb.snapshot_count(), 1);
    sb.ok(["ls", &id[..4]]);
}

#[test]
fn arguments_after_double_dash_are_paths_without_stdin_from_command() {
    let sb = Sandbox::init();
    write(&sb.path("--weird"), "a file with a dashing name");
    write(&sb.path("plain"), "plain");
    let v = sb.backup(["--", "--weird", "plain"]);
    let id = text(&v, "snapshot_id").to_string();
    let weird = sb.path("--weird");
    let out = sb.ok(["dump", &id, s(&weird)]);
    assert_eq!(out.stdout(), "a file with a dashing name");
    let snap = &sb.snapshots(&[])[0];
    assert_eq!(snap["paths"].as_array().unwrap().len(), 2, "{snap}");
}

#[test]
fn non_utf8_passwords_are_used_as_bytes() {
    let sb = Sandbox::new();
    let pw = sb.path("pw");
    fs::write(&pw, b"\xff\xfesecret\n").unwrap();
    set_mode(&pw, 0o600);
    sb.cmd(["init", "--password-file", s(&pw)])
        .env_remove("CAIRN_PASSWORD")
        .ok();
    // The same bytes, without the newline, from a command.
    sb.cmd(["snapshots"])
        .env_remove("CAIRN_PASSWORD")
        .arg("--password-command")
        .arg(r"printf '\377\376secret'")
        .ok();
    // Other bytes do not open it.
    fs::write(&pw, b"\xff\xfdsecret\n").unwrap();
    sb.cmd(["snapshots", "--password-file", s(&pw)])
        .env_remove("CAIRN_PASSWORD")
        .code(12);
}

// ---- B. local repositories are private -------------------------------------

/// Every file and folder of a local repository is for its owner only (as
/// restic: files 0600, folders 0700): keys must not be copied by other users.
#[test]
fn local_repository_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::init();
    let (src, _) = sb.small_tree();
    sb.ok(["backup", s(&src), "--tag", "again", "--force"]);
    sb.ok(["check"]);
    let mut seen = 0;
    let mut stack = vec![sb.repo.clone()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", p.display());
        seen += 1;
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    assert!(seen > 8, "only {seen} entries under the repository");
    // Restore still gives back the recorded modes exactly.
    set_mode(&src.join("a/1.txt"), 0o640);
    set_mode(&src.join("b"), 0o751);
    let v = sb.backup([&src]);
    let t = sb.path("t");
    sb.restore(text(&v, "snapshot_id"), &t, &[]);
    let r = restored_path(&t, &src);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&r.join("a/1.txt")), 0o640);
    assert_eq!(mode(&r.join("b")), 0o751);
    assert_eq!(mode(&r.join("b/3.txt")), mode(&src.join("b/3.txt")));
}

// ---- C. secrets -------------------------------------------------------------

const SECRET_VARS: [(&str, &str); 5] = [
    ("CAIRN_PASSWORD_FILE_X", "secret-file-var"),
    ("CAIRN_NEW_PASSWORD", "secret-new-password"),
    ("CAIRN_FROM_PASSWORD", "secret-from-password"),
    ("CAIRN_TO_PASSWORD", "secret-to-password"),
    ("CAIRN_PASSWORD_EXTRA", "secret-extra"),
];

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} holds the password:\n{text}"
    );
    for (k, v) in SECRET_VARS {
        assert!(!text.contains(v), "{what} holds {k}:\n{text}");
    }
    assert!(!text.contains("CAIRN_PASSWORD"), "{what}:\n{text}");
}

#[test]
fn dump_commands_do_not_see_passwords() {
    let sb = Sandbox::init();
    // (RUST_* variables dropped: the harness treats RUST_BACKTRACE as a panic.)
    let mut run = sb.command_backup("env.txt", &["sh", "-c", "env | grep -v '^RUST_'"]);
    for (k, v) in SECRET_VARS {
        run = run.env(k, v);
    }
    run.env("UNRELATED_VAR", "still-there").ok();
    let env = sb.ok(["dump", "latest", "env.txt"]).stdout();
    assert!(env.contains("UNRELATED_VAR=still-there"), "{env}");
    assert_no_secret("the dump command's environment", &env);
}

#[test]
fn password_commands_do_not_see_passwords() {
    let sb = Sandbox::init();
    let pwfile = sb.path("pw");
    fs::write(&pwfile, PASSWORD).unwrap();
    set_mode(&pwfile, 0o600);
    let envfile = sb.path("env.txt");
    let mut run = sb.cmd(["snapshots"]).arg("--password-command").arg(format!(
        "env | grep -v '^RUST_' > '{}'; cat '{}'",
        envfile.display(),
        pwfile.display()
    ));
    for (k, v) in SECRET_VARS {
        run = run.env(k, v);
    }
    run.ok();
    let env = fs::read_to_string(&envfile).unwrap();
    assert!(env.contains("HOME="), "{env}");
    assert_no_secret("the password command's environment", &env);
}

#[test]
fn readable_password_files_are_warned_about() {
    let sb = Sandbox::init();
    let pw = sb.path("pw");
    write(&pw, format!("{PASSWORD}\n"));
    set_mode(&pw, 0o644);
    let out = sb
        .cmd(["snapshots", "--password-file", s(&pw)])
        .env_remove("CAIRN_PASSWORD")
        .ok();
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "{}", out.dump());
    assert!(
        warnings[0].starts_with("warning: ") && warnings[0].contains(s(&pw)),
        "{}",
        out.dump()
    );
    set_mode(&pw, 0o600);
    let out = sb
        .cmd(["snapshots", "--password-file", s(&pw)])
        .env_remove("CAIRN_PASSWORD")
        .ok();
    assert_eq!(out.stderr, "", "a private password file was warned about");
}

#[test]
fn cat_config_hides_keys_unless_asked() {
    let sb = Sandbox::init();
    let shown = sb.json(["cat", "config", "--show-secrets"]);
    let key = text(&shown, "blob_id_key").to_string();
    assert_eq!(key.len(), 64, "{shown}");
    let seed = text(&shown["chunker"], "key").to_string();
    assert_eq!(seed.len(), 64, "{shown}");

    let hidden = sb.json(["cat", "config"]);
    let text_hidden = hidden.to_string();
    assert!(
        !text_hidden.contains(&key),
        "cat config shows the blob-ID key"
    );
    assert!(
        !text_hidden.contains(&seed),
        "cat config shows the chunker seed"
    );
    assert!(hidden.get("blob_id_key").is_some(), "{hidden}");
    // Everything else is shown as before.
    assert_eq!(hidden["id"], shown["id"]);
    assert_eq!(hidden["compression"], shown["compression"]);
    assert_eq!(hidden["chunker"]["avg_size"], shown["chunker"]["avg_size"]);
    let human = sb.ok(["cat", "config"]).stdout();
    assert!(!human.contains(&key));
}

// ---- D. locks ----------------------------------------------------------------

/// Writes a lock object as another process would.
fn plant_lock(repo: &cairn::Repository, time: chrono::DateTime<chrono::Utc>, host: &str) {
    let info = serde_json::json!({"time": time, "exclusive": false,
        "hostname": host, "username": "someone", "pid": 1u32, "nonce": hex_nonce(time)});
    let bytes =
        cairn::format::objects::seal_json(repo.cipher(), cairn::format::crypto::aad::LOCK, &info);
    // Named by its SHA-256, as every lock is (others are ignored as damaged).
    let name = format!("locks/{}", {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    });
    repo.backend().create(&name, bytes).unwrap();
}

fn hex_nonce(t: chrono::DateTime<chrono::Utc>) -> String {
    format!("{:032x}", t.timestamp_micros())
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A lock that is refreshed stays held; once its object vanishes (someone ran
/// `unlock --remove-all`), the holder learns it (key changes check it before
/// they write).
#[test]
fn a_lost_lock_stops_the_operation() {
    use cairn::repo::lock;
    let b = cairn::Backend::memory();
    let repo = cairn::Repository::init(b.clone(), b"pw", fast_kdf()).unwrap();

    let interval = std::time::Duration::from_millis(30);
    let guard = lock::acquire_with_refresh(&repo, false, interval).unwrap();
    let first = b.list("locks").unwrap();
    wait_until("a refresh", || b.list("locks").unwrap() != first);
    std::thread::sleep(interval * 4);
    guard.check().expect("a refreshed lock is held");
    assert_eq!(b.list("locks").unwrap().len(), 1, "refresh leaves one lock");

    lock::remove_locks(&repo, true).unwrap();
    wait_until("the loss noticed", || guard.check().is_err());
    let err = guard.check().unwrap_err();
    assert!(matches!(err, cairn::Error::LockLost(_)), "{err}");
    assert!(err.to_string().contains("lock"), "{err}");

    drop(guard);
}

/// A lock dated far in the future (a host with a wrong clock) still blocks, but
/// the message says so and `unlock` removes it; a small skew is left alone.
#[test]
fn future_dated_locks_are_named_and_unlock_removes_them() {
    let sb = Sandbox::init();
    let src = sb.path("src");
    write(&src.join("f"), "x");
    sb.ok(["backup", s(&src), "--time", "2024-01-01 10:00:00"]);
    sb.ok(["backup", s(&src), "--time", "2024-01-02 10:00:00"]);
    let backend = cairn::Backend::open(s(&sb.repo), &[], false).unwrap();
    let repo = cairn::Repository::open(backend, PASSWORD.as_bytes()).unwrap();
    let now = chrono::Utc::now();
    plant_lock(&repo, now + chrono::Duration::hours(3), "far-future");
    // Key changes still take an exclusive lock (backup, forget and prune don't).
    let keys = || repo.backend().list("keys").unwrap().len();
    sb.cmd(["key", "add"])
        .env("CAIRN_NEW_PASSWORD", "other")
        .code(11)
        .assert_one_error_line("in the future");
    assert_eq!(keys(), 1);
    let out = sb.ok(["unlock"]);
    assert!(out.stdout().contains("removed 1 lock"), "{}", out.dump());
    assert!(repo.backend().list("locks").unwrap().is_empty());

    // A small skew is not suspect: it blocks, unlock keeps it.
    plant_lock(&repo, now + chrono::Duration::minutes(2), "skewed-a-little");
    let out = sb.ok(["unlock"]);
    assert!(out.stdout().contains("removed 0 locks"), "{}", out.dump());
    let out = sb
        .cmd(["key", "add"])
        .env("CAIRN_NEW_PASSWORD", "other")
        .code(11);
    assert!(!out.stderr.contains("future"), "{}", out.dump());
    assert_eq!(keys(), 1);
    // Forget takes no lock at all.
    sb.ok(["forget", "--keep-last", "1"]);
    assert_eq!(sb.snapshot_count(), 1);
}

// ---- help and man pages -----------------------------------------------------

/// The options every command takes (`global = true` in `src/cli/mod.rs`).
const GLOBAL_OPTIONS: [&str; 19] = [
    "--repo",
    "--option",
    "--password-file",
    "--password-command",
    "--key-hint",
    "--json",
    "--quiet",
    "--verbose",
    "--event-log",
    "--metrics-file",
    "--cache-dir",
    "--no-cache",
    "--limit-upload",
    "--limit-download",
    "--notify",
    "--notify-ping",
    "--notify-command",
    "--notify-all",
    "--config",
];

/// The sections of a `--help` text: each heading (`Options`, `Global options`,
/// `Commands`, ...) with its entries' first words: the long options
/// (`--repo`) or the subcommand names.
fn help_sections(help: &str) -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in help.lines() {
        if let Some(heading) = line.strip_suffix(':').filter(|_| !line.starts_with(' ')) {
            sections.push((heading.to_string(), Vec::new()));
            continue;
        }
        let Some((_, entries)) = sections.last_mut() else {
            continue;
        };
        // `  -r, --repo <URL>  Repository...`: the long flag before the help
        // text; `  backup  Snapshot...`: a subcommand (or an argument) name.
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first().is_some_and(|w| w.starts_with('-')) {
            for w in words
                .iter()
                .take_while(|w| w.starts_with('-') || w.starts_with('<'))
            {
                let flag = w.trim_end_matches(',').trim_end_matches("...");
                if flag.starts_with("--") {
                    entries.push(flag.to_string());
                }
            }
        } else if line.starts_with("  ") && !line.starts_with("    ") {
            if let Some(w) = words.first() {
                entries.push(w.to_string());
            }
        }
    }
    sections
}

fn section<'a>(sections: &'a [(String, Vec<String>)], heading: &str) -> &'a [String] {
    sections
        .iter()
        .find(|(h, _)| h == heading)
        .map(|(_, e)| e.as_slice())
        .unwrap_or(&[])
}

/// Each command's `--help` lists its own options under "Options" and the
/// global ones apart, under "Global options": every command and subcommand.
#[test]
fn help_lists_global_options_under_their_own_heading() {
    let sb = Sandbox::new();
    let mut commands: Vec<Vec<String>> = vec![vec![]];
    let mut checked = 0;
    while let Some(command) = commands.pop() {
        let mut args = command.clone();
        args.push("--help".into());
        let help = sb.bare(&args).ok().stdout();
        let sections = help_sections(&help);
        let what = format!("`cairn {}`", args.join(" "));
        let own = section(&sections, "Options");
        let global = section(&sections, "Global options");
        for opt in GLOBAL_OPTIONS {
            assert!(
                global.iter().any(|o| o == opt),
                "{what}: {opt} is not under Global options:\n{help}"
            );
            assert!(
                !own.iter().any(|o| o == opt),
                "{what}: {opt} is among the command's own options:\n{help}"
            );
        }
        assert!(
            global.iter().all(|o| GLOBAL_OPTIONS.contains(&o.as_str())),
            "{what}: a command's own option is under Global options: {global:?}"
        );
        assert!(
            own.iter().any(|o| o == "--help"),
            "{what}: no Options section:\n{help}"
        );
        for sub in section(&sections, "Commands") {
            if sub != "help" {
                let mut next = command.clone();
                next.push(sub.clone());
                commands.push(next);
            }
        }
        checked += 1;
    }
    // cairn, its commands, and the subcommands of key, config and schedule.
    assert!(checked > 25, "only {checked} help texts checked");

    // The command's own options stay under "Options".
    let help = sb.bare(["backup", "--help"]).ok().stdout();
    let sections = help_sections(&help);
    for opt in ["--tag", "--exclude", "--stdin", "--dry-run"] {
        assert!(
            section(&sections, "Options").iter().any(|o| o == opt),
            "backup --help: {opt}:\n{help}"
        );
    }
}

/// The names `page` cites in its SUBCOMMANDS section (`cairn\-key\-add(1)`
/// is `cairn-key-add`).
fn cited_pages(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|l| l.strip_suffix("(1)"))
        .filter(|l| l.starts_with("cairn\\-"))
        .map(|l| l.replace("\\-", "-"))
        .collect()
}

/// `man --dir` writes `cairn.1` (what `man` prints) and a page for every page
/// it cites, under the name it cites, nested subcommands too; and no page
/// cites one that is not there.
#[test]
fn man_dir_writes_every_page_the_pages_cite() {
    let sb = Sandbox::new();
    let main = sb.bare(["man"]).ok().stdout();
    let dir = sb.path("man/pages");
    let out = sb.bare(["man", "--dir", s(&dir)]).ok();

    let mut written: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    let mut listed: Vec<String> = out
        .lines()
        .iter()
        .map(|l| {
            Path::new(l)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        written,
        "stdout should list each page written\n{}",
        out.dump()
    );
    assert_eq!(
        fs::read_to_string(dir.join("cairn.1")).unwrap(),
        main,
        "cairn.1 differs from `cairn man`"
    );

    // Every page is cairn.1 or cited by another, and every citation is a page.
    let mut cited = vec!["cairn".to_string()];
    for name in &written {
        let page = fs::read_to_string(dir.join(name)).unwrap();
        let stem = name
            .strip_suffix(".1")
            .unwrap_or_else(|| panic!("{name} is not a .1 page"));
        assert!(
            page.contains(&format!(".TH {stem} 1 ")),
            "{name}: its title is not {stem}"
        );
        for c in cited_pages(&page) {
            assert!(
                written.contains(&format!("{c}.1")),
                "{name} cites {c}(1), which was not written"
            );
            cited.push(c);
        }
    }
    cited.sort();
    let mut pages: Vec<String> = written
        .iter()
        .map(|n| n.trim_end_matches(".1").to_string())
        .collect();
    pages.sort();
    assert_eq!(cited, pages, "pages cited and pages written differ");
    for page in [
        "cairn-backup",
        "cairn-key",
        "cairn-key-add",
        "cairn-schedule-install",
        "cairn-man",
    ] {
        assert!(pages.iter().any(|p| p == page), "no {page}.1 in {pages:?}");
    }
    assert!(
        !pages.iter().any(|p| p.ends_with("-help")),
        "clap's help subcommand got a page"
    );
    let key_add = fs::read_to_string(dir.join("cairn-key-add.1")).unwrap();
    assert!(
        key_add.contains("new\\-password\\-file"),
        "cairn-key-add.1 lacks its options"
    );

    // Again into the same directory: the pages are rewritten; -q prints nothing.
    let again = sb.bare(["-q", "man", "--dir", s(&dir)]).ok();
    assert!(again.stdout.is_empty(), "{}", again.dump());
}

/// A `--dir` that cannot hold the pages: one error line; a file where the
/// directory should be is a usage error (2), a failed write a failure (1).
#[test]
fn man_dir_that_cannot_be_written_is_one_error_line() {
    let sb = Sandbox::new();
    let file = sb.path("file");
    write(&file, "x");
    sb.bare(["man", "--dir", s(&file)])
        .code(2)
        .assert_one_error_line("not a directory");
    sb.bare(["man", "--dir", s(&file.join("sub"))])
        .code(2)
        .assert_one_error_line("not a directory");
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");

    // A directory no one may write: read-only for us, unless we are root.
    use std::os::unix::fs::PermissionsExt;
    let ro = sb.path("read-only");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
    if fs::write(ro.join("probe"), "").is_err() {
        sb.bare(["man", "--dir", s(&ro)])
            .code(1)
            .assert_one_error_line("cannot write");
    }
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o700)).unwrap();
    // procfs takes no new files, not even root's.
    #[cfg(target_os = "linux")]
    sb.bare(["man", "--dir", "/proc"])
        .code(1)
        .assert_one_error_line("cannot write /proc/cairn.1");
}

// ---- the manual: README.md and docs/ ----------------------------------------

/// README.md and every page of docs/, with their paths.
fn manual_pages() -> Vec<(std::path::PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("README.md")];
    for e in fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            paths.push(p);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation
/// other than `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Every relative link of the manual names a file that exists and, after a
/// `#`, a heading of that file.
#[test]
fn manual_links_point_at_files_and_headings_that_exist() {
    let mut checked = 0;
    for (path, text) in manual_pages() {
        let dir = path.parent().unwrap();
        for target in text.split("](").skip(1).filter_map(|t| t.split(')').next()) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (file, frag) = target.split_once('#').unwrap_or((target, ""));
            let linked = if file.is_empty() {
                path.clone()
            } else {
                dir.join(file)
            };
            assert!(
                linked.exists(),
                "{}: link to {target}: no such file",
                path.display()
            );
            if !frag.is_empty() {
                let headings: Vec<String> = fs::read_to_string(&linked)
                    .unwrap()
                    .lines()
                    .filter(|l| l.starts_with('#'))
                    .map(|l| anchor(l.trim_start_matches('#')))
                    .collect();
                assert!(
                    headings.iter().any(|h| h == frag),
                    "{}: link to {target}: no such heading in {}",
                    path.display(),
                    linked.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links found");
}

/// The example config files of docs/ are valid: each has jobs with a next
/// run (the README's own example is checked by tests/cli/schedule.rs).
#[test]
fn docs_example_configs_parse() {
    let sb = Sandbox::new();
    let mut found = 0;
    for (path, text) in manual_pages() {
        if path.ends_with("README.md") {
            continue;
        }
        for block in text.split("```toml\n").skip(1) {
            let toml = block.split("\n```").next().unwrap();
            let file = sb.path(format!("example-{found}.toml"));
            write(&file, toml);
            let v = sb
                .bare(["--json", "--config", s(&file), "config", "check"])
                .ok()
                .json();
            let jobs = v["jobs"].as_array().unwrap();
            assert!(
                !jobs.is_empty(),
                "{}: a config without jobs",
                path.display()
            );
            assert!(
                jobs.iter().all(|j| j["next_run"].is_string()),
                "{}: a job without a next run: {v}",
                path.display()
            );
            found += 1;
        }
    }
    assert!(found > 0, "no ```toml block in docs/");
}

//! The everyday commands: init, backup options, snapshots, ls, diff, cat,
//! snapshot selectors, password sources, keys, unlock, check.

use crate::common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn init_creates_an_empty_repository() {
    let s = Sandbox::new();
    let v = s.json(["init"]);
    assert_eq!(v["message_type"], "initialized", "{v}");
    assert!(s.repo.join("config").is_file());
    assert_eq!(s.snapshots(&[]), Vec::<Value>::new());
    let check = s.json(["check"]);
    assert_eq!(num(&check, "snapshots"), 0, "{check}");
    assert!(
        s.events()
            .iter()
            .any(|e| e["event"] == "repository.initialized"),
        "init should log an event"
    );
}

#[test]
fn snapshots_json_fields_and_filters() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("f.txt"), "hello");
    let a = s.backup([
        src.to_str().unwrap(),
        "--tag",
        "daily",
        "--tag",
        "x,y",
        "--host",
        "host-a",
        "--time",
        "2024-01-31 02:00:00",
    ]);
    let b = s.backup([src.to_str().unwrap(), "--tag", "weekly", "--host", "host-b"]);
    let (ida, idb) = (
        text(&a, "snapshot_id").to_string(),
        text(&b, "snapshot_id").to_string(),
    );

    let all = s.snapshots(&[]);
    assert_eq!(all.len(), 2);
    let sa = all
        .iter()
        .find(|v| v["id"] == ida.as_str())
        .expect("first snapshot listed");
    assert!(is_hex64(text(sa, "id")));
    assert!(
        ida.starts_with(text(sa, "short_id")) && text(sa, "short_id").len() >= 8,
        "{sa}"
    );
    assert_eq!(sa["paths"], serde_json::json!([src.to_str().unwrap()]));
    assert_eq!(sa["hostname"], "host-a");
    let tags: BTreeSet<&str> = sa["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from(["daily", "x", "y"]),
        "--tag x,y adds both"
    );
    // --time is local time; the harness runs cairn with TZ=UTC.
    assert!(
        text(sa, "time").starts_with("2024-01-31T02:00:00"),
        "--time not recorded: {}",
        sa["time"]
    );

    let ids = |f: &[&str]| -> Vec<String> {
        s.snapshots(f)
            .iter()
            .map(|v| text(v, "id").to_string())
            .collect()
    };
    assert_eq!(ids(&["--host", "host-b"]), [idb.clone()]);
    assert_eq!(ids(&["--tag", "x,y"]), [ida.clone()]);
    assert_eq!(
        ids(&["--tag", "x,weekly"]),
        Vec::<String>::new(),
        "a,b means both tags"
    );
    assert_eq!(
        ids(&["--tag", "nope", "--tag", "daily"]),
        [ida.clone()],
        "repeated --tag means either"
    );
    assert_eq!(ids(&["--path", src.to_str().unwrap()]).len(), 2);

    // "latest" narrowed by a filter: host-a's snapshot is older but the only match.
    let ls = s
        .cmd(["ls", "latest", "--host", "host-a", "--json"])
        .ok()
        .json_lines();
    assert_eq!(
        ls[0]["id"],
        ida.as_str(),
        "ls latest --host host-a picked {}",
        ls[0]
    );

    // Human output lists both short IDs.
    let human = s.ok(["snapshots"]).stdout();
    assert!(
        human.contains(&ida[..8]) && human.contains(&idb[..8]),
        "{human}"
    );

    // Each backup appended a backup.completed event naming its snapshot.
    let done: Vec<Value> = s
        .events()
        .into_iter()
        .filter(|e| e["event"] == "backup.completed")
        .collect();
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(done[0]["snapshot"], ida.as_str());
    assert_eq!(done[0]["severity"], "info");
}

#[test]
fn ls_prints_one_full_path_per_line() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a.txt"), "a");
    write(&src.join("d/b.txt"), "b");
    write(&src.join("d/e/deep.txt"), "deep");
    write(&src.join("naïve café ☕.txt"), "unicode");
    fs::create_dir_all(src.join("d/empty")).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let id = text(&s.backup([&src]), "snapshot_id").to_string();

    let lines = s.ok(["ls", "latest"]).lines();
    assert!(
        lines.iter().all(|l| l.starts_with('/')),
        "every line is a full path: {lines:?}"
    );
    let src_s = src.to_str().unwrap();
    let below: BTreeSet<String> = lines
        .iter()
        .filter(|l| l.starts_with(src_s))
        .cloned()
        .collect();
    let expected: BTreeSet<String> = scan(&src)
        .keys()
        .map(|rel| src.join(rel).to_str().unwrap().to_string())
        .map(|p| p.trim_end_matches('/').to_string())
        .collect();
    assert_eq!(below, expected);
    // The parents of the source are listed too (restore recreates them).
    for anc in src.ancestors().skip(1).filter(|a| *a != Path::new("/")) {
        assert!(
            lines.contains(&anc.to_str().unwrap().to_string()),
            "ancestor {} not listed",
            anc.display()
        );
    }
    assert_eq!(
        lines.len(),
        lines.iter().collect::<BTreeSet<_>>().len(),
        "duplicate lines"
    );

    // ls SNAP PATH: the directory and its direct entries only.
    let d = format!("{src_s}/d");
    let sub: BTreeSet<String> = s.ok(["ls", &id[..8], &d]).lines().into_iter().collect();
    let want: BTreeSet<String> = [
        d.clone(),
        format!("{d}/b.txt"),
        format!("{d}/e"),
        format!("{d}/empty"),
    ]
    .into();
    assert_eq!(sub, want);
    let rec: BTreeSet<String> = s
        .ok(["ls", &id, &d, "--recursive"])
        .lines()
        .into_iter()
        .collect();
    assert!(
        rec.contains(&format!("{d}/e/deep.txt")) && rec.len() == 5,
        "{rec:?}"
    );

    // --json: one node per line after the snapshot line.
    let js = s.cmd(["ls", "latest", "--json"]).ok().json_lines();
    assert_eq!(js[0]["struct_type"], "snapshot");
    let link = js
        .iter()
        .find(|n| n["path"] == format!("{src_s}/link"))
        .expect("link listed");
    assert_eq!(link["type"], "symlink", "{link}");
    s.cmd(["ls", "latest", &format!("{src_s}/nothing-here")])
        .code(1);
}

#[test]
fn diff_shows_added_removed_and_modified() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("keep.txt"), "same");
    write(&src.join("change.txt"), "before");
    write(&src.join("gone.txt"), "bye");
    write(&src.join("olddir/x.txt"), "x");
    let s1 = text(&s.backup([&src]), "snapshot_id").to_string();
    write(&src.join("change.txt"), "after, longer");
    fs::remove_file(src.join("gone.txt")).unwrap();
    fs::remove_dir_all(src.join("olddir")).unwrap();
    write(&src.join("new.txt"), "hello");
    let s2 = text(&s.backup([&src]), "snapshot_id").to_string();

    let out = s.ok(["diff", &s1, &s2]).stdout();
    let src_s = src.to_str().unwrap();
    let changes: BTreeSet<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let (m, p) = l.split_once(' ')?;
            ["+", "-", "M"]
                .contains(&m)
                .then(|| (m.to_string(), p.trim().to_string()))
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("+", "new.txt"),
        ("-", "gone.txt"),
        ("-", "olddir"),
        ("-", "olddir/x.txt"),
        ("M", "change.txt"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), format!("{src_s}/{p}")))
    .collect();
    assert_eq!(changes, want, "diff output:\n{out}");
    assert!(!out.contains("keep.txt"));

    let js = s.cmd(["diff", &s1, &s2, "--json"]).ok().json_lines();
    let stats = js.last().unwrap();
    assert_eq!(stats["message_type"], "statistics");
    assert_eq!(
        (
            num(stats, "added"),
            num(stats, "removed"),
            num(stats, "changed")
        ),
        (1, 3, 1),
        "{stats}"
    );
}

#[test]
fn cat_prints_json() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("f"), "content");
    let id = text(&s.backup([&src]), "snapshot_id").to_string();
    let config: Value = s.ok(["cat", "config"]).json();
    assert!(
        config.as_object().is_some_and(|o| !o.is_empty()),
        "{config}"
    );
    let snap: Value = s.ok(["cat", "snapshot", &id]).json();
    assert_eq!(snap["id"], id.as_str());
    assert_eq!(snap["paths"], serde_json::json!([src.to_str().unwrap()]));
    let tree = text(&snap, "tree").to_string();
    let snap_prefix: Value = s.ok(["cat", "snapshot", &id[..6]]).json();
    assert_eq!(snap_prefix["tree"], tree.as_str());
    let t: Value = s.ok(["cat", "tree", &tree]).json();
    assert!(t.is_object() || t.is_array(), "{t}");
    s.cmd(["cat", "tree", "not-an-id"]).code(2);
    s.cmd(["cat", "snapshot"]).code(2);
}

#[test]
fn snapshot_selectors() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("f"), "one");
    let a = text(&s.backup([&src]), "snapshot_id").to_string();
    write(&src.join("f"), "two!");
    let b = text(&s.backup([&src]), "snapshot_id").to_string();
    let f = src.join("f");
    let f = f.to_str().unwrap();
    // The shortest unique prefix of at least 4 digits.
    let n = (4..64).find(|&n| a[..n] != b[..n]).unwrap();
    assert_eq!(s.ok(["dump", &a[..n], f]).stdout, b"one");
    assert_eq!(s.ok(["dump", &a, f]).stdout, b"one");
    assert_eq!(s.ok(["dump", &a[..n].to_uppercase(), f]).stdout, b"one");
    assert_eq!(s.ok(["dump", "latest", f]).stdout, b"two!");
    assert_eq!(s.ok(["dump", &b[..n], f]).stdout, b"two!");
    // Too short: fewer than 4 digits never selects, even if unique (usage error).
    s.cmd(["dump", &a[..3], f])
        .code(2)
        .assert_one_error_line("at least 4 hex digits");
}

#[test]
fn backup_excludes() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("keep.txt"), "keep");
    write(&src.join("skip.log"), "log");
    write(&src.join("sub/also.log"), "log");
    write(&src.join("cache/big.dat"), "cache");
    write(&src.join("sub/x.tmp"), "tmp");
    write(&src.join("sub/keep2.txt"), "keep");
    write(&src.join("anchored/drop.txt"), "anchored");
    let exfile = s.path("excludes.txt");
    write(
        &exfile,
        format!("# a comment\n*.tmp\n\n{}/anchored\n", src.display()),
    );
    let b = s.backup([
        src.to_str().unwrap(),
        "--exclude",
        "*.log",
        "-e",
        "cache",
        "--exclude-file",
        exfile.to_str().unwrap(),
    ]);
    assert_eq!(num(&b, "files_new"), 2, "{b}");
    let lines: BTreeSet<String> = s
        .ok(["ls", "latest"])
        .lines()
        .into_iter()
        .filter(|l| l.starts_with(src.to_str().unwrap()))
        .collect();
    let src_s = src.to_str().unwrap();
    let want: BTreeSet<String> = ["", "/keep.txt", "/sub", "/sub/keep2.txt"]
        .iter()
        .map(|r| format!("{src_s}{r}"))
        .collect();
    assert_eq!(lines, want);
}

#[test]
fn backup_dry_run_saves_nothing() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("data.bin"), random_bytes(600_000, 3));
    let before = dir_size(&s.repo);
    let b = s.backup([src.to_str().unwrap(), "--dry-run"]);
    assert_eq!(b["dry_run"], true, "{b}");
    assert!(b["snapshot_id"].is_null(), "{b}");
    assert_eq!(num(&b, "files_new"), 1, "{b}");
    assert_eq!(s.snapshot_count(), 0);
    assert!(s.data_packs().is_empty(), "dry run wrote packs");
    assert_eq!(dir_size(&s.repo), before, "dry run changed the repository");
    assert!(
        !s.events().iter().any(|e| e["event"] == "backup.completed"),
        "dry run logged a completed backup"
    );
    // The real one afterwards stores the data.
    let b = s.backup([&src]);
    assert!(num(&b, "data_added") >= 600_000, "{b}");
}

#[test]
fn global_options_after_the_command_and_cairn_repo() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("f"), "x");
    let pwfile = s.path("pw");
    write(&pwfile, format!("{PASSWORD}\n"));
    let repo = s.repo.to_str().unwrap();
    // Options after the command, password from a file (trailing newline stripped).
    let out = s
        .bare([
            "backup",
            src.to_str().unwrap(),
            "-r",
            repo,
            "--password-file",
            pwfile.to_str().unwrap(),
            "--json",
        ])
        .env_remove("CAIRN_PASSWORD")
        .ok()
        .json();
    assert!(out["snapshot_id"].is_string(), "{out}");
    // The repository from CAIRN_REPO.
    let snaps = s
        .bare(["snapshots", "--json"])
        .env("CAIRN_REPO", repo)
        .ok()
        .json();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    // -r beats CAIRN_REPO.
    s.bare(["snapshots", "-r", repo])
        .env("CAIRN_REPO", s.path("elsewhere"))
        .ok();
    // No repository at all: a usage error naming the fix.
    s.bare(["snapshots"])
        .code(2)
        .assert_one_error_line("CAIRN_REPO");
}

#[test]
fn password_sources_and_their_order() {
    let s = Sandbox::init();
    let good = s.path("good");
    let bad = s.path("bad");
    write(&good, format!("{PASSWORD}\r\n"));
    write(&bad, "wrong password\n");
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = s.cmd(["snapshots"]).env_remove("CAIRN_PASSWORD");
        for a in args {
            c = c.arg(a);
        }
        for (k, v) in env {
            c = c.env(k, v);
        }
        c.run().code
    };
    assert_eq!(run(&["--password-file", good], &[]), Some(0));
    assert_eq!(run(&[], &[("CAIRN_PASSWORD_FILE", good)]), Some(0));
    assert_eq!(
        run(&["--password-command", &format!("cat {good}")], &[]),
        Some(0)
    );
    assert_eq!(run(&[], &[("CAIRN_PASSWORD", PASSWORD)]), Some(0));
    // Order: --password-file, CAIRN_PASSWORD_FILE, --password-command, CAIRN_PASSWORD.
    assert_eq!(
        run(
            &["--password-file", good],
            &[("CAIRN_PASSWORD_FILE", bad), ("CAIRN_PASSWORD", "x")]
        ),
        Some(0)
    );
    assert_eq!(
        run(&["--password-file", bad], &[("CAIRN_PASSWORD_FILE", good)]),
        Some(12)
    );
    assert_eq!(
        run(
            &["--password-command", "echo nope"],
            &[("CAIRN_PASSWORD_FILE", good)]
        ),
        Some(0)
    );
    assert_eq!(
        run(
            &["--password-command", &format!("cat {good}")],
            &[("CAIRN_PASSWORD", "x")]
        ),
        Some(0)
    );
    assert_eq!(
        run(
            &[],
            &[("CAIRN_PASSWORD_FILE", bad), ("CAIRN_PASSWORD", PASSWORD)]
        ),
        Some(12)
    );
    // A failing password command is an error, not an empty password.
    assert_eq!(
        run(
            &["--password-command", "exit 1"],
            &[("CAIRN_PASSWORD", PASSWORD)]
        )
        .map(|c| c != 0),
        Some(true)
    );
}

#[test]
fn key_add_list_passwd_remove() {
    let s = Sandbox::init();
    let keys = |pw: &str| -> Vec<Value> {
        s.cmd(["key", "list", "--json"])
            .env("CAIRN_PASSWORD", pw)
            .ok()
            .json()
            .as_array()
            .unwrap()
            .clone()
    };
    let opens = |pw: &str| s.cmd(["snapshots"]).env("CAIRN_PASSWORD", pw).run().code;
    let k = keys(PASSWORD);
    assert_eq!(k.len(), 1);
    assert_eq!(k[0]["current"], true);
    let first = text(&k[0], "id").to_string();

    let added = s
        .cmd(["key", "add", "--json"])
        .env("CAIRN_NEW_PASSWORD", "second pw")
        .ok()
        .json();
    let second = text(&added, "id").to_string();
    assert_eq!(keys("second pw").len(), 2);

    // passwd replaces the key in use: the old password stops working.
    let newpw = s.path("newpw");
    write(&newpw, "third pw\n");
    s.cmd([
        "key",
        "passwd",
        "--new-password-file",
        newpw.to_str().unwrap(),
    ])
    .env("CAIRN_PASSWORD", "second pw")
    .ok();
    assert_eq!(
        opens("second pw"),
        Some(12),
        "old password still works after key passwd"
    );
    assert_eq!(opens(PASSWORD), Some(0), "passwd must not touch other keys");
    let k = keys("third pw");
    assert_eq!(k.len(), 2);
    assert!(k.iter().all(|x| x["id"] != second.as_str()));

    // The key in use cannot be removed; another can, by prefix.
    s.cmd(["key", "remove", &first[..12]])
        .env("CAIRN_PASSWORD", PASSWORD)
        .fails();
    s.cmd(["key", "remove", &first[..12]])
        .env("CAIRN_PASSWORD", "third pw")
        .ok();
    assert_eq!(
        opens(PASSWORD),
        Some(12),
        "removed key still opens the repository"
    );
    // New passwords: never empty, never from a non-TTY stdin.
    s.cmd(["key", "add"])
        .env("CAIRN_PASSWORD", "third pw")
        .stdin("fourth pw\nfourth pw\n")
        .fails();
    let empty = s.path("empty");
    write(&empty, "");
    s.cmd(["key", "add", "--new-password-file", empty.to_str().unwrap()])
        .env("CAIRN_PASSWORD", "third pw")
        .fails();
    assert_eq!(keys("third pw").len(), 1);
}

#[test]
fn unlock_and_check_variants() {
    let s = Sandbox::init_with(&["--pack-size", "1"]);
    let src = s.path("src");
    // Enough data for a few 1 MiB packs.
    for i in 0..3 {
        write(&src.join(format!("f{i}")), random_bytes(600_000, 20 + i));
    }
    s.ok(["backup", src.to_str().unwrap()]);
    write(&src.join("f0"), "changed");
    s.ok(["backup", src.to_str().unwrap()]);
    let plain = s.json(["check"]);
    assert_eq!(num(&plain, "packs_read"), 0, "{plain}");
    let u = s.json(["unlock"]);
    assert_eq!(num(&u, "removed"), 0, "no locks should be left behind: {u}");

    let full = s.json(["check", "--read-data"]);
    let packs = num(&full, "packs");
    assert!(packs >= 3, "{full}");
    assert_eq!(num(&full, "packs_read"), packs, "{full}");
    assert_eq!(full["errors"], serde_json::json!([]), "{full}");
    // Slices n/m cover every pack exactly once.
    let read = |subset: &str| {
        num(
            &s.json(["check", "--read-data-subset", subset]),
            "packs_read",
        )
    };
    let (one, two) = (read("1/2"), read("2/2"));
    assert_eq!(
        one + two,
        packs,
        "slices 1/2 and 2/2 read {one} + {two} of {packs} packs"
    );
    let half = read("50%");
    assert!(
        half >= packs / 2 && half < packs,
        "50% read {half} of {packs}"
    );
    let human = s.ok(["check", "--read-data-subset", "10%"]).stdout();
    assert!(human.contains("no errors"), "{human}");
}

#[test]
fn verbose_backup_lists_new_and_changed_files() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a.txt"), "a");
    write(&src.join("b.txt"), "b");
    let out = s.ok(["backup", "-v", src.to_str().unwrap()]);
    for f in ["a.txt", "b.txt"] {
        let want = format!("new       {}", src.join(f).display());
        assert!(
            out.lines().contains(&want),
            "missing {want:?}: {}",
            out.stdout()
        );
    }
    write(&src.join("b.txt"), "b changed");
    write(&src.join("c.txt"), "c");
    let out = s.ok(["backup", src.to_str().unwrap(), "-v"]);
    let listed: Vec<String> = out
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("new") || l.starts_with("modified"))
        .collect();
    let mut listed = listed;
    listed.sort();
    assert_eq!(
        listed,
        [
            format!("modified  {}", src.join("b.txt").display()),
            format!("new       {}", src.join("c.txt").display()),
        ]
    );
    assert_eq!(
        listed.len(),
        2,
        "a.txt is unmodified and not listed: {}",
        out.stdout()
    );
    // -vv lists unmodified files too; without -v nothing is listed.
    let out = s.ok(["backup", src.to_str().unwrap(), "-vv"]);
    assert_eq!(
        out.lines()
            .iter()
            .filter(|l| l.starts_with("unchanged"))
            .count(),
        3
    );
    let out = s.ok(["backup", src.to_str().unwrap()]);
    assert!(
        !out.stdout().contains("unchanged") && !out.stdout().contains("new "),
        "{}",
        out.stdout()
    );
}

/// On a terminal, the backup bar keeps the file total the scan found, and
/// says when reading is done but the last packs are still uploading.
#[test]
fn backup_progress_keeps_its_total_and_shows_the_final_upload() {
    let s = Sandbox::init();
    let src = s.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write_random(&src.join("big"), 3 << 20, 9);
    let shown = s.on_terminal(&["backup", src.to_str().unwrap(), "--limit-upload", "1024"]);
    assert!(shown.contains("/ 1 files"), "{shown}");
    assert!(shown.contains("uploading the last packs"), "{shown}");
}

/// `snapshots --group-by` and `--latest`, with restic's JSON shape.
#[test]
fn snapshots_group_by_and_latest() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a"), "alpha");
    let p = src.to_str().unwrap();
    for (host, day) in [("h1", 1), ("h1", 2), ("h2", 1), ("h2", 2), ("h2", 3)] {
        s.backup([
            p,
            "--host",
            host,
            "--time",
            &format!("2024-01-0{day} 10:00:00"),
            "--tag",
            host,
        ]);
    }
    let latest = s.json(["snapshots", "--latest", "1"]);
    let times: Vec<&str> = latest
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["time"].as_str().unwrap()[..10])
        .collect();
    assert_eq!(times, ["2024-01-02", "2024-01-03"], "{latest}");
    let groups = s.json(["snapshots", "--group-by", "host", "--latest", "2"]);
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["group_key"]["hostname"], "h1");
    assert!(groups[0]["group_key"]["paths"].is_null());
    assert_eq!(groups[1]["snapshots"].as_array().unwrap().len(), 2);
    let out = s.ok(["snapshots", "--group-by", "host,tags"]);
    assert!(
        out.stdout()
            .contains("snapshots for (host [h2], tags [h2]):"),
        "{}",
        out.dump()
    );
    s.cmd(["snapshots", "--group-by", "colour"])
        .code(2)
        .assert_one_error_line("--group-by");
}

/// `tag --add/--remove/--set`, as restic: a new snapshot with the new tags,
/// the old one gone, the data the same.
#[test]
fn tag_adds_removes_and_sets() {
    let s = Sandbox::init();
    let (src, first) = s.small_tree();
    let js = s.json(["tag", "--add", "keep", "--add", "x,y", &first]);
    let new = js["changed"][0]["new"].as_str().unwrap().to_string();
    let snaps = s.snapshots(&[]);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["tags"], serde_json::json!(["keep", "x", "y"]));
    assert_eq!(
        snaps[0]["original"].as_str().unwrap(),
        first_full(&s, &first, &snaps[0])
    );
    s.ok(["tag", "--remove", "x", "latest"]);
    assert_eq!(
        s.snapshots(&[])[0]["tags"],
        serde_json::json!(["keep", "y"])
    );
    s.ok([
        "tag",
        "--set",
        "only",
        "--host",
        &hostname::get().unwrap().to_string_lossy(),
    ]);
    assert_eq!(s.snapshots(&[])[0]["tags"], serde_json::json!(["only"]));
    // Nothing to change: nothing written.
    let js = s.json(["tag", "--add", "only", "latest"]);
    assert!(js["changed"].as_array().unwrap().is_empty());
    s.ok(["check"]);
    let t = s.path("t");
    s.restore("latest", &t, &[]);
    assert_same_tree(&src, &restored_path(&t, &src));
    assert!(!new.is_empty());
    s.cmd(["tag", "latest"])
        .code(2)
        .assert_one_error_line("--add");
    s.cmd(["tag", "--set", "a", "--add", "b", "latest"]).code(2);
}

/// The original's full ID, as the listing shows it.
fn first_full(_s: &Sandbox, short: &str, snap: &serde_json::Value) -> String {
    let original = snap["original"].as_str().unwrap_or_default().to_string();
    assert!(original.starts_with(short), "{snap}");
    original
}

/// restic's selectors: --exclude-if-present, --exclude-caches,
/// --exclude-larger-than, --iexclude and --files-from.
#[test]
fn restic_selectors_leave_out_what_they_say() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("keep/a.txt"), "a");
    write(&src.join("marked/.nobackup"), "");
    write(&src.join("marked/secret"), "s");
    write(
        &src.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    write(&src.join("cache/blob"), "c");
    write(&src.join("fake-cache/CACHEDIR.TAG"), "not the signature");
    write(&src.join("fake-cache/kept"), "k");
    std::fs::create_dir_all(src.join("media")).unwrap();
    write_random(&src.join("media/big.bin"), 2 << 20, 1);
    write(&src.join("media/Movie.ISO"), "iso");
    write(&src.join("media/small.bin"), "small");
    let other = s.path("other");
    write(&other.join("o.txt"), "o");
    let list = s.path("list.txt");
    write(
        &list,
        format!(
            "# what to back up\n{}\n\n{}\n",
            src.display(),
            other.display()
        ),
    );
    s.ok([
        "backup",
        "--files-from",
        list.to_str().unwrap(),
        "--exclude-if-present",
        ".nobackup",
        "--exclude-caches",
        "--exclude-larger-than",
        "1M",
        "--iexclude",
        "*.iso",
    ]);
    let listed = s.ok(["ls", "latest"]).stdout();
    for kept in [
        "keep/a.txt",
        "fake-cache/kept",
        "media/small.bin",
        "other/o.txt",
    ] {
        assert!(listed.contains(kept), "{kept} missing:\n{listed}");
    }
    for gone in ["marked", "cache/blob", "big.bin", "Movie.ISO"] {
        assert!(!listed.contains(gone), "{gone} backed up:\n{listed}");
    }
    s.cmd([
        "backup",
        src.to_str().unwrap(),
        "--exclude-larger-than",
        "huge",
    ])
    .code(2)
    .assert_one_error_line("--exclude-larger-than");
    s.cmd(["backup", "--files-from", s.path("nope").to_str().unwrap()])
        .code(2)
        .assert_one_error_line("--files-from");
}

/// `find PATTERN [--newest N]` and `find --blob ID`.
#[test]
fn find_names_the_snapshots_and_files() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("etc/app.conf"), "v1");
    write(&src.join("etc/other.txt"), "x");
    s.backup([src.to_str().unwrap(), "--time", "2024-01-01 10:00:00"]);
    write(&src.join("etc/db.conf"), "v2");
    s.backup([src.to_str().unwrap(), "--time", "2024-01-02 10:00:00"]);

    let js = s.json(["find", "*.conf"]);
    let found = js.as_array().unwrap();
    assert_eq!(found.len(), 2, "{js}");
    assert_eq!(found[0]["hits"], 2, "newest first: {js}");
    assert_eq!(found[1]["hits"], 1, "{js}");
    let js = s.json(["find", "*.CONF", "-i", "--newest", "1"]);
    assert_eq!(js.as_array().unwrap().len(), 1, "{js}");
    let out = s.ok(["find", "db.conf"]);
    assert!(
        out.stdout().contains("Found matching entries in snapshot"),
        "{}",
        out.dump()
    );
    assert!(out.stdout().contains("/etc/db.conf"), "{}", out.dump());

    // The blob of app.conf's content is in both snapshots: walk down to it.
    let mut tree = s.json(["cat", "snapshot", "latest"])["tree"]
        .as_str()
        .unwrap()
        .to_string();
    let file = src.join("etc/app.conf");
    let names: Vec<String> = file
        .components()
        .skip(1)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut blob = String::new();
    for (i, name) in names.iter().enumerate() {
        let t = s.json(["cat", "tree", &tree]);
        let node = t["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} in {t}"))
            .clone();
        if i + 1 == names.len() {
            blob = node["content"][0]["id"].as_str().unwrap().to_string();
        } else {
            tree = node["subtree"].as_str().unwrap().to_string();
        }
    }
    let js = s.json(["find", "--blob", &blob]);
    let found = js.as_array().unwrap();
    assert_eq!(found.len(), 2, "{js}");
    assert!(
        found[0]["matches"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("etc/app.conf"),
        "{js}"
    );
    s.cmd(["find", "--blob", "nothex"])
        .code(2)
        .assert_one_error_line("--blob");
    s.cmd(["find"]).code(2);
}

/// `find` across 50 snapshots: newest first, `--newest N` stops after N
/// snapshots, a file held by one snapshot only is found in exactly that one.
#[test]
fn find_across_fifty_snapshots() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("always.log"), "a");
    for day in 1..=50 {
        write(&src.join("day.txt"), format!("day {day}"));
        if day == 17 {
            write(&src.join("once.conf"), "only on day 17");
        } else {
            let _ = std::fs::remove_file(src.join("once.conf"));
        }
        // Two a day: odd days at 10:00, even ones at 12:00.
        let hour = if day % 2 == 0 { 12 } else { 10 };
        let time = format!("2024-02-{:02} {hour}:00:00", 1 + (day - 1) / 2);
        s.backup([src.to_str().unwrap(), "--time", &time]);
    }
    let js = s.json(["find", "*.log"]);
    let found = js.as_array().unwrap();
    assert_eq!(found.len(), 50, "every snapshot holds always.log");
    let times: Vec<&str> = found.iter().map(|f| f["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");

    let js = s.json(["find", "*.log", "--newest", "5"]);
    assert_eq!(js.as_array().unwrap().len(), 5, "{js}");
    assert_eq!(js[0]["time"], found[0]["time"], "{js}");

    let js = s.json(["find", "once.conf"]);
    let once = js.as_array().unwrap();
    assert_eq!(once.len(), 1, "{js}");
    assert!(
        once[0]["time"].as_str().unwrap().starts_with("2024-02-09"),
        "{js}"
    );
    assert_eq!(once[0]["matches"][0]["size"], 14, "{js}");
}

/// `stats --mode restore-size|raw-data|blobs-per-file`, restic's figures.
#[test]
fn stats_modes() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("a"), "same content");
    write(&src.join("b"), "same content");
    write(&src.join("c"), "other");
    s.backup([src.to_str().unwrap()]);
    s.backup([src.to_str().unwrap(), "--force"]);
    let r = s.json(["stats", "--mode", "restore-size"]);
    assert_eq!(num(&r, "total_file_count"), 6, "{r}");
    assert_eq!(num(&r, "total_size"), 2 * (12 + 12 + 5), "{r}");
    let b = s.json(["stats", "--mode", "blobs-per-file"]);
    assert_eq!(num(&b, "total_file_count"), 2, "{b}");
    assert_eq!(num(&b, "total_size"), 12 + 5, "{b}");
    let d = s.json(["stats", "--mode", "raw-data"]);
    assert_eq!(num(&d, "total_uncompressed_size"), 12 + 5, "{d}");
    assert_eq!(num(&d, "total_blob_count"), 2, "{d}");
    assert!(num(&d, "total_size") > 0, "{d}");
    s.cmd(["stats", "--mode", "files"])
        .code(2)
        .assert_one_error_line("--mode");
}

/// `rewrite --exclude`: plan first, then a new snapshot without the paths
/// (the original kept unless --forget), as restic.
#[test]
fn rewrite_leaves_out_what_it_is_told() {
    let s = Sandbox::init();
    let src = s.path("src");
    write(&src.join("keep.txt"), "keep");
    write(&src.join("tmp/junk.tmp"), "junk");
    write(&src.join("b.tmp"), "tmp");
    let first = text(&s.backup([&src]), "snapshot_id").to_string();
    let js = s.json(["rewrite", "latest", "--exclude", "*.tmp", "--dry-run"]);
    let removed = js["snapshots"][0]["removed"].as_array().unwrap().len();
    assert_eq!(removed, 2, "{js}");
    assert_eq!(s.snapshot_count(), 1);
    let js = s.json([
        "rewrite",
        "latest",
        "--exclude",
        "*.tmp",
        "--exclude",
        "src/tmp",
        "--forget",
    ]);
    let new = js["snapshots"][0]["rewritten"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.snapshot_count(), 1);
    let listed = s.ok(["ls", &new[..8]]).stdout();
    assert!(listed.contains("keep.txt"), "{listed}");
    assert!(
        !listed.contains(".tmp") && !listed.contains("/tmp/junk"),
        "{listed}"
    );
    let snap = &s.snapshots(&[])[0];
    assert!(
        snap["original"].as_str().unwrap().starts_with(&first),
        "{snap}"
    );
    s.ok(["check"]);
    s.cmd(["rewrite", "latest"])
        .code(2)
        .assert_one_error_line("--exclude");
}

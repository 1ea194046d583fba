//! A small fleet (issue 22; `cargo xtask fleet` is the full one): 4 hosts
//! with distinct `--host` and their own caches back up their own trees into
//! one bucket (moto) at once, 4 rounds each, while an admin runs forget +
//! prune in a loop and a verifier runs budgeted check passes and copies to a
//! second bucket. No command waits on a lock or fails; afterwards every
//! host's kept snapshots are listed, its newest restores to its tree, and both
//! repositories pass `check --read-data`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use common::servers::{start_moto, Moto};
use serde_json::Value;

const HOSTS: usize = 4;
const ROUNDS: usize = 4;
const URL: &str = "s3://fleet/repo";
const COPY_URL: &str = "s3://fleet-copy/repo";

struct Ran {
    code: i32,
    out: Value,
    all: String,
}

fn cairn(moto: &Moto, work: &Path, url: &str, cache: &str, args: &[&str]) -> Ran {
    let out = Command::new(assert_cmd::cargo::cargo_bin("cairn"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CAIRN_PASSWORD", "fleet")
        .args(["-r", url])
        .args(moto.option_args())
        .args(["--event-log", "/dev/null", "--json", "--cache-dir"])
        .arg(work.join("cache").join(cache))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let all = format!("{args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("panicked"), "{all}");
    let out_json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .or_else(|| serde_json::from_str(&stdout).ok())
        .unwrap_or(Value::Null);
    Ran {
        code: out.status.code().unwrap_or(-1),
        out: out_json,
        all,
    }
}

fn write_tree(dir: &Path, host: usize, round: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..6 {
        // Shared by every host: dedups across them.
        let shared = common::random_bytes(20_000 + i * 1_000, 900 + i as u64);
        std::fs::write(dir.join(format!("shared-{i}")), shared).unwrap();
    }
    for i in 0..10 {
        if round == 0 || i % ROUNDS == round {
            let seed = (host * 1_000 + round * 100 + i) as u64;
            std::fs::write(
                dir.join(format!("own-{i}")),
                common::random_bytes(5_000 + i * 3_000, seed),
            )
            .unwrap();
        }
    }
}

#[test]
fn a_fleet_of_hosts_backs_up_into_one_bucket_beside_prune_check_and_copy() {
    let Some(moto) = start_moto() else { return };
    moto.make_bucket("fleet");
    moto.make_bucket("fleet-copy");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let fast_kdf = ["--kdf-memory", "8", "--kdf-time", "1"];
    let mut init = vec!["init"];
    init.extend(fast_kdf);
    let r = cairn(&moto, work, URL, "admin", &init);
    assert_eq!(r.code, 0, "{}", r.all);
    let mut from = vec!["init", "--from", URL];
    from.extend(fast_kdf);
    let opts: Vec<String> = moto
        .options()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for o in &opts {
        from.extend(["--from-option", o.as_str()]);
    }
    let r = cairn(&moto, work, COPY_URL, "verifier", &from);
    assert_eq!(r.code, 0, "{}", r.all);
    let trees: Vec<PathBuf> = (0..HOSTS)
        .map(|k| work.join("trees").join(format!("h{k}")))
        .collect();
    for (k, t) in trees.iter().enumerate() {
        write_tree(t, k, 0);
    }

    let failures = Mutex::new(Vec::<String>::new());
    let reported = Mutex::new(vec![Vec::<String>::new(); HOSTS]);
    let (prunes, copies) = (Mutex::new(0), Mutex::new(0));
    let done = AtomicBool::new(false);
    let fail = |r: &Ran| {
        if r.code != 0 {
            failures.lock().unwrap().push(r.all.clone());
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                fail(&cairn(
                    &moto,
                    work,
                    URL,
                    "admin",
                    &["forget", "--keep-last", "2"],
                ));
                let p = cairn(&moto, work, URL, "admin", &["prune"]);
                fail(&p);
                *prunes.lock().unwrap() += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                fail(&cairn(
                    &moto,
                    work,
                    URL,
                    "verifier",
                    &["check", "--max-bytes", "1M"],
                ));
                let mut copy = vec!["copy", "--to", COPY_URL];
                for o in &opts {
                    copy.extend(["--to-option", o.as_str()]);
                }
                fail(&cairn(&moto, work, URL, "verifier", &copy));
                *copies.lock().unwrap() += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
        let members: Vec<_> = trees
            .iter()
            .enumerate()
            .map(|(k, tree)| {
                let (fail, reported, moto) = (&fail, &reported, &moto);
                s.spawn(move || {
                    let host = format!("h{k}");
                    for round in 0..ROUNDS {
                        if round > 0 {
                            write_tree(tree, k, round);
                        }
                        let args = ["backup", "--host", &host, tree.to_str().unwrap()];
                        let r = cairn(moto, work, URL, &host, &args);
                        fail(&r);
                        if let Some(id) = r.out["snapshot_id"].as_str() {
                            reported.lock().unwrap()[k].push(id.to_string());
                        }
                    }
                })
            })
            .collect();
        for m in members {
            m.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(*prunes.lock().unwrap() >= 1 && *copies.lock().unwrap() >= 1);

    // One more round of retention, then nothing reported saved and kept is gone.
    for args in [&["forget", "--keep-last", "2"][..], &["prune"]] {
        let r = cairn(&moto, work, URL, "admin", args);
        assert_eq!(r.code, 0, "{}", r.all);
    }
    let listed = cairn(&moto, work, URL, "admin", &["snapshots"]);
    let ids: Vec<&str> = listed
        .out
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), HOSTS * 2, "{}", listed.all);
    let reported = reported.into_inner().unwrap();
    for (k, tree) in trees.iter().enumerate() {
        assert_eq!(reported[k].len(), ROUNDS);
        for id in reported[k].iter().rev().take(2) {
            assert!(ids.contains(&id.as_str()), "h{k}: {id} is gone");
        }
        let target = work.join("restore").join(format!("h{k}"));
        let newest = reported[k].last().unwrap();
        let args = ["restore", newest, "--target", target.to_str().unwrap()];
        let r = cairn(&moto, work, URL, "admin", &args);
        assert_eq!(r.code, 0, "{}", r.all);
        let restored = target.join(tree.strip_prefix("/").unwrap());
        for e in std::fs::read_dir(tree).unwrap() {
            let name = e.unwrap().file_name();
            assert_eq!(
                std::fs::read(restored.join(&name)).unwrap(),
                std::fs::read(tree.join(&name)).unwrap(),
                "h{k}: {name:?}"
            );
        }
    }
    for (url, cache) in [(URL, "admin"), (COPY_URL, "verifier")] {
        let r = cairn(&moto, work, url, cache, &["check", "--read-data"]);
        assert_eq!(r.code, 0, "{}", r.all);
    }
}

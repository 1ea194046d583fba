//! The same black-box scenario on every store: local disk, S3 (moto), Azure
//! (Azurite), the in-repository GCS fake, and (library-level, since it lives in
//! one process) memory. Plus the storage errors a user meets: an endpoint that
//! cannot be reached, wrong credentials, a missing bucket. Servers are started
//! by the tests on 127.0.0.1; in CI (CI set) a missing one is a failure.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::gcs_fake::GcsFake;
use common::random_bytes;
use common::servers::{free_port, start_azurite, start_moto};
use serde_json::Value;

const PW: &str = "cloud test password";

/// Where a scenario runs: a repository URL and the `-o` options it needs.
struct Store {
    url: String,
    options: Vec<(String, String)>,
}

fn cairn_cmd(store: &Store, args: &[&str]) -> Command {
    let mut c = Command::new(common::BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CAIRN_PASSWORD", PW)
        .args(["-r", &store.url]);
    for (k, v) in &store.options {
        c.args(["-o", &format!("{k}={v}")]);
    }
    c.args(["--event-log", "/dev/null"]).args(args);
    c
}

fn run(store: &Store, args: &[&str]) -> Output {
    let out = cairn_cmd(store, args).output().unwrap();
    common::assert_no_panic(&args.join(" "), &out.stdout, &out.stderr);
    out
}

fn ok(store: &Store, args: &[&str]) -> Output {
    let out = run(store, args);
    assert!(
        out.status.success(),
        "{} `{}`: {}",
        store.url,
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn make_source(root: &Path, seed: u64) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("a.txt"), format!("alpha {seed}")).unwrap();
    std::fs::write(root.join("sub/big.bin"), random_bytes(2_000_000, seed)).unwrap();
}

/// init, backup, unchanged re-backup, restore byte for byte, two concurrent
/// backups, prune beside the finished states, `check --read-data`.
fn scenario(store: &Store) {
    let dir = tempfile::tempdir().unwrap();
    let (src, src2) = (dir.path().join("src"), dir.path().join("src2"));
    make_source(&src, 1);
    make_source(&src2, 2);
    let s = src.to_str().unwrap();

    ok(store, &["init"]);
    let first = json(&ok(store, &["backup", s, "--json"]));
    assert_eq!(first["files_new"], 2);
    let req = &first["requests"];
    assert!(req["put"].as_u64().unwrap() >= 3, "{req}");
    assert!(req["bytes_up"].as_u64().unwrap() >= 2_000_000, "{req}");

    let again = json(&ok(store, &["backup", s, "--json"]));
    assert_eq!(again["files_unmodified"], 2);
    // Only the new snapshot's root tree: no file data.
    assert!(again["data_added"].as_u64().unwrap() < 4096, "{again}");

    let target = dir.path().join("restored");
    ok(
        store,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--verify",
        ],
    );
    let root = target.join(src.strip_prefix("/").unwrap());
    for f in ["a.txt", "sub/big.bin"] {
        assert_eq!(
            std::fs::read(root.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }

    // Two writers at once: both finish, neither waits for the other.
    std::fs::write(src.join("a.txt"), b"changed").unwrap();
    let a = cairn_cmd(store, &["backup", s]).spawn().unwrap();
    let b = cairn_cmd(store, &["backup", src2.to_str().unwrap()])
        .spawn()
        .unwrap();
    for mut child in [a, b] {
        assert!(child.wait().unwrap().success(), "concurrent backup failed");
    }
    let snaps = json(&ok(store, &["snapshots", "--json"]));
    assert_eq!(snaps.as_array().unwrap().len(), 4, "{snaps}");

    ok(store, &["forget", "--keep-last", "2"]);
    ok(store, &["prune"]);
    ok(store, &["check", "--read-data"]);
    // --keep-last counts per host and paths: src keeps two, src2 its one.
    let snaps = json(&ok(store, &["snapshots", "--json"]));
    assert_eq!(snaps.as_array().unwrap().len(), 3, "{snaps}");
}

#[test]
fn scenario_local_disk() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&Store {
        url: dir.path().join("repo").to_str().unwrap().to_string(),
        options: vec![],
    });
}

#[test]
fn scenario_s3_moto() {
    let Some(moto) = start_moto() else { return };
    moto.make_bucket("scenario");
    scenario(&Store {
        url: "s3://scenario/repo".into(),
        options: moto.options(),
    });
}

#[test]
fn scenario_azure_azurite() {
    let Some(azurite) = start_azurite() else {
        return;
    };
    azurite.make_container("scenario");
    scenario(&Store {
        url: "az://scenario/repo".into(),
        options: azurite.options(),
    });
}

#[test]
fn scenario_gcs_fake() {
    let fake = GcsFake::start();
    fake.make_bucket("scenario");
    scenario(&Store {
        url: "gs://scenario/repo".into(),
        options: fake.options(),
    });
}

/// Transient failures are retried by object_store: a backup through a server
/// that answers every fourth request with 503 completes, and `check
/// --read-data` passes.
#[test]
fn gcs_fake_503s_are_retried() {
    let fake = GcsFake::start();
    fake.make_bucket("flaky");
    let mut options = fake.options();
    options.push(("retry_backoff_init".into(), "10ms".into()));
    options.push(("retry_backoff_max".into(), "100ms".into()));
    let store = Store {
        url: "gs://flaky/repo".into(),
        options,
    };
    let dir = tempfile::tempdir().unwrap();
    make_source(dir.path(), 7);
    ok(&store, &["init"]);
    fake.fail_every(4);
    ok(&store, &["backup", dir.path().to_str().unwrap()]);
    ok(&store, &["check", "--read-data"]);
    let failed = fake.failures_injected();
    fake.fail_every(0);
    assert!(failed > 0, "no failure was injected");
    // With retries off, the same faults fail the command with one clear line.
    fake.fail_every(2);
    let out = run(&store, &["-o", "retry_max=0", "snapshots"]);
    fake.fail_every(0);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error:"), "{err}");
}

#[test]
fn gcs_fake_passes_object_store_conformance() {
    use object_store::integration::*;
    let fake = GcsFake::start();
    fake.make_bucket("conformance");
    let mut b = object_store::gcp::GoogleCloudStorageBuilder::new().with_bucket_name("conformance");
    for (k, v) in fake.options() {
        b = b.with_config(k.parse().unwrap(), v);
    }
    let store = b.build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        put_get_delete_list(&store).await;
        list_uses_directories_correctly(&store).await;
        list_with_delimiter(&store).await;
        list_with_offset_exclusivity(&store).await;
        get_opts(&store).await;
        put_opts(&store, true).await;
        rename_and_copy(&store).await;
        copy_if_not_exists(&store).await;
        copy_rename_nonexistent_object(&store).await;
    });
}

/// The scenario's library half on the in-process memory store.
#[test]
fn scenario_memory_library() {
    use cairn::ops::backup::{backup, BackupOptions, NoProgress};
    use cairn::ops::check::{check, ReadData};
    use cairn::source::Source;
    use cairn::{Backend, Repository};
    let dir = tempfile::tempdir().unwrap();
    make_source(dir.path(), 3);
    let b = Backend::memory();
    let opts = common::fast_kdf();
    Repository::init(b.clone(), PW.as_bytes(), opts).unwrap();
    for round in 0..2 {
        let mut repo = Repository::open(b.clone(), PW.as_bytes())
            .unwrap()
            .into_indexed()
            .unwrap();
        let src = Source::Paths(vec![dir.path().to_path_buf()]);
        let before = b.request_counts();
        let out = backup(&mut repo, src, &BackupOptions::default(), &NoProgress).unwrap();
        let s = out.snapshot.summary.unwrap();
        let after = b.request_counts();
        if round == 0 {
            assert_eq!(s.files_new, 2);
            assert!(after.bytes_up - before.bytes_up >= 2_000_000);
        } else {
            assert_eq!(s.files_unmodified, 2);
            assert!(after.bytes_up - before.bytes_up < 100_000, "{after:?}");
        }
    }
    let mut repo = Repository::open(b, PW.as_bytes()).unwrap();
    assert!(check(&mut repo, ReadData::All).unwrap().ok());
}

// ---- errors a user meets ----

fn one_error_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn unreachable_endpoint_fails_within_the_deadline() {
    let port = free_port(); // nothing listens there
    let store = Store {
        url: "s3://nowhere/repo".into(),
        options: vec![
            ("aws_endpoint".into(), format!("http://127.0.0.1:{port}")),
            ("aws_allow_http".into(), "true".into()),
            ("aws_access_key_id".into(), "x".into()),
            ("aws_secret_access_key".into(), "x".into()),
            ("aws_region".into(), "us-east-1".into()),
        ],
    };
    let t = Instant::now();
    let out = run(&store, &["snapshots"]);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(35), "took {took:?}");
    assert_eq!(out.status.code(), Some(1));
    let err = one_error_line(&out);
    assert!(err.contains("cannot reach"), "{err}");
    // A shorter deadline is honoured.
    let t = Instant::now();
    let out = run(&store, &["-o", "connect_deadline=2s", "snapshots"]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(one_error_line(&out).contains("cannot reach"));
}

#[test]
fn wrong_credentials_exit_1_and_say_so() {
    let fake = GcsFake::start();
    fake.make_bucket("creds");
    let mut options = fake.options();
    options.retain(|(k, _)| k != "google_bearer_token");
    options.push(("google_bearer_token".into(), "wrong".into()));
    let out = run(
        &Store {
            url: "gs://creds/r".into(),
            options,
        },
        &["snapshots"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(one_error_line(&out).contains("credentials"));

    let Some(azurite) = start_azurite() else {
        return;
    };
    azurite.make_container("creds");
    let wrong_key = "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXkgd3Jvbmcga2V5IHdyb25nIGtleQ==";
    let out = run(
        &Store {
            url: "az://creds/r".into(),
            options: azurite.options_with_key(wrong_key),
        },
        &["snapshots"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(one_error_line(&out).contains("credentials"));
}

#[test]
fn missing_bucket_exits_10_and_says_how_to_create_it() {
    let mut stores = Vec::new();
    let fake = GcsFake::start();
    stores.push(Store {
        url: "gs://no-such-bucket/r".into(),
        options: fake.options(),
    });
    let moto = start_moto();
    if let Some(m) = &moto {
        stores.push(Store {
            url: "s3://no-such-bucket/r".into(),
            options: m.options(),
        });
    }
    let azurite = start_azurite();
    if let Some(a) = &azurite {
        stores.push(Store {
            url: "az://no-such-container/r".into(),
            options: a.options(),
        });
    }
    for store in &stores {
        for cmd in [&["snapshots"][..], &["init"][..]] {
            let out = run(store, cmd);
            assert_eq!(
                out.status.code(),
                Some(10),
                "{} {cmd:?}: {}",
                store.url,
                String::from_utf8_lossy(&out.stderr)
            );
            let err = one_error_line(&out);
            assert!(err.contains("does not exist"), "{err}");
            assert!(err.contains("cairn does not create buckets"), "{err}");
        }
    }
}

#[test]
fn retry_options_are_validated() {
    let fake = GcsFake::start();
    fake.make_bucket("opts");
    let store = Store {
        url: "gs://opts/r".into(),
        options: fake.options(),
    };
    for bad in ["retry_max=lots", "retry_timeout=soon", "connect_deadline=0"] {
        assert_eq!(
            run(&store, &["-o", bad, "snapshots"]).status.code(),
            Some(2)
        );
    }
    let out = run(
        &store,
        &[
            "-o",
            "retry_max=3",
            "-o",
            "retry_timeout=20s",
            "-o",
            "request_timeout=10s",
            "-o",
            "connect_timeout=2s",
            "snapshots",
        ],
    );
    assert_eq!(out.status.code(), Some(10), "no repository yet");
}

/// `mount` over a bucket serves what a restore of the same snapshot writes.
#[test]
fn mount_of_an_s3_repository_matches_its_restore() {
    if !common::mountutil::fuse_or_skip() {
        return;
    }
    let Some(moto) = start_moto() else { return };
    moto.make_bucket("mounted");
    let store = Store {
        url: "s3://mounted/repo".into(),
        options: moto.options(),
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_source(&src, 7);
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    ok(&store, &["init"]);
    ok(&store, &["backup", src.to_str().unwrap()]);
    let restored = dir.path().join("restored");
    ok(
        &store,
        &["restore", "latest", "--target", restored.to_str().unwrap()],
    );
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m =
        common::mountutil::Mount::start(cairn_cmd(&store, &["mount", mnt.to_str().unwrap()]), &mnt);
    let rel = src.strip_prefix("/").unwrap();
    common::fsutil::assert_same_tree(&restored.join(rel), &mnt.join("snapshots/latest").join(rel));
    let (status, err) = m.stop();
    assert!(status.success(), "{err}");
}

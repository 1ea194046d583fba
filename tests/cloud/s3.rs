//! The same commands against S3, on a moto server this test starts on 127.0.0.1.
//! In CI (CI set) a missing moto_server is a failure, never a silent skip.

use crate::common;

use common::servers::{cairn_cloud, start_moto, Moto};

fn cairn(moto: &Moto, url: &str, password: &str, args: &[&str]) -> std::process::Output {
    cairn_cloud(url, password, &moto.option_args(), args)
}

#[test]
fn s3_backup_restore_check_and_errors() {
    let Some(moto) = start_moto() else { return };
    moto.make_bucket("cairn-test");
    let url = "s3://cairn-test/some/prefix";
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();

    let p = &moto;
    assert_eq!(
        cairn(p, url, "pw", &["snapshots"]).status.code(),
        Some(10),
        "no repository yet"
    );
    assert!(cairn(p, url, "pw", &["init"]).status.success());
    assert_ne!(
        cairn(p, url, "pw", &["init"]).status.code(),
        Some(0),
        "init over a repository is refused"
    );
    let out = cairn(p, url, "pw", &["backup", src.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files_new"], 2);
    // Unchanged re-backup reads nothing.
    let again: serde_json::Value = serde_json::from_slice(
        &cairn(p, url, "pw", &["backup", src.to_str().unwrap(), "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(again["files_unmodified"], 2);
    assert_eq!(
        cairn(p, url, "wrong", &["snapshots"]).status.code(),
        Some(12)
    );

    let target = dir.path().join("restored");
    let out = cairn(
        p,
        url,
        "pw",
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--verify",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(root.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(root.join("sub/big.bin")).unwrap(), big);

    let out = cairn(p, url, "pw", &["check", "--read-data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A bucket has no free space to compare with --min-free: health says so.
    let out = cairn(p, url, "pw", &["health", "--min-free", "1P"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("--min-free not checked"), "{err}");

    // The prefix confines the repository: another prefix in the same bucket is empty.
    assert_eq!(
        cairn(p, "s3://cairn-test/other", "pw", &["snapshots"])
            .status
            .code(),
        Some(10)
    );
    // Unknown storage options are refused as usage errors.
    assert_eq!(
        cairn(p, url, "pw", &["-o", "aws_no_such_key=1", "snapshots"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn s3_conditional_create_never_overwrites() {
    let Some(moto) = start_moto() else { return };
    moto.make_bucket("cairn-cc");
    let opts = moto.options();
    let b = cairn::Backend::open("s3://cairn-cc/r", &opts, false).unwrap();
    assert_eq!(
        b.create("x/1", b"first".to_vec()).unwrap(),
        cairn::storage::Created::New
    );
    assert_eq!(
        b.create("x/1", b"second".to_vec()).unwrap(),
        cairn::storage::Created::AlreadyExisted
    );
    assert_eq!(&b.get("x/1").unwrap()[..], b"first");
}

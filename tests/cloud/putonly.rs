//! Put-only hosts (issue 22): with credentials that may create, read and list
//! but never delete or overwrite, backup, copy --to, check, health, drill and
//! restore work;
//! prune fails with one line. Azurite enforces the SAS permissions, so a
//! delete or an overwrite a writer made would really be refused.
//! (moto can enforce IAM too, but its signature check rejects every listing
//! whose prefix holds a `/`, and every cairn listing does.)

use crate::common;

use common::servers::{cairn_cloud, start_azurite};

/// Azure SAS letters: read, list, create (a new blob only). No write
/// (overwrite) and no delete.
const PUT_ONLY: &str = "rlc";

fn cairn(opts: &[(String, String)], url: &str, args: &[&str]) -> std::process::Output {
    let flags = |flag: &str| -> Vec<String> {
        opts.iter()
            .flat_map(|(k, v)| [flag.to_string(), format!("{k}={v}")])
            .collect()
    };
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if args.first().map(String::as_str) == Some("copy") {
        args.extend(flags("--to-option"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cairn_cloud(url, "pw", &flags("-o"), &args)
}

fn ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn put_only_credentials_back_up_copy_check_restore_but_cannot_prune() {
    let Some(az) = start_azurite() else { return };
    az.make_container("main");
    az.make_container("copy");
    let admin = az.options();
    let writer = az.options_with_sas(PUT_ONLY);
    let (main, copy) = ("az://main/repo", "az://copy/repo");
    ok(cairn(&admin, main, &["init"]), "init");
    ok(cairn(&admin, copy, &["init"]), "init of the copy");

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b.bin"), vec![7u8; 200_000]).unwrap();
    let s = src.to_str().unwrap();

    // The SAS really lacks delete: the writer cannot remove the config.
    let out = cairn(&writer, main, &["backup", s]);
    ok(out, "put-only backup");
    std::fs::write(src.join("a.txt"), b"alpha, changed").unwrap();
    ok(
        cairn(&writer, main, &["backup", s]),
        "second put-only backup",
    );
    ok(
        cairn(&writer, main, &["check", "--read-data"]),
        "put-only check",
    );
    ok(
        cairn(&writer, main, &["copy", "--to", copy]),
        "put-only copy --to",
    );
    ok(
        cairn(&writer, copy, &["check", "--read-data"]),
        "check of the copy",
    );
    ok(cairn(&writer, main, &["health"]), "put-only health");
    ok(cairn(&writer, main, &["drill"]), "put-only drill");
    let target = dir.path().join("restored");
    let t = target.to_str().unwrap();
    ok(
        cairn(&writer, main, &["restore", "latest", "--target", t]),
        "put-only restore",
    );
    let root = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read(root.join("a.txt")).unwrap(),
        b"alpha, changed"
    );

    // Prune needs delete: one clear line, exit code 1 (product.md).
    ok(
        cairn(&admin, main, &["forget", "--keep-last", "1"]),
        "admin forget",
    );
    let out = cairn(&writer, main, &["prune"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("prune needs credentials that may delete"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // The admin's prune completes, and both repositories stay whole.
    ok(cairn(&admin, main, &["prune"]), "admin prune");
    ok(
        cairn(&writer, main, &["check", "--read-data"]),
        "check after prune",
    );
    ok(
        cairn(&writer, copy, &["check", "--read-data"]),
        "check of the copy",
    );
}

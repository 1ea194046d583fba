//! Object-lock buckets (issue 22), on moto, which implements S3 Object Lock:
//! a bucket made with object lock (so versioned), every object under a
//! GOVERNANCE retention of a day. On S3 a delete without a version ID is never
//! refused: it hides the object behind a delete marker and the locked version
//! stays. So prune completes, and what it deleted can still be recovered; with
//! `init --min-retention` recorded, prune does not even try, and says until
//! when the young packs stay.

use crate::common;

use std::collections::BTreeSet;

use common::servers::{cairn_cloud, start_moto, Moto};
use serde_json::Value;

const BUCKET: &str = "locked";

/// Runs cairn with these store options (`-o K=V ...`); it must succeed.
fn cairn(opts: &[String], url: &str, args: &[&str]) -> std::process::Output {
    let out = cairn_cloud(url, "pw", opts, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(opts: &[String], url: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = cairn(opts, url, &args);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `<tag>` texts of an S3 XML listing, each within its `<element>`.
fn xml_values(body: &str, element: &str, tag: &str) -> Vec<String> {
    let open = format!("<{element}>");
    body.split(&open)
        .skip(1)
        .filter_map(|part| {
            let end = part.find(&format!("</{element}>")).unwrap_or(part.len());
            let part = &part[..end];
            let (_, rest) = part.split_once(&format!("<{tag}>"))?;
            let (value, _) = rest.split_once(&format!("</{tag}>"))?;
            Some(value.to_string())
        })
        .collect()
}

/// Current keys under `prefix` (one page is plenty here).
fn keys(moto: &Moto, prefix: &str) -> BTreeSet<String> {
    let (status, body) = moto.http(
        "GET",
        &format!("/{BUCKET}?list-type=2&max-keys=1000&prefix={prefix}"),
        &[],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("<IsTruncated>true"), "{body}");
    xml_values(&body, "Contents", "Key").into_iter().collect()
}

/// Keys under `prefix` that have a stored version (not a delete marker).
fn versioned_keys(moto: &Moto, prefix: &str) -> BTreeSet<String> {
    let (status, body) = moto.http(
        "GET",
        &format!("/{BUCKET}?versions&prefix={prefix}"),
        &[],
        "",
    );
    assert_eq!(status, 200, "{body}");
    xml_values(&body, "Version", "Key").into_iter().collect()
}

/// Puts every current object under `prefix` under a GOVERNANCE retention of
/// a day, as a bucket's default retention would have at upload.
fn lock_everything(moto: &Moto, prefix: &str) {
    let until = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let body = format!(
        "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>GOVERNANCE</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>"
    );
    let all = keys(moto, prefix);
    assert!(!all.is_empty());
    for k in all {
        let (status, resp) = moto.http(
            "PUT",
            &format!("/{BUCKET}/{k}?retention"),
            &[("Content-Type", "application/xml")],
            &body,
        );
        assert_eq!(status, 200, "locking {k}: {resp}");
    }
}

fn two_generations(opts: &[String], url: &str, src: &std::path::Path) {
    for seed in [1, 2] {
        std::fs::write(src.join("big"), common::random_bytes(2_500_000, seed)).unwrap();
        std::fs::write(src.join("small"), format!("generation {seed}")).unwrap();
        cairn(opts, url, &["backup", src.to_str().unwrap()]);
    }
}

fn pack_keys(moto: &Moto, repo: &str) -> BTreeSet<String> {
    let mut out = keys(moto, &format!("{repo}/data/"));
    out.extend(keys(moto, &format!("{repo}/tree/")));
    out
}

#[test]
fn prune_on_an_object_lock_bucket_completes_and_locked_data_survives() {
    let Some(moto) = start_moto() else { return };
    moto.make_locked_bucket(BUCKET);
    let o = moto.option_args();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();

    // No retention recorded: prune deletes, S3 keeps every locked version.
    let url = format!("s3://{BUCKET}/plain");
    cairn(&o, &url, &["init"]);
    two_generations(&o, &url, &src);
    lock_everything(&moto, "plain/");
    let before = pack_keys(&moto, "plain");
    cairn(&o, &url, &["forget", "--keep-last", "1"]);
    let out = json(&o, &url, &["prune"]);
    assert_eq!(out["swept"], true, "{out}");
    let deleted = out["packs_deleted"].as_u64().unwrap();
    assert!(deleted >= 1, "{out}");
    assert_eq!(out["packs_delete_refused"], 0, "{out}");
    let after = pack_keys(&moto, "plain");
    let gone: BTreeSet<_> = before.difference(&after).cloned().collect();
    assert_eq!(gone.len() as u64, deleted, "{out}");
    let kept_versions = versioned_keys(&moto, "plain/");
    assert!(
        gone.is_subset(&kept_versions),
        "every deleted pack is still a locked version: {gone:?} {kept_versions:?}"
    );
    // The locked versions cannot be destroyed, even by someone who may delete.
    let one = gone.iter().next().unwrap();
    let (_, body) = moto.http("GET", &format!("/{BUCKET}?versions&prefix={one}"), &[], "");
    let version = xml_values(&body, "Version", "VersionId").pop().unwrap();
    let (status, body) = moto.http(
        "DELETE",
        &format!("/{BUCKET}/{one}?versionId={version}"),
        &[],
        "",
    );
    assert_eq!(status, 403, "{body}");
    let check = json(&o, &url, &["check", "--read-data"]);
    assert_eq!(check["errors"], serde_json::json!([]), "{check}");
    let target = dir.path().join("restored");
    cairn(
        &o,
        &url,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    let restored = target.join(src.strip_prefix("/").unwrap()).join("big");
    assert_eq!(
        std::fs::read(restored).unwrap(),
        std::fs::read(src.join("big")).unwrap()
    );

    // A recorded minimum retention: prune leaves the young packs alone and
    // says until when.
    let url = format!("s3://{BUCKET}/recorded");
    let init = cairn(&o, &url, &["init", "--min-retention", "1d"]);
    assert!(
        String::from_utf8_lossy(&init.stdout).contains("at least 1d"),
        "{}",
        String::from_utf8_lossy(&init.stdout)
    );
    two_generations(&o, &url, &src);
    let before = pack_keys(&moto, "recorded");
    cairn(&o, &url, &["forget", "--keep-last", "1"]);
    let started = chrono::Utc::now();
    let out = json(&o, &url, &["prune"]);
    assert_eq!(out["packs_deleted"], 0, "{out}");
    assert!(out["packs_locked"].as_u64().unwrap() >= 1, "{out}");
    assert!(out["bytes_locked"].as_u64().unwrap() >= 2_500_000, "{out}");
    let until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(out["locked_until"].clone()).unwrap();
    assert!(until > started + chrono::Duration::hours(23), "{out}");
    assert_eq!(pack_keys(&moto, "recorded"), before);
    let text = cairn(&o, &url, &["prune", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("stay under the minimum retention until"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let check = json(&o, &url, &["check", "--read-data"]);
    assert_eq!(check["errors"], serde_json::json!([]), "{check}");
}

/// A GCS bucket retention policy refuses to delete young objects (403). The
/// fake enforces it as GCS does. `forget` of a held snapshot names it and
/// exits 1; prune completes, counts the packs it could not delete, and leaves
/// a repository that checks clean; once the policy is lifted the next prune
/// deletes them.
#[test]
fn a_gcs_retention_policy_refuses_deletes_and_prune_still_completes() {
    let fake = common::gcs_fake::GcsFake::start();
    fake.make_bucket("held");
    let opts: Vec<String> = fake
        .options()
        .into_iter()
        .flat_map(|(k, v)| ["-o".to_string(), format!("{k}={v}")])
        .collect();
    let url = "gs://held/repo";
    let ok = |args: &[&str]| cairn(&opts, url, args);
    let json = |args: &[&str]| json(&opts, url, args);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    ok(&["init"]);
    for seed in [5, 6] {
        std::fs::write(src.join("big"), common::random_bytes(1_500_000, seed)).unwrap();
        ok(&["backup", src.to_str().unwrap()]);
    }
    ok(&["forget", "--keep-last", "1"]);

    fake.set_retention("held", 86_400);
    std::fs::write(src.join("big"), common::random_bytes(1_500_000, 7)).unwrap();
    ok(&["backup", src.to_str().unwrap()]);
    let refused = cairn_cloud(url, "pw", &opts, &["forget", "--keep-last", "1"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("refused to delete 1 of the 1 snapshots"),
        "{err}"
    );
    let out = json(&["prune"]);
    assert_eq!(out["swept"], true, "{out}");
    assert_eq!(out["packs_deleted"], 0, "{out}");
    assert!(out["packs_delete_refused"].as_u64().unwrap() >= 1, "{out}");
    let check = json(&["check", "--read-data"]);
    assert_eq!(check["errors"], serde_json::json!([]), "{check}");
    assert_eq!(check["snapshots"], 2, "{check}");

    fake.set_retention("held", 0);
    ok(&["forget", "--keep-last", "1"]);
    let out = json(&["prune"]);
    assert!(out["packs_deleted"].as_u64().unwrap() >= 2, "{out}");
    assert_eq!(out["packs_delete_refused"], 0, "{out}");
    let check = json(&["check", "--read-data"]);
    assert_eq!(check["errors"], serde_json::json!([]), "{check}");
    assert_eq!(check["unused_packs"], 0, "{check}");
    assert_eq!(check["snapshots"], 1, "{check}");
}

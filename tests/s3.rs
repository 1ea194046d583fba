//! The same commands against S3, on a moto server this test starts on 127.0.0.1.
//! In CI (CI set) a missing moto_server is a failure, never a silent skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Option<Moto> {
    let found = Command::new("sh")
        .args(["-c", "command -v moto_server"])
        .output()
        .map(|o| o.status.success());
    if !found.unwrap_or(false) {
        assert!(
            std::env::var_os("CI").is_none(),
            "moto_server is not installed (pip install 'moto[s3]' flask flask-cors)"
        );
        eprintln!("skipping S3 tests: moto_server not installed");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto_server");
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start listening"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

/// Creates a bucket with a plain HTTP PUT (moto needs no signature). The server
/// may accept connections a moment before it answers them: retry briefly.
fn make_bucket(port: u16, bucket: &str) {
    let mut last = String::new();
    for _ in 0..100 {
        match try_put(port, bucket) {
            Ok(resp) if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") => {
                return
            }
            Ok(resp) => last = resp,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("bucket creation failed: {last}");
}

fn try_put(port: u16, bucket: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp)
}

fn cairn(port: u16, url: &str, password: &str, args: &[&str]) -> std::process::Output {
    let endpoint = format!("aws_endpoint=http://127.0.0.1:{port}");
    let out = Command::cargo_bin("cairn")
        .unwrap()
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CAIRN_PASSWORD", password)
        .args([
            "-r",
            url,
            "-o",
            &endpoint,
            "-o",
            "aws_allow_http=true",
            "-o",
            "aws_access_key_id=test",
        ])
        .args([
            "-o",
            "aws_secret_access_key=test",
            "-o",
            "aws_region=us-east-1",
            "--event-log",
            "/dev/null",
        ])
        .args(args)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("panicked"), "{all}");
    out
}

#[test]
fn s3_backup_restore_check_and_errors() {
    let Some(moto) = start_moto() else { return };
    make_bucket(moto.port, "cairn-test");
    let url = "s3://cairn-test/some/prefix";
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();

    let p = moto.port;
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
    make_bucket(moto.port, "cairn-cc");
    let opts: Vec<(String, String)> = [
        ("aws_endpoint", format!("http://127.0.0.1:{}", moto.port)),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", "test".into()),
        ("aws_secret_access_key", "test".into()),
        ("aws_region", "us-east-1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let b = cairn::Backend::open("s3://cairn-cc/r", &opts, false).unwrap();
    assert_eq!(
        b.create("x/1", b"first".to_vec()).unwrap(),
        cairn::backend::Created::New
    );
    assert_eq!(
        b.create("x/1", b"second".to_vec()).unwrap(),
        cairn::backend::Created::AlreadyExisted
    );
    assert_eq!(&b.get("x/1").unwrap()[..], b"first");
}

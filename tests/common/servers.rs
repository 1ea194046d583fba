//! Storage servers the tests start themselves on 127.0.0.1. In CI (`CI` set) a
//! missing server is a failure, never a silent skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto S3 server on a free port, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a program is on PATH.
/// Runs the cairn binary on a cloud repository as a user would, with a clean
/// environment: `-r url`, the store's `-o` options, no event log, then `args`.
/// Fails the test on a panic.
pub fn cairn_cloud(
    url: &str,
    password: &str,
    options: &[String],
    args: &[&str],
) -> std::process::Output {
    let out = Command::new(assert_cmd::cargo::cargo_bin("cairn"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CAIRN_PASSWORD", password)
        .args(["-r", url])
        .args(options)
        .args(["--event-log", "/dev/null"])
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

pub fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on the port.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts moto, or returns None (outside CI) when it is not installed.
pub fn start_moto() -> Option<Moto> {
    if !installed("moto_server") {
        assert!(
            std::env::var_os("CI").is_none(),
            "moto_server is not installed (pip install 'moto[s3]' flask flask-cors)"
        );
        eprintln!("skipping S3 tests: moto_server not installed");
        return None;
    }
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto_server");
    let moto = Moto { child, port };
    wait_for_port(port, "moto_server");
    Some(moto)
}

impl Moto {
    /// The `-o` options that point object_store at this server.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", format!("http://127.0.0.1:{}", self.port)),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", "test".into()),
            ("aws_secret_access_key", "test".into()),
            ("aws_region", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The same options as command-line arguments (`-o K=V ...`).
    pub fn option_args(&self) -> Vec<String> {
        self.options()
            .into_iter()
            .flat_map(|(k, v)| ["-o".to_string(), format!("{k}={v}")])
            .collect()
    }

    /// Creates a bucket with a plain HTTP PUT (moto needs no signature). The server
    /// may accept connections a moment before it answers them: retry briefly.
    pub fn make_bucket(&self, bucket: &str) {
        self.make_bucket_with(bucket, "");
    }

    /// Creates a bucket with S3 Object Lock enabled (and so versioning), as
    /// `aws s3api create-bucket --object-lock-enabled-for-bucket` does.
    pub fn make_locked_bucket(&self, bucket: &str) {
        self.make_bucket_with(bucket, "x-amz-bucket-object-lock-enabled: true\r\n");
    }

    /// One plain HTTP request (moto checks no signature): status and body.
    pub fn http(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let port = self.port;
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("moto answers");
        // Unsigned requests are anonymous to moto, which then refuses object
        // operations on private objects; it checks no signature, only that
        // one is there.
        let auth = "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n";
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let extra = format!("{auth}{extra}");
        write!(
            s,
            "{method} {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (status, body)
    }

    fn make_bucket_with(&self, bucket: &str, headers: &str) {
        let mut last = String::new();
        for _ in 0..100 {
            match self.try_put_with(bucket, headers) {
                Ok(resp)
                    if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") =>
                {
                    return
                }
                Ok(resp) => last = resp,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("bucket creation failed: {last}");
    }

    fn try_put_with(&self, bucket: &str, headers: &str) -> std::io::Result<String> {
        let port = self.port;
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp)
    }
}

/// The Azurite development account (public, documented by Microsoft).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An Azurite blob server on a free port, killed on drop.
pub struct Azurite {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `azurite-blob` from PATH, or from `.ci/node` where `.ci/run` installs it.
fn azurite_program() -> Option<std::path::PathBuf> {
    if installed("azurite-blob") {
        return Some("azurite-blob".into());
    }
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".ci/node/node_modules/.bin/azurite-blob");
    local.exists().then_some(local)
}

/// Starts Azurite, or returns None (outside CI) when it is not installed.
pub fn start_azurite() -> Option<Azurite> {
    let Some(program) = azurite_program() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "azurite-blob is not installed (npm install --prefix .ci/node azurite@3.35.0)"
        );
        eprintln!("skipping Azure tests: azurite-blob not installed");
        return None;
    };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(program)
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args([
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
        ])
        // Its debug log and extent files (none with in-memory persistence)
        // stay out of the checkout.
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting azurite-blob");
    let azurite = Azurite {
        child,
        port,
        _dir: dir,
    };
    wait_for_port(port, "azurite-blob");
    Some(azurite)
}

/// HMAC-SHA256 (RFC 2104), enough to sign one Azure request.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

impl Azurite {
    /// The `-o` options that point object_store at this server (path-style
    /// endpoint carrying the account, as Azurite serves it).
    pub fn options(&self) -> Vec<(String, String)> {
        self.options_with_key(AZURITE_KEY)
    }

    pub fn options_with_key(&self, key: &str) -> Vec<(String, String)> {
        [
            (
                "azure_storage_endpoint",
                format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port),
            ),
            ("azure_storage_account_name", AZURITE_ACCOUNT.to_string()),
            ("azure_storage_access_key", key.to_string()),
            ("azure_allow_http", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Options that authenticate with an account SAS granting only
    /// `permissions` (Azure letters: r read, l list, c create, w write,
    /// d delete) on blob containers and objects, instead of the account key.
    pub fn options_with_sas(&self, permissions: &str) -> Vec<(String, String)> {
        let mut opts = self.options();
        opts.retain(|(k, _)| k != "azure_storage_access_key");
        opts.push(("azure_storage_sas_key".into(), account_sas(permissions)));
        opts
    }

    /// Creates a container with a SharedKey-signed PUT (object_store cannot).
    /// The server may accept connections a moment before it answers: retry.
    pub fn make_container(&self, name: &str) {
        let mut last = String::new();
        for _ in 0..100 {
            match self.try_create(name) {
                Ok(resp) if resp.starts_with("HTTP/1.1 201") => return,
                Ok(resp) => last = resp,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("container creation failed: {last}");
    }

    fn try_create(&self, name: &str) -> std::io::Result<String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        // Blob service SharedKey: verb, 11 standard headers (all empty here),
        // the x-ms- headers, then /account/path and the query.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{a}/{a}/{name}\nrestype:container",
            a = AZURITE_ACCOUNT
        );
        let sig = b64.encode(hmac_sha256(
            &b64.decode(AZURITE_KEY).unwrap(),
            to_sign.as_bytes(),
        ));
        let port = self.port;
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        write!(
            s,
            "PUT /{AZURITE_ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             x-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {AZURITE_ACCOUNT}:{sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp)
    }
}

/// An account SAS (service version 2021-08-06) for the Azurite account: the
/// string to sign is the account, permissions, services, resource types,
/// start, expiry, IP, protocol, version and encryption scope, one a line.
fn account_sas(permissions: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let version = "2021-08-06";
    let expiry = (chrono::Utc::now() + chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let to_sign =
        format!("{AZURITE_ACCOUNT}\n{permissions}\nb\nsco\n\n{expiry}\n\nhttp\n{version}\n\n");
    let sig = b64.encode(hmac_sha256(
        &b64.decode(AZURITE_KEY).unwrap(),
        to_sign.as_bytes(),
    ));
    let enc = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "sv={version}&ss=b&srt=sco&sp={permissions}&se={}&spr=http&sig={}",
        enc(&expiry),
        enc(&sig)
    )
}

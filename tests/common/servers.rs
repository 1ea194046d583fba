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
        let mut last = String::new();
        for _ in 0..100 {
            match self.try_put(bucket) {
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

    fn try_put(&self, bucket: &str) -> std::io::Result<String> {
        let port = self.port;
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp)
    }
}

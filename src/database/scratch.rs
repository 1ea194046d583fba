//! A throwaway PostgreSQL server on a data directory cairn restored (a PITR
//! drill): started on a private socket with no TCP listener, trusted local
//! connections, no archiving, and stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use crate::error::{Error, Result};

/// A running scratch server.
pub struct ScratchCluster {
    child: Child,
    socket_dir: PathBuf,
    port: u16,
    log: PathBuf,
}

fn failed(what: impl Into<String>) -> Error {
    Error::CommandFailed(what.into())
}

/// The folder of the server binaries for a major version: Debian's and
/// Ubuntu's layout first, then whatever `pg_config` names.
pub fn server_bindir(server_version: &str) -> Result<PathBuf> {
    let major: String = server_version
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    if debian.join("postgres").is_file() {
        return Ok(debian);
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    if let Some(o) = out.ok().filter(|o| o.status.success()) {
        let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if dir.join("postgres").is_file() {
            return Ok(dir);
        }
    }
    Err(failed(format!(
        "no PostgreSQL {major} server binaries here (looked in {} and pg_config --bindir): install the server package to drill a base backup",
        debian.display()
    )))
}

/// The uid and gid of a system user, if it exists.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns null or a pointer to a static record that
    // stays valid until the next getpw* call; both fields are copied out
    // at once, and no other thread of cairn calls getpw*.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// Gives a folder and everything below it to a user (symlinks themselves).
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(|e| Error::io(dir, e))?;
    if std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io(dir, e))?
        .is_dir()
    {
        for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            chown_tree(&e.map_err(|e| Error::io(dir, e))?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("127.0.0.1", e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("127.0.0.1", e))?
        .port())
}

impl ScratchCluster {
    /// Starts `postgres` on `root/data` (`root/work` holds the socket, the
    /// log and the authentication file). PostgreSQL refuses to run as root:
    /// as root, the `postgres` system user runs it and is given `root` and
    /// everything in it (the WAL a `restore_command` copies from, too).
    pub fn start(bindir: &Path, root: &Path) -> Result<ScratchCluster> {
        let (data, work) = (&root.join("data"), &root.join("work"));
        std::fs::create_dir_all(work).map_err(|e| Error::io(work, e))?;
        // Debian keeps postgresql.conf and pg_hba.conf in /etc: a base
        // backup may hold neither.
        let conf = data.join("postgresql.conf");
        if !conf.exists() {
            std::fs::write(&conf, "").map_err(|e| Error::io(&conf, e))?;
        }
        let hba = work.join("pg_hba.conf");
        std::fs::write(&hba, "local all all trust\n").map_err(|e| Error::io(&hba, e))?;
        let ident = work.join("pg_ident.conf");
        std::fs::write(&ident, "").map_err(|e| Error::io(&ident, e))?;
        let port = free_port()?;
        let log = work.join("postgres.log");
        let log_file = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
        let mut cmd = Command::new(bindir.join("postgres"));
        cmd.arg("-D")
            .arg(data)
            .arg("-k")
            .arg(work)
            .arg("-p")
            .arg(port.to_string());
        for (k, v) in [
            ("listen_addresses", String::new()),
            ("hba_file", hba.display().to_string()),
            ("ident_file", ident.display().to_string()),
            ("archive_mode", "off".into()),
            ("hot_standby", "off".into()),
            ("shared_buffers", "32MB".into()),
            ("max_connections", "20".into()),
            ("max_wal_senders", "0".into()),
            ("max_replication_slots", "0".into()),
            ("wal_level", "replica".into()),
            ("logging_collector", "off".into()),
            ("ssl", "off".into()),
        ] {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        if rustix::process::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            let (uid, gid) = user_ids("postgres").ok_or_else(|| {
                failed("PostgreSQL does not run as root, and there is no postgres system user to run it as")
            })?;
            chown_tree(root, uid, gid)?;
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                failed(format!(
                    "cannot start {}: {e}",
                    bindir.join("postgres").display()
                ))
            })?;
        Ok(ScratchCluster {
            child,
            socket_dir: work.to_path_buf(),
            port,
            log,
        })
    }

    /// The server log's last lines, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    fn connect(&self, user: &str, db: &str) -> std::result::Result<Client, postgres::Error> {
        postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(user)
            .dbname(db)
            .connect_timeout(Duration::from_secs(5))
            .connect(NoTls)
    }

    /// Waits until recovery has ended and the server accepts connections,
    /// for a role that exists (`postgres`, else the one running cairn).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let users = [
            "postgres".to_string(),
            std::env::var("USER").unwrap_or_default(),
        ];
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| Error::io("postgres", e))?
            {
                return Err(failed(format!(
                    "the scratch server exited ({status}): {}",
                    self.log_tail()
                )));
            }
            for user in users.iter().filter(|u| !u.is_empty()) {
                if let Ok(mut c) = self.connect(user, "postgres") {
                    if let Ok(row) = c.query_one("SELECT pg_is_in_recovery()", &[]) {
                        if !row.get::<_, bool>(0) {
                            return Ok(user.clone());
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "the scratch server did not finish recovery within {} s: {}",
                    timeout.as_secs(),
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Asks every database that takes connections a question (how many
    /// relations it has): the cluster answers, not only starts. Returns the
    /// databases and the time of the last transaction replayed.
    pub fn probe(&self, user: &str) -> Result<(Vec<String>, Option<String>)> {
        let pg = |e: postgres::Error| failed(format!("the scratch server did not answer: {e}"));
        let mut c = self.connect(user, "postgres").map_err(pg)?;
        let replayed: Option<String> = c
            .query_one("SELECT pg_last_xact_replay_timestamp()::text", &[])
            .map_err(pg)?
            .get(0);
        let names: Vec<String> = c
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
                &[],
            )
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for db in &names {
            let mut d = self.connect(user, db).map_err(pg)?;
            d.query_one("SELECT count(*) FROM pg_class", &[])
                .map_err(pg)?;
        }
        Ok((names, replayed))
    }
}

impl Drop for ScratchCluster {
    /// A fast shutdown, then a kill if it lingers.
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Throwaway database servers the tests start themselves: a PostgreSQL
//! cluster (`initdb` and `postgres`) or a MariaDB server (`mariadb-install-db`
//! and `mariadbd`) in a temporary folder, on 127.0.0.1 and a private socket,
//! nothing shared between tests. In CI (`CI` set) a missing server is a
//! failure, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::servers::{free_port, installed, wait_for_port};

/// The newest installed PostgreSQL server's `bin` folder (Debian keeps
/// `initdb` and `postgres` off PATH, in /usr/lib/postgresql/N/bin).
fn postgres_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    if let Some((_, d)) = dirs.pop() {
        return Some(d);
    }
    installed("initdb").then(|| {
        let out = Command::new("sh")
            .args(["-c", "command -v initdb"])
            .output()
            .unwrap();
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            .parent()
            .unwrap()
            .to_path_buf()
    })
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of a system user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() != Some(&name) || f.len() < 4 {
            return None;
        }
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

/// A command that runs as `user` when the tests run as root (PostgreSQL
/// refuses to run as root).
fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--init-groups",
                "--",
            ])
            .arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn skip_or_fail(what: &str, install: &str) -> bool {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is not installed ({install})"
    );
    eprintln!("skipping: {what} not installed");
    false
}

/// A PostgreSQL cluster, stopped and deleted on drop.
pub struct Postgres {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub bindir: PathBuf,
}

impl Postgres {
    /// Starts a cluster with superuser `postgres` (trust on 127.0.0.1, a
    /// password for other roles), or None outside CI when none is installed.
    pub fn start() -> Option<Postgres> {
        Self::start_with(&[])
    }

    /// A command run as the cluster's owner (`postgres` when the tests run
    /// as root), e.g. cairn as PostgreSQL's archive_command would run it.
    pub fn as_owner(&self, program: &Path) -> Command {
        as_user(is_root().then_some("postgres"), program)
    }

    /// Gives a path to the cluster's owner.
    pub fn chown_to_owner(&self, path: &Path) {
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success());
        }
    }

    /// Starts another server on a data directory (a restored one), on a
    /// free port with its socket in this cluster's folder; killed on drop.
    pub fn start_other(&self, data: &Path, extra: &[(&str, &str)]) -> (ServerGuard, u16) {
        let port = free_port();
        let mut cmd = self.as_owner(&self.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"]);
        for (k, v) in extra {
            cmd.args(["-c", &format!("{k}={v}")]);
        }
        let log = std::fs::File::create(self.dir.path().join(format!("other-{port}.log"))).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        wait_for_port(port, "the restored postgres");
        (ServerGuard(child), port)
    }

    pub fn start_with(settings: &[(&str, &str)]) -> Option<Postgres> {
        let Some(bindir) = postgres_bindir() else {
            skip_or_fail("PostgreSQL", "apt-get install postgresql");
            return None;
        };
        let user = is_root().then(|| "postgres".to_string());
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        if let Some(u) = &user {
            let (uid, gid) =
                user_ids(u).expect("the postgres system user (apt-get install postgresql)");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let hba = dir.path().join("pwfile");
        std::fs::write(&hba, "postgres\n").unwrap();
        if let Some(u) = &user {
            let (uid, gid) = user_ids(u).unwrap();
            std::os::unix::fs::chown(&hba, Some(uid), Some(gid)).unwrap();
        }
        let out = as_user(user.as_deref(), &bindir.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
            ])
            .arg(&hba)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = as_user(user.as_deref(), &bindir.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=40"])
            .args(
                settings
                    .iter()
                    .flat_map(|(k, v)| ["-c".to_string(), format!("{k}={v}")]),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting postgres");
        let pg = Postgres {
            child,
            port,
            dir,
            bindir,
        };
        wait_for_port(port, "postgres");
        pg.wait_ready();
        Some(pg)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self.psql_status("postgres", "SELECT 1");
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not accept logins");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The superuser's URL for a database (password `postgres` over TCP).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres:postgres@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// A URL without the password (cairn then reads PGPASSWORD or ~/.pgpass).
    pub fn url_nopw(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn psql_cmd(&self, db: &str) -> Command {
        let mut c = Command::new(self.bindir.join("psql"));
        c.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-d",
            &self.url(db),
        ]);
        c
    }

    fn psql_status(&self, db: &str, sql: &str) -> bool {
        self.psql_cmd(db)
            .args(["-c", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs SQL; panics on failure; returns the output (unaligned, tuples only).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_cmd(db).args(["-c", sql]).output().unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn count(&self, db: &str, table: &str) -> u64 {
        self.sql(db, &format!("SELECT count(*) FROM {table}"))
            .parse()
            .unwrap()
    }

    /// A database with a few tables and `rows` rows in the big one (pgbench's
    /// schema, filled by `pgbench -i`, plus a table of text and NULLs).
    pub fn fill(&self, db: &str, scale: u32) {
        self.sql("postgres", &format!("CREATE DATABASE {db}"));
        let out = Command::new(self.bindir.join("pgbench"))
            .args([
                "-i",
                "-q",
                "-s",
                &scale.to_string(),
                "--no-vacuum",
                "-d",
                &self.url(db),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pgbench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.sql(
            db,
            "CREATE TABLE notes(id serial PRIMARY KEY, body text, added timestamptz DEFAULT now(), \
                                CHECK (length(body) < 1000)); \
             CREATE INDEX notes_body ON notes(body); \
             INSERT INTO notes(body) SELECT CASE WHEN g % 7 = 0 THEN NULL ELSE 'note ' || g || E'\\t''quoted''' END \
               FROM generate_series(1, 5000) g;",
        );
    }
}

/// Asks a server to shut down with `signal`, waits up to 20 s, then kills it.
fn stop(child: &mut Child, signal: i32) {
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        stop(&mut self.child, libc::SIGINT);
    }
}

/// A server process stopped (fast shutdown) on drop.
pub struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        stop(&mut self.0, libc::SIGINT);
    }
}

/// A MariaDB server, stopped and deleted on drop.
pub struct Mariadb {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

fn mariadb_program(names: &[&str]) -> Option<PathBuf> {
    for n in names {
        for d in ["/usr/sbin", "/usr/bin", "/usr/local/bin"] {
            let p = Path::new(d).join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

impl Mariadb {
    /// Starts a server whose `root` logs in over the socket without a
    /// password, or None outside CI when none is installed.
    pub fn start() -> Option<Mariadb> {
        let (Some(install), Some(server)) = (
            mariadb_program(&["mariadb-install-db", "mysql_install_db"]),
            mariadb_program(&["mariadbd", "mysqld"]),
        ) else {
            skip_or_fail("MariaDB", "apt-get install mariadb-server");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("cairn-maria-")
            .tempdir_in("/tmp")
            .unwrap();
        let data = dir.path().join("data");
        let me = if is_root() {
            "root".to_string()
        } else {
            std::env::var("USER").unwrap_or_default()
        };
        let out = Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={me}"))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = Command::new(server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!(
                "--socket={}",
                dir.path().join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg(format!("--port={port}"))
            .arg(format!("--user={me}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mariadbd");
        let m = Mariadb { child, port, dir };
        wait_for_port(port, "mariadbd");
        Some(m)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// root's URL for a database (over the socket).
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@/{db}?socket={}", self.socket().display())
    }

    pub fn sql(&self, db: &str, sql: &str) -> String {
        let client = mariadb_program(&["mariadb", "mysql"]).expect("the mariadb client");
        let mut c = Command::new(client);
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "-N", "-B"]);
        if !db.is_empty() {
            c.arg(format!("--database={db}"));
        }
        let out = c.args(["-e", sql]).output().unwrap();
        assert!(
            out.status.success(),
            "mariadb {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn count(&self, db: &str, table: &str) -> u64 {
        self.sql(db, &format!("SELECT COUNT(*) FROM {table}"))
            .parse()
            .unwrap()
    }

    /// A database of a few tables, `rows` in the big one.
    pub fn fill(&self, db: &str, rows: u64) {
        self.sql("", &format!("CREATE DATABASE {db}"));
        self.sql(
            db,
            &format!(
                "CREATE TABLE customers(id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, \
                    note TEXT NULL, KEY by_name(name)) ENGINE=InnoDB; \
                 CREATE TABLE orders(id BIGINT PRIMARY KEY, customer INT NOT NULL, total DECIMAL(10,2), \
                    payload BLOB) ENGINE=InnoDB; \
                 CREATE TABLE empty_one(x INT) ENGINE=InnoDB; \
                 INSERT INTO customers(name, note) SELECT CONCAT('name ', seq), \
                    IF(seq % 5 = 0, NULL, CONCAT('it''s (', seq, '), ok; \\\\ \\n')) FROM seq_1_to_2000; \
                 INSERT INTO orders SELECT seq, seq % 2000 + 1, seq / 100, UNHEX(MD5(seq)) FROM seq_1_to_{rows};"
            ),
        );
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        stop(&mut self.child, libc::SIGTERM);
    }
}

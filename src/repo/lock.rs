//! Repository locks, built on conditional create alone (works on every store).
//!
//! A lock is an object `locks/<sha256>` holding who took it and when. Shared
//! locks (backup, check) coexist; an exclusive lock (prune) excludes all others.
//! To take a lock, a process writes its own lock object first and then lists the
//! others: if a conflicting live lock is there, it deletes its own and fails. Two
//! racing exclusive lockers may both back off, but can never both proceed.
//! A lock is refreshed (a new object written, the old deleted) every 5 minutes;
//! one not refreshed for 30 minutes, or left by a dead process on this host, is
//! stale and ignored (and removed by `unlock`).
//!
//! A holder can lose its lock: the refresh fails, the object vanished (someone
//! ran `unlock --remove-all`), or so long passed since the last refresh that
//! others may have removed it as stale. The refresher then records the loss in
//! a [`LockWatch`]; operations check it at safe points ([`LockWatch::check`])
//! and stop with [`Error::LockLost`] before writing anything that needs the lock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::crypto::{aad, Cipher};
use crate::format::id::storage_hash;
use crate::format::objects;
use crate::repo::{hostname, Repository, LOCKS_DIR};
use crate::storage::Backend;

pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// A lock dated further ahead than this comes from a host with a wrong clock
/// and would otherwise never go stale: it still blocks (its process may be
/// alive), but the message says so and `unlock` removes it.
pub const FUTURE_BOUND: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub time: DateTime<Utc>,
    pub exclusive: bool,
    pub hostname: String,
    pub username: String,
    pub pid: u32,
    /// Random, so that two locks taken in the same instant differ.
    pub nonce: String,
}

impl LockInfo {
    fn new(exclusive: bool) -> Self {
        LockInfo {
            time: Utc::now(),
            exclusive,
            hostname: hostname(),
            username: std::env::var("USER").unwrap_or_default(),
            pid: std::process::id(),
            nonce: hex::encode(rand::random::<[u8; 16]>()),
        }
    }

    pub fn is_stale(&self) -> bool {
        let age = Utc::now().signed_duration_since(self.time);
        if age.num_seconds() > STALE_AFTER.as_secs() as i64 {
            return true;
        }
        self.hostname == hostname() && !process_alive(self.pid)
    }

    /// Dated more than [`FUTURE_BOUND`] ahead of this host's clock.
    pub fn is_future_dated(&self) -> bool {
        self.time.signed_duration_since(Utc::now()).num_seconds() > FUTURE_BOUND.as_secs() as i64
    }

    pub fn describe(&self) -> String {
        let future = if self.is_future_dated() {
            " — dated in the future (a wrong clock on that host?); `cairn unlock` removes it"
        } else {
            ""
        };
        format!(
            "{} lock by {}@{} (pid {}) since {}{future}",
            if self.exclusive { "an exclusive" } else { "a" },
            self.username,
            self.hostname,
            self.pid,
            self.time.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

fn process_alive(pid: u32) -> bool {
    // 0 and values above i32::MAX would make kill() address a process group
    // (or every process): no real process has such a pid.
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    // kill(pid, 0) probes without signalling; EPERM still means it exists.
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

fn write_lock(backend: &Backend, cipher: &Cipher, info: &LockInfo) -> Result<String> {
    let bytes = objects::seal_json(cipher, aad::LOCK, info);
    let key = format!("{LOCKS_DIR}/{}", hex::encode(storage_hash(&bytes)));
    backend.create(&key, bytes)?;
    Ok(key)
}

/// Every lock in the repository with its key. Unreadable lock objects are
/// reported as stale exclusive locks of unknown origin.
pub fn list_locks(repo: &Repository) -> Result<Vec<(String, Option<LockInfo>)>> {
    let mut out = Vec::new();
    for l in repo.backend().list(LOCKS_DIR)? {
        // A lock copied under another name (or oversized) reads as unknown: stale.
        let fetched = if l.size > objects::MAX_METADATA_LEN {
            Err(Error::NameMismatch(l.key.clone())) // never read: no lock is that large
        } else {
            repo.get_named(&l.key)
        };
        let info = match fetched {
            Ok(b) => objects::open_json::<LockInfo>(repo.cipher(), aad::LOCK, &b).ok(),
            Err(Error::NameMismatch(_)) => None,
            Err(Error::MissingObject(_)) => continue, // released meanwhile
            Err(e) => return Err(e),
        };
        out.push((l.key, info));
    }
    Ok(out)
}

/// Removes stale and future-dated locks (or all with `all`); returns how many.
pub fn remove_locks(repo: &Repository, all: bool) -> Result<usize> {
    let mut n = 0;
    for (key, info) in list_locks(repo)? {
        if all
            || info
                .as_ref()
                .map_or(true, |i| i.is_stale() || i.is_future_dated())
        {
            repo.backend().delete(&key)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Whether a lock is still held; shared by the guard, its refresher and the
/// operation. The default (no lock taken) is never lost.
#[derive(Clone, Default)]
pub struct LockWatch(Arc<Mutex<Option<String>>>);

impl LockWatch {
    /// `Err(LockLost)` once the lock is lost.
    pub fn check(&self) -> Result<()> {
        match &*self.0.lock().unwrap() {
            Some(why) => Err(Error::LockLost(why.clone())),
            None => Ok(()),
        }
    }

    fn lose(&self, why: String) {
        self.0.lock().unwrap().get_or_insert(why);
    }
}

/// A held lock; released (deleted) on drop.
pub struct LockGuard {
    backend: Backend,
    key: Arc<Mutex<String>>,
    watch: LockWatch,
    /// Dropping it wakes the refresher, which then exits.
    stop: Option<std::sync::mpsc::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl LockGuard {
    /// `Err(LockLost)` once the lock is lost.
    pub fn check(&self) -> Result<()> {
        self.watch.check()
    }

    /// A handle for operations to check (see [`LockWatch`]).
    pub fn watch(&self) -> LockWatch {
        self.watch.clone()
    }
}

/// Takes a shared or exclusive lock, or fails with [`Error::Locked`].
pub fn acquire(repo: &Repository, exclusive: bool) -> Result<LockGuard> {
    acquire_with_refresh(repo, exclusive, REFRESH_INTERVAL)
}

/// [`acquire`] with another refresh interval (tests use short ones).
pub fn acquire_with_refresh(
    repo: &Repository,
    exclusive: bool,
    interval: Duration,
) -> Result<LockGuard> {
    let backend = repo.backend().clone();
    let cipher = repo.cipher().clone();
    let key = write_lock(&backend, &cipher, &LockInfo::new(exclusive))?;
    let mut conflicts: Vec<LockInfo> = list_locks(repo)?
        .into_iter()
        .filter(|(k, _)| *k != key)
        .filter_map(|(_, info)| info)
        .filter(|i| (exclusive || i.exclusive) && !i.is_stale())
        .collect();
    // Name a future-dated lock first: that one needs the user's action.
    conflicts.sort_by_key(|i| !i.is_future_dated());
    if let Some(info) = conflicts.first() {
        // Best effort: the conflict is the error to report; a lock we could
        // not remove goes stale and `unlock` removes it.
        let _ = backend.delete(&key);
        return Err(Error::Locked(info.describe()));
    }
    let key = Arc::new(Mutex::new(key));
    let watch = LockWatch::default();
    let (stop, wake) = std::sync::mpsc::channel::<()>();
    let refresher = {
        let r = Refresher {
            backend: backend.clone(),
            cipher,
            exclusive,
            key: key.clone(),
            watch: watch.clone(),
            interval,
        };
        match std::thread::Builder::new()
            .name("cairn-lock".into())
            .spawn(move || r.run(wake))
        {
            Ok(h) => h,
            Err(e) => {
                let _ = backend.delete(&key.lock().unwrap());
                return Err(Error::io("<lock refresher thread>", e));
            }
        }
    };
    Ok(LockGuard {
        backend,
        key,
        watch,
        stop: Some(stop),
        refresher: Some(refresher),
    })
}

struct Refresher {
    backend: Backend,
    cipher: Cipher,
    exclusive: bool,
    key: Arc<Mutex<String>>,
    watch: LockWatch,
    interval: Duration,
}

impl Refresher {
    fn run(self, wake: std::sync::mpsc::Receiver<()>) {
        let mut refreshed = std::time::Instant::now();
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wake.recv_timeout(self.interval)
        {
            // Suspended (laptop lid, SIGSTOP) past the stale age: others may have
            // removed the lock meanwhile, even if the object is still there.
            if refreshed.elapsed() >= STALE_AFTER {
                self.watch.lose(format!(
                    "not refreshed for {} minutes",
                    refreshed.elapsed().as_secs() / 60
                ));
                return;
            }
            if let Err(why) = self.refresh() {
                self.watch.lose(why);
                return;
            }
            refreshed = std::time::Instant::now();
        }
    }

    /// Objects are immutable: refresh by writing a new lock, then dropping the
    /// old. The old one must still be there: if it vanished, the lock was removed.
    fn refresh(&self) -> std::result::Result<(), String> {
        let old = self.key.lock().unwrap().clone();
        let mut last_err = String::new();
        // A few quick tries: one failed request is not yet a lost lock.
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep((self.interval / 10).min(Duration::from_secs(2)) * attempt);
            }
            match self.backend.exists(&old) {
                Ok(true) => {}
                Ok(false) => return Err(format!("{old} was removed by someone else")),
                Err(e) => {
                    last_err = format!("cannot refresh it: {e}");
                    continue;
                }
            }
            match write_lock(&self.backend, &self.cipher, &LockInfo::new(self.exclusive)) {
                Ok(new_key) => {
                    *self.key.lock().unwrap() = new_key;
                    let _ = self.backend.delete(&old);
                    return Ok(());
                }
                Err(e) => last_err = format!("cannot refresh it: {e}"),
            }
        }
        Err(last_err)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        let _ = self.backend.delete(&self.key.lock().unwrap());
    }
}

#[cfg(test)]
mod pid_tests {
    #[test]
    fn impossible_pids_are_not_alive() {
        assert!(!super::process_alive(0));
        assert!(!super::process_alive(u32::MAX));
        assert!(super::process_alive(std::process::id()));
    }
}

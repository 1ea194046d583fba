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

    pub fn describe(&self) -> String {
        format!(
            "{} lock by {}@{} (pid {}) since {}",
            if self.exclusive { "an exclusive" } else { "a" },
            self.username,
            self.hostname,
            self.pid,
            self.time.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

fn process_alive(pid: u32) -> bool {
    // kill(pid, 0) probes without signalling; EPERM still means it exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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
        let info = match repo.backend().get(&l.key) {
            Ok(b) => objects::open_json::<LockInfo>(repo.cipher(), aad::LOCK, &b).ok(),
            Err(Error::MissingObject(_)) => continue, // released meanwhile
            Err(e) => return Err(e),
        };
        out.push((l.key, info));
    }
    Ok(out)
}

/// Removes stale locks (or all with `all`); returns how many.
pub fn remove_locks(repo: &Repository, all: bool) -> Result<usize> {
    let mut n = 0;
    for (key, info) in list_locks(repo)? {
        if all || info.as_ref().map_or(true, |i| i.is_stale()) {
            repo.backend().delete(&key)?;
            n += 1;
        }
    }
    Ok(n)
}

/// A held lock; released (deleted) on drop.
pub struct LockGuard {
    backend: Backend,
    key: Arc<Mutex<String>>,
    /// Dropping it wakes the refresher, which then exits.
    stop: Option<std::sync::mpsc::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

/// Takes a shared or exclusive lock, or fails with [`Error::Locked`].
pub fn acquire(repo: &Repository, exclusive: bool) -> Result<LockGuard> {
    let backend = repo.backend().clone();
    let cipher = repo.cipher().clone();
    let key = write_lock(&backend, &cipher, &LockInfo::new(exclusive))?;
    let conflict = list_locks(repo)?.into_iter().find(|(k, info)| {
        *k != key
            && match info {
                Some(i) => (exclusive || i.exclusive) && !i.is_stale(),
                None => false,
            }
    });
    if let Some((_, Some(info))) = conflict {
        backend.delete(&key)?;
        return Err(Error::Locked(info.describe()));
    }
    let key = Arc::new(Mutex::new(key));
    let (stop, wake) = std::sync::mpsc::channel::<()>();
    let refresher = {
        let (backend, key) = (backend.clone(), key.clone());
        std::thread::Builder::new()
            .name("cairn-lock".into())
            .spawn(move || refresh_loop(backend, cipher, exclusive, key, wake))
            .ok()
    };
    Ok(LockGuard {
        backend,
        key,
        stop: Some(stop),
        refresher,
    })
}

fn refresh_loop(
    backend: Backend,
    cipher: Cipher,
    exclusive: bool,
    key: Arc<Mutex<String>>,
    wake: std::sync::mpsc::Receiver<()>,
) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wake.recv_timeout(REFRESH_INTERVAL)
    {
        // Objects are immutable: refresh by writing a new lock, then dropping the old.
        if let Ok(new_key) = write_lock(&backend, &cipher, &LockInfo::new(exclusive)) {
            let old = std::mem::replace(&mut *key.lock().unwrap(), new_key);
            let _ = backend.delete(&old);
        }
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

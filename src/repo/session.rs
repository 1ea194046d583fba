//! Writer sessions of the prune protocol (repo-format.md §15, rules 1–3).
//!
//! A writer (backup, the destination side of copy, prune's repacking) creates
//! `sessions/<sid>.start` before it reads anything, records the highest GC
//! generation it saw, excludes every pack condemned up to that generation from
//! its dedup view, sends heartbeats while it runs, and commits through one
//! Create of `sessions/<sid>.end`. A collector that gave up waiting may have
//! created that `.end` first (fenced): then the writer's work is void, and it
//! says so. No lock is ever taken.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;

use crate::error::{Error, Result};
use crate::format::crypto::Cipher;
use crate::format::id::{IndexId, PackId, SnapshotId};
use crate::format::records::{
    open_record, seal_record, session_key, SessionEnd, SessionKind, SessionStart,
};
use crate::format::snapshot::Snapshot;
use crate::repo::gc::GcState;
use crate::repo::{hostname, Repository};
use crate::storage::{Backend, Created};

/// How often a running session proves it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5 * 60);

/// The heartbeat interval: [`HEARTBEAT`], or `CAIRN_HEARTBEAT_SECS` (tests).
fn heartbeat_interval() -> Duration {
    std::env::var("CAIRN_HEARTBEAT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(HEARTBEAT)
}

pub struct Session {
    backend: Backend,
    cipher: Cipher,
    sid: String,
    nonce: String,
    saw: u64,
    gc: GcState,
    condemned: HashSet<PackId>,
    fenced: Arc<AtomicBool>,
    ended: bool,
    stop: Option<mpsc::Sender<()>>,
    heart: Option<std::thread::JoinHandle<()>>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Session {
    /// Announces a writer, then reads the GC state (in that order: rule 1).
    pub fn start(repo: &Repository, kind: SessionKind) -> Result<Session> {
        repo.ensure_writable()?;
        let sid = random_hex(16);
        let nonce = random_hex(16);
        let start = SessionStart {
            kind,
            hostname: hostname(),
            pid: std::process::id(),
            nonce: nonce.clone(),
            time: chrono::Utc::now(),
        };
        let key = session_key(&sid, "start");
        repo.backend()
            .create(&key, seal_record(repo.cipher(), &key, &start))?;
        let gc = GcState::load(repo)?;
        let saw = gc.latest();
        let saw_key = session_key(&sid, &format!("saw.{saw}"));
        repo.backend()
            .create(&saw_key, seal_record(repo.cipher(), &saw_key, &saw))?;
        let condemned = gc.condemned_up_to(saw);
        let mut s = Session {
            backend: repo.backend().clone(),
            cipher: repo.cipher().clone(),
            sid,
            nonce,
            saw,
            gc,
            condemned,
            fenced: Arc::new(AtomicBool::new(false)),
            ended: false,
            stop: None,
            heart: None,
        };
        s.start_heartbeat();
        Ok(s)
    }

    pub fn id(&self) -> &str {
        &self.sid
    }

    /// The highest GC generation this session saw when it started.
    pub fn saw(&self) -> u64 {
        self.saw
    }

    /// The GC state as this session read it at its start.
    pub fn gc(&self) -> &GcState {
        &self.gc
    }

    /// Packs this session must not reuse (its dedup view leaves them out).
    pub fn condemned(&self) -> &HashSet<PackId> {
        &self.condemned
    }

    /// Fails once a collector has fenced this session: nothing it writes can
    /// become valid, so it should stop.
    pub fn check(&self) -> Result<()> {
        if self.fenced.load(Ordering::Relaxed) {
            return Err(Error::Fenced);
        }
        Ok(())
    }

    /// Heartbeats every [`HEARTBEAT`]: a new `.hb.<k>` is created, the previous
    /// one deleted (best effort). Each beat also looks for a `.end` written by
    /// someone else (a fence), so a fenced writer stops early.
    fn start_heartbeat(&mut self) {
        let (tx, rx) = mpsc::channel::<()>();
        let backend = self.backend.clone();
        let cipher = self.cipher.clone();
        let sid = self.sid.clone();
        let fenced = self.fenced.clone();
        let interval = heartbeat_interval();
        let handle = std::thread::spawn(move || {
            let mut k: u64 = 0;
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                k += 1;
                let key = session_key(&sid, &format!("hb.{k}"));
                let _ = backend.create(&key, seal_record(&cipher, &key, &k));
                if k > 1 {
                    let _ = backend.delete(&session_key(&sid, &format!("hb.{}", k - 1)));
                }
                if backend.exists(&session_key(&sid, "end")).unwrap_or(false) {
                    fenced.store(true, Ordering::Relaxed);
                }
            }
        });
        self.stop = Some(tx);
        self.heart = Some(handle);
    }

    fn stop_heartbeat(&mut self) {
        self.stop.take();
        if let Some(h) = self.heart.take() {
            let _ = h.join();
        }
    }

    /// Commits: the one Create of `.end` that decides whether this session's
    /// snapshot (if any) is valid. Everything it references must be stored
    /// (packs, index, snapshot) before this is called (rule 3).
    pub fn commit(mut self, snapshot: Option<SnapshotId>) -> Result<()> {
        self.stop_heartbeat();
        self.ended = true;
        let end = SessionEnd::Committed {
            snapshot,
            nonce: self.nonce.clone(),
        };
        self.settle(&end)
    }

    /// Saves `snapshot` (its `session` field must name this session) and
    /// commits. If the commit fails (fenced, most likely), the snapshot object
    /// is removed, best effort: it is not valid and never will be.
    /// The index objects the session wrote go too when it was fenced: a sweep
    /// may have deleted the packs they name (they were unindexed when it
    /// looked), and no later reader should see entries for them.
    pub fn commit_snapshot(
        self,
        repo: &Repository,
        snapshot: &Snapshot,
        index_objects: &[IndexId],
    ) -> Result<SnapshotId> {
        let result = self.check().and_then(|_| {
            let id = repo.save_snapshot(snapshot)?;
            if let Err(e) = self.commit(Some(id)) {
                let _ = repo
                    .backend()
                    .delete(&format!("{}/{id}", crate::repo::SNAPSHOTS_DIR));
                return Err(e);
            }
            Ok(id)
        });
        if matches!(result, Err(Error::Fenced)) {
            for i in index_objects {
                let _ = repo
                    .backend()
                    .delete(&format!("{}/{i}", crate::repo::INDEX_DIR));
            }
        }
        result
    }

    /// Ends the session having saved nothing.
    pub fn abort(mut self) {
        self.stop_heartbeat();
        self.ended = true;
        let _ = self.settle(&SessionEnd::Aborted {
            nonce: self.nonce.clone(),
        });
    }

    /// Creates `.end`; on a conflict or an ambiguous failure, reads it back: our
    /// own record means done, a fence means our work is void, none means retry.
    fn settle(&self, end: &SessionEnd) -> Result<()> {
        let key = session_key(&self.sid, "end");
        let bytes = seal_record(&self.cipher, &key, end);
        let mut last_err = None;
        for _ in 0..5 {
            match self.backend.create(&key, bytes.clone()) {
                Ok(Created::New) => return Ok(()),
                Ok(Created::AlreadyExisted) | Err(_) => {}
            }
            match self.backend.get(&key) {
                Ok(stored) => {
                    return match open_record::<SessionEnd>(&self.cipher, &key, &stored) {
                        Ok(SessionEnd::Fenced { .. }) => Err(Error::Fenced),
                        Ok(SessionEnd::Committed { nonce, .. } | SessionEnd::Aborted { nonce })
                            if nonce == self.nonce =>
                        {
                            Ok(())
                        }
                        Ok(_) => Err(Error::corrupt(&key, "ended by another writer")),
                        Err(e) => Err(Error::format(key.clone(), e)),
                    };
                }
                Err(e) => last_err = Some(e), // absent or unreachable: try again
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last_err.unwrap_or(Error::MissingObject(key)))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop_heartbeat();
        if !self.ended {
            self.ended = true;
            let _ = self.settle(&SessionEnd::Aborted {
                nonce: self.nonce.clone(),
            });
        }
    }
}

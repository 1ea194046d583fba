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
use crate::format::id::{PackId, SnapshotId};
use crate::format::records::{
    open_record, parse_session_key, seal_record, session_key, SessionEnd, SessionKind,
    SessionStart, MAX_SMALL_RECORD_LEN, SESSIONS_DIR,
};
use crate::format::snapshot::Snapshot;
use crate::repo::gc::{GcState, RecordProblem};
use crate::repo::is_content_error;
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
        if let Err(e) = repo
            .backend()
            .create(&key, seal_record(repo.cipher(), &key, &start))
        {
            // A store that kept part of the failed upload must not be left
            // with a damaged record of a session that never ran.
            let _ = repo.backend().delete(&key);
            return Err(e);
        }
        // From here on, a failure ends the session as aborted (Drop).
        let mut s = Session {
            backend: repo.backend().clone(),
            cipher: repo.cipher().clone(),
            sid,
            nonce,
            saw: 0,
            gc: GcState::default(),
            condemned: HashSet::new(),
            fenced: Arc::new(AtomicBool::new(false)),
            ended: false,
            stop: None,
            heart: None,
        };
        s.gc = GcState::load(repo)?;
        s.saw = s.gc.latest();
        let saw_key = session_key(&s.sid, &format!("saw.{}", s.saw));
        if let Err(e) = repo
            .backend()
            .create(&saw_key, seal_record(repo.cipher(), &saw_key, &s.saw))
        {
            let _ = repo.backend().delete(&saw_key);
            return Err(e);
        }
        s.condemned = s.gc.condemned_up_to(s.saw);
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
                // The previous beat goes only once this one is stored: a failed
                // write must not leave the session looking silent for longer.
                let beat = backend.create(&key, seal_record(&cipher, &key, &k));
                if k > 1 && matches!(beat, Ok(Created::New)) {
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

    /// Whether a `.end` this session did not write exists now (a collector
    /// fenced it): read from storage, not from the heartbeat's last look.
    /// Collectors ask this right before publishing a mark and before they
    /// delete anything; an unreadable `.end` counts as a fence (delete nothing).
    pub fn fenced_now(&self) -> Result<bool> {
        if self.ended {
            return Ok(false);
        }
        let fenced = self.backend.exists(&session_key(&self.sid, "end"))?;
        if fenced {
            self.fenced.store(true, Ordering::Relaxed);
        }
        Ok(fenced)
    }

    /// Saves `snapshot` (its `session` field must name this session) and
    /// commits. If the commit fails (fenced, most likely), the snapshot object
    /// is removed, best effort: it is not valid and never will be. Nothing
    /// else goes: another writer may already have deduplicated against this
    /// session's packs and index objects and committed (rule 3).
    pub fn commit_snapshot(self, repo: &Repository, snapshot: &Snapshot) -> Result<SnapshotId> {
        self.check().and_then(|_| {
            let id = repo.save_snapshot(snapshot)?;
            if let Err(e) = self.commit(Some(id)) {
                let _ = repo
                    .backend()
                    .delete(&format!("{}/{id}", crate::repo::SNAPSHOTS_DIR));
                return Err(e);
            }
            Ok(id)
        })
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
            match self.backend.get_bounded(&key, MAX_SMALL_RECORD_LEN) {
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

/// How a session ended, as far as its `.end` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndState {
    Absent,
    Ended(SessionEnd),
    /// A `.end` exists but does not read back (damaged or planted): the
    /// session can never commit (the key is taken), but whether it did is
    /// unknown, so it counts as running until it is silent (rule 13).
    Unreadable,
}

/// What `sessions/` says about one session, from the records that
/// authenticate (a name alone decides nothing: rule 13).
#[derive(Debug, Clone)]
pub struct SessionRecords {
    pub sid: String,
    /// Every key listed for it.
    pub keys: Vec<String>,
    /// It has a `.start`, `.saw` or `.hb` (a session with only an `.end` is one
    /// whose other records a clean-up removed).
    pub announced: bool,
    pub end: EndState,
    /// The highest generation an authenticated `.saw.<g>` records.
    pub saw: Option<u64>,
    /// The newest `last_modified` of its `.start`, `.saw` and `.hb` records.
    pub newest: Option<chrono::DateTime<chrono::Utc>>,
    /// The `last_modified` of its `.start`.
    pub started: Option<chrono::DateTime<chrono::Utc>>,
}

impl SessionRecords {
    /// Whether this session could still reuse a pack generation `n`
    /// condemned: announced, not ended, and saw no generation `n` or later.
    pub fn blocks(&self, n: u64) -> bool {
        self.announced && !matches!(self.end, EndState::Ended(_)) && self.saw.is_none_or(|g| g < n)
    }
}

/// Reads `sessions/`: every session with its `.end` and `.saw` records
/// (authenticated, bounded). With `everything`, also each `.start` and the
/// `.end` of sessions already cleaned up, for `check`. A record listed but
/// gone when read was cleaned up meanwhile: the listing is taken again.
pub fn survey(
    repo: &Repository,
    everything: bool,
) -> Result<(Vec<SessionRecords>, Vec<RecordProblem>)> {
    let mut last = None;
    for _ in 0..8 {
        match survey_once(repo, everything) {
            Err(Error::MissingObject(k)) => last = Some(k),
            other => return other,
        }
    }
    Err(Error::MissingObject(last.unwrap_or_default()))
}

fn survey_once(
    repo: &Repository,
    everything: bool,
) -> Result<(Vec<SessionRecords>, Vec<RecordProblem>)> {
    let mut by_sid: std::collections::BTreeMap<String, SessionRecords> = Default::default();
    let mut problems = Vec::new();
    for l in repo.backend().list(SESSIONS_DIR)? {
        let Some((sid, what)) = parse_session_key(&l.key) else {
            problems.push(RecordProblem {
                key: l.key.clone(),
                message: "not a record cairn writes".into(),
            });
            continue;
        };
        let s = by_sid
            .entry(sid.to_string())
            .or_insert_with(|| SessionRecords {
                sid: sid.to_string(),
                keys: Vec::new(),
                announced: false,
                end: EndState::Absent,
                saw: None,
                newest: None,
                started: None,
            });
        s.keys.push(l.key.clone());
        if what == "start" {
            s.started = Some(l.last_modified);
        }
        if what != "end" {
            s.announced = true;
            s.newest = Some(s.newest.map_or(l.last_modified, |t| t.max(l.last_modified)));
        }
    }
    let mut out: Vec<SessionRecords> = by_sid.into_values().collect();
    // One read or a few per session, in parallel: `check` reads the `.end`
    // of every snapshot's session, which on a bucket is one request each.
    use rayon::prelude::*;
    let found: Vec<Result<Vec<RecordProblem>>> = out
        .par_iter_mut()
        .filter(|s| s.announced || everything)
        .map(|s| {
            let mut p = Vec::new();
            read_session(repo, s, everything, &mut p).map(|_| p)
        })
        .collect();
    for f in found {
        problems.extend(f?);
    }
    Ok((out, problems))
}

/// Reads one session's `.end` and `.saw` records (and `.start` with
/// `everything`); damage goes to `problems` and errs on the safe side.
fn read_session(
    repo: &Repository,
    s: &mut SessionRecords,
    everything: bool,
    problems: &mut Vec<RecordProblem>,
) -> Result<()> {
    let mut problem = |key: &str, e: Error| {
        problems.push(RecordProblem {
            key: key.to_string(),
            message: e.to_string(),
        })
    };
    for key in s.keys.clone() {
        let Some((_, what)) = parse_session_key(&key) else {
            continue;
        };
        if what == "end" {
            match read_small::<SessionEnd>(repo, &key) {
                Ok(end) => s.end = EndState::Ended(end),
                Err(e) if is_content_error(&e) => {
                    s.end = EndState::Unreadable;
                    problem(&key, e);
                }
                Err(e) => return Err(e),
            }
        } else if let Some(g) = what.strip_prefix("saw.") {
            match read_small::<u64>(repo, &key) {
                Ok(v) if g.parse() == Ok(v) => s.saw = Some(s.saw.map_or(v, |o| o.max(v))),
                Ok(v) => problem(
                    &key,
                    Error::corrupt(&key, format!("records generation {v}, not its name's")),
                ),
                Err(e) if is_content_error(&e) => problem(&key, e),
                Err(e) => return Err(e),
            }
        } else if what == "start" && everything {
            match read_small::<SessionStart>(repo, &key) {
                Ok(_) => {}
                Err(e) if is_content_error(&e) => problem(&key, e),
                Err(e) => return Err(e),
            }
        } else if what != "start" && !what.starts_with("hb.") {
            problem(&key, Error::corrupt(&key, "not a record cairn writes"));
        }
    }
    Ok(())
}

fn read_small<T: for<'de> serde::Deserialize<'de>>(repo: &Repository, key: &str) -> Result<T> {
    crate::repo::gc::read_record(repo, key, MAX_SMALL_RECORD_LEN)
}

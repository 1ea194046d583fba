//! The verification ledger and the drill records (repo-format.md §16):
//! append-only sealed records under `verify/` and `drills/`, named by time and
//! a random suffix, written without any lock so that a pass or a drill on any
//! host counts for every host.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};
use crate::format::id::PackId;
use crate::format::records::{
    ledger_key, parse_ledger_key, seal_record, DrillRecord, VerifyRecord, DRILLS_DIR,
    MAX_LEDGER_RECORD_LEN, VERIFY_DIR,
};
use crate::repo::Repository;

/// The latest verification of one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackVerification {
    pub time: DateTime<Utc>,
    pub ok: bool,
}

/// What the ledger says: every pack's latest verification, and the latest pass.
#[derive(Debug, Default)]
pub struct Ledger {
    pub packs: HashMap<PackId, PackVerification>,
    pub passes: usize,
    pub latest: Option<VerifyRecord>,
}

/// Writes a new record under `dir` (a Create under a fresh random name).
fn write_record<T: Serialize>(
    repo: &Repository,
    dir: &str,
    time: DateTime<Utc>,
    v: &T,
) -> Result<String> {
    repo.ensure_writable()?;
    let key = ledger_key(dir, time, rand::random());
    repo.backend()
        .create(&key, seal_record(repo.cipher(), &key, v))?;
    Ok(key)
}

/// A ledger record: bounded and authenticated like every coordination record.
fn read<T: DeserializeOwned>(repo: &Repository, key: &str) -> Result<T> {
    crate::repo::gc::read_record(repo, key, MAX_LEDGER_RECORD_LEN)
}

/// The keys of a ledger folder, oldest first (names sort by time).
fn keys(repo: &Repository, dir: &str) -> Result<Vec<String>> {
    let mut keys: Vec<String> = repo
        .backend()
        .list(dir)?
        .into_iter()
        .filter(|l| parse_ledger_key(dir, &l.key).is_some())
        .map(|l| l.key)
        .collect();
    keys.sort();
    Ok(keys)
}

/// Records one verification pass.
pub fn record_verification(repo: &Repository, rec: &VerifyRecord) -> Result<String> {
    write_record(repo, VERIFY_DIR, rec.time, rec)
}

/// Reads every verification record. A damaged record is skipped with a
/// warning (it can only make packs look less recently verified).
pub fn load_ledger(repo: &Repository) -> Result<Ledger> {
    use rayon::prelude::*;
    let keys = keys(repo, VERIFY_DIR)?;
    let read: Vec<(String, Result<VerifyRecord>)> = keys
        .par_iter()
        .map(|k| (k.clone(), read(repo, k)))
        .collect();
    let mut ledger = Ledger::default();
    for (key, r) in read {
        let rec = match r {
            Ok(r) => r,
            Err(Error::MissingObject(_)) => continue, // compacted meanwhile
            Err(e) if crate::repo::is_content_error(&e) => {
                repo.warn(format!("skipping {key}: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        ledger.passes += 1;
        let marks = rec
            .ok
            .iter()
            .map(|p| (p, true))
            .chain(rec.damaged.iter().map(|p| (p, false)));
        for (pack, ok) in marks {
            let v = PackVerification { time: rec.time, ok };
            ledger
                .packs
                .entry(*pack)
                .and_modify(|old| {
                    if v.time >= old.time {
                        *old = v;
                    }
                })
                .or_insert(v);
        }
        if ledger.latest.as_ref().is_none_or(|l| rec.time >= l.time) {
            ledger.latest = Some(rec);
        }
    }
    Ok(ledger)
}

/// The newest readable record of a folder (one listing, one read or a few).
fn latest<T: DeserializeOwned>(repo: &Repository, dir: &str) -> Result<Option<(String, T)>> {
    for key in keys(repo, dir)?.into_iter().rev() {
        match read::<T>(repo, &key) {
            Ok(r) => return Ok(Some((key, r))),
            Err(Error::MissingObject(_)) => continue,
            Err(e) if crate::repo::is_content_error(&e) => {
                repo.warn(format!("skipping {key}: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The latest verification pass only (for `health`).
pub fn latest_verification(repo: &Repository) -> Result<Option<VerifyRecord>> {
    Ok(latest(repo, VERIFY_DIR)?.map(|(_, r)| r))
}

/// Records one drill.
pub fn record_drill(repo: &Repository, rec: &DrillRecord) -> Result<String> {
    write_record(repo, DRILLS_DIR, rec.time, rec)
}

/// The latest drill (for `health`).
pub fn latest_drill(repo: &Repository) -> Result<Option<DrillRecord>> {
    Ok(latest(repo, DRILLS_DIR)?.map(|(_, r)| r))
}

/// The latest file drill and the latest database drill (for `health`: a
/// failed database drill must not hide behind a later file drill). Reads
/// back from the newest record until it has one of each, at most 500.
pub fn latest_drills(repo: &Repository) -> Result<(Option<DrillRecord>, Option<DrillRecord>)> {
    let (mut files, mut databases) = (None, None);
    for key in keys(repo, DRILLS_DIR)?.into_iter().rev().take(500) {
        let rec: DrillRecord = match read(repo, &key) {
            Ok(r) => r,
            Err(Error::MissingObject(_)) => continue,
            Err(e) if crate::repo::is_content_error(&e) => {
                repo.warn(format!("skipping {key}: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        let slot = if rec.databases {
            &mut databases
        } else {
            &mut files
        };
        if slot.is_none() {
            *slot = Some(rec);
        }
        if files.is_some() && databases.is_some() {
            break;
        }
    }
    Ok((files, databases))
}

//! Coordination records of the prune protocol (repo-format.md §15): writer
//! sessions under `sessions/` and garbage-collection generations under `gc/`.
//!
//! Unlike every other object they are named by role, not by content, so each is
//! sealed with its own storage key in the associated data: a record moved under
//! another name (another session, another generation) fails to open.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::format::crypto::Cipher;
use crate::format::id::{PackId, SnapshotId};
use crate::format::objects::{open_json, seal_json, FormatError};

/// The folder of session records.
pub const SESSIONS_DIR: &str = "sessions";
/// The folder of garbage-collection records.
pub const GC_DIR: &str = "gc";

/// The associated data of a record: `cairn:record:` and its storage key.
pub fn record_aad(key: &str) -> Vec<u8> {
    let mut a = b"cairn:record:".to_vec();
    a.extend_from_slice(key.as_bytes());
    a
}

/// Seals a record for the storage key it will be written under.
pub fn seal_record<T: Serialize>(cipher: &Cipher, key: &str, value: &T) -> Vec<u8> {
    seal_json(cipher, &record_aad(key), value)
}

/// Opens a record read from `key`.
pub fn open_record<T: for<'de> Deserialize<'de>>(
    cipher: &Cipher,
    key: &str,
    bytes: &[u8],
) -> Result<T, FormatError> {
    open_json(cipher, &record_aad(key), bytes)
}

/// What kind of writer a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    Backup,
    Copy,
    Prune,
    /// `repair`: writes salvaged blobs or adopted packs' index objects.
    Repair,
    /// `tag` (and snapshot rewrites): a new snapshot of data already stored.
    Rewrite,
}

/// `sessions/<sid>.start`: a writer announces itself before it reads anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStart {
    pub kind: SessionKind,
    pub hostname: String,
    pub pid: u32,
    /// Random: the session's proof, in its own `.end`, that it wrote that `.end`.
    pub nonce: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// How a session ended, in `sessions/<sid>.end` (the arbiter: one Create wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum SessionEnd {
    /// Written by the session itself; `snapshot` is absent for a writer that
    /// saves none (a prune's repacking).
    Committed {
        snapshot: Option<SnapshotId>,
        nonce: String,
    },
    /// Written by the session itself: it saved nothing.
    Aborted { nonce: String },
    /// Written by a collector that gave up waiting for a silent session:
    /// whatever that session writes later is never valid.
    Fenced { generation: u64 },
}

/// `gc/<n>.mark`: the claim of generation `n` (one Create wins), and what it
/// analysed and condemned.
///
/// Claims are never deleted, so a collector paused for days can never create
/// the mark (or sweep) of a generation that has since finished: its Create
/// finds the old claim and it deletes nothing. To keep claims small forever,
/// a new mark carries only its nonce (`detached`), and the sets live in the
/// body `gc/<n>.plan.<nonce>` (itself a `GcMark`, not detached), written
/// before the claim and deleted once the generation is void. Marks written
/// by cairn before 0.3 carry the sets inline (`detached` absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GcMark {
    /// The valid snapshots the mark walked (A_n).
    #[serde(default)]
    pub analysed: BTreeSet<SnapshotId>,
    /// Packs no analysed snapshot needs (C_n): unused, superseded by repacked
    /// copies, or left by interrupted backups.
    #[serde(default)]
    pub condemned: BTreeSet<PackId>,
    /// Packs written by this generation's repacking (never condemned by it).
    #[serde(default)]
    pub repacked_into: BTreeSet<PackId>,
    pub nonce: String,
    /// The sets are in the body `gc/<n>.plan.<nonce>`, not here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detached: bool,
}

/// `gc/<n>.sweep`: the claim of the final delete set D_n ⊆ C_n (the first
/// sweeper's). As marks: a new claim is `detached` and carries its nonce, the
/// set is in the body `gc/<n>.deleted.<nonce>` (a `GcSweep`, not detached).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GcSweep {
    #[serde(default)]
    pub deleted: BTreeSet<PackId>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detached: bool,
}

/// `gc/<n>.done`: generation `n`'s index is compacted and its packs deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GcDone {}

/// The most bytes a session record, a gc claim or a `.done` may have: each
/// holds a few short fields.
pub const MAX_SMALL_RECORD_LEN: u64 = 64 << 10;
/// The most bytes a gc body (a plan or a delete set) may have: one line of
/// about 70 bytes a pack or snapshot, before compression, so a generation of
/// several million packs fits.
pub const MAX_GC_BODY_LEN: u64 = 512 << 20;
/// The most bytes a verification or drill record may have (0.5 MiB per
/// 10,000 packs verified in one pass).
pub const MAX_LEDGER_RECORD_LEN: u64 = 256 << 20;

/// What a gc key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcRecord<'a> {
    Mark,
    Sweep,
    Done,
    /// The body of a detached mark: `plan.<nonce>`.
    Plan(&'a str),
    /// The body of a detached sweep: `deleted.<nonce>`.
    Deleted(&'a str),
}

/// Parses the part of a gc key after the generation.
pub fn parse_gc_record(what: &str) -> Option<GcRecord<'_>> {
    let nonce_ok = |n: &str| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit());
    match what {
        "mark" => Some(GcRecord::Mark),
        "sweep" => Some(GcRecord::Sweep),
        "done" => Some(GcRecord::Done),
        _ => {
            if let Some(n) = what.strip_prefix("plan.").filter(|n| nonce_ok(n)) {
                Some(GcRecord::Plan(n))
            } else {
                what.strip_prefix("deleted.")
                    .filter(|n| nonce_ok(n))
                    .map(GcRecord::Deleted)
            }
        }
    }
}

/// Storage key of a generation's record: `gc/<n, 10 digits>.<what>`.
pub fn gc_key(generation: u64, what: &str) -> String {
    format!("{GC_DIR}/{generation:010}.{what}")
}

/// Parses `gc/0000000007.mark` into (7, "mark").
pub fn parse_gc_key(key: &str) -> Option<(u64, &str)> {
    let name = key.strip_prefix(GC_DIR)?.strip_prefix('/')?;
    let (n, what) = name.split_once('.')?;
    if n.len() != 10 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((n.parse().ok()?, what))
}

/// Storage key of a session record: `sessions/<sid>.<what>`.
pub fn session_key(sid: &str, what: &str) -> String {
    format!("{SESSIONS_DIR}/{sid}.{what}")
}

/// Parses `sessions/<sid>.<what>` into (sid, what); `what` may have a suffix
/// (`saw.3`, `hb.2`).
pub fn parse_session_key(key: &str) -> Option<(&str, &str)> {
    let name = key.strip_prefix(SESSIONS_DIR)?.strip_prefix('/')?;
    let (sid, what) = name.split_once('.')?;
    if sid.len() != 32 || !sid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((sid, what))
}

/// The folder of verification-pass records (the verification ledger).
pub const VERIFY_DIR: &str = "verify";
/// The folder of restoration-drill records.
pub const DRILLS_DIR: &str = "drills";

/// A ledger record's storage key: `<dir>/<YYYYMMDDTHHMMSS.nnnnnnnnnZ>-<16 hex>`
/// (nanoseconds, fixed width), so that names sort by time even for passes a
/// moment apart, and two hosts never pick the same name.
pub fn ledger_key(dir: &str, time: chrono::DateTime<chrono::Utc>, random: u64) -> String {
    format!("{dir}/{}-{random:016x}", time.format(LEDGER_TIME))
}

const LEDGER_TIME: &str = "%Y%m%dT%H%M%S%.9fZ";

/// Parses the time out of a ledger record's key (`verify/20261129T214137Z-…`).
pub fn parse_ledger_key(dir: &str, key: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let name = key.strip_prefix(dir)?.strip_prefix('/')?;
    let (time, random) = name.split_once('-')?;
    if random.len() != 16 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let t = chrono::NaiveDateTime::parse_from_str(time, LEDGER_TIME).ok()?;
    Some(t.and_utc())
}

/// `verify/<time>-<random>`: one verification pass (`check --read-data`, a
/// subset or a budgeted pass): which packs it read whole and what it found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct VerifyRecord {
    /// When the pass ended (the verifying host's clock).
    pub time: chrono::DateTime<chrono::Utc>,
    pub hostname: String,
    /// Packs read whole and found intact: name, every blob decrypts and hashes.
    pub ok: BTreeSet<PackId>,
    /// Packs read and found damaged (or unreadable).
    pub damaged: BTreeSet<PackId>,
    /// Packs still in the repository whose latest verification, in this pass
    /// or an earlier one, found damage: what `health` reports until they are
    /// verified intact, repaired or deleted (a budgeted pass that reads other
    /// packs must not make a damaged repository look healthy).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub damaged_outstanding: BTreeSet<PackId>,
    /// Figures of the repository after the pass (so `health` reads one record):
    /// bytes of live packs verified intact within 30 days, and of live packs.
    pub covered_bytes_30d: u64,
    pub live_bytes: u64,
    /// The oldest last verification of any live pack; absent when some live
    /// pack was never verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_verification: Option<chrono::DateTime<chrono::Utc>>,
}

/// `drills/<time>-<random>`: one restoration drill's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DrillRecord {
    pub time: chrono::DateTime<chrono::Utc>,
    pub hostname: String,
    pub snapshots: Vec<SnapshotId>,
    pub files: u64,
    pub files_ok: u64,
    pub bytes: u64,
    pub duration_secs: f64,
    /// The failed files, `<short snapshot id>:<path>` (at most 100).
    #[serde(default)]
    pub failures: Vec<String>,
    /// A database drill (`drill --databases`): `files` counts databases
    /// loaded into a scratch server or file, `files_ok` those verified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub databases: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::Secret;

    #[test]
    fn a_record_moved_under_another_name_does_not_open() {
        let c = Cipher::new(&Secret([5; 32]));
        let end = SessionEnd::Fenced { generation: 3 };
        let key = session_key(&"a".repeat(32), "end");
        let bytes = seal_record(&c, &key, &end);
        assert_eq!(open_record::<SessionEnd>(&c, &key, &bytes).unwrap(), end);
        let other = session_key(&"b".repeat(32), "end");
        assert!(open_record::<SessionEnd>(&c, &other, &bytes).is_err());
    }

    #[test]
    fn ledger_keys_sort_by_time_and_parse_back() {
        use chrono::TimeZone;
        let t = chrono::Utc
            .with_ymd_and_hms(2026, 11, 29, 21, 41, 37)
            .unwrap();
        let k = ledger_key(VERIFY_DIR, t, 0xabc);
        assert_eq!(k, "verify/20261129T214137.000000000Z-0000000000000abc");
        assert_eq!(parse_ledger_key(VERIFY_DIR, &k), Some(t));
        assert_eq!(parse_ledger_key(DRILLS_DIR, &k), None);
        assert_eq!(
            parse_ledger_key(VERIFY_DIR, "verify/x-0000000000000abc"),
            None
        );
        let later = ledger_key(VERIFY_DIR, t + chrono::Duration::seconds(1), 0);
        assert!(later > k);
        // Passes a millisecond apart still sort by time.
        let soon = ledger_key(VERIFY_DIR, t + chrono::Duration::milliseconds(1), 0);
        assert!(soon > k && soon < later);
    }

    #[test]
    fn keys_parse_back() {
        assert_eq!(parse_gc_key(&gc_key(7, "mark")), Some((7, "mark")));
        assert_eq!(parse_gc_key("gc/7.mark"), None);
        let nonce = "ab".repeat(16);
        let key = gc_key(3, &format!("plan.{nonce}"));
        let (n, what) = parse_gc_key(&key).unwrap();
        assert_eq!(
            (n, parse_gc_record(what)),
            (3, Some(GcRecord::Plan(&nonce)))
        );
        assert_eq!(parse_gc_record("plan.xyz"), None);
        assert_eq!(parse_gc_record("done"), Some(GcRecord::Done));
        let sid = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_session_key(&session_key(sid, "saw.4")),
            Some((sid, "saw.4"))
        );
        assert_eq!(parse_session_key("sessions/x.start"), None);
    }
}

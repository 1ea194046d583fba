//! Health: a summary for monitoring, read from the repository alone, so that
//! `health` on any host sees what every host did: per host+paths group the
//! latest valid snapshot and whether it is stale; the latest verification pass
//! and drill; locks and writer sessions that look stuck.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::format::records::{self, SessionStart};
use crate::repo::{ledger, lock, Repository};

/// A lock older than this looks stuck (locks are refreshed every 5 minutes).
pub const STUCK_LOCK_AFTER: Duration = Duration::from_secs(30 * 60);
/// A writer session silent for longer than this looks stuck (heartbeats come
/// every 5 minutes).
pub const STUCK_SESSION_AFTER: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupHealth {
    pub host: String,
    pub paths: Vec<String>,
    pub snapshots: usize,
    pub latest_snapshot: String,
    pub latest_time: DateTime<Utc>,
    pub age_seconds: i64,
    /// Bytes the latest snapshot holds (its summary's `total_bytes_processed`).
    pub size: Option<u64>,
    pub stale: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerificationHealth {
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub packs_ok: usize,
    pub packs_damaged: usize,
    /// Packs still stored whose latest verification (by any pass) found damage.
    pub packs_damaged_outstanding: usize,
    pub coverage_30d: f64,
    pub oldest_verification: Option<DateTime<Utc>>,
    /// `ok` or `damaged`.
    pub result: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillHealth {
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub files: u64,
    pub files_ok: u64,
    pub success_rate: f64,
    pub bytes: u64,
    pub failures: Vec<String>,
    /// `ok` or `failed`.
    pub result: String,
}

/// One thing wrong, for a monitoring system: what kind and a sentence.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthProblem {
    /// `stale`, `no_snapshots`, `verification_failed`, `drill_failed`,
    /// `stuck_lock`, `stuck_session`.
    pub kind: String,
    pub message: String,
    /// The snapshot concerned (for `stale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    pub reachable: bool,
    pub max_age_seconds: u64,
    pub snapshots: usize,
    pub groups: Vec<GroupHealth>,
    pub verification: Option<VerificationHealth>,
    pub drill: Option<DrillHealth>,
    pub problems: Vec<HealthProblem>,
}

pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        s if s >= 86400 => format!("{}d {}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn problem(kind: &str, message: String, snapshot: Option<String>) -> HealthProblem {
    HealthProblem {
        kind: kind.into(),
        message,
        snapshot,
    }
}

/// Looks at the repository; `now` is the time ages are measured against.
pub fn health(repo: &Repository, max_age: Duration, now: DateTime<Utc>) -> Result<HealthReport> {
    let mut problems = Vec::new();
    let snaps = repo.list_snapshots()?;
    let mut groups: BTreeMap<(String, Vec<String>), GroupHealth> = BTreeMap::new();
    for (id, s) in &snaps {
        let mut paths = s.paths.clone();
        paths.sort();
        let age = (now - s.time).num_seconds();
        let g = groups
            .entry((s.hostname.clone(), paths.clone()))
            .or_insert_with(|| GroupHealth {
                host: s.hostname.clone(),
                paths,
                snapshots: 0,
                latest_snapshot: id.short(),
                latest_time: s.time,
                age_seconds: age,
                size: None,
                stale: false,
            });
        g.snapshots += 1;
        // `snaps` is oldest first: the last one seen is the latest.
        g.latest_snapshot = id.short();
        g.latest_time = s.time;
        g.age_seconds = age;
        g.size = s.summary.as_ref().map(|x| x.total_bytes_processed);
    }
    let mut groups: Vec<GroupHealth> = groups.into_values().collect();
    for g in &mut groups {
        g.stale = g.age_seconds > max_age.as_secs() as i64;
        if g.stale {
            problems.push(problem(
                "stale",
                format!(
                    "{}:{}: latest snapshot {} is {} old (more than {})",
                    g.host,
                    g.paths.join(","),
                    g.latest_snapshot,
                    human_age(g.age_seconds),
                    human_age(max_age.as_secs() as i64)
                ),
                Some(g.latest_snapshot.clone()),
            ));
        }
    }
    if snaps.is_empty() {
        problems.push(problem(
            "no_snapshots",
            "the repository has no snapshots".into(),
            None,
        ));
    }

    let latest_pass = ledger::latest_verification(repo)?;
    // Damage found by any pass counts while the pack is still stored.
    let outstanding = match &latest_pass {
        Some(r) if !(r.damaged.is_empty() && r.damaged_outstanding.is_empty()) => {
            let stored: std::collections::HashSet<_> = repo
                .list_packs()?
                .into_iter()
                .map(|(id, _, _)| id)
                .collect();
            r.damaged
                .union(&r.damaged_outstanding)
                .filter(|p| stored.contains(p))
                .count()
        }
        _ => 0,
    };
    let verification = latest_pass.map(|r| {
        let coverage = if r.live_bytes == 0 {
            1.0
        } else {
            r.covered_bytes_30d as f64 / r.live_bytes as f64
        };
        VerificationHealth {
            time: r.time,
            hostname: r.hostname,
            packs_ok: r.ok.len(),
            packs_damaged: r.damaged.len(),
            packs_damaged_outstanding: outstanding,
            coverage_30d: coverage,
            oldest_verification: r.oldest_verification,
            result: if outstanding == 0 { "ok" } else { "damaged" }.into(),
        }
    });
    if let Some(v) = &verification {
        if v.packs_damaged_outstanding > 0 {
            problems.push(problem(
                "verification_failed",
                format!(
                    "{} packs still in the repository were found damaged by their latest verification (the last verification pass: {} on {}); run `cairn check --read-data` to see which snapshots and files they hold",
                    v.packs_damaged_outstanding,
                    v.time.format("%Y-%m-%d %H:%M:%S UTC"),
                    v.hostname,
                ),
                None,
            ));
        }
    }
    let drill = ledger::latest_drill(repo)?.map(|d| {
        // A drill that restored nothing proved nothing.
        let failed = d.files == 0 || d.files_ok < d.files || !d.failures.is_empty();
        DrillHealth {
            time: d.time,
            hostname: d.hostname,
            files: d.files,
            files_ok: d.files_ok,
            success_rate: if d.files == 0 {
                if failed {
                    0.0
                } else {
                    1.0
                }
            } else {
                d.files_ok as f64 / d.files as f64
            },
            bytes: d.bytes,
            failures: d.failures,
            result: if failed { "failed" } else { "ok" }.into(),
        }
    });
    if let Some(d) = &drill {
        if d.result == "failed" {
            problems.push(problem(
                "drill_failed",
                format!(
                    "the last drill ({} on {}) failed: {} of {} files restored intact{}",
                    d.time.format("%Y-%m-%d %H:%M:%S UTC"),
                    d.hostname,
                    d.files_ok,
                    d.files,
                    if d.failures.is_empty() {
                        String::new()
                    } else {
                        format!(" (failed: {})", d.failures.join(", "))
                    }
                ),
                None,
            ));
        }
    }

    for (key, info) in lock::list_locks(repo)? {
        match info {
            Some(l) if (now - l.time).num_seconds() <= STUCK_LOCK_AFTER.as_secs() as i64 => {}
            Some(l) => problems.push(problem(
                "stuck_lock",
                format!("{key}: {} (older than 30 minutes)", l.describe()),
                None,
            )),
            None => problems.push(problem(
                "stuck_lock",
                format!("{key}: an unreadable lock object"),
                None,
            )),
        }
    }
    problems.extend(stuck_sessions(repo, now)?);

    Ok(HealthReport {
        healthy: problems.is_empty(),
        reachable: true,
        max_age_seconds: max_age.as_secs(),
        snapshots: snaps.len(),
        groups,
        verification,
        drill,
        problems,
    })
}

/// Writer sessions with a `.start` and no `.end` whose newest record is older
/// than [`STUCK_SESSION_AFTER`] (one listing; a `.start` read per stuck one).
fn stuck_sessions(repo: &Repository, now: DateTime<Utc>) -> Result<Vec<HealthProblem>> {
    #[derive(Default)]
    struct S {
        start: bool,
        end: bool,
        newest: Option<DateTime<Utc>>,
    }
    let mut by_sid: HashMap<String, S> = HashMap::new();
    for l in repo.backend().list(records::SESSIONS_DIR)? {
        let Some((sid, what)) = records::parse_session_key(&l.key) else {
            continue;
        };
        let s = by_sid.entry(sid.to_string()).or_default();
        match what {
            "start" => s.start = true,
            "end" => s.end = true,
            _ => {}
        }
        if what == "start" || what.starts_with("saw.") || what.starts_with("hb.") {
            s.newest = Some(s.newest.map_or(l.last_modified, |n| n.max(l.last_modified)));
        }
    }
    let mut out = Vec::new();
    let mut sids: Vec<_> = by_sid.into_iter().collect();
    sids.sort_by(|a, b| a.0.cmp(&b.0));
    for (sid, s) in sids {
        let Some(newest) = s.newest.filter(|_| s.start && !s.end) else {
            continue;
        };
        if (now - newest).num_seconds() <= STUCK_SESSION_AFTER.as_secs() as i64 {
            continue;
        }
        let key = records::session_key(&sid, "start");
        let who = repo
            .backend()
            .get(&key)
            .ok()
            .and_then(|b| records::open_record::<SessionStart>(repo.cipher(), &key, &b).ok())
            .map(|st| {
                let kind = format!("{:?}", st.kind).to_lowercase();
                format!("{kind} by {} (pid {})", st.hostname, st.pid)
            })
            .unwrap_or_else(|| "writer".into());
        out.push(problem(
            "stuck_session",
            format!(
                "session {sid} ({who}) has been silent since {} without ending",
                newest.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            None,
        ));
    }
    Ok(out)
}

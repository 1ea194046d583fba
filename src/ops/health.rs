//! Health: a summary for monitoring, read from the repository alone, so that
//! `health` on any host sees what every host did: per host+paths group the
//! latest valid snapshot and whether it is stale; the latest verification pass
//! and drill; locks and writer sessions that look stuck.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::format::id::SnapshotId;
use crate::format::records::{self, DrillRecord, SessionStart};
use crate::format::snapshot::Snapshot;
use crate::repo::{ledger, lock, Repository, SnapshotFilter};

/// A lock older than this looks stuck (locks are refreshed every 5 minutes).
pub const STUCK_LOCK_AFTER: Duration = Duration::from_secs(30 * 60);
/// A writer session silent for longer than this looks stuck (heartbeats come
/// every 5 minutes).
pub const STUCK_SESSION_AFTER: Duration = Duration::from_secs(60 * 60);

/// What `health` holds the repository to.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// A host+paths group whose latest snapshot is older than this is stale.
    pub max_age: Duration,
    /// A verification pass must have completed within this long (a
    /// repository whose oldest snapshot is younger is given that long).
    pub max_verify_age: Duration,
    /// The share of stored bytes verified in the last 30 days, at least.
    pub min_coverage: Option<f64>,
    /// A drill must have run within this long (not checked when `None`).
    pub max_drill_age: Option<Duration>,
    /// A group's latest snapshot below this share of its previous one's size
    /// is a problem (0 turns the check off; an empty snapshot after a
    /// non-empty one always is).
    pub min_size_ratio: f64,
    /// Free bytes where a local repository lives, at least.
    pub min_free: Option<u64>,
    /// Each PostgreSQL cluster archiving WAL (`wal-push`) must have had WAL
    /// reach the repository within this long (not checked when `None`).
    pub max_wal_lag: Option<Duration>,
    /// Only these snapshots' groups are looked at.
    pub filter: SnapshotFilter,
}

impl HealthOptions {
    /// The documented defaults: 26 hours, 8 days, half the previous size.
    pub fn new(max_age: Duration) -> HealthOptions {
        HealthOptions {
            max_age,
            max_verify_age: DEFAULT_MAX_VERIFY_AGE,
            min_coverage: None,
            max_drill_age: None,
            min_size_ratio: 0.5,
            min_free: None,
            max_wal_lag: None,
            filter: SnapshotFilter::default(),
        }
    }
}

pub const DEFAULT_MAX_VERIFY_AGE: Duration = Duration::from_secs(8 * 86400);

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
    /// Bytes the snapshot before it held.
    pub previous_size: Option<u64>,
    pub stale: bool,
    /// The latest snapshot shrank below the allowed share of the previous one.
    pub shrunk: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerificationHealth {
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub age_seconds: i64,
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
    pub age_seconds: i64,
    pub files: u64,
    pub files_ok: u64,
    pub success_rate: f64,
    pub bytes: u64,
    pub failures: Vec<String>,
    /// `ok` or `failed`.
    pub result: String,
    /// A database drill (`files` counts databases).
    pub databases: bool,
}

/// The WAL archive of one PostgreSQL cluster (`wal-push`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct WalHealth {
    pub system_identifier: String,
    pub host: String,
    /// When the newest WAL reached the repository.
    pub latest_time: DateTime<Utc>,
    pub age_seconds: i64,
    /// The newest segment archived.
    pub latest_segment: Option<String>,
    pub lagging: bool,
}

/// One thing wrong, for a monitoring system: what kind and a sentence.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthProblem {
    /// One of [`PROBLEM_KINDS`].
    pub kind: String,
    pub message: String,
    /// The snapshot concerned (for `stale` and `size_dropped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// Every kind of problem `health` reports (each gets a metric, 0 when absent).
pub const PROBLEM_KINDS: &[&str] = &[
    "stale",
    "no_snapshots",
    "size_dropped",
    "verification_failed",
    "verification_missing",
    "verification_stale",
    "coverage_low",
    "drill_failed",
    "drill_missing",
    "drill_stale",
    "low_free_space",
    "stuck_lock",
    "stuck_session",
    "wal_lag",
    "wal_gap",
];

#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    pub reachable: bool,
    pub max_age_seconds: u64,
    pub max_verify_age_seconds: u64,
    pub snapshots: usize,
    pub groups: Vec<GroupHealth>,
    pub verification: Option<VerificationHealth>,
    /// The latest drill of either kind.
    pub drill: Option<DrillHealth>,
    /// The latest database drill (`drill --databases`), if any ran.
    pub database_drill: Option<DrillHealth>,
    /// Free bytes where a local repository lives.
    pub free_bytes: Option<u64>,
    /// Per PostgreSQL cluster archiving WAL into the repository.
    pub wal: Vec<WalHealth>,
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

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn secs(d: Duration) -> i64 {
    d.as_secs().min(i64::MAX as u64) as i64
}

/// Looks at the repository; `now` is the time ages are measured against.
pub fn health(repo: &Repository, opts: &HealthOptions, now: DateTime<Utc>) -> Result<HealthReport> {
    let mut problems = Vec::new();
    let snaps: Vec<_> = repo
        .list_snapshots()?
        .into_iter()
        .filter(|(_, s)| opts.filter.matches(s))
        .collect();
    // The copies a safe restore took of its target are not backups that
    // must stay fresh: they never make a group of their own go stale. WAL
    // batches come and vary in size as the server writes; they are judged
    // by --max-wal-lag instead.
    let backups: Vec<_> = snaps
        .iter()
        .filter(|(_, s)| !s.is_pre_restore() && !s.is_wal())
        .cloned()
        .collect();
    let groups = group_health(&backups, opts, now, &mut problems);
    let wal = wal_health(&snaps, opts, now, &mut problems);
    if snaps.is_empty() {
        problems.push(problem(
            "no_snapshots",
            if opts.filter == SnapshotFilter::default() {
                "the repository has no snapshots".into()
            } else {
                "no snapshot matches the --host/--tag/--path filters".into()
            },
            None,
        ));
    }
    // How long the repository has had data: a pass or a drill cannot be
    // overdue before that.
    let data_age = snaps
        .iter()
        .map(|(_, s)| (now - s.time).num_seconds())
        .max()
        .unwrap_or(0);

    let verification = verification_health(repo, now)?;
    verification_problems(verification.as_ref(), opts, data_age, &mut problems);
    let (file_drill, db_drill) = ledger::latest_drills(repo)?;
    let file_drill = file_drill.map(|d| drill_health(d, now));
    let database_drill = db_drill.map(|d| drill_health(d, now));
    let drill = match (&file_drill, &database_drill) {
        (Some(f), Some(d)) if d.time > f.time => database_drill.clone(),
        (Some(_), _) => file_drill.clone(),
        (None, d) => d.clone(),
    };
    drill_problems(drill.as_ref(), opts, data_age, &mut problems);
    // A failed database drill counts even when a file drill ran after it.
    if let Some(d) = database_drill.as_ref().filter(|d| d.result == "failed") {
        if drill.as_ref().map(|x| x.time) != Some(d.time) {
            drill_failure(d, &mut problems);
        }
    }

    let free_bytes = repo.backend().free_space();
    if let (Some(min), Some(free)) = (opts.min_free, free_bytes) {
        if free < min {
            problems.push(problem(
                "low_free_space",
                format!(
                    "{} free where the repository lives ({}), less than --min-free {}",
                    crate::format::size::human(free),
                    repo.backend().location(),
                    crate::format::size::human(min)
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
        max_age_seconds: opts.max_age.as_secs(),
        max_verify_age_seconds: opts.max_verify_age.as_secs(),
        snapshots: snaps.len(),
        groups,
        verification,
        drill,
        database_drill,
        free_bytes,
        wal,
        problems,
    })
}

/// Per cluster archiving WAL: when WAL last arrived, and whether that is
/// longer ago than `--max-wal-lag` (a stuck `archive_command` or flusher).
fn wal_health(
    snaps: &[(SnapshotId, Snapshot)],
    opts: &HealthOptions,
    now: DateTime<Utc>,
    problems: &mut Vec<HealthProblem>,
) -> Vec<WalHealth> {
    let mut clusters: BTreeMap<String, WalHealth> = BTreeMap::new();
    for (_, s) in snaps {
        let Some(w) = &s.wal else { continue };
        let newest = w
            .files
            .iter()
            .filter(|f| f.end_lsn.is_some())
            .map(|f| f.name.clone())
            .max();
        let c = clusters
            .entry(w.system_identifier.clone())
            .or_insert_with(|| WalHealth {
                system_identifier: w.system_identifier.clone(),
                host: s.hostname.clone(),
                latest_time: s.time,
                age_seconds: 0,
                latest_segment: None,
                lagging: false,
            });
        if s.time >= c.latest_time {
            c.latest_time = s.time;
            c.host = s.hostname.clone();
        }
        c.latest_segment = c.latest_segment.clone().max(newest);
    }
    let mut out: Vec<WalHealth> = clusters.into_values().collect();
    for c in &mut out {
        c.age_seconds = (now - c.latest_time).num_seconds();
        let Some(lag) = opts.max_wal_lag else {
            continue;
        };
        c.lagging = c.age_seconds > secs(lag);
        if c.lagging {
            problems.push(problem(
                "wal_lag",
                format!(
                    "PostgreSQL cluster {} ({}): no WAL archived for {} (more than --max-wal-lag {}); newest segment {}",
                    c.system_identifier,
                    c.host,
                    human_age(c.age_seconds),
                    human_age(secs(lag)),
                    c.latest_segment.as_deref().unwrap_or("none")
                ),
                None,
            ));
        }
    }
    for c in &out {
        if let Some(gap) = wal_gap(snaps, &c.system_identifier) {
            problems.push(problem(
                "wal_gap",
                format!(
                    "PostgreSQL cluster {}: WAL segment {gap} is not archived, after the newest base backup; \
                     recovery cannot pass it (take a new base backup: cairn backup --postgres-base URL)",
                    c.system_identifier
                ),
                None,
            ));
        }
    }
    if opts.max_wal_lag.is_some() && out.is_empty() {
        problems.push(problem(
            "wal_lag",
            "--max-wal-lag is set but no WAL has been archived (wal-push) into the repository"
                .into(),
            None,
        ));
    }
    out
}

/// Per host+paths group: its latest snapshot, whether that is stale, and
/// whether it shrank sharply against the one before.
fn group_health(
    snaps: &[(SnapshotId, Snapshot)],
    opts: &HealthOptions,
    now: DateTime<Utc>,
    problems: &mut Vec<HealthProblem>,
) -> Vec<GroupHealth> {
    let mut groups: BTreeMap<(String, Vec<String>), GroupHealth> = BTreeMap::new();
    // `snaps` is oldest first: the last one seen in a group is its latest.
    for (id, s) in snaps {
        let mut paths = s.paths.clone();
        paths.sort();
        let age = (now - s.time).num_seconds();
        let size = s.summary.as_ref().map(|x| x.total_bytes_processed);
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
                previous_size: None,
                stale: false,
                shrunk: false,
            });
        if g.snapshots > 0 {
            g.previous_size = g.size;
        }
        g.snapshots += 1;
        g.latest_snapshot = id.short();
        g.latest_time = s.time;
        g.age_seconds = age;
        g.size = size;
    }
    let mut groups: Vec<GroupHealth> = groups.into_values().collect();
    for g in &mut groups {
        let label = format!("{}:{}", g.host, g.paths.join(","));
        g.stale = g.age_seconds > secs(opts.max_age);
        if g.stale {
            problems.push(problem(
                "stale",
                format!(
                    "{label}: latest snapshot {} is {} old (more than {})",
                    g.latest_snapshot,
                    human_age(g.age_seconds),
                    human_age(secs(opts.max_age))
                ),
                Some(g.latest_snapshot.clone()),
            ));
        }
        if let (Some(size), Some(previous)) = (g.size, g.previous_size) {
            let emptied = size == 0 && previous > 0;
            let ratio = size as f64 / previous.max(1) as f64;
            g.shrunk = emptied || (previous > 0 && ratio < opts.min_size_ratio);
            if g.shrunk {
                problems.push(problem(
                    "size_dropped",
                    format!(
                        "{label}: latest snapshot {} holds {}, {} the previous one's {} (a failed dump or a missing mount?)",
                        g.latest_snapshot,
                        crate::format::size::human(size),
                        if emptied {
                            "nothing of".to_string()
                        } else {
                            format!("{:.0}% of", ratio * 100.0)
                        },
                        crate::format::size::human(previous)
                    ),
                    Some(g.latest_snapshot.clone()),
                ));
            }
        }
    }
    groups
}

/// The latest verification pass, with damage found by any pass counted
/// while the damaged pack is still stored.
fn verification_health(
    repo: &Repository,
    now: DateTime<Utc>,
) -> Result<Option<VerificationHealth>> {
    let Some(r) = ledger::latest_verification(repo)? else {
        return Ok(None);
    };
    let outstanding = if r.damaged.is_empty() && r.damaged_outstanding.is_empty() {
        0
    } else {
        let stored: HashSet<_> = repo
            .list_packs()?
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        r.damaged
            .union(&r.damaged_outstanding)
            .filter(|p| stored.contains(p))
            .count()
    };
    let coverage = if r.live_bytes == 0 {
        1.0
    } else {
        r.covered_bytes_30d as f64 / r.live_bytes as f64
    };
    Ok(Some(VerificationHealth {
        time: r.time,
        hostname: r.hostname,
        age_seconds: (now - r.time).num_seconds(),
        packs_ok: r.ok.len(),
        packs_damaged: r.damaged.len(),
        packs_damaged_outstanding: outstanding,
        coverage_30d: coverage,
        oldest_verification: r.oldest_verification,
        result: if outstanding == 0 { "ok" } else { "damaged" }.into(),
    }))
}

fn verification_problems(
    v: Option<&VerificationHealth>,
    opts: &HealthOptions,
    data_age: i64,
    problems: &mut Vec<HealthProblem>,
) {
    let limit = secs(opts.max_verify_age);
    let Some(v) = v else {
        if data_age > limit {
            problems.push(problem(
                "verification_missing",
                format!(
                    "no verification pass has ever completed, and the oldest snapshot is {} old (more than --max-verify-age {}); run `cairn check --read-data --max-duration 10m` on a schedule",
                    human_age(data_age),
                    human_age(limit)
                ),
                None,
            ));
        }
        return;
    };
    if v.packs_damaged_outstanding > 0 {
        problems.push(problem(
            "verification_failed",
            format!(
                "{} packs still in the repository were found damaged by their latest verification (the last verification pass: {} on {}); run `cairn check --read-data` to see which snapshots and files they hold, then `cairn repair packs`",
                v.packs_damaged_outstanding,
                when(v.time),
                v.hostname,
            ),
            None,
        ));
    }
    if v.age_seconds > limit {
        problems.push(problem(
            "verification_stale",
            format!(
                "the last verification pass ({} on {}) is {} old (more than --max-verify-age {})",
                when(v.time),
                v.hostname,
                human_age(v.age_seconds),
                human_age(limit)
            ),
            None,
        ));
    }
    if let Some(min) = opts.min_coverage {
        if v.coverage_30d < min {
            problems.push(problem(
                "coverage_low",
                format!(
                    "verification passes covered {:.1}% of the stored data in the last 30 days (less than --min-coverage {:.1}%)",
                    v.coverage_30d * 100.0,
                    min * 100.0
                ),
                None,
            ));
        }
    }
}

fn drill_health(d: DrillRecord, now: DateTime<Utc>) -> DrillHealth {
    // A drill that restored nothing proved nothing.
    let failed = d.files == 0 || d.files_ok < d.files || !d.failures.is_empty();
    DrillHealth {
        time: d.time,
        hostname: d.hostname,
        age_seconds: (now - d.time).num_seconds(),
        files: d.files,
        files_ok: d.files_ok,
        success_rate: if d.files == 0 {
            0.0
        } else {
            d.files_ok as f64 / d.files as f64
        },
        bytes: d.bytes,
        failures: d.failures,
        result: if failed { "failed" } else { "ok" }.into(),
        databases: d.databases,
    }
}

fn drill_failure(d: &DrillHealth, problems: &mut Vec<HealthProblem>) {
    let (kind, what) = match d.databases {
        true => ("database drill", "databases loaded and verified"),
        false => ("drill", "files restored intact"),
    };
    problems.push(problem(
        "drill_failed",
        format!(
            "the last {kind} ({} on {}) failed: {} of {} {what}{}",
            when(d.time),
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

fn drill_problems(
    d: Option<&DrillHealth>,
    opts: &HealthOptions,
    data_age: i64,
    problems: &mut Vec<HealthProblem>,
) {
    if let Some(d) = d.filter(|d| d.result == "failed") {
        drill_failure(d, problems);
    }
    let Some(limit) = opts.max_drill_age.map(secs) else {
        return;
    };
    match d {
        Some(d) if d.age_seconds > limit => problems.push(problem(
            "drill_stale",
            format!(
                "the last drill ({} on {}) is {} old (more than --max-drill-age {})",
                when(d.time),
                d.hostname,
                human_age(d.age_seconds),
                human_age(limit)
            ),
            None,
        )),
        None if data_age > limit => problems.push(problem(
            "drill_missing",
            format!(
                "no drill has ever run, and the oldest snapshot is {} old (more than --max-drill-age {}); run `cairn drill`",
                human_age(data_age),
                human_age(limit)
            ),
            None,
        )),
        _ => {}
    }
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

/// The first segment missing from a cluster's archive after its newest base
/// backup: on the base's timeline from the segment it starts in, on each
/// later timeline from its first archived segment, up to the last archived.
fn wal_gap(snaps: &[(SnapshotId, Snapshot)], system: &str) -> Option<String> {
    use crate::format::wal::segment_name;
    use std::collections::BTreeSet;
    let mut segments: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut size = crate::format::wal::DEFAULT_SEGMENT_SIZE;
    for (_, s) in snaps {
        let Some(w) = s.wal.as_ref().filter(|w| w.system_identifier == system) else {
            continue;
        };
        size = w.segment_size;
        for f in &w.files {
            if let Some(start) = f.start_lsn {
                segments
                    .entry(f.timeline)
                    .or_default()
                    .insert(start.0 / size);
            }
        }
    }
    let base = snaps
        .iter()
        .filter(|(_, s)| !s.is_wal())
        .flat_map(|(_, s)| {
            s.databases
                .iter()
                .filter_map(|d| d.base.as_ref())
                .map(|b| (s.time, b))
        })
        .filter(|(_, b)| b.system_identifier.as_deref().is_none_or(|id| id == system))
        .max_by_key(|(t, _)| *t)
        .map(|(_, b)| b)?;
    for (&timeline, segs) in segments.range(base.timeline..) {
        let from = match timeline == base.timeline {
            true => base.start_lsn.0 / size,
            false => *segs.first()?,
        };
        let last = *segs.last()?;
        if let Some(missing) = (from..=last).find(|n| !segs.contains(n)) {
            return Some(segment_name(timeline, missing, size));
        }
    }
    None
}

//! Retention: which snapshots a policy keeps, grouped by host and paths as in
//! restic. Pure planning; the caller deletes the snapshot objects it removes.
//! Forgetting deletes no data: blobs stay until a prune.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Local, Timelike, Utc};

use crate::format::database::BaseBackup;
use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;

/// Keep rules; a snapshot is kept when any rule keeps it.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub last: Option<usize>,
    pub hourly: Option<usize>,
    pub daily: Option<usize>,
    pub weekly: Option<usize>,
    pub monthly: Option<usize>,
    pub yearly: Option<usize>,
    /// Keep every snapshot this close to the group's newest.
    pub within: Option<Duration>,
    pub tags: Vec<String>,
    /// Of what the rules keep, keep at most this many (the newest) per group:
    /// a cap, e.g. "within 30 days, but at most 100 snapshots".
    pub at_most: Option<usize>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.hourly.is_none()
            && self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
            && self.yearly.is_none()
            && self.within.is_none()
            && self.tags.is_empty()
            && self.at_most.is_none()
    }

    /// Whether no rule can keep anything: every count is 0, `within` is zero and
    /// every tag is empty (restic treats such a policy as empty). Applied, it
    /// would remove every snapshot, which is never what a retention policy means.
    /// A cap alone keeps nothing either, and neither does a cap of 0.
    pub fn keeps_nothing(&self) -> bool {
        self.at_most == Some(0)
            || [
                self.last,
                self.hourly,
                self.daily,
                self.weekly,
                self.monthly,
                self.yearly,
            ]
            .iter()
            .all(|n| n.unwrap_or(0) == 0)
                && self.within.is_none_or(|d| d <= Duration::zero())
                && self
                    .tags
                    .iter()
                    .all(|t| t.split(',').all(|x| x.trim().is_empty()))
    }
}

/// The snapshots of one host and set of paths, newest first, with the verdicts.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    pub hostname: String,
    pub paths: Vec<String>,
    pub keep: Vec<(SnapshotId, Snapshot, Vec<String>)>,
    pub remove: Vec<(SnapshotId, Snapshot)>,
}

type Bucket = fn(&DateTime<Local>) -> i64;

fn hour(t: &DateTime<Local>) -> i64 {
    ((t.year() as i64 * 1000 + t.ordinal() as i64) * 100) + t.hour() as i64
}
fn day(t: &DateTime<Local>) -> i64 {
    t.year() as i64 * 1000 + t.ordinal() as i64
}
fn week(t: &DateTime<Local>) -> i64 {
    let w = t.iso_week();
    w.year() as i64 * 100 + w.week() as i64
}
fn month(t: &DateTime<Local>) -> i64 {
    t.year() as i64 * 100 + t.month() as i64
}
fn year(t: &DateTime<Local>) -> i64 {
    t.year() as i64
}

/// Applies a policy to every group. Snapshots may come in any order. The
/// copies safe restores took of their targets (`pre-restore`) are a group of
/// their own beside the backups of the same paths: counted with them, a
/// `--keep-last 7` would keep fewer backups after each restore. WAL
/// snapshots follow the base backups instead (`plan_wal`).
pub fn plan(snapshots: Vec<(SnapshotId, Snapshot)>, policy: &Policy) -> Vec<GroupPlan> {
    plan_selected(snapshots, |_| true, policy)
}

/// [`plan`] for the snapshots `selected` picks out of all of them; the
/// others are kept, and the base backups among them keep their WAL too (a
/// `forget --host a` must not drop WAL that a base backup of host b needs).
pub fn plan_selected(
    all: Vec<(SnapshotId, Snapshot)>,
    selected: impl Fn(&Snapshot) -> bool,
    policy: &Policy,
) -> Vec<GroupPlan> {
    type Key = (String, Vec<String>, bool);
    let mut groups: BTreeMap<Key, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    let mut wal = Vec::new();
    let mut kept_outside = Vec::new();
    for (id, s) in all {
        if !selected(&s) {
            kept_outside.push(s);
        } else if s.is_wal() {
            wal.push((id, s));
        } else {
            let mut paths = s.paths.clone();
            paths.sort();
            groups
                .entry((s.hostname.clone(), paths, s.is_pre_restore()))
                .or_default()
                .push((id, s));
        }
    }
    let mut plans: Vec<GroupPlan> = groups
        .into_iter()
        .map(|((hostname, paths, _), snaps)| plan_group(hostname, paths, snaps, policy))
        .collect();
    let bases: Vec<BaseBackup> = plans
        .iter()
        .flat_map(|p| p.keep.iter().map(|(_, s, _)| s))
        .chain(kept_outside.iter())
        .flat_map(|s| s.databases.iter().filter_map(|d| d.base.clone()))
        .collect();
    plans.extend(plan_wal(wal, &bases));
    plans
}

/// WAL is kept for the base backups that stay: a WAL snapshot goes when
/// every segment in it ends at or before the start LSN of the oldest kept
/// base backup of its cluster. `.history` files are kept forever (recovery
/// onto any later timeline reads them; `wal-push` stores them in snapshots
/// of their own). A cluster with no kept base backup keeps all its WAL:
/// cairn cannot tell what it is for.
fn plan_wal(snaps: Vec<(SnapshotId, Snapshot)>, kept_bases: &[BaseBackup]) -> Vec<GroupPlan> {
    type Key = (String, Vec<String>);
    let mut groups: BTreeMap<Key, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    for (id, s) in snaps {
        let mut paths = s.paths.clone();
        paths.sort();
        groups
            .entry((s.hostname.clone(), paths))
            .or_default()
            .push((id, s));
    }
    let mut plans = Vec::new();
    for ((hostname, paths), mut snaps) in groups {
        snaps.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
        let mut plan = GroupPlan {
            hostname,
            paths,
            keep: Vec::new(),
            remove: Vec::new(),
        };
        for (id, s) in snaps {
            match wal_kept_because(&s, kept_bases) {
                Some(why) => plan.keep.push((id, s, vec![why.to_string()])),
                None => plan.remove.push((id, s)),
            }
        }
        plans.push(plan);
    }
    plans
}

/// Why a WAL snapshot stays, or None when no kept base backup needs it.
fn wal_kept_because(s: &Snapshot, kept_bases: &[BaseBackup]) -> Option<&'static str> {
    let wal = s.wal.as_ref()?;
    // A base whose cluster is unknown counts for every cluster.
    let bases: Vec<&BaseBackup> = kept_bases
        .iter()
        .filter(|b| {
            b.system_identifier
                .as_ref()
                .is_none_or(|id| *id == wal.system_identifier)
        })
        .collect();
    if wal.files.iter().any(|f| f.end_lsn.is_none()) {
        return Some("timeline history, kept forever");
    }
    let Some(start) = bases.iter().map(|b| b.start_lsn).min() else {
        return Some("WAL of a cluster without a kept base backup");
    };
    let needed = wal
        .files
        .iter()
        .any(|f| f.end_lsn.is_some_and(|end| end > start));
    needed.then_some("WAL a kept base backup needs")
}

fn plan_group(
    hostname: String,
    paths: Vec<String>,
    mut snaps: Vec<(SnapshotId, Snapshot)>,
    p: &Policy,
) -> GroupPlan {
    snaps.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
    if let Some(n) = p.last {
        for r in reasons.iter_mut().take(n) {
            r.push("last snapshot".into());
        }
    }
    let rules: [(Option<usize>, Bucket, &str); 5] = [
        (p.hourly, hour, "hourly snapshot"),
        (p.daily, day, "daily snapshot"),
        (p.weekly, week, "weekly snapshot"),
        (p.monthly, month, "monthly snapshot"),
        (p.yearly, year, "yearly snapshot"),
    ];
    for (count, bucket, why) in rules {
        let Some(mut left) = count else { continue };
        let mut last_bucket = None;
        for (i, (_, s)) in snaps.iter().enumerate() {
            if left == 0 {
                break;
            }
            let b = bucket(&s.time.with_timezone(&Local));
            if last_bucket != Some(b) {
                last_bucket = Some(b);
                reasons[i].push(why.to_string());
                left -= 1;
            }
        }
    }
    if let (Some(d), Some((_, newest))) = (p.within, snaps.first()) {
        let cutoff: DateTime<Utc> = newest.time - d;
        for (i, (_, s)) in snaps.iter().enumerate() {
            if s.time >= cutoff {
                reasons[i].push("within".into());
            }
        }
    }
    for (i, (_, s)) in snaps.iter().enumerate() {
        if p.tags.iter().any(|t| t.split(',').all(|x| s.has_tag(x))) {
            reasons[i].push("tagged".into());
        }
    }
    let mut plan = GroupPlan {
        hostname,
        paths,
        keep: Vec::new(),
        remove: Vec::new(),
    };
    if let Some(cap) = p.at_most {
        // Newest first: the kept ones beyond the cap are the oldest.
        for why in reasons.iter_mut().filter(|w| !w.is_empty()).skip(cap) {
            why.clear();
        }
    }
    for ((id, s), why) in snaps.into_iter().zip(reasons) {
        if why.is_empty() {
            plan.remove.push((id, s));
        } else {
            plan.keep.push((id, s, why));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::BlobId;
    use chrono::TimeZone;

    fn snap(day: u32, hour: u32, tags: &[&str]) -> (SnapshotId, Snapshot) {
        let time = Local
            .with_ymd_and_hms(2024, 1, day, hour, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let s = Snapshot {
            time,
            tree: BlobId([0; 32]),
            paths: vec!["/data".into()],
            hostname: "h".into(),
            username: String::new(),
            uid: 0,
            gid: 0,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            excludes: vec![],
            parent: None,
            program_version: String::new(),
            summary: None,
            session: None,
            original: None,
            databases: Vec::new(),
            wal: None,
        };
        let mut id = [0u8; 32];
        id[0] = day as u8;
        id[1] = hour as u8;
        (SnapshotId(id), s)
    }

    fn kept(plan: &[GroupPlan]) -> Vec<(u8, u8)> {
        plan[0]
            .keep
            .iter()
            .map(|(id, _, _)| (id.0[0], id.0[1]))
            .collect()
    }

    #[test]
    fn keep_last_and_daily() {
        let snaps = vec![
            snap(1, 10, &[]),
            snap(1, 20, &[]),
            snap(2, 9, &[]),
            snap(3, 9, &[]),
            snap(3, 18, &[]),
        ];
        let p = plan(
            snaps.clone(),
            &Policy {
                last: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(kept(&p), [(3, 18), (3, 9)]);
        assert_eq!(p[0].remove.len(), 3);
        // A cap on what the rules keep: the newest ones stay.
        let p = plan(
            snaps.clone(),
            &Policy {
                last: Some(4),
                at_most: Some(3),
                ..Default::default()
            },
        );
        assert_eq!(kept(&p).len(), 3);
        assert_eq!(kept(&p)[0], (3, 18));
        assert_eq!(p[0].remove.len(), 2);
        let p = plan(
            snaps.clone(),
            &Policy {
                daily: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(
            kept(&p),
            [(3, 18), (2, 9)],
            "newest of each of the last two days"
        );
        let p = plan(
            snaps,
            &Policy {
                daily: Some(10),
                ..Default::default()
            },
        );
        assert_eq!(kept(&p), [(3, 18), (2, 9), (1, 20)]);
    }

    #[test]
    fn keep_within_and_tag() {
        let snaps = vec![
            snap(1, 10, &["keep"]),
            snap(5, 10, &[]),
            snap(9, 10, &[]),
            snap(10, 10, &[]),
        ];
        let p = plan(
            snaps,
            &Policy {
                within: crate::format::duration::parse_span("2d"),
                tags: vec!["keep".into()],
                ..Default::default()
            },
        );
        assert_eq!(kept(&p), [(10, 10), (9, 10), (1, 10)]);
    }

    #[test]
    fn groups_by_host_and_paths() {
        let (id2, mut other) = snap(2, 2, &[]);
        other.hostname = "other".into();
        let p = plan(
            vec![snap(1, 1, &[]), (id2, other)],
            &Policy {
                last: Some(1),
                ..Default::default()
            },
        );
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|g| g.keep.len() == 1 && g.remove.is_empty()));
    }

    #[test]
    fn pre_restore_copies_do_not_crowd_out_backups() {
        let p = plan(
            vec![
                snap(1, 1, &[]),
                snap(2, 1, &[]),
                snap(3, 1, &["pre-restore"]),
                snap(4, 1, &["pre-restore"]),
            ],
            &Policy {
                last: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(p.len(), 2, "backups and pre-restore copies are two groups");
        assert!(p.iter().all(|g| g.keep.len() == 2 && g.remove.is_empty()));
    }

    /// A base backup of cluster "7" on day `day`, starting at segment `seg`.
    fn base(day: u32, seg: u64) -> (SnapshotId, Snapshot) {
        use crate::format::database::{DatabaseRecord, DumpFormat, Engine};
        use crate::format::wal::Lsn;
        let (id, mut s) = snap(day, 0, &["base"]);
        s.paths = vec!["postgresql://db/".into()];
        s.databases = vec![DatabaseRecord {
            engine: Engine::Postgres,
            format: DumpFormat::PgBaseTar,
            server_version: "15".into(),
            source: "postgresql://db/".into(),
            name: String::new(),
            path: "/databases/postgresql/db/base.tar".into(),
            tables: Vec::new(),
            base: Some(BaseBackup {
                timeline: 1,
                start_lsn: Lsn(seg << 24 | 0x28),
                stop_lsn: Lsn((seg << 24) + 0x100),
                system_identifier: Some("7".into()),
            }),
        }];
        (id, s)
    }

    /// A WAL snapshot of `cluster` on day `day` holding these files.
    fn wal(day: u32, cluster: &str, names: &[&str]) -> (SnapshotId, Snapshot) {
        use crate::format::wal::{WalArchive, WalEntry, DEFAULT_SEGMENT_SIZE};
        let (id, mut s) = snap(day, 12, &["pg-wal"]);
        s.paths = vec![format!("pg-wal:{cluster}")];
        s.wal = Some(WalArchive {
            system_identifier: cluster.into(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            files: names
                .iter()
                .map(|n| WalEntry::new(n, DEFAULT_SEGMENT_SIZE).unwrap())
                .collect(),
        });
        (id, s)
    }

    fn removed_days(p: &[GroupPlan]) -> Vec<u8> {
        let mut d: Vec<u8> = p
            .iter()
            .flat_map(|g| g.remove.iter().map(|(id, _)| id.0[0]))
            .collect();
        d.sort();
        d
    }

    #[test]
    fn wal_goes_with_the_base_backups_that_needed_it() {
        let snaps = vec![
            base(1, 2),
            wal(
                1,
                "7",
                &["000000010000000000000001", "000000010000000000000002"],
            ),
            wal(2, "7", &["000000010000000000000003"]),
            base(3, 5),
            wal(3, "7", &["000000010000000000000004"]),
            wal(4, "7", &["000000010000000000000005"]),
            wal(5, "7", &["00000002.history"]),
            wal(6, "8", &["000000010000000000000001"]),
        ];
        let keep_last = |n| Policy {
            last: Some(n),
            ..Default::default()
        };
        // Both bases kept: nothing goes (the day-1 batch holds segment 2,
        // where the first base backup starts).
        assert!(removed_days(&plan(snaps.clone(), &keep_last(2))).is_empty());
        let p = plan(snaps.clone(), &keep_last(1));
        // The first base goes, and with it segments 1 to 4; segment 5 and
        // the history files stay (history always does); cluster 8 has no
        // base backup, so its WAL stays.
        assert_eq!(removed_days(&p), [1, 1, 2, 3]);
        // A base backup outside the selection still keeps its WAL (from
        // segment 2 on, so every batch).
        let p = plan_selected(
            snaps.clone(),
            |s| !s.has_tag("base") || s.time.day() > 2,
            &keep_last(1),
        );
        assert!(removed_days(&p).is_empty());
        // No base backup at all: WAL is never forgotten by a policy.
        let only_wal: Vec<_> = snaps.into_iter().filter(|(_, s)| s.is_wal()).collect();
        assert!(removed_days(&plan(only_wal, &keep_last(1))).is_empty());
    }
}

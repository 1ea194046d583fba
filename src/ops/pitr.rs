//! PostgreSQL point-in-time recovery from the repository: base backups
//! (`backup --postgres-base`, a tar of the data directory with its WAL start
//! and stop positions) and the WAL `wal-push` archived.
//!
//! `pitr list` shows per timeline which segments are archived and where
//! they have gaps, and which base backups can be recovered from. `pitr
//! restore` picks the newest base backup before the target, checks that the
//! WAL it needs is archived, unpacks it into an empty folder and writes the
//! recovery settings (`recovery.signal`, `restore_command` calling `cairn
//! wal-fetch`, the target); PostgreSQL does the replay when started.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::database::DumpFormat;
use crate::format::id::SnapshotId;
use crate::format::wal::{segment_name, segment_of, Lsn, WalFile, DEFAULT_SEGMENT_SIZE};
use crate::ops::wal::{catalog, Archived};
use crate::repo::tree::{dump_file, find_node};
use crate::repo::IndexedRepository;

/// A base backup in the repository.
#[derive(Debug, Clone, Serialize)]
pub struct Base {
    pub snapshot: SnapshotId,
    /// When the backup ended (the snapshot's end, else its time).
    pub time: DateTime<Utc>,
    pub source: String,
    pub path: String,
    /// The server's version when the backup was taken.
    pub server_version: String,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    /// The first and last segment it needs.
    pub first_segment: String,
    pub last_segment: String,
    /// Whether every segment from its start to its stop is archived.
    pub consistent: bool,
}

/// The archived segments of one timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: usize,
    /// Missing runs between the first and the last: (first missing, last missing).
    pub gaps: Vec<(String, String)>,
    /// When the newest segment of the timeline was archived.
    pub latest_archived: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PitrList {
    pub bases: Vec<Base>,
    pub timelines: Vec<Timeline>,
    /// Timelines with a `.history` file.
    pub histories: Vec<u32>,
    /// The recoverable window: from the end of the oldest base backup whose
    /// WAL is archived to the newest WAL archived after it without a gap
    /// (on the base's timeline). None without such a base backup.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Segments by timeline and number (the number from the segment's start
/// LSN and the cluster's segment size: names alone number segments
/// differently for each size).
fn segments_by_timeline(
    cat: &BTreeMap<String, Archived>,
) -> BTreeMap<u32, BTreeMap<u64, &Archived>> {
    let mut out: BTreeMap<u32, BTreeMap<u64, &Archived>> = BTreeMap::new();
    for (name, a) in cat {
        if let (Some(WalFile::Segment { timeline, .. }), Some(start)) =
            (WalFile::parse(name), a.entry.start_lsn)
        {
            out.entry(timeline)
                .or_default()
                .insert(start.0 / a.segment_size, a);
        }
    }
    out
}

/// The archive's segment size (one cluster, one size).
fn archive_segment_size(cat: &BTreeMap<String, Archived>) -> u64 {
    cat.values()
        .next()
        .map_or(DEFAULT_SEGMENT_SIZE, |a| a.segment_size)
}

/// Base backups and archived WAL.
pub fn list(repo: &IndexedRepository) -> Result<PitrList> {
    let cat = catalog(repo)?;
    let by_tl = segments_by_timeline(&cat);
    let size = archive_segment_size(&cat);
    let name = |timeline: u32, segment: u64| segment_name(timeline, segment, size);
    let mut bases = Vec::new();
    for (id, s) in repo.list_snapshots()? {
        for d in &s.databases {
            let (DumpFormat::PgBaseTar, Some(b)) = (d.format, &d.base) else {
                continue;
            };
            let (first, last) = (segment_of(b.start_lsn, size), segment_of(b.stop_lsn, size));
            let have = by_tl.get(&b.timeline);
            let consistent = (first..=last).all(|g| have.is_some_and(|h| h.contains_key(&g)));
            bases.push(Base {
                snapshot: id,
                time: s.summary.as_ref().map(|x| x.backup_end).unwrap_or(s.time),
                source: d.source.clone(),
                path: d.path.clone(),
                server_version: d.server_version.clone(),
                timeline: b.timeline,
                start_lsn: b.start_lsn,
                stop_lsn: b.stop_lsn,
                first_segment: name(b.timeline, first),
                last_segment: name(b.timeline, last),
                consistent,
            });
        }
    }
    let timelines: Vec<Timeline> = by_tl
        .iter()
        .map(|(&tl, segs)| {
            let keys: Vec<u64> = segs.keys().copied().collect();
            let gaps = keys
                .windows(2)
                .filter(|w| w[1] > w[0] + 1)
                .map(|w| (name(tl, w[0] + 1), name(tl, w[1] - 1)))
                .collect();
            Timeline {
                timeline: tl,
                first: name(tl, keys[0]),
                last: name(tl, *keys.last().unwrap()),
                segments: keys.len(),
                gaps,
                latest_archived: segs.values().map(|a| a.time).max().unwrap(),
            }
        })
        .collect();
    let histories = cat
        .keys()
        .filter_map(|n| match WalFile::parse(n) {
            Some(WalFile::History { timeline }) => Some(timeline),
            _ => None,
        })
        .collect();
    let window = recoverable_window(&bases, &timelines, &cat);
    Ok(PitrList {
        bases,
        timelines,
        histories,
        window,
    })
}

/// From the oldest consistent base backup's end to the newest segment
/// reachable from it: on its timeline up to the first gap after it, and any
/// later timeline's segments (recovery follows the newest timeline).
fn recoverable_window(
    bases: &[Base],
    timelines: &[Timeline],
    cat: &BTreeMap<String, Archived>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let oldest = bases
        .iter()
        .filter(|b| b.consistent)
        .min_by_key(|b| b.time)?;
    let first_gap = timelines
        .iter()
        .find(|t| t.timeline == oldest.timeline)
        .and_then(|t| {
            t.gaps
                .iter()
                .map(|(from, _)| from.clone())
                .find(|g| *g > oldest.last_segment)
        });
    let newest = cat
        .iter()
        .filter_map(|(name, a)| match WalFile::parse(name) {
            Some(WalFile::Segment { timeline, .. }) if timeline > oldest.timeline => Some(a.time),
            Some(WalFile::Segment { timeline, .. })
                if timeline == oldest.timeline
                    && first_gap.as_ref().is_none_or(|g| name < g)
                    && *name >= oldest.first_segment =>
            {
                Some(a.time)
            }
            _ => None,
        })
        .max()?;
    Some((oldest.time, newest.max(oldest.time)))
}

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The end of the archived WAL.
    Latest,
    Time(DateTime<Utc>),
    Lsn(Lsn),
    Xid(u64),
}

#[derive(Debug, Clone)]
pub struct PitrRestoreOptions {
    pub target: Target,
    /// `recovery_target_timeline` (default: `latest`).
    pub timeline: Option<u32>,
    /// The data directory to create (absent or empty).
    pub dir: PathBuf,
    /// The shell command PostgreSQL runs to fetch a WAL file (`%f %p`).
    pub restore_command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PitrRestored {
    pub base: Base,
    pub dir: PathBuf,
    pub files: u64,
    /// Recovery settings written to `postgresql.auto.conf`.
    pub settings: Vec<(String, String)>,
    /// Gaps in the archived WAL after the base backup on its timeline:
    /// recovery cannot pass the first one.
    pub gaps_after: Vec<(String, String)>,
    /// A target time past the newest archived WAL: recovery may end before
    /// it (PostgreSQL then refuses to start).
    pub target_past_archive: Option<DateTime<Utc>>,
}

/// Picks the base backup, checks its WAL, unpacks it, writes the recovery
/// settings.
pub fn restore(repo: &IndexedRepository, opts: &PitrRestoreOptions) -> Result<PitrRestored> {
    let listed = list(repo)?;
    let base = choose_base(&listed, &opts.target)?;
    let gaps_after: Vec<(String, String)> = listed
        .timelines
        .iter()
        .filter(|t| t.timeline == base.timeline)
        .flat_map(|t| t.gaps.iter().cloned())
        .filter(|(from, _)| *from > base.last_segment)
        .collect();
    prepare_dir(&opts.dir)?;
    let snap = repo.load_snapshot(&base.snapshot)?;
    let node = find_node(repo, &snap.tree, &base.path)?;
    let files = unpack(repo, &node, &opts.dir)?;
    let settings = recovery_settings(opts);
    write_recovery(&opts.dir, &settings)?;
    Ok(PitrRestored {
        base,
        dir: opts.dir.clone(),
        files,
        settings,
        gaps_after,
        target_past_archive: match (&opts.target, listed.window) {
            (Target::Time(t), Some((_, end))) if *t > end => Some(end),
            _ => None,
        },
    })
}

/// The newest base backup that ends before the target and whose own WAL
/// is archived whole.
fn choose_base(listed: &PitrList, target: &Target) -> Result<Base> {
    let mut usable: Vec<&Base> = listed.bases.iter().filter(|b| b.consistent).collect();
    usable.sort_by_key(|b| b.time);
    let before = |b: &&&Base| match target {
        Target::Latest | Target::Xid(_) => true,
        Target::Time(t) => b.time <= *t,
        Target::Lsn(l) => b.stop_lsn <= *l,
    };
    if let Some(b) = usable.iter().rev().find(before) {
        return Ok((*b).clone());
    }
    let why = if listed.bases.is_empty() {
        "the repository holds no base backup (make one with `cairn backup --postgres-base URL`)"
            .to_string()
    } else if usable.is_empty() {
        format!(
            "no base backup has its WAL archived whole (the oldest needs {} to {}): is archive_command set to `cairn wal-push %p`?",
            listed.bases[0].first_segment, listed.bases[0].last_segment
        )
    } else {
        format!(
            "the oldest usable base backup ended at {} (LSN {}), after the target",
            usable[0].time.format("%Y-%m-%d %H:%M:%S UTC"),
            usable[0].stop_lsn
        )
    };
    Err(Error::InvalidArgument(format!(
        "cannot recover to that point: {why}"
    )))
}

/// The target folder: created private, or an existing empty one.
fn prepare_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::InvalidArgument(format!(
                    "{} is not empty: recover into a new or empty folder",
                    dir.display()
                )));
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(dir, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, e)),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Unpacks the base backup's tar into `dir` as it streams from the
/// repository (entries that would land outside `dir` are refused by the
/// tar reader); PostgreSQL needs `pg_wal/` even when the tar has none.
fn unpack(repo: &IndexedRepository, node: &crate::format::tree::Node, dir: &Path) -> Result<u64> {
    let (reader, mut writer) = std::io::pipe().map_err(|e| Error::io(dir, e))?;
    let files = std::thread::scope(|s| -> Result<u64> {
        let feeder = s.spawn(move || dump_file(repo, node, &mut writer));
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(false);
        let mut n = 0u64;
        let result = (|| -> std::io::Result<()> {
            for entry in archive.entries()? {
                let mut e = entry?;
                if !e.unpack_in(dir)? {
                    return Err(std::io::Error::other(format!(
                        "entry {} would land outside the folder",
                        e.path()?.display()
                    )));
                }
                n += 1;
            }
            Ok(())
        })();
        drop(archive);
        let fed = feeder.join().expect("the feeding thread does not panic");
        result.map_err(|e| Error::io(dir, e))?;
        fed?;
        Ok(n)
    })?;
    for sub in ["pg_wal", "pg_wal/archive_status"] {
        let p = dir.join(sub);
        if !p.exists() {
            std::fs::create_dir(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(files)
}

/// A value in postgresql.conf syntax: single-quoted, quotes doubled.
fn conf_value(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

fn recovery_settings(opts: &PitrRestoreOptions) -> Vec<(String, String)> {
    let mut s = vec![("restore_command".to_string(), opts.restore_command.clone())];
    match &opts.target {
        Target::Latest => {}
        Target::Time(t) => s.push((
            "recovery_target_time".into(),
            t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        )),
        Target::Lsn(l) => s.push(("recovery_target_lsn".into(), l.to_string())),
        Target::Xid(x) => s.push(("recovery_target_xid".into(), x.to_string())),
    }
    if opts.target != Target::Latest {
        s.push(("recovery_target_action".into(), "promote".into()));
    }
    s.push((
        "recovery_target_timeline".into(),
        opts.timeline
            .map(|t| t.to_string())
            .unwrap_or_else(|| "latest".into()),
    ));
    s
}

/// `recovery.signal`, and the settings appended to `postgresql.auto.conf`
/// (read last, so they win over the backed-up configuration).
fn write_recovery(dir: &Path, settings: &[(String, String)]) -> Result<()> {
    let signal = dir.join("recovery.signal");
    std::fs::write(&signal, "").map_err(|e| Error::io(&signal, e))?;
    let auto = dir.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto)
        .map_err(|e| Error::io(&auto, e))?;
    let mut text = String::from("\n# Written by cairn pitr restore\n");
    for (k, v) in settings {
        text.push_str(&format!("{k} = {}\n", conf_value(v)));
    }
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io(&auto, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_quote_and_target() {
        let o = PitrRestoreOptions {
            target: Target::Lsn(Lsn(0x1_0000_0028)),
            timeline: None,
            dir: "/x".into(),
            restore_command: "cairn -r '/r' wal-fetch %f %p".into(),
        };
        let s = recovery_settings(&o);
        assert_eq!(conf_value(&s[0].1), "'cairn -r ''/r'' wal-fetch %f %p'");
        assert!(s.contains(&("recovery_target_lsn".into(), "1/28".into())));
        assert!(s.contains(&("recovery_target_action".into(), "promote".into())));
    }
}

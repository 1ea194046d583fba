//! Grouping snapshots by host, paths and/or tags, as restic's `--group-by`
//! (used by `snapshots --group-by`/`--latest`).

use std::collections::BTreeMap;

use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;

/// Which fields make a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl GroupBy {
    /// restic's default for `--latest`: host and paths.
    pub const HOST_PATHS: GroupBy = GroupBy {
        host: true,
        paths: true,
        tags: false,
    };

    /// `host,paths`, `tags`, `host,paths,tags`, or `""` (one group).
    pub fn parse(s: &str) -> Result<GroupBy, String> {
        let mut g = GroupBy::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" | "hosts" => g.host = true,
                "path" | "paths" => g.paths = true,
                "tag" | "tags" => g.tags = true,
                other => {
                    return Err(format!(
                        "--group-by '{other}' is not one of host, paths, tags"
                    ))
                }
            }
        }
        Ok(g)
    }
}

/// What a group has in common (the fields not grouped by are `None`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct GroupKey {
    pub hostname: Option<String>,
    pub paths: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

/// Groups snapshots (each group oldest first, as given), and keeps only the
/// `latest` newest of each when asked.
pub fn group(
    snapshots: Vec<(SnapshotId, Snapshot)>,
    by: GroupBy,
    latest: Option<usize>,
) -> Vec<(GroupKey, Vec<(SnapshotId, Snapshot)>)> {
    let mut groups: BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    for (id, s) in snapshots {
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let key = GroupKey {
            hostname: by.host.then(|| s.hostname.clone()),
            paths: by.paths.then(|| sorted(s.paths.clone())),
            tags: by.tags.then(|| sorted(s.tags.clone())),
        };
        groups.entry(key).or_default().push((id, s));
    }
    groups
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
            if let Some(n) = latest {
                let skip = v.len().saturating_sub(n);
                v.drain(..skip);
            }
            (k, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_by_parses_restics_spellings() {
        assert_eq!(GroupBy::parse("host,paths").unwrap(), GroupBy::HOST_PATHS);
        assert!(GroupBy::parse("tags").unwrap().tags);
        assert_eq!(GroupBy::parse("").unwrap(), GroupBy::default());
        assert!(GroupBy::parse("color").is_err());
    }
}

//! Snapshot objects: the root tree of one backup plus who, when, what and figures.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::format::id::{BlobId, SnapshotId};

/// Figures recorded by the backup that made the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs_new: u64,
    pub dirs_changed: u64,
    pub dirs_unmodified: u64,
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Bytes of new blob plaintext (before compression).
    pub data_added: u64,
    /// Bytes those new blobs take in packs (after compression and encryption).
    pub data_added_packed: u64,
    pub total_files_processed: u64,
    pub total_bytes_processed: u64,
    pub backup_start: DateTime<Utc>,
    pub backup_end: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub time: DateTime<Utc>,
    pub tree: BlobId,
    pub paths: Vec<String>,
    pub hostname: String,
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    pub program_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SnapshotSummary>,
    /// The writer session that saved it (repo-format.md §15): the snapshot is
    /// valid only once `sessions/<session>.end` records it as committed.
    /// Absent in snapshots written before sessions existed (always valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// For a copy: the ID of the snapshot it was copied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    /// The database dumps it holds (repo-format.md §10, "Database records").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<crate::format::database::DatabaseRecord>,
    /// The WAL files a `wal-push` snapshot holds (repo-format.md §10, "WAL
    /// archive records"); absent in every other snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<crate::format::wal::WalArchive>,
}

/// The tag of the snapshots `wal-push` saves (one a batch of WAL files).
pub const WAL_TAG: &str = "pg-wal";

/// The folder of a WAL snapshot's tree that holds the files, by name.
pub const WAL_DIR: &str = "pg_wal";

/// The tag of a snapshot a safe restore took of its target before
/// overwriting it: a copy to roll back to, not a backup, so retention groups
/// and health's freshness keep it apart from the backups of the same paths.
pub const PRE_RESTORE_TAG: &str = "pre-restore";

impl Snapshot {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Saved by `wal-push` (it has a `wal` record): WAL files, not a
    /// backup of paths.
    pub fn is_wal(&self) -> bool {
        self.wal.is_some()
    }

    /// Taken by a safe restore of its target ([`PRE_RESTORE_TAG`]).
    pub fn is_pre_restore(&self) -> bool {
        self.has_tag(PRE_RESTORE_TAG)
    }
}

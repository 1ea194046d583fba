//! The library's error type: what failed, on which object.

use std::path::PathBuf;

use crate::format::objects::FormatError;
use crate::format::pack::PackError;

/// What failed, and on which object. New variants may come: match with a
/// wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no repository at {0} (run `cairn init` first)")]
    RepoNotFound(String),
    #[error("a repository already exists at {0}; refusing to overwrite it")]
    RepoExists(String),
    #[error("wrong password or no key matches{}", untried_note(.untried))]
    WrongPassword {
        /// Key objects left untried by the unlock bounds (one of them may match).
        untried: usize,
    },
    #[error("invalidated by a concurrent prune; nothing was saved; a rerun is safe")]
    Fenced,
    #[error("this prune was fenced by another prune while it was paused (generation {generation}): it deleted nothing{}; the copies it repacked are duplicates the next prune removes; run prune again", deleted_before_note(*.deleted_before))]
    PruneFenced {
        generation: u64,
        /// Packs it had deleted finishing an earlier generation (final and safe).
        deleted_before: usize,
    },
    #[error("{0} is not a cairn repository, or its config is damaged")]
    NotARepository(String),
    #[error("{0}: content does not match its name (replaced or copied under another name)")]
    NameMismatch(String),
    #[error("this repository has format version {0}, which this cairn reads but does not write; make a new repository for new backups")]
    ReadOnlyFormat(u32),
    #[error("repository is locked by {0} (if that process is gone, run `cairn unlock`)")]
    Locked(String),
    #[error("lost the repository lock ({0}); stopped before writing anything more (run the command again)")]
    LockLost(String),
    #[error("invalid repository location '{url}': {reason}")]
    BadLocation { url: String, reason: String },
    #[error("cannot reach the storage service for {location}: {reason}")]
    Unreachable { location: String, reason: String },
    #[error("the storage service refused the credentials for {location} ({reason}); check the credentials and their permissions")]
    AccessDenied { location: String, reason: String },
    #[error("cannot delete objects in {location} ({reason}); prune needs credentials that may delete (see docs/storage.md)")]
    DeleteDenied { location: String, reason: String },
    #[error("bucket or container '{container}' of {location} does not exist; cairn does not create buckets: create it with your provider's tools (e.g. `aws s3 mb s3://{container}`, `gcloud storage buckets create gs://{container}`, `az storage container create --name {container}`), then run `cairn init`")]
    ContainerNotFound { location: String, container: String },
    #[error("storage error on {key}: {source}")]
    Storage {
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("object {0} not found in the repository")]
    MissingObject(String),
    #[error("{what} is damaged: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("{what}: {source}")]
    Format {
        what: String,
        #[source]
        source: FormatError,
    },
    #[error("pack {pack}: {source}")]
    Pack {
        pack: String,
        #[source]
        source: PackError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {0} is not in the index")]
    BlobNotIndexed(String),
    #[error("no snapshot matches '{0}'")]
    SnapshotNotFound(String),
    #[error("snapshot prefix '{0}' is too short: give at least 4 hex digits")]
    PrefixTooShort(String),
    #[error("snapshot prefix '{0}' is ambiguous; give more digits")]
    AmbiguousSnapshot(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    CommandFailed(String),
    #[error("snapshot {0} is not a pre-restore snapshot: rollback restores only the snapshots a safe restore took of its target (tagged pre-restore)")]
    NotPreRestore(String),
    #[error("path {0} not found in the snapshot")]
    PathNotInSnapshot(String),
    #[error("{what}: {reason}")]
    Database { what: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A wrong password may be right for a key the unlock bounds left untried:
/// say so, and how to reach it.
fn untried_note(untried: &usize) -> String {
    match untried {
        0 => String::new(),
        1 => " (1 key file was not tried: give --key-hint ID)".into(),
        n => format!(" ({n} key files were not tried: give --key-hint ID)"),
    }
}

/// A fenced prune that had finished an earlier generation first says so.
fn deleted_before_note(n: usize) -> String {
    match n {
        0 => String::new(),
        n => format!(
            " more (it had finished an earlier prune's generation first, deleting {n} packs)"
        ),
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub fn format(what: impl Into<String>, source: FormatError) -> Self {
        Error::Format {
            what: what.into(),
            source,
        }
    }
}

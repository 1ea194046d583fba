//! A repository opened for reading, index loaded: the value the tree view,
//! restore, dump and drill take (rustic's `open → to_indexed`). Readers get
//! one by opening for reading ([`Repository::into_indexed`]), so forgetting
//! to load the index is a type error, not a runtime `BlobNotIndexed`.

use std::ops::{Deref, DerefMut};

use super::Repository;
use crate::error::Result;

/// A [`Repository`] whose index is loaded. Dereferences to the repository,
/// so everything a repository does, it does (a writer may still back up
/// into it: its index stays loaded).
pub struct IndexedRepository {
    repo: Repository,
}

impl Repository {
    /// Loads the index and returns the repository as readers take it.
    pub fn into_indexed(mut self) -> Result<IndexedRepository> {
        self.load_index()?;
        Ok(IndexedRepository { repo: self })
    }
}

impl IndexedRepository {
    /// The repository, for callers that manage its index themselves again.
    pub fn into_inner(self) -> Repository {
        self.repo
    }
}

impl Deref for IndexedRepository {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        &self.repo
    }
}

impl DerefMut for IndexedRepository {
    fn deref_mut(&mut self) -> &mut Repository {
        &mut self.repo
    }
}

//! Which key objects to try when opening a repository, in what order, and how
//! much argon2 work to spend on them.
//!
//! Anyone who can write the storage can plant key files, so the order must not
//! be theirs to choose: the key the user names (`--key-hint`) and the key that
//! last opened the repository on this machine come first, whatever they cost;
//! the others follow cheapest first until their summed work would pass
//! [`UNLOCK_WORK_BUDGET`]. Bounding work rather than the number of files means
//! cheap planted keys cannot crowd out a real one.

use std::path::{Path, PathBuf};

use crate::format::crypto::MAX_KDF_WORK_KIB;
use crate::format::id::{storage_hash, KeyId};
use crate::repo::cache::write_private;

/// Total argon2 work (KiB × passes, as `KdfParams::work`) spent on keys that
/// are neither hinted nor remembered: twice the most one valid key may cost,
/// 4 GiB·passes (about 21 keys of the default 64 MiB × 3; ~3 s where a default
/// key takes 0.15 s). Why twice the maximum:
///
/// - Any valid key, however costly, still fits after planted keys worth up to
///   one maximal key: far more than the 63 other objects a reader reads could
///   cost at the cheapest valid parameters (8 KiB × 1 pass each, 504 in all).
///   So cheap planted keys never lock the owner out, hint or no hint.
/// - Any two valid keys fit together: an owner with two keys of the highest
///   cost opens with either password on a machine that remembers neither.
/// - Crowding a key out takes planted keys no cheaper than it, adding up to
///   the budget less its cost, so every wrong-password attempt against them
///   costs at most the budget; the hinted and remembered keys are still tried.
/// - A wrong password costs at most this plus the hinted and remembered keys
///   (at most one maximal key each): 4 maximal keys, where the old bound (16
///   keys of any valid cost) allowed 16.
pub const UNLOCK_WORK_BUDGET: u64 = 2 * MAX_KDF_WORK_KIB;

/// The folder of the cache root where remembered keys are kept.
const MEMORY_DIR: &str = "last-key";

/// How to choose the key objects to try when opening a repository.
#[derive(Debug, Clone, Default)]
pub struct Unlock {
    /// A key ID or unique prefix (any case) to try first.
    pub key_hint: Option<String>,
    /// The cache root under which the key that last worked is remembered
    /// (see [`KeyMemory`]); None remembers nothing.
    pub memory_root: Option<PathBuf>,
}

/// The keys to try, in order, and how many readable keys the budget left out.
#[derive(Debug, PartialEq, Eq)]
pub struct Attempts {
    pub order: Vec<KeyId>,
    pub skipped: usize,
}

/// Orders `keys` (ID and KDF work of each key object read and within the KDF
/// bounds): the `pinned` ones first, in the order given, whatever their work;
/// then the others by ascending work, ties by ID (so the listing order of the
/// store decides nothing), while their summed work stays within
/// [`UNLOCK_WORK_BUDGET`].
pub fn attempts(pinned: &[KeyId], keys: &[(KeyId, u64)]) -> Attempts {
    let mut order: Vec<KeyId> = Vec::new();
    for id in pinned {
        if keys.iter().any(|(k, _)| k == id) && !order.contains(id) {
            order.push(*id);
        }
    }
    let mut rest: Vec<(u64, KeyId)> = keys
        .iter()
        .filter(|(id, _)| !order.contains(id))
        .map(|&(id, work)| (work, id))
        .collect();
    rest.sort();
    let mut spent = 0u64;
    for (i, &(work, id)) in rest.iter().enumerate() {
        spent = spent.saturating_add(work);
        if spent > UNLOCK_WORK_BUDGET {
            // Sorted by work: every later key would pass the budget too.
            return Attempts {
                order,
                skipped: rest.len() - i,
            };
        }
        order.push(id);
    }
    Attempts { order, skipped: 0 }
}

/// What a key selector (a full ID or a prefix, as `key list` shows them) names.
#[derive(Debug, PartialEq, Eq)]
pub enum Selected {
    One(KeyId),
    Nothing,
    Several(usize),
}

/// The key among `ids` that `selector` names (case does not matter).
pub fn select(ids: impl IntoIterator<Item = KeyId>, selector: &str) -> Selected {
    let selector = selector.to_lowercase();
    let matches: Vec<KeyId> = ids
        .into_iter()
        .filter(|id| id.to_hex().starts_with(&selector))
        .collect();
    match matches.as_slice() {
        [] => Selected::Nothing,
        [one] => Selected::One(*one),
        more => Selected::Several(more.len()),
    }
}

/// The key that last opened one repository on this machine, kept in a file
/// under the cache root named by the SHA-256 of the repository's config
/// object. That object is read before any key is tried, is never rewritten,
/// and its sealed content holds the repository's random ID, so the name is
/// one repository's wherever it is reached from. The remembered ID only
/// orders the keys: the key object is still read from the repository and
/// authenticated like any other.
pub struct KeyMemory {
    path: PathBuf,
}

impl KeyMemory {
    pub fn new(cache_root: &Path, config_bytes: &[u8]) -> KeyMemory {
        let name = hex::encode(storage_hash(config_bytes));
        KeyMemory {
            path: cache_root.join(MEMORY_DIR).join(name),
        }
    }

    /// The remembered key; a missing or damaged file remembers nothing.
    pub fn recall(&self) -> Option<KeyId> {
        std::fs::read_to_string(&self.path)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Remembers the key that worked. A failure is not reported: it only
    /// costs the ordering next time, never the command.
    pub fn remember(&self, id: KeyId) {
        if self.recall() != Some(id) {
            write_private(&self.path, format!("{}\n", id.to_hex()).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::KdfParams;

    fn id(n: u8) -> KeyId {
        KeyId([n; 32])
    }

    /// The cheapest parameters a key object may ask for.
    const CHEAPEST: u64 = 8;

    #[test]
    fn cheap_planted_keys_cannot_crowd_out_a_costly_real_key() {
        // 63 planted keys (all but one of what a reader reads) at the lowest
        // valid cost, and the owner's key at the highest.
        let mut keys: Vec<_> = (1..=63).map(|n| (id(n), CHEAPEST)).collect();
        keys.push((id(0xff), MAX_KDF_WORK_KIB));
        let a = attempts(&[], &keys);
        assert_eq!(a.skipped, 0);
        assert_eq!(a.order.last(), Some(&id(0xff)));
        assert_eq!(a.order.len(), 64);
    }

    #[test]
    fn the_rest_go_cheapest_first_ties_by_id_within_the_budget() {
        let default = KdfParams::default().work();
        let keys = [
            (id(3), default),
            (id(1), default),
            (id(2), CHEAPEST),
            (id(4), MAX_KDF_WORK_KIB),
            (id(5), MAX_KDF_WORK_KIB),
        ];
        let a = attempts(&[], &keys);
        // 8 + 2 × default + MAX fits; a second MAX key passes the budget.
        assert_eq!(a.order, vec![id(2), id(1), id(3), id(4)]);
        assert_eq!(a.skipped, 1);
    }

    #[test]
    fn pinned_keys_come_first_whatever_their_cost() {
        // Enough keys at the real key's cost (and lower IDs) to fill the budget.
        let default = KdfParams::default().work();
        let planted = (UNLOCK_WORK_BUDGET / default + 1) as u8;
        let mut keys: Vec<_> = (1..=planted).map(|n| (id(n), default)).collect();
        keys.push((id(0xfe), MAX_KDF_WORK_KIB));
        keys.push((id(0xff), default));
        let unpinned = attempts(&[], &keys);
        assert!(!unpinned.order.contains(&id(0xff)), "{unpinned:?}");
        assert!(unpinned.skipped >= 2);

        // Hint, then the remembered key; a pinned ID that was not read is ignored.
        let pinned = attempts(&[id(0xfe), id(0xff), id(0xee), id(0xfe)], &keys);
        assert_eq!(pinned.order[..2], [id(0xfe), id(0xff)]);
        // The pinned keys do not eat into the others' budget.
        assert_eq!(pinned.order.len() - 2, unpinned.order.len());
        assert_eq!(pinned.skipped, unpinned.skipped - 2);
    }

    #[test]
    fn selectors_match_prefixes_in_any_case() {
        let ids = [KeyId([0xab; 32]), KeyId([0xac; 32])];
        assert_eq!(select(ids, "ABAB"), Selected::One(ids[0]));
        assert_eq!(select(ids, &ids[1].to_hex()), Selected::One(ids[1]));
        assert_eq!(select(ids, "a"), Selected::Several(2));
        assert_eq!(select(ids, "ff"), Selected::Nothing);
    }

    #[test]
    fn memory_is_per_repository_and_survives_damage() {
        let dir = tempfile::tempdir().unwrap();
        let here = KeyMemory::new(dir.path(), b"config of one");
        let there = KeyMemory::new(dir.path(), b"config of another");
        assert_eq!(here.recall(), None);
        here.remember(id(7));
        assert_eq!(here.recall(), Some(id(7)));
        assert_eq!(there.recall(), None);
        std::fs::write(&here.path, "not an id").unwrap();
        assert_eq!(here.recall(), None);
        here.remember(id(8));
        assert_eq!(here.recall(), Some(id(8)));
    }
}

//! What a stateful step closes or expires next, in time order: the time index of sessions,
//! sliding windows, joins and dedupe, in memory or in a store of its own.

use std::collections::BTreeSet;
use std::hash::Hash;
use std::ops::Bound;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::state::backend::StateBackend;
use crate::state::keyed::{EntryKey, KeyedState, RESTORE_CHUNK};
use crate::state::store::{decode, decode_time, encode_into, encode_time, KeyValueStore};
use crate::time::Timestamp;

/// What an operator closes or expires next: `(time, entry)` pairs in time order.
///
/// In memory a sorted set. With the disk backend a second store file of the step (keys
/// `time, entry`, no values), so that memory does not grow with the open sessions; it is
/// never changelogged (a restore rebuilds it from the state's entries), which keeps the
/// changelog the same whichever backend wrote it.
pub(crate) enum TimeIndex<E> {
    /// A sorted set.
    Memory(BTreeSet<(Timestamp, E)>),
    /// A store of its own.
    Stored(Box<dyn KeyValueStore>),
}

fn index_key<E: Serialize>(t: Timestamp, e: &E) -> Result<Vec<u8>, StreamsError> {
    let mut key = encode_time(t).to_vec();
    encode_into(e, &mut key)?;
    Ok(key)
}

impl<E> TimeIndex<E>
where
    E: Ord + Serialize + DeserializeOwned,
{
    /// The index of the step named `name`: on disk (its own store) if `backend` is.
    pub(crate) fn new(name: &str, backend: &StateBackend) -> Result<Self, StreamsError> {
        Ok(if backend.is_on_disk() {
            TimeIndex::Stored(backend.open(&format!("{name}-index"))?)
        } else {
            TimeIndex::Memory(BTreeSet::new())
        })
    }

    /// The index of a step whose values are in `state`: as [`TimeIndex::new`], but a store
    /// that fails to open fails `state` instead (reported by its first restore or checkpoint,
    /// like a value store that failed to open), and the index falls back to memory.
    pub(crate) fn for_state<G, S, T>(
        name: &str,
        backend: &StateBackend,
        state: &mut KeyedState<G, S, T>,
    ) -> Self
    where
        G: Hash + Eq + Clone + Serialize + DeserializeOwned,
        S: EntryKey,
        T: Serialize + DeserializeOwned,
    {
        Self::new(name, backend).unwrap_or_else(|error| {
            state.fail(error);
            TimeIndex::Memory(BTreeSet::new())
        })
    }

    /// Adds `e` at `t`.
    pub(crate) fn insert(&mut self, t: Timestamp, e: E) -> Result<(), StreamsError> {
        match self {
            TimeIndex::Memory(set) => {
                set.insert((t, e));
            }
            TimeIndex::Stored(store) => store.put(index_key(t, &e)?, Vec::new())?,
        }
        Ok(())
    }

    /// Removes `e` at `t` (a no-op when absent).
    pub(crate) fn remove(&mut self, t: Timestamp, e: E) -> Result<(), StreamsError> {
        match self {
            TimeIndex::Memory(set) => {
                set.remove(&(t, e));
            }
            TimeIndex::Stored(store) => store.delete(&index_key(t, &e)?)?,
        }
        Ok(())
    }

    /// Removes and returns the entries at the earliest time, in order, if that time is at
    /// or before `through`. All entries of one time come at once: on disk their byte order
    /// is not their order, so they are sorted here (output order must not depend on the
    /// backend).
    pub(crate) fn pop_due(
        &mut self,
        through: Timestamp,
    ) -> Result<Option<(Timestamp, Vec<E>)>, StreamsError> {
        match self {
            TimeIndex::Memory(set) => {
                let Some(t) = set.first().map(|(t, _)| *t).filter(|t| *t <= through) else {
                    return Ok(None);
                };
                let mut due = Vec::new();
                while set.first().is_some_and(|(first, _)| *first == t) {
                    if let Some((_, e)) = set.pop_first() {
                        due.push(e);
                    }
                }
                Ok(Some((t, due)))
            }
            TimeIndex::Stored(store) => {
                let Some((first, _)) = store.first(Bound::Unbounded, Bound::Unbounded)? else {
                    return Ok(None);
                };
                let (t, _) = decode_time(&first)?;
                if t > through {
                    return Ok(None);
                }
                let from = encode_time(t);
                let entries = match t.checked_add(1) {
                    Some(next) => store.range(
                        Bound::Included(from.as_slice()),
                        Bound::Excluded(encode_time(next).as_slice()),
                    )?,
                    None => store.range(Bound::Included(from.as_slice()), Bound::Unbounded)?,
                };
                let mut due = Vec::with_capacity(entries.len());
                for (key, _) in entries {
                    store.delete(&key)?;
                    due.push(decode(&key[from.len()..])?);
                }
                due.sort();
                Ok(Some((t, due)))
            }
        }
    }

    /// Removes every entry (before a restore rebuilds the index).
    pub(crate) fn clear(&mut self) -> Result<(), StreamsError> {
        match self {
            TimeIndex::Memory(set) => set.clear(),
            TimeIndex::Stored(store) => {
                // In chunks: the index may not fit in memory.
                while let Some((key, _)) = store.first(Bound::Unbounded, Bound::Unbounded)? {
                    let chunk = store.scan(
                        Bound::Included(key.as_slice()),
                        Bound::Unbounded,
                        RESTORE_CHUNK,
                    )?;
                    for (key, _) in chunk {
                        store.delete(&key)?;
                    }
                }
                store.take_changes();
            }
        }
        Ok(())
    }

    /// At a checkpoint: makes the index's writes durable enough to read back and drops
    /// the change record a store keeps for its changelog (the index has none).
    pub(crate) fn checkpoint(&mut self) -> Result<(), StreamsError> {
        if let TimeIndex::Stored(store) = self {
            store.flush()?;
            store.take_changes();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Drains every entry due by `through`, batch by batch.
    fn drain(index: &mut TimeIndex<(u32, i64)>, through: Timestamp) -> Vec<(i64, Vec<(u32, i64)>)> {
        let mut out = Vec::new();
        while let Some(batch) = index.pop_due(through).unwrap() {
            out.push(batch);
        }
        out
    }

    #[test]
    fn an_on_disk_time_index_pops_what_the_in_memory_one_pops() {
        let dir = tempfile::tempdir().unwrap();
        let mut memory = TimeIndex::new("idx", &StateBackend::InMemory).unwrap();
        let mut disk = TimeIndex::new("idx", &StateBackend::on_disk(dir.path())).unwrap();
        assert!(matches!(disk, TimeIndex::Stored(_)));
        // A fixed pseudo-random walk of inserts and removals, with many equal times and keys
        // whose encoded bytes do not sort like the keys (300 < 1000, but not as varints).
        let mut x: u64 = 7;
        let mut step = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x >> 33
        };
        for round in 0..20i64 {
            for _ in 0..50 {
                let t = round * 10 + (step() % 30) as i64 - 5;
                let e = ((step() % 4) as u32 * 350, (step() % 3) as i64 - 1);
                if step() % 4 == 0 {
                    memory.remove(t, e).unwrap();
                    disk.remove(t, e).unwrap();
                } else {
                    memory.insert(t, e).unwrap();
                    disk.insert(t, e).unwrap();
                }
            }
            assert_eq!(drain(&mut disk, round * 10), drain(&mut memory, round * 10));
            disk.checkpoint().unwrap();
        }
        assert_eq!(
            drain(&mut disk, Timestamp::MAX),
            drain(&mut memory, Timestamp::MAX)
        );
        disk.insert(5, (1, 1)).unwrap();
        disk.clear().unwrap();
        assert!(drain(&mut disk, Timestamp::MAX).is_empty());
    }
}

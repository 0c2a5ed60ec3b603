//! Fixed-window accumulators read and written through the store on every record: the
//! on-disk side of [`WindowAggregate`](super::WindowAggregate).
//!
//! [`StoredWindows`] keeps the accumulators of a tumbling or hopping aggregate in its store
//! (`window start, key` -> accumulator, the layout the in-memory form mirrors at
//! checkpoints), so that with a [`crate::DiskStore`] memory holds only the store's write
//! buffer and the list of open window starts. The window logic (assignment, grace, emit
//! modes, late records, replay skipping) is the aggregate's, shared with the in-memory form.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::ops::Bound;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::operator::{InitFn, ReplayGuard, TaskMeta, DATA_PREFIX, META_KEY};
use crate::state::backend::SNAPSHOT_CHUNK;
use crate::state::cell::StoreCell;
use crate::state::store::{
    decode, decode_time, encode, encode_into, encode_time, scan_in_chunks, Change, KeyValueStore,
};
use crate::time::Timestamp;

/// The first key of window `start`'s entries.
fn window_prefix(start: Timestamp) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(DATA_PREFIX);
    key.extend_from_slice(&encode_time(start));
    key
}

/// The store key of `key`'s accumulator in window `start` (shared with the in-memory form,
/// which writes the same layout at checkpoints).
pub(crate) fn window_key<K: Serialize>(start: Timestamp, key: &K) -> Result<Vec<u8>, StreamsError> {
    let mut buf = window_prefix(start);
    encode_into(key, &mut buf)?;
    Ok(buf)
}

/// Window accumulators read and written through the store on every record.
pub(crate) struct StoredWindows<K, A> {
    /// Starts of the windows that have entries in the store.
    open: BTreeSet<Timestamp>,
    /// Entries in the store (accumulators of open windows).
    entries: usize,
    pub(super) cell: StoreCell,
    _types: PhantomData<fn(K, A)>,
}

impl<K, A> StoredWindows<K, A>
where
    K: Ord + Serialize + DeserializeOwned,
    A: Serialize + DeserializeOwned,
{
    pub(crate) fn new(name: &str, store: Result<Box<dyn KeyValueStore>, StreamsError>) -> Self {
        StoredWindows {
            open: BTreeSet::new(),
            entries: 0,
            cell: StoreCell::new(name, store),
            _types: PhantomData,
        }
    }

    /// Kept out of line: the in-memory path it shares a match with stays small.
    #[inline(never)]
    pub(crate) fn fold<R>(
        &mut self,
        start: Timestamp,
        key: &K,
        init: &InitFn<A>,
        f: impl FnOnce(&mut A) -> R,
    ) -> Result<R, StreamsError> {
        let store = self.cell.get()?;
        let store_key = window_key(start, key)?;
        let mut acc = match store.get(&store_key)? {
            Some(bytes) => decode(&bytes)?,
            None => {
                self.entries += 1;
                self.open.insert(start);
                init()
            }
        };
        let result = f(&mut acc);
        store.put(store_key, encode(&acc)?)?;
        Ok(result)
    }

    pub(crate) fn first_start(&self) -> Option<Timestamp> {
        self.open.first().copied()
    }

    pub(crate) fn close(
        &mut self,
        start: Timestamp,
        values: bool,
        out: &mut Vec<(K, A)>,
    ) -> Result<(), StreamsError> {
        self.open.remove(&start);
        let store = self.cell.get()?;
        let from = window_prefix(start);
        let to = window_prefix(start.saturating_add(1));
        let bound = if start == Timestamp::MAX {
            Bound::Excluded(META_KEY)
        } else {
            Bound::Excluded(to.as_slice())
        };
        let entries = store.range(Bound::Included(&from), bound)?;
        let first = out.len();
        for (k, v) in entries {
            store.delete(&k)?;
            self.entries = self.entries.saturating_sub(1);
            if values {
                out.push((decode(&k[from.len()..])?, decode(&v)?));
            }
        }
        // Key order, as the in-memory form emits (the byte order of encoded keys is not the
        // keys' order).
        out[first..].sort_by(|a, b| a.0.cmp(&b.0));
        Ok(())
    }

    pub(crate) fn checkpoint(
        &mut self,
        guard: &mut ReplayGuard,
        meta: &TaskMeta,
    ) -> Result<Vec<Change>, StreamsError> {
        self.cell.checkpoint(guard, meta)
    }

    pub(crate) fn restore(
        &mut self,
        changes: Vec<Change>,
        guard: &mut ReplayGuard,
    ) -> Result<Option<TaskMeta>, StreamsError> {
        let store = self.cell.get()?;
        store.restore(changes)?;
        // The open windows, found one start at a time (never the whole state in memory):
        // the first entry at or after the previous start + 1.
        self.open.clear();
        let mut from = window_prefix(Timestamp::MIN);
        while let Some((key, _)) = store.first(Bound::Included(&from), Bound::Excluded(META_KEY))? {
            let (start, _) = decode_time(&key[1..])?;
            self.open.insert(start);
            if start == Timestamp::MAX {
                break;
            }
            from = window_prefix(start + 1);
        }
        let meta = guard.restore(store)?;
        // Every key but the metadata and the seal is an accumulator.
        let reserved = usize::from(meta.is_some()) + usize::from(guard.sealed().is_some());
        self.entries = store.len().saturating_sub(reserved);
        Ok(meta)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// Calls `f` with `(window start, key, accumulator)` for at most `cap` entries, newest
    /// window first (within a window, in the byte order of the encoded keys). Reads the
    /// store in chunks, so memory holds one chunk besides what `f` keeps.
    pub(crate) fn snapshot(
        &self,
        cap: usize,
        mut f: impl FnMut(Timestamp, K, A),
    ) -> Result<(), StreamsError> {
        let Some(store) = self.cell.peek() else {
            return Ok(());
        };
        let mut left = cap;
        // Newest first: the windows a query most likely asks about, and free to pick since
        // the open window starts are in memory and the store is ordered by start.
        for &start in self.open.iter().rev() {
            let prefix = window_prefix(start);
            let end = window_prefix(start.saturating_add(1));
            let upper = if start == Timestamp::MAX {
                Bound::Excluded(META_KEY)
            } else {
                Bound::Excluded(end.as_slice())
            };
            left -= scan_in_chunks(store, &prefix, upper, left, SNAPSHOT_CHUNK, |k, v| {
                let key = k
                    .get(prefix.len()..)
                    .ok_or_else(|| StreamsError::Decode("short window key".into()))?;
                f(start, decode(key)?, decode(v)?);
                Ok(())
            })?;
            if left == 0 {
                break;
            }
        }
        Ok(())
    }
}

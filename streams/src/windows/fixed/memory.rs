//! Fixed-window accumulators in typed memory, mirrored to the store at checkpoints: the
//! in-memory side of [`WindowAggregate`](super::WindowAggregate).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::operator::{InitFn, ReplayGuard, TaskMeta, DATA_PREFIX};
use crate::state::cell::StoreCell;
use crate::state::store::{decode, decode_time, encode, Change};
use crate::time::Timestamp;

use super::stored::window_key;

/// One accumulator plus what the changelog knows about it.
#[derive(Debug, Clone)]
pub(crate) struct Slot<A> {
    pub(super) acc: A,
    /// Changed since the last checkpoint.
    pub(super) dirty: bool,
    /// Present in the store (so eviction needs a tombstone).
    pub(super) persisted: bool,
}

impl<A> Slot<A> {
    pub(super) fn fresh(acc: A) -> Self {
        Self {
            acc,
            dirty: true,
            persisted: false,
        }
    }
}

/// Window accumulators in typed memory (open windows -> keys -> accumulators), mirrored to
/// the store at checkpoints: one hash lookup per record, no encoding.
pub(crate) struct MemoryWindows<K, A> {
    /// Open windows by start; every window of one definition has the same size, so start
    /// order is close order and closing pops from the front.
    pub(super) open: BTreeMap<Timestamp, HashMap<K, Slot<A>>>,
    /// Store keys of evicted windows that the changelog has seen; deleted at the next
    /// checkpoint so that processing never touches the store.
    pub(super) evicted: Vec<Vec<u8>>,
    pub(super) cell: StoreCell,
}

impl<K, A> MemoryWindows<K, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned,
    A: Serialize + DeserializeOwned,
{
    #[inline(always)]
    pub(super) fn fold<R>(
        &mut self,
        start: Timestamp,
        key: &K,
        init: &InitFn<A>,
        f: impl FnOnce(&mut A) -> R,
    ) -> R {
        let per_key = self.open.entry(start).or_default();
        // Look up before inserting so the common path (window exists) clones no key.
        let slot = match per_key.get_mut(key) {
            Some(slot) => slot,
            None => per_key
                .entry(key.clone())
                .or_insert_with(|| Slot::fresh(init())),
        };
        slot.dirty = true;
        f(&mut slot.acc)
    }

    pub(super) fn close(&mut self, start: Timestamp, values: bool, out: &mut Vec<(K, A)>) {
        let Some(per_key) = self.open.remove(&start) else {
            return;
        };
        let first = out.len();
        for (key, slot) in per_key {
            if slot.persisted {
                match window_key(start, &key) {
                    Ok(k) => self.evicted.push(k),
                    Err(error) => tracing::warn!(%error, "cannot encode evicted window key"),
                }
            }
            if values {
                out.push((key, slot.acc));
            }
        }
        // Hash order differs between runs and after a restore; sorting keeps the output
        // deterministic, which tests and downstream consumers rely on.
        out[first..].sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }

    pub(super) fn checkpoint(
        &mut self,
        guard: &mut ReplayGuard,
        meta: &TaskMeta,
    ) -> Result<Vec<Change>, StreamsError> {
        let store = self.cell.get()?;
        for key in self.evicted.drain(..) {
            store.delete(&key)?;
        }
        for (&start, per_key) in &mut self.open {
            for (key, slot) in per_key.iter_mut().filter(|(_, s)| s.dirty) {
                store.put(window_key(start, key)?, encode(&slot.acc)?)?;
                slot.dirty = false;
                slot.persisted = true;
            }
        }
        self.cell.checkpoint(guard, meta)
    }

    pub(super) fn restore(
        &mut self,
        changes: Vec<Change>,
        guard: &mut ReplayGuard,
    ) -> Result<Option<TaskMeta>, StreamsError> {
        let store = self.cell.get()?;
        store.restore(changes)?;
        self.open.clear();
        self.evicted.clear();
        for (k, v) in store.prefix(&[DATA_PREFIX])? {
            let (start, rest) = decode_time(&k[1..])?;
            let key: K = decode(rest)?;
            let acc: A = decode(&v)?;
            self.open.entry(start).or_default().insert(
                key,
                Slot {
                    acc,
                    dirty: false,
                    persisted: true,
                },
            );
        }
        guard.restore(store)
    }
}

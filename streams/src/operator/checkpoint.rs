//! What a stateful step writes into its store besides its state: the task's checkpoint
//! metadata ([`TaskMeta`]) and the step's seal, with the [`ReplayGuard`] that reads them back
//! to skip replayed input and keep closed state closed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::StreamsError;
use crate::record::Record;
use crate::state::store::{decode, encode, KeyValueStore};
use crate::time::{PartitionId, PartitionTime, Timestamp};

/// First byte of every data key an operator writes.
pub(crate) const DATA_PREFIX: u8 = 0;
/// The key of the task metadata entry; `1` sorts after every data key, so the metadata is the
/// last entry of each (key-ordered) changelog batch.
pub(crate) const META_KEY: &[u8] = &[1];
/// The key of a step's seal ([`ReplayGuard::seal`]). Empty, so it sorts before every data key
/// and the metadata entry: it ships in the commit it belongs to (a commit's batch ends with
/// the metadata) and no scan of the data keys (prefix [`DATA_PREFIX`]) meets it.
pub(crate) const SEAL_KEY: &[u8] = &[];

/// What a pipeline knows about its input at a commit: the next offset to read per partition
/// and the event-time progress. Stored in every state store's changelog.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMeta {
    /// Next offset to read per input partition (last processed + 1).
    pub offsets: BTreeMap<PartitionId, i64>,
    /// Event-time progress per partition.
    pub partitions: Vec<PartitionTime>,
    /// The task watermark.
    pub watermark: Timestamp,
}

/// Skips input records that restored state already reflects, and keeps the step's seal.
///
/// The threshold is the offsets of the last checkpoint, not of the last record: a `flat_map`
/// turns one input record into several with the same offset, and all of them must pass.
///
/// The seal is the furthest point (in the step's own terms: a window start, a session's
/// reach, ...) up to which the step closed and emitted state. The watermark normally implies
/// it; after an end of input sets the watermark back it does not, and the seal is what keeps
/// closed state closed. It is checkpointed with the metadata and read back by a restore.
#[derive(Debug, Default, Clone)]
pub(crate) struct ReplayGuard {
    applied: BTreeMap<PartitionId, i64>,
    sealed: Option<Timestamp>,
    /// The seal changed since the last checkpoint.
    seal_dirty: bool,
}

impl ReplayGuard {
    /// Whether `record` was already applied before the checkpoint this state came from.
    pub(crate) fn is_replay<K, V>(&self, record: &Record<K, V>) -> bool {
        record.offset >= 0
            && self
                .applied
                .get(&record.partition)
                .is_some_and(|&next| record.offset < next)
    }

    /// Records that state up to `through` was closed (the seal only moves forward).
    pub(crate) fn seal(&mut self, through: Timestamp) {
        if self.sealed.is_none_or(|s| s < through) {
            self.sealed = Some(through);
            self.seal_dirty = true;
        }
    }

    /// Whether `t` is at or before the seal: state there was closed and must stay closed.
    pub(crate) fn is_sealed(&self, t: Timestamp) -> bool {
        self.sealed.is_some_and(|s| t <= s)
    }

    /// The seal, if the step closed anything.
    pub(crate) fn sealed(&self) -> Option<Timestamp> {
        self.sealed
    }

    /// Writes the seal (when it moved) and `meta` into `store` and remembers the offsets.
    pub(crate) fn checkpoint(
        &mut self,
        store: &mut dyn KeyValueStore,
        meta: &TaskMeta,
    ) -> Result<(), StreamsError> {
        if self.seal_dirty {
            if let Some(sealed) = self.sealed {
                store.put(SEAL_KEY.to_vec(), encode(&sealed)?)?;
            }
        }
        store.put(META_KEY.to_vec(), encode(meta)?)?;
        // Every operator takes its changelog batch right after this: an on-disk store that
        // cannot write must fail the commit here, before offsets are committed.
        store.flush()?;
        self.seal_dirty = false;
        self.applied.clone_from(&meta.offsets);
        Ok(())
    }

    /// Reads the metadata and the seal back from a restored store.
    pub(crate) fn restore(
        &mut self,
        store: &dyn KeyValueStore,
    ) -> Result<Option<TaskMeta>, StreamsError> {
        let meta = store
            .get(META_KEY)?
            .map(|bytes| decode::<TaskMeta>(&bytes))
            .transpose()?;
        self.applied = meta.as_ref().map(|m| m.offsets.clone()).unwrap_or_default();
        self.sealed = store
            .get(SEAL_KEY)?
            .map(|bytes| decode::<Timestamp>(&bytes))
            .transpose()?;
        self.seal_dirty = false;
        Ok(meta)
    }
}

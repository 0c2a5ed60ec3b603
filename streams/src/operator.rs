//! The operator model shared by every stateful step, and the task checkpoint metadata.
//!
//! An operator is driven in the push model: the pipeline hands it one record at a time
//! ([`Operator::process`]) and tells it when the watermark moved ([`Operator::on_watermark`]).
//! Between commits its state lives in a typed in-memory form (a hash map is what makes the
//! per-record path fast); [`Operator::checkpoint`] writes what changed into its
//! [`KeyValueStore`] and returns the changelog batch, and
//! [`Operator::restore`] rebuilds the typed state from such batches.
//!
//! Every checkpoint batch also carries the task's [`TaskMeta`] (input offsets and event-time
//! progress) under a reserved key that sorts after all data keys. A store restored from its
//! changelog therefore knows exactly which input records its state already reflects, and the
//! operator skips those when the runtime replays them: at-least-once input, no double counts.
//!
//! A step that closes state (windows, sessions, buffered join records) also keeps a *seal*:
//! how far its closed state reaches, one timestamp, written under [`SEAL_KEY`] at the next
//! checkpoint whenever it moved. The watermark implies it, except after an end of input
//! ([`crate::Pipeline::end_of_input`]) sets the watermark back: the seal then keeps a record
//! that would reopen closed state late rather than emitted twice, across restores too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::StateBackend;
use crate::error::StreamsError;
use crate::record::Record;
use crate::store::{decode, encode, Change, KeyValueStore};
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

/// Counters for one pipeline (task), exposed for the dashboard.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Records pushed into the pipeline.
    pub records_in: u64,
    /// Records that reached the pipeline's output.
    pub records_out: u64,
    /// Records refused because every window (or dedupe horizon) they needed had closed.
    pub late_records: u64,
    /// Replayed records skipped because restored state already reflects them.
    pub replays_skipped: u64,
    /// Records dropped as duplicates by `dedupe`.
    pub duplicates_dropped: u64,
    /// Windows closed and evicted.
    pub windows_closed: u64,
}

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

/// What an operator sees of the pipeline while processing.
#[derive(Debug)]
pub struct Context<'a> {
    /// The current task watermark.
    pub watermark: Timestamp,
    /// The pipeline's counters.
    pub metrics: &'a mut Metrics,
}

/// A stateful step: consumes records of type `Record<K, V>`, produces `Record<OutKey, OutValue>`.
pub trait Operator<K, V>: Send {
    /// Output key type.
    type OutKey;
    /// Output value type.
    type OutValue;

    /// The operator's name, which is also its state store's (and changelog's) name.
    fn name(&self) -> &str;

    /// Processes one record, pushing results to `out`. Returns the record when it was late
    /// for at least one of its windows, so the caller can route it to a side output.
    fn process(
        &mut self,
        record: Record<K, V>,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<Self::OutKey, Self::OutValue>>,
    ) -> Option<Record<K, V>>;

    /// The watermark moved to `cx.watermark`: close and emit whatever it closes.
    fn on_watermark(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<Self::OutKey, Self::OutValue>>,
    );

    /// Writes changed state and `meta` to the store; returns the changelog batch.
    fn checkpoint(&mut self, meta: &TaskMeta) -> Result<Vec<Change>, StreamsError>;

    /// Replays a changelog batch and rebuilds the typed state; returns the task metadata it
    /// held, if any.
    fn restore(&mut self, changes: Vec<Change>) -> Result<Option<TaskMeta>, StreamsError>;

    /// Number of live state entries (windows per key, remembered ids).
    fn state_len(&self) -> usize;

    /// Called once by [`crate::Stream::operator`], before any record, with the backend of
    /// the stream the operator joins (see [`crate::backend`]). An operator that can keep its
    /// state on disk adopts it unless it was built with a backend of its own (as the ready-made
    /// operators' `with_backend`). The default ignores it: the operator keeps its state as it
    /// was built.
    fn adopt_backend(&mut self, backend: &StateBackend) {
        let _ = backend;
    }

    /// The live state as rows (one JSON object per entry, for example a window's key,
    /// bounds and value), for queries while the job runs. Operators whose state is not
    /// meaningful to query keep the default: none.
    fn snapshot(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
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

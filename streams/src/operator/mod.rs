//! The operator model shared by every stateful step, the functions its aggregations are
//! built from ([`InitFn`], [`AddFn`], [`MergeFn`]), and the task checkpoint metadata.
//!
//! An operator is driven in the push model: the pipeline hands it one record at a time
//! ([`Operator::process`]) and tells it when the watermark moved ([`Operator::on_watermark`]).
//! Between commits its state lives in a typed in-memory form (a hash map is what makes the
//! per-record path fast); [`Operator::checkpoint`] writes what changed into its
//! [`KeyValueStore`](crate::KeyValueStore) and returns the changelog batch, and
//! [`Operator::restore`] rebuilds the typed state from such batches.
//!
//! Every checkpoint batch also carries the task's [`TaskMeta`] (input offsets and event-time
//! progress) under a reserved key that sorts after all data keys. A store restored from its
//! changelog therefore knows exactly which input records its state already reflects, and the
//! operator skips those when the runtime replays them: at-least-once input, no double counts.
//!
//! A step that closes state (windows, sessions, buffered join records) also keeps a *seal*:
//! how far its closed state reaches, one timestamp, written under a reserved key at the next
//! checkpoint whenever it moved. The watermark implies it, except after an end of input
//! ([`crate::Pipeline::end_of_input`]) sets the watermark back: the seal then keeps a record
//! that would reopen closed state late rather than emitted twice, across restores too.
//!
//! The built-in stateful steps (windows, sessions, sliding windows, joins, dedupe, the
//! anomaly detector, "also viewed") share one implementation of this trait: each states what
//! it does with a record and with the watermark, and the opening checks (failed store,
//! replay, late, sealed), failure handling, checkpoint, restore and snapshot are written
//! once, in `step`. An operator of your own implements [`Operator`] directly.

mod checkpoint;
pub(crate) mod step;

use crate::error::StreamsError;
use crate::record::Record;
use crate::state::backend::StateBackend;
use crate::state::store::Change;
use crate::time::Timestamp;

pub use checkpoint::TaskMeta;
pub(crate) use checkpoint::{ReplayGuard, DATA_PREFIX, META_KEY};
pub(crate) use step::{stateful_operator, StatefulStep, StepParts, StepState};

/// Creates an empty accumulator.
pub type InitFn<A> = Box<dyn Fn() -> A + Send>;
/// Folds a value into an accumulator.
pub type AddFn<V, A> = Box<dyn Fn(&mut A, &V) + Send>;
/// Folds the second accumulator into the first (session merges).
pub type MergeFn<A> = Box<dyn Fn(&mut A, A) + Send>;

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
    /// the stream the operator joins (see [`crate::state::backend`]). An operator that can keep its
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

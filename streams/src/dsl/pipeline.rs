//! [`Pipeline`]: a built job for one task, and what its commits and snapshots return.

use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::error::StreamsError;
use crate::operator::{Metrics, TaskMeta};
use crate::record::{LateRecord, Record};
use crate::state::backend::StateBackend;
use crate::state::store::Change;
use crate::table::TableUpdates;
use crate::time::{PartitionId, Timestamp, WatermarkTracker};

use super::node::{Cx, Node, Sink};
use super::stream::Stream;

/// The changelog batch of one state store at a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreChanges {
    /// Store name (the changelog topic is derived from it and the application id).
    pub store: String,
    /// Changes in key order; the task metadata entry comes last.
    pub changes: Vec<Change>,
}

/// Everything a commit must make durable, in this order: the store changes (to their
/// changelog topics), then the input offsets (to the consumer group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Next offset to read per input partition.
    pub offsets: BTreeMap<PartitionId, i64>,
    /// One batch per state store (stateless pipelines have none).
    pub stores: Vec<StoreChanges>,
}

/// The live state of one store as rows, for queries while the job runs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSnapshot {
    /// Store name.
    pub store: String,
    /// One JSON object per entry.
    pub rows: Vec<serde_json::Value>,
}

/// A built job for one task: push input records in, take results out.
///
/// `K0, V0` is the input type, `K, V` the output type; all four are inferred from the closure
/// given to [`Pipeline::new`].
pub struct Pipeline<K0, V0, K, V> {
    root: Box<dyn Node<K0, V0>>,
    tracker: WatermarkTracker,
    /// Latest processing time given to [`Pipeline::advance`].
    now: Timestamp,
    metrics: Metrics,
    late: Vec<LateRecord>,
    output: Vec<Record<K, V>>,
    offsets: BTreeMap<PartitionId, i64>,
}

impl<K0, V0, K, V> Pipeline<K0, V0, K, V>
where
    K0: Send + 'static,
    V0: Send + 'static,
    K: Send + 'static,
    V: Send + 'static,
{
    /// Builds a pipeline from a function of its source stream. Event time is taken as in
    /// order (no out-of-orderness) and partitions never go idle until configured otherwise.
    /// State is kept in memory unless a step says otherwise.
    pub fn new(build: impl FnOnce(Stream<K0, V0>) -> Stream<K, V>) -> Self {
        Self::with_backend(StateBackend::InMemory, build)
    }

    /// Like [`Pipeline::new`], with every stateful step keeping its state where `backend`
    /// says unless the step overrides it (Kafka Streams' `state.dir`: see
    /// [`crate::state::backend`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use millrace_streams::{EmitMode, Pipeline, Record, StateBackend, Stream, Windows};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let mut p = Pipeline::with_backend(StateBackend::on_disk(dir.path()), |s: Stream<String, u32>| {
    ///     s.session_window(Windows::session(Duration::from_secs(30)).no_grace())
    ///         .emit(EmitMode::Final)
    ///         .count()
    /// });
    /// p.push(Record::new("ann".to_string(), 1, 1_000));
    /// p.push(Record::new("ann".to_string(), 1, 20_000));
    /// p.finish();
    /// assert_eq!(p.take_output()[0].value, 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_backend(
        backend: StateBackend,
        build: impl FnOnce(Stream<K0, V0>) -> Stream<K, V>,
    ) -> Self {
        let source: Stream<K0, V0> = Stream {
            wire: Box::new(|head: Box<dyn Node<K0, V0>>| Box::new(head) as Box<dyn Any + Send>),
            stateful: 0,
            backend,
        };
        let out = build(source);
        let head = (out.wire)(Box::new(Sink::<K, V>(PhantomData)));
        let root = head
            .downcast::<Box<dyn Node<K0, V0>>>()
            .map(|b| *b)
            // The source closure above is the only place the head is boxed, with exactly
            // this type, so the downcast cannot fail.
            .unwrap_or_else(|_| unreachable!("stream source is always Box<dyn Node<K0, V0>>"));
        Self {
            root,
            tracker: WatermarkTracker::new(Duration::ZERO, None),
            now: 0,
            metrics: Metrics::default(),
            late: Vec::new(),
            output: Vec::new(),
            offsets: BTreeMap::new(),
        }
    }

    /// Sets the bounded out-of-orderness of event time (and the idle timeout, if any).
    /// Call before pushing records: it resets event-time progress.
    #[must_use]
    pub fn event_time(
        mut self,
        max_out_of_orderness: Duration,
        idle_timeout: Option<Duration>,
    ) -> Self {
        self.tracker = WatermarkTracker::new(max_out_of_orderness, idle_timeout);
        self
    }

    /// Processes one input record.
    pub fn push(&mut self, record: Record<K0, V0>) {
        self.metrics.records_in += 1;
        if record.offset >= 0 {
            let next = self.offsets.entry(record.partition).or_insert(0);
            *next = (*next).max(record.offset + 1);
        }
        let before = self.tracker.watermark();
        let watermark = self
            .tracker
            .observe(record.partition, record.timestamp, self.now);
        let mut cx = Cx {
            watermark,
            metrics: &mut self.metrics,
            late: &mut self.late,
            output: &mut self.output,
        };
        self.root.process(record, &mut cx);
        if watermark != before {
            self.root.watermark(&mut cx);
        }
    }

    /// Declares an input partition (on assignment), so that it holds the watermark back until
    /// it delivers records or goes idle.
    pub fn assign(&mut self, partition: PartitionId) {
        self.tracker.assign(partition, self.now);
        self.propagate_watermark();
    }

    /// Lets processing time (wall-clock ms) pass: idle partitions stop holding the watermark,
    /// which may close windows.
    pub fn advance(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        self.tracker.advance(self.now);
        self.propagate_watermark();
    }

    /// Ends the input: closes every window and emits what is pending (bounded input, tests).
    pub fn finish(&mut self) {
        self.tracker.finish();
        self.propagate_watermark();
    }

    /// Ends the input but keeps the pipeline usable: closes every open window and emits
    /// what is pending (as [`Pipeline::finish`]), then sets the watermark back to the
    /// furthest event time seen, so that records arriving afterwards are processed
    /// normally rather than all being late. Windows and sessions closed here stay closed: a
    /// later record that falls in one is late (counted and reported), it does not open the
    /// window again. Used by the runtime's [`crate::runtime::EndOfInput`].
    pub fn end_of_input(&mut self) {
        let resume = self
            .tracker
            .max_event_time()
            .map_or(self.tracker.watermark(), |t| {
                t.max(self.tracker.watermark())
            });
        self.tracker.finish();
        self.propagate_watermark();
        self.tracker.rewind_after_finish(resume);
    }

    fn propagate_watermark(&mut self) {
        let mut cx = Cx {
            watermark: self.tracker.watermark(),
            metrics: &mut self.metrics,
            late: &mut self.late,
            output: &mut self.output,
        };
        self.root.watermark(&mut cx);
    }

    /// Takes the output records produced so far.
    pub fn take_output(&mut self) -> Vec<Record<K, V>> {
        std::mem::take(&mut self.output)
    }

    /// Takes the late records reported so far (the late side output).
    pub fn take_late(&mut self) -> Vec<LateRecord> {
        std::mem::take(&mut self.late)
    }

    /// The pipeline's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The current watermark.
    pub fn watermark(&self) -> Timestamp {
        self.tracker.watermark()
    }

    /// Next offset to read per input partition.
    pub fn offsets(&self) -> &BTreeMap<PartitionId, i64> {
        &self.offsets
    }

    /// Number of live state entries across all stateful steps.
    pub fn state_len(&self) -> usize {
        self.root.state_len()
    }

    /// The global tables the pipeline joins with.
    pub(crate) fn tables(&self) -> Vec<Arc<dyn TableUpdates>> {
        let mut out = Vec::new();
        self.root.tables(&mut out);
        out
    }

    /// The live state of every store as rows (for queries while the job runs).
    pub fn snapshot(&self) -> Vec<StoreSnapshot> {
        let mut out = Vec::new();
        self.root.snapshot(&mut out);
        out
    }

    /// Flushes state into the stores and returns what the commit must make durable.
    pub fn commit(&mut self) -> Result<Checkpoint, StreamsError> {
        let meta = TaskMeta {
            offsets: self.offsets.clone(),
            partitions: self.tracker.partitions().to_vec(),
            watermark: self.tracker.watermark(),
        };
        let mut stores = Vec::new();
        self.root.checkpoint(&meta, &mut stores)?;
        Ok(Checkpoint {
            offsets: self.offsets.clone(),
            stores,
        })
    }

    /// Restores state from changelog batches (all batches of each store since it was created,
    /// in changelog order) before any record is pushed. Returns the offsets to resume reading
    /// from; records before a store's own checkpoint are skipped by that store if replayed.
    pub fn restore(
        &mut self,
        batches: impl IntoIterator<Item = StoreChanges>,
    ) -> Result<BTreeMap<PartitionId, i64>, StreamsError> {
        let mut by_store: BTreeMap<String, Vec<Change>> = BTreeMap::new();
        for batch in batches {
            by_store
                .entry(batch.store)
                .or_default()
                .extend(batch.changes);
        }
        let mut metas = Vec::new();
        self.root.restore(&mut by_store, &mut metas)?;
        if let Some(unknown) = by_store.into_keys().next() {
            return Err(StreamsError::UnknownStore(unknown));
        }
        // Stores restored from different commits disagree; resume from the earliest position
        // (each store skips what it already has) and the earliest event time (never closing a
        // window some store still needs). A partition missing from any store is left to the
        // runtime's committed consumer offset.
        let mut offsets: BTreeMap<PartitionId, i64> = BTreeMap::new();
        if let Some(first) = metas.first() {
            for (&p, &o) in &first.offsets {
                let all: Option<Vec<i64>> =
                    metas.iter().map(|m| m.offsets.get(&p).copied()).collect();
                if let Some(min) = all.and_then(|v| v.into_iter().min()) {
                    offsets.insert(p, min.min(o));
                }
            }
        }
        if let Some(earliest) = metas.iter().min_by_key(|m| m.watermark) {
            self.tracker
                .restore(&earliest.partitions, earliest.watermark, self.now);
        }
        self.offsets.clone_from(&offsets);
        self.propagate_watermark();
        Ok(offsets)
    }
}

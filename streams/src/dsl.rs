//! The typed job DSL: build a [`Stream`] of steps, get a [`Pipeline`] to push records into.
//!
//! ```
//! use std::time::Duration;
//! use millrace_streams::{EmitMode, Pipeline, Record, Stream, Windows};
//!
//! let mut pipeline = Pipeline::new(|views: Stream<String, u32>| {
//!     views
//!         .filter(|_user, &ms| ms > 0)
//!         .window(Windows::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(5)))
//!         .emit(EmitMode::Final)
//!         .count()
//! });
//! pipeline.push(Record::new("ann".to_string(), 120, 1_000));
//! pipeline.push(Record::new("ann".to_string(), 80, 2_000));
//! pipeline.finish();
//! let out = pipeline.take_output();
//! assert_eq!(out[0].value, 2);
//! assert_eq!((out[0].key.window_start, out[0].key.window_end), (0, 60_000));
//! ```
//!
//! How it is wired: a `Stream<K, V>` is a recipe that, given the step that consumes its
//! records, builds the chain back to the source. Steps are boxed nodes linked by plain calls,
//! so a record goes through the whole chain with no queue and no allocation, and the pipeline
//! is `Send` (the runtime can move a task to another thread). The source type is erased while
//! building and recovered once, when [`Pipeline::new`] finishes the chain.

use std::any::Any;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aggregate::{EmitMode, SessionAggregate, WindowAggregate};
use crate::backend::StateBackend;
use crate::dedupe::Dedupe;
use crate::error::StreamsError;
use crate::join::{JoinKind, JoinWindows, Side, WindowJoin};
use crate::operator::{Context, Metrics, Operator, TaskMeta};
use crate::record::{LateRecord, Record, Windowed};
use crate::sliding::SlidingAggregate;
use crate::store::Change;
use crate::table::{GlobalTable, TableUpdates};
use crate::time::{millis, PartitionId, Timestamp, WatermarkTracker};
use crate::window::{SessionWindows, SlidingWindows, Windows};

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

/// What flows beside the records through a chain.
struct Cx<'a> {
    watermark: Timestamp,
    metrics: &'a mut Metrics,
    late: &'a mut Vec<LateRecord>,
    /// The pipeline's output vector, type-erased because middle steps do not know the final
    /// types; the sink recovers it with one cheap type-id check.
    output: &'a mut dyn Any,
}

/// One step of the chain, owning everything downstream of it.
trait Node<K, V>: Send {
    fn process(&mut self, record: Record<K, V>, cx: &mut Cx<'_>);
    fn watermark(&mut self, cx: &mut Cx<'_>);
    fn checkpoint(
        &mut self,
        meta: &TaskMeta,
        out: &mut Vec<StoreChanges>,
    ) -> Result<(), StreamsError>;
    fn restore(
        &mut self,
        changes: &mut BTreeMap<String, Vec<Change>>,
        metas: &mut Vec<TaskMeta>,
    ) -> Result<(), StreamsError>;
    fn state_len(&self) -> usize;
    /// Appends each stateful step's snapshot (see [`Operator::snapshot`]) by store name.
    fn snapshot(&self, out: &mut Vec<StoreSnapshot>);
    /// Appends the global tables the chain joins with (the runtime loads them).
    fn tables(&self, out: &mut Vec<Arc<dyn TableUpdates>>);
}

/// The live state of one store as rows, for queries while the job runs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSnapshot {
    /// Store name.
    pub store: String,
    /// One JSON object per entry.
    pub rows: Vec<serde_json::Value>,
}

/// A stateless step producing at most one record per input (map, filter, key_by, inspect).
struct Step<F, K2, V2> {
    f: F,
    down: Box<dyn Node<K2, V2>>,
}

impl<K, V, K2, V2, F> Node<K, V> for Step<F, K2, V2>
where
    F: FnMut(Record<K, V>) -> Option<Record<K2, V2>> + Send,
    K2: Send,
    V2: Send,
{
    fn process(&mut self, record: Record<K, V>, cx: &mut Cx<'_>) {
        if let Some(r) = (self.f)(record) {
            self.down.process(r, cx);
        }
    }
    fn watermark(&mut self, cx: &mut Cx<'_>) {
        self.down.watermark(cx);
    }
    fn checkpoint(&mut self, m: &TaskMeta, o: &mut Vec<StoreChanges>) -> Result<(), StreamsError> {
        self.down.checkpoint(m, o)
    }
    fn restore(
        &mut self,
        c: &mut BTreeMap<String, Vec<Change>>,
        m: &mut Vec<TaskMeta>,
    ) -> Result<(), StreamsError> {
        self.down.restore(c, m)
    }
    fn state_len(&self) -> usize {
        self.down.state_len()
    }
    fn snapshot(&self, out: &mut Vec<StoreSnapshot>) {
        self.down.snapshot(out);
    }
    fn tables(&self, out: &mut Vec<Arc<dyn TableUpdates>>) {
        self.down.tables(out);
    }
}

/// A stateless step producing any number of records per input.
struct FlatStep<F, K2, V2> {
    f: F,
    down: Box<dyn Node<K2, V2>>,
}

impl<K, V, K2, V2, F, I> Node<K, V> for FlatStep<F, K2, V2>
where
    F: FnMut(K, V) -> I + Send,
    I: IntoIterator<Item = (K2, V2)>,
    K2: Send,
    V2: Send,
{
    fn process(&mut self, record: Record<K, V>, cx: &mut Cx<'_>) {
        let (timestamp, partition, offset) = (record.timestamp, record.partition, record.offset);
        for (key, value) in (self.f)(record.key, record.value) {
            let r = Record {
                key,
                value,
                timestamp,
                partition,
                offset,
            };
            self.down.process(r, cx);
        }
    }
    fn watermark(&mut self, cx: &mut Cx<'_>) {
        self.down.watermark(cx);
    }
    fn checkpoint(&mut self, m: &TaskMeta, o: &mut Vec<StoreChanges>) -> Result<(), StreamsError> {
        self.down.checkpoint(m, o)
    }
    fn restore(
        &mut self,
        c: &mut BTreeMap<String, Vec<Change>>,
        m: &mut Vec<TaskMeta>,
    ) -> Result<(), StreamsError> {
        self.down.restore(c, m)
    }
    fn state_len(&self) -> usize {
        self.down.state_len()
    }
    fn snapshot(&self, out: &mut Vec<StoreSnapshot>) {
        self.down.snapshot(out);
    }
    fn tables(&self, out: &mut Vec<Arc<dyn TableUpdates>>) {
        self.down.tables(out);
    }
}

/// Called with each record a stateful step refused as late.
pub type LateFn<K, V> = Box<dyn FnMut(&Record<K, V>) + Send>;

/// A stateful step: an [`Operator`] plus its output buffer and late-record routing.
struct OpNode<O, K, V, K2, V2> {
    op: O,
    buf: Vec<Record<K2, V2>>,
    on_late: Option<LateFn<K, V>>,
    down: Box<dyn Node<K2, V2>>,
}

impl<O, K, V, K2, V2> OpNode<O, K, V, K2, V2>
where
    K2: Send,
    V2: Send,
{
    fn forward(&mut self, cx: &mut Cx<'_>) {
        for r in self.buf.drain(..) {
            self.down.process(r, cx);
        }
    }
}

impl<O, K, V, K2, V2> Node<K, V> for OpNode<O, K, V, K2, V2>
where
    O: Operator<K, V, OutKey = K2, OutValue = V2>,
    K: Send,
    V: Send,
    K2: Send,
    V2: Send,
{
    fn process(&mut self, record: Record<K, V>, cx: &mut Cx<'_>) {
        let mut ocx = Context {
            watermark: cx.watermark,
            metrics: cx.metrics,
        };
        if let Some(late) = self.op.process(record, &mut ocx, &mut self.buf) {
            tracing::debug!(
                operator = self.op.name(),
                timestamp = late.timestamp,
                watermark = cx.watermark,
                "late record"
            );
            cx.late.push(LateRecord {
                operator: self.op.name().to_string(),
                timestamp: late.timestamp,
                watermark: cx.watermark,
                partition: late.partition,
                offset: late.offset,
            });
            if let Some(f) = self.on_late.as_mut() {
                f(&late);
            }
        }
        self.forward(cx);
    }

    fn watermark(&mut self, cx: &mut Cx<'_>) {
        let mut ocx = Context {
            watermark: cx.watermark,
            metrics: cx.metrics,
        };
        self.op.on_watermark(&mut ocx, &mut self.buf);
        self.forward(cx);
        self.down.watermark(cx);
    }

    fn checkpoint(
        &mut self,
        meta: &TaskMeta,
        out: &mut Vec<StoreChanges>,
    ) -> Result<(), StreamsError> {
        let changes = self.op.checkpoint(meta)?;
        out.push(StoreChanges {
            store: self.op.name().to_string(),
            changes,
        });
        self.down.checkpoint(meta, out)
    }

    fn restore(
        &mut self,
        changes: &mut BTreeMap<String, Vec<Change>>,
        metas: &mut Vec<TaskMeta>,
    ) -> Result<(), StreamsError> {
        let mine = changes.remove(self.op.name()).unwrap_or_default();
        if let Some(meta) = self.op.restore(mine)? {
            metas.push(meta);
        }
        self.down.restore(changes, metas)
    }

    fn state_len(&self) -> usize {
        self.op.state_len() + self.down.state_len()
    }
    fn snapshot(&self, out: &mut Vec<StoreSnapshot>) {
        out.push(StoreSnapshot {
            store: self.op.name().to_string(),
            rows: self.op.snapshot(),
        });
        self.down.snapshot(out);
    }
    fn tables(&self, out: &mut Vec<Arc<dyn TableUpdates>>) {
        self.down.tables(out);
    }
}

/// A stream-table join: looks each record up in a global table.
struct TableJoin<TK, TV, F, G, K, V2> {
    table: GlobalTable<TK, TV>,
    key: F,
    /// Builds the output from the value and the table value; `None` drops the record (an
    /// inner join's miss).
    join: G,
    down: Box<dyn Node<K, V2>>,
}

impl<K, V, V2, TK, TV, F, G> Node<K, V> for TableJoin<TK, TV, F, G, K, V2>
where
    TK: Hash + Eq + Send + Sync + 'static,
    TV: Send + Sync + 'static,
    F: FnMut(&K, &V) -> TK + Send,
    G: FnMut(V, Option<&TV>) -> Option<V2> + Send,
    K: Send,
    V2: Send,
{
    fn process(&mut self, record: Record<K, V>, cx: &mut Cx<'_>) {
        let lookup = (self.key)(&record.key, &record.value);
        let Record {
            key,
            value,
            timestamp,
            partition,
            offset,
        } = record;
        // The read lock is released before the record goes on: a later step may join with
        // the same table, and the loader may be waiting to write.
        let join = &mut self.join;
        let joined = self.table.with(&lookup, |found| join(value, found));
        if let Some(value) = joined {
            self.down.process(
                Record {
                    key,
                    value,
                    timestamp,
                    partition,
                    offset,
                },
                cx,
            );
        }
    }
    fn watermark(&mut self, cx: &mut Cx<'_>) {
        self.down.watermark(cx);
    }
    fn checkpoint(&mut self, m: &TaskMeta, o: &mut Vec<StoreChanges>) -> Result<(), StreamsError> {
        self.down.checkpoint(m, o)
    }
    fn restore(
        &mut self,
        c: &mut BTreeMap<String, Vec<Change>>,
        m: &mut Vec<TaskMeta>,
    ) -> Result<(), StreamsError> {
        self.down.restore(c, m)
    }
    fn state_len(&self) -> usize {
        self.down.state_len()
    }
    fn snapshot(&self, out: &mut Vec<StoreSnapshot>) {
        self.down.snapshot(out);
    }
    fn tables(&self, out: &mut Vec<Arc<dyn TableUpdates>>) {
        let table: Arc<dyn TableUpdates> = Arc::new(self.table.clone());
        if !out.iter().any(|t| t.id() == table.id()) {
            out.push(table);
        }
        self.down.tables(out);
    }
}

/// The end of the chain: appends to the pipeline's output.
struct Sink<K, V>(PhantomData<fn(K, V)>);

impl<K: Send + 'static, V: Send + 'static> Node<K, V> for Sink<K, V> {
    fn process(&mut self, record: Record<K, V>, cx: &mut Cx<'_>) {
        cx.metrics.records_out += 1;
        if let Some(out) = cx.output.downcast_mut::<Vec<Record<K, V>>>() {
            out.push(record);
        }
    }
    fn watermark(&mut self, _cx: &mut Cx<'_>) {}
    fn checkpoint(&mut self, _: &TaskMeta, _: &mut Vec<StoreChanges>) -> Result<(), StreamsError> {
        Ok(())
    }
    fn restore(
        &mut self,
        _: &mut BTreeMap<String, Vec<Change>>,
        _: &mut Vec<TaskMeta>,
    ) -> Result<(), StreamsError> {
        Ok(())
    }
    fn state_len(&self) -> usize {
        0
    }
    fn snapshot(&self, _out: &mut Vec<StoreSnapshot>) {}
    fn tables(&self, _out: &mut Vec<Arc<dyn TableUpdates>>) {}
}

type Wire<K, V> = Box<dyn FnOnce(Box<dyn Node<K, V>>) -> Box<dyn Any + Send> + Send>;

/// A stream of keyed records under construction. Each method adds a step and returns the
/// stream of that step's output.
pub struct Stream<K, V> {
    /// Given the consumer of this stream, builds the chain from the source and returns its
    /// head (a `Box<dyn Node<K0, V0>>`, type-erased).
    wire: Wire<K, V>,
    /// Stateful steps so far, for default store names.
    stateful: usize,
    /// Where the next stateful steps keep their state.
    backend: StateBackend,
}

impl<K: Send + 'static, V: Send + 'static> Stream<K, V> {
    fn then<K2: Send + 'static, V2: Send + 'static>(
        self,
        step: impl FnOnce(Box<dyn Node<K2, V2>>) -> Box<dyn Node<K, V>> + Send + 'static,
        stateful: usize,
    ) -> Stream<K2, V2> {
        let wire = self.wire;
        Stream {
            wire: Box::new(move |down| wire(step(down))),
            stateful,
            backend: self.backend,
        }
    }

    fn step<K2: Send + 'static, V2: Send + 'static>(
        self,
        f: impl FnMut(Record<K, V>) -> Option<Record<K2, V2>> + Send + 'static,
    ) -> Stream<K2, V2> {
        let stateful = self.stateful;
        self.then(move |down| Box::new(Step { f, down }), stateful)
    }

    /// Replaces key and value.
    pub fn map<K2: Send + 'static, V2: Send + 'static>(
        self,
        mut f: impl FnMut(K, V) -> (K2, V2) + Send + 'static,
    ) -> Stream<K2, V2> {
        self.step(move |r: Record<K, V>| {
            let (timestamp, partition, offset) = (r.timestamp, r.partition, r.offset);
            let (key, value) = f(r.key, r.value);
            Some(Record {
                key,
                value,
                timestamp,
                partition,
                offset,
            })
        })
    }

    /// Replaces the value, keeping the key.
    pub fn map_values<V2: Send + 'static>(
        self,
        mut f: impl FnMut(V) -> V2 + Send + 'static,
    ) -> Stream<K, V2> {
        self.step(move |r: Record<K, V>| {
            Some(Record {
                key: r.key,
                value: f(r.value),
                timestamp: r.timestamp,
                partition: r.partition,
                offset: r.offset,
            })
        })
    }

    /// Keeps the records for which `f` returns true.
    pub fn filter(self, mut f: impl FnMut(&K, &V) -> bool + Send + 'static) -> Stream<K, V> {
        self.step(move |r: Record<K, V>| f(&r.key, &r.value).then_some(r))
    }

    /// Replaces each record by any number of records (same event time and input position).
    pub fn flat_map<K2, V2, I>(self, f: impl FnMut(K, V) -> I + Send + 'static) -> Stream<K2, V2>
    where
        K2: Send + 'static,
        V2: Send + 'static,
        I: IntoIterator<Item = (K2, V2)> + 'static,
    {
        let stateful = self.stateful;
        self.then(move |down| Box::new(FlatStep { f, down }), stateful)
    }

    /// Re-keys the stream (what later stateful steps group by).
    pub fn key_by<K2: Send + 'static>(
        self,
        mut f: impl FnMut(&K, &V) -> K2 + Send + 'static,
    ) -> Stream<K2, V> {
        self.step(move |r: Record<K, V>| {
            let key = f(&r.key, &r.value);
            Some(Record {
                key,
                value: r.value,
                timestamp: r.timestamp,
                partition: r.partition,
                offset: r.offset,
            })
        })
    }

    /// Looks at each record without changing it (logging, metrics, debugging).
    pub fn inspect(self, mut f: impl FnMut(&Record<K, V>) + Send + 'static) -> Stream<K, V> {
        self.step(move |r: Record<K, V>| {
            f(&r);
            Some(r)
        })
    }

    /// Joins each record with a [`GlobalTable`] (Kafka Streams' `KStream#join(GlobalKTable)`):
    /// `key` gives the table key to look up, `join` makes the new value from the record's
    /// value and the table's. Records whose key is not in the table are dropped (see
    /// [`Stream::left_join_table`] to keep them). The record key, event time and input
    /// position are kept.
    ///
    /// ```
    /// use millrace_streams::{GlobalTable, Pipeline, Record, Stream};
    ///
    /// let owners: GlobalTable<String, String> = GlobalTable::json("item-owners");
    /// owners.insert("i1".into(), "ann".into());
    /// let table = owners.clone();
    /// let mut p = Pipeline::new(move |likes: Stream<String, String>| {
    ///     likes.join_table(&table, |_user, item| item.clone(), |item, owner| (item, owner.clone()))
    /// });
    /// p.push(Record::new("bob".to_string(), "i1".to_string(), 0));
    /// p.push(Record::new("bob".to_string(), "i2".to_string(), 0)); // no such item: dropped
    /// let out = p.take_output();
    /// assert_eq!(out.len(), 1);
    /// assert_eq!(out[0].value, ("i1".to_string(), "ann".to_string()));
    /// ```
    pub fn join_table<TK, TV, V2>(
        self,
        table: &GlobalTable<TK, TV>,
        key: impl FnMut(&K, &V) -> TK + Send + 'static,
        mut join: impl FnMut(V, &TV) -> V2 + Send + 'static,
    ) -> Stream<K, V2>
    where
        TK: Hash + Eq + Send + Sync + 'static,
        TV: Send + Sync + 'static,
        V2: Send + 'static,
    {
        self.table_join(table, key, move |v, found: Option<&TV>| {
            found.map(|tv| join(v, tv))
        })
    }

    /// Like [`Stream::join_table`], but a record whose key is not in the table is kept:
    /// `join` gets `None` for it.
    pub fn left_join_table<TK, TV, V2>(
        self,
        table: &GlobalTable<TK, TV>,
        key: impl FnMut(&K, &V) -> TK + Send + 'static,
        mut join: impl FnMut(V, Option<&TV>) -> V2 + Send + 'static,
    ) -> Stream<K, V2>
    where
        TK: Hash + Eq + Send + Sync + 'static,
        TV: Send + Sync + 'static,
        V2: Send + 'static,
    {
        self.table_join(table, key, move |v, found| Some(join(v, found)))
    }

    fn table_join<TK, TV, V2>(
        self,
        table: &GlobalTable<TK, TV>,
        key: impl FnMut(&K, &V) -> TK + Send + 'static,
        join: impl FnMut(V, Option<&TV>) -> Option<V2> + Send + 'static,
    ) -> Stream<K, V2>
    where
        TK: Hash + Eq + Send + Sync + 'static,
        TV: Send + Sync + 'static,
        V2: Send + 'static,
    {
        let stateful = self.stateful;
        let table = table.clone();
        self.then(
            move |down| {
                Box::new(TableJoin {
                    table,
                    key,
                    join,
                    down,
                })
            },
            stateful,
        )
    }

    /// Sets where the stateful steps that follow keep their state (default: the pipeline's
    /// backend, see [`Pipeline::with_backend`]), like a Kafka Streams `Materialized` store
    /// supplier for each of them. A windowed stream's `.on_disk(dir)` or `.in_memory()`
    /// overrides it for that step only.
    ///
    /// ```
    /// use std::time::Duration;
    /// use millrace_streams::{Pipeline, Record, StateBackend, Stream};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let state = StateBackend::on_disk(dir.path());
    /// let mut p = Pipeline::new(move |clicks: Stream<String, u32>| {
    ///     clicks
    ///         .state_backend(state)
    ///         .dedupe(Duration::from_secs(600), |click_id, _| click_id.clone())
    /// });
    /// p.push(Record::new("c1".to_string(), 1, 1_000));
    /// p.push(Record::new("c1".to_string(), 1, 2_000));
    /// assert_eq!(p.take_output().len(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[must_use]
    pub fn state_backend(mut self, backend: StateBackend) -> Self {
        self.backend = backend;
        self
    }

    /// Adds any [`Operator`] as a step (how the ready-made analytics operators plug in).
    /// Late records go to the pipeline's late side output, and to `on_late` if given. The
    /// operator is offered this stream's backend ([`Operator::adopt_backend`]).
    pub fn operator<O>(
        self,
        mut op: O,
        on_late: Option<LateFn<K, V>>,
    ) -> Stream<O::OutKey, O::OutValue>
    where
        O: Operator<K, V> + 'static,
        O::OutKey: Send + 'static,
        O::OutValue: Send + 'static,
    {
        op.adopt_backend(&self.backend);
        let stateful = self.stateful + 1;
        self.then(
            move |down| {
                Box::new(OpNode {
                    op,
                    buf: Vec::new(),
                    on_late,
                    down,
                })
            },
            stateful,
        )
    }

    /// Drops records whose id (from `id`) was already seen within `horizon` of event time.
    pub fn dedupe<I>(
        self,
        horizon: Duration,
        id: impl Fn(&K, &V) -> I + Send + 'static,
    ) -> Stream<K, V>
    where
        I: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        let name = format!("dedupe-{}", self.stateful);
        let op = Dedupe::with_backend(name, millis(horizon), Box::new(id), &self.backend);
        self.operator(op, None)
    }

    /// Groups records by key into tumbling or hopping windows.
    pub fn window(self, windows: Windows) -> WindowedStream<K, V> {
        let config = WindowConfig::new(&self.backend);
        WindowedStream {
            stream: self,
            windows,
            config,
        }
    }

    /// Groups records by key into sliding windows (Kafka's `SlidingWindows`).
    pub fn sliding_window(self, windows: SlidingWindows) -> SlidingWindowedStream<K, V> {
        let config = WindowConfig::new(&self.backend);
        SlidingWindowedStream {
            stream: self,
            windows,
            config,
        }
    }

    /// Groups records by key into session windows.
    pub fn session_window(self, windows: SessionWindows) -> SessionWindowedStream<K, V> {
        let config = WindowConfig::new(&self.backend);
        SessionWindowedStream {
            stream: self,
            windows,
            config,
        }
    }
}

impl<K, L, R> Stream<K, Side<L, R>>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + 'static,
    L: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// Joins the left and right records of this stream (two inputs keyed alike, see
    /// [`crate::join`]) whose event times are within `windows` of each other. Finish with
    /// [`WindowJoinBuilder::inner`], [`WindowJoinBuilder::left`] or
    /// [`WindowJoinBuilder::outer`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use millrace_streams::join::{JoinWindows, Side};
    /// use millrace_streams::{Pipeline, Record, Stream};
    ///
    /// // Impressions (left) and clicks (right) per ad; a click counts within 10 s.
    /// let mut p = Pipeline::new(|ads: Stream<String, Side<u32, u32>>| {
    ///     ads.window_join(JoinWindows::of(Duration::from_secs(10)).no_grace())
    ///         .inner(|_ad, impression, click| (*impression, *click))
    /// });
    /// p.push(Record::new("ad1".to_string(), Side::Left(1), 1_000));
    /// p.push(Record::new("ad1".to_string(), Side::Right(7), 5_000));
    /// p.push(Record::new("ad1".to_string(), Side::Right(8), 30_000)); // too late after 1
    /// let out = p.take_output();
    /// assert_eq!(out.len(), 1);
    /// assert_eq!((out[0].value, out[0].timestamp), ((1, 7), 5_000));
    /// ```
    pub fn window_join(self, windows: JoinWindows) -> WindowJoinBuilder<K, L, R> {
        let backend = self.backend.clone();
        WindowJoinBuilder {
            stream: self,
            windows,
            name: None,
            on_late: None,
            backend,
        }
    }
}

/// A stream of two sides waiting for its join function (see [`Stream::window_join`]).
pub struct WindowJoinBuilder<K, L, R> {
    stream: Stream<K, Side<L, R>>,
    windows: JoinWindows,
    name: Option<String>,
    on_late: Option<LateFn<K, Side<L, R>>>,
    backend: StateBackend,
}

impl<K, L, R> WindowJoinBuilder<K, L, R>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + 'static,
    L: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// Names the step and its state store (otherwise `join-<position>`).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Calls `f` with each late record.
    #[must_use]
    pub fn on_late(mut self, f: impl FnMut(&Record<K, Side<L, R>>) + Send + 'static) -> Self {
        self.on_late = Some(Box::new(f));
        self
    }

    /// Keeps the join buffers on disk (a [`crate::DiskStore`] file per task in `dir`), for
    /// buffers larger than memory (see [`crate::backend`]).
    #[must_use]
    pub fn on_disk(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.backend = StateBackend::on_disk(dir);
        self
    }

    /// Keeps the join buffers in memory, whatever the pipeline's backend.
    #[must_use]
    pub fn in_memory(mut self) -> Self {
        self.backend = StateBackend::InMemory;
        self
    }

    /// Emits `join(key, left, right)` for every pair within the window.
    pub fn inner<O: Send + 'static>(
        self,
        join: impl Fn(&K, &L, &R) -> O + Send + 'static,
    ) -> Stream<K, O> {
        self.build(
            JoinKind::Inner,
            Box::new(move |k, l, r| match (l, r) {
                (Some(l), Some(r)) => Some(join(k, l, r)),
                _ => None,
            }),
        )
    }

    /// Like [`WindowJoinBuilder::inner`], and each left record that matched nothing is
    /// emitted with `None` once its window has closed.
    pub fn left<O: Send + 'static>(
        self,
        join: impl Fn(&K, &L, Option<&R>) -> O + Send + 'static,
    ) -> Stream<K, O> {
        self.build(
            JoinKind::Left,
            Box::new(move |k, l, r| l.map(|l| join(k, l, r))),
        )
    }

    /// Like [`WindowJoinBuilder::left`], for records of both sides.
    pub fn outer<O: Send + 'static>(
        self,
        join: impl Fn(&K, Option<&L>, Option<&R>) -> O + Send + 'static,
    ) -> Stream<K, O> {
        self.build(
            JoinKind::Outer,
            Box::new(move |k, l, r| Some(join(k, l, r))),
        )
    }

    fn build<O: Send + 'static>(
        self,
        kind: JoinKind,
        joiner: crate::join::JoinFn<K, L, R, O>,
    ) -> Stream<K, O> {
        let stateful = self.stream.stateful;
        let name = self.name.unwrap_or_else(|| format!("join-{stateful}"));
        let op = WindowJoin::with_backend(name, self.windows, kind, joiner, &self.backend);
        self.stream.operator(op, self.on_late)
    }
}

/// Options shared by windowed streams.
struct WindowConfig<K, V> {
    emit: EmitMode,
    name: Option<String>,
    on_late: Option<LateFn<K, V>>,
    backend: StateBackend,
}

impl<K, V> WindowConfig<K, V> {
    fn new(backend: &StateBackend) -> Self {
        Self {
            emit: EmitMode::default(),
            name: None,
            on_late: None,
            backend: backend.clone(),
        }
    }
}

/// A stream grouped into tumbling or hopping windows, waiting for its aggregation.
pub struct WindowedStream<K, V> {
    stream: Stream<K, V>,
    windows: Windows,
    config: WindowConfig<K, V>,
}

/// A stream grouped into session windows, waiting for its aggregation.
pub struct SessionWindowedStream<K, V> {
    stream: Stream<K, V>,
    windows: SessionWindows,
    config: WindowConfig<K, V>,
}

/// A stream grouped into sliding windows, waiting for its aggregation.
pub struct SlidingWindowedStream<K, V> {
    stream: Stream<K, V>,
    windows: SlidingWindows,
    config: WindowConfig<K, V>,
}

macro_rules! window_options {
    () => {
        /// Chooses when results are emitted (default: [`EmitMode::Update`]).
        #[must_use]
        pub fn emit(mut self, mode: EmitMode) -> Self {
            self.config.emit = mode;
            self
        }

        /// Names the step and its state store; otherwise a name is derived from the step's
        /// position, which changes when steps are added before it (and orphans its changelog).
        #[must_use]
        pub fn named(mut self, name: impl Into<String>) -> Self {
            self.config.name = Some(name.into());
            self
        }

        /// Calls `f` with each late record (besides counting it and reporting it in
        /// [`Pipeline::take_late`]).
        #[must_use]
        pub fn on_late(mut self, f: impl FnMut(&Record<K, V>) + Send + 'static) -> Self {
            self.config.on_late = Some(Box::new(f));
            self
        }

        /// Keeps this step's state on disk (a [`crate::DiskStore`] file per task in `dir`)
        /// rather than in memory, for state larger than memory: each record reads and
        /// writes its state through the store, so memory holds the keys written since the
        /// last commit and a small time index. Slower per record. The changelog (same format
        /// as in memory) and restore work as for in-memory state; on-disk state is not
        /// published for live queries. See [`crate::backend`].
        #[must_use]
        pub fn on_disk(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
            self.config.backend = StateBackend::on_disk(dir);
            self
        }

        /// Keeps this step's state in memory, whatever the pipeline's backend.
        #[must_use]
        pub fn in_memory(mut self) -> Self {
            self.config.backend = StateBackend::InMemory;
            self
        }
    };
}

impl<K, V> WindowedStream<K, V>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    V: Send + 'static,
{
    window_options!();

    /// Folds each window's records per key: `init` makes the empty accumulator, `add` folds
    /// one value in.
    pub fn aggregate<A>(
        self,
        init: impl Fn() -> A + Send + 'static,
        add: impl Fn(&mut A, &V) + Send + 'static,
    ) -> Stream<Windowed<K>, A>
    where
        A: Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        let stateful = self.stream.stateful;
        let name = self
            .config
            .name
            .unwrap_or_else(|| format!("aggregate-{stateful}"));
        let op = WindowAggregate::with_backend(
            name,
            self.windows,
            self.config.emit,
            Box::new(init),
            Box::new(add),
            &self.config.backend,
        );
        self.stream.operator(op, self.config.on_late)
    }

    /// Counts records per key and window.
    pub fn count(self) -> Stream<Windowed<K>, u64> {
        self.aggregate(|| 0u64, |n: &mut u64, _: &V| *n += 1)
    }

    /// Combines each window's values per key with `f`.
    pub fn reduce(self, f: impl Fn(&V, &V) -> V + Send + 'static) -> Stream<Windowed<K>, V>
    where
        V: Clone + Serialize + DeserializeOwned,
    {
        self.aggregate(
            || None,
            move |acc: &mut Option<V>, v: &V| {
                *acc = Some(match acc.take() {
                    Some(a) => f(&a, v),
                    None => v.clone(),
                });
            },
        )
        .flat_map(|k, v: Option<V>| v.map(|v| (k, v)))
    }
}

impl<K, V> SessionWindowedStream<K, V>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    V: Send + 'static,
{
    window_options!();

    /// Folds each session's records per key; `merge` folds one session's accumulator into
    /// another's when a record bridges them.
    pub fn aggregate<A>(
        self,
        init: impl Fn() -> A + Send + 'static,
        add: impl Fn(&mut A, &V) + Send + 'static,
        merge: impl Fn(&mut A, A) + Send + 'static,
    ) -> Stream<Windowed<K>, A>
    where
        A: Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        let stateful = self.stream.stateful;
        let name = self
            .config
            .name
            .unwrap_or_else(|| format!("session-aggregate-{stateful}"));
        let op = SessionAggregate::with_backend(
            name,
            self.windows,
            self.config.emit,
            Box::new(init),
            Box::new(add),
            Box::new(merge),
            &self.config.backend,
        );
        self.stream.operator(op, self.config.on_late)
    }

    /// Counts records per key and session.
    pub fn count(self) -> Stream<Windowed<K>, u64> {
        self.aggregate(|| 0u64, |n: &mut u64, _: &V| *n += 1, |a, b| *a += b)
    }

    /// Combines each session's values per key with `f` (also used to merge sessions).
    pub fn reduce(self, f: impl Fn(&V, &V) -> V + Send + Sync + 'static) -> Stream<Windowed<K>, V>
    where
        V: Clone + Serialize + DeserializeOwned,
    {
        let f = std::sync::Arc::new(f);
        let g = std::sync::Arc::clone(&f);
        self.aggregate(
            || None,
            move |acc: &mut Option<V>, v: &V| {
                *acc = Some(match acc.take() {
                    Some(a) => f(&a, v),
                    None => v.clone(),
                });
            },
            move |acc: &mut Option<V>, other: Option<V>| {
                *acc = match (acc.take(), other) {
                    (Some(a), Some(b)) => Some(g(&a, &b)),
                    (a, b) => a.or(b),
                };
            },
        )
        .flat_map(|k, v: Option<V>| v.map(|v| (k, v)))
    }
}

impl<K, V> SlidingWindowedStream<K, V>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    window_options!();

    /// Folds each window's records per key. Values are kept until no open window needs them,
    /// which is why they must be serializable here (they go to the changelog).
    pub fn aggregate<A>(
        self,
        init: impl Fn() -> A + Send + 'static,
        add: impl Fn(&mut A, &V) + Send + 'static,
    ) -> Stream<Windowed<K>, A>
    where
        A: Clone + Serialize + DeserializeOwned + Send + 'static,
    {
        let stateful = self.stream.stateful;
        let name = self
            .config
            .name
            .unwrap_or_else(|| format!("sliding-aggregate-{stateful}"));
        let op = SlidingAggregate::with_backend(
            name,
            self.windows,
            self.config.emit,
            Box::new(init),
            Box::new(add),
            &self.config.backend,
        );
        self.stream.operator(op, self.config.on_late)
    }

    /// Counts records per key and window.
    pub fn count(self) -> Stream<Windowed<K>, u64> {
        self.aggregate(|| 0u64, |n: &mut u64, _: &V| *n += 1)
    }
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
    /// [`crate::backend`]).
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::{Arc, Mutex};

    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn values<K, V>(p: &mut Pipeline<impl Send + 'static, impl Send + 'static, K, V>) -> Vec<V>
    where
        K: Send + 'static,
        V: Send + 'static,
    {
        p.take_output().into_iter().map(|r| r.value).collect()
    }

    #[test]
    fn map_filter_and_map_values_compose_in_order() {
        let mut p = Pipeline::new(|s: Stream<u32, i32>| {
            s.map(|k, v| (k, v * 10))
                .filter(|_, v| *v > 10)
                .map_values(|v| v + 1)
        });
        for v in [1, 2, 3] {
            p.push(Record::new(0, v, 0));
        }
        assert_eq!(values(&mut p), vec![21, 31]);
    }

    #[test]
    fn flat_map_keeps_event_time_and_input_position() {
        let mut p = Pipeline::new(|s: Stream<(), String>| {
            s.flat_map(|_, line: String| {
                line.split(' ')
                    .map(|w| (w.to_string(), 1u32))
                    .collect::<Vec<_>>()
            })
        });
        p.push(Record::new((), "a b".to_string(), 42).at(3, 9));
        let out: Vec<_> = p
            .take_output()
            .into_iter()
            .map(|r| (r.key, r.timestamp, r.partition, r.offset))
            .collect();
        assert_eq!(out, vec![("a".into(), 42, 3, 9), ("b".into(), 42, 3, 9)]);
    }

    #[test]
    fn key_by_regroups_windowed_counts() {
        let mut p = Pipeline::new(|s: Stream<String, String>| {
            s.key_by(|_, campaign| campaign.clone())
                .window(Windows::tumbling(60 * SEC).no_grace())
                .emit(EmitMode::Final)
                .count()
        });
        for (user, campaign) in [("u1", "c"), ("u2", "c"), ("u3", "d")] {
            p.push(Record::new(user.to_string(), campaign.to_string(), 0));
        }
        p.finish();
        let got: Vec<_> = p
            .take_output()
            .into_iter()
            .map(|r| (r.key.key, r.value))
            .collect();
        assert_eq!(got, vec![("c".to_string(), 2), ("d".to_string(), 1)]);
    }

    #[test]
    fn inspect_sees_every_record_unchanged() {
        let seen = Arc::new(Mutex::new(0));
        let counter = Arc::clone(&seen);
        let mut p = Pipeline::new(move |s: Stream<u8, u8>| {
            s.inspect(move |_| *counter.lock().unwrap() += 1)
        });
        p.push(Record::new(1, 2, 0));
        p.push(Record::new(1, 3, 0));
        assert_eq!((*seen.lock().unwrap(), values(&mut p)), (2, vec![2, 3]));
    }

    #[test]
    fn reduce_combines_values_per_window() {
        let mut p = Pipeline::new(|s: Stream<u8, i64>| {
            s.window(Windows::tumbling(10 * SEC).no_grace())
                .emit(EmitMode::Final)
                .reduce(|a, b| (*a).max(*b))
        });
        for v in [3, 9, 4] {
            p.push(Record::new(1, v, 0));
        }
        p.finish();
        assert_eq!(values(&mut p), vec![9]);
    }

    #[test]
    fn session_reduce_merges_with_the_same_function() {
        let mut p = Pipeline::new(|s: Stream<u8, i64>| {
            s.session_window(Windows::session(10 * SEC).no_grace())
                .emit(EmitMode::Final)
                .reduce(|a, b| a + b)
        })
        .event_time(60 * SEC, None);
        for (v, t) in [(1, 0), (2, 20_000), (4, 10_000)] {
            p.push(Record::new(1, v, t));
        }
        p.finish();
        assert_eq!(values(&mut p), vec![7]);
    }

    fn two_partition_count() -> Pipeline<u8, (), Windowed<u8>, u64> {
        Pipeline::new(|s: Stream<u8, ()>| {
            s.window(Windows::tumbling(10 * SEC).no_grace())
                .emit(EmitMode::Final)
                .count()
        })
        .event_time(Duration::ZERO, Some(5 * SEC))
    }

    #[test]
    fn slow_partition_holds_windows_open() {
        let mut p = two_partition_count();
        p.assign(0);
        p.assign(1);
        p.push(Record::new(1, (), 1_000).at(0, 0));
        p.push(Record::new(1, (), 30_000).at(1, 0));
        assert!(p.take_output().is_empty());
    }

    #[test]
    fn idle_partition_stops_holding_windows_open() {
        let mut p = two_partition_count();
        p.assign(0);
        p.assign(1);
        p.push(Record::new(1, (), 1_000).at(0, 0));
        p.advance(4_000);
        p.push(Record::new(1, (), 30_000).at(1, 0));
        p.advance(5_000);
        assert_eq!(values(&mut p), vec![1]);
    }

    #[test]
    fn commit_reports_offsets_and_one_batch_per_store() {
        let mut p = Pipeline::new(|s: Stream<u8, ()>| {
            s.dedupe(SEC, |k, _| *k)
                .window(Windows::tumbling(SEC).no_grace())
                .count()
        });
        p.push(Record::new(1, (), 0).at(2, 7));
        let cp = p.commit().unwrap();
        let names: Vec<_> = cp.stores.iter().map(|s| s.store.as_str()).collect();
        assert_eq!(
            (cp.offsets.get(&2), names),
            (Some(&8), vec!["dedupe-0", "aggregate-1"])
        );
    }

    #[test]
    fn named_window_uses_the_name_for_its_store() {
        let mut p = Pipeline::new(|s: Stream<u8, ()>| {
            s.window(Windows::tumbling(SEC).no_grace())
                .named("clicks-per-minute")
                .count()
        });
        assert_eq!(p.commit().unwrap().stores[0].store, "clicks-per-minute");
    }

    #[test]
    fn stateless_pipeline_commits_offsets_only() {
        let mut p = Pipeline::new(|s: Stream<u8, u8>| s);
        p.push(Record::new(1, 1, 0).at(0, 0));
        let cp = p.commit().unwrap();
        assert_eq!((cp.offsets.get(&0), cp.stores.len()), (Some(&1), 0));
    }

    #[test]
    fn pipeline_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let p =
            Pipeline::new(|s: Stream<u8, u8>| s.window(Windows::tumbling(SEC).no_grace()).count());
        assert_send(&p);
    }
}

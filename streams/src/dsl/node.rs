//! The chain a pipeline is made of: boxed steps linked by plain calls, each owning everything
//! downstream of it. A record goes through the whole chain with no queue and no allocation.

use std::any::Any;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::StreamsError;
use crate::operator::{Context, Metrics, Operator, TaskMeta};
use crate::record::{LateRecord, Record};
use crate::state::store::Change;
use crate::table::{GlobalTable, TableUpdates};
use crate::time::Timestamp;

use super::pipeline::{StoreChanges, StoreSnapshot};

/// What flows beside the records through a chain.
pub(super) struct Cx<'a> {
    pub(super) watermark: Timestamp,
    pub(super) metrics: &'a mut Metrics,
    pub(super) late: &'a mut Vec<LateRecord>,
    /// The pipeline's output vector, type-erased because middle steps do not know the final
    /// types; the sink recovers it with one cheap type-id check.
    pub(super) output: &'a mut dyn Any,
}

/// One step of the chain, owning everything downstream of it.
pub(super) trait Node<K, V>: Send {
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

/// A stateless step producing at most one record per input (map, filter, key_by, inspect).
pub(super) struct Step<F, K2, V2> {
    pub(super) f: F,
    pub(super) down: Box<dyn Node<K2, V2>>,
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
pub(super) struct FlatStep<F, K2, V2> {
    pub(super) f: F,
    pub(super) down: Box<dyn Node<K2, V2>>,
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
pub(super) struct OpNode<O, K, V, K2, V2> {
    pub(super) op: O,
    pub(super) buf: Vec<Record<K2, V2>>,
    pub(super) on_late: Option<LateFn<K, V>>,
    pub(super) down: Box<dyn Node<K2, V2>>,
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
pub(super) struct TableJoin<TK, TV, F, G, K, V2> {
    pub(super) table: GlobalTable<TK, TV>,
    pub(super) key: F,
    /// Builds the output from the value and the table value; `None` drops the record (an
    /// inner join's miss).
    pub(super) join: G,
    pub(super) down: Box<dyn Node<K, V2>>,
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
pub(super) struct Sink<K, V>(pub(super) PhantomData<fn(K, V)>);

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

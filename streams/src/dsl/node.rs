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

/// What every step of the chain does besides taking records, whatever its record types:
/// passing the watermark on, checkpointing, restoring, counting and showing state, naming
/// the tables it joins with. A step states only what it adds to these; each default passes
/// the call on to the rest of the chain ([`Stage::downstream`]).
pub(super) trait Stage: Send {
    /// The rest of the chain (`None` at its end, the sink).
    fn downstream(&self) -> Option<&dyn Stage>;

    /// The rest of the chain, for changing.
    fn downstream_mut(&mut self) -> Option<&mut dyn Stage>;

    /// The watermark moved to `cx.watermark`.
    fn watermark(&mut self, cx: &mut Cx<'_>) {
        if let Some(down) = self.downstream_mut() {
            down.watermark(cx);
        }
    }

    /// Appends each stateful step's changelog batch, in chain order.
    fn checkpoint(
        &mut self,
        meta: &TaskMeta,
        out: &mut Vec<StoreChanges>,
    ) -> Result<(), StreamsError> {
        match self.downstream_mut() {
            Some(down) => down.checkpoint(meta, out),
            None => Ok(()),
        }
    }

    /// Restores each stateful step from its store's batches (taken out of `changes`),
    /// appending the task metadata each held.
    fn restore(
        &mut self,
        changes: &mut BTreeMap<String, Vec<Change>>,
        metas: &mut Vec<TaskMeta>,
    ) -> Result<(), StreamsError> {
        match self.downstream_mut() {
            Some(down) => down.restore(changes, metas),
            None => Ok(()),
        }
    }

    /// Live state entries of the steps from here on.
    fn state_len(&self) -> usize {
        self.downstream().map_or(0, Stage::state_len)
    }

    /// Appends each stateful step's snapshot (see [`Operator::snapshot`]) by store name.
    fn snapshot(&self, out: &mut Vec<StoreSnapshot>) {
        if let Some(down) = self.downstream() {
            down.snapshot(out);
        }
    }

    /// Appends the global tables the chain joins with (the runtime loads them).
    fn tables(&self, out: &mut Vec<Arc<dyn TableUpdates>>) {
        if let Some(down) = self.downstream() {
            down.tables(out);
        }
    }
}

/// One step of the chain taking `Record<K, V>`, owning everything downstream of it.
pub(super) trait Node<K, V>: Stage {
    /// Processes one record (and whatever it leads to downstream).
    fn process(&mut self, record: Record<K, V>, cx: &mut Cx<'_>);
}

/// The [`Stage`] of a step whose rest of the chain is its `down` field and that adds
/// nothing to the defaults.
macro_rules! forwarding_stage {
    () => {
        fn downstream(&self) -> Option<&dyn Stage> {
            Some(&*self.down)
        }

        fn downstream_mut(&mut self) -> Option<&mut dyn Stage> {
            Some(&mut *self.down)
        }
    };
}

/// A stateless step producing at most one record per input (map, filter, key_by, inspect).
pub(super) struct Step<F, K2, V2> {
    pub(super) f: F,
    pub(super) down: Box<dyn Node<K2, V2>>,
}

impl<F: Send, K2, V2> Stage for Step<F, K2, V2> {
    forwarding_stage!();
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
}

/// A stateless step producing any number of records per input.
pub(super) struct FlatStep<F, K2, V2> {
    pub(super) f: F,
    pub(super) down: Box<dyn Node<K2, V2>>,
}

impl<F: Send, K2, V2> Stage for FlatStep<F, K2, V2> {
    forwarding_stage!();
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

impl<O, K, V, K2: Send, V2: Send> Stage for OpNode<O, K, V, K2, V2>
where
    O: Operator<K, V, OutKey = K2, OutValue = V2>,
{
    forwarding_stage!();

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

impl<TK, TV, F, G, K, V2> Stage for TableJoin<TK, TV, F, G, K, V2>
where
    TK: Hash + Eq + Send + Sync + 'static,
    TV: Send + Sync + 'static,
    F: Send,
    G: Send,
{
    forwarding_stage!();

    fn tables(&self, out: &mut Vec<Arc<dyn TableUpdates>>) {
        let table: Arc<dyn TableUpdates> = Arc::new(self.table.clone());
        if !out.iter().any(|t| t.id() == table.id()) {
            out.push(table);
        }
        self.down.tables(out);
    }
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
}

/// The end of the chain: appends to the pipeline's output.
pub(super) struct Sink<K, V>(pub(super) PhantomData<fn(K, V)>);

impl<K: Send, V: Send> Stage for Sink<K, V> {
    fn downstream(&self) -> Option<&dyn Stage> {
        None
    }

    fn downstream_mut(&mut self) -> Option<&mut dyn Stage> {
        None
    }
}

impl<K: Send + 'static, V: Send + 'static> Node<K, V> for Sink<K, V> {
    fn process(&mut self, record: Record<K, V>, cx: &mut Cx<'_>) {
        cx.metrics.records_out += 1;
        if let Some(out) = cx.output.downcast_mut::<Vec<Record<K, V>>>() {
            out.push(record);
        }
    }
}

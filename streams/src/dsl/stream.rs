//! [`Stream`]: a stream of keyed records under construction, and its stateless steps,
//! table joins and the entry points of the stateful ones.

use std::any::Any;
use std::hash::Hash;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::operator::Operator;
use crate::record::Record;
use crate::state::backend::StateBackend;
use crate::table::GlobalTable;
use crate::time::millis;
use crate::windows::dedupe::Dedupe;

use super::node::{FlatStep, LateFn, Node, OpNode, Step, TableJoin};

pub(super) type Wire<K, V> = Box<dyn FnOnce(Box<dyn Node<K, V>>) -> Box<dyn Any + Send> + Send>;

/// A stream of keyed records under construction. Each method adds a step and returns the
/// stream of that step's output.
pub struct Stream<K, V> {
    /// Given the consumer of this stream, builds the chain from the source and returns its
    /// head (a `Box<dyn Node<K0, V0>>`, type-erased).
    pub(super) wire: Wire<K, V>,
    /// Stateful steps so far, for default store names.
    pub(super) stateful: usize,
    /// Where the next stateful steps keep their state.
    pub(super) backend: StateBackend,
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
}

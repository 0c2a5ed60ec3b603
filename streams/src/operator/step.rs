//! The scaffolding every stateful step shares, written once.
//!
//! A stateful step keeps its state in a [`StepState`] (keyed state, or the accumulators of
//! fixed windows), an index of what it closes or expires next ([`StepIndex`]), and a
//! [`ReplayGuard`]: together, its [`StepParts`]. What it does with a record and with the
//! watermark is its own ([`StatefulStep`]); the rest is the same for every step, written
//! once here and put into each step's [`Operator`] implementation by [`stateful_operator!`]:
//!
//! - a record is dropped while the state is failed (the next checkpoint reports the error),
//!   skipped when the restored state already reflects it (a replay), and handed back as
//!   late when the step says it is late or its time is at or before the seal;
//! - an error while processing a record or the watermark fails the state, so that the next
//!   checkpoint returns it and the commit fails before any input offset is committed;
//! - a checkpoint makes the index durable, then writes the state's changes and the task
//!   metadata and returns the changelog batch;
//! - a restore clears the index, replays the changelog into the state and rebuilds the
//!   index from every entry read back;
//! - a snapshot publishes every entry as a row (on disk at most [`SNAPSHOT_ROW_CAP`]).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::record::Record;
use crate::state::backend::{snapshot_failed, StateBackend, SNAPSHOT_ROW_CAP};
use crate::state::keyed::{EntryKey, KeyedState};
use crate::state::store::{Change, KeyValueStore};
use crate::state::time_index::TimeIndex;
use crate::time::Timestamp;

use super::{Context, Operator, ReplayGuard, TaskMeta};

/// Where a stateful step keeps its state: entries `(group, entry) -> value` (a key's
/// sessions by start, a window's accumulators by key, ...) that it checkpoints to its store.
pub(crate) trait StepState: Send {
    /// What entries are grouped by (a record key, a dedupe id).
    type Group;
    /// What orders the entries of one group (a session start, a window start, ...).
    type Entry;
    /// An entry's value.
    type Value;

    /// Whether the store failed: the step must not process records any more.
    fn failed(&self) -> bool;

    /// Records a store error: the next checkpoint returns it.
    fn fail(&mut self, error: StreamsError);

    /// Number of entries.
    fn len(&self) -> usize;

    /// Writes what changed, the seal and `meta`; returns the changelog batch.
    fn checkpoint(
        &mut self,
        guard: &mut ReplayGuard,
        meta: &TaskMeta,
    ) -> Result<Vec<Change>, StreamsError>;

    /// Replays a changelog batch, calling `visit` with every entry read back (to rebuild the
    /// step's index); returns the task metadata it held.
    fn restore(
        &mut self,
        changes: Vec<Change>,
        guard: &mut ReplayGuard,
        visit: impl FnMut(&Self::Group, &Self::Entry, &Self::Value),
    ) -> Result<Option<TaskMeta>, StreamsError>;

    /// Calls `f` with the entries, for a snapshot: all of them in memory, at most `cap` on
    /// disk (see [`crate::state::backend`]).
    fn snapshot(
        &self,
        cap: usize,
        f: impl FnMut(&Self::Group, &Self::Entry, &Self::Value),
    ) -> Result<(), StreamsError>;
}

impl<G, S, T> StepState for KeyedState<G, S, T>
where
    G: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
    S: EntryKey + Send,
    T: Serialize + DeserializeOwned + Send,
{
    type Group = G;
    type Entry = S;
    type Value = T;

    fn failed(&self) -> bool {
        KeyedState::failed(self)
    }

    fn fail(&mut self, error: StreamsError) {
        KeyedState::fail(self, error);
    }

    fn len(&self) -> usize {
        KeyedState::len(self)
    }

    fn checkpoint(
        &mut self,
        guard: &mut ReplayGuard,
        meta: &TaskMeta,
    ) -> Result<Vec<Change>, StreamsError> {
        KeyedState::checkpoint(self, guard, meta)
    }

    fn restore(
        &mut self,
        changes: Vec<Change>,
        guard: &mut ReplayGuard,
        visit: impl FnMut(&G, &S, &T),
    ) -> Result<Option<TaskMeta>, StreamsError> {
        KeyedState::restore(self, changes, guard, visit)
    }

    fn snapshot(&self, cap: usize, f: impl FnMut(&G, &S, &T)) -> Result<(), StreamsError> {
        KeyedState::snapshot(self, cap, f)
    }
}

/// What a step closes or expires next, kept beside its state and rebuilt from it at a
/// restore (never changelogged).
pub(crate) trait StepIndex: Send {
    /// At a checkpoint, before the state's: makes the index durable enough to read back.
    fn checkpoint(&mut self) -> Result<(), StreamsError>;

    /// Before a restore rebuilds the index: removes every entry.
    fn clear(&mut self) -> Result<(), StreamsError>;
}

/// No index: the step closes nothing by time (or its state keeps its own order, as fixed
/// windows do).
impl StepIndex for () {
    fn checkpoint(&mut self) -> Result<(), StreamsError> {
        Ok(())
    }

    fn clear(&mut self) -> Result<(), StreamsError> {
        Ok(())
    }
}

impl<E> StepIndex for TimeIndex<E>
where
    E: Ord + Serialize + DeserializeOwned + Send,
{
    fn checkpoint(&mut self) -> Result<(), StreamsError> {
        TimeIndex::checkpoint(self)
    }

    fn clear(&mut self) -> Result<(), StreamsError> {
        TimeIndex::clear(self)
    }
}

/// An index in memory whatever the backend (the anomaly detector's series by latest time).
impl<T: Send> StepIndex for BTreeMap<Timestamp, T> {
    fn checkpoint(&mut self) -> Result<(), StreamsError> {
        Ok(())
    }

    fn clear(&mut self) -> Result<(), StreamsError> {
        BTreeMap::clear(self);
        Ok(())
    }
}

/// The parts of a stateful step that the scaffolding handles: its name (also its store's and
/// changelog's), state, index, and replay guard with the seal.
pub(crate) struct StepParts<St, I> {
    /// The step's name.
    pub(crate) name: String,
    /// Its state.
    pub(crate) state: St,
    /// What it closes or expires next.
    pub(crate) index: I,
    /// Replays to skip, and the seal: how far the step's closed state reaches.
    pub(crate) guard: ReplayGuard,
}

impl<St, I> StepParts<St, I> {
    /// The parts of a step named `name`, before any restore.
    pub(crate) fn new(name: String, state: St, index: I) -> Self {
        StepParts {
            name,
            state,
            index,
            guard: ReplayGuard::default(),
        }
    }
}

impl<G, S, T, E> StepParts<KeyedState<G, S, T>, TimeIndex<E>>
where
    G: Hash + Eq + Clone + Serialize + DeserializeOwned,
    S: EntryKey,
    T: Serialize + DeserializeOwned,
    E: Ord + Serialize + DeserializeOwned,
{
    /// Keyed state and time index in memory, the state mirrored to `store` at checkpoints.
    pub(crate) fn in_memory(name: String, store: Box<dyn KeyValueStore>) -> Self {
        let state = KeyedState::in_memory(&name, store);
        Self::new(name, state, TimeIndex::Memory(BTreeSet::new()))
    }

    /// Keyed state and time index where `backend` says.
    pub(crate) fn with_backend(name: String, backend: &StateBackend) -> Self {
        let mut state = KeyedState::new(&name, backend);
        let index = TimeIndex::for_state(&name, backend, &mut state);
        Self::new(name, state, index)
    }
}

/// A step's state entry, as its [`StepState`] names it.
type Group<O, K, V> = <<O as StatefulStep<K, V>>::State as StepState>::Group;
/// The entry key of a step's state.
type Entry<O, K, V> = <<O as StatefulStep<K, V>>::State as StepState>::Entry;
/// The value of a step's state entry.
type Value<O, K, V> = <<O as StatefulStep<K, V>>::State as StepState>::Value;
/// The parts of a step.
type Parts<O, K, V> = StepParts<<O as StatefulStep<K, V>>::State, <O as StatefulStep<K, V>>::Index>;
/// The output buffer of a step.
type Out<O, K, V> = Vec<Record<<O as Operator<K, V>>::OutKey, <O as Operator<K, V>>::OutValue>>;

/// A stateful step: states what it does with a record and with the watermark, how its index
/// is rebuilt and how its entries read as rows; its [`Operator`] implementation is the
/// scaffolding of this module, put in by [`stateful_operator!`] (see the module
/// documentation).
pub(crate) trait StatefulStep<K, V>: Operator<K, V> {
    /// Where the step keeps its state.
    type State: StepState;
    /// What it closes or expires next (`()` for none).
    type Index: StepIndex;

    /// The step's parts.
    fn parts(&self) -> &Parts<Self, K, V>;

    /// The step's parts, for changing.
    fn parts_mut(&mut self) -> &mut Parts<Self, K, V>;

    /// Whether a record at `t` is late under `watermark` (the seal is checked besides). The
    /// default, never, is for steps that judge each record themselves: per window, per id.
    fn is_late(&self, t: Timestamp, watermark: Timestamp) -> bool {
        let _ = (t, watermark);
        false
    }

    /// Processes a record that passed the opening checks, pushing results to `out`; returns
    /// the record when it turned out to be late (it is counted as such).
    fn apply(
        &mut self,
        record: Record<K, V>,
        cx: &mut Context<'_>,
        out: &mut Out<Self, K, V>,
    ) -> Result<Option<Record<K, V>>, StreamsError>;

    /// The watermark moved to `cx.watermark`: close, expire and emit what it says.
    fn advance(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Out<Self, K, V>,
    ) -> Result<(), StreamsError>;

    /// For a restore: what adds an entry read back to the index, and the parts to restore.
    #[allow(clippy::type_complexity)]
    fn restoring(
        &mut self,
    ) -> (
        impl FnMut(
            &mut Self::Index,
            &Group<Self, K, V>,
            &Entry<Self, K, V>,
            &Value<Self, K, V>,
        ) -> Result<(), StreamsError>,
        &mut Parts<Self, K, V>,
    );

    /// After a restore rebuilt the state and the index, with the task metadata it found.
    fn restored(&mut self, meta: Option<&TaskMeta>) -> Result<(), StreamsError> {
        let _ = meta;
        Ok(())
    }

    /// One entry of the state as a row, for snapshots.
    fn row(
        &self,
        group: &Group<Self, K, V>,
        entry: &Entry<Self, K, V>,
        value: &Value<Self, K, V>,
    ) -> serde_json::Value;
}

/// The [`Operator`] methods of a [`StatefulStep`], written once (see the module
/// documentation). Used inside `impl Operator<K, V> for Step`, after `OutKey` and
/// `OutValue`, as `stateful_operator!(K, V);` with the impl's input types.
macro_rules! stateful_operator {
    ($k:ty, $v:ty) => {
        fn name(&self) -> &str {
            $crate::operator::step::name::<Self, $k, $v>(self)
        }

        #[inline]
        fn process(
            &mut self,
            record: $crate::record::Record<$k, $v>,
            cx: &mut $crate::operator::Context<'_>,
            out: &mut Vec<$crate::record::Record<Self::OutKey, Self::OutValue>>,
        ) -> Option<$crate::record::Record<$k, $v>> {
            $crate::operator::step::process(self, record, cx, out)
        }

        fn on_watermark(
            &mut self,
            cx: &mut $crate::operator::Context<'_>,
            out: &mut Vec<$crate::record::Record<Self::OutKey, Self::OutValue>>,
        ) {
            $crate::operator::step::on_watermark::<Self, $k, $v>(self, cx, out);
        }

        fn checkpoint(
            &mut self,
            meta: &$crate::operator::TaskMeta,
        ) -> Result<Vec<$crate::state::store::Change>, $crate::StreamsError> {
            $crate::operator::step::checkpoint::<Self, $k, $v>(self, meta)
        }

        fn restore(
            &mut self,
            changes: Vec<$crate::state::store::Change>,
        ) -> Result<Option<$crate::operator::TaskMeta>, $crate::StreamsError> {
            $crate::operator::step::restore::<Self, $k, $v>(self, changes)
        }

        fn state_len(&self) -> usize {
            $crate::operator::step::state_len::<Self, $k, $v>(self)
        }

        fn snapshot(&self) -> Vec<serde_json::Value> {
            $crate::operator::step::snapshot::<Self, $k, $v>(self)
        }
    };
}
pub(crate) use stateful_operator;

/// [`Operator::name`]: the step's (and its store's) name.
pub(crate) fn name<'a, O, K, V>(op: &'a O) -> &'a str
where
    O: StatefulStep<K, V>,
    O::State: 'a,
    O::Index: 'a,
{
    &op.parts().name
}

/// [`Operator::process`]: the opening checks, then the step's own
/// [`StatefulStep::apply`]; an error fails the state.
#[inline]
pub(crate) fn process<'a, O, K, V>(
    op: &'a mut O,
    record: Record<K, V>,
    cx: &mut Context<'_>,
    out: &mut Out<O, K, V>,
) -> Option<Record<K, V>>
where
    O: StatefulStep<K, V>,
    O::State: 'a,
    O::Index: 'a,
{
    let parts = op.parts();
    if parts.state.failed() {
        return None;
    }
    if parts.guard.is_replay(&record) {
        cx.metrics.replays_skipped += 1;
        return None;
    }
    let t = record.timestamp;
    if op.is_late(t, cx.watermark) || parts.guard.is_sealed(t) {
        cx.metrics.late_records += 1;
        return Some(record);
    }
    match op.apply(record, cx, out) {
        Ok(None) => None,
        Ok(Some(late)) => {
            cx.metrics.late_records += 1;
            Some(late)
        }
        Err(error) => {
            op.parts_mut().state.fail(error);
            None
        }
    }
}

/// [`Operator::on_watermark`]: the step's own [`StatefulStep::advance`] unless the state
/// failed; an error fails the state.
pub(crate) fn on_watermark<'a, O, K, V>(op: &'a mut O, cx: &mut Context<'_>, out: &mut Out<O, K, V>)
where
    O: StatefulStep<K, V>,
    O::State: 'a,
    O::Index: 'a,
{
    if op.parts().state.failed() {
        return;
    }
    if let Err(error) = op.advance(cx, out) {
        op.parts_mut().state.fail(error);
    }
}

/// [`Operator::checkpoint`]: the index made durable, then the state's changes and `meta`.
pub(crate) fn checkpoint<'a, O, K, V>(
    op: &'a mut O,
    meta: &TaskMeta,
) -> Result<Vec<Change>, StreamsError>
where
    O: StatefulStep<K, V>,
    O::State: 'a,
    O::Index: 'a,
{
    let parts = op.parts_mut();
    parts.index.checkpoint()?;
    parts.state.checkpoint(&mut parts.guard, meta)
}

/// [`Operator::restore`]: the index cleared, the state restored from `changes` and the
/// index rebuilt from its entries, then the step's own [`StatefulStep::restored`].
pub(crate) fn restore<'a, O, K, V>(
    op: &'a mut O,
    changes: Vec<Change>,
) -> Result<Option<TaskMeta>, StreamsError>
where
    O: StatefulStep<K, V>,
    O::State: 'a,
    O::Index: 'a,
{
    let meta = {
        let (mut index_entry, parts) = op.restoring();
        parts.index.clear()?;
        let index = &mut parts.index;
        // The first error stops indexing; the state is still restored whole, then the
        // error is returned (the task fails and starts again from the changelog).
        let mut failed = None;
        let meta = parts
            .state
            .restore(changes, &mut parts.guard, |group, entry, value| {
                if failed.is_none() {
                    failed = index_entry(index, group, entry, value).err();
                }
            })?;
        if let Some(error) = failed {
            return Err(error);
        }
        meta
    };
    op.restored(meta.as_ref())?;
    Ok(meta)
}

/// [`Operator::state_len`]: the state's entries.
pub(crate) fn state_len<'a, O, K, V>(op: &'a O) -> usize
where
    O: StatefulStep<K, V>,
    O::State: 'a,
    O::Index: 'a,
{
    op.parts().state.len()
}

/// [`Operator::snapshot`]: every entry as a row (on disk at most [`SNAPSHOT_ROW_CAP`]); a
/// store error ends the snapshot early and is logged.
pub(crate) fn snapshot<'a, O, K, V>(op: &'a O) -> Vec<serde_json::Value>
where
    O: StatefulStep<K, V>,
    O::State: 'a,
    O::Index: 'a,
{
    let parts = op.parts();
    let mut rows = Vec::with_capacity(parts.state.len().min(SNAPSHOT_ROW_CAP));
    let result = parts
        .state
        .snapshot(SNAPSHOT_ROW_CAP, |group, entry, value| {
            rows.push(op.row(group, entry, value));
        });
    if let Err(error) = result {
        snapshot_failed(&parts.name, &error);
    }
    rows
}

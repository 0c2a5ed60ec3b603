//! Tumbling and hopping windows (Kafka's `TimeWindows`): [`WindowAggregate`].
//!
//! Records fold into one accumulator per (key, window) with the user's `init` and `add`, and
//! the aggregate emits either every update ([`EmitMode::Update`]) or one final result when the
//! window closes ([`EmitMode::Final`]). A record whose windows have all closed is late: it is
//! counted and handed back to the caller as a side output, never dropped silently.
//!
//! Where the accumulators live is the [`StateBackend`]'s choice; the window logic above is
//! the same for both. In memory (`memory`), state between commits is a typed map (open
//! windows → keys → accumulators), which keeps the per-record cost at one hash lookup, and a
//! checkpoint writes the accumulators changed since the previous one to the
//! [`KeyValueStore`]. On disk (`stored`), each record reads and writes its accumulator
//! through the store. The store layout, and so the changelog, is the same either way:
//! `(window, key)` (window first, so a time range scan finds what to close). Closed windows
//! are evicted: a tombstone goes to the changelog if the window had ever been written there.
//!
//! Output records carry [`Windowed`] keys (`window_start`, `window_end`). An update keeps the
//! triggering record's event time and input position; a final result is stamped with the
//! window's last millisecond and [`NO_OFFSET`], since it derives from many input records.

mod memory;
mod stored;

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::operator::{
    stateful_operator, AddFn, Context, InitFn, Operator, ReplayGuard, StatefulStep, StepParts,
    StepState, TaskMeta,
};
use crate::record::{Record, Windowed, NO_OFFSET};
use crate::state::backend::StateBackend;
use crate::state::cell::StoreCell;
use crate::state::store::{Change, KeyValueStore};
use crate::time::Timestamp;
use crate::windows::{window_row, EmitMode, Window, WindowKind, Windows};

use memory::MemoryWindows;
use stored::StoredWindows;

/// Where a [`WindowAggregate`] keeps its accumulators (see [`crate::state::backend`]). An enum
/// rather than a type parameter keeps the operator's type independent of the backend; the
/// match costs one predictable branch per record.
pub(crate) enum Accumulators<K, A> {
    /// Typed in memory, mirrored to the store at checkpoints.
    Memory(MemoryWindows<K, A>),
    /// Read and written through the store on every record.
    Stored(StoredWindows<K, A>),
}

impl<K, A> Accumulators<K, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned,
    A: Serialize + DeserializeOwned,
{
    /// Folds into the accumulator of `key` in window `start` (created by `init` if new).
    /// Inlined so that the in-memory path stays one hash lookup.
    #[inline(always)]
    fn fold<R>(
        &mut self,
        start: Timestamp,
        key: &K,
        init: &InitFn<A>,
        f: impl FnOnce(&mut A) -> R,
    ) -> Result<R, StreamsError> {
        match self {
            Accumulators::Memory(m) => Ok(m.fold(start, key, init, f)),
            Accumulators::Stored(s) => s.fold(start, key, init, f),
        }
    }

    /// The start of the first open window.
    fn first_start(&self) -> Option<Timestamp> {
        match self {
            Accumulators::Memory(m) => m.open.keys().next().copied(),
            Accumulators::Stored(s) => s.first_start(),
        }
    }

    /// Removes window `start`, appending its keys and accumulators in key order when
    /// `values` is set.
    fn close(
        &mut self,
        start: Timestamp,
        values: bool,
        out: &mut Vec<(K, A)>,
    ) -> Result<(), StreamsError> {
        match self {
            Accumulators::Memory(m) => {
                m.close(start, values, out);
                Ok(())
            }
            Accumulators::Stored(s) => s.close(start, values, out),
        }
    }
}

/// The entries of fixed windows are `(key, window start) -> accumulator`. They have no index
/// to rebuild (the open window starts are part of the state), so a restore visits none.
impl<K, A> StepState for Accumulators<K, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    A: Serialize + DeserializeOwned + Send,
{
    type Group = K;
    type Entry = Timestamp;
    type Value = A;

    fn failed(&self) -> bool {
        match self {
            Accumulators::Memory(m) => m.cell.failed(),
            Accumulators::Stored(s) => s.cell.failed(),
        }
    }

    fn fail(&mut self, error: StreamsError) {
        match self {
            Accumulators::Memory(m) => m.cell.fail(error),
            Accumulators::Stored(s) => s.cell.fail(error),
        }
    }

    fn len(&self) -> usize {
        match self {
            Accumulators::Memory(m) => m.open.values().map(HashMap::len).sum(),
            Accumulators::Stored(s) => s.len(),
        }
    }

    fn checkpoint(
        &mut self,
        guard: &mut ReplayGuard,
        meta: &TaskMeta,
    ) -> Result<Vec<Change>, StreamsError> {
        match self {
            Accumulators::Memory(m) => m.checkpoint(guard, meta),
            Accumulators::Stored(s) => s.checkpoint(guard, meta),
        }
    }

    fn restore(
        &mut self,
        changes: Vec<Change>,
        guard: &mut ReplayGuard,
        _visit: impl FnMut(&K, &Timestamp, &A),
    ) -> Result<Option<TaskMeta>, StreamsError> {
        match self {
            Accumulators::Memory(m) => m.restore(changes, guard),
            Accumulators::Stored(s) => s.restore(changes, guard),
        }
    }

    /// In memory every window, oldest first; on disk at most `cap` entries, newest window
    /// first (the store is laid out by window start, so that costs nothing).
    fn snapshot(
        &self,
        cap: usize,
        mut f: impl FnMut(&K, &Timestamp, &A),
    ) -> Result<(), StreamsError> {
        match self {
            Accumulators::Memory(m) => {
                for (start, keys) in &m.open {
                    for (key, slot) in keys {
                        f(key, start, &slot.acc);
                    }
                }
                Ok(())
            }
            Accumulators::Stored(s) => s.snapshot(cap, |start, key: K, acc: A| {
                f(&key, &start, &acc);
            }),
        }
    }
}

/// Windowed aggregation over tumbling or hopping windows, with its accumulators in memory
/// or in its store (see [`crate::state::backend::StateBackend`]); the window logic is the same.
pub struct WindowAggregate<K, V, A> {
    windows: Windows,
    emit: EmitMode,
    init: InitFn<A>,
    add: AddFn<V, A>,
    /// The accumulators; no index (the open window starts close in order); the seal is the
    /// latest start of a closed window.
    parts: StepParts<Accumulators<K, A>, ()>,
    /// The window of the previous record, for tumbling windows only.
    last_tumbling: Option<Window>,
}

impl<K, V, A> WindowAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    /// An aggregate named `name` (its store's name) over `windows`, keeping its accumulators
    /// in memory and mirroring them to `store` at checkpoints.
    pub fn new(
        name: impl Into<String>,
        windows: Windows,
        emit: EmitMode,
        init: InitFn<A>,
        add: AddFn<V, A>,
        store: Box<dyn KeyValueStore>,
    ) -> Self {
        let name = name.into();
        let accs = Accumulators::Memory(MemoryWindows {
            open: BTreeMap::new(),
            evicted: Vec::new(),
            cell: StoreCell::new(&name, Ok(store)),
        });
        Self::with(StepParts::new(name, accs, ()), windows, emit, (init, add))
    }

    /// An aggregate that reads and writes each accumulator through `store` on every record
    /// (for a [`crate::DiskStore`]: state larger than memory). An error opening the store is
    /// reported by the first restore or checkpoint.
    pub fn stored(
        name: impl Into<String>,
        windows: Windows,
        emit: EmitMode,
        init: InitFn<A>,
        add: AddFn<V, A>,
        store: Result<Box<dyn KeyValueStore>, StreamsError>,
    ) -> Self {
        let name = name.into();
        let accs = Accumulators::Stored(StoredWindows::new(&name, store));
        Self::with(StepParts::new(name, accs, ()), windows, emit, (init, add))
    }

    /// An aggregate with its state where `backend` says.
    pub fn with_backend(
        name: impl Into<String>,
        windows: Windows,
        emit: EmitMode,
        init: InitFn<A>,
        add: AddFn<V, A>,
        backend: &StateBackend,
    ) -> Self {
        let name = name.into();
        let store = backend.open(&name);
        match (backend.is_on_disk(), store) {
            (false, Ok(store)) => Self::new(name, windows, emit, init, add, store),
            (_, store) => Self::stored(name, windows, emit, init, add, store),
        }
    }

    fn with(
        parts: StepParts<Accumulators<K, A>, ()>,
        windows: Windows,
        emit: EmitMode,
        (init, add): (InitFn<A>, AddFn<V, A>),
    ) -> Self {
        Self {
            windows,
            emit,
            init,
            add,
            parts,
            last_tumbling: None,
        }
    }

    fn is_closed(&self, window: Window, watermark: Timestamp) -> bool {
        // The seal is the latest start of a window closed (and emitted, in final mode).
        // Windows starting at or before it stay closed even if the watermark goes back,
        // which it does only after an end of input ([`crate::Pipeline::end_of_input`]): a
        // late record then counts as late instead of reopening a window already emitted.
        self.windows.is_closed(window, watermark) || self.parts.guard.is_sealed(window.start)
    }

    /// Folds `record` into `window` unless the window is closed; returns whether it was open.
    #[inline(always)]
    fn update(
        &mut self,
        window: Window,
        record: &Record<K, V>,
        watermark: Timestamp,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<bool, StreamsError> {
        if self.is_closed(window, watermark) {
            return Ok(false);
        }
        let add = &self.add;
        let emit = self.emit == EmitMode::Update;
        let updated = self
            .parts
            .state
            .fold(window.start, &record.key, &self.init, |acc| {
                add(acc, &record.value);
                emit.then(|| acc.clone())
            })?;
        if let Some(acc) = updated {
            out.push(Record {
                key: Windowed {
                    key: record.key.clone(),
                    window_start: window.start,
                    window_end: window.end,
                },
                value: acc,
                timestamp: record.timestamp,
                partition: record.partition,
                offset: record.offset,
            });
        }
        Ok(true)
    }

    /// Folds `record` into each of its windows; returns whether it was late for any.
    fn assign(
        &mut self,
        record: &Record<K, V>,
        watermark: Timestamp,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<bool, StreamsError> {
        let t = record.timestamp;
        // Tumbling windows and mostly ordered input: the record usually falls in the same
        // window as the previous one, which saves the division of window assignment.
        if let Some(window) = self.last_tumbling.filter(|w| w.start <= t && t < w.end) {
            return Ok(!self.update(window, record, watermark, out)?);
        }
        if let WindowKind::Tumbling { .. } = self.windows.kind() {
            if let Some(window) = self.windows.assign(t).next() {
                self.last_tumbling = Some(window);
                return Ok(!self.update(window, record, watermark, out)?);
            }
            return Ok(false);
        }
        let mut late = false;
        for window in self.windows.assign(t) {
            late |= !self.update(window, record, watermark, out)?;
        }
        Ok(late)
    }

    /// Closes every window the watermark closes, oldest first.
    fn close_windows(
        &mut self,
        watermark: Timestamp,
        cx_closed: &mut u64,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<(), StreamsError> {
        let size = self.windows.size_ms();
        let emit = self.emit == EmitMode::Final;
        let mut results = Vec::new();
        while let Some(start) = self.parts.state.first_start() {
            let window = Window {
                start,
                end: start.saturating_add(size),
            };
            if !self.windows.is_closed(window, watermark) {
                break;
            }
            self.parts.guard.seal(start);
            results.clear();
            self.parts.state.close(start, emit, &mut results)?;
            let last = window.end.saturating_sub(1);
            for (key, acc) in results.drain(..) {
                out.push(Record {
                    key: Windowed {
                        key,
                        window_start: start,
                        window_end: window.end,
                    },
                    value: acc,
                    timestamp: last,
                    partition: 0,
                    offset: NO_OFFSET,
                });
            }
            *cx_closed += 1;
        }
        Ok(())
    }
}

impl<K, V, A> Operator<K, V> for WindowAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    V: Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    type OutKey = Windowed<K>;
    type OutValue = A;

    stateful_operator!(K, V);
}

impl<K, V, A> StatefulStep<K, V> for WindowAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    V: Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    type State = Accumulators<K, A>;
    type Index = ();

    fn parts(&self) -> &StepParts<Accumulators<K, A>, ()> {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut StepParts<Accumulators<K, A>, ()> {
        &mut self.parts
    }

    #[inline]
    fn apply(
        &mut self,
        record: Record<K, V>,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<Option<Record<K, V>>, StreamsError> {
        let late = self.assign(&record, cx.watermark, out)?;
        Ok(late.then_some(record))
    }

    fn advance(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<(), StreamsError> {
        self.close_windows(cx.watermark, &mut cx.metrics.windows_closed, out)
    }

    fn restoring(
        &mut self,
    ) -> (
        impl FnMut(&mut (), &K, &Timestamp, &A) -> Result<(), StreamsError>,
        &mut StepParts<Accumulators<K, A>, ()>,
    ) {
        (
            |_: &mut (), _: &K, _: &Timestamp, _: &A| Ok(()),
            &mut self.parts,
        )
    }

    fn restored(&mut self, _meta: Option<&TaskMeta>) -> Result<(), StreamsError> {
        self.last_tumbling = None;
        Ok(())
    }

    fn row(&self, key: &K, &start: &Timestamp, acc: &A) -> serde_json::Value {
        window_row(key, start, start + self.windows.size_ms(), acc)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::dsl::{Pipeline, Stream};

    const SEC: Duration = Duration::from_secs(1);

    type Out = Vec<(String, Timestamp, Timestamp, u64)>;

    fn rows(p: &mut Pipeline<String, u64, Windowed<String>, u64>) -> Out {
        p.take_output()
            .into_iter()
            .map(|r| (r.key.key, r.key.window_start, r.key.window_end, r.value))
            .collect()
    }

    fn tumbling_count(emit: EmitMode) -> Pipeline<String, u64, Windowed<String>, u64> {
        Pipeline::new(move |s: Stream<String, u64>| {
            s.window(Windows::tumbling(10 * SEC).grace(2 * SEC))
                .emit(emit)
                .count()
        })
    }

    fn push(p: &mut Pipeline<String, u64, Windowed<String>, u64>, key: &str, t: Timestamp) {
        p.push(Record::new(key.to_string(), 1, t));
    }

    #[test]
    fn final_mode_emits_once_when_watermark_passes_end_plus_grace() {
        let mut p = tumbling_count(EmitMode::Final);
        push(&mut p, "a", 1_000);
        push(&mut p, "a", 9_000);
        push(&mut p, "a", 11_999);
        assert!(rows(&mut p).is_empty());
        push(&mut p, "b", 12_000);
        assert_eq!(rows(&mut p), vec![("a".into(), 0, 10_000, 2)]);
    }

    #[test]
    fn update_mode_emits_every_update() {
        let mut p = tumbling_count(EmitMode::Update);
        push(&mut p, "a", 1_000);
        push(&mut p, "a", 2_000);
        assert_eq!(
            rows(&mut p),
            vec![("a".into(), 0, 10_000, 1), ("a".into(), 0, 10_000, 2)]
        );
    }

    #[test]
    fn record_within_grace_still_counts() {
        let mut p = tumbling_count(EmitMode::Final);
        push(&mut p, "a", 1_000);
        push(&mut p, "a", 11_000);
        push(&mut p, "a", 5_000);
        p.finish();
        assert_eq!(rows(&mut p)[0], ("a".into(), 0, 10_000, 2));
    }

    #[test]
    fn late_record_is_counted_and_reported() {
        let mut p = tumbling_count(EmitMode::Final);
        push(&mut p, "a", 20_000);
        p.push(Record::new("a".to_string(), 1, 5_000).at(0, 7));
        let late = p.take_late();
        assert_eq!(
            (
                p.metrics().late_records,
                late[0].offset,
                late[0].operator.as_str()
            ),
            (1, 7, "aggregate-0")
        );
    }

    #[test]
    fn late_record_does_not_reopen_closed_window() {
        let mut p = tumbling_count(EmitMode::Final);
        push(&mut p, "a", 1_000);
        push(&mut p, "a", 20_000);
        push(&mut p, "a", 5_000);
        p.finish();
        assert_eq!(
            rows(&mut p),
            vec![("a".into(), 0, 10_000, 1), ("a".into(), 20_000, 30_000, 1)]
        );
    }

    #[test]
    fn on_late_callback_receives_the_late_record() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&seen);
        let mut p = Pipeline::new(move |s: Stream<String, u64>| {
            s.window(Windows::tumbling(10 * SEC).no_grace())
                .on_late(move |r| sink.lock().unwrap().push(r.timestamp))
                .count()
        });
        p.push(Record::new("a".to_string(), 1, 30_000));
        p.push(Record::new("a".to_string(), 1, 3_000));
        assert_eq!(*seen.lock().unwrap(), vec![3_000]);
    }

    #[test]
    fn hopping_record_counts_in_every_window_it_falls_into() {
        let mut p = Pipeline::new(|s: Stream<String, u64>| {
            s.window(Windows::hopping(10 * SEC, 5 * SEC).no_grace())
                .emit(EmitMode::Final)
                .count()
        });
        p.push(Record::new("a".to_string(), 1, 7_000));
        p.finish();
        assert_eq!(
            rows(&mut p),
            vec![("a".into(), 0, 10_000, 1), ("a".into(), 5_000, 15_000, 1)]
        );
    }

    #[test]
    fn partially_late_hopping_record_counts_in_open_windows_and_is_reported() {
        let mut p = Pipeline::new(|s: Stream<String, u64>| {
            s.window(Windows::hopping(10 * SEC, 5 * SEC).no_grace())
                .emit(EmitMode::Final)
                .count()
        });
        p.push(Record::new("a".to_string(), 1, 12_000));
        p.push(Record::new("a".to_string(), 1, 7_000));
        p.finish();
        let counts: Vec<_> = rows(&mut p).into_iter().map(|r| (r.1, r.3)).collect();
        assert_eq!(
            (counts, p.metrics().late_records),
            (vec![(5_000, 2), (10_000, 1)], 1)
        );
    }

    #[test]
    fn closed_windows_are_evicted_from_state() {
        let mut p = tumbling_count(EmitMode::Final);
        push(&mut p, "a", 1_000);
        push(&mut p, "b", 1_000);
        push(&mut p, "a", 30_000);
        assert_eq!(p.state_len(), 1);
    }

    #[test]
    fn evicted_window_leaves_a_tombstone_in_the_changelog() {
        let mut p = tumbling_count(EmitMode::Final);
        push(&mut p, "a", 1_000);
        p.commit().unwrap();
        push(&mut p, "a", 30_000);
        let cp = p.commit().unwrap();
        let tombstones = cp.stores[0]
            .changes
            .iter()
            .filter(|c| c.value.is_none())
            .count();
        assert_eq!(tombstones, 1);
    }

    #[test]
    fn checkpoint_writes_only_changed_windows() {
        let mut p = tumbling_count(EmitMode::Final);
        push(&mut p, "a", 1_000);
        push(&mut p, "b", 1_000);
        p.commit().unwrap();
        push(&mut p, "a", 2_000);
        let cp = p.commit().unwrap();
        // One accumulator plus the task metadata entry.
        assert_eq!(cp.stores[0].changes.len(), 2);
    }
}

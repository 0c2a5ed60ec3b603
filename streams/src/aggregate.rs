//! Windowed aggregation: tumbling and hopping windows ([`WindowAggregate`]) and session
//! windows ([`SessionAggregate`]).
//!
//! Both fold records into one accumulator per (key, window) with the user's `init` and `add`
//! (sessions also `merge` two accumulators when a record bridges them), and emit either every
//! update ([`EmitMode::Update`]) or one final result when the window closes
//! ([`EmitMode::Final`]). A record whose windows have all closed is late: it is counted and
//! handed back to the caller as a side output, never dropped silently.
//!
//! Where the accumulators live is the [`StateBackend`]'s choice; the window logic above is
//! the same for both. In memory, state between commits is a typed map (open windows → keys →
//! accumulators), which keeps the per-record cost at one hash lookup, and a checkpoint
//! writes the accumulators changed since the previous one to the [`KeyValueStore`]. On
//! disk, each record reads and writes its accumulator through the store
//! (the `stored` module has that side). The store layout, and so the changelog, is the same
//! either way: `(window, key)` for fixed windows (window first, so a time range scan finds
//! what to close) and `(key, session start)` for sessions (key first, so a key's sessions
//! are adjacent; see the `keyed` module). Closed windows are evicted: a tombstone goes to the
//! changelog if the window had ever been written there.
//!
//! Output records carry [`Windowed`] keys (`window_start`, `window_end`). An update keeps the
//! triggering record's event time and input position; a final result is stamped with the
//! window's last millisecond and [`NO_OFFSET`], since it derives from many input records.
//! In update mode a session that absorbs another is emitted with its new bounds; no retraction
//! is emitted for the absorbed session (Kafka sends a tombstone for it; a follow-up).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{snapshot_failed, StateBackend, SNAPSHOT_ROW_CAP};
use crate::error::StreamsError;
use crate::keyed::{KeyedState, TimeIndex};
use crate::operator::{Context, Operator, ReplayGuard, TaskMeta, DATA_PREFIX};
use crate::record::{Record, Windowed, NO_OFFSET};
use crate::store::{decode, decode_time, encode, Change, KeyValueStore};
use crate::stored::{window_key, StoreCell, StoredWindows};
use crate::time::Timestamp;
use crate::window::{SessionWindows, Window, WindowKind, Windows};

/// When a windowed aggregate emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitMode {
    /// On every update: each record produces the window's current result (Kafka's default,
    /// Quix's `.current()`). Fast feedback; downstream sees intermediate values.
    #[default]
    Update,
    /// Once, when the window closes (Kafka's `suppress(untilWindowCloses)`, Quix's
    /// `.final()`). One result per window, delayed by the grace period.
    Final,
}

/// Creates an empty accumulator.
pub type InitFn<A> = Box<dyn Fn() -> A + Send>;
/// Folds a value into an accumulator.
pub type AddFn<V, A> = Box<dyn Fn(&mut A, &V) + Send>;
/// Folds the second accumulator into the first (session merges).
pub type MergeFn<A> = Box<dyn Fn(&mut A, A) + Send>;

/// One accumulator plus what the changelog knows about it.
#[derive(Debug, Clone)]
struct Slot<A> {
    acc: A,
    /// Changed since the last checkpoint.
    dirty: bool,
    /// Present in the store (so eviction needs a tombstone).
    persisted: bool,
}

impl<A> Slot<A> {
    fn fresh(acc: A) -> Self {
        Self {
            acc,
            dirty: true,
            persisted: false,
        }
    }
}

/// Window accumulators in typed memory (open windows -> keys -> accumulators), mirrored to
/// the store at checkpoints: one hash lookup per record, no encoding.
struct MemoryWindows<K, A> {
    /// Open windows by start; every window of one definition has the same size, so start
    /// order is close order and closing pops from the front.
    open: BTreeMap<Timestamp, HashMap<K, Slot<A>>>,
    /// Store keys of evicted windows that the changelog has seen; deleted at the next
    /// checkpoint so that processing never touches the store.
    evicted: Vec<Vec<u8>>,
    cell: StoreCell,
}

impl<K, A> MemoryWindows<K, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned,
    A: Serialize + DeserializeOwned,
{
    #[inline(always)]
    fn fold<R>(
        &mut self,
        start: Timestamp,
        key: &K,
        init: &InitFn<A>,
        f: impl FnOnce(&mut A) -> R,
    ) -> R {
        let per_key = self.open.entry(start).or_default();
        // Look up before inserting so the common path (window exists) clones no key.
        let slot = match per_key.get_mut(key) {
            Some(slot) => slot,
            None => per_key
                .entry(key.clone())
                .or_insert_with(|| Slot::fresh(init())),
        };
        slot.dirty = true;
        f(&mut slot.acc)
    }

    fn close(&mut self, start: Timestamp, values: bool, out: &mut Vec<(K, A)>) {
        let Some(per_key) = self.open.remove(&start) else {
            return;
        };
        let first = out.len();
        for (key, slot) in per_key {
            if slot.persisted {
                match window_key(start, &key) {
                    Ok(k) => self.evicted.push(k),
                    Err(error) => tracing::warn!(%error, "cannot encode evicted window key"),
                }
            }
            if values {
                out.push((key, slot.acc));
            }
        }
        // Hash order differs between runs and after a restore; sorting keeps the output
        // deterministic, which tests and downstream consumers rely on.
        out[first..].sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }

    fn checkpoint(
        &mut self,
        guard: &mut ReplayGuard,
        meta: &TaskMeta,
    ) -> Result<Vec<Change>, StreamsError> {
        let store = self.cell.get()?;
        for key in self.evicted.drain(..) {
            store.delete(&key)?;
        }
        for (&start, per_key) in &mut self.open {
            for (key, slot) in per_key.iter_mut().filter(|(_, s)| s.dirty) {
                store.put(window_key(start, key)?, encode(&slot.acc)?)?;
                slot.dirty = false;
                slot.persisted = true;
            }
        }
        self.cell.checkpoint(guard, meta)
    }

    fn restore(
        &mut self,
        changes: Vec<Change>,
        guard: &mut ReplayGuard,
    ) -> Result<Option<TaskMeta>, StreamsError> {
        let store = self.cell.get()?;
        store.restore(changes)?;
        self.open.clear();
        self.evicted.clear();
        for (k, v) in store.prefix(&[DATA_PREFIX])? {
            let (start, rest) = decode_time(&k[1..])?;
            let key: K = decode(rest)?;
            let acc: A = decode(&v)?;
            self.open.entry(start).or_default().insert(
                key,
                Slot {
                    acc,
                    dirty: false,
                    persisted: true,
                },
            );
        }
        guard.restore(store)
    }
}

/// Where a [`WindowAggregate`] keeps its accumulators (see [`crate::backend`]). An enum
/// rather than a type parameter keeps the operator's type independent of the backend; the
/// match costs one predictable branch per record.
enum Accumulators<K, A> {
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

    fn cell(&mut self) -> &mut StoreCell {
        match self {
            Accumulators::Memory(m) => &mut m.cell,
            Accumulators::Stored(s) => s.cell(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Accumulators::Memory(m) => m.open.values().map(HashMap::len).sum(),
            Accumulators::Stored(s) => s.len(),
        }
    }
}

/// Windowed aggregation over tumbling or hopping windows, with its accumulators in memory
/// or in its store (see [`crate::backend::StateBackend`]); the window logic is the same.
pub struct WindowAggregate<K, V, A> {
    name: String,
    windows: Windows,
    emit: EmitMode,
    init: InitFn<A>,
    add: AddFn<V, A>,
    accs: Accumulators<K, A>,
    guard: ReplayGuard,
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
        Self::with(name, windows, emit, init, add, accs)
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
        Self::with(name, windows, emit, init, add, accs)
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
        name: String,
        windows: Windows,
        emit: EmitMode,
        init: InitFn<A>,
        add: AddFn<V, A>,
        accs: Accumulators<K, A>,
    ) -> Self {
        Self {
            name,
            windows,
            emit,
            init,
            add,
            accs,
            guard: ReplayGuard::default(),
            last_tumbling: None,
        }
    }

    fn is_closed(&self, window: Window, watermark: Timestamp) -> bool {
        // The seal is the latest start of a window closed (and emitted, in final mode).
        // Windows starting at or before it stay closed even if the watermark goes back,
        // which it does only after an end of input ([`crate::Pipeline::end_of_input`]): a
        // late record then counts as late instead of reopening a window already emitted.
        self.windows.is_closed(window, watermark) || self.guard.is_sealed(window.start)
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
            .accs
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
        while let Some(start) = self.accs.first_start() {
            let window = Window {
                start,
                end: start.saturating_add(size),
            };
            if !self.windows.is_closed(window, watermark) {
                break;
            }
            self.guard.seal(start);
            results.clear();
            self.accs.close(start, emit, &mut results)?;
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

    fn name(&self) -> &str {
        &self.name
    }

    fn process(
        &mut self,
        record: Record<K, V>,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Option<Record<K, V>> {
        if self.accs.cell().failed() {
            return None;
        }
        if self.guard.is_replay(&record) {
            cx.metrics.replays_skipped += 1;
            return None;
        }
        match self.assign(&record, cx.watermark, out) {
            Ok(false) => None,
            Ok(true) => {
                cx.metrics.late_records += 1;
                Some(record)
            }
            Err(error) => {
                self.accs.cell().fail(error);
                None
            }
        }
    }

    fn on_watermark(&mut self, cx: &mut Context<'_>, out: &mut Vec<Record<Windowed<K>, A>>) {
        if self.accs.cell().failed() {
            return;
        }
        if let Err(error) = self.close_windows(cx.watermark, &mut cx.metrics.windows_closed, out) {
            self.accs.cell().fail(error);
        }
    }

    fn checkpoint(&mut self, meta: &TaskMeta) -> Result<Vec<Change>, StreamsError> {
        match &mut self.accs {
            Accumulators::Memory(m) => m.checkpoint(&mut self.guard, meta),
            Accumulators::Stored(s) => s.checkpoint(&mut self.guard, meta),
        }
    }

    fn restore(&mut self, changes: Vec<Change>) -> Result<Option<TaskMeta>, StreamsError> {
        self.last_tumbling = None;
        match &mut self.accs {
            Accumulators::Memory(m) => m.restore(changes, &mut self.guard),
            Accumulators::Stored(s) => s.restore(changes, &mut self.guard),
        }
    }

    fn state_len(&self) -> usize {
        self.accs.len()
    }

    fn snapshot(&self) -> Vec<serde_json::Value> {
        let size = self.windows.size_ms();
        match &self.accs {
            Accumulators::Memory(m) => {
                let mut rows = Vec::with_capacity(self.state_len());
                for (start, keys) in &m.open {
                    for (key, slot) in keys {
                        rows.push(window_row(key, *start, start + size, &slot.acc));
                    }
                }
                rows
            }
            Accumulators::Stored(s) => {
                // Capped: the store may not fit in memory (see `crate::backend`).
                let mut rows = Vec::with_capacity(self.state_len().min(SNAPSHOT_ROW_CAP));
                let result = s.snapshot(SNAPSHOT_ROW_CAP, |start, key: K, acc: A| {
                    rows.push(window_row(&key, start, start + size, &acc));
                });
                if let Err(error) = result {
                    snapshot_failed(&self.name, &error);
                }
                rows
            }
        }
    }
}

/// One open window as a row: `key`, `window_start`, `window_end`, `value`.
fn window_row<K: Serialize, A: Serialize>(
    key: &K,
    start: Timestamp,
    end: Timestamp,
    acc: &A,
) -> serde_json::Value {
    serde_json::json!({
        "key": serde_json::to_value(key).unwrap_or(serde_json::Value::Null),
        "window_start": start,
        "window_end": end,
        "value": serde_json::to_value(acc).unwrap_or(serde_json::Value::Null),
    })
}

/// A session's value in its state: its end (the start is its entry key) and accumulator.
type SessionValue<A> = (Timestamp, A);

/// The sessions of every key, by start.
type Sessions<K, A> = KeyedState<K, Timestamp, SessionValue<A>>;

/// Open sessions `(key, start)` by close time.
type CloseIndex<K> = TimeIndex<(K, Timestamp)>;

/// What one record did to its key's sessions.
struct SessionChange<A> {
    /// The sessions it replaced (merged into the new one or grown).
    replaced: Vec<Window>,
    /// The session it is in now.
    window: Window,
    /// The session's accumulator, in update mode.
    updated: Option<A>,
}

/// Windowed aggregation over session windows: per key, records closer than the inactivity
/// gap share a session, and a record that bridges two sessions merges them. Sessions are
/// entries `(key, session start) -> (end, accumulator)` of a [`KeyedState`], in memory or on
/// disk (see [`crate::backend`]).
pub struct SessionAggregate<K, V, A> {
    name: String,
    windows: SessionWindows,
    emit: EmitMode,
    init: InitFn<A>,
    add: AddFn<V, A>,
    merge: MergeFn<A>,
    state: Sessions<K, A>,
    /// (close time, (key, session start)) for every open session: what to close next. On
    /// disk when the state is (see [`TimeIndex`]).
    closing: TimeIndex<(K, Timestamp)>,
    /// Replays to skip, and the seal: the latest `end + gap` of a closed session. A record
    /// at or before it could only have joined closed sessions. The watermark makes such
    /// records late anyway, except after an end of input sets it back
    /// ([`crate::Pipeline::end_of_input`]).
    guard: ReplayGuard,
}

impl<K, V, A> SessionAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    /// A session aggregate named `name` (its store's name), in memory and mirrored to
    /// `store` at checkpoints.
    pub fn new(
        name: impl Into<String>,
        windows: SessionWindows,
        emit: EmitMode,
        init: InitFn<A>,
        add: AddFn<V, A>,
        merge: MergeFn<A>,
        store: Box<dyn KeyValueStore>,
    ) -> Self {
        let name = name.into();
        let state = KeyedState::in_memory(&name, store);
        let closing = TimeIndex::Memory(BTreeSet::new());
        Self::with(name, windows, emit, (init, add, merge), (state, closing))
    }

    /// A session aggregate with its state where `backend` says.
    pub fn with_backend(
        name: impl Into<String>,
        windows: SessionWindows,
        emit: EmitMode,
        init: InitFn<A>,
        add: AddFn<V, A>,
        merge: MergeFn<A>,
        backend: &StateBackend,
    ) -> Self {
        let name = name.into();
        let mut state = KeyedState::new(&name, backend);
        let closing = TimeIndex::for_state(&name, backend, &mut state);
        Self::with(name, windows, emit, (init, add, merge), (state, closing))
    }

    fn with(
        name: String,
        windows: SessionWindows,
        emit: EmitMode,
        (init, add, merge): (InitFn<A>, AddFn<V, A>, MergeFn<A>),
        (state, closing): (Sessions<K, A>, CloseIndex<K>),
    ) -> Self {
        Self {
            name,
            windows,
            emit,
            init,
            add,
            merge,
            state,
            closing,
            guard: ReplayGuard::default(),
        }
    }

    /// Adds `record` to its key's sessions: every session it touches becomes one.
    fn assign(&mut self, record: &Record<K, V>) -> Result<SessionChange<A>, StreamsError> {
        let t = record.timestamp;
        let windows = self.windows;
        let (init, add, merge) = (&self.init, &self.add, &self.merge);
        let update = self.emit == EmitMode::Update;
        self.state.update(&record.key, |sessions| {
            let touching: Vec<Timestamp> = sessions
                .iter()
                .filter(|(&start, (end, _))| windows.touches(Window { start, end: *end }, t))
                .map(|(&start, _)| start)
                .collect();
            // Merged into the earliest session, in start order.
            let mut replaced = Vec::with_capacity(touching.len());
            let mut merged: Option<(Window, A)> = None;
            for start in touching {
                let Some((end, acc)) = sessions.remove(&start) else {
                    continue;
                };
                let window = Window { start, end };
                replaced.push(window);
                merged = Some(match merged {
                    None => (window, acc),
                    Some((mut into, mut into_acc)) => {
                        into.end = into.end.max(end);
                        merge(&mut into_acc, acc);
                        (into, into_acc)
                    }
                });
            }
            let (mut window, mut acc) =
                merged.unwrap_or_else(|| (Window { start: t, end: t }, init()));
            window.start = window.start.min(t);
            window.end = window.end.max(t);
            add(&mut acc, &record.value);
            let updated = update.then(|| acc.clone());
            sessions.insert(window.start, (window.end, acc));
            SessionChange {
                replaced,
                window,
                updated,
            }
        })
    }

    /// Closes every session the watermark closes, in close order.
    fn close_sessions(
        &mut self,
        watermark: Timestamp,
        closed: &mut u64,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<(), StreamsError> {
        while let Some((_, due)) = self.closing.pop_due(watermark)? {
            for (key, start) in due {
                let Some((end, acc)) = self.state.update(&key, |s| s.remove(&start))? else {
                    continue;
                };
                self.guard.seal(end.saturating_add(self.windows.gap_ms()));
                *closed += 1;
                if self.emit == EmitMode::Final {
                    out.push(Record {
                        key: Windowed {
                            key,
                            window_start: start,
                            window_end: end,
                        },
                        value: acc,
                        timestamp: end,
                        partition: 0,
                        offset: NO_OFFSET,
                    });
                }
            }
        }
        Ok(())
    }
}

impl<K, V, A> Operator<K, V> for SessionAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    V: Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    type OutKey = Windowed<K>;
    type OutValue = A;

    fn name(&self) -> &str {
        &self.name
    }

    fn process(
        &mut self,
        record: Record<K, V>,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Option<Record<K, V>> {
        if self.state.failed() {
            return None;
        }
        if self.guard.is_replay(&record) {
            cx.metrics.replays_skipped += 1;
            return None;
        }
        let t = record.timestamp;
        if self.windows.is_late(t, cx.watermark) || self.guard.is_sealed(t) {
            cx.metrics.late_records += 1;
            return Some(record);
        }
        let change = match self.assign(&record) {
            Ok(change) => change,
            Err(error) => {
                self.state.fail(error);
                return None;
            }
        };
        let mut index = || -> Result<(), StreamsError> {
            for old in &change.replaced {
                let close_at = self.windows.close_at(*old);
                self.closing
                    .remove(close_at, (record.key.clone(), old.start))?;
            }
            let close_at = self.windows.close_at(change.window);
            self.closing
                .insert(close_at, (record.key.clone(), change.window.start))
        };
        if let Err(error) = index() {
            self.state.fail(error);
            return None;
        }
        if let Some(acc) = change.updated {
            out.push(Record {
                key: Windowed {
                    key: record.key,
                    window_start: change.window.start,
                    window_end: change.window.end,
                },
                value: acc,
                timestamp: t,
                partition: record.partition,
                offset: record.offset,
            });
        }
        None
    }

    fn on_watermark(&mut self, cx: &mut Context<'_>, out: &mut Vec<Record<Windowed<K>, A>>) {
        if self.state.failed() {
            return;
        }
        if let Err(error) = self.close_sessions(cx.watermark, &mut cx.metrics.windows_closed, out) {
            self.state.fail(error);
        }
    }

    fn checkpoint(&mut self, meta: &TaskMeta) -> Result<Vec<Change>, StreamsError> {
        self.closing.checkpoint()?;
        self.state.checkpoint(&mut self.guard, meta)
    }

    fn restore(&mut self, changes: Vec<Change>) -> Result<Option<TaskMeta>, StreamsError> {
        self.closing.clear()?;
        let windows = self.windows;
        let closing = &mut self.closing;
        let mut failed = None;
        let meta = self.state.restore(
            changes,
            &mut self.guard,
            |key: &K, &start: &Timestamp, (end, _): &SessionValue<A>| {
                let window = Window { start, end: *end };
                if failed.is_none() {
                    failed = closing
                        .insert(windows.close_at(window), (key.clone(), start))
                        .err();
                }
            },
        )?;
        match failed {
            Some(error) => Err(error),
            None => Ok(meta),
        }
    }

    fn state_len(&self) -> usize {
        self.state.len()
    }

    fn snapshot(&self) -> Vec<serde_json::Value> {
        let mut rows = Vec::new();
        let result = self.state.snapshot(
            SNAPSHOT_ROW_CAP,
            |key: &K, &start: &Timestamp, (end, acc): &SessionValue<A>| {
                rows.push(window_row(key, start, *end, acc));
            },
        );
        if let Err(error) = result {
            snapshot_failed(&self.name, &error);
        }
        rows
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

    fn sessions(emit: EmitMode) -> Pipeline<String, u64, Windowed<String>, u64> {
        Pipeline::new(move |s: Stream<String, u64>| {
            s.session_window(Windows::session(10 * SEC).no_grace())
                .emit(emit)
                .count()
        })
    }

    #[test]
    fn session_records_within_gap_share_a_session() {
        let mut p = sessions(EmitMode::Final);
        push(&mut p, "u", 0);
        push(&mut p, "u", 10_000);
        push(&mut p, "u", 20_001);
        p.finish();
        assert_eq!(
            rows(&mut p),
            vec![("u".into(), 0, 10_000, 2), ("u".into(), 20_001, 20_001, 1)]
        );
    }

    #[test]
    fn session_bridging_record_merges_two_sessions() {
        let mut p = sessions(EmitMode::Final).event_time(Duration::from_secs(60), None);
        push(&mut p, "u", 0);
        push(&mut p, "u", 20_000);
        push(&mut p, "u", 10_000);
        p.finish();
        assert_eq!(rows(&mut p), vec![("u".into(), 0, 20_000, 3)]);
    }

    #[test]
    fn session_merge_removes_the_merged_away_session_from_the_store() {
        let mut p = sessions(EmitMode::Final).event_time(Duration::from_secs(60), None);
        push(&mut p, "u", 0);
        push(&mut p, "u", 20_000);
        p.commit().unwrap();
        push(&mut p, "u", 10_000);
        let cp = p.commit().unwrap();
        let tombstones = cp.stores[0]
            .changes
            .iter()
            .filter(|c| c.value.is_none())
            .count();
        assert_eq!(tombstones, 1);
    }

    #[test]
    fn session_update_mode_emits_the_grown_session() {
        let mut p = sessions(EmitMode::Update);
        push(&mut p, "u", 0);
        push(&mut p, "u", 5_000);
        assert_eq!(rows(&mut p)[1], ("u".into(), 0, 5_000, 2));
    }

    #[test]
    fn session_record_older_than_watermark_minus_grace_is_late() {
        let mut p = sessions(EmitMode::Final);
        push(&mut p, "u", 50_000);
        push(&mut p, "u", 49_999);
        assert_eq!(p.metrics().late_records, 1);
    }
}

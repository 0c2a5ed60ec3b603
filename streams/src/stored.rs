//! Windowed aggregation whose state lives in its store, for state larger than memory.
//!
//! [`crate::aggregate::WindowAggregate`] keeps every open window's accumulators in a typed
//! hash map and only mirrors them to its store at checkpoints: fast, but all state is in
//! memory. [`StoredWindowAggregate`] reads and writes each accumulator through its
//! [`KeyValueStore`] on every record instead, so with a [`crate::disk::DiskStore`] memory
//! holds only the keys touched since the last commit (the store's write buffer) and the list
//! of open window starts. Semantics are the same (tumbling and hopping windows, grace, update
//! and final emit, late records, replay skipping), and so is the store layout
//! (`window start, key` -> accumulator), changelog and restore.
//!
//! An I/O error of the store cannot be returned from `process`: the operator stops
//! processing and the next checkpoint returns the error, which fails the commit before any
//! input offset is committed. The restarted task restores from the changelog.

use std::collections::BTreeSet;
use std::hash::Hash;
use std::ops::Bound;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aggregate::{AddFn, EmitMode, InitFn};
use crate::error::StreamsError;
use crate::operator::{Context, Operator, ReplayGuard, TaskMeta, DATA_PREFIX, META_KEY};
use crate::record::{Record, Windowed, NO_OFFSET};
use crate::store::{decode, decode_time, encode, encode_into, encode_time, Change, KeyValueStore};
use crate::time::Timestamp;
use crate::window::{Window, Windows};

/// Windowed aggregation over tumbling or hopping windows, with state in the store.
pub struct StoredWindowAggregate<K, V, A> {
    name: String,
    windows: Windows,
    emit: EmitMode,
    init: InitFn<A>,
    add: AddFn<V, A>,
    /// Starts of the windows that have entries in the store.
    open: BTreeSet<Timestamp>,
    /// Entries in the store (accumulators of open windows).
    entries: usize,
    store: Result<Box<dyn KeyValueStore>, Option<StreamsError>>,
    guard: ReplayGuard,
    _types: std::marker::PhantomData<fn(K)>,
}

/// The first key of window `start`'s entries.
fn window_prefix(start: Timestamp) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(DATA_PREFIX);
    key.extend_from_slice(&encode_time(start));
    key
}

impl<K, V, A> StoredWindowAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    /// An aggregate named `name` over `windows` keeping its state in `store` (an error
    /// opening the store is reported by the first restore or checkpoint).
    pub fn new(
        name: impl Into<String>,
        windows: Windows,
        emit: EmitMode,
        init: InitFn<A>,
        add: AddFn<V, A>,
        store: Result<Box<dyn KeyValueStore>, StreamsError>,
    ) -> Self {
        Self {
            name: name.into(),
            windows,
            emit,
            init,
            add,
            open: BTreeSet::new(),
            entries: 0,
            store: store.map_err(Some),
            guard: ReplayGuard::default(),
            _types: std::marker::PhantomData,
        }
    }

    fn store_key(start: Timestamp, key: &K) -> Result<Vec<u8>, StreamsError> {
        let mut buf = window_prefix(start);
        encode_into(key, &mut buf)?;
        Ok(buf)
    }

    /// Folds `record` into `window`; `Ok(false)` when the window is closed.
    fn update(
        &mut self,
        window: Window,
        record: &Record<K, V>,
        watermark: Timestamp,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<bool, StreamsError> {
        if self.windows.is_closed(window, watermark) {
            return Ok(false);
        }
        let Ok(store) = self.store.as_mut() else {
            return Ok(true);
        };
        let key = Self::store_key(window.start, &record.key)?;
        let mut acc = match store.get(&key)? {
            Some(bytes) => decode(&bytes)?,
            None => {
                self.entries += 1;
                self.open.insert(window.start);
                (self.init)()
            }
        };
        (self.add)(&mut acc, &record.value);
        store.put(key, encode(&acc)?)?;
        if self.emit == EmitMode::Update {
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

    /// Closes window `start`: deletes its entries, emitting them in final mode.
    fn close(
        &mut self,
        start: Timestamp,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<(), StreamsError> {
        let Ok(store) = self.store.as_mut() else {
            return Ok(());
        };
        let from = window_prefix(start);
        let to = window_prefix(start.saturating_add(1));
        let bound = if start == Timestamp::MAX {
            Bound::Excluded(META_KEY)
        } else {
            Bound::Excluded(to.as_slice())
        };
        let entries = store.range(Bound::Included(&from), bound)?;
        let end = start.saturating_add(self.windows.size_ms());
        let mut results = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            store.delete(&k)?;
            self.entries = self.entries.saturating_sub(1);
            if self.emit == EmitMode::Final {
                let key: K = decode(&k[from.len()..])?;
                let acc: A = decode(&v)?;
                results.push((key, acc));
            }
        }
        // Key order as the in-memory aggregate emits it (the byte order of encoded keys is
        // not the keys' order).
        results.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, acc) in results {
            out.push(Record {
                key: Windowed {
                    key,
                    window_start: start,
                    window_end: end,
                },
                value: acc,
                timestamp: end.saturating_sub(1),
                partition: 0,
                offset: NO_OFFSET,
            });
        }
        Ok(())
    }

    fn fail(&mut self, error: StreamsError) {
        tracing::error!(store = %self.name, %error, "state store failed; the task stops at its next commit");
        self.store = Err(Some(error));
    }

    fn failure(&mut self) -> StreamsError {
        match &mut self.store {
            Err(error) => error
                .take()
                .unwrap_or_else(|| StreamsError::Store(format!("{} failed earlier", self.name))),
            Ok(_) => StreamsError::Store(format!("{} failed", self.name)),
        }
    }
}

impl<K, V, A> Operator<K, V> for StoredWindowAggregate<K, V, A>
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
        if self.store.is_err() {
            return None;
        }
        if self.guard.is_replay(&record) {
            cx.metrics.replays_skipped += 1;
            return None;
        }
        let mut late = false;
        for window in self.windows.assign(record.timestamp) {
            match self.update(window, &record, cx.watermark, out) {
                Ok(open) => late |= !open,
                Err(error) => {
                    self.fail(error);
                    return None;
                }
            }
        }
        if late {
            cx.metrics.late_records += 1;
            return Some(record);
        }
        None
    }

    fn on_watermark(&mut self, cx: &mut Context<'_>, out: &mut Vec<Record<Windowed<K>, A>>) {
        while let Some(&start) = self.open.first() {
            let window = Window {
                start,
                end: start.saturating_add(self.windows.size_ms()),
            };
            if !self.windows.is_closed(window, cx.watermark) {
                break;
            }
            self.open.remove(&start);
            if let Err(error) = self.close(start, out) {
                self.fail(error);
                return;
            }
            cx.metrics.windows_closed += 1;
        }
    }

    fn checkpoint(&mut self, meta: &TaskMeta) -> Result<Vec<Change>, StreamsError> {
        if self.store.is_err() {
            return Err(self.failure());
        }
        let Ok(store) = self.store.as_mut() else {
            return Err(self.failure());
        };
        self.guard.checkpoint(store.as_mut(), meta)?;
        Ok(store.take_changes())
    }

    fn restore(&mut self, changes: Vec<Change>) -> Result<Option<TaskMeta>, StreamsError> {
        if self.store.is_err() {
            return Err(self.failure());
        }
        let Ok(store) = self.store.as_mut() else {
            return Err(self.failure());
        };
        store.restore(changes)?;
        // The open windows, found one start at a time (never the whole state in memory):
        // the first entry at or after the previous start + 1.
        self.open.clear();
        let mut from = window_prefix(Timestamp::MIN);
        while let Some((key, _)) = store.first(Bound::Included(&from), Bound::Excluded(META_KEY))? {
            let (start, _) = decode_time(&key[1..])?;
            self.open.insert(start);
            if start == Timestamp::MAX {
                break;
            }
            from = window_prefix(start + 1);
        }
        let meta = self.guard.restore(store.as_ref())?;
        self.entries = store.len().saturating_sub(usize::from(meta.is_some()));
        Ok(meta)
    }

    fn state_len(&self) -> usize {
        self.entries
    }
}

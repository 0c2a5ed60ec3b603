//! Windowed aggregation: tumbling and hopping windows ([`WindowAggregate`]) and session
//! windows ([`SessionAggregate`]).
//!
//! Both fold records into one accumulator per (key, window) with the user's `init` and `add`
//! (sessions also `merge` two accumulators when a record bridges them), and emit either every
//! update ([`EmitMode::Update`]) or one final result when the window closes
//! ([`EmitMode::Final`]). A record whose windows have all closed is late: it is counted and
//! handed back to the caller as a side output, never dropped silently.
//!
//! State between commits is a typed map (open windows → keys → accumulators), which keeps the
//! per-record cost at one hash lookup. At a checkpoint the accumulators changed since the
//! previous one are written to the [`KeyValueStore`] under `(window, key)` for fixed windows
//! (window first, so a time range scan finds what to close) and `(key, session start)` for
//! sessions (key first, so a key's sessions are adjacent). Closed windows are evicted: a
//! tombstone goes to the changelog if the window had ever been written there.
//!
//! Output records carry [`Windowed`] keys (`window_start`, `window_end`). An update keeps the
//! triggering record's event time and input position; a final result is stamped with the
//! window's last millisecond and [`NO_OFFSET`], since it derives from many input records.
//! In update mode a session that absorbs another is emitted with its new bounds; no retraction
//! is emitted for the absorbed session (Kafka sends a tombstone for it; a follow-up).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::ops::Bound;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::operator::{Context, Operator, ReplayGuard, TaskMeta, DATA_PREFIX};
use crate::record::{Record, Windowed, NO_OFFSET};
use crate::store::{
    decode, decode_prefix, decode_time, encode, encode_into, encode_time, Change, KeyValueStore,
};
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

/// Windowed aggregation over tumbling or hopping windows.
pub struct WindowAggregate<K, V, A> {
    name: String,
    windows: Windows,
    emit: EmitMode,
    init: InitFn<A>,
    add: AddFn<V, A>,
    /// Open windows by start; every window of one definition has the same size, so start
    /// order is close order and closing pops from the front.
    open: BTreeMap<Timestamp, HashMap<K, Slot<A>>>,
    /// Store keys of evicted windows that the changelog has seen; deleted at the next
    /// checkpoint so that processing never touches the store.
    evicted: Vec<Vec<u8>>,
    store: Box<dyn KeyValueStore>,
    guard: ReplayGuard,
    /// The window of the previous record, for tumbling windows only.
    last_tumbling: Option<Window>,
}

impl<K, V, A> WindowAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    /// An aggregate named `name` (its store's name) over `windows`, keeping state in `store`.
    pub fn new(
        name: impl Into<String>,
        windows: Windows,
        emit: EmitMode,
        init: InitFn<A>,
        add: AddFn<V, A>,
        store: Box<dyn KeyValueStore>,
    ) -> Self {
        Self {
            name: name.into(),
            windows,
            emit,
            init,
            add,
            open: BTreeMap::new(),
            evicted: Vec::new(),
            store,
            guard: ReplayGuard::default(),
            last_tumbling: None,
        }
    }

    fn store_key(start: Timestamp, key: &K) -> Result<Vec<u8>, StreamsError> {
        let mut buf = Vec::with_capacity(16);
        buf.push(DATA_PREFIX);
        buf.extend_from_slice(&encode_time(start));
        encode_into(key, &mut buf)?;
        Ok(buf)
    }

    /// Folds `record` into `window` unless the window is closed; returns whether it was open.
    fn update(
        &mut self,
        window: Window,
        record: &Record<K, V>,
        watermark: Timestamp,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> bool {
        if self.windows.is_closed(window, watermark) {
            return false;
        }
        let per_key = self.open.entry(window.start).or_default();
        // Look up before inserting so the common path (window exists) clones no key.
        let slot = match per_key.get_mut(&record.key) {
            Some(slot) => slot,
            None => per_key
                .entry(record.key.clone())
                .or_insert_with(|| Slot::fresh((self.init)())),
        };
        (self.add)(&mut slot.acc, &record.value);
        slot.dirty = true;
        if self.emit == EmitMode::Update {
            out.push(Record {
                key: Windowed {
                    key: record.key.clone(),
                    window_start: window.start,
                    window_end: window.end,
                },
                value: slot.acc.clone(),
                timestamp: record.timestamp,
                partition: record.partition,
                offset: record.offset,
            });
        }
        true
    }

    fn output(
        &self,
        key: K,
        start: Timestamp,
        acc: A,
        timestamp: Timestamp,
    ) -> Record<Windowed<K>, A> {
        Record {
            key: Windowed {
                key,
                window_start: start,
                window_end: start.saturating_add(self.windows.size_ms()),
            },
            value: acc,
            timestamp,
            partition: 0,
            offset: NO_OFFSET,
        }
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
        if self.guard.is_replay(&record) {
            cx.metrics.replays_skipped += 1;
            return None;
        }
        let mut late = false;
        let t = record.timestamp;
        // Tumbling windows and mostly ordered input: the record usually falls in the same
        // window as the previous one, which saves the division of window assignment.
        if let Some(window) = self.last_tumbling.filter(|w| w.start <= t && t < w.end) {
            late = !self.update(window, &record, cx.watermark, out);
        } else if let WindowKind::Tumbling { .. } = self.windows.kind() {
            if let Some(window) = self.windows.assign(t).next() {
                self.last_tumbling = Some(window);
                late = !self.update(window, &record, cx.watermark, out);
            }
        } else {
            for window in self.windows.assign(t) {
                late |= !self.update(window, &record, cx.watermark, out);
            }
        }
        if late {
            cx.metrics.late_records += 1;
            return Some(record);
        }
        None
    }

    fn on_watermark(&mut self, cx: &mut Context<'_>, out: &mut Vec<Record<Windowed<K>, A>>) {
        let size = self.windows.size_ms();
        while let Some(entry) = self.open.first_entry() {
            let start = *entry.key();
            let window = Window {
                start,
                end: start.saturating_add(size),
            };
            if !self.windows.is_closed(window, cx.watermark) {
                break;
            }
            let mut slots: Vec<(K, Slot<A>)> = entry.remove().into_iter().collect();
            // Hash order differs between runs and after a restore; sorting keeps the output
            // deterministic, which tests and downstream consumers rely on.
            slots.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, slot) in slots {
                if slot.persisted {
                    match Self::store_key(start, &key) {
                        Ok(k) => self.evicted.push(k),
                        Err(error) => tracing::warn!(%error, "cannot encode evicted window key"),
                    }
                }
                if self.emit == EmitMode::Final {
                    let last = window.end.saturating_sub(1);
                    out.push(self.output(key, start, slot.acc, last));
                }
            }
            cx.metrics.windows_closed += 1;
        }
    }

    fn checkpoint(&mut self, meta: &TaskMeta) -> Result<Vec<Change>, StreamsError> {
        for key in self.evicted.drain(..) {
            self.store.delete(&key)?;
        }
        for (&start, per_key) in &mut self.open {
            for (key, slot) in per_key.iter_mut().filter(|(_, s)| s.dirty) {
                self.store
                    .put(Self::store_key(start, key)?, encode(&slot.acc)?)?;
                slot.dirty = false;
                slot.persisted = true;
            }
        }
        self.guard.checkpoint(self.store.as_mut(), meta)?;
        Ok(self.store.take_changes())
    }

    fn restore(&mut self, changes: Vec<Change>) -> Result<Option<TaskMeta>, StreamsError> {
        self.store.restore(changes)?;
        self.open.clear();
        self.evicted.clear();
        let data = self.store.prefix(&[DATA_PREFIX])?;
        for (k, v) in data {
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
        self.guard.restore(self.store.as_ref())
    }

    fn state_len(&self) -> usize {
        self.open.values().map(HashMap::len).sum()
    }

    fn snapshot(&self) -> Vec<serde_json::Value> {
        let size = self.windows.size_ms();
        let mut rows = Vec::with_capacity(self.state_len());
        for (start, keys) in &self.open {
            for (key, slot) in keys {
                rows.push(window_row(key, *start, start + size, &slot.acc));
            }
        }
        rows
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

/// One session of one key.
#[derive(Debug, Clone)]
struct Session<A> {
    window: Window,
    slot: Slot<A>,
}

/// Windowed aggregation over session windows: per key, records closer than the inactivity
/// gap share a session, and a record that bridges two sessions merges them.
pub struct SessionAggregate<K, V, A> {
    name: String,
    windows: SessionWindows,
    emit: EmitMode,
    init: InitFn<A>,
    add: AddFn<V, A>,
    merge: MergeFn<A>,
    /// Sessions per key, sorted by start, never overlapping within the gap.
    sessions: HashMap<K, Vec<Session<A>>>,
    /// (close time, key, session start) for every open session: what to close next.
    closing: BTreeSet<(Timestamp, K, Timestamp)>,
    evicted: Vec<Vec<u8>>,
    store: Box<dyn KeyValueStore>,
    guard: ReplayGuard,
}

impl<K, V, A> SessionAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    /// A session aggregate named `name` (its store's name), keeping state in `store`.
    pub fn new(
        name: impl Into<String>,
        windows: SessionWindows,
        emit: EmitMode,
        init: InitFn<A>,
        add: AddFn<V, A>,
        merge: MergeFn<A>,
        store: Box<dyn KeyValueStore>,
    ) -> Self {
        Self {
            name: name.into(),
            windows,
            emit,
            init,
            add,
            merge,
            sessions: HashMap::new(),
            closing: BTreeSet::new(),
            evicted: Vec::new(),
            store,
            guard: ReplayGuard::default(),
        }
    }

    fn store_key(key: &K, start: Timestamp) -> Result<Vec<u8>, StreamsError> {
        let mut buf = vec![DATA_PREFIX];
        encode_into(key, &mut buf)?;
        buf.extend_from_slice(&encode_time(start));
        Ok(buf)
    }

    fn evict(&mut self, key: &K, start: Timestamp) {
        match Self::store_key(key, start) {
            Ok(k) => self.evicted.push(k),
            Err(error) => tracing::warn!(%error, "cannot encode evicted session key"),
        }
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
        if self.guard.is_replay(&record) {
            cx.metrics.replays_skipped += 1;
            return None;
        }
        let t = record.timestamp;
        if self.windows.is_late(t, cx.watermark) {
            cx.metrics.late_records += 1;
            return Some(record);
        }
        let mut list = self.sessions.remove(&record.key).unwrap_or_default();
        // Take out every session the record touches; they become one.
        let mut merged: Option<Session<A>> = None;
        let mut i = 0;
        while i < list.len() {
            if !self.windows.touches(list[i].window, t) {
                i += 1;
                continue;
            }
            let s = list.remove(i);
            self.closing.remove(&(
                self.windows.close_at(s.window),
                record.key.clone(),
                s.window.start,
            ));
            merged = Some(match merged {
                None => s,
                Some(mut m) => {
                    if s.slot.persisted {
                        self.evict(&record.key, s.window.start);
                    }
                    m.window.end = m.window.end.max(s.window.end);
                    (self.merge)(&mut m.slot.acc, s.slot.acc);
                    m
                }
            });
        }
        let mut session = merged.unwrap_or_else(|| Session {
            window: Window { start: t, end: t },
            slot: Slot::fresh((self.init)()),
        });
        if t < session.window.start {
            // The store key contains the start: the old entry goes, a new one comes.
            if session.slot.persisted {
                self.evict(&record.key, session.window.start);
                session.slot.persisted = false;
            }
            session.window.start = t;
        }
        session.window.end = session.window.end.max(t);
        (self.add)(&mut session.slot.acc, &record.value);
        session.slot.dirty = true;
        self.closing.insert((
            self.windows.close_at(session.window),
            record.key.clone(),
            session.window.start,
        ));
        if self.emit == EmitMode::Update {
            out.push(Record {
                key: Windowed {
                    key: record.key.clone(),
                    window_start: session.window.start,
                    window_end: session.window.end,
                },
                value: session.slot.acc.clone(),
                timestamp: t,
                partition: record.partition,
                offset: record.offset,
            });
        }
        let pos = list.partition_point(|s| s.window.start < session.window.start);
        list.insert(pos, session);
        self.sessions.insert(record.key, list);
        None
    }

    fn on_watermark(&mut self, cx: &mut Context<'_>, out: &mut Vec<Record<Windowed<K>, A>>) {
        while let Some((close_at, _, _)) = self.closing.first() {
            if *close_at > cx.watermark {
                break;
            }
            let Some((_, key, start)) = self.closing.pop_first() else {
                break;
            };
            let Some(list) = self.sessions.get_mut(&key) else {
                continue;
            };
            let Some(pos) = list.iter().position(|s| s.window.start == start) else {
                continue;
            };
            let session = list.remove(pos);
            if list.is_empty() {
                self.sessions.remove(&key);
            }
            if session.slot.persisted {
                self.evict(&key, start);
            }
            cx.metrics.windows_closed += 1;
            if self.emit == EmitMode::Final {
                out.push(Record {
                    key: Windowed {
                        key,
                        window_start: session.window.start,
                        window_end: session.window.end,
                    },
                    value: session.slot.acc,
                    timestamp: session.window.end,
                    partition: 0,
                    offset: NO_OFFSET,
                });
            }
        }
    }

    fn checkpoint(&mut self, meta: &TaskMeta) -> Result<Vec<Change>, StreamsError> {
        for key in self.evicted.drain(..) {
            self.store.delete(&key)?;
        }
        for (key, list) in &mut self.sessions {
            for s in list.iter_mut().filter(|s| s.slot.dirty) {
                self.store.put(
                    Self::store_key(key, s.window.start)?,
                    encode(&(s.window.end, &s.slot.acc))?,
                )?;
                s.slot.dirty = false;
                s.slot.persisted = true;
            }
        }
        self.guard.checkpoint(self.store.as_mut(), meta)?;
        Ok(self.store.take_changes())
    }

    fn restore(&mut self, changes: Vec<Change>) -> Result<Option<TaskMeta>, StreamsError> {
        self.store.restore(changes)?;
        self.sessions.clear();
        self.closing.clear();
        self.evicted.clear();
        let data = self.store.range(
            Bound::Included(&[DATA_PREFIX]),
            Bound::Excluded(&[DATA_PREFIX + 1]),
        )?;
        for (k, v) in data {
            let (key, rest): (K, _) = decode_prefix(&k[1..])?;
            let (start, _) = decode_time(rest)?;
            let (end, acc): (Timestamp, A) = decode(&v)?;
            let window = Window { start, end };
            self.closing
                .insert((self.windows.close_at(window), key.clone(), start));
            let list = self.sessions.entry(key).or_default();
            let pos = list.partition_point(|s| s.window.start < start);
            list.insert(
                pos,
                Session {
                    window,
                    slot: Slot {
                        acc,
                        dirty: false,
                        persisted: true,
                    },
                },
            );
        }
        self.guard.restore(self.store.as_ref())
    }

    fn state_len(&self) -> usize {
        self.closing.len()
    }

    fn snapshot(&self) -> Vec<serde_json::Value> {
        self.sessions
            .iter()
            .flat_map(|(key, sessions)| {
                sessions.iter().map(move |session| {
                    window_row(
                        key,
                        session.window.start,
                        session.window.end,
                        &session.slot.acc,
                    )
                })
            })
            .collect()
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

//! Windowed aggregation over sliding windows (Kafka's `SlidingWindows`).
//!
//! Every window is `[end - diff, end]` (inclusive) and exists when a record defines it: the
//! window ending at a record, or the window starting just after a record when it holds any
//! record (see [`sliding_windows`](crate::window::sliding_windows)). So a window is named by
//! its end, and the candidate ends of a key are `t` and `t + 1 + diff` for each record `t`.
//!
//! Aggregates are not assumed invertible, so the operator keeps each key's records while they
//! can still be in an open window and folds a window's records when it emits it. That costs
//! O(records per window) per emitted window: fine for the modest rates sliding windows are
//! used with; an incremental form (Kafka stores each window's aggregate) is a later step.
//!
//! Lateness: a record is late when the window ending at it is closed (the watermark passed
//! `t + grace`), and then it is refused as a whole. A record that is not late can only touch
//! windows that are still open, which keeps final results equal to a batch computation over
//! the records that were not late. Kafka instead still adds such a record to the open windows
//! after it; we prefer the simpler, checkable rule and report the record as late.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aggregate::{AddFn, EmitMode, InitFn};
use crate::error::StreamsError;
use crate::operator::{Context, Operator, ReplayGuard, TaskMeta, DATA_PREFIX};
use crate::record::{Record, Windowed, NO_OFFSET};
use crate::store::{
    decode, decode_prefix, decode_time, encode, encode_into, encode_time, Change, KeyValueStore,
};
use crate::time::{Timestamp, MIN_WATERMARK};
use crate::window::SlidingWindows;

/// The values of one key at one event time, and what the changelog knows about them.
#[derive(Debug, Clone)]
struct Bucket<V> {
    values: Vec<V>,
    dirty: bool,
    persisted: bool,
}

/// The sliding window aggregate operator.
pub struct SlidingAggregate<K, V, A> {
    name: String,
    windows: SlidingWindows,
    emit: EmitMode,
    init: InitFn<A>,
    add: AddFn<V, A>,
    /// Per key, the records that may still be in an open window, by event time.
    records: HashMap<K, BTreeMap<Timestamp, Bucket<V>>>,
    /// Candidate window ends not yet closed, with their key.
    ends: BTreeSet<(Timestamp, K)>,
    evicted: Vec<Vec<u8>>,
    store: Box<dyn KeyValueStore>,
    guard: ReplayGuard,
}

impl<K, V, A> SlidingAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    V: Clone + Serialize + DeserializeOwned + Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    /// A sliding aggregate named `name` (its store's name), keeping state in `store`.
    pub fn new(
        name: impl Into<String>,
        windows: SlidingWindows,
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
            records: HashMap::new(),
            ends: BTreeSet::new(),
            evicted: Vec::new(),
            store,
            guard: ReplayGuard::default(),
        }
    }

    fn store_key(key: &K, t: Timestamp) -> Result<Vec<u8>, StreamsError> {
        let mut buf = vec![DATA_PREFIX];
        encode_into(key, &mut buf)?;
        buf.extend_from_slice(&encode_time(t));
        Ok(buf)
    }

    /// The latest window end that is closed under `watermark`.
    fn closed_through(&self, watermark: Timestamp) -> Timestamp {
        if watermark == MIN_WATERMARK {
            return MIN_WATERMARK;
        }
        watermark
            .saturating_sub(1)
            .saturating_sub(self.windows.grace_ms())
    }

    /// The aggregate of the window ending at `end` for records `recs`, if that window exists.
    fn window_at(&self, recs: &BTreeMap<Timestamp, Bucket<V>>, end: Timestamp) -> Option<A> {
        let diff = self.windows.diff_ms();
        let start = end.saturating_sub(diff);
        let ends_at_record = recs.contains_key(&end);
        let after_record = recs.contains_key(&start.saturating_sub(1));
        let mut in_window = recs.range(start..=end).peekable();
        // It exists as the window ending at a record, or as the (non-empty) window starting
        // just after one.
        if !(ends_at_record || (after_record && in_window.peek().is_some())) {
            return None;
        }
        let mut acc = (self.init)();
        for (_, bucket) in in_window {
            for v in &bucket.values {
                (self.add)(&mut acc, v);
            }
        }
        Some(acc)
    }

    fn output(
        &self,
        key: K,
        end: Timestamp,
        acc: A,
        record: Option<(i64, u32)>,
    ) -> Record<Windowed<K>, A> {
        let (offset, partition) = record.unwrap_or((NO_OFFSET, 0));
        Record {
            key: Windowed {
                key,
                window_start: end.saturating_sub(self.windows.diff_ms()),
                window_end: end,
            },
            value: acc,
            timestamp: end,
            partition,
            offset,
        }
    }
}

impl<K, V, A> Operator<K, V> for SlidingAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    V: Clone + Serialize + DeserializeOwned + Send,
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
        if cx.watermark > t.saturating_add(self.windows.grace_ms()) {
            cx.metrics.late_records += 1;
            return Some(record);
        }
        let diff = self.windows.diff_ms();
        let recs = self.records.entry(record.key.clone()).or_default();
        let bucket = recs.entry(t).or_insert_with(|| Bucket {
            values: Vec::new(),
            dirty: true,
            persisted: false,
        });
        bucket.values.push(record.value);
        bucket.dirty = true;
        self.ends.insert((t, record.key.clone()));
        self.ends
            .insert((t.saturating_add(1).saturating_add(diff), record.key.clone()));
        if self.emit == EmitMode::Update {
            if let Some(recs) = self.records.get(&record.key) {
                // Every existing window containing t: ends in [t, t + diff] that are a
                // record's time or one past the end of a record's right window; plus t's own
                // right window, which t creates without being in it.
                let mut ends: BTreeSet<Timestamp> = recs
                    .range(t..=t.saturating_add(diff))
                    .map(|(&r, _)| r)
                    .collect();
                ends.insert(t.saturating_add(1).saturating_add(diff));
                ends.extend(
                    recs.range(t.saturating_sub(1).saturating_sub(diff)..t)
                        .map(|(&p, _)| p.saturating_add(1).saturating_add(diff)),
                );
                for end in ends {
                    if let Some(acc) = self.window_at(recs, end) {
                        let o = self.output(
                            record.key.clone(),
                            end,
                            acc,
                            Some((record.offset, record.partition)),
                        );
                        out.push(Record { timestamp: t, ..o });
                    }
                }
            }
        }
        None
    }

    fn on_watermark(&mut self, cx: &mut Context<'_>, out: &mut Vec<Record<Windowed<K>, A>>) {
        let closed = self.closed_through(cx.watermark);
        let diff = self.windows.diff_ms();
        while let Some((end, _)) = self.ends.first() {
            if *end > closed {
                break;
            }
            let Some((end, key)) = self.ends.pop_first() else {
                break;
            };
            let Some(recs) = self.records.get(&key) else {
                continue;
            };
            if let Some(acc) = self.window_at(recs, end) {
                cx.metrics.windows_closed += 1;
                if self.emit == EmitMode::Final {
                    let o = self.output(key.clone(), end, acc, None);
                    out.push(o);
                }
            }
            // Records before end - diff are in no later window and define no later end.
            let Some(recs) = self.records.get_mut(&key) else {
                continue;
            };
            let keep = recs.split_off(&end.saturating_sub(diff));
            let gone = std::mem::replace(recs, keep);
            for (t, bucket) in gone {
                if bucket.persisted {
                    match Self::store_key(&key, t) {
                        Ok(k) => self.evicted.push(k),
                        Err(error) => tracing::warn!(%error, "cannot encode evicted record key"),
                    }
                }
            }
            if recs.is_empty() {
                self.records.remove(&key);
            }
        }
    }

    fn checkpoint(&mut self, meta: &TaskMeta) -> Result<Vec<Change>, StreamsError> {
        for key in self.evicted.drain(..) {
            self.store.delete(&key)?;
        }
        for (key, recs) in &mut self.records {
            for (&t, bucket) in recs.iter_mut().filter(|(_, b)| b.dirty) {
                self.store
                    .put(Self::store_key(key, t)?, encode(&bucket.values)?)?;
                bucket.dirty = false;
                bucket.persisted = true;
            }
        }
        self.guard.checkpoint(self.store.as_mut(), meta)?;
        Ok(self.store.take_changes())
    }

    fn restore(&mut self, changes: Vec<Change>) -> Result<Option<TaskMeta>, StreamsError> {
        self.store.restore(changes)?;
        self.records.clear();
        self.ends.clear();
        self.evicted.clear();
        let meta = self.guard.restore(self.store.as_ref())?;
        // Ends already closed at the checkpoint were emitted then; do not emit them again.
        let closed = self.closed_through(meta.as_ref().map_or(MIN_WATERMARK, |m| m.watermark));
        let diff = self.windows.diff_ms();
        for (k, v) in self.store.prefix(&[DATA_PREFIX])? {
            let (key, rest): (K, _) = decode_prefix(&k[1..])?;
            let (t, _) = decode_time(rest)?;
            let values: Vec<V> = decode(&v)?;
            for end in [t, t.saturating_add(1).saturating_add(diff)] {
                if end > closed {
                    self.ends.insert((end, key.clone()));
                }
            }
            self.records.entry(key).or_default().insert(
                t,
                Bucket {
                    values,
                    dirty: false,
                    persisted: true,
                },
            );
        }
        Ok(meta)
    }

    fn state_len(&self) -> usize {
        self.records.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dsl::{Pipeline, Stream};
    use crate::window::Windows;

    type Rows = Vec<(Timestamp, Timestamp, u64)>;

    fn run(emit: EmitMode, times: &[Timestamp]) -> Rows {
        let mut p = Pipeline::new(move |s: Stream<u8, ()>| {
            s.sliding_window(Windows::sliding(Duration::from_millis(5)).no_grace())
                .emit(emit)
                .count()
        })
        .event_time(Duration::from_millis(100), None);
        for &t in times {
            p.push(Record::new(1, (), t));
        }
        p.finish();
        p.take_output()
            .into_iter()
            .map(|r| (r.key.window_start, r.key.window_end, r.value))
            .collect()
    }

    #[test]
    fn final_mode_emits_one_result_per_kafka_sliding_window() {
        assert_eq!(
            run(EmitMode::Final, &[10, 15]),
            vec![(5, 10, 1), (10, 15, 2), (11, 16, 1)]
        );
    }

    #[test]
    fn records_further_apart_than_diff_never_share_a_window() {
        assert_eq!(
            run(EmitMode::Final, &[10, 16]),
            vec![(5, 10, 1), (11, 16, 1)]
        );
    }

    #[test]
    fn update_mode_emits_every_window_the_record_changes() {
        let rows = run(EmitMode::Update, &[10, 12]);
        assert_eq!(rows, vec![(5, 10, 1), (7, 12, 2), (11, 16, 1)]);
    }

    #[test]
    fn record_older_than_watermark_minus_grace_is_late() {
        let mut p = Pipeline::new(|s: Stream<u8, ()>| {
            s.sliding_window(Windows::sliding(Duration::from_millis(5)).no_grace())
                .count()
        });
        p.push(Record::new(1, (), 100));
        p.push(Record::new(1, (), 99));
        assert_eq!(p.metrics().late_records, 1);
    }
}

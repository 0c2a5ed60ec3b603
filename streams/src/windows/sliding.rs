//! Windowed aggregation over sliding windows (Kafka's `SlidingWindows`).
//!
//! Every window is `[end - diff, end]` (inclusive) and exists when a record defines it: the
//! window ending at a record, or the window starting just after a record when it holds any
//! record (see [`sliding_windows`](crate::windows::sliding_windows)). So a window is named by
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
//!
//! The same rule holds after an end of input ([`crate::Pipeline::end_of_input`]), which
//! closes every window and then sets the watermark back: a record at or before the latest
//! window end closed (the seal, kept across restarts) is late, since it would change a
//! window already emitted or one whose end was already dropped.

use std::collections::BTreeSet;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::operator::{
    stateful_operator, AddFn, Context, InitFn, Operator, StatefulStep, StepParts, TaskMeta,
};
use crate::record::{Record, Windowed, NO_OFFSET};
use crate::state::backend::StateBackend;
use crate::state::keyed::{Group, KeyedState};
use crate::state::store::KeyValueStore;
use crate::state::time_index::TimeIndex;
use crate::time::{Timestamp, MIN_WATERMARK};
use crate::windows::{EmitMode, SlidingWindows};

/// The records of one key that may still be in an open window: values by event time.
type Records<V> = Group<Timestamp, Vec<V>>;

/// Each key's records by event time.
type Buffered<K, V> = KeyedState<K, Timestamp, Vec<V>>;

/// Candidate window ends not yet closed, with their key.
type Ends<K> = TimeIndex<K>;

/// The aggregate of the window ending at `end` over `recs`, if that window exists.
fn window_at<V, A>(
    recs: &Records<V>,
    end: Timestamp,
    diff: i64,
    init: &InitFn<A>,
    add: &AddFn<V, A>,
) -> Option<A> {
    let start = end.saturating_sub(diff);
    let ends_at_record = recs.contains(&end);
    let after_record = recs.contains(&start.saturating_sub(1));
    let mut in_window = recs.range(start..=end).peekable();
    // It exists as the window ending at a record, or as the (non-empty) window starting
    // just after one.
    if !(ends_at_record || (after_record && in_window.peek().is_some())) {
        return None;
    }
    let mut acc = init();
    for (_, values) in in_window {
        for v in values {
            add(&mut acc, v);
        }
    }
    Some(acc)
}

/// The sliding window aggregate operator. Each key's records are entries
/// `(key, event time) -> values` of a [`KeyedState`], in memory or on disk (see
/// [`crate::state::backend`]).
pub struct SlidingAggregate<K, V, A> {
    windows: SlidingWindows,
    emit: EmitMode,
    init: InitFn<A>,
    add: AddFn<V, A>,
    /// The records; their index is the candidate window ends not yet closed, with their key
    /// (on disk when the state is, see [`TimeIndex`]); the seal is the latest window end
    /// closed.
    parts: StepParts<Buffered<K, V>, Ends<K>>,
}

impl<K, V, A> SlidingAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    V: Clone + Serialize + DeserializeOwned + Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    /// A sliding aggregate named `name` (its store's name), in memory and mirrored to
    /// `store` at checkpoints.
    pub fn new(
        name: impl Into<String>,
        windows: SlidingWindows,
        emit: EmitMode,
        init: InitFn<A>,
        add: AddFn<V, A>,
        store: Box<dyn KeyValueStore>,
    ) -> Self {
        let parts = StepParts::in_memory(name.into(), store);
        Self::with(windows, emit, (init, add), parts)
    }

    /// A sliding aggregate with its state where `backend` says.
    pub fn with_backend(
        name: impl Into<String>,
        windows: SlidingWindows,
        emit: EmitMode,
        init: InitFn<A>,
        add: AddFn<V, A>,
        backend: &StateBackend,
    ) -> Self {
        let parts = StepParts::with_backend(name.into(), backend);
        Self::with(windows, emit, (init, add), parts)
    }

    fn with(
        windows: SlidingWindows,
        emit: EmitMode,
        (init, add): (InitFn<A>, AddFn<V, A>),
        parts: StepParts<Buffered<K, V>, Ends<K>>,
    ) -> Self {
        Self {
            windows,
            emit,
            init,
            add,
            parts,
        }
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

    /// Adds a record's value at `t`; in update mode returns every window it changed, by end.
    fn insert(
        &mut self,
        key: &K,
        t: Timestamp,
        value: V,
    ) -> Result<Vec<(Timestamp, A)>, StreamsError> {
        let diff = self.windows.diff_ms();
        let update = self.emit == EmitMode::Update;
        let (init, add) = (&self.init, &self.add);
        self.parts.state.update(key, |recs| {
            match recs.get_mut(&t) {
                Some(values) => values.push(value),
                None => recs.insert(t, vec![value]),
            }
            if !update {
                return Vec::new();
            }
            // Every existing window containing t: ends in [t, t + diff] that are a record's
            // time or one past the end of a record's right window; plus t's own right
            // window, which t creates without being in it.
            let mut ends: BTreeSet<Timestamp> = recs
                .range(t..=t.saturating_add(diff))
                .map(|(&r, _)| r)
                .collect();
            ends.insert(t.saturating_add(1).saturating_add(diff));
            ends.extend(
                recs.range(t.saturating_sub(1).saturating_sub(diff)..t)
                    .map(|(&p, _)| p.saturating_add(1).saturating_add(diff)),
            );
            ends.into_iter()
                .filter_map(|end| window_at(recs, end, diff, init, add).map(|acc| (end, acc)))
                .collect()
        })
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

    stateful_operator!(K, V);
}

impl<K, V, A> StatefulStep<K, V> for SlidingAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    V: Clone + Serialize + DeserializeOwned + Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    type State = Buffered<K, V>;
    type Index = Ends<K>;

    fn parts(&self) -> &StepParts<Buffered<K, V>, Ends<K>> {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut StepParts<Buffered<K, V>, Ends<K>> {
        &mut self.parts
    }

    fn is_late(&self, t: Timestamp, watermark: Timestamp) -> bool {
        watermark > t.saturating_add(self.windows.grace_ms())
    }

    fn apply(
        &mut self,
        record: Record<K, V>,
        _cx: &mut Context<'_>,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<Option<Record<K, V>>, StreamsError> {
        let diff = self.windows.diff_ms();
        let Record {
            key,
            value,
            timestamp: t,
            partition,
            offset,
        } = record;
        let updates = self.insert(&key, t, value)?;
        self.parts.index.insert(t, key.clone())?;
        self.parts
            .index
            .insert(t.saturating_add(1).saturating_add(diff), key.clone())?;
        for (end, acc) in updates {
            let o = self.output(key.clone(), end, acc, Some((offset, partition)));
            out.push(Record { timestamp: t, ..o });
        }
        Ok(None)
    }

    /// Emits (in final mode) the windows the watermark closes, in end order, and drops the
    /// records no later window needs.
    fn advance(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<(), StreamsError> {
        let closed_through = self.closed_through(cx.watermark);
        let diff = self.windows.diff_ms();
        while let Some((end, keys)) = self.parts.index.pop_due(closed_through)? {
            // Whether or not a window exists there, its end is gone: a record at or before
            // it could only add to windows that are emitted or no longer tracked.
            self.parts.guard.seal(end);
            for key in keys {
                let (init, add) = (&self.init, &self.add);
                let acc = self.parts.state.update(&key, |recs| {
                    let acc = window_at(recs, end, diff, init, add);
                    // Records before end - diff are in no later window and define no later
                    // end.
                    recs.remove_before(&end.saturating_sub(diff));
                    acc
                })?;
                if let Some(acc) = acc {
                    cx.metrics.windows_closed += 1;
                    if self.emit == EmitMode::Final {
                        out.push(self.output(key, end, acc, None));
                    }
                }
            }
        }
        Ok(())
    }

    fn restoring(
        &mut self,
    ) -> (
        impl FnMut(&mut Ends<K>, &K, &Timestamp, &Vec<V>) -> Result<(), StreamsError>,
        &mut StepParts<Buffered<K, V>, Ends<K>>,
    ) {
        let diff = self.windows.diff_ms();
        let index_record = move |ends: &mut Ends<K>, key: &K, &t: &Timestamp, _: &Vec<V>| {
            let right = t.saturating_add(1).saturating_add(diff);
            ends.insert(t, key.clone())?;
            ends.insert(right, key.clone())
        };
        (index_record, &mut self.parts)
    }

    fn restored(&mut self, meta: Option<&TaskMeta>) -> Result<(), StreamsError> {
        // Ends already closed at the checkpoint were emitted then (or sealed by an end of
        // input); do not emit them again.
        let closed = self.closed_through(meta.map_or(MIN_WATERMARK, |m| m.watermark));
        let closed = self.parts.guard.sealed().map_or(closed, |s| s.max(closed));
        while self.parts.index.pop_due(closed)?.is_some() {}
        Ok(())
    }

    /// The buffered records a sliding window is computed from, one row per key and
    /// timestamp: `key`, `timestamp`, `values` (on disk at most
    /// [`SNAPSHOT_ROW_CAP`](crate::state::SNAPSHOT_ROW_CAP) rows, see
    /// [`crate::state::backend`]).
    fn row(&self, key: &K, t: &Timestamp, values: &Vec<V>) -> serde_json::Value {
        serde_json::json!({
            "key": serde_json::to_value(key).unwrap_or(serde_json::Value::Null),
            "timestamp": t,
            "values": serde_json::to_value(values).unwrap_or(serde_json::Value::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dsl::{Pipeline, Stream};
    use crate::windows::Windows;

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

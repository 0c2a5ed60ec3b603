//! Session windows: [`SessionAggregate`].
//!
//! Per key, records closer than the inactivity gap share a session, folded into one
//! accumulator with the user's `init` and `add`; a record that bridges two sessions merges
//! them (and their accumulators, with `merge`). Sessions emit every update
//! ([`EmitMode::Update`]) or one final result when they close ([`EmitMode::Final`]); a record
//! that could only join closed sessions is late: counted and handed back as a side output.
//!
//! Sessions are keyed state ([`KeyedState`], in memory or on disk: see
//! [`crate::state::backend`]) with one entry per session under `(key, session start)` (key
//! first, so a key's sessions are adjacent), and a [`TimeIndex`] of what closes next.
//!
//! A final result is stamped with the session's last record time and [`NO_OFFSET`]. In
//! update mode a session that absorbs another is emitted with its new bounds; no retraction
//! is emitted for the absorbed session (Kafka sends a tombstone for it; a follow-up).

use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StreamsError;
use crate::operator::{
    stateful_operator, AddFn, Context, InitFn, MergeFn, Operator, StatefulStep, StepParts,
};
use crate::record::{Record, Windowed, NO_OFFSET};
use crate::state::backend::StateBackend;
use crate::state::keyed::KeyedState;
use crate::state::store::KeyValueStore;
use crate::state::time_index::TimeIndex;
use crate::time::Timestamp;
use crate::windows::{window_row, EmitMode, SessionWindows, Window};

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
/// disk (see [`crate::state::backend`]).
pub struct SessionAggregate<K, V, A> {
    windows: SessionWindows,
    emit: EmitMode,
    init: InitFn<A>,
    add: AddFn<V, A>,
    merge: MergeFn<A>,
    /// The sessions; their index is `(close time, (key, session start))` for every open
    /// session: what to close next (on disk when the state is, see [`TimeIndex`]). The seal
    /// is the latest `end + gap` of a closed session: a record at or before it could only
    /// have joined closed sessions. The watermark makes such records late anyway, except
    /// after an end of input sets it back ([`crate::Pipeline::end_of_input`]).
    parts: StepParts<Sessions<K, A>, CloseIndex<K>>,
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
        let parts = StepParts::in_memory(name.into(), store);
        Self::with(windows, emit, (init, add, merge), parts)
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
        let parts = StepParts::with_backend(name.into(), backend);
        Self::with(windows, emit, (init, add, merge), parts)
    }

    fn with(
        windows: SessionWindows,
        emit: EmitMode,
        (init, add, merge): (InitFn<A>, AddFn<V, A>, MergeFn<A>),
        parts: StepParts<Sessions<K, A>, CloseIndex<K>>,
    ) -> Self {
        Self {
            windows,
            emit,
            init,
            add,
            merge,
            parts,
        }
    }

    /// Adds `record` to its key's sessions: every session it touches becomes one.
    fn assign(&mut self, record: &Record<K, V>) -> Result<SessionChange<A>, StreamsError> {
        let t = record.timestamp;
        let windows = self.windows;
        let (init, add, merge) = (&self.init, &self.add, &self.merge);
        let update = self.emit == EmitMode::Update;
        self.parts.state.update(&record.key, |sessions| {
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
}

impl<K, V, A> Operator<K, V> for SessionAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    V: Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    type OutKey = Windowed<K>;
    type OutValue = A;

    stateful_operator!(K, V);
}

impl<K, V, A> StatefulStep<K, V> for SessionAggregate<K, V, A>
where
    K: Hash + Eq + Ord + Clone + Serialize + DeserializeOwned + Send,
    V: Send,
    A: Clone + Serialize + DeserializeOwned + Send,
{
    type State = Sessions<K, A>;
    type Index = CloseIndex<K>;

    fn parts(&self) -> &StepParts<Sessions<K, A>, CloseIndex<K>> {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut StepParts<Sessions<K, A>, CloseIndex<K>> {
        &mut self.parts
    }

    fn is_late(&self, t: Timestamp, watermark: Timestamp) -> bool {
        self.windows.is_late(t, watermark)
    }

    fn apply(
        &mut self,
        record: Record<K, V>,
        _cx: &mut Context<'_>,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<Option<Record<K, V>>, StreamsError> {
        let change = self.assign(&record)?;
        for old in &change.replaced {
            let close_at = self.windows.close_at(*old);
            self.parts
                .index
                .remove(close_at, (record.key.clone(), old.start))?;
        }
        let close_at = self.windows.close_at(change.window);
        self.parts
            .index
            .insert(close_at, (record.key.clone(), change.window.start))?;
        if let Some(acc) = change.updated {
            out.push(Record {
                key: Windowed {
                    key: record.key,
                    window_start: change.window.start,
                    window_end: change.window.end,
                },
                value: acc,
                timestamp: record.timestamp,
                partition: record.partition,
                offset: record.offset,
            });
        }
        Ok(None)
    }

    /// Closes every session the watermark closes, in close order.
    fn advance(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<Windowed<K>, A>>,
    ) -> Result<(), StreamsError> {
        let parts = &mut self.parts;
        while let Some((_, due)) = parts.index.pop_due(cx.watermark)? {
            for (key, start) in due {
                let Some((end, acc)) = parts.state.update(&key, |s| s.remove(&start))? else {
                    continue;
                };
                parts.guard.seal(end.saturating_add(self.windows.gap_ms()));
                cx.metrics.windows_closed += 1;
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

    fn restoring(
        &mut self,
    ) -> (
        impl FnMut(&mut CloseIndex<K>, &K, &Timestamp, &SessionValue<A>) -> Result<(), StreamsError>,
        &mut StepParts<Sessions<K, A>, CloseIndex<K>>,
    ) {
        let windows = self.windows;
        let index_session = move |closing: &mut CloseIndex<K>,
                                  key: &K,
                                  &start: &Timestamp,
                                  (end, _): &SessionValue<A>| {
            let window = Window { start, end: *end };
            closing.insert(windows.close_at(window), (key.clone(), start))
        };
        (index_session, &mut self.parts)
    }

    fn row(&self, key: &K, &start: &Timestamp, (end, acc): &SessionValue<A>) -> serde_json::Value {
        window_row(key, start, *end, acc)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::dsl::{Pipeline, Stream};
    use crate::windows::Windows;

    const SEC: Duration = Duration::from_secs(1);

    type Out = Vec<(String, Timestamp, Timestamp, u64)>;

    fn rows(p: &mut Pipeline<String, u64, Windowed<String>, u64>) -> Out {
        p.take_output()
            .into_iter()
            .map(|r| (r.key.key, r.key.window_start, r.key.window_end, r.value))
            .collect()
    }

    fn push(p: &mut Pipeline<String, u64, Windowed<String>, u64>, key: &str, t: Timestamp) {
        p.push(Record::new(key.to_string(), 1, t));
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

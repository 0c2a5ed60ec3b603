//! Windowed stream-stream joins (Kafka Streams' `KStream#join(KStream, JoinWindows)`).
//!
//! Two streams keyed alike flow through one pipeline as a stream of [`Side`] values (see
//! [`crate::runtime::Source::sides`] for reading two sets of topics that way). A left record
//! at `tl` and a right record at `tr` with the same key join when `|tl - tr| <= max_diff`.
//! Both sides are buffered per key; each pair is emitted exactly once, when its second record
//! arrives, stamped with the later of the two event times.
//!
//! Time, with grace `g` and join window `w`:
//! - a record is late when the watermark is already past `t + g`: counted, handed back as a
//!   side output, not joined;
//! - a buffered record expires when the watermark passes `t + w + g`: no record that is not
//!   late can match it any more (a later record's time is at least `watermark - g`);
//! - after an end of input ([`crate::Pipeline::end_of_input`]), which expires every buffered
//!   record and then sets the watermark back, a record within the join window of an expired
//!   record (at or before the seal: the latest expired time + `w`, kept across restarts) is
//!   late too: it would have to join a record that is gone, or that a left or outer join
//!   already emitted as unmatched.
//!
//! So the result is the batch answer over the records that were not late: every pair within
//! the window, once. Left and outer joins also emit, when a record expires without having
//! matched anything, the record with `None` for the other side (as Kafka Streams does since
//! 3.1, rather than emitting it eagerly and retracting it later).
//!
//! The buffers are keyed state (in memory, or on disk: see [`crate::state::backend`]) with one
//! entry per buffered record under `(key, side, time, sequence)`: a commit writes new records
//! (and records whose "matched" flag changed) and deletes expired ones, and the buffers are
//! restored from the changelog like every other store.

use std::hash::Hash;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StreamsError;
use crate::operator::{stateful_operator, Context, Operator, StatefulStep, StepParts};
use crate::record::{Record, NO_OFFSET};
use crate::state::backend::StateBackend;
use crate::state::keyed::KeyedState;
use crate::state::store::KeyValueStore;
use crate::state::time_index::TimeIndex;
use crate::time::{millis, Timestamp};

/// Which input of a join a value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side<L, R> {
    /// The left input.
    Left(L),
    /// The right input.
    Right(R),
}

/// A join window definition waiting for its grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a join window needs an explicit grace period: call .grace(d) or .no_grace()"]
pub struct JoinWindowsBuilder {
    max_diff: i64,
}

/// A complete join window: records join when their event times differ by at most
/// `max_diff`; records are accepted up to `grace` behind the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindows {
    max_diff: i64,
    grace: i64,
}

impl JoinWindows {
    /// Records join when `|t_left - t_right| <= max_diff`.
    pub fn of(max_diff: Duration) -> JoinWindowsBuilder {
        JoinWindowsBuilder {
            max_diff: millis(max_diff),
        }
    }

    /// The largest time difference of a joined pair, in ms.
    pub fn max_diff_ms(&self) -> i64 {
        self.max_diff
    }

    /// The grace period, in ms.
    pub fn grace_ms(&self) -> i64 {
        self.grace
    }

    /// Whether a record at `t` is late under `watermark`.
    pub fn is_late(&self, t: Timestamp, watermark: Timestamp) -> bool {
        watermark > t.saturating_add(self.grace)
    }

    /// Whether a buffered record at `t` can be dropped under `watermark`.
    pub fn is_expired(&self, t: Timestamp, watermark: Timestamp) -> bool {
        watermark > t.saturating_add(self.max_diff).saturating_add(self.grace)
    }
}

impl JoinWindowsBuilder {
    /// Accepts records up to `grace` behind the watermark.
    pub fn grace(self, grace: Duration) -> JoinWindows {
        JoinWindows {
            max_diff: self.max_diff,
            grace: millis(grace),
        }
    }

    /// Accepts no record behind the watermark.
    pub fn no_grace(self) -> JoinWindows {
        self.grace(Duration::ZERO)
    }
}

/// Which unmatched records a join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Pairs only.
    Inner,
    /// Pairs, and left records that matched nothing.
    Left,
    /// Pairs, and records of either side that matched nothing.
    Outer,
}

/// Makes a join result from the key and the two sides (`None` only for unmatched records of
/// left and outer joins).
pub type JoinFn<K, L, R, O> = Box<dyn Fn(&K, Option<&L>, Option<&R>) -> Option<O> + Send>;

/// Position of a buffered record: side, event time, then arrival sequence (unique per
/// operator).
type Slot = (u8, Timestamp, u64);

/// A buffered record and whether it joined with at least one record of the other side.
type Buffered<L, R> = (Side<L, R>, bool);

/// Both sides' buffered records of every key.
type Buffers<K, L, R> = KeyedState<K, Slot, Buffered<L, R>>;

/// A buffered record in the expiry index: its arrival sequence (unique per operator, so it
/// alone orders and identifies the records of one time), side and key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Expiring<K> {
    seq: u64,
    side: u8,
    key: K,
}

impl<K> PartialEq for Expiring<K> {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl<K> Eq for Expiring<K> {}

impl<K> PartialOrd for Expiring<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Expiring<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.seq.cmp(&other.seq)
    }
}

const LEFT: u8 = 0;
const RIGHT: u8 = 1;

/// Every buffered record by expiry order: time, then arrival.
type Expiry<K> = TimeIndex<Expiring<K>>;

/// The windowed join operator. Both sides' buffered records of a key are entries
/// `(key, side, time, sequence) -> (value, matched)` of a [`KeyedState`], in memory or on
/// disk (see [`crate::state::backend`]).
pub struct WindowJoin<K, L, R, O> {
    windows: JoinWindows,
    kind: JoinKind,
    joiner: JoinFn<K, L, R, O>,
    next_seq: u64,
    /// The buffers; their index is every buffered record by expiry order (on disk when the
    /// state is, see [`TimeIndex`]); the seal is the latest expired time + the join window.
    parts: StepParts<Buffers<K, L, R>, Expiry<K>>,
}

impl<K, L, R, O> WindowJoin<K, L, R, O>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
    L: Serialize + DeserializeOwned + Send,
    R: Serialize + DeserializeOwned + Send,
{
    /// A join named `name` (its store's name) over `windows`, keeping its buffers in memory
    /// and mirroring them to `store` at checkpoints.
    pub fn new(
        name: impl Into<String>,
        windows: JoinWindows,
        kind: JoinKind,
        joiner: JoinFn<K, L, R, O>,
        store: Box<dyn KeyValueStore>,
    ) -> Self {
        let parts = StepParts::in_memory(name.into(), store);
        Self::with(windows, kind, joiner, parts)
    }

    /// A join with its buffers where `backend` says.
    pub fn with_backend(
        name: impl Into<String>,
        windows: JoinWindows,
        kind: JoinKind,
        joiner: JoinFn<K, L, R, O>,
        backend: &StateBackend,
    ) -> Self {
        let parts = StepParts::with_backend(name.into(), backend);
        Self::with(windows, kind, joiner, parts)
    }

    fn with(
        windows: JoinWindows,
        kind: JoinKind,
        joiner: JoinFn<K, L, R, O>,
        parts: StepParts<Buffers<K, L, R>, Expiry<K>>,
    ) -> Self {
        WindowJoin {
            windows,
            kind,
            joiner,
            next_seq: 0,
            parts,
        }
    }

    /// The buffered records of `side` that a record at `t` joins with.
    fn window_range(&self, side: u8, t: Timestamp) -> std::ops::RangeInclusive<Slot> {
        let w = self.windows.max_diff;
        (side, t.saturating_sub(w), 0)..=(side, t.saturating_add(w), u64::MAX)
    }

    fn result(
        &self,
        value: O,
        timestamp: Timestamp,
        partition: u32,
        offset: i64,
        key: K,
    ) -> Record<K, O> {
        Record {
            key,
            value,
            timestamp,
            partition,
            offset,
        }
    }

    /// Buffers `value` at `(t, seq)` and joins it with the other side's buffered records;
    /// returns the results with their event times.
    fn join(
        &mut self,
        key: &K,
        value: Side<L, R>,
        t: Timestamp,
        seq: u64,
    ) -> Result<Vec<(O, Timestamp)>, StreamsError> {
        let other = match value {
            Side::Left(_) => RIGHT,
            Side::Right(_) => LEFT,
        };
        let range = self.window_range(other, t);
        let joiner = &self.joiner;
        self.parts.state.update(key, |buffers| {
            let mut results = Vec::new();
            let mut matched = false;
            buffers.update_range(range, |&(_, t_other, _), (buffered, was_matched)| {
                let joined = match (&value, &*buffered) {
                    (Side::Left(l), Side::Right(r)) => joiner(key, Some(l), Some(r)),
                    (Side::Right(r), Side::Left(l)) => joiner(key, Some(l), Some(r)),
                    // The range holds the other side only.
                    _ => return false,
                };
                if let Some(o) = joined {
                    results.push((o, t.max(t_other)));
                }
                matched = true;
                !std::mem::replace(was_matched, true)
            });
            let side = if other == RIGHT { LEFT } else { RIGHT };
            buffers.insert((side, t, seq), (value, matched));
            results
        })
    }

    /// Drops the buffered records the watermark expires, emitting the unmatched ones of
    /// left and outer joins.
    fn expire(
        &mut self,
        watermark: Timestamp,
        out: &mut Vec<Record<K, O>>,
    ) -> Result<(), StreamsError> {
        // The latest time `is_expired` holds for (none before the first watermark).
        let Some(through) = watermark
            .checked_sub(self.windows.max_diff)
            .and_then(|w| w.checked_sub(self.windows.grace))
            .and_then(|w| w.checked_sub(1))
        else {
            return Ok(());
        };
        while let Some((t, due)) = self.parts.index.pop_due(through)? {
            self.parts
                .guard
                .seal(t.saturating_add(self.windows.max_diff));
            for Expiring { seq, side, key } in due {
                let (kind, joiner) = (self.kind, &self.joiner);
                // The unmatched side of a left or outer join is emitted now that nothing can
                // match it any more.
                let result = self.parts.state.update(&key, |buffers| {
                    let (value, matched) = buffers.remove(&(side, t, seq))?;
                    if matched {
                        return None;
                    }
                    match value {
                        Side::Left(l) if kind != JoinKind::Inner => joiner(&key, Some(&l), None),
                        Side::Right(r) if kind == JoinKind::Outer => joiner(&key, None, Some(&r)),
                        _ => None,
                    }
                })?;
                if let Some(o) = result {
                    out.push(self.result(o, t, 0, NO_OFFSET, key));
                }
            }
        }
        Ok(())
    }
}

impl<K, L, R, O> Operator<K, Side<L, R>> for WindowJoin<K, L, R, O>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
    L: Serialize + DeserializeOwned + Send,
    R: Serialize + DeserializeOwned + Send,
    O: Send,
{
    type OutKey = K;
    type OutValue = O;

    stateful_operator!(K, Side<L, R>);
}

impl<K, L, R, O> StatefulStep<K, Side<L, R>> for WindowJoin<K, L, R, O>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
    L: Serialize + DeserializeOwned + Send,
    R: Serialize + DeserializeOwned + Send,
    O: Send,
{
    type State = Buffers<K, L, R>;
    type Index = Expiry<K>;

    fn parts(&self) -> &StepParts<Buffers<K, L, R>, Expiry<K>> {
        &self.parts
    }

    fn parts_mut(&mut self) -> &mut StepParts<Buffers<K, L, R>, Expiry<K>> {
        &mut self.parts
    }

    fn is_late(&self, t: Timestamp, watermark: Timestamp) -> bool {
        self.windows.is_late(t, watermark)
    }

    fn apply(
        &mut self,
        record: Record<K, Side<L, R>>,
        _cx: &mut Context<'_>,
        out: &mut Vec<Record<K, O>>,
    ) -> Result<Option<Record<K, Side<L, R>>>, StreamsError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let Record {
            key,
            value,
            timestamp: t,
            partition,
            offset,
        } = record;
        let side = match value {
            Side::Left(_) => LEFT,
            Side::Right(_) => RIGHT,
        };
        let results = self.join(&key, value, t, seq)?;
        for (o, timestamp) in results {
            out.push(self.result(o, timestamp, partition, offset, key.clone()));
        }
        self.parts.index.insert(t, Expiring { seq, side, key })?;
        Ok(None)
    }

    fn advance(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<K, O>>,
    ) -> Result<(), StreamsError> {
        self.expire(cx.watermark, out)
    }

    fn restoring(
        &mut self,
    ) -> (
        impl FnMut(&mut Expiry<K>, &K, &Slot, &Buffered<L, R>) -> Result<(), StreamsError>,
        &mut StepParts<Buffers<K, L, R>, Expiry<K>>,
    ) {
        // Sequence numbers go on after the largest restored one.
        let next_seq = &mut self.next_seq;
        let index_record =
            move |expiry: &mut Expiry<K>, key: &K, &(side, t, seq): &Slot, _: &Buffered<L, R>| {
                *next_seq = (*next_seq).max(seq.saturating_add(1));
                let key = key.clone();
                expiry.insert(t, Expiring { seq, side, key })
            };
        (index_record, &mut self.parts)
    }

    fn row(
        &self,
        key: &K,
        &(_, t, _): &Slot,
        (value, matched): &Buffered<L, R>,
    ) -> serde_json::Value {
        let json = |v: Result<serde_json::Value, serde_json::Error>| v.unwrap_or_default();
        let (side, value) = match value {
            Side::Left(l) => ("left", json(serde_json::to_value(l))),
            Side::Right(r) => ("right", json(serde_json::to_value(r))),
        };
        serde_json::json!({
            "key": json(serde_json::to_value(key)), "side": side, "timestamp": t,
            "matched": matched, "value": value,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn late_and_expiry_bounds_follow_grace_and_window() {
        let w = JoinWindows::of(Duration::from_millis(100)).grace(Duration::from_millis(10));
        assert!(!w.is_late(1_000, 1_010));
        assert!(w.is_late(1_000, 1_011));
        assert!(!w.is_expired(1_000, 1_110));
        assert!(w.is_expired(1_000, 1_111));
    }
}

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
//!   late can match it any more (a later record's time is at least `watermark - g`).
//!
//! So the result is the batch answer over the records that were not late: every pair within
//! the window, once. Left and outer joins also emit, when a record expires without having
//! matched anything, the record with `None` for the other side (as Kafka Streams does since
//! 3.1, rather than emitting it eagerly and retracting it later).
//!
//! State between commits is a typed map per key; at a checkpoint new buffered records (and
//! records whose "matched" flag changed) go to the [`KeyValueStore`] under
//! `(side, time, sequence, key)`, expired ones are deleted: the buffers are restored from the
//! changelog like every other store.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StreamsError;
use crate::operator::{Context, Operator, ReplayGuard, TaskMeta, DATA_PREFIX};
use crate::record::{Record, NO_OFFSET};
use crate::store::{decode, decode_time, encode, encode_into, encode_time, Change, KeyValueStore};
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

/// A buffered record.
#[derive(Debug, Clone)]
struct Buffered<T> {
    value: T,
    /// Joined with at least one record of the other side.
    matched: bool,
    /// Changed since the last checkpoint.
    dirty: bool,
    /// Present in the store.
    persisted: bool,
}

/// Position of a buffered record: event time, then arrival sequence (unique per operator).
type Slot = (Timestamp, u64);

/// Both sides' buffered records of one key.
#[derive(Debug)]
struct Buffers<L, R> {
    left: BTreeMap<Slot, Buffered<L>>,
    right: BTreeMap<Slot, Buffered<R>>,
}

impl<L, R> Default for Buffers<L, R> {
    fn default() -> Self {
        Buffers {
            left: BTreeMap::new(),
            right: BTreeMap::new(),
        }
    }
}

const LEFT: u8 = 0;
const RIGHT: u8 = 1;

/// The windowed join operator.
pub struct WindowJoin<K, L, R, O> {
    name: String,
    windows: JoinWindows,
    kind: JoinKind,
    joiner: JoinFn<K, L, R, O>,
    buffers: HashMap<K, Buffers<L, R>>,
    /// Every buffered record by expiry order: slot -> (side, key).
    expiry: BTreeMap<Slot, (u8, K)>,
    next_seq: u64,
    evicted: Vec<Vec<u8>>,
    store: Box<dyn KeyValueStore>,
    guard: ReplayGuard,
}

impl<K, L, R, O> WindowJoin<K, L, R, O>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned + Send,
    L: Serialize + DeserializeOwned + Send,
    R: Serialize + DeserializeOwned + Send,
{
    /// A join named `name` (its store's name) over `windows`, keeping its buffers in `store`.
    pub fn new(
        name: impl Into<String>,
        windows: JoinWindows,
        kind: JoinKind,
        joiner: JoinFn<K, L, R, O>,
        store: Box<dyn KeyValueStore>,
    ) -> Self {
        WindowJoin {
            name: name.into(),
            windows,
            kind,
            joiner,
            buffers: HashMap::new(),
            expiry: BTreeMap::new(),
            next_seq: 0,
            evicted: Vec::new(),
            store,
            guard: ReplayGuard::default(),
        }
    }

    fn store_key(side: u8, (t, seq): Slot, key: &K) -> Result<Vec<u8>, StreamsError> {
        let mut buf = Vec::with_capacity(24);
        buf.push(DATA_PREFIX);
        buf.push(side);
        buf.extend_from_slice(&encode_time(t));
        buf.extend_from_slice(&seq.to_be_bytes());
        encode_into(key, &mut buf)?;
        Ok(buf)
    }

    fn window_range(&self, t: Timestamp) -> std::ops::RangeInclusive<Slot> {
        let w = self.windows.max_diff;
        (t.saturating_sub(w), 0)..=(t.saturating_add(w), u64::MAX)
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

    fn name(&self) -> &str {
        &self.name
    }

    fn process(
        &mut self,
        record: Record<K, Side<L, R>>,
        cx: &mut Context<'_>,
        out: &mut Vec<Record<K, O>>,
    ) -> Option<Record<K, Side<L, R>>> {
        if self.guard.is_replay(&record) {
            cx.metrics.replays_skipped += 1;
            return None;
        }
        let t = record.timestamp;
        if self.windows.is_late(t, cx.watermark) {
            cx.metrics.late_records += 1;
            return Some(record);
        }
        let range = self.window_range(t);
        let slot = (t, self.next_seq);
        self.next_seq += 1;
        let Record {
            key,
            value,
            partition,
            offset,
            ..
        } = record;
        let buffers = match self.buffers.get_mut(&key) {
            Some(b) => b,
            None => self.buffers.entry(key.clone()).or_default(),
        };
        let mut results = Vec::new();
        let side = match value {
            Side::Left(l) => {
                let mut matched = false;
                for (&(tr, _), r) in buffers.right.range_mut(range) {
                    if let Some(o) = (self.joiner)(&key, Some(&l), Some(&r.value)) {
                        results.push((o, t.max(tr)));
                    }
                    matched = true;
                    if !r.matched {
                        r.matched = true;
                        r.dirty = true;
                    }
                }
                buffers.left.insert(
                    slot,
                    Buffered {
                        value: l,
                        matched,
                        dirty: true,
                        persisted: false,
                    },
                );
                LEFT
            }
            Side::Right(r) => {
                let mut matched = false;
                for (&(tl, _), l) in buffers.left.range_mut(range) {
                    if let Some(o) = (self.joiner)(&key, Some(&l.value), Some(&r)) {
                        results.push((o, t.max(tl)));
                    }
                    matched = true;
                    if !l.matched {
                        l.matched = true;
                        l.dirty = true;
                    }
                }
                buffers.right.insert(
                    slot,
                    Buffered {
                        value: r,
                        matched,
                        dirty: true,
                        persisted: false,
                    },
                );
                RIGHT
            }
        };
        for (o, timestamp) in results {
            out.push(self.result(o, timestamp, partition, offset, key.clone()));
        }
        self.expiry.insert(slot, (side, key));
        None
    }

    fn on_watermark(&mut self, cx: &mut Context<'_>, out: &mut Vec<Record<K, O>>) {
        while let Some(entry) = self.expiry.first_entry() {
            let slot = *entry.key();
            if !self.windows.is_expired(slot.0, cx.watermark) {
                break;
            }
            let (side, key) = entry.remove();
            let Some(buffers) = self.buffers.get_mut(&key) else {
                continue;
            };
            // The unmatched side of a left or outer join is emitted now that nothing can
            // match it any more.
            let (persisted, result) = if side == LEFT {
                match buffers.left.remove(&slot) {
                    Some(b) => {
                        let emit = !b.matched && self.kind != JoinKind::Inner;
                        let result = if emit {
                            (self.joiner)(&key, Some(&b.value), None)
                        } else {
                            None
                        };
                        (b.persisted, result)
                    }
                    None => (false, None),
                }
            } else {
                match buffers.right.remove(&slot) {
                    Some(b) => {
                        let emit = !b.matched && self.kind == JoinKind::Outer;
                        let result = if emit {
                            (self.joiner)(&key, None, Some(&b.value))
                        } else {
                            None
                        };
                        (b.persisted, result)
                    }
                    None => (false, None),
                }
            };
            if buffers.left.is_empty() && buffers.right.is_empty() {
                self.buffers.remove(&key);
            }
            if persisted {
                match Self::store_key(side, slot, &key) {
                    Ok(k) => self.evicted.push(k),
                    Err(error) => tracing::warn!(%error, "cannot encode an expired join key"),
                }
            }
            if let Some(o) = result {
                out.push(self.result(o, slot.0, 0, NO_OFFSET, key));
            }
        }
    }

    fn checkpoint(&mut self, meta: &TaskMeta) -> Result<Vec<Change>, StreamsError> {
        for key in self.evicted.drain(..) {
            self.store.delete(&key)?;
        }
        for (key, buffers) in &mut self.buffers {
            for (slot, b) in buffers.left.iter_mut().filter(|(_, b)| b.dirty) {
                self.store.put(
                    Self::store_key(LEFT, *slot, key)?,
                    encode(&(&b.value, b.matched))?,
                )?;
                b.dirty = false;
                b.persisted = true;
            }
            for (slot, b) in buffers.right.iter_mut().filter(|(_, b)| b.dirty) {
                self.store.put(
                    Self::store_key(RIGHT, *slot, key)?,
                    encode(&(&b.value, b.matched))?,
                )?;
                b.dirty = false;
                b.persisted = true;
            }
        }
        self.guard.checkpoint(self.store.as_mut(), meta)?;
        Ok(self.store.take_changes())
    }

    fn restore(&mut self, changes: Vec<Change>) -> Result<Option<TaskMeta>, StreamsError> {
        self.store.restore(changes)?;
        self.buffers.clear();
        self.expiry.clear();
        self.evicted.clear();
        for (k, v) in self.store.prefix(&[DATA_PREFIX])? {
            let (&side, rest) = k[1..]
                .split_first()
                .ok_or_else(|| StreamsError::Decode("join key without a side".into()))?;
            let (t, rest) = decode_time(rest)?;
            let (seq, rest) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| StreamsError::Decode("join key without a sequence".into()))?;
            let seq = u64::from_be_bytes(*seq);
            let key: K = decode(rest)?;
            let buffers = self.buffers.entry(key.clone()).or_default();
            match side {
                LEFT => {
                    let (value, matched): (L, bool) = decode(&v)?;
                    buffers.left.insert(
                        (t, seq),
                        Buffered {
                            value,
                            matched,
                            dirty: false,
                            persisted: true,
                        },
                    );
                }
                RIGHT => {
                    let (value, matched): (R, bool) = decode(&v)?;
                    buffers.right.insert(
                        (t, seq),
                        Buffered {
                            value,
                            matched,
                            dirty: false,
                            persisted: true,
                        },
                    );
                }
                other => {
                    return Err(StreamsError::Decode(format!("unknown join side {other}")));
                }
            }
            self.expiry.insert((t, seq), (side, key));
            self.next_seq = self.next_seq.max(seq + 1);
        }
        self.guard.restore(self.store.as_ref())
    }

    fn state_len(&self) -> usize {
        self.expiry.len()
    }

    fn snapshot(&self) -> Vec<serde_json::Value> {
        let mut rows = Vec::with_capacity(self.expiry.len());
        let json = |v: Result<serde_json::Value, serde_json::Error>| v.unwrap_or_default();
        for (key, buffers) in &self.buffers {
            for (&(t, _), b) in &buffers.left {
                rows.push(serde_json::json!({
                    "key": json(serde_json::to_value(key)), "side": "left", "timestamp": t,
                    "matched": b.matched, "value": json(serde_json::to_value(&b.value)),
                }));
            }
            for (&(t, _), b) in &buffers.right {
                rows.push(serde_json::json!({
                    "key": json(serde_json::to_value(key)), "side": "right", "timestamp": t,
                    "matched": b.matched, "value": json(serde_json::to_value(&b.value)),
                }));
            }
        }
        rows
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

//! Shared helpers for the integration tests: input generation and batch recomputation.
#![allow(dead_code)]

use std::collections::BTreeMap;

use proptest::prelude::*;

/// One input event: key, value, event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub key: u32,
    pub value: i64,
    pub t: i64,
}

/// A result row: key, window start, window end, aggregate.
pub type Row = (u32, i64, i64, i64);

/// Events in arrival order: times drift forward while each event is delayed by a random
/// amount, so that arrival is out of order and, past the tolerance, late.
pub fn arrivals(max_delay: i64) -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0u32..4, -5i64..50, 0i64..400, 0i64..=max_delay), 0..120).prop_map(
        |raw| {
            let mut t = 0;
            let mut timed: Vec<(i64, Event)> = raw
                .into_iter()
                .map(|(key, value, step, delay)| {
                    t += step;
                    (t + delay, Event { key, value, t })
                })
                .collect();
            // Stable sort by arrival time: ties keep generation order.
            timed.sort_by_key(|(arrival, _)| *arrival);
            timed.into_iter().map(|(_, e)| e).collect()
        },
    )
}

/// Watermark before each event is processed (after observing it): max(t) - ooo so far.
pub fn watermarks(events: &[Event], ooo: i64) -> Vec<i64> {
    let mut wm = i64::MIN;
    events
        .iter()
        .map(|e| {
            wm = wm.max(e.t - ooo);
            wm
        })
        .collect()
}

/// Batch sum per (key, window) for epoch-aligned windows [s, s + size) with starts every
/// `advance`, skipping (record, window) pairs whose window had closed when the record came.
/// Returns the rows and the number of records late for at least one window.
pub fn batch_fixed(
    events: &[Event],
    size: i64,
    advance: i64,
    grace: i64,
    ooo: i64,
) -> (Vec<Row>, u64) {
    let mut sums: BTreeMap<(u32, i64), i64> = BTreeMap::new();
    let mut late = 0;
    for (e, wm) in events.iter().zip(watermarks(events, ooo)) {
        let mut missed = false;
        // Every start s with s ≡ 0 (mod advance) and s ≤ t < s + size.
        let mut s = e.t - e.t.rem_euclid(advance);
        while s > e.t - size {
            if wm >= s + size + grace {
                missed = true;
            } else {
                *sums.entry((e.key, s)).or_insert(0) += e.value;
            }
            s -= advance;
        }
        late += u64::from(missed);
    }
    let rows = sums
        .into_iter()
        .map(|((k, s), v)| (k, s, s + size, v))
        .collect();
    (rows, late)
}

/// Batch sessions: per key, the records that were not late, sorted by time, split wherever
/// two consecutive records are more than `gap` apart.
pub fn batch_sessions(events: &[Event], gap: i64, grace: i64, ooo: i64) -> (Vec<Row>, u64) {
    let mut per_key: BTreeMap<u32, Vec<(i64, i64)>> = BTreeMap::new();
    let mut late = 0;
    for (e, wm) in events.iter().zip(watermarks(events, ooo)) {
        if wm > e.t + grace {
            late += 1;
        } else {
            per_key.entry(e.key).or_default().push((e.t, e.value));
        }
    }
    let mut rows = Vec::new();
    for (key, mut recs) in per_key {
        recs.sort();
        let mut current: Option<(i64, i64, i64)> = None;
        for (t, v) in recs {
            current = match current {
                Some((s, e, sum)) if t - e <= gap => Some((s, t, sum + v)),
                Some((s, e, sum)) => {
                    rows.push((key, s, e, sum));
                    Some((t, t, v))
                }
                None => Some((t, t, v)),
            };
        }
        if let Some((s, e, sum)) = current {
            rows.push((key, s, e, sum));
        }
    }
    rows.sort();
    (rows, late)
}

/// Batch sliding windows (Kafka semantics) per key over the records that were not late
/// (late: the watermark had passed `t + grace`), summing values.
pub fn batch_sliding(events: &[Event], diff: i64, grace: i64, ooo: i64) -> (Vec<Row>, u64) {
    let mut per_key: BTreeMap<u32, Vec<(i64, i64)>> = BTreeMap::new();
    let mut late = 0;
    for (e, wm) in events.iter().zip(watermarks(events, ooo)) {
        if wm > e.t + grace {
            late += 1;
        } else {
            per_key.entry(e.key).or_default().push((e.t, e.value));
        }
    }
    let mut rows = Vec::new();
    for (key, recs) in per_key {
        let times: Vec<i64> = recs.iter().map(|r| r.0).collect();
        for w in millrace_streams::windows::sliding_windows(&times, diff) {
            let sum = recs
                .iter()
                .filter(|(t, _)| w.start <= *t && *t <= w.end)
                .map(|(_, v)| v)
                .sum();
            rows.push((key, w.start, w.end, sum));
        }
    }
    rows.sort();
    (rows, late)
}

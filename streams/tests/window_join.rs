//! Windowed stream-stream joins against a batch recomputation: over shuffled, out-of-order
//! and late input, every pair within the window is emitted exactly once (inner), unmatched
//! records once their window closes (left, outer); and across a restore from the changelog
//! with input replayed, nothing is lost or emitted twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{arrivals, watermarks, Event};
use millrace_streams::windows::join::{JoinWindows, Side};
use millrace_streams::{Pipeline, Record, Stream};
use proptest::prelude::*;

const W: i64 = 150;
const GRACE: i64 = 100;
const OOO: i64 = 200;

/// A result: key, left id, right id (ids are input positions).
type Pair = (u32, Option<usize>, Option<usize>);

type JoinPipeline = Pipeline<u32, Side<usize, usize>, u32, Pair>;

#[derive(Clone, Copy)]
enum Kind {
    Inner,
    Left,
    Outer,
}

fn pipeline(kind: Kind) -> JoinPipeline {
    Pipeline::new(move |s: Stream<u32, Side<usize, usize>>| {
        let join = s.window_join(
            JoinWindows::of(Duration::from_millis(W as u64))
                .grace(Duration::from_millis(GRACE as u64)),
        );
        match kind {
            Kind::Inner => join.inner(|k, l, r| (*k, Some(*l), Some(*r))),
            Kind::Left => join.left(|k, l, r| (*k, Some(*l), r.copied())),
            Kind::Outer => join.outer(|k, l, r| (*k, l.copied(), r.copied())),
        }
    })
    .event_time(Duration::from_millis(OOO as u64), None)
}

/// Even values are left records, odd ones right; the id is the input position.
fn side(i: usize, e: &Event) -> Side<usize, usize> {
    if e.value.rem_euclid(2) == 0 {
        Side::Left(i)
    } else {
        Side::Right(i)
    }
}

fn feed(p: &mut JoinPipeline, events: &[Event], from: usize) {
    for (i, e) in events.iter().enumerate().skip(from) {
        p.push(Record::new(e.key, side(i, e), e.t).at(0, i as i64));
    }
}

fn sorted(mut v: Vec<Pair>) -> Vec<Pair> {
    v.sort();
    v
}

fn values(p: &mut JoinPipeline) -> Vec<Pair> {
    p.take_output().into_iter().map(|r| r.value).collect()
}

/// The batch answer: records late on arrival (watermark past `t + grace`) take no part; every
/// left/right pair of one key within `W` joins; unmatched records per the join kind.
fn batch(events: &[Event], kind: Kind) -> Vec<Pair> {
    let live: Vec<(usize, &Event)> = events
        .iter()
        .zip(watermarks(events, OOO))
        .enumerate()
        .filter(|(_, (e, wm))| *wm <= e.t + GRACE)
        .map(|(i, (e, _))| (i, e))
        .collect();
    let is_left = |e: &Event| e.value.rem_euclid(2) == 0;
    let mut out = Vec::new();
    let mut matched: BTreeMap<usize, bool> = live.iter().map(|(i, _)| (*i, false)).collect();
    for &(i, l) in live.iter().filter(|(_, e)| is_left(e)) {
        for &(j, r) in live.iter().filter(|(_, e)| !is_left(e)) {
            if l.key == r.key && (l.t - r.t).abs() <= W {
                out.push((l.key, Some(i), Some(j)));
                matched.insert(i, true);
                matched.insert(j, true);
            }
        }
    }
    for &(i, e) in &live {
        if matched[&i] {
            continue;
        }
        match (kind, is_left(e)) {
            (Kind::Left | Kind::Outer, true) => out.push((e.key, Some(i), None)),
            (Kind::Outer, false) => out.push((e.key, None, Some(i))),
            _ => {}
        }
    }
    sorted(out)
}

fn run(events: &[Event], kind: Kind) -> (Vec<Pair>, u64) {
    let mut p = pipeline(kind);
    feed(&mut p, events, 0);
    p.finish();
    (sorted(values(&mut p)), p.metrics().late_records)
}

fn late_count(events: &[Event]) -> u64 {
    events
        .iter()
        .zip(watermarks(events, OOO))
        .filter(|(e, wm)| *wm > e.t + GRACE)
        .count() as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn inner_join_equals_the_batch_answer(events in arrivals(400)) {
        let (got, late) = run(&events, Kind::Inner);
        prop_assert_eq!(got, batch(&events, Kind::Inner));
        prop_assert_eq!(late, late_count(&events));
    }

    #[test]
    fn left_join_equals_the_batch_answer(events in arrivals(400)) {
        prop_assert_eq!(run(&events, Kind::Left).0, batch(&events, Kind::Left));
    }

    #[test]
    fn outer_join_equals_the_batch_answer(events in arrivals(400)) {
        prop_assert_eq!(run(&events, Kind::Outer).0, batch(&events, Kind::Outer));
    }

    /// A run stopped after a commit at `commit_at` and a crash at `crash_at` (outputs after
    /// the commit are emitted again: at-least-once), restored from the changelog and fed the
    /// input again from `replay_from` (before the commit): its output before the commit
    /// plus the restored run's output is exactly the uninterrupted answer.
    #[test]
    fn a_restored_join_neither_loses_nor_repeats_results(
        events in arrivals(400),
        cuts in (0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0),
    ) {
        for kind in [Kind::Inner, Kind::Left, Kind::Outer] {
            let n = events.len();
            let commit_at = (cuts.0 * n as f64) as usize;
            let crash_at = commit_at + ((n - commit_at) as f64 * cuts.1) as usize;
            let replay_from = (commit_at as f64 * cuts.2) as usize;
            let mut first = pipeline(kind);
            feed(&mut first, &events[..commit_at], 0);
            let checkpoint = first.commit().unwrap();
            let mut before_commit = values(&mut first);
            feed(&mut first, &events[..crash_at], commit_at);
            drop(first);

            let mut restored = pipeline(kind);
            restored.restore(checkpoint.stores).unwrap();
            feed(&mut restored, &events, replay_from);
            restored.finish();
            before_commit.extend(values(&mut restored));
            prop_assert_eq!(sorted(before_commit), run(&events, kind).0);
        }
    }
}

#[test]
fn each_pair_is_emitted_once_when_its_second_record_arrives() {
    let mut p = pipeline(Kind::Inner);
    let at = |key, side, t, offset| Record::new(key, side, t).at(0, offset);
    p.push(at(1, Side::Left(0), 1_000, 0));
    p.push(at(1, Side::Left(1), 1_100, 1));
    assert!(values(&mut p).is_empty());
    p.push(at(1, Side::Right(2), 1_050, 2));
    let out = p.take_output();
    let got: Vec<_> = out.iter().map(|r| (r.value, r.timestamp)).collect();
    // Stamped with the later event time of the pair.
    assert_eq!(
        got,
        vec![
            ((1, Some(0), Some(2)), 1_050),
            ((1, Some(1), Some(2)), 1_100)
        ]
    );
    // Another key does not join.
    p.push(at(2, Side::Right(3), 1_000, 3));
    assert!(values(&mut p).is_empty());
}

#[test]
fn expired_buffers_are_purged_by_the_watermark() {
    let mut p = pipeline(Kind::Left);
    p.push(Record::new(1, Side::Left(0), 1_000));
    assert_eq!(p.state_len(), 1);
    // Watermark = 1_450 - OOO = 1_250 = 1_000 + W + GRACE: not yet expired.
    p.push(Record::new(9, Side::Right(1), 1_450));
    assert_eq!(p.state_len(), 2);
    assert!(values(&mut p).is_empty());
    // One past it: the left record expires unmatched and is emitted with None.
    p.push(Record::new(9, Side::Right(2), 1_451));
    assert_eq!(values(&mut p), vec![(1, Some(0), None)]);
    assert_eq!(p.state_len(), 2);
}

#[test]
fn late_records_are_counted_and_reported_not_joined() {
    let mut p = pipeline(Kind::Inner);
    p.push(Record::new(1, Side::Left(0), 10_000).at(0, 0));
    // Watermark 9_800; a right record at 9_600 is 200 behind it, past the 100 ms grace.
    p.push(Record::new(1, Side::Right(1), 9_600).at(0, 1));
    assert!(values(&mut p).is_empty());
    assert_eq!(p.metrics().late_records, 1);
    let late = p.take_late();
    assert_eq!((late.len(), late[0].offset), (1, 1));
}

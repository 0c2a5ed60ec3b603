//! Restore tests: a pipeline restored from its changelog batches and fed the input again from
//! an earlier offset (at-least-once replay) produces exactly the results of an uninterrupted
//! run: nothing lost, nothing counted twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{arrivals, Event, Row};
use millrace_streams::{
    EmitMode, Pipeline, Record, StoreChanges, Stream, StreamsError, Windowed, Windows,
};
use proptest::prelude::*;

type SumPipeline = Pipeline<u32, i64, Windowed<u32>, i64>;

fn tumbling() -> SumPipeline {
    Pipeline::new(|s: Stream<u32, i64>| {
        s.window(Windows::tumbling(Duration::from_millis(1_000)).grace(Duration::from_millis(200)))
            .emit(EmitMode::Final)
            .aggregate(|| 0i64, |acc, v| *acc += v)
    })
    .event_time(Duration::from_millis(300), None)
}

fn hopping_update() -> SumPipeline {
    Pipeline::new(|s: Stream<u32, i64>| {
        s.window(
            Windows::hopping(Duration::from_millis(1_000), Duration::from_millis(250))
                .grace(Duration::from_millis(200)),
        )
        .emit(EmitMode::Update)
        .aggregate(|| 0i64, |acc, v| *acc += v)
    })
    .event_time(Duration::from_millis(300), None)
}

fn sessions() -> SumPipeline {
    Pipeline::new(|s: Stream<u32, i64>| {
        s.session_window(
            Windows::session(Duration::from_millis(500)).grace(Duration::from_millis(200)),
        )
        .emit(EmitMode::Final)
        .aggregate(|| 0i64, |acc, v| *acc += v, |a, b| *a += b)
    })
    .event_time(Duration::from_millis(300), None)
}

fn sliding() -> SumPipeline {
    Pipeline::new(|s: Stream<u32, i64>| {
        s.sliding_window(
            Windows::sliding(Duration::from_millis(500)).grace(Duration::from_millis(200)),
        )
        .emit(EmitMode::Final)
        .aggregate(|| 0i64, |acc, v| *acc += v)
    })
    .event_time(Duration::from_millis(300), None)
}

fn rows(p: &mut SumPipeline) -> Vec<Row> {
    p.take_output()
        .into_iter()
        .map(|r| (r.key.key, r.key.window_start, r.key.window_end, r.value))
        .collect()
}

fn feed(p: &mut SumPipeline, events: &[Event], first_offset: usize) {
    for (i, e) in events.iter().enumerate() {
        p.push(Record::new(e.key, e.value, e.t).at(0, (first_offset + i) as i64));
    }
}

fn uninterrupted(build: fn() -> SumPipeline, events: &[Event]) -> Vec<Row> {
    let mut p = build();
    feed(&mut p, events, 0);
    p.finish();
    let mut out = rows(&mut p);
    out.sort();
    out
}

/// Runs to `cut` with a commit halfway and one at `cut`, keeps processing `extra` records
/// whose effects are lost in a crash, restores a fresh pipeline from the changelog batches and
/// replays the input from `replay_from` (≤ `cut`, as a lagging consumer offset would).
fn interrupted(
    build: fn() -> SumPipeline,
    events: &[Event],
    cut: usize,
    extra: usize,
    replay_from: usize,
) -> Vec<Row> {
    let mut changelog: Vec<StoreChanges> = Vec::new();
    let mut first = build();
    feed(&mut first, &events[..cut / 2], 0);
    changelog.extend(first.commit().unwrap().stores);
    feed(&mut first, &events[cut / 2..cut], cut / 2);
    changelog.extend(first.commit().unwrap().stores);
    let mut out = rows(&mut first);
    feed(&mut first, &events[cut..cut + extra], cut);
    drop(first);

    let mut second = build();
    let resume = second.restore(changelog).unwrap();
    assert!(cut == 0 || resume.get(&0) == Some(&(cut as i64)));
    feed(&mut second, &events[replay_from..], replay_from);
    second.finish();
    out.extend(rows(&mut second));
    out.sort();
    out
}

fn cut_points() -> impl Strategy<Value = (Vec<Event>, usize, usize, usize)> {
    arrivals(1_500).prop_flat_map(|events| {
        let n = events.len();
        (Just(events), 0..=n)
            .prop_flat_map(move |(events, cut)| (Just(events), Just(cut), 0..=n - cut, 0..=cut))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn restored_tumbling_equals_uninterrupted((events, cut, extra, replay_from) in cut_points()) {
        prop_assert_eq!(
            interrupted(tumbling, &events, cut, extra, replay_from),
            uninterrupted(tumbling, &events)
        );
    }

    #[test]
    fn restored_hopping_updates_equal_uninterrupted((events, cut, extra, replay_from) in cut_points()) {
        prop_assert_eq!(
            interrupted(hopping_update, &events, cut, extra, replay_from),
            uninterrupted(hopping_update, &events)
        );
    }

    #[test]
    fn restored_sliding_equals_uninterrupted((events, cut, extra, replay_from) in cut_points()) {
        prop_assert_eq!(
            interrupted(sliding, &events, cut, extra, replay_from),
            uninterrupted(sliding, &events)
        );
    }

    #[test]
    fn restored_sessions_equal_uninterrupted((events, cut, extra, replay_from) in cut_points()) {
        prop_assert_eq!(
            interrupted(sessions, &events, cut, extra, replay_from),
            uninterrupted(sessions, &events)
        );
    }
}

#[test]
fn replayed_records_after_restore_are_not_counted_twice() {
    let events: Vec<Event> = (0..10)
        .map(|i| Event {
            key: 1,
            value: 1,
            t: i * 10,
        })
        .collect();
    let mut p = tumbling();
    feed(&mut p, &events[..6], 0);
    let cp = p.commit().unwrap();
    let mut q = tumbling();
    q.restore(cp.stores).unwrap();
    feed(&mut q, &events, 0);
    q.finish();
    assert_eq!(rows(&mut q), vec![(1, 0, 1_000, 10)]);
}

#[test]
fn replays_are_counted_in_metrics() {
    let events: Vec<Event> = (0..4)
        .map(|i| Event {
            key: 1,
            value: 1,
            t: i,
        })
        .collect();
    let mut p = tumbling();
    feed(&mut p, &events, 0);
    let cp = p.commit().unwrap();
    let mut q = tumbling();
    q.restore(cp.stores).unwrap();
    feed(&mut q, &events, 0);
    assert_eq!(q.metrics().replays_skipped, 4);
}

#[test]
fn update_mode_does_not_re_emit_replayed_updates() {
    let events: Vec<Event> = (0..4)
        .map(|i| Event {
            key: 1,
            value: 1,
            t: i,
        })
        .collect();
    let mut p = hopping_update();
    feed(&mut p, &events, 0);
    let cp = p.commit().unwrap();
    let mut q = hopping_update();
    q.restore(cp.stores).unwrap();
    feed(&mut q, &events, 0);
    assert!(rows(&mut q).is_empty());
}

#[test]
fn restore_resumes_the_watermark_so_closed_windows_stay_closed() {
    let mut p = tumbling();
    feed(
        &mut p,
        &[Event {
            key: 1,
            value: 1,
            t: 5_000,
        }],
        0,
    );
    let cp = p.commit().unwrap();
    let mut q = tumbling();
    q.restore(cp.stores).unwrap();
    feed(
        &mut q,
        &[Event {
            key: 1,
            value: 1,
            t: 100,
        }],
        1,
    );
    assert_eq!(q.metrics().late_records, 1);
}

#[test]
fn restore_returns_next_offsets_to_read() {
    let mut p = tumbling();
    feed(
        &mut p,
        &[Event {
            key: 1,
            value: 1,
            t: 0,
        }; 3],
        40,
    );
    let cp = p.commit().unwrap();
    let mut q = tumbling();
    assert_eq!(q.restore(cp.stores).unwrap().get(&0), Some(&43));
}

#[test]
fn restore_rejects_unknown_store() {
    let mut q = tumbling();
    let err = q
        .restore(vec![StoreChanges {
            store: "nope".into(),
            changes: vec![],
        }])
        .unwrap_err();
    assert!(matches!(err, StreamsError::UnknownStore(name) if name == "nope"));
}

#[test]
fn stores_restored_from_different_commits_each_skip_what_they_have() {
    // Two stateful steps; the dedupe store comes from an older commit than the window store.
    let build = || {
        Pipeline::new(|s: Stream<u32, i64>| {
            s.dedupe(Duration::from_secs(60), |_, v| *v)
                .window(Windows::tumbling(Duration::from_secs(10)).no_grace())
                .emit(EmitMode::Final)
                .count()
        })
    };
    let events: Vec<Record<u32, i64>> = (0..6).map(|i| Record::new(1, i, i).at(0, i)).collect();
    let mut p = build();
    for r in &events[..2] {
        p.push(r.clone());
    }
    let old = p.commit().unwrap();
    for r in &events[2..4] {
        p.push(r.clone());
    }
    let new = p.commit().unwrap();
    let mut batches: Vec<StoreChanges> = old
        .stores
        .into_iter()
        .filter(|s| s.store == "dedupe-0")
        .collect();
    batches.extend(new.stores.into_iter().filter(|s| s.store == "aggregate-1"));
    let mut q = build();
    let resume = q.restore(batches).unwrap();
    assert_eq!(resume.get(&0), Some(&2));
    for r in &events[2..] {
        q.push(r.clone());
    }
    q.finish();
    assert_eq!(q.take_output()[0].value, 6);
}

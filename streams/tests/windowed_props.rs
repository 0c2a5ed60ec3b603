//! Property tests: final windowed results equal a batch recomputation of the same input,
//! with out-of-order and late records.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{arrivals, batch_fixed, batch_sessions, batch_sliding, Event, Row};
use millrace_streams::{EmitMode, Pipeline, Record, Stream, Windowed, Windows};
use proptest::prelude::*;

fn ms(v: i64) -> Duration {
    Duration::from_millis(v as u64)
}

type SumPipeline = Pipeline<u32, i64, Windowed<u32>, i64>;

fn run(mut p: SumPipeline, events: &[Event]) -> (Vec<Row>, u64) {
    for (i, e) in events.iter().enumerate() {
        p.push(Record::new(e.key, e.value, e.t).at(0, i as i64));
    }
    p.finish();
    let mut rows: Vec<Row> = p
        .take_output()
        .into_iter()
        .map(|r| (r.key.key, r.key.window_start, r.key.window_end, r.value))
        .collect();
    rows.sort();
    (rows, p.metrics().late_records)
}

fn fixed(size: i64, advance: i64, grace: i64, ooo: i64) -> SumPipeline {
    Pipeline::new(move |s: Stream<u32, i64>| {
        s.window(Windows::hopping(ms(size), ms(advance)).grace(ms(grace)))
            .emit(EmitMode::Final)
            .aggregate(|| 0i64, |acc, v| *acc += v)
    })
    .event_time(ms(ooo), None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tumbling_final_equals_batch(
        events in arrivals(3_000),
        size in 100i64..2_000,
        grace in 0i64..1_000,
        ooo in 0i64..1_000,
    ) {
        let got = run(fixed(size, size, grace, ooo), &events);
        prop_assert_eq!(got, batch_fixed(&events, size, size, grace, ooo));
    }

    #[test]
    fn hopping_final_equals_batch(
        events in arrivals(3_000),
        size in 100i64..2_000,
        hops in 1i64..5,
        grace in 0i64..1_000,
        ooo in 0i64..1_000,
    ) {
        let advance = (size / hops).max(1);
        let got = run(fixed(size, advance, grace, ooo), &events);
        prop_assert_eq!(got, batch_fixed(&events, size, advance, grace, ooo));
    }

    #[test]
    fn session_final_equals_batch(
        events in arrivals(3_000),
        gap in 0i64..1_500,
        grace in 0i64..1_000,
        ooo in 0i64..1_000,
    ) {
        let p = Pipeline::new(move |s: Stream<u32, i64>| {
            s.session_window(Windows::session(ms(gap)).grace(ms(grace)))
                .emit(EmitMode::Final)
                .aggregate(|| 0i64, |acc, v| *acc += v, |a, b| *a += b)
        })
        .event_time(ms(ooo), None);
        let got = run(p, &events);
        prop_assert_eq!(got, batch_sessions(&events, gap, grace, ooo));
    }

    #[test]
    fn sliding_final_equals_batch(
        events in arrivals(3_000),
        diff in 0i64..1_500,
        grace in 0i64..1_000,
        ooo in 0i64..1_000,
    ) {
        let p = Pipeline::new(move |s: Stream<u32, i64>| {
            s.sliding_window(Windows::sliding(ms(diff)).grace(ms(grace)))
                .emit(EmitMode::Final)
                .aggregate(|| 0i64, |acc, v| *acc += v)
        })
        .event_time(ms(ooo), None);
        let got = run(p, &events);
        prop_assert_eq!(got, batch_sliding(&events, diff, grace, ooo));
    }

    #[test]
    fn sliding_update_mode_last_update_per_window_equals_final(
        events in arrivals(3_000),
        diff in 0i64..1_500,
        grace in 0i64..1_000,
    ) {
        let mut p = Pipeline::new(move |s: Stream<u32, i64>| {
            s.sliding_window(Windows::sliding(ms(diff)).grace(ms(grace)))
                .aggregate(|| 0i64, |acc, v| *acc += v)
        });
        for e in &events {
            p.push(Record::new(e.key, e.value, e.t));
        }
        let mut last = std::collections::BTreeMap::new();
        for r in p.take_output() {
            last.insert((r.key.key, r.key.window_start, r.key.window_end), r.value);
        }
        let got: Vec<Row> = last.into_iter().map(|((k, s, e), v)| (k, s, e, v)).collect();
        prop_assert_eq!(got, batch_sliding(&events, diff, grace, 0).0);
    }

    #[test]
    fn update_mode_last_update_per_window_equals_final(
        events in arrivals(3_000),
        size in 100i64..2_000,
        grace in 0i64..1_000,
    ) {
        let mut p = Pipeline::new(move |s: Stream<u32, i64>| {
            s.window(Windows::tumbling(ms(size)).grace(ms(grace)))
                .aggregate(|| 0i64, |acc, v| *acc += v)
        });
        for e in &events {
            p.push(Record::new(e.key, e.value, e.t));
        }
        let mut last = std::collections::BTreeMap::new();
        for r in p.take_output() {
            last.insert((r.key.key, r.key.window_start, r.key.window_end), r.value);
        }
        let got: Vec<Row> = last.into_iter().map(|((k, s, e), v)| (k, s, e, v)).collect();
        prop_assert_eq!(got, batch_fixed(&events, size, size, grace, 0).0);
    }
}

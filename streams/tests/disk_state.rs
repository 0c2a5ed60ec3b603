//! Windowed aggregates with their state on disk (redb) give exactly the results of the
//! in-memory ones, over out-of-order and late input, and across a restore from the changelog
//! into a fresh on-disk store with input replayed.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{arrivals, Event, Row};
use millrace_streams::{EmitMode, Pipeline, Record, Stream, Windowed, Windows};
use proptest::prelude::*;

type SumPipeline = Pipeline<u32, i64, Windowed<u32>, i64>;

fn windows(hopping: bool) -> Windows {
    let size = Duration::from_millis(1_000);
    let builder = if hopping {
        Windows::hopping(size, Duration::from_millis(250))
    } else {
        Windows::tumbling(size)
    };
    builder.grace(Duration::from_millis(200))
}

fn pipeline(disk: Option<&Path>, hopping: bool, emit: EmitMode) -> SumPipeline {
    let disk = disk.map(Path::to_path_buf);
    Pipeline::new(move |s: Stream<u32, i64>| {
        let mut w = s.window(windows(hopping)).emit(emit).named("sums");
        if let Some(dir) = disk {
            w = w.on_disk(dir);
        }
        w.aggregate(|| 0i64, |acc, v| *acc += v)
    })
    .event_time(Duration::from_millis(300), None)
}

fn feed(p: &mut SumPipeline, events: &[Event], from: usize, to: usize) {
    for (i, e) in events.iter().enumerate().take(to).skip(from) {
        p.push(Record::new(e.key, e.value, e.t).at(0, i as i64));
    }
}

fn rows(p: &mut SumPipeline) -> Vec<Row> {
    p.take_output()
        .into_iter()
        .map(|r| (r.key.key, r.key.window_start, r.key.window_end, r.value))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn on_disk_state_gives_the_in_memory_results(
        events in arrivals(600),
        hopping in any::<bool>(),
        final_emit in any::<bool>(),
    ) {
        let emit = if final_emit { EmitMode::Final } else { EmitMode::Update };
        let dir = tempfile::tempdir().unwrap();
        let mut disk = pipeline(Some(dir.path()), hopping, emit);
        let mut memory = pipeline(None, hopping, emit);
        feed(&mut disk, &events, 0, events.len());
        feed(&mut memory, &events, 0, events.len());
        // Same output in the same order, record by record, before and after the end.
        prop_assert_eq!(rows(&mut disk), rows(&mut memory));
        prop_assert_eq!(disk.state_len(), memory.state_len());
        disk.finish();
        memory.finish();
        prop_assert_eq!(rows(&mut disk), rows(&mut memory));
        prop_assert_eq!(disk.metrics(), memory.metrics());
    }

    #[test]
    fn on_disk_state_restores_from_its_changelog(
        events in arrivals(600),
        cuts in (0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0),
    ) {
        let n = events.len();
        let commit_at = (cuts.0 * n as f64) as usize;
        let crash_at = commit_at + ((n - commit_at) as f64 * cuts.1) as usize;
        let replay_from = (commit_at as f64 * cuts.2) as usize;
        let dir = tempfile::tempdir().unwrap();

        let mut memory = pipeline(None, false, EmitMode::Final);
        feed(&mut memory, &events, 0, n);
        memory.finish();
        let mut expected = rows(&mut memory);
        expected.sort();

        let mut first = pipeline(Some(dir.path()), false, EmitMode::Final);
        feed(&mut first, &events, 0, commit_at);
        let checkpoint = first.commit().unwrap();
        let mut got = rows(&mut first);
        feed(&mut first, &events, commit_at, crash_at);
        drop(first);

        let mut restored = pipeline(Some(dir.path()), false, EmitMode::Final);
        restored.restore(checkpoint.stores).unwrap();
        feed(&mut restored, &events, replay_from, n);
        restored.finish();
        got.extend(rows(&mut restored));
        got.sort();
        prop_assert_eq!(got, expected);
        drop(restored);
        // Working copies are removed with their pipelines.
        prop_assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

#[test]
fn many_keys_spill_to_the_file_and_close_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = pipeline(Some(dir.path()), false, EmitMode::Final);
    // 100k keys in one window: more than the store's write buffer holds.
    let keys = 100_000u32;
    for k in 0..keys {
        p.push(Record::new(k, 1, 100).at(0, i64::from(k)));
    }
    for k in 0..keys {
        p.push(Record::new(k, 2, 200).at(0, i64::from(keys + k)));
    }
    assert_eq!(p.state_len(), keys as usize);
    let checkpoint = p.commit().unwrap();
    assert_eq!(checkpoint.stores[0].changes.len(), keys as usize + 1);
    p.finish();
    let out = rows(&mut p);
    assert_eq!(out.len(), keys as usize);
    assert!(out.iter().all(|r| r.3 == 3 && r.1 == 0));
    assert_eq!(p.state_len(), 0);
}

//! Session windows, sliding windows, dedupe and window joins with their state on disk (redb)
//! give exactly the results of the in-memory ones, over out-of-order and late input; an
//! on-disk session window restores from its changelog; a job-wide backend reaches every step.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{arrivals, Event};
use millrace_streams::windows::join::{JoinWindows, Side};
use millrace_streams::{
    Checkpoint, EmitMode, Metrics, Pipeline, Record, StateBackend, Stream, Windowed, Windows,
};
use proptest::prelude::*;

const OOO: Duration = Duration::from_millis(300);

fn backend(dir: Option<&Path>) -> StateBackend {
    dir.map_or(StateBackend::InMemory, StateBackend::on_disk)
}

type WindowRows = Vec<(u32, i64, i64, i64)>;
type WindowPipeline = Pipeline<u32, i64, Windowed<u32>, i64>;

fn sessions(dir: Option<&Path>, emit: EmitMode) -> WindowPipeline {
    Pipeline::with_backend(backend(dir), move |s: Stream<u32, i64>| {
        s.session_window(
            Windows::session(Duration::from_millis(150)).grace(Duration::from_millis(100)),
        )
        .emit(emit)
        .named("sessions")
        .aggregate(|| 0i64, |acc, v| *acc += v, |a, b| *a += b)
    })
    .event_time(OOO, None)
}

fn sliding(dir: Option<&Path>, emit: EmitMode) -> WindowPipeline {
    Pipeline::with_backend(backend(dir), move |s: Stream<u32, i64>| {
        s.sliding_window(
            Windows::sliding(Duration::from_millis(200)).grace(Duration::from_millis(100)),
        )
        .emit(emit)
        .named("sliding")
        .aggregate(|| 0i64, |acc, v| *acc += v)
    })
    .event_time(OOO, None)
}

fn feed<K0: Send + 'static, V0: Send + 'static, K: Send + 'static, V: Send + 'static>(
    p: &mut Pipeline<K0, V0, K, V>,
    events: &[Event],
    from: usize,
    to: usize,
    make: impl Fn(&Event) -> (K0, V0),
) {
    for (i, e) in events.iter().enumerate().take(to).skip(from) {
        let (k, v) = make(e);
        p.push(Record::new(k, v, e.t).at(0, i as i64));
    }
}

fn by_key(e: &Event) -> (u32, i64) {
    (e.key, e.value)
}

fn window_rows(p: &mut WindowPipeline) -> WindowRows {
    p.take_output()
        .into_iter()
        .map(|r| (r.key.key, r.key.window_start, r.key.window_end, r.value))
        .collect()
}

/// Runs the same input through an on-disk and an in-memory pipeline and checks that output
/// (in order, before and after the end of input), state size and counters agree. Windowed
/// steps hold no state after the end of input (`empty_at_end`); dedupe keeps its ids.
fn same_as_memory<K: Send + 'static, V: Send + 'static, R: PartialEq + std::fmt::Debug>(
    make: impl Fn(Option<&Path>) -> Pipeline<u32, i64, K, V>,
    events: &[Event],
    rows: impl Fn(&mut Pipeline<u32, i64, K, V>) -> R,
    empty_at_end: bool,
) -> Result<Metrics, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut disk = make(Some(dir.path()));
    let mut memory = make(None);
    feed(&mut disk, events, 0, events.len(), by_key);
    feed(&mut memory, events, 0, events.len(), by_key);
    prop_assert_eq!(rows(&mut disk), rows(&mut memory));
    prop_assert_eq!(disk.state_len(), memory.state_len());
    // The changelog does not depend on the backend (but for tombstones of entries written
    // and removed since the last commit, which only the on-disk store has seen).
    prop_assert_eq!(
        upserts(disk.commit().unwrap()),
        upserts(memory.commit().unwrap())
    );
    disk.finish();
    memory.finish();
    prop_assert_eq!(rows(&mut disk), rows(&mut memory));
    prop_assert_eq!(disk.metrics(), memory.metrics());
    prop_assert_eq!(disk.state_len(), memory.state_len());
    if empty_at_end {
        prop_assert_eq!(disk.state_len(), 0);
    }
    Ok(memory.metrics().clone())
}

/// The entries a checkpoint writes (tombstones left out).
fn upserts(checkpoint: Checkpoint) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    checkpoint
        .stores
        .into_iter()
        .flat_map(|s| {
            let store = s.store;
            s.changes
                .into_iter()
                .filter_map(move |c| c.value.map(|v| (store.clone(), c.key, v)))
        })
        .collect()
}

fn dedupe(dir: Option<&Path>) -> Pipeline<u32, i64, u32, i64> {
    Pipeline::with_backend(backend(dir), |s: Stream<u32, i64>| {
        // Ids repeat: the value modulo 7 with the key.
        s.dedupe(Duration::from_millis(250), |k, v| (*k, v.rem_euclid(7)))
    })
    .event_time(OOO, None)
}

fn plain_rows(p: &mut Pipeline<u32, i64, u32, i64>) -> Vec<(u32, i64, i64)> {
    p.take_output()
        .into_iter()
        .map(|r| (r.key, r.value, r.timestamp))
        .collect()
}

type JoinPipeline = Pipeline<u32, Side<i64, i64>, u32, (Option<i64>, Option<i64>)>;

fn join(dir: Option<&Path>) -> JoinPipeline {
    Pipeline::with_backend(backend(dir), |s: Stream<u32, Side<i64, i64>>| {
        s.window_join(JoinWindows::of(Duration::from_millis(120)).grace(Duration::from_millis(50)))
            .outer(|_, l, r| (l.copied(), r.copied()))
    })
    .event_time(OOO, None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn on_disk_sessions_give_the_in_memory_results(
        events in arrivals(600),
        final_emit in any::<bool>(),
    ) {
        let emit = if final_emit { EmitMode::Final } else { EmitMode::Update };
        same_as_memory(|dir| sessions(dir, emit), &events, window_rows, true)?;
    }

    #[test]
    fn on_disk_sliding_windows_give_the_in_memory_results(
        events in arrivals(600),
        final_emit in any::<bool>(),
    ) {
        let emit = if final_emit { EmitMode::Final } else { EmitMode::Update };
        same_as_memory(|dir| sliding(dir, emit), &events, window_rows, true)?;
    }

    #[test]
    fn on_disk_dedupe_gives_the_in_memory_results(events in arrivals(600)) {
        same_as_memory(dedupe, &events, plain_rows, false)?;
    }

    #[test]
    fn on_disk_window_join_gives_the_in_memory_results(events in arrivals(600)) {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = join(Some(dir.path()));
        let mut memory = join(None);
        // Even values are left records, odd ones right records.
        let side = |e: &Event| {
            let v = if e.value % 2 == 0 { Side::Left(e.value) } else { Side::Right(e.value) };
            (e.key, v)
        };
        feed(&mut disk, &events, 0, events.len(), side);
        feed(&mut memory, &events, 0, events.len(), side);
        let rows = |p: &mut JoinPipeline| -> Vec<_> {
            p.take_output().into_iter().map(|r| (r.key, r.value, r.timestamp)).collect()
        };
        prop_assert_eq!(rows(&mut disk), rows(&mut memory));
        prop_assert_eq!(disk.state_len(), memory.state_len());
        prop_assert_eq!(upserts(disk.commit().unwrap()), upserts(memory.commit().unwrap()));
        disk.finish();
        memory.finish();
        prop_assert_eq!(rows(&mut disk), rows(&mut memory));
        prop_assert_eq!(disk.metrics(), memory.metrics());
    }

    #[test]
    fn on_disk_sessions_restore_from_their_changelog(
        events in arrivals(600),
        cuts in (0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0),
    ) {
        restores_from_changelog(sessions, &events, cuts)?;
    }

    #[test]
    fn on_disk_sliding_windows_restore_from_their_changelog(
        events in arrivals(600),
        cuts in (0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0),
    ) {
        restores_from_changelog(sliding, &events, cuts)?;
    }
}

/// Commits an on-disk pipeline part way, processes more and drops it (a crash), restores a
/// fresh one from the commit and replays from an earlier point: the results equal an
/// uninterrupted in-memory run. The steps' time indexes are on disk too, rebuilt by the
/// restore.
fn restores_from_changelog(
    make: fn(Option<&Path>, EmitMode) -> WindowPipeline,
    events: &[Event],
    cuts: (f64, f64, f64),
) -> Result<(), TestCaseError> {
    let n = events.len();
    let commit_at = (cuts.0 * n as f64) as usize;
    let crash_at = commit_at + ((n - commit_at) as f64 * cuts.1) as usize;
    let replay_from = (commit_at as f64 * cuts.2) as usize;
    let dir = tempfile::tempdir().unwrap();

    let mut memory = make(None, EmitMode::Final);
    feed(&mut memory, events, 0, n, by_key);
    memory.finish();
    let mut expected = window_rows(&mut memory);
    expected.sort();

    let mut first = make(Some(dir.path()), EmitMode::Final);
    feed(&mut first, events, 0, commit_at, by_key);
    let checkpoint = first.commit().unwrap();
    let mut got = window_rows(&mut first);
    // Processed after the commit, then lost in a crash.
    feed(&mut first, events, commit_at, crash_at, by_key);
    drop(first);

    let mut restored = make(Some(dir.path()), EmitMode::Final);
    restored.restore(checkpoint.stores).unwrap();
    feed(&mut restored, events, replay_from, n, by_key);
    restored.finish();
    got.extend(window_rows(&mut restored));
    got.sort();
    prop_assert_eq!(got, expected);
    drop(restored);
    // Working copies are removed with their pipelines.
    prop_assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    Ok(())
}

#[test]
fn an_in_memory_changelog_restores_into_an_on_disk_session_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut memory = sessions(None, EmitMode::Final);
    for (i, (k, t)) in [(1, 0), (1, 100), (2, 50), (1, 400)]
        .into_iter()
        .enumerate()
    {
        memory.push(Record::new(k, 1, t).at(0, i as i64));
    }
    let checkpoint = memory.commit().unwrap();
    let mut disk = sessions(Some(dir.path()), EmitMode::Final);
    let resume = disk.restore(checkpoint.stores).unwrap();
    assert_eq!(resume.get(&0), Some(&4));
    assert_eq!(disk.state_len(), memory.state_len());
    disk.push(Record::new(1, 1, 450).at(0, 4));
    disk.finish();
    assert_eq!(
        window_rows(&mut disk),
        // In close order: key 2's session ends first.
        vec![(2, 50, 50, 1), (1, 0, 100, 2), (1, 400, 450, 2)]
    );
}

#[test]
fn a_pipeline_backend_puts_every_store_on_disk_unless_a_step_says_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::with_backend(StateBackend::on_disk(dir.path()), |s: Stream<u32, i64>| {
        s.dedupe(Duration::from_secs(1), |k, _| *k)
            .window(Windows::tumbling(Duration::from_secs(1)).no_grace())
            .in_memory()
            .count()
            .key_by(|w, _| w.key)
            .session_window(Windows::session(Duration::from_secs(1)).no_grace())
            .count()
    });
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    // dedupe and the session window, each with its time index; the tumbling window stays
    // in memory.
    assert_eq!(files, 4);
    drop(p);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_late_record_after_end_of_input_does_not_reopen_an_emitted_window() {
    let mut p = Pipeline::new(|s: Stream<u32, i64>| {
        s.window(Windows::tumbling(Duration::from_millis(100)).no_grace())
            .emit(EmitMode::Final)
            .aggregate(|| 0i64, |acc, v| *acc += v)
    });
    p.push(Record::new(1, 1, 10).at(0, 0));
    p.push(Record::new(1, 1, 150).at(0, 1));
    p.end_of_input();
    assert_eq!(window_rows(&mut p), vec![(1, 0, 100, 1), (1, 100, 200, 1)]);
    // Window [100, 200) was emitted final: a record for it is late now.
    p.push(Record::new(1, 5, 160).at(0, 2));
    // A later window opens normally.
    p.push(Record::new(1, 7, 250).at(0, 3));
    p.end_of_input();
    assert_eq!(window_rows(&mut p), vec![(1, 200, 300, 7)]);
    assert_eq!(p.metrics().late_records, 1);
}

#[test]
fn a_late_record_after_end_of_input_does_not_reopen_an_emitted_session() {
    let mut p = sessions(None, EmitMode::Final);
    p.push(Record::new(1, 1, 1_000).at(0, 0));
    p.end_of_input();
    assert_eq!(window_rows(&mut p), vec![(1, 1_000, 1_000, 1)]);
    // Within the gap of the emitted session: late, not a second session emitted again.
    p.push(Record::new(1, 1, 1_100).at(0, 1));
    p.end_of_input();
    assert!(window_rows(&mut p).is_empty());
    assert_eq!(p.metrics().late_records, 1);
}

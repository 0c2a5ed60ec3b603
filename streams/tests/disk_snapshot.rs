//! On-disk state is published for live queries with exactly the rows of the in-memory state
//! (the same JSON, so SQL over them is the same): tumbling and session counts, a window join,
//! the anomaly detector, a sliding window and dedupe, before and after a commit moves the
//! store's write buffer to its file. An on-disk snapshot stops at `SNAPSHOT_ROW_CAP` rows,
//! newest windows first.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use millrace_streams::operators::{AnomalyEmit, Detector, Direction};
use millrace_streams::state::backend::SNAPSHOT_ROW_CAP;
use millrace_streams::windows::join::{JoinWindows, Side};
use millrace_streams::{Pipeline, Record, StateBackend, Stream, Windowed, Windows};

fn backend(dir: Option<&Path>) -> StateBackend {
    dir.map_or(StateBackend::InMemory, StateBackend::on_disk)
}

/// Every store's rows in a fixed order (their JSON text): the backends list rows in
/// different orders.
fn snapshot<K0, V0, K, V>(p: &Pipeline<K0, V0, K, V>) -> Vec<(String, Vec<String>)>
where
    K0: Send + 'static,
    V0: Send + 'static,
    K: Send + 'static,
    V: Send + 'static,
{
    let mut stores: Vec<(String, Vec<String>)> = p
        .snapshot()
        .into_iter()
        .map(|s| {
            let mut rows: Vec<String> = s.rows.iter().map(ToString::to_string).collect();
            rows.sort();
            (s.store, rows)
        })
        .collect();
    stores.sort();
    stores
}

/// Feeds `events` to an in-memory and an on-disk pipeline made by `make`, committing both
/// halfway, and asserts equal snapshots (with rows) after each half. Returns the last
/// snapshot's row count.
fn same_snapshot<K0, V0, K, V>(
    make: impl Fn(Option<&Path>) -> Pipeline<K0, V0, K, V>,
    events: &[(K0, V0, i64)],
) -> usize
where
    K0: Clone + Send + 'static,
    V0: Clone + Send + 'static,
    K: Send + 'static,
    V: Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let mut memory = make(None);
    let mut disk = make(Some(dir.path()));
    let half = events.len() / 2;
    let mut rows = 0;
    for (from, to) in [(0, half), (half, events.len())] {
        for p in [&mut memory, &mut disk] {
            for (i, (k, v, t)) in events.iter().enumerate().take(to).skip(from) {
                p.push(Record::new(k.clone(), v.clone(), *t).at(0, i as i64));
            }
        }
        let expected = snapshot(&memory);
        rows = expected.iter().map(|(_, r)| r.len()).sum();
        assert!(rows > 0, "the in-memory run must have state to publish");
        assert_eq!(snapshot(&disk), expected);
        // The second half's state is partly in the file (written at this commit) and
        // partly in the store's write buffer.
        memory.commit().unwrap();
        disk.commit().unwrap();
        assert_eq!(snapshot(&disk), expected);
    }
    rows
}

/// Keyed events a few ms apart, over `keys` keys, out of order within each group of five.
fn events(n: i64, keys: u32) -> Vec<(u32, i64, i64)> {
    (0..n)
        .map(|i| {
            let t = i * 7 + (i * 3 % 5) * 11;
            ((i as u32 * 7919) % keys, i % 13, t)
        })
        .collect()
}

type Counts = Pipeline<u32, i64, Windowed<u32>, u64>;

fn tumbling_count(dir: Option<&Path>) -> Counts {
    Pipeline::with_backend(backend(dir), |s: Stream<u32, i64>| {
        s.window(Windows::tumbling(Duration::from_millis(500)).grace(Duration::from_millis(400)))
            .named("counts")
            .count()
    })
    .event_time(Duration::from_millis(100), None)
}

#[test]
fn an_on_disk_tumbling_count_publishes_the_in_memory_rows() {
    let rows = same_snapshot(tumbling_count, &events(800, 37));
    // Several windows are open at the end (grace 400 ms over 500 ms windows).
    assert!(rows > 37, "{rows}");
}

#[test]
fn an_on_disk_session_count_publishes_the_in_memory_rows() {
    let sessions = |dir: Option<&Path>| -> Counts {
        Pipeline::with_backend(backend(dir), |s: Stream<u32, i64>| {
            s.session_window(
                Windows::session(Duration::from_millis(60)).grace(Duration::from_millis(300)),
            )
            .named("sessions")
            .count()
        })
        .event_time(Duration::from_millis(100), None)
    };
    same_snapshot(sessions, &events(800, 23));
}

#[test]
fn an_on_disk_window_join_publishes_the_in_memory_rows() {
    type Joined = Pipeline<u32, Side<i64, i64>, u32, (Option<i64>, Option<i64>)>;
    let join = |dir: Option<&Path>| -> Joined {
        Pipeline::with_backend(backend(dir), |s: Stream<u32, Side<i64, i64>>| {
            s.window_join(
                JoinWindows::of(Duration::from_millis(120)).grace(Duration::from_millis(50)),
            )
            .outer(|_, l, r| (l.copied(), r.copied()))
        })
        .event_time(Duration::from_millis(100), None)
    };
    let events: Vec<(u32, Side<i64, i64>, i64)> = events(600, 11)
        .into_iter()
        .map(|(k, v, t)| {
            let side = if v % 2 == 0 {
                Side::Left(v)
            } else {
                Side::Right(v)
            };
            (k, side, t)
        })
        .collect();
    same_snapshot(join, &events);
}

#[test]
fn an_on_disk_anomaly_detector_publishes_the_in_memory_rows() {
    type Scores = Pipeline<String, f64, String, millrace_streams::operators::Anomaly<String>>;
    let scores = |dir: Option<&Path>| -> Scores {
        let detector = Detector::median_mad("scores", 8)
            .warmup(3)
            .direction(Direction::Both)
            .emit(AnomalyEmit::EveryScore);
        Pipeline::with_backend(backend(dir), move |s: Stream<String, f64>| {
            s.operator(detector.per_key(|v: &f64| *v), None)
        })
        .event_time(Duration::from_secs(1), None)
    };
    let events: Vec<(String, f64, i64)> = events(400, 29)
        .into_iter()
        .map(|(k, v, t)| (format!("series-{k}"), v as f64 * 1.5, t))
        .collect();
    let rows = same_snapshot(scores, &events);
    assert_eq!(rows, 29);
}

#[test]
fn an_on_disk_snapshot_stops_at_the_cap_with_the_newest_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut disk = tumbling_count(Some(dir.path()));
    // An older window with a few keys, then a newer one with more keys than the cap: the
    // snapshot is the cap's worth of rows, all from the newer window.
    let cap = SNAPSHOT_ROW_CAP as u32;
    let mut offset = 0;
    let mut push = |p: &mut Counts, key: u32, t: i64| {
        p.push(Record::new(key, 1, t).at(0, offset));
        offset += 1;
    };
    for key in 0..50 {
        push(&mut disk, key, 100);
    }
    for key in 0..cap + 25 {
        push(&mut disk, key, 600);
    }
    assert_eq!(disk.state_len(), 50 + SNAPSHOT_ROW_CAP + 25);
    let stores = disk.snapshot();
    assert_eq!(stores.len(), 1);
    let rows = &stores[0].rows;
    assert_eq!(rows.len(), SNAPSHOT_ROW_CAP);
    assert!(
        rows.iter().all(|r| r["window_start"] == 500),
        "newest first"
    );
    // The same after a commit, with the state in the file rather than the write buffer.
    disk.commit().unwrap();
    assert_eq!(disk.snapshot()[0].rows.len(), SNAPSHOT_ROW_CAP);
}

#[test]
fn an_on_disk_session_snapshot_stops_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut disk: Counts =
        Pipeline::with_backend(StateBackend::on_disk(dir.path()), |s: Stream<u32, i64>| {
            s.session_window(Windows::session(Duration::from_secs(60)).no_grace())
                .named("sessions")
                .count()
        });
    let n = SNAPSHOT_ROW_CAP + 40;
    for key in 0..n {
        disk.push(Record::new(key as u32, 1, 1_000).at(0, key as i64));
    }
    assert_eq!(disk.state_len(), n);
    let rows = disk.snapshot().remove(0).rows;
    assert_eq!(rows.len(), SNAPSHOT_ROW_CAP);
    // Every row is a distinct live session.
    let mut keys: Vec<u64> = rows.iter().map(|r| r["key"].as_u64().unwrap()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), SNAPSHOT_ROW_CAP);
    assert!(keys.iter().all(|&k| k < n as u64));
}

#[test]
fn an_on_disk_sliding_window_publishes_the_in_memory_rows() {
    let sliding = |dir: Option<&Path>| -> Pipeline<u32, i64, Windowed<u32>, i64> {
        Pipeline::with_backend(backend(dir), |s: Stream<u32, i64>| {
            s.sliding_window(
                Windows::sliding(Duration::from_millis(200)).grace(Duration::from_millis(100)),
            )
            .named("sliding")
            .aggregate(|| 0i64, |acc, v| *acc += v)
        })
        .event_time(Duration::from_millis(100), None)
    };
    let rows = same_snapshot(sliding, &events(600, 23));
    // Buffered records of several keys are still within their windows at the end.
    assert!(rows > 23, "{rows}");
}

#[test]
fn an_on_disk_dedupe_publishes_the_in_memory_rows() {
    let dedupe = |dir: Option<&Path>| -> Pipeline<u32, i64, u32, i64> {
        Pipeline::with_backend(backend(dir), |s: Stream<u32, i64>| {
            s.dedupe(Duration::from_millis(250), |k, v| (*k, v.rem_euclid(7)))
        })
        .event_time(Duration::from_millis(100), None)
    };
    let rows = same_snapshot(dedupe, &events(600, 23));
    assert!(rows > 23, "{rows}");
}

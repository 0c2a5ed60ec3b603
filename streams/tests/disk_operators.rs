//! The ready-made analytics operators (the anomaly detector and "also viewed") keep their
//! state where the pipeline's backend (or their own `with_backend`) says, and give exactly
//! the same records in memory and on disk, over several keys and out-of-order input; a
//! checkpoint of either backend restores the other and the two carry on in step.
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use millrace_streams::operators::{
    also_viewed, AlsoViewed, Anomaly, AnomalyEmit, Detector, Direction, Related,
};
use millrace_streams::{Checkpoint, EmitMode, Pipeline, Record, StateBackend, Stream, Windows};

const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;

fn backend(dir: Option<&Path>) -> StateBackend {
    dir.map_or(StateBackend::InMemory, StateBackend::on_disk)
}

/// Whether `dir` holds the on-disk file of store `store` (named `{store}-{pid}-{n}.redb`).
fn has_store_file(dir: &Path, store: &str) -> bool {
    let prefix = format!("{store}-{}-", std::process::id());
    std::fs::read_dir(dir).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(&prefix)
    })
}

/// The snapshot rows of store `store`.
fn rows<K0, V0, K, V>(p: &Pipeline<K0, V0, K, V>, store: &str) -> Vec<serde_json::Value>
where
    K0: Send + 'static,
    V0: Send + 'static,
    K: Send + 'static,
    V: Send + 'static,
{
    p.snapshot()
        .into_iter()
        .find(|s| s.store == store)
        .map(|s| s.rows)
        .unwrap_or_default()
}

/// Rows in a fixed order (their JSON text): the backends list them in different orders.
fn sorted(rows: Vec<serde_json::Value>) -> Vec<String> {
    let mut rows: Vec<String> = rows.iter().map(ToString::to_string).collect();
    rows.sort();
    rows
}

/// The entries a checkpoint writes (tombstones left out: only the on-disk store has seen
/// entries written and removed between two commits).
fn upserts(checkpoint: &Checkpoint) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    checkpoint
        .stores
        .iter()
        .flat_map(|s| {
            s.changes
                .iter()
                .filter_map(|c| c.value.clone().map(|v| (s.store.clone(), c.key.clone(), v)))
        })
        .collect()
}

fn feed<K0, V0, K, V>(p: &mut Pipeline<K0, V0, K, V>, events: &[(K0, V0, i64)], from: usize)
where
    K0: Clone + Send + 'static,
    V0: Clone + Send + 'static,
    K: Send + 'static,
    V: Send + 'static,
{
    for (i, (k, v, t)) in events.iter().enumerate().skip(from) {
        p.push(Record::new(k.clone(), v.clone(), *t).at(0, i as i64));
    }
}

/// Runs `events` through `make`'s pipeline in memory and on disk and asserts identical
/// output record by record and state size; checks that the on-disk run keeps `store` in a
/// file (and publishes the same snapshot rows as the in-memory run). At `split` both commit; a fresh on-disk pipeline
/// restores the in-memory checkpoint and a fresh in-memory one the on-disk checkpoint, and
/// all four carry on (the restored ones from three records before `split`, which they must
/// skip as replays). Returns the in-memory pipeline's whole output.
fn same_in_memory_and_on_disk<K0, V0, K, V>(
    make: impl Fn(Option<&Path>) -> Pipeline<K0, V0, K, V>,
    events: &[(K0, V0, i64)],
    split: usize,
    store: &str,
) -> Vec<Record<K, V>>
where
    K0: Clone + Send + 'static,
    V0: Clone + Send + 'static,
    K: PartialEq + Debug + Send + 'static,
    V: PartialEq + Debug + Send + 'static,
{
    let (first, second) = events.split_at(split);
    let disk_dir = tempfile::tempdir().unwrap();
    let restored_dir = tempfile::tempdir().unwrap();
    let mut memory = make(None);
    let mut disk = make(Some(disk_dir.path()));
    feed(&mut memory, first, 0);
    feed(&mut disk, first, 0);
    let mut all = memory.take_output();
    assert!(!all.is_empty(), "the first part must produce output");
    assert_eq!(disk.take_output(), all);
    assert_eq!(disk.state_len(), memory.state_len());
    assert!(memory.state_len() > 0);

    // The state really is where the backend says.
    assert!(has_store_file(disk_dir.path(), store));
    assert!(!rows(&memory, store).is_empty());
    assert_eq!(sorted(rows(&disk, store)), sorted(rows(&memory, store)));

    let from_memory = memory.commit().unwrap();
    let from_disk = disk.commit().unwrap();
    assert_eq!(upserts(&from_disk), upserts(&from_memory));

    // Each backend restores the other's changelog.
    let mut disk_restored = make(Some(restored_dir.path()));
    disk_restored.restore(from_memory.stores).unwrap();
    let mut memory_restored = make(None);
    memory_restored.restore(from_disk.stores).unwrap();
    assert!(has_store_file(restored_dir.path(), store));
    assert_eq!(disk_restored.state_len(), memory.state_len());
    assert_eq!(memory_restored.state_len(), memory.state_len());

    // The original runs continue where they were; the restored ones see the last records of
    // the first part again (a replay from an older committed offset).
    let events: Vec<(K0, V0, i64)> = first.iter().chain(second).cloned().collect();
    feed(&mut memory, &events, split);
    feed(&mut disk, &events, split);
    feed(&mut disk_restored, &events, split - 3);
    feed(&mut memory_restored, &events, split - 3);
    for p in [&mut disk_restored, &mut memory_restored] {
        assert_eq!(p.metrics().replays_skipped, 3);
    }
    let mut expected = memory.take_output();
    assert!(!expected.is_empty(), "the second part must produce output");
    assert_eq!(disk.take_output(), expected);
    assert_eq!(disk_restored.take_output(), expected);
    assert_eq!(memory_restored.take_output(), expected);
    for p in [&disk, &disk_restored, &memory_restored] {
        assert_eq!(p.state_len(), memory.state_len());
    }

    for p in [
        &mut memory,
        &mut disk,
        &mut disk_restored,
        &mut memory_restored,
    ] {
        p.finish();
    }
    let last = memory.take_output();
    assert_eq!(disk.take_output(), last);
    assert_eq!(disk_restored.take_output(), last);
    assert_eq!(memory_restored.take_output(), last);
    assert_eq!(disk.metrics(), memory.metrics());
    assert_eq!(disk_restored.metrics(), memory_restored.metrics());
    expected.extend(last);
    all.extend(expected);
    all
}

type Scores = Pipeline<String, f64, String, Anomaly<String>>;

/// Per-key values scored by `detector`, every score emitted, idle series expiring.
fn scores(dir: Option<&Path>, detector: Detector) -> Scores {
    let detector = detector
        .warmup(5)
        .direction(Direction::Both)
        .emit(AnomalyEmit::EveryScore)
        .expire_after(Duration::from_secs(30));
    Pipeline::with_backend(backend(dir), move |s: Stream<String, f64>| {
        s.operator(detector.per_key(|v: &f64| *v), None)
    })
    .event_time(Duration::from_secs(2), None)
}

/// Four series a second for a minute, arriving up to 600 ms out of order: `api` steady
/// around 100 with a spike at 20 s, `db` around 20 with a spike of 500 at 40 s, `web` around
/// 50 with a drop to 0 at 45 s, and `cron` for the first 8 s and the last 10 s only (idle
/// long enough in between to expire). One non-finite value, which is skipped.
fn series_events() -> Vec<(String, f64, i64)> {
    let mut events = Vec::new();
    for i in 0..60i64 {
        let jitter = (i * 7 % 5) * 300 - 600;
        let t = i * SEC + jitter;
        let api = if i == 20 {
            400.0
        } else {
            100.0 + (i % 3) as f64
        };
        let db = if i == 40 {
            500.0
        } else {
            20.0 + (i % 4) as f64
        };
        let web = match i {
            45 => 0.0,
            33 => f64::NAN,
            _ => 50.0 - (i % 2) as f64 * 3.0,
        };
        events.push(("api".to_string(), api, t));
        events.push(("db".to_string(), db, t + 100));
        events.push(("web".to_string(), web, t - 100));
        if !(8..50).contains(&i) {
            events.push(("cron".to_string(), 5.0 + (i % 2) as f64, t + 200));
        }
    }
    events
}

fn check_detector(detector: impl Fn() -> Detector) {
    let events = series_events();
    // The split falls between the api spike and the db spike.
    let split = events.iter().position(|e| e.2 >= 30 * SEC).unwrap();
    let out = same_in_memory_and_on_disk(|dir| scores(dir, detector()), &events, split, "scores");
    let alerts: Vec<(&str, f64)> = out
        .iter()
        .filter(|r| r.value.is_anomaly)
        .map(|r| (r.key.as_str(), r.value.value))
        .collect();
    for expected in [("api", 400.0), ("db", 500.0), ("web", 0.0)] {
        assert!(alerts.contains(&expected), "{expected:?} in {alerts:?}");
    }
    // cron expired while idle and warmed up again.
    let cron: Vec<u64> = out
        .iter()
        .filter(|r| r.key == "cron")
        .map(|r| r.value.observations)
        .collect();
    assert_eq!(cron.iter().filter(|&&n| n == 0).count(), 2, "{cron:?}");
}

#[test]
fn ewma_detector_is_the_same_in_memory_and_on_disk_and_restores_across_backends() {
    check_detector(|| Detector::ewma("scores", 0.2));
}

#[test]
fn median_mad_detector_is_the_same_in_memory_and_on_disk_and_restores_across_backends() {
    check_detector(|| Detector::median_mad("scores", 8));
}

type Logins = Pipeline<String, (), String, Anomaly<String>>;

/// Failed logins per user per 10 s into a median/MAD detector with gap filling: both the
/// windowed count and the detector follow the pipeline's backend.
fn logins(dir: Option<&Path>) -> Logins {
    Pipeline::with_backend(backend(dir), |s: Stream<String, ()>| {
        s.window(Windows::tumbling(Duration::from_secs(10)).grace(Duration::from_secs(1)))
            .emit(EmitMode::Final)
            .named("counts")
            .count()
            .operator(
                Detector::median_mad("login-scores", 10)
                    .warmup(5)
                    .fill_gaps(0.0)
                    .emit(AnomalyEmit::EveryScore)
                    .per_window(|&n: &u64| n as f64),
                None,
            )
    })
    .event_time(Duration::from_secs(2), None)
}

#[test]
fn windowed_detector_with_filled_gaps_is_the_same_in_memory_and_on_disk() {
    let mut events = Vec::new();
    for window in 0..30i64 {
        let base = window * 10 * SEC;
        // ann fails now and then, 25 times in window 25; bob once in every third window;
        // cy twice in every window.
        let ann = match window {
            25 => 25,
            w if w % 4 == 1 => 1,
            _ => 0,
        };
        let bob = i64::from(window % 3 == 0);
        for (user, n) in [("ann", ann), ("bob", bob), ("cy", 2)] {
            for i in 0..n {
                // Up to 1.5 s out of order.
                let t = base + 500 + i * 300 + ((i * 5 + window) % 4) * 500 - 1_500;
                events.push((user.to_string(), (), t.max(base)));
            }
        }
    }
    events.sort_by_key(|e| (e.2 / 1_700, e.0.clone()));
    let split = events.iter().position(|e| e.2 >= 150 * SEC).unwrap();
    let out = same_in_memory_and_on_disk(logins, &events, split, "login-scores");
    let alerts: Vec<(&str, f64)> = out
        .iter()
        .filter(|r| r.value.is_anomaly)
        .map(|r| (r.key.as_str(), r.value.value))
        .collect();
    assert_eq!(alerts, vec![("ann", 25.0)]);
}

#[test]
fn detector_with_its_own_backend_ignores_the_pipeline_backend() {
    let dir = tempfile::tempdir().unwrap();
    let own = StateBackend::on_disk(dir.path());
    let mut on_disk = Pipeline::new(move |s: Stream<String, f64>| {
        s.operator(
            Detector::ewma("own-disk", 0.2)
                .per_key(|v: &f64| *v)
                .with_backend(own),
            None,
        )
    });
    let pipeline_dir = tempfile::tempdir().unwrap();
    let mut in_memory = Pipeline::with_backend(
        StateBackend::on_disk(pipeline_dir.path()),
        |s: Stream<String, f64>| {
            s.operator(
                Detector::ewma("own-memory", 0.2)
                    .per_key(|v: &f64| *v)
                    .with_backend(StateBackend::InMemory),
                None,
            )
        },
    );
    for p in [&mut on_disk, &mut in_memory] {
        p.push(Record::new("a".to_string(), 1.0, 0));
    }
    assert!(has_store_file(dir.path(), "own-disk"));
    // Published from the file like in-memory state.
    assert_eq!(rows(&on_disk, "own-disk").len(), 1);
    assert!(!has_store_file(pipeline_dir.path(), "own-memory"));
    assert_eq!(rows(&in_memory, "own-memory").len(), 1);
}

type Recs = Pipeline<String, String, String, Related<String>>;

/// Views keyed by user into 30-minute sessions and "also viewed" with a one-hour half-life,
/// a top 2 and 3 candidates per item (so neighbours get replaced).
fn recommendations(dir: Option<&Path>) -> Recs {
    Pipeline::with_backend(backend(dir), |s: Stream<String, String>| {
        also_viewed(
            s,
            Windows::session(Duration::from_secs(30 * 60)).grace(Duration::from_secs(60)),
            AlsoViewed::new("also")
                .top_k(2)
                .max_candidates(3)
                .half_life(Duration::from_secs(3_600)),
        )
    })
    .event_time(Duration::from_secs(120), None)
}

/// Sixteen sessions of five users over ten hours, three to five items each out of seven,
/// views a minute apart with neighbouring views arriving swapped.
fn view_events() -> Vec<(String, String, i64)> {
    let items = ["A", "B", "C", "D", "E", "F", "G"];
    let users = ["u1", "u2", "u3", "u4", "u5"];
    let mut events = Vec::new();
    for s in 0..16usize {
        let user = users[s % users.len()];
        let start = s as i64 * 40 * MIN;
        let len = 3 + s % 3;
        let mut views: Vec<(String, String, i64)> = (0..len)
            .map(|j| {
                let item = items[(s * 3 + j * (1 + s % 2)) % items.len()];
                (user.to_string(), item.to_string(), start + j as i64 * MIN)
            })
            .collect();
        // A revisit, and the second and third view arriving in the wrong order.
        views.push((
            user.to_string(),
            views[0].1.clone(),
            start + len as i64 * MIN,
        ));
        views.swap(1, 2);
        events.extend(views);
    }
    // Sessions of different users overlap in time: interleave them by arrival.
    events.sort_by_key(|e| e.2 / (3 * MIN));
    events
}

#[test]
fn also_viewed_is_the_same_in_memory_and_on_disk_and_restores_across_backends() {
    let events = view_events();
    let split = events.len() / 2;
    let out = same_in_memory_and_on_disk(recommendations, &events, split, "also");
    // Lists are bounded by top-K and decayed scores differ from whole co-view counts.
    assert!(out.iter().all(|r| r.value.related.len() <= 2));
    assert!(out
        .iter()
        .any(|r| r.value.related.iter().any(|(_, s)| s.fract() != 0.0)));
}

#[test]
fn also_viewed_with_its_own_backend_keeps_both_steps_there() {
    let dir = tempfile::tempdir().unwrap();
    let own = StateBackend::on_disk(dir.path());
    let mut p = Pipeline::new(move |s: Stream<String, String>| {
        also_viewed(
            s,
            Windows::session(Duration::from_secs(60)).no_grace(),
            AlsoViewed::new("own").with_backend(own),
        )
    });
    for (item, t) in [("A", 0), ("B", 1_000), ("C", 120_000)] {
        p.push(Record::new("u".to_string(), item.to_string(), t));
    }
    assert_eq!(p.take_output().len(), 2);
    assert!(has_store_file(dir.path(), "own"));
    assert!(has_store_file(dir.path(), "own-sessions"));
    // Published from the file like in-memory state: A and B viewed together.
    let items: Vec<_> = rows(&p, "own").iter().map(|r| r["item"].clone()).collect();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(p.state_len(), 3);
}

//! End of input against a broker over TCP: after `EndOfInput::signal`, windows that event
//! time alone would never close (nothing comes after them) are emitted with their exact
//! counts, for a co-partitioned job and for a `group_by` job (through the repartition topic),
//! and the job keeps processing input produced afterwards.
//!
//! Then, in process (module `steps`): after an end of input, a record that would reopen an
//! emitted sliding window or join an expired record is late, dedupe still drops duplicates,
//! and every step keeps that after a checkpoint and a restore into a fresh pipeline (in
//! memory, on disk, and from a changelog written in memory into one on disk).
#![allow(clippy::unwrap_used)]

#[path = "common/kafka.rs"]
mod kafka;

use std::collections::BTreeMap;
use std::time::Duration;

use kafka::{channel_sink, drain_now, produce_json, spawn_job};
use millrace_client::ClientConfig;
use millrace_streams::runtime::{Job, Source, StreamsConfig};
use millrace_streams::{EmitMode, Windows};
use millrace_testkit::{create_topic, start_broker_in, FAST_GROUPS};
use serde::{Deserialize, Serialize};

const WINDOW_MS: i64 = 10_000;
const BASE: i64 = 1_800_000_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct View {
    page: String,
    ts: i64,
}

/// `count` views of 5 pages by 20 users, spread over `span_ms` from `start`, slightly out of
/// order; keyed by `key_by_page` ? page : user.
fn views(count: usize, start: i64, span_ms: i64, key_by_page: bool) -> Vec<(String, Option<View>)> {
    (0..count)
        .map(|i| {
            let mut ts = start + (i as i64) * span_ms / count as i64;
            if i % 5 == 2 {
                ts -= 700;
            }
            let page = format!("/p/{}", (i * 3) % 5);
            let key = if key_by_page {
                page.clone()
            } else {
                format!("user-{}", i % 20)
            };
            (key, Some(View { page, ts }))
        })
        .collect()
}

fn batch(input: &[(String, Option<View>)]) -> BTreeMap<(String, i64), u64> {
    let mut counts = BTreeMap::new();
    for view in input.iter().filter_map(|(_, v)| v.as_ref()) {
        let start = view.ts - view.ts.rem_euclid(WINDOW_MS);
        *counts.entry((view.page.clone(), start)).or_insert(0) += 1;
    }
    counts
}

fn config(client: &ClientConfig, app: &str) -> StreamsConfig {
    StreamsConfig::new(app, client.clone())
        .commit_interval(Duration::from_millis(500))
        // Long idle timeout and out-of-orderness: without the end of input, the last
        // windows of every page stay open for the whole test.
        .event_time(Duration::from_secs(3), Some(Duration::from_secs(600)))
        .session_timeout(Duration::from_secs(6))
}

fn windows() -> Windows {
    Windows::tumbling(Duration::from_millis(WINDOW_MS as u64)).grace(Duration::from_secs(1))
}

/// Final counts as ((page, window start), count), each window exactly once.
fn as_map<I: IntoIterator<Item = ((String, i64), u64)>>(rows: I) -> BTreeMap<(String, i64), u64> {
    let mut map = BTreeMap::new();
    for (key, count) in rows {
        assert!(
            map.insert(key.clone(), count).is_none(),
            "{key:?} emitted twice"
        );
    }
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_input_closes_every_window_of_a_co_partitioned_job() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    create_topic(&client, "views", 3).await;
    let input = views(600, BASE, 60_000, true);
    produce_json(&client, "views", &input).await;
    let expected = batch(&input);

    let (sink, mut rx) = channel_sink();
    let job = Job::new(
        config(&client, "eoi-new"),
        Source::json(&["views"], |v: &View| v.ts),
        |views| {
            views
                .window(windows())
                .emit(EmitMode::Final)
                .named("counts")
                .count()
        },
        sink,
    );
    let end = job.end_of_input();
    let state = job.state();
    let metrics = job.metrics();
    let (stop, handle) = spawn_job(|stopped| {
        job.run(async move {
            let _ = stopped.await;
        })
    });
    end.signal();
    tokio::time::timeout(Duration::from_secs(60), end.drained())
        .await
        .expect("end of input not drained");
    // Everything is out once drained: no waiting for more.
    let got = as_map(
        drain_now(&mut rx)
            .into_iter()
            .map(|r| ((r.key.key, r.key.window_start), r.value)),
    );
    assert_eq!(got, expected);
    assert_eq!(metrics.snapshot().records_in, input.len() as u64);
    assert!(state.rows("counts").is_empty(), "windows still open");

    // The job keeps running: later input is processed, and a second end of input closes
    // its windows too.
    let more = views(100, BASE + 120_000, 20_000, true);
    produce_json(&client, "views", &more).await;
    end.signal();
    tokio::time::timeout(Duration::from_secs(60), end.drained())
        .await
        .expect("second end of input not drained");
    let got = as_map(
        drain_now(&mut rx)
            .into_iter()
            .map(|r| ((r.key.key, r.key.window_start), r.value)),
    );
    assert_eq!(got, batch(&more));
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_input_waits_for_the_repartition_topic_in_a_group_by_job() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    create_topic(&client, "views", 3).await;
    let input = views(1500, BASE, 90_000, false);
    produce_json(&client, "views", &input).await;
    let expected = batch(&input);

    let (sink, mut rx) = channel_sink();
    let job = Job::group_by(
        config(&client, "eoi-group"),
        Source::json(&["views"], |v: &View| v.ts),
        |_user, view| view.page.clone(),
        |views| {
            views
                .window(windows())
                .emit(EmitMode::Final)
                .named("page-counts")
                .count()
        },
        sink,
    );
    let end = job.end_of_input();
    let metrics = job.metrics();
    // Signalled before the job even joined its group: the ends are taken at once, the
    // draining waits for the assignment.
    end.signal();
    let (stop, handle) = spawn_job(|stopped| {
        job.run(async move {
            let _ = stopped.await;
        })
    });
    tokio::time::timeout(Duration::from_secs(60), end.drained())
        .await
        .expect("end of input not drained");
    let got = as_map(
        drain_now(&mut rx)
            .into_iter()
            .map(|r| ((r.key.key, r.key.window_start), r.value)),
    );
    assert_eq!(got, expected);
    // Both stages were read completely: each source record once from the source, once from
    // the repartition topic.
    assert_eq!(metrics.snapshot().records_in, 2 * input.len() as u64);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    // Nothing more was emitted at shutdown: the end of input had closed everything.
    assert!(drain_now(&mut rx).is_empty());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_a_group_by_job_drain_together() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[FAST_GROUPS]).await;
    let client = ClientConfig::new(broker.local_addr().to_string());
    create_topic(&client, "views", 3).await;
    let input = views(1200, BASE, 60_000, false);
    produce_json(&client, "views", &input).await;
    let expected = batch(&input);

    let instance = || {
        let (sink, rx) = channel_sink();
        let job = Job::group_by(
            config(&client, "eoi-two"),
            Source::json(&["views"], |v: &View| v.ts),
            |_user, view| view.page.clone(),
            |views| {
                views
                    .window(windows())
                    .emit(EmitMode::Final)
                    .named("page-counts")
                    .count()
            },
            sink,
        );
        let end = job.end_of_input();
        let metrics = job.metrics();
        let (stop, handle) = spawn_job(|stopped| {
            job.run(async move {
                let _ = stopped.await;
            })
        });
        (end, metrics, stop, handle, rx)
    };
    let (end_a, metrics_a, stop_a, handle_a, mut rx_a) = instance();
    let (end_b, metrics_b, stop_b, handle_b, mut rx_b) = instance();
    // Both instances in the group with tasks, so each forwards and reads only its share.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metrics_a.snapshot().tasks == 0 || metrics_b.snapshot().tasks == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no rebalance to two instances"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    end_a.signal();
    end_b.signal();
    for end in [&end_a, &end_b] {
        tokio::time::timeout(Duration::from_secs(60), end.drained())
            .await
            .expect("end of input not drained");
    }
    let got = as_map(
        drain_now(&mut rx_a)
            .into_iter()
            .chain(drain_now(&mut rx_b))
            .map(|r| ((r.key.key, r.key.window_start), r.value)),
    );
    assert_eq!(got, expected);
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    handle_a.await.unwrap().unwrap();
    handle_b.await.unwrap().unwrap();
    broker.shutdown().await;
}

// In-process pipelines: every stateful step keeps what an end of input closed closed, and
// so does a step restored from a checkpoint taken after it (its seal is in its changelog).

mod steps {
    use std::path::Path;
    use std::time::Duration;

    use millrace_streams::windows::join::{JoinWindows, Side};
    use millrace_streams::{EmitMode, Pipeline, Record, StateBackend, Stream, Windowed, Windows};

    type Sums = Pipeline<u32, i64, Windowed<u32>, i64>;
    type Rows = Vec<(u32, i64, i64, i64)>;
    type Joined = Pipeline<u32, Side<i64, i64>, u32, (Option<i64>, Option<i64>)>;
    type Deduped = Pipeline<u32, i64, u32, i64>;

    fn backend(dir: Option<&Path>) -> StateBackend {
        dir.map_or(StateBackend::InMemory, StateBackend::on_disk)
    }

    fn tumbling(dir: Option<&Path>) -> Sums {
        Pipeline::with_backend(backend(dir), |s: Stream<u32, i64>| {
            s.window(Windows::tumbling(Duration::from_millis(100)).no_grace())
                .emit(EmitMode::Final)
                .aggregate(|| 0i64, |acc, v| *acc += v)
        })
    }

    fn sessions(dir: Option<&Path>) -> Sums {
        Pipeline::with_backend(backend(dir), |s: Stream<u32, i64>| {
            s.session_window(Windows::session(Duration::from_millis(150)).no_grace())
                .emit(EmitMode::Final)
                .aggregate(|| 0i64, |acc, v| *acc += v, |a, b| *a += b)
        })
    }

    fn sliding(dir: Option<&Path>) -> Sums {
        Pipeline::with_backend(backend(dir), |s: Stream<u32, i64>| {
            s.sliding_window(Windows::sliding(Duration::from_millis(100)).no_grace())
                .emit(EmitMode::Final)
                .aggregate(|| 0i64, |acc, v| *acc += v)
        })
    }

    fn join(dir: Option<&Path>) -> Joined {
        Pipeline::with_backend(backend(dir), |s: Stream<u32, Side<i64, i64>>| {
            s.window_join(JoinWindows::of(Duration::from_millis(100)).no_grace())
                .outer(|_, l, r| (l.copied(), r.copied()))
        })
    }

    fn dedupe(dir: Option<&Path>) -> Deduped {
        Pipeline::with_backend(backend(dir), |s: Stream<u32, i64>| {
            s.dedupe(Duration::from_secs(10), |k, _| *k)
        })
    }

    fn rows(p: &mut Sums) -> Rows {
        p.take_output()
            .into_iter()
            .map(|r| (r.key.key, r.key.window_start, r.key.window_end, r.value))
            .collect()
    }

    fn joined(p: &mut Joined) -> Vec<(Option<i64>, Option<i64>)> {
        p.take_output().into_iter().map(|r| r.value).collect()
    }

    fn passed(p: &mut Deduped) -> Vec<i64> {
        p.take_output().into_iter().map(|r| r.value).collect()
    }

    /// The late side output so far as (event time, offset).
    fn late<K0, V0, K, V>(p: &mut Pipeline<K0, V0, K, V>) -> Vec<(i64, i64)>
    where
        K0: Send + 'static,
        V0: Send + 'static,
        K: Send + 'static,
        V: Send + 'static,
    {
        p.take_late()
            .into_iter()
            .map(|l| (l.timestamp, l.offset))
            .collect()
    }

    /// Checkpoints `p` and restores the checkpoint into `fresh` (the restarted task).
    fn restart<K0, V0, K, V>(
        p: &mut Pipeline<K0, V0, K, V>,
        mut fresh: Pipeline<K0, V0, K, V>,
    ) -> Pipeline<K0, V0, K, V>
    where
        K0: Send + 'static,
        V0: Send + 'static,
        K: Send + 'static,
        V: Send + 'static,
    {
        let checkpoint = p.commit().expect("commit");
        fresh.restore(checkpoint.stores).expect("restore");
        fresh
    }

    /// Where the first and the restarted pipeline keep their state: every combination, so
    /// the seal is read back whichever backend wrote it.
    fn backends(dir: &Path) -> [(Option<&Path>, Option<&Path>); 3] {
        [(None, None), (Some(dir), Some(dir)), (None, Some(dir))]
    }

    #[test]
    fn a_record_after_end_of_input_does_not_reopen_an_emitted_sliding_window() {
        let mut p = sliding(None);
        p.push(Record::new(1, 1, 1_000).at(0, 0));
        p.push(Record::new(1, 2, 1_050).at(0, 1));
        p.end_of_input();
        assert_eq!(
            rows(&mut p),
            vec![(1, 900, 1_000, 1), (1, 950, 1_050, 3), (1, 1_001, 1_101, 2)]
        );
        // Not late for the watermark (set back to 1 050), but window [1 001, 1 101] was
        // emitted: late, and nothing emitted twice.
        p.push(Record::new(1, 4, 1_100).at(0, 2));
        assert_eq!(late(&mut p), vec![(1_100, 2)]);
        // Past every closed window end: processed normally.
        p.push(Record::new(1, 8, 1_300).at(0, 3));
        p.end_of_input();
        assert_eq!(rows(&mut p), vec![(1, 1_200, 1_300, 8)]);
        assert_eq!(p.metrics().late_records, 1);
    }

    #[test]
    fn a_record_after_end_of_input_does_not_join_an_expired_record() {
        let mut p = join(None);
        p.push(Record::new(1, Side::Left(1), 1_000).at(0, 0));
        p.end_of_input();
        // The outer join emitted the left record as unmatched.
        assert_eq!(joined(&mut p), vec![(Some(1), None)]);
        // Within the join window of that record: joining now would contradict the emitted
        // result, so it is late.
        p.push(Record::new(1, Side::Right(2), 1_050).at(0, 1));
        assert_eq!(late(&mut p), vec![(1_050, 1)]);
        assert!(joined(&mut p).is_empty());
        // Out of its reach: joins as usual.
        p.push(Record::new(1, Side::Right(3), 1_200).at(0, 2));
        p.push(Record::new(1, Side::Left(4), 1_250).at(0, 3));
        p.end_of_input();
        assert_eq!(joined(&mut p), vec![(Some(4), Some(3))]);
        assert_eq!(p.metrics().late_records, 1);
    }

    #[test]
    fn dedupe_remembers_its_ids_across_an_end_of_input() {
        let mut p = dedupe(None);
        p.push(Record::new(1, 1, 1_000).at(0, 0));
        p.end_of_input();
        assert_eq!(passed(&mut p), vec![1]);
        // A duplicate within the horizon is still dropped, not passed a second time.
        p.push(Record::new(1, 2, 2_000).at(0, 1));
        // A new id older than the watermark cannot be judged: late.
        p.push(Record::new(2, 3, 500).at(0, 2));
        // A new id passes.
        p.push(Record::new(3, 4, 2_500).at(0, 3));
        assert_eq!(passed(&mut p), vec![4]);
        assert_eq!(late(&mut p), vec![(500, 2)]);
        assert_eq!(
            (p.metrics().duplicates_dropped, p.metrics().late_records),
            (1, 1)
        );
    }

    #[test]
    fn a_restored_tumbling_window_stays_closed_after_end_of_input() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (from, to) in backends(dir.path()) {
            let mut p = tumbling(from);
            p.push(Record::new(1, 1, 10).at(0, 0));
            p.push(Record::new(1, 1, 150).at(0, 1));
            p.end_of_input();
            assert_eq!(rows(&mut p), vec![(1, 0, 100, 1), (1, 100, 200, 1)]);
            let mut q = restart(&mut p, tumbling(to));
            q.push(Record::new(1, 5, 160).at(0, 2));
            assert_eq!(late(&mut q), vec![(160, 2)], "{from:?} -> {to:?}");
            q.push(Record::new(1, 7, 250).at(0, 3));
            q.end_of_input();
            assert_eq!(rows(&mut q), vec![(1, 200, 300, 7)]);
        }
    }

    #[test]
    fn a_restored_session_stays_closed_after_end_of_input() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (from, to) in backends(dir.path()) {
            let mut p = sessions(from);
            p.push(Record::new(1, 1, 1_000).at(0, 0));
            p.end_of_input();
            assert_eq!(rows(&mut p), vec![(1, 1_000, 1_000, 1)]);
            let mut q = restart(&mut p, sessions(to));
            q.push(Record::new(1, 1, 1_100).at(0, 1));
            assert_eq!(late(&mut q), vec![(1_100, 1)], "{from:?} -> {to:?}");
            q.push(Record::new(1, 2, 1_200).at(0, 2));
            q.end_of_input();
            assert_eq!(rows(&mut q), vec![(1, 1_200, 1_200, 2)]);
        }
    }

    #[test]
    fn a_restored_sliding_window_stays_closed_after_end_of_input() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (from, to) in backends(dir.path()) {
            let mut p = sliding(from);
            p.push(Record::new(1, 1, 1_000).at(0, 0));
            p.push(Record::new(1, 2, 1_050).at(0, 1));
            p.end_of_input();
            assert_eq!(rows(&mut p).len(), 3);
            let mut q = restart(&mut p, sliding(to));
            q.push(Record::new(1, 4, 1_100).at(0, 2));
            assert_eq!(late(&mut q), vec![(1_100, 2)], "{from:?} -> {to:?}");
            q.push(Record::new(1, 8, 1_300).at(0, 3));
            q.end_of_input();
            assert_eq!(rows(&mut q), vec![(1, 1_200, 1_300, 8)]);
        }
    }

    #[test]
    fn a_restored_join_does_not_join_an_expired_record_after_end_of_input() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (from, to) in backends(dir.path()) {
            let mut p = join(from);
            p.push(Record::new(1, Side::Left(1), 1_000).at(0, 0));
            p.end_of_input();
            assert_eq!(joined(&mut p), vec![(Some(1), None)]);
            let mut q = restart(&mut p, join(to));
            q.push(Record::new(1, Side::Right(2), 1_050).at(0, 1));
            assert_eq!(late(&mut q), vec![(1_050, 1)], "{from:?} -> {to:?}");
            q.push(Record::new(1, Side::Right(3), 1_200).at(0, 2));
            q.push(Record::new(1, Side::Left(4), 1_250).at(0, 3));
            q.end_of_input();
            assert_eq!(joined(&mut q), vec![(Some(4), Some(3))]);
        }
    }

    #[test]
    fn a_restored_dedupe_still_drops_a_duplicate_after_end_of_input() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (from, to) in backends(dir.path()) {
            let mut p = dedupe(from);
            p.push(Record::new(1, 1, 1_000).at(0, 0));
            p.end_of_input();
            assert_eq!(passed(&mut p), vec![1]);
            let mut q = restart(&mut p, dedupe(to));
            q.push(Record::new(1, 2, 2_000).at(0, 1));
            q.push(Record::new(2, 3, 500).at(0, 2));
            q.push(Record::new(3, 4, 2_500).at(0, 3));
            assert_eq!(passed(&mut q), vec![4], "{from:?} -> {to:?}");
            assert_eq!(late(&mut q), vec![(500, 2)]);
            assert_eq!(q.metrics().duplicates_dropped, 1);
        }
    }

    #[test]
    fn the_seal_is_checkpointed_once_per_change() {
        let mut p = tumbling(None);
        p.push(Record::new(1, 1, 10).at(0, 0));
        p.end_of_input();
        let seals = |p: &mut Sums| {
            p.commit()
                .expect("commit")
                .stores
                .into_iter()
                .flat_map(|s| s.changes)
                .filter(|c| c.key.is_empty())
                .count()
        };
        assert_eq!(seals(&mut p), 1);
        // Nothing closed since: the changelog already has it.
        assert_eq!(seals(&mut p), 0);
    }
}

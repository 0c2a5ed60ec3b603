//! End of input against a broker over TCP: after `EndOfInput::signal`, windows that event
//! time alone would never close (nothing comes after them) are emitted with their exact
//! counts, for a co-partitioned job and for a `group_by` job (through the repartition topic),
//! and the job keeps processing input produced afterwards.
#![allow(clippy::unwrap_used)]

#[path = "common/kafka.rs"]
mod kafka;

use std::collections::BTreeMap;
use std::time::Duration;

use kafka::{channel_sink, create_topic, drain_now, produce_json, spawn_job};
use millrace_client::ClientConfig;
use millrace_streams::runtime::{Job, Source, StreamsConfig};
use millrace_streams::{EmitMode, Windows};
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
    let broker = kafka::start_broker(dir.path()).await;
    let client = ClientConfig::new(&broker.local_addr().to_string());
    create_topic(&client, "views", 3, false).await;
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
    let broker = kafka::start_broker(dir.path()).await;
    let client = ClientConfig::new(&broker.local_addr().to_string());
    create_topic(&client, "views", 3, false).await;
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
    let broker = kafka::start_broker(dir.path()).await;
    let client = ClientConfig::new(&broker.local_addr().to_string());
    create_topic(&client, "views", 3, false).await;
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

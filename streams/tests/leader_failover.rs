//! A stream job on a three-broker cluster keeps going through a leader failover: mid-stream,
//! the broker leading the input's first partition (and perhaps the job's group coordinator,
//! changelog or output partitions) stops dead, and the final window counts still equal the
//! batch answer: no record lost, none counted twice (a window emitted again carries the same
//! count).
#![allow(clippy::unwrap_used)]

#[path = "common/kafka.rs"]
mod kafka;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kafka::produce_json;
use millrace_client::consumer::{Consumer, ConsumerConfig};
use millrace_client::{Admin, ClientConfig, OffsetSpec, TopicPartition};
use millrace_streams::runtime::{Job, Sink, Source, StreamsConfig};
use millrace_streams::{EmitMode, Windows};
use millrace_testkit::{create_topic, TestCluster, FAST_FAILOVER, FAST_GROUPS};
use serde::{Deserialize, Serialize};

const APP: &str = "failover";
const WINDOW_MS: i64 = 10_000;
const BASE: i64 = 1_800_000_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct View {
    page: String,
    ts: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct PageCount {
    page: String,
    window_start: i64,
    views: u64,
}

/// Logs to the test output with `RUST_LOG` (for example `RUST_LOG=millrace_streams=debug`).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn job(client: ClientConfig) -> Job<String, View, String, PageCount> {
    let config = StreamsConfig::new(APP, client)
        .commit_interval(Duration::from_millis(150))
        // Idleness well above the failover time: a source partition whose leader is being
        // replaced delivers nothing for a few seconds, and must keep holding the watermark
        // back (with a shorter idle timeout its delayed records would rightly be late).
        .event_time(Duration::from_secs(3), Some(Duration::from_secs(20)))
        .session_timeout(Duration::from_secs(6));
    Job::group_by(
        config,
        Source::json(&["views"], |v: &View| v.ts),
        |_user, view| view.page.clone(),
        |views| {
            views
                .window(
                    Windows::tumbling(Duration::from_millis(WINDOW_MS as u64))
                        .grace(Duration::from_secs(1)),
                )
                .emit(EmitMode::Final)
                .named("page-counts")
                .count()
                .map(|w, views| {
                    let count = PageCount {
                        page: w.key.clone(),
                        window_start: w.window_start,
                        views,
                    };
                    (w.key, count)
                })
        },
        Sink::json_values("counts"),
    )
}

/// 3000 views of 6 pages by 50 users over 90 s of event time, every 9th up to 2 s late.
fn views() -> Vec<(String, Option<View>)> {
    let n = 3_000;
    (0..n)
        .map(|i| {
            let mut ts = BASE + (i as i64) * 90_000 / n as i64;
            if i % 9 == 4 {
                ts -= 2_000;
            }
            let view = View {
                page: format!("/p/{}", (i * 5) % 6),
                ts,
            };
            (format!("user-{}", i % 50), Some(view))
        })
        .collect()
}

/// Far-future views for every partition: they close all earlier windows.
fn end_markers() -> Vec<(String, Option<View>)> {
    (0..30)
        .map(|i| {
            let view = View {
                page: format!("end-{i}"),
                ts: BASE + 3_600_000,
            };
            (format!("end-user-{i}"), Some(view))
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

async fn read_counts(client: &ClientConfig) -> Vec<PageCount> {
    let mut consumer = Consumer::connect(ConsumerConfig::new(client.clone()))
        .await
        .unwrap();
    let partitions: Vec<TopicPartition> = consumer
        .partitions_for("counts")
        .await
        .unwrap()
        .into_iter()
        .map(|p| TopicPartition::new("counts", p))
        .collect();
    let ends = consumer
        .offsets_for(&partitions, OffsetSpec::Latest)
        .await
        .unwrap();
    consumer.assign(&partitions).unwrap();
    consumer.seek_to_beginning(&partitions).unwrap();
    let mut out = Vec::new();
    while partitions
        .iter()
        .any(|tp| consumer.position(tp).is_none_or(|p| p < ends[tp].offset))
    {
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            out.push(serde_json::from_slice(record.value.as_deref().unwrap()).unwrap());
        }
    }
    consumer.close().await.unwrap();
    out
}

/// Every value in `topic`, read from the beginning to the end offsets of now.
async fn read_all(client: &ClientConfig, topic: &str) -> Vec<View> {
    let mut consumer = Consumer::connect(ConsumerConfig::new(client.clone()))
        .await
        .unwrap();
    let partitions: Vec<TopicPartition> = consumer
        .partitions_for(topic)
        .await
        .unwrap()
        .into_iter()
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let ends = consumer
        .offsets_for(&partitions, OffsetSpec::Latest)
        .await
        .unwrap();
    consumer.assign(&partitions).unwrap();
    consumer.seek_to_beginning(&partitions).unwrap();
    let mut out = Vec::new();
    while partitions
        .iter()
        .any(|tp| consumer.position(tp).is_none_or(|p| p < ends[tp].offset))
    {
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            if let Some(value) = record.value.as_deref() {
                if let Ok(view) = serde_json::from_slice(value) {
                    out.push(view);
                }
            }
        }
    }
    consumer.close().await.unwrap();
    out
}

/// Sum of the group's committed offsets on the repartition topic.
async fn committed(admin: &Admin) -> i64 {
    admin
        .list_group_offsets(APP)
        .await
        .map(|offsets| {
            offsets
                .iter()
                .filter(|(tp, _)| tp.topic == format!("{APP}-repartition"))
                .map(|(_, o)| *o)
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_keeps_exact_window_counts_through_a_leader_failover() {
    init_logs();
    let mut overrides = FAST_FAILOVER.to_vec();
    overrides.extend([
        FAST_GROUPS,
        "default.replication.factor=3",
        "min.insync.replicas=2",
    ]);
    let mut cluster = TestCluster::start(3, &overrides).await;
    let client = cluster.client_config("failover-test");
    create_topic(&client, "views", 3).await;
    let admin = Admin::connect(client.clone()).await.unwrap();
    let input = views();
    let expected = batch(&input);
    let (first, rest) = input.split_at(1_000);
    produce_json(&client, "views", first).await;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(job(client.clone()).run(async {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&admin).await < 500 {
        assert!(Instant::now() < deadline, "the job never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Mid-stream, with more input arriving: the leader of views-0 stops dead.
    let producer = {
        let client = client.clone();
        let rest = rest.to_vec();
        tokio::spawn(async move {
            for chunk in rest.chunks(100) {
                produce_json(&client, "views", chunk).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            produce_json(&client, "views", &end_markers()).await;
        })
    };
    let topics = admin.describe_topics(&["views"]).await.unwrap();
    let leader = topics[0].partitions[0].leader;
    assert!(leader > 0, "{topics:?}");
    cluster.halt(leader).await;
    producer.await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(120);
    let outputs = loop {
        let outputs = read_counts(&client).await;
        let windows: BTreeSet<(String, i64)> = outputs
            .iter()
            .map(|c| (c.page.clone(), c.window_start))
            .collect();
        if windows.len() >= expected.len() {
            break outputs;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} windows emitted",
            windows.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop_tx.send(()).unwrap();
    running.await.unwrap().unwrap();

    let mut seen: HashMap<(String, i64), u64> = HashMap::new();
    for output in &outputs {
        let key = (output.page.clone(), output.window_start);
        if let Some(previous) = seen.insert(key.clone(), output.views) {
            assert_eq!(previous, output.views, "{key:?} emitted with two counts");
        }
    }
    // Every input record is in the topic (acks=all through the failover), so a wrong count
    // below is the job's.
    let in_topic = read_all(&client, "views").await;
    assert_eq!(
        in_topic.len(),
        input.len() + end_markers().len(),
        "records in views"
    );
    let got: BTreeMap<(String, i64), u64> = seen.into_iter().collect();
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(window, count)| got.get(*window) != Some(count))
        .map(|(window, count)| (window, *count, got.get(window).copied()))
        .collect();
    assert!(wrong.is_empty(), "(window, expected, got): {wrong:?}");
    assert_eq!(got.len(), expected.len(), "windows nobody asked for");
    cluster.shutdown().await;
}

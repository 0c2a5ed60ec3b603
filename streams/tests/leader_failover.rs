//! A stream job on a three-broker cluster keeps going through a leader failover: mid-stream,
//! the broker leading the input's first partition (and perhaps the job's group coordinator,
//! changelog or output partitions) stops dead, and the final window counts still equal the
//! batch answer: no record lost, none counted twice (a window emitted again carries the same
//! count).
#![allow(clippy::unwrap_used)]

#[path = "common/kafka.rs"]
mod kafka;
#[path = "common/page_views.rs"]
mod page_views;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kafka::produce_json;
use millrace_client::{Admin, ClientConfig};
use millrace_streams::runtime::{Job, StreamsConfig};
use millrace_testkit::{create_topic, TestCluster, FAST_FAILOVER, FAST_GROUPS};
use page_views::{
    assert_exact, batch, committed, end_markers, page_count_job, read_json, views, PageCount, View,
};

const APP: &str = "failover";

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
    page_count_job(config)
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
    let input = views(3_000, 90_000);
    let expected = batch(&input);
    let (first, rest) = input.split_at(1_000);
    produce_json(&client, "views", first).await;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(job(client.clone()).run(async {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&admin, APP).await < 500 {
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
        let outputs: Vec<PageCount> = read_json(&client, "counts").await;
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

    // Every input record is in the topic (acks=all through the failover), so a wrong count
    // below is the job's.
    let in_topic: Vec<View> = read_json(&client, "views").await;
    assert_eq!(
        in_topic.len(),
        input.len() + end_markers().len(),
        "records in views"
    );
    assert_exact(&outputs, &expected);
    cluster.shutdown().await;
}

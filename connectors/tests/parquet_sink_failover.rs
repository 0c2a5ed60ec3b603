//! The Parquet sink on a three-broker cluster keeps going through a leader failover: the
//! leader of one of its partitions (and perhaps its group coordinator) is stopped without a
//! controlled shutdown while records keep arriving, and the files end up holding exactly the
//! topic, no row missing and none written twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array};
use millrace_client::Admin;
use millrace_connectors::parquet_sink::{ParquetSink, ParquetSinkConfig, RollingPolicy};
use millrace_connectors::ConnectConfig;
use millrace_testkit::{create_topic, TestCluster, FAST_FAILOVER, FAST_GROUPS};

const BASE: i64 = 1_795_600_800_000; // 2026-11-25T10:00:00Z

fn page_views(count: i64) -> Vec<String> {
    (0..count)
        .map(|i| {
            let ts = BASE + i * 1000;
            format!(r#"{{"id":{i},"ts":{ts},"path":"/p/{i}"}}"#)
        })
        .collect()
}

/// How many files hold each id.
fn written_ids(out: &std::path::Path) -> BTreeMap<i64, usize> {
    let mut ids = BTreeMap::new();
    for file in common::parquet_files(out) {
        for batch in common::read_file(&file) {
            let column = batch.column_by_name("id").unwrap();
            let column = column.as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..column.len() {
                *ids.entry(column.value(i)).or_insert(0) += 1;
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sink_writes_exactly_the_topic_through_a_leader_failover() {
    let mut overrides = FAST_FAILOVER.to_vec();
    overrides.extend([
        FAST_GROUPS,
        "default.replication.factor=3",
        "min.insync.replicas=2",
    ]);
    let mut cluster = TestCluster::start(3, &overrides).await;
    let client = cluster.client_config(common::CLIENT_ID);
    create_topic(&client, "page-views", 2).await;
    let total = 600;
    let values = page_views(total);
    common::produce(&client, "page-views", 2, &values[..300]).await;

    let out = tempfile::tempdir().unwrap();
    let config = ParquetSinkConfig {
        rolling: RollingPolicy {
            max_records: 50,
            max_open_ms: 300,
            ..RollingPolicy::default()
        },
        ..ConnectConfig::parse(&format!(
            "[[parquet_sink]]\nname = \"failover\"\nbootstrap = \"{}\"\ntopics = [\"page-views\"]\nout = \"{}\"\n",
            cluster.bootstrap(),
            out.path().display()
        ))
        .unwrap()
        .parquet_sink[0]
            .clone()
    };
    let sink = ParquetSink::new(config).unwrap();
    let metrics = sink.metrics();
    let running = common::RunningSink::start(sink);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.snapshot().records_written < 100 {
        assert!(
            Instant::now() < deadline,
            "stalled: {:?}",
            metrics.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Mid-stream: the leader of partition 0 stops dead.
    let admin = Admin::connect(client.clone()).await.unwrap();
    let topics = admin.describe_topics(&["page-views"]).await.unwrap();
    let leader = topics[0].partitions[0].leader;
    assert!(leader > 0, "{topics:?}");
    cluster.halt(leader).await;
    common::produce(&client, "page-views", 2, &values[300..]).await;

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ids = written_ids(out.path());
        if let Some((id, files)) = ids.iter().find(|(_, files)| **files > 1) {
            panic!("id {id} written {files} times");
        }
        if ids.len() == total as usize {
            assert_eq!(
                ids.keys().copied().collect::<Vec<_>>(),
                (0..total).collect::<Vec<_>>()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {total} rows written after the failover: {:?}",
            ids.len(),
            metrics.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await;
    cluster.shutdown().await;
}

//! The Parquet sink and the export against a broker on a free port: what lands in the files
//! is exactly what is in the topic, bad records go to the dead-letter topic with the reason.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array, StringArray};
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::TopicPartition;
use millrace_connectors::export::{export, Bound, ExportOptions};
use millrace_connectors::framework::dead_letter::{ERROR_HEADER, OFFSET_HEADER};
use millrace_connectors::parquet_sink::{ParquetSink, ParquetSinkConfig, RollingPolicy};
use millrace_connectors::ConnectConfig;
use millrace_testkit::{create_topic, TestBroker, FAST_GROUPS};

const BASE: i64 = 1_795_600_800_000; // 2026-11-25T10:00:00Z
const HOUR: i64 = 3_600_000;

/// `count` page views over three hours and two countries, `id` = position in the topic.
fn page_views(count: i64) -> Vec<String> {
    (0..count)
        .map(|i| {
            let country = if i % 2 == 0 { "DE" } else { "FR" };
            let ts = BASE + i * 3 * HOUR / count;
            format!(r#"{{"id":{i},"ts":{ts},"country":"{country}","path":"/p/{i}"}}"#)
        })
        .collect()
}

/// (id, path, directory) of every row in the files.
fn rows(out: &std::path::Path) -> BTreeMap<i64, (String, String)> {
    let mut rows = BTreeMap::new();
    for file in common::parquet_files(out) {
        let dir = file
            .parent()
            .unwrap()
            .strip_prefix(out)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for batch in common::read_file(&file) {
            let ids = batch.column_by_name("id").unwrap();
            let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
            let paths = batch.column_by_name("path").unwrap();
            let paths = paths.as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..batch.num_rows() {
                let previous = rows.insert(ids.value(i), (paths.value(i).to_string(), dir.clone()));
                assert!(previous.is_none(), "id {} written twice", ids.value(i));
            }
        }
    }
    rows
}

fn expected_dir(i: i64, count: i64) -> String {
    let hour = 10 + i * 3 / count;
    let country = if i % 2 == 0 { "DE" } else { "FR" };
    format!("topic=page-views/dt=2026-11-25/hour={hour}/country={country}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_writes_exactly_the_topic_and_dead_letters_bad_records() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = broker.client_config(common::CLIENT_ID);
    create_topic(&client, "page-views", 2).await;
    create_topic(&client, "page-views-dlq", 1).await;
    let mut values = page_views(400);
    values.push("{broken".to_string());
    values.push(r#"{"id":"not a number","ts":0,"country":"DE","path":"/"}"#.to_string());
    common::produce(&client, "page-views", 2, &values).await;

    let out = tempfile::tempdir().unwrap();
    let config = ConnectConfig::parse(&format!(
        r#"
        [[parquet_sink]]
        name = "test"
        bootstrap = "{bootstrap}"
        topics = ["page-views"]
        out = "{out}"
        time_field = "ts"
        partition_by = ["country"]
        dead_letter_topic = "page-views-dlq"
        [parquet_sink.rolling]
        max_records = 30
        max_open_ms = 500
        [parquet_sink.schema]
        columns = [
            {{ name = "id", type = "int64", nullable = false }},
            {{ name = "ts", type = "timestamp_ms" }},
            {{ name = "country", type = "string" }},
            {{ name = "path", type = "string" }},
        ]
        "#,
        bootstrap = broker.bootstrap(),
        out = out.path().display()
    ))
    .unwrap();
    let sink = ParquetSink::new(config.parquet_sink[0].clone()).unwrap();
    let metrics = sink.metrics();
    let running = common::RunningSink::start(sink);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.snapshot().records_written < 400 || metrics.snapshot().dead_lettered < 2 {
        assert!(
            Instant::now() < deadline,
            "sink stalled: {:?}",
            metrics.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;

    let rows = rows(out.path());
    assert_eq!(rows.len(), 400);
    for (id, (path, dir)) in &rows {
        assert_eq!(path, &format!("/p/{id}"));
        assert_eq!(dir, &expected_dir(*id, 400));
    }
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.dead_lettered, 2);
    assert!(snapshot.files_committed >= 400 / 30);

    // The dead letters, with the reason and where they came from.
    let mut consumer = Consumer::connect(
        ConsumerConfig::builder(client.clone())
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    consumer
        .assign(&[TopicPartition::new("page-views-dlq", 0)])
        .unwrap();
    let mut letters = Vec::new();
    while letters.len() < 2 {
        assert!(Instant::now() < deadline, "dead letters missing");
        letters.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    let header = |r: &millrace_client::record::ConsumerRecord, name: &str| {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .unwrap()
    };
    let mut reasons: Vec<String> = letters.iter().map(|r| header(r, ERROR_HEADER)).collect();
    reasons.sort();
    assert!(reasons[0].starts_with("does not fit the schema: field `id` is a string"));
    assert!(reasons[1].starts_with("value is not valid JSON"));
    assert!(letters
        .iter()
        .all(|r| header(r, OFFSET_HEADER).parse::<i64>().is_ok()));

    // Group offsets were committed after the files, so lag shows as zero.
    let admin = millrace_client::Admin::connect(client.clone())
        .await
        .unwrap();
    let committed = admin
        .list_group_offsets("millrace-parquet-test")
        .await
        .unwrap();
    assert_eq!(committed.values().sum::<i64>(), 402);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sink_continues_without_duplicates() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = broker.client_config(common::CLIENT_ID);
    create_topic(&client, "page-views", 1).await;
    let values = page_views(300);
    common::produce(&client, "page-views", 1, &values[..150]).await;
    let out = tempfile::tempdir().unwrap();
    let config = ParquetSinkConfig {
        rolling: RollingPolicy {
            max_records: 40,
            max_open_ms: 300,
            ..RollingPolicy::default()
        },
        time_field: Some("ts".into()),
        partition_by: vec!["country".into()],
        ..ConnectConfig::parse(&format!(
            "[[parquet_sink]]\nname = \"r\"\nbootstrap = \"{}\"\ntopics = [\"page-views\"]\nout = \"{}\"\n",
            broker.bootstrap(),
            out.path().display()
        ))
        .unwrap()
        .parquet_sink[0]
            .clone()
    };
    for (round, upto) in [(0, 150u64), (1, 300)] {
        if round == 1 {
            common::produce(&client, "page-views", 1, &values[150..]).await;
        }
        let sink = ParquetSink::new(config.clone()).unwrap();
        let metrics = sink.metrics();
        let running = common::RunningSink::start(sink);
        let deadline = Instant::now() + Duration::from_secs(30);
        let already = if round == 0 { 0 } else { 150 };
        while metrics.snapshot().records_written + already < upto {
            assert!(
                Instant::now() < deadline,
                "stalled: {:?}",
                metrics.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.stop().await;
    }
    let rows = rows(out.path());
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        (0..300).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_the_range_in_the_sink_layout() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = broker.client_config(common::CLIENT_ID);
    create_topic(&client, "page-views", 3).await;
    common::produce(&client, "page-views", 3, &page_views(300)).await;
    let out = tempfile::tempdir().unwrap();
    let sink_config = ConnectConfig::parse(&format!(
        "[[parquet_sink]]\nname = \"e\"\nbootstrap = \"b:1\"\ntopics = [\"page-views\"]\nout = \"{}\"\ntime_field = \"ts\"\npartition_by = [\"country\"]\n",
        out.path().display()
    ))
    .unwrap()
    .parquet_sink[0]
        .clone();
    let options = ExportOptions {
        client: client.clone(),
        topic: "page-views".into(),
        from: Bound::Beginning,
        to: Bound::End,
        engine: sink_config.engine_config(),
        dead_letter_topic: None,
    };
    let mut last = None;
    let summary = export(options.clone(), |p| last = Some(p)).await.unwrap();
    assert_eq!(summary.metrics.records_written, 300);
    assert_eq!(last.unwrap().records, 300);
    let rows = rows(out.path());
    assert_eq!(rows.len(), 300);
    for (id, (_, dir)) in &rows {
        assert_eq!(dir, &expected_dir(*id, 300));
    }
    // Exporting again into the same directory adds nothing.
    let files = common::parquet_files(out.path());
    let again = export(options, |_| {}).await.unwrap();
    assert_eq!(again.metrics.records_written, 0);
    assert_eq!(common::parquet_files(out.path()), files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_share_the_partitions_and_one_inferred_schema() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = broker.client_config(common::CLIENT_ID);
    create_topic(&client, "page-views", 4).await;
    common::produce(&client, "page-views", 4, &page_views(400)).await;
    let out = tempfile::tempdir().unwrap();
    let config = ConnectConfig::parse(&format!(
        r#"
        [[parquet_sink]]
        name = "two"
        bootstrap = "{bootstrap}"
        topics = ["page-views"]
        out = "{out}"
        tasks = 2
        time_field = "ts"
        partition_by = ["country"]
        [parquet_sink.rolling]
        max_records = 25
        max_open_ms = 300
        [parquet_sink.schema]
        infer_records = 10
        "#,
        bootstrap = broker.bootstrap(),
        out = out.path().display()
    ))
    .unwrap();
    let sink = ParquetSink::new(config.parquet_sink[0].clone()).unwrap();
    let metrics = sink.metrics();
    let running = common::RunningSink::start(sink);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.snapshot().records_written < 400 {
        assert!(
            Instant::now() < deadline,
            "stalled: {:?}",
            metrics.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = millrace_client::Admin::connect(client.clone())
        .await
        .unwrap();
    let group = admin
        .describe_groups(&["millrace-parquet-two"])
        .await
        .unwrap();
    assert_eq!(group[0].members.len(), 2, "{group:?}");
    running.stop().await;

    let rows = rows(out.path());
    assert_eq!(rows.len(), 400);
    for (id, (path, dir)) in &rows {
        assert_eq!(path, &format!("/p/{id}"));
        assert_eq!(dir, &expected_dir(*id, 400));
    }
    // Every file has the one saved schema, whichever task inferred it.
    let schemas: std::collections::HashSet<String> = common::parquet_files(out.path())
        .iter()
        .map(|f| format!("{:?}", common::read_file(f)[0].schema()))
        .collect();
    assert_eq!(schemas.len(), 1, "{schemas:?}");
    let snapshot = metrics.snapshot();
    assert_eq!((snapshot.lag, snapshot.errors), (0, 0));
}

/// Sends `values` through the transactional `producer` to partition 0 of `topic`.
async fn send_in_transaction(producer: &millrace_client::Producer, topic: &str, values: &[String]) {
    for value in values {
        let _delivery = producer
            .send(millrace_client::ProducerRecord::new(topic, value.clone()).partition(0))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_exports_committed_transactions_only_and_stops_at_the_last_stable_offset() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = broker.client_config(common::CLIENT_ID);
    create_topic(&client, "page-views", 1).await;
    let values = page_views(40);
    let producer = millrace_client::Producer::connect(
        millrace_client::ProducerConfig::builder(client.clone())
            .transactional_id("sink-feeder")
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    // Committed 0..10, aborted 30..40, committed 10..20, and 20..30 left open.
    for (range, commit) in [(0..10, true), (30..40, false), (10..20, true)] {
        producer.begin_transaction().unwrap();
        send_in_transaction(&producer, "page-views", &values[range]).await;
        if commit {
            producer.commit_transaction().await.unwrap();
        } else {
            producer.abort_transaction().await.unwrap();
        }
    }
    producer.begin_transaction().unwrap();
    send_in_transaction(&producer, "page-views", &values[20..30]).await;
    producer.flush().await;

    let out = tempfile::tempdir().unwrap();
    let config = ParquetSinkConfig {
        rolling: RollingPolicy {
            max_open_ms: 200,
            ..RollingPolicy::default()
        },
        time_field: Some("ts".into()),
        ..ConnectConfig::parse(&format!(
            "[[parquet_sink]]\nname = \"txn\"\nbootstrap = \"{}\"\ntopics = [\"page-views\"]\nout = \"{}\"\n",
            broker.bootstrap(),
            out.path().display()
        ))
        .unwrap()
        .parquet_sink[0]
            .clone()
    };
    let sink = ParquetSink::new(config).unwrap();
    let metrics = sink.metrics();
    let running = common::RunningSink::start(sink);
    let written = |n: u64| {
        let metrics = metrics.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while metrics.snapshot().records_written < n {
                assert!(
                    Instant::now() < deadline,
                    "stalled: {:?}",
                    metrics.snapshot()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    written(20).await;
    // The open transaction is past the last stable offset: a second in which the sink,
    // which polls every 500 ms at most, would have written it if it read past the LSO.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(metrics.snapshot().records_written, 20);

    producer.commit_transaction().await.unwrap();
    written(30).await;
    running.stop().await;
    producer.close().await;
    assert_eq!(
        rows(out.path()).keys().copied().collect::<Vec<_>>(),
        (0..30).collect::<Vec<_>>(),
        "committed records exported once each, the aborted ones (30..40) never"
    );
}

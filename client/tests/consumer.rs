//! The consumer against a broker on a free port, over TCP: round trips for every codec,
//! groups (eager and cooperative), commit and resume, seeks, pause and resume, and a broker
//! restart while an idempotent producer writes.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use millrace_client::consumer::{
    AssignmentStrategy, AutoOffsetReset, Consumer, ConsumerConfig, ConsumerEvent,
};
use millrace_client::{
    Admin, ClientConfig, ClientError, Compression, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use millrace_testkit::{
    create_topic, free_port, produce_all, start_broker_at, TestBroker, FAST_GROUPS,
};

fn consumer_config(config: &ClientConfig, group: Option<&str>) -> ConsumerConfig {
    let mut builder = ConsumerConfig::builder(config.clone())
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(200))
        .session_timeout(Duration::from_secs(6))
        .auto_commit_interval(Duration::from_millis(300));
    if let Some(group) = group {
        builder = builder.group_id(group);
    }
    builder.build().unwrap()
}

/// Produces `count` records `key-i` / `value-i` (partition by key) and returns each one's
/// (partition, offset).
async fn produce(
    config: &ClientConfig,
    topic: &str,
    count: usize,
    compression: Compression,
) -> Vec<(i32, i64)> {
    let producer = ProducerConfig::builder(config.clone())
        .compression(compression)
        .build()
        .unwrap();
    let records = (0..count).map(|i| {
        ProducerRecord::new(topic, format!("value-{i}"))
            .key(format!("key-{i}"))
            .header("n", i.to_string())
            .header("n", "again")
    });
    let records = records.collect();
    produce_all(producer, records)
        .await
        .into_iter()
        .map(|metadata| (metadata.partition, metadata.offset))
        .collect()
}

/// Polls until `count` records arrived or the deadline passed.
async fn read(
    consumer: &mut Consumer,
    count: usize,
    within: Duration,
) -> Vec<millrace_client::record::ConsumerRecord> {
    let deadline = Instant::now() + within;
    let mut records = Vec::new();
    while records.len() < count && Instant::now() < deadline {
        records.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    records
}

#[tokio::test]
async fn every_codec_round_trips_keys_values_and_duplicate_headers() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let config = broker.client_config("millrace-client-test");
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = format!("codec-{}", compression.name());
        create_topic(&config, &topic, 3).await;
        let placed = produce(&config, &topic, 300, compression).await;

        let mut consumer = Consumer::connect(consumer_config(&config, None))
            .await
            .unwrap();
        let partitions: Vec<TopicPartition> =
            (0..3).map(|p| TopicPartition::new(&topic, p)).collect();
        consumer.assign(&partitions).unwrap();
        consumer.seek_to_beginning(&partitions).unwrap();
        let records = read(&mut consumer, 300, Duration::from_secs(20)).await;
        assert_eq!(records.len(), 300, "{compression:?}");

        let mut last_offset: HashMap<i32, i64> = HashMap::new();
        for record in &records {
            let key = String::from_utf8(record.key.clone().unwrap().to_vec()).unwrap();
            let i: usize = key.strip_prefix("key-").unwrap().parse().unwrap();
            assert_eq!(
                record.value.as_deref(),
                Some(format!("value-{i}").as_bytes())
            );
            assert_eq!(
                (record.partition, record.offset),
                placed[i],
                "{compression:?}"
            );
            assert_eq!(record.headers.len(), 2);
            assert_eq!(record.headers[0].0, "n");
            assert_eq!(record.headers[1].1.as_deref(), Some(&b"again"[..]));
            let previous = last_offset.insert(record.partition, record.offset);
            assert!(
                previous.is_none_or(|p| p < record.offset),
                "order within a partition"
            );
        }
        consumer.close().await.unwrap();
    }
    broker.broker.shutdown().await;
}

/// What a member read, as (partition, offset), and the assignments it went through.
type MemberReport = (Vec<(i32, i64)>, Vec<Vec<TopicPartition>>);

/// Runs a group member in its own task until `stop` is set; reports what it read and the
/// assignments it went through.
fn spawn_member(
    config: ConsumerConfig,
    topic: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<MemberReport> {
    tokio::spawn(async move {
        let mut consumer = Consumer::connect(config).await.unwrap();
        consumer.subscribe(&[topic.as_str()]).unwrap();
        let mut read = Vec::new();
        let mut assignments = Vec::new();
        while !*stop.borrow() {
            match consumer
                .poll_event(Duration::from_millis(100))
                .await
                .unwrap()
            {
                Some(ConsumerEvent::Records(records)) => {
                    read.extend(records.iter().map(|r| (r.partition, r.offset)));
                }
                Some(ConsumerEvent::Assigned(_) | ConsumerEvent::Revoked(_)) => {
                    assignments.push(consumer.assignment());
                }
                Some(ConsumerEvent::Lost(_)) | None => {}
            }
            let current = consumer.assignment();
            if assignments.last() != Some(&current) {
                assignments.push(current);
            }
        }
        consumer.close().await.unwrap();
        (read, assignments)
    })
}

async fn group_splits_partitions(strategies: Vec<AssignmentStrategy>, group: &str) {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let config = broker.client_config("millrace-client-test");
    let topic = format!("{group}-topic");
    create_topic(&config, &topic, 6).await;
    let placed = produce(&config, &topic, 600, Compression::None).await;

    let mut member_config = consumer_config(&config, Some(group));
    member_config.assignment_strategies = strategies;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let first = spawn_member(member_config.clone(), topic.clone(), stop_rx.clone());
    // Let the first member take everything, then add the second.
    let admin = Admin::connect(config.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let described = admin.describe_groups(&[group]).await.unwrap();
        if described[0].state == "Stable" && described[0].members.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "first member never became stable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = spawn_member(member_config, topic.clone(), stop_rx);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lags = admin.group_lag(group).await.unwrap();
        let lag: i64 = lags.iter().map(|p| p.lag).sum();
        let described = admin.describe_groups(&[group]).await.unwrap();
        let assigned: usize = described[0]
            .members
            .iter()
            .map(|m| m.assignment.len())
            .sum();
        if described[0].state == "Stable"
            && described[0].members.len() == 2
            && assigned == 6
            && described[0]
                .members
                .iter()
                .all(|m| !m.assignment.is_empty())
            && lags.len() == 6
            && lag == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group never settled: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_tx.send(true).unwrap();
    let (read_a, assignments_a) = first.await.unwrap();
    let (read_b, assignments_b) = second.await.unwrap();

    let final_a: BTreeSet<TopicPartition> = assignments_a.last().unwrap().iter().cloned().collect();
    let final_b: BTreeSet<TopicPartition> = assignments_b.last().unwrap().iter().cloned().collect();
    assert!(final_a.is_disjoint(&final_b), "{final_a:?} / {final_b:?}");
    assert_eq!(final_a.len() + final_b.len(), 6);
    assert_eq!(final_a.len(), 3);

    // Every record was read; with auto commit on revoke none twice.
    let mut all: Vec<(i32, i64)> = read_a.iter().chain(&read_b).copied().collect();
    all.sort();
    let mut expected = placed.clone();
    expected.sort();
    all.dedup();
    assert_eq!(all, expected);
    assert_eq!(
        read_a.len() + read_b.len(),
        placed.len(),
        "a record read twice"
    );
    broker.broker.shutdown().await;
}

#[tokio::test]
async fn range_group_of_two_splits_six_partitions() {
    group_splits_partitions(vec![AssignmentStrategy::Range], "range-group").await;
}

#[tokio::test]
async fn cooperative_sticky_group_moves_partitions_without_revoking_kept_ones() {
    group_splits_partitions(
        vec![AssignmentStrategy::CooperativeSticky],
        "cooperative-group",
    )
    .await;
}

#[tokio::test]
async fn cooperative_member_keeps_its_partitions_through_the_rebalance() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let config = broker.client_config("millrace-client-test");
    create_topic(&config, "sticky", 4).await;
    let mut member_config = consumer_config(&config, Some("sticky-group"));
    member_config.assignment_strategies = vec![AssignmentStrategy::CooperativeSticky];

    let mut first = Consumer::connect(member_config.clone()).await.unwrap();
    first.subscribe(&["sticky"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.assignment().len() < 4 {
        assert!(Instant::now() < deadline);
        first.poll(Duration::from_millis(100)).await.unwrap();
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let second = spawn_member(member_config, "sticky".to_string(), stop_rx);
    let mut revoked: Vec<TopicPartition> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.assignment().len() != 2 {
        assert!(Instant::now() < deadline, "first member never gave up half");
        if let Some(ConsumerEvent::Revoked(partitions)) =
            first.poll_event(Duration::from_millis(100)).await.unwrap()
        {
            revoked.extend(partitions);
        }
    }
    // Keep polling until the second member holds the other two.
    let kept = first.assignment();
    stop_tx.send(false).unwrap();
    for _ in 0..20 {
        first.poll(Duration::from_millis(100)).await.unwrap();
    }
    assert_eq!(revoked.len(), 2, "only the moving partitions are revoked");
    assert!(revoked.iter().all(|tp| !kept.contains(tp)));
    assert_eq!(first.assignment(), kept);
    stop_tx.send(true).unwrap();
    let (_, assignments_b) = second.await.unwrap();
    let final_b = assignments_b.last().unwrap();
    assert_eq!(final_b.len(), 2);
    assert!(final_b.iter().all(|tp| revoked.contains(tp)));
    first.close().await.unwrap();
    broker.broker.shutdown().await;
}

#[tokio::test]
async fn committed_offsets_are_resumed_exactly_by_the_next_member() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let config = broker.client_config("millrace-client-test");
    create_topic(&config, "resume", 1).await;
    produce(&config, "resume", 100, Compression::None).await;
    let tp = TopicPartition::new("resume", 0);

    let mut member_config = consumer_config(&config, Some("resume-group"));
    member_config.enable_auto_commit = false;
    member_config.max_poll_records = 10;
    let mut first = Consumer::connect(member_config.clone()).await.unwrap();
    first.subscribe(&["resume"]).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 40 {
        seen.extend(
            first
                .poll(Duration::from_millis(200))
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.offset),
        );
    }
    let last = *seen.last().unwrap();
    first
        .commit_offsets(&HashMap::from([(tp.clone(), last + 1)]))
        .await
        .unwrap();
    first.close().await.unwrap();

    let mut second = Consumer::connect(member_config).await.unwrap();
    second.subscribe(&["resume"]).unwrap();
    assert_eq!(
        second.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
        last + 1
    );
    let records = read(
        &mut second,
        (100 - (last + 1)) as usize,
        Duration::from_secs(20),
    )
    .await;
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    let expected: Vec<i64> = (last + 1..100).collect();
    assert_eq!(offsets, expected, "no gap, no repeat");
    second.close().await.unwrap();
    broker.broker.shutdown().await;
}

#[tokio::test]
async fn seek_to_timestamp_offset_and_end() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let config = broker.client_config("millrace-client-test");
    create_topic(&config, "timed", 1).await;
    let producer = Producer::connect(ProducerConfig::new(config.clone()))
        .await
        .unwrap();
    let base = 1_700_000_000_000i64;
    let mut deliveries = Vec::new();
    for i in 0..50i64 {
        let record = ProducerRecord::new("timed", format!("{i}")).timestamp(base + i * 1000);
        deliveries.push(producer.send(record).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;

    let tp = TopicPartition::new("timed", 0);
    let mut consumer = Consumer::connect(consumer_config(&config, None))
        .await
        .unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();

    consumer
        .seek_to_timestamp(std::slice::from_ref(&tp), base + 20_500)
        .unwrap();
    let first = read(&mut consumer, 1, Duration::from_secs(10)).await;
    assert_eq!(first[0].offset, 21);
    assert_eq!(first[0].timestamp, base + 21_000);

    consumer.seek(&tp, 45).unwrap();
    let records = read(&mut consumer, 5, Duration::from_secs(10)).await;
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![45, 46, 47, 48, 49]);

    consumer
        .seek_to_timestamp(std::slice::from_ref(&tp), base + 1_000_000)
        .unwrap();
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(consumer.position(&tp), Some(50));

    consumer.seek_to_end(std::slice::from_ref(&tp)).unwrap();
    consumer.poll(Duration::from_millis(100)).await.unwrap();
    assert_eq!(consumer.position(&tp), Some(50));
    assert!(consumer.seek(&TopicPartition::new("timed", 7), 0).is_err());
    consumer.close().await.unwrap();
    broker.broker.shutdown().await;
}

#[tokio::test]
async fn paused_partitions_yield_nothing_until_resumed() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let config = broker.client_config("millrace-client-test");
    create_topic(&config, "pausing", 2).await;
    let producer = Producer::connect(ProducerConfig::new(config.clone()))
        .await
        .unwrap();
    for partition in 0..2 {
        for i in 0..10 {
            producer
                .send(ProducerRecord::new("pausing", format!("{i}")).partition(partition))
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    producer.close().await;
    let partitions = [
        TopicPartition::new("pausing", 0),
        TopicPartition::new("pausing", 1),
    ];
    let mut consumer = Consumer::connect(consumer_config(&config, None))
        .await
        .unwrap();
    consumer.assign(&partitions).unwrap();
    consumer.seek_to_beginning(&partitions).unwrap();
    consumer.pause(&partitions[1..]).unwrap();
    let records = read(&mut consumer, 10, Duration::from_secs(10)).await;
    assert_eq!(records.len(), 10);
    assert!(records.iter().all(|r| r.partition == 0));
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(consumer.paused(), vec![partitions[1].clone()]);
    consumer.resume(&partitions[1..]).unwrap();
    let records = read(&mut consumer, 10, Duration::from_secs(10)).await;
    assert_eq!(records.len(), 10);
    assert!(records.iter().all(|r| r.partition == 1));
    consumer.close().await.unwrap();
    broker.broker.shutdown().await;
}

#[tokio::test]
async fn stream_yields_records_in_order() {
    use futures_util::StreamExt;
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let config = broker.client_config("millrace-client-test");
    create_topic(&config, "streamed", 1).await;
    produce(&config, "streamed", 20, Compression::Lz4).await;
    let tp = TopicPartition::new("streamed", 0);
    let mut consumer = Consumer::connect(consumer_config(&config, None))
        .await
        .unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, 5).unwrap();
    let offsets: Vec<i64> = consumer
        .stream()
        .take(15)
        .map(|r| r.unwrap().offset)
        .collect()
        .await;
    assert_eq!(offsets, (5..20).collect::<Vec<i64>>());
    broker.broker.shutdown().await;
}

#[tokio::test]
async fn misuse_gets_clear_errors() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let config = broker.client_config("millrace-client-test");
    create_topic(&config, "strict", 1).await;
    let mut no_group = Consumer::connect(consumer_config(&config, None))
        .await
        .unwrap();
    assert!(matches!(
        no_group.subscribe(&["strict"]),
        Err(ClientError::InvalidArgument(_))
    ));
    assert!(matches!(
        no_group.commit().await,
        Err(ClientError::InvalidArgument(_))
    ));

    let strict = ConsumerConfig::builder(config.clone())
        .group_id("strict-group")
        .auto_offset_reset(AutoOffsetReset::None)
        .build()
        .unwrap();
    let mut consumer = Consumer::connect(strict).await.unwrap();
    consumer
        .assign(&[TopicPartition::new("strict", 0)])
        .unwrap();
    let error = consumer.poll(Duration::from_millis(200)).await.unwrap_err();
    assert!(
        matches!(error, ClientError::NoOffsetForPartition { .. }),
        "{error}"
    );

    assert!(ConsumerConfig::builder(config.clone())
        .heartbeat_interval(Duration::from_secs(10))
        .session_timeout(Duration::from_secs(5))
        .build()
        .is_err());
    broker.broker.shutdown().await;
}

#[tokio::test]
async fn idempotent_producer_survives_a_broker_restart_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let broker = start_broker_at(dir.path(), addr, &[FAST_GROUPS]).await;
    let config = ClientConfig::builder([addr.to_string()])
        .retry_backoff(Duration::from_millis(50))
        .build()
        .unwrap();
    create_topic(&config, "restarting", 3).await;

    let total = 20_000usize;
    let (half_tx, half_rx) = tokio::sync::oneshot::channel::<()>();
    let producer_config = config.clone();
    let writer = tokio::spawn(async move {
        let producer = Producer::connect(
            ProducerConfig::builder(producer_config)
                .linger_ms(1)
                .batch_size(16 * 1024)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
        let mut half_tx = Some(half_tx);
        let mut deliveries = Vec::with_capacity(total);
        for i in 0..total {
            let record =
                ProducerRecord::new("restarting", format!("{i}")).key(format!("k{}", i % 50));
            deliveries.push((i, producer.send(record).await.unwrap()));
            if i == total / 2 {
                // Make sure the first half is acknowledged before the restart is triggered.
                producer.flush().await;
                if let Some(tx) = half_tx.take() {
                    tx.send(()).unwrap();
                }
            }
            if i % 1000 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut placed = BTreeMap::new();
        for (i, delivery) in deliveries {
            let metadata = delivery.await.unwrap();
            placed.insert(i, (metadata.partition, metadata.offset));
        }
        producer.close().await;
        placed
    });
    half_rx.await.unwrap();
    broker.shutdown().await;
    let broker = start_broker_at(dir.path(), addr, &[FAST_GROUPS]).await;
    let placed = writer.await.unwrap();
    assert_eq!(placed.len(), total);

    let mut consumer = Consumer::connect(consumer_config(&config, None))
        .await
        .unwrap();
    let partitions: Vec<TopicPartition> = (0..3)
        .map(|p| TopicPartition::new("restarting", p))
        .collect();
    consumer.assign(&partitions).unwrap();
    consumer.seek_to_beginning(&partitions).unwrap();
    let records = read(&mut consumer, total, Duration::from_secs(60)).await;
    assert_eq!(records.len(), total, "every record exactly once");
    let mut seen = BTreeSet::new();
    for record in &records {
        let i: usize = std::str::from_utf8(record.value.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert!(seen.insert(i), "record {i} duplicated");
        assert_eq!(placed[&i], (record.partition, record.offset));
    }
    // Nothing beyond what was acknowledged.
    let ends = consumer
        .offsets_for(&partitions, millrace_client::OffsetSpec::Latest)
        .await
        .unwrap();
    let stored: i64 = ends.values().map(|o| o.offset).sum();
    assert_eq!(stored, total as i64);
    consumer.close().await.unwrap();
    broker.shutdown().await;
}

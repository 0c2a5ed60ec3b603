//! Client quotas: set and described with AlterClientQuotas and DescribeClientQuotas (bad
//! entities and keys refused), and enforced: a producer over its byte-rate quota is held to
//! within 10% of it, with `throttle_time_ms` in its answers, while another client on the same
//! broker produces unhindered.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use millrace_client::admin::NewTopic;
use millrace_client::{Admin, Producer, ProducerConfig, ProducerRecord};
use millrace_testkit::wire::TestClient;
use millrace_testkit::TestBroker;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn client_entity(name: Option<&str>) -> Vec<EntityData> {
    vec![EntityData::default()
        .with_entity_type(s("client-id"))
        .with_entity_name(name.map(s))]
}

async fn alter(
    client: &mut TestClient,
    entity: Vec<EntityData>,
    ops: Vec<OpData>,
) -> (i16, Option<String>) {
    let response = client
        .call(
            1,
            &AlterClientQuotasRequest::default()
                .with_entries(vec![EntryData::default().with_entity(entity).with_ops(ops)]),
        )
        .await;
    let entry = &response.entries[0];
    (
        entry.error_code,
        entry.error_message.as_ref().map(ToString::to_string),
    )
}

fn set(key: &str, value: f64) -> OpData {
    OpData::default().with_key(s(key)).with_value(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotas_are_set_described_and_bad_ones_refused() {
    let broker = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.addr()).await;
    assert_eq!(
        alter(
            &mut client,
            client_entity(Some("slow")),
            vec![
                set("producer_byte_rate", 1024.0),
                set("consumer_byte_rate", 2048.0)
            ]
        )
        .await,
        (0, None)
    );
    assert_eq!(
        alter(
            &mut client,
            client_entity(None),
            vec![set("producer_byte_rate", 1e6)]
        )
        .await,
        (0, None)
    );
    let (code, message) = alter(
        &mut client,
        client_entity(Some("x")),
        vec![set("bytes_per_fortnight", 1.0)],
    )
    .await;
    assert_eq!(code, ResponseError::InvalidRequest.code());
    assert!(message.unwrap().contains("bytes_per_fortnight"));
    let (code, _) = alter(
        &mut client,
        vec![EntityData::default()
            .with_entity_type(s("planet"))
            .with_entity_name(Some(s("mars")))],
        vec![set("producer_byte_rate", 1.0)],
    )
    .await;
    assert_eq!(code, ResponseError::InvalidRequest.code());
    let (code, _) = alter(
        &mut client,
        client_entity(Some("x")),
        vec![set("producer_byte_rate", -5.0)],
    )
    .await;
    assert_eq!(code, ResponseError::InvalidRequest.code());

    // Exact name: only `slow`'s entry.
    let described = client
        .call(
            1,
            &DescribeClientQuotasRequest::default().with_components(vec![ComponentData::default()
                .with_entity_type(s("client-id"))
                .with_match_type(0)
                .with_match(Some(s("slow")))]),
        )
        .await;
    assert_eq!(described.error_code, 0);
    let entries = described.entries.unwrap();
    assert_eq!(entries.len(), 1);
    let mut values: Vec<(String, f64)> = entries[0]
        .values
        .iter()
        .map(|v| (v.key.to_string(), v.value))
        .collect();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        values,
        vec![
            ("consumer_byte_rate".to_string(), 2048.0),
            ("producer_byte_rate".to_string(), 1024.0)
        ]
    );
    // Any client id: both the named and the default entity.
    let described = client
        .call(
            1,
            &DescribeClientQuotasRequest::default().with_components(vec![ComponentData::default()
                .with_entity_type(s("client-id"))
                .with_match_type(2)]),
        )
        .await;
    // Kafka's "specified" match: named entities only, not the default.
    assert_eq!(described.entries.unwrap().len(), 1);
    let described = client
        .call(
            1,
            &DescribeClientQuotasRequest::default().with_components(vec![ComponentData::default()
                .with_entity_type(s("client-id"))
                .with_match_type(1)]),
        )
        .await;
    let entries = described.entries.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].entity[0].entity_name, None, "the default entity");
    // Removed: gone from the description.
    assert_eq!(
        alter(
            &mut client,
            client_entity(Some("slow")),
            vec![
                OpData::default()
                    .with_key(s("producer_byte_rate"))
                    .with_remove(true),
                OpData::default()
                    .with_key(s("consumer_byte_rate"))
                    .with_remove(true),
            ]
        )
        .await,
        (0, None)
    );
    let described = client
        .call(
            1,
            &DescribeClientQuotasRequest::default().with_components(vec![ComponentData::default()
                .with_entity_type(s("client-id"))
                .with_match_type(0)
                .with_match(Some(s("slow")))]),
        )
        .await;
    assert!(described.entries.unwrap().is_empty());
    broker.shutdown().await;
}

/// Produces 10 KiB records as `client_id` until `stop`; returns when each was acknowledged.
/// With `pace`, no faster than that many bytes per second.
async fn produce_until(
    client: millrace_client::ClientConfig,
    stop: Instant,
    pace: Option<f64>,
) -> Vec<Instant> {
    // Batches of about 64 KiB: acknowledgements arrive often enough for a rate measured over
    // four seconds (1 MB batches would arrive once a second, a quarter of the window each).
    let config = ProducerConfig::builder(client)
        .batch_size(64 * 1024)
        .build()
        .unwrap();
    let producer = Producer::connect(config).await.unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let value = vec![7u8; 10 * 1024];
    let mut waits = Vec::new();
    let began = Instant::now();
    let mut sent = 0.0;
    while Instant::now() < stop {
        if let Some(rate) = pace {
            let due = began + Duration::from_secs_f64(sent / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        sent += value.len() as f64;
        let delivery = producer
            .send(ProducerRecord::new("quota", value.clone()))
            .await
            .unwrap();
        let acked = acked.clone();
        waits.push(tokio::spawn(async move {
            match delivery.await {
                Ok(_) => acked.lock().unwrap().push(Instant::now()),
                Err(e) => eprintln!("delivery failed: {e}"),
            }
        }));
        // Let the accumulator breathe: this is a producer, not a memory test.
        if waits.len() % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let deadline = stop + Duration::from_secs(2);
    for wait in waits {
        let _ = tokio::time::timeout_at(deadline.into(), wait).await;
    }
    let acked = acked.lock().unwrap().clone();
    drop(producer);
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_over_its_quota_is_held_to_it_and_another_is_not() {
    const QUOTA: f64 = 1_000_000.0; // bytes per second
    let broker = TestBroker::start(&[]).await;
    let admin = Admin::connect(broker.client_config("admin")).await.unwrap();
    admin.create_topic(NewTopic::new("quota", 1)).await.unwrap();
    let mut client = TestClient::connect(broker.addr()).await;
    assert_eq!(
        alter(
            &mut client,
            client_entity(Some("slow")),
            vec![set("producer_byte_rate", QUOTA)]
        )
        .await,
        (0, None)
    );
    let start = Instant::now();
    let stop = start + Duration::from_secs(6);
    // Each producer on a runtime of its own: the unthrottled one's thousands of deliveries a
    // second must not delay when the throttled one's acknowledgements are seen.
    let on_own_runtime = |client: millrace_client::ClientConfig, pace: Option<f64>| {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(produce_until(client, stop, pace))
        })
    };
    // The other producer asks for ten times the quota, paced: as much as it wants, without
    // filling the disk so fast that every acknowledgement (the throttled one's too) waits on
    // its fsyncs, which would measure the disk instead of the quota.
    let slow = on_own_runtime(broker.client_config("slow"), None);
    let fast = on_own_runtime(broker.client_config("fast"), Some(10.0 * QUOTA));
    let (slow, fast) =
        tokio::task::spawn_blocking(move || (slow.join().unwrap(), fast.join().unwrap()))
            .await
            .unwrap();
    // Between 2 s (past the one-second burst credit and its settling) and 6 s.
    let window = |acks: &[Instant]| {
        acks.iter()
            .filter(|t| **t >= start + Duration::from_secs(2) && **t < stop)
            .count() as f64
            / 4.0
    };
    // A 10 KiB record costs a little more than 10,240 bytes of request.
    let slow_bytes_per_sec = window(&slow) * 10_240.0;
    let fast_bytes_per_sec = window(&fast) * 10_240.0;
    eprintln!(
        "slow: {slow_bytes_per_sec:.0} B/s (quota {QUOTA}), fast: {fast_bytes_per_sec:.0} B/s"
    );
    assert!(
        (slow_bytes_per_sec - QUOTA).abs() <= 0.1 * QUOTA,
        "the throttled producer made {slow_bytes_per_sec:.0} B/s against a quota of {QUOTA}"
    );
    assert!(
        fast_bytes_per_sec > 9.0 * QUOTA,
        "the unthrottled producer, paced at ten times the quota, made only {fast_bytes_per_sec:.0} B/s"
    );
    // Its answers say so.
    let answer = client
        .call(
            9,
            &ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5_000)
                .with_topic_data(vec![]),
        )
        .await;
    assert_eq!(answer.throttle_time_ms, 0, "no bytes, no throttle");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_over_its_fetch_quota_waits_and_is_told_so() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    const QUOTA: f64 = 200_000.0; // bytes per second
    let broker = TestBroker::start(&[]).await;
    let admin = Admin::connect(broker.client_config("admin")).await.unwrap();
    admin.create_topic(NewTopic::new("reads", 1)).await.unwrap();
    // Small batches, so that fetches of 100 KB split the log (a fetch returns whole batches).
    let config = ProducerConfig::builder(broker.client_config("writer"))
        .batch_size(16 * 1024)
        .build()
        .unwrap();
    let producer = Producer::connect(config).await.unwrap();
    for _ in 0..60 {
        let _delivery = producer
            .send(ProducerRecord::new("reads", vec![1u8; 10 * 1024]))
            .await
            .unwrap();
    }
    producer.flush().await;
    // The test kit's raw client calls itself `millrace-test`.
    let mut client = TestClient::connect(broker.addr()).await;
    assert_eq!(
        alter(
            &mut client,
            client_entity(Some("millrace-test")),
            vec![set("consumer_byte_rate", QUOTA)]
        )
        .await,
        (0, None)
    );
    // Read the ~600 KB in fetches of at most 100 KB: past the one-second credit, each waits
    // for its bytes at the quota, and says how long.
    let started = Instant::now();
    let mut offset = 0i64;
    let mut throttled = 0;
    while offset < 60 {
        let response = client
            .call(
                11,
                &FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(100)
                    .with_max_bytes(100 * 1024)
                    .with_topics(vec![FetchTopic::default()
                        .with_topic(TopicName(s("reads")))
                        .with_partitions(vec![FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(100 * 1024)])]),
            )
            .await;
        if response.throttle_time_ms > 0 {
            throttled += 1;
        }
        let records = response.responses[0].partitions[0].records.clone().unwrap();
        let read = millrace_testkit::records::decode_records(records);
        offset = read.last().map_or(offset, |r| r.offset + 1);
    }
    let took = started.elapsed();
    // About 620 KB at 200 KB/s with 200 KB of credit: at least 2 s (not instantly).
    assert!(took >= Duration::from_millis(1800), "read in {took:?}");
    assert!(
        throttled >= 3,
        "{throttled} answers said they were throttled"
    );
    broker.shutdown().await;
}

/// How many Metadata requests (`list_topics`) a client with id `client_id` completes in
/// `span`.
async fn metadata_requests_in(addr: std::net::SocketAddr, client_id: &str, span: Duration) -> u32 {
    let config = millrace_client::ClientConfig::builder([addr.to_string()])
        .client_id(client_id)
        .build()
        .unwrap();
    let admin = Admin::connect(config).await.unwrap();
    let deadline = Instant::now() + span;
    let mut done = 0;
    while Instant::now() < deadline {
        if tokio::time::timeout_at(deadline.into(), admin.list_topics(false))
            .await
            .is_ok_and(|listed| listed.is_ok())
        {
            done += 1;
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_percentage_quota_slows_its_client_and_no_other() {
    let broker = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.addr()).await;
    // 0.01% of a thread: 100 µs of handling per second, a few Metadata requests.
    assert_eq!(
        alter(
            &mut client,
            client_entity(Some("chatty")),
            vec![set("request_percentage", 0.01)]
        )
        .await,
        (0, None)
    );
    let span = Duration::from_secs(2);
    let (limited, free) = tokio::join!(
        metadata_requests_in(broker.addr(), "chatty", span),
        metadata_requests_in(broker.addr(), "quiet", span),
    );
    assert!(
        limited < 60,
        "the limited client made {limited} requests in 2 s"
    );
    assert!(
        free > 5 * limited.max(1),
        "the other client made {free} requests to the limited one's {limited}"
    );
}

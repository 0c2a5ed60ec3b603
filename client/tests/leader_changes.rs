//! Following leader changes: a real in-process broker behind a fault-injecting TCP proxy that
//! answers the first Produce or Fetch requests with NOT_LEADER_OR_FOLLOWER (after the broker
//! has done the work), drops a connection before a Produce answer, or announces a new leader
//! epoch and answers OffsetForLeaderEpoch itself. The client has to refresh metadata, retry,
//! and, with an idempotent producer, deliver every record exactly once and in order; the
//! consumer has to detect a truncated log (KIP-320).
//!
//! The broker advertises the proxy (`advertised.listeners`), so every connection the client
//! opens goes through it.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, FetchRequest, FetchResponse, MetadataResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use millrace_client::admin::NewTopic;
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::{
    Acks, Admin, ClientConfig, ClientError, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use millrace_testkit::TestBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// What the proxy does to the traffic, and what it saw.
#[derive(Default)]
struct Faults {
    /// Produce answers still to turn into NOT_LEADER_OR_FOLLOWER.
    produce_faults: AtomicUsize,
    /// Produce answers still to swallow by closing the client's connection instead.
    produce_drops: AtomicUsize,
    /// Produce requests still to keep from the broker, answered UNKNOWN_TOPIC_OR_PARTITION by
    /// the proxy itself (as a leader answers before it has created a new partition).
    produce_refusals: AtomicUsize,
    /// Fetch answers carrying records still to turn into NOT_LEADER_OR_FOLLOWER.
    fetch_faults: AtomicUsize,
    /// Faults injected so far (all kinds).
    injected: AtomicUsize,
    /// Metadata requests seen after the first fault.
    metadata_after_fault: AtomicUsize,
    /// When >= 0, every partition in Metadata answers gets this leader epoch.
    leader_epoch: AtomicI32,
    /// When set, the proxy advertises OffsetForLeaderEpoch and answers it itself with this
    /// (epoch, end offset) for every partition.
    epoch_end: Mutex<Option<(i32, i64)>>,
    /// The (current leader epoch, leader epoch) of every OffsetForLeaderEpoch partition asked.
    epoch_queries: Mutex<Vec<(i32, i32)>>,
}

impl Faults {
    fn take(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The broker and the proxy in front of it.
struct Proxied {
    /// The proxy's address: what clients bootstrap from.
    bootstrap: String,
    /// The broker's own address. Its metadata still sends clients to the proxy, so clients
    /// bootstrapped here are only used while no fault is pending.
    direct: String,
    faults: Arc<Faults>,
    broker: TestBroker,
}

impl Proxied {
    async fn start() -> Proxied {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bootstrap = listener.local_addr().unwrap();
        let advertised = format!("advertised.listeners=PLAINTEXT://{bootstrap}");
        let broker = TestBroker::start(&[&advertised, millrace_testkit::FAST_GROUPS]).await;
        let upstream = broker.addr();
        let faults = Arc::new(Faults {
            leader_epoch: AtomicI32::new(-1),
            ..Faults::default()
        });
        let shared = faults.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let faults = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        proxy_connection(client, server, faults).await;
                    }
                });
            }
        });
        Proxied {
            bootstrap: bootstrap.to_string(),
            direct: upstream.to_string(),
            faults,
            broker,
        }
    }

    fn client(&self) -> ClientConfig {
        ClientConfig::builder([self.bootstrap.clone()])
            .retry_backoff(Duration::from_millis(20))
            .build()
            .unwrap()
    }
}

/// What the response side does for one request, in request order (Kafka answers a
/// connection's requests in order, and the client checks it).
enum Answer {
    /// Read the broker's next response and pass it on, rewritten as the faults say.
    Upstream { api_key: i16, version: i16 },
    /// Send this frame, made by the proxy.
    Local(Bytes),
}

async fn proxy_connection(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let (answers, answer_rx) = mpsc::unbounded_channel();
    let requests = tokio::spawn(forward_requests(
        client_read,
        server_write,
        answers,
        faults.clone(),
    ));
    forward_responses(server_read, client_write, answer_rx, &faults).await;
    requests.abort();
}

async fn forward_requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    answers: mpsc::UnboundedSender<Answer>,
    faults: Arc<Faults>,
) {
    while let Some(frame) = read_frame(&mut from).await {
        // Request header v1 is the prefix of every later version.
        let Ok(header) = RequestHeader::decode(&mut frame.clone(), 1) else {
            return;
        };
        let (api_key, version) = (header.request_api_key, header.request_api_version);
        if api_key == ApiKey::Metadata as i16 && faults.injected.load(Ordering::Acquire) > 0 {
            faults.metadata_after_fault.fetch_add(1, Ordering::AcqRel);
        }
        if api_key == ApiKey::Produce as i16 && Faults::take(&faults.produce_refusals) {
            faults.injected.fetch_add(1, Ordering::AcqRel);
            let answer = refuse_produce(&frame, version);
            if answers.send(Answer::Local(answer)).is_err() {
                return;
            }
            continue;
        }
        let epoch_end = *faults.epoch_end.lock().unwrap();
        if let (true, Some(end)) = (api_key == ApiKey::OffsetForLeaderEpoch as i16, epoch_end) {
            let answer = answer_offset_for_leader_epoch(&frame, version, end, &faults);
            if answers.send(Answer::Local(answer)).is_err() {
                return;
            }
            continue;
        }
        // The faked leader epoch exists only between the proxy and the client: the real
        // broker still is in its own epoch and would answer UNKNOWN_LEADER_EPOCH to a fetch
        // in the faked one, so fetches go on without an epoch.
        let frame = if api_key == ApiKey::Fetch as i16
            && faults.leader_epoch.load(Ordering::Acquire) >= 0
        {
            fetch_without_epoch(frame, version)
        } else {
            frame
        };
        if answers.send(Answer::Upstream { api_key, version }).is_err()
            || write_frame(&mut to, &frame).await.is_err()
        {
            return;
        }
    }
}

/// A Fetch request with every partition's `current_leader_epoch` unset (-1).
fn fetch_without_epoch(frame: Bytes, version: i16) -> Bytes {
    let header_version = ApiKey::Fetch.request_header_version(version);
    let mut body = frame.clone();
    let Ok(header) = RequestHeader::decode(&mut body, header_version) else {
        return frame;
    };
    let Ok(mut request) = FetchRequest::decode(&mut body, version) else {
        return frame;
    };
    for topic in &mut request.topics {
        for partition in &mut topic.partitions {
            partition.current_leader_epoch = -1;
        }
    }
    let mut out = BytesMut::new();
    if header.encode(&mut out, header_version).is_ok() && request.encode(&mut out, version).is_ok()
    {
        out.freeze()
    } else {
        frame
    }
}

async fn forward_responses(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut answers: mpsc::UnboundedReceiver<Answer>,
    faults: &Faults,
) {
    while let Some(answer) = answers.recv().await {
        let frame = match answer {
            Answer::Local(frame) => frame,
            Answer::Upstream { api_key, version } => {
                let Some(frame) = read_frame(&mut from).await else {
                    return;
                };
                if api_key == ApiKey::Produce as i16 && Faults::take(&faults.produce_drops) {
                    // The broker wrote the records; the client never hears so.
                    faults.injected.fetch_add(1, Ordering::AcqRel);
                    return;
                }
                rewrite(frame, api_key, version, faults)
            }
        };
        if write_frame(&mut to, &frame).await.is_err() {
            return;
        }
    }
}

/// Applies the faults to one response (a frame that does not decode passes unchanged).
fn rewrite(frame: Bytes, api_key: i16, version: i16, faults: &Faults) -> Bytes {
    let Ok(key) = ApiKey::try_from(api_key) else {
        return frame;
    };
    let header_version = key.response_header_version(version);
    let mut body = frame.clone();
    let Ok(header) = ResponseHeader::decode(&mut body, header_version) else {
        return frame;
    };
    let mut out = BytesMut::new();
    let encoded = match key {
        ApiKey::ApiVersions => {
            let Ok(mut response) = ApiVersionsResponse::decode(&mut body, version) else {
                return frame;
            };
            if faults.epoch_end.lock().unwrap().is_some()
                && !response.api_keys.iter().any(|a| a.api_key == 23)
            {
                response.api_keys.push(
                    ApiVersion::default()
                        .with_api_key(ApiKey::OffsetForLeaderEpoch as i16)
                        .with_min_version(2)
                        .with_max_version(4),
                );
            }
            header.encode(&mut out, header_version).is_ok()
                && response.encode(&mut out, version).is_ok()
        }
        ApiKey::Metadata => {
            let epoch = faults.leader_epoch.load(Ordering::Acquire);
            if epoch < 0 {
                return frame;
            }
            let Ok(mut response) = MetadataResponse::decode(&mut body, version) else {
                return frame;
            };
            for topic in &mut response.topics {
                for partition in &mut topic.partitions {
                    partition.leader_epoch = epoch;
                }
            }
            header.encode(&mut out, header_version).is_ok()
                && response.encode(&mut out, version).is_ok()
        }
        ApiKey::Produce => {
            let Ok(mut response) = ProduceResponse::decode(&mut body, version) else {
                return frame;
            };
            if !Faults::take(&faults.produce_faults) {
                return frame;
            }
            faults.injected.fetch_add(1, Ordering::AcqRel);
            for topic in &mut response.responses {
                for partition in &mut topic.partition_responses {
                    partition.error_code = NOT_LEADER_OR_FOLLOWER;
                    partition.base_offset = -1;
                }
            }
            header.encode(&mut out, header_version).is_ok()
                && response.encode(&mut out, version).is_ok()
        }
        ApiKey::Fetch => {
            let Ok(mut response) = FetchResponse::decode(&mut body, version) else {
                return frame;
            };
            let has_records = response.responses.iter().any(|t| {
                t.partitions
                    .iter()
                    .any(|p| p.records.as_ref().is_some_and(|r| !r.is_empty()))
            });
            if !has_records || !Faults::take(&faults.fetch_faults) {
                return frame;
            }
            faults.injected.fetch_add(1, Ordering::AcqRel);
            for topic in &mut response.responses {
                for partition in &mut topic.partitions {
                    partition.error_code = NOT_LEADER_OR_FOLLOWER;
                    partition.records = None;
                    partition.high_watermark = -1;
                }
            }
            header.encode(&mut out, header_version).is_ok()
                && response.encode(&mut out, version).is_ok()
        }
        _ => return frame,
    };
    if encoded {
        out.freeze()
    } else {
        frame
    }
}

/// The proxy's own Produce answer: UNKNOWN_TOPIC_OR_PARTITION for every partition sent.
fn refuse_produce(frame: &Bytes, version: i16) -> Bytes {
    let key = ApiKey::Produce;
    let mut body = frame.clone();
    let header = RequestHeader::decode(&mut body, key.request_header_version(version)).unwrap();
    let request = ProduceRequest::decode(&mut body, version).unwrap();
    let responses = request
        .topic_data
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_data
                .iter()
                .map(|partition| {
                    PartitionProduceResponse::default()
                        .with_index(partition.index)
                        .with_error_code(UNKNOWN_TOPIC_OR_PARTITION)
                        .with_base_offset(-1)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions)
        })
        .collect();
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(&mut out, key.response_header_version(version))
        .unwrap();
    ProduceResponse::default()
        .with_responses(responses)
        .encode(&mut out, version)
        .unwrap();
    out.freeze()
}

/// The proxy's own OffsetForLeaderEpoch answer: `end` for every partition asked.
fn answer_offset_for_leader_epoch(
    frame: &Bytes,
    version: i16,
    (epoch, end_offset): (i32, i64),
    faults: &Faults,
) -> Bytes {
    let key = ApiKey::OffsetForLeaderEpoch;
    let mut body = frame.clone();
    let header = RequestHeader::decode(&mut body, key.request_header_version(version)).unwrap();
    let request = OffsetForLeaderEpochRequest::decode(&mut body, version).unwrap();
    let mut topics = Vec::new();
    for topic in request.topics {
        let mut partitions = Vec::new();
        for partition in topic.partitions {
            faults
                .epoch_queries
                .lock()
                .unwrap()
                .push((partition.current_leader_epoch, partition.leader_epoch));
            partitions.push(
                EpochEndOffset::default()
                    .with_partition(partition.partition)
                    .with_leader_epoch(epoch)
                    .with_end_offset(end_offset),
            );
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(&mut out, key.response_header_version(version))
        .unwrap();
    OffsetForLeaderEpochResponse::default()
        .with_topics(topics)
        .encode(&mut out, version)
        .unwrap();
    out.freeze()
}

async fn read_frame(from: &mut OwnedReadHalf) -> Option<Bytes> {
    let size = from.read_i32().await.ok()?;
    let mut frame = vec![0u8; usize::try_from(size).ok()?];
    from.read_exact(&mut frame).await.ok()?;
    Some(Bytes::from(frame))
}

async fn write_frame(to: &mut OwnedWriteHalf, frame: &[u8]) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(4 + frame.len());
    out.put_i32(i32::try_from(frame.len()).map_err(std::io::Error::other)?);
    out.put_slice(frame);
    to.write_all(&out).await
}

/// Every value of partition 0 of `topic`, read from the broker itself (not through the
/// proxy's faults: they are all spent or off by then) until `count` came or 20 s passed.
async fn read_values(bootstrap: &str, topic: &str, count: usize) -> Vec<String> {
    let client = ClientConfig::new(bootstrap);
    let config = ConsumerConfig::builder(client)
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait(Duration::from_millis(50))
        .build()
        .unwrap();
    let mut consumer = Consumer::connect(config).await.unwrap();
    consumer.assign(&[TopicPartition::new(topic, 0)]).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while values.len() < count && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            values.push(String::from_utf8_lossy(&record.value.unwrap()).into_owned());
        }
    }
    values
}

fn expected(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("v{i}")).collect()
}

async fn produce(bootstrap: &str, topic: &str, count: usize) {
    let producer = Producer::connect(
        ProducerConfig::builder(ClientConfig::new(bootstrap))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    for i in 0..count {
        producer
            .send(ProducerRecord::new(topic, format!("v{i}")).partition(0))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await;
}

/// Sends `count` records through `proxied` with an idempotent producer and several batches
/// in flight, and checks the broker holds each exactly once, in order.
async fn idempotent_delivery_survives(proxied: &Proxied, topic: &str, count: usize) {
    let admin = Admin::connect(proxied.client()).await.unwrap();
    admin.create_topic(NewTopic::new(topic, 1)).await.unwrap();
    let config = ProducerConfig::builder(proxied.client())
        .acks(Acks::All)
        .enable_idempotence(true)
        .max_in_flight_requests_per_connection(5)
        // Small batches, so several requests are in flight when a fault hits.
        .batch_size(200)
        .linger_ms(1)
        .build()
        .unwrap();
    let producer = Producer::connect(config).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..count {
        let record = ProducerRecord::new(topic, format!("v{i}")).partition(0);
        deliveries.push(producer.send(record).await.unwrap());
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(delivery.await.unwrap().offset);
    }
    producer.close().await;

    assert_eq!(
        offsets,
        (0..count as i64).collect::<Vec<_>>(),
        "each record acknowledged at its own offset, in order"
    );
    assert_eq!(
        read_values(&proxied.direct, topic, count).await,
        expected(count)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_retries_not_leader_answers_without_duplicates_or_gaps() {
    let proxied = Proxied::start().await;
    proxied.faults.produce_faults.store(3, Ordering::Release);

    idempotent_delivery_survives(&proxied, "faulted", 300).await;

    assert_eq!(proxied.faults.injected.load(Ordering::Acquire), 3);
    assert!(
        proxied.faults.metadata_after_fault.load(Ordering::Acquire) >= 1,
        "NOT_LEADER_OR_FOLLOWER makes the producer refresh metadata"
    );
    proxied.broker.shutdown().await;
}

/// The fresh-partition race: the first batch reaches the leader before it has created the
/// partition and is refused; a batch pipelined behind it must not be written first, or the
/// leader (with no state for the producer, so accepting any sequence) takes it, and the first
/// batch is OUT_OF_ORDER_SEQUENCE on every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_batch_is_not_overtaken_by_the_batches_behind_it() {
    let proxied = Proxied::start().await;
    proxied.faults.produce_refusals.store(1, Ordering::Release);

    idempotent_delivery_survives(&proxied, "refused-first", 300).await;

    assert_eq!(proxied.faults.injected.load(Ordering::Acquire), 1);
    proxied.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_survives_losing_the_connection_to_the_leader() {
    let proxied = Proxied::start().await;
    proxied.faults.produce_drops.store(2, Ordering::Release);

    idempotent_delivery_survives(&proxied, "dropped", 300).await;

    assert_eq!(proxied.faults.injected.load(Ordering::Acquire), 2);
    assert!(proxied.faults.metadata_after_fault.load(Ordering::Acquire) >= 1);
    proxied.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_refetches_after_not_leader_answers_without_losing_or_repeating() {
    let proxied = Proxied::start().await;
    let admin = Admin::connect(proxied.client()).await.unwrap();
    admin
        .create_topic(NewTopic::new("fetched", 1))
        .await
        .unwrap();
    produce(&proxied.direct, "fetched", 50).await;
    proxied.faults.fetch_faults.store(2, Ordering::Release);

    let values = {
        let config = ConsumerConfig::builder(proxied.client())
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(50))
            .build()
            .unwrap();
        let mut consumer = Consumer::connect(config).await.unwrap();
        consumer
            .assign(&[TopicPartition::new("fetched", 0)])
            .unwrap();
        let mut values = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while values.len() < 50 && Instant::now() < deadline {
            for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
                values.push(String::from_utf8_lossy(&record.value.unwrap()).into_owned());
            }
        }
        values
    };

    assert_eq!(values, expected(50));
    assert_eq!(proxied.faults.injected.load(Ordering::Acquire), 2);
    assert!(proxied.faults.metadata_after_fault.load(Ordering::Acquire) >= 1);
    proxied.broker.shutdown().await;
}

/// Reads 10 records in leader epoch 0, then the leader "changes": Metadata says epoch 1, the
/// next fetch with records is answered NOT_LEADER_OR_FOLLOWER, and the new leader (the
/// proxy) says epoch 0 ended at offset 6. Returns the consumer and the proxy for the checks.
async fn consume_through_a_truncating_leader_change(reset: AutoOffsetReset) -> (Consumer, Proxied) {
    let proxied = Proxied::start().await;
    // Advertised from the start: each connection negotiates its APIs once, when it opens.
    *proxied.faults.epoch_end.lock().unwrap() = Some((0, 6));
    let admin = Admin::connect(proxied.client()).await.unwrap();
    admin
        .create_topic(NewTopic::new("truncated", 1))
        .await
        .unwrap();
    produce(&proxied.direct, "truncated", 10).await;
    let config = ConsumerConfig::builder(proxied.client())
        .auto_offset_reset(reset)
        .fetch_max_wait(Duration::from_millis(50))
        .build()
        .unwrap();
    let mut consumer = Consumer::connect(config).await.unwrap();
    let tp = TopicPartition::new("truncated", 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, 0).unwrap();
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.len() < 10 && Instant::now() < deadline {
        first.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .unwrap()
                .iter()
                .map(|r| r.offset),
        );
    }
    assert_eq!(first, (0..10).collect::<Vec<_>>());

    proxied.faults.leader_epoch.store(1, Ordering::Release);
    proxied.faults.fetch_faults.store(1, Ordering::Release);
    produce(&proxied.direct, "truncated", 5).await;
    (consumer, proxied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_leader_change_a_truncated_log_moves_the_position_back_to_the_divergence() {
    let (mut consumer, proxied) =
        consume_through_a_truncating_leader_change(AutoOffsetReset::Earliest).await;
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while after.len() < 9 && Instant::now() < deadline {
        after.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .unwrap()
                .iter()
                .map(|r| r.offset),
        );
    }

    let queries = proxied.faults.epoch_queries.lock().unwrap().clone();
    assert!(
        queries.contains(&(1, 0)),
        "validated epoch 0 with the new leader epoch 1: {queries:?}"
    );
    assert_eq!(
        after,
        (6..15).collect::<Vec<_>>(),
        "re-read from the divergence point 6"
    );
    proxied.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_leader_change_a_truncated_log_is_an_error_without_a_reset_policy() {
    let (mut consumer, proxied) =
        consume_through_a_truncating_leader_change(AutoOffsetReset::None).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        match consumer.poll(Duration::from_millis(200)).await {
            Err(error) => break error,
            Ok(records) => assert!(records.is_empty(), "no record past the truncation"),
        }
        assert!(Instant::now() < deadline, "no LogTruncation within 20 s");
    };

    match error {
        ClientError::LogTruncation {
            position,
            divergent_offset,
            ..
        } => assert_eq!((position, divergent_offset), (10, 6)),
        other => panic!("expected LogTruncation, got {other}"),
    }
    let tp = TopicPartition::new("truncated", 0);
    consumer.seek(&tp, 6).unwrap();
    let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(records.first().map(|r| r.offset), Some(6));
    proxied.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_survives_a_burst_of_faults_of_both_kinds() {
    let proxied = Proxied::start().await;
    // More faults than the five batches the broker remembers per producer, some hitting
    // retries: the window must never slide past a batch still being retried.
    proxied.faults.produce_faults.store(8, Ordering::Release);
    proxied.faults.produce_drops.store(2, Ordering::Release);

    idempotent_delivery_survives(&proxied, "burst", 1000).await;

    assert_eq!(proxied.faults.injected.load(Ordering::Acquire), 10);
    proxied.broker.shutdown().await;
}

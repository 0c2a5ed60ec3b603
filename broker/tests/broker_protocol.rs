//! The broker over real TCP, driven with requests encoded by the `kafka-protocol` crate.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use millrace_testkit::records::{batch, decode_records, record};
use millrace_testkit::wire::TestClient;
use millrace_testkit::{start_broker_in, TestBroker};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn create_topic(
    client: &mut TestClient,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> i16 {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            )])
        .with_timeout_ms(5000);
    let response = client.call(7, &request).await;
    response.topics[0].error_code
}

async fn produce(
    client: &mut TestClient,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let response = client.call(9, &request).await;
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(10 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

async fn list_offset(
    client: &mut TestClient,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> (i16, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let response = client.call(7, &request).await;
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset)
}

#[tokio::test]
async fn api_versions_advertises_the_implemented_apis() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    let response = client.call(3, &ApiVersionsRequest::default()).await;
    assert_eq!(response.error_code, 0);
    let produce = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Produce as i16)
        .unwrap();
    assert!(produce.min_version <= 3 && produce.max_version >= 8);
    let fetch = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Fetch as i16)
        .unwrap();
    assert!(fetch.min_version <= 4 && fetch.max_version >= 11);
    broker.shutdown().await;
}

#[tokio::test]
async fn api_versions_of_an_unknown_version_gets_a_v0_error_and_the_connection_stays_open() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::ApiVersions as i16);
    body.put_i16(99);
    body.put_i32(7);
    body.put_i16(-1); // null client id
    client.send_raw(&body).await;
    let mut frame = client.read_frame().await.unwrap();
    // v0 header: correlation id only; v0 body: error code, then the api array.
    assert_eq!(i32::from_be_bytes(frame[0..4].try_into().unwrap()), 7);
    assert_eq!(i16::from_be_bytes(frame[4..6].try_into().unwrap()), 35);
    let _ = frame.split_to(4);
    let decoded =
        <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut frame, 0)
            .unwrap();
    assert!(decoded
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Metadata as i16));
    // Still usable.
    let response = client.call(3, &ApiVersionsRequest::default()).await;
    assert_eq!(response.error_code, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn produce_then_fetch_returns_the_same_records_at_assigned_offsets() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    assert_eq!(create_topic(&mut client, "orders", 3, &[]).await, 0);

    let first = batch(
        &[record("a", "1", 1000), record("b", "2", 1001)],
        Compression::None,
    );
    let second = batch(&[record("c", "3", 1002)], Compression::Lz4);
    assert_eq!(produce(&mut client, "orders", 1, first, -1).await, (0, 0));
    assert_eq!(produce(&mut client, "orders", 1, second, 1).await, (0, 2));

    let response = client.call(12, &fetch_request("orders", 1, 0, 100)).await;
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 3);
    let records = decode_records(p.records.clone().unwrap());
    let values: Vec<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(values, vec!["1", "2", "3"]);
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(
        records[2]
            .headers
            .get(&StrBytes::from_static_str("h"))
            .cloned()
            .flatten(),
        Some(Bytes::from("h-c"))
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn fetch_long_poll_is_woken_by_an_append() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut producer = TestClient::connect(broker.local_addr()).await;
    let mut consumer = TestClient::connect(broker.local_addr()).await;
    assert_eq!(create_topic(&mut producer, "wake", 1, &[]).await, 0);

    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        let response = consumer
            .call(12, &fetch_request("wake", 0, 0, 30_000))
            .await;
        response.responses[0].partitions[0].records.clone().unwrap()
    });
    // The fetch must not answer before there is data; give it a moment to start waiting.
    tokio::task::yield_now().await;
    produce(
        &mut producer,
        "wake",
        0,
        batch(&[record("k", "v", 1)], Compression::None),
        1,
    )
    .await;
    let records = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decode_records(records).len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "woken by the append, not by max_wait"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn fetch_with_no_data_waits_max_wait_and_returns_empty_records() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    assert_eq!(create_topic(&mut client, "quiet", 1, &[]).await, 0);
    let started = Instant::now();
    let response = client.call(12, &fetch_request("quiet", 0, 0, 300)).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(
        p.records.as_ref().map(|r| r.len()),
        Some(0),
        "empty, not null"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_produce_input_gets_kafka_error_codes() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    assert_eq!(create_topic(&mut client, "t", 1, &[]).await, 0);
    let good = batch(&[record("k", "v", 1)], Compression::None);

    assert_eq!(
        produce(&mut client, "t", 7, good.clone(), -1).await.0,
        3,
        "missing partition"
    );
    assert_eq!(
        produce(&mut client, "nope", 0, good.clone(), -1).await.0,
        3,
        "missing topic"
    );

    let mut corrupt = BytesMut::from(&good[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(
        produce(&mut client, "t", 0, corrupt.freeze(), -1).await.0,
        2,
        "bad CRC"
    );

    let mut garbage = BytesMut::from(&good[..]);
    garbage[16] = 7; // magic
    assert!(produce(&mut client, "t", 0, garbage.freeze(), -1).await.0 != 0);
    assert_eq!(
        produce(&mut client, "t", 0, good, 5).await.0,
        21,
        "invalid acks"
    );

    let (code, offset) = list_offset(&mut client, "t", 0, -1).await;
    assert_eq!((code, offset), (0, 0), "nothing was appended");
    broker.shutdown().await;
}

#[tokio::test]
async fn invalid_and_duplicate_topics_are_refused() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    assert_eq!(create_topic(&mut client, "bad topic!", 1, &[]).await, 17);
    assert_eq!(create_topic(&mut client, "ok", 1, &[]).await, 0);
    assert_eq!(create_topic(&mut client, "ok", 1, &[]).await, 36);
    assert_eq!(create_topic(&mut client, "zero", 0, &[]).await, 37);
    assert_eq!(
        create_topic(&mut client, "cfg", 1, &[("retention.ms", "soon")]).await,
        40
    );
    assert_eq!(
        create_topic(&mut client, "cfg2", 1, &[("no.such", "1")]).await,
        40
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn unknown_api_key_and_oversized_frames_close_only_that_connection() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut bystander = TestClient::connect(broker.local_addr()).await;

    let mut unknown = TestClient::connect(broker.local_addr()).await;
    let mut body = BytesMut::new();
    body.put_i16(9999);
    body.put_i16(0);
    body.put_i32(1);
    body.put_i16(-1);
    unknown.send_raw(&body).await;
    assert!(unknown.is_closed().await);

    let mut huge = TestClient::connect(broker.local_addr()).await;
    huge.write_bytes(&(200_i32 << 20).to_be_bytes()).await;
    assert!(huge.is_closed().await);

    let mut garbage = TestClient::connect(broker.local_addr()).await;
    garbage
        .send_raw(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        .await;
    assert!(garbage.is_closed().await);

    let response = bystander.call(3, &ApiVersionsRequest::default()).await;
    assert_eq!(response.error_code, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn metadata_auto_creates_topics_only_when_enabled() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("auto")))
        ]))
        .with_allow_auto_topic_creation(true);
    let response = client.call(12, &request).await;
    assert_eq!(response.topics[0].error_code, 0);
    assert_eq!(response.topics[0].partitions.len(), 1);
    assert!(!response.topics[0].topic_id.is_nil());
    broker.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &["auto.create.topics.enable=false"]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    let response = client.call(12, &request).await;
    assert_eq!(response.topics[0].error_code, 3);
    broker.shutdown().await;
}

#[tokio::test]
async fn topics_and_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    assert_eq!(
        create_topic(&mut client, "durable", 2, &[("retention.ms", "123456")]).await,
        0
    );
    produce(
        &mut client,
        "durable",
        1,
        batch(&[record("k", "v", 5)], Compression::Gzip),
        -1,
    )
    .await;
    broker.shutdown().await;

    let broker = start_broker_in(dir.path(), &[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    let response = client.call(12, &fetch_request("durable", 1, 0, 0)).await;
    let records = decode_records(response.responses[0].partitions[0].records.clone().unwrap());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.clone().unwrap(), Bytes::from("v"));
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("durable"))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")]))]);
    let response = client.call(4, &request).await;
    let config = &response.results[0].configs[0];
    assert_eq!(config.value.as_deref(), Some("123456"));
    assert_eq!(config.config_source, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_locked_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(dir.path(), &[]).await;
    let config = millrace_broker::BrokerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().to_path_buf(),
    );
    let second = millrace_broker::start(config).await;
    assert!(matches!(
        second,
        Err(millrace_broker::BrokerError::DataDirLocked(_))
    ));
    broker.shutdown().await;
}

#[tokio::test]
async fn list_offsets_by_time_and_delete_records() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    assert_eq!(create_topic(&mut client, "timed", 1, &[]).await, 0);
    for (i, ts) in [1_000, 2_000, 3_000].iter().enumerate() {
        let b = batch(&[record(&format!("k{i}"), "v", *ts)], Compression::Zstd);
        produce(&mut client, "timed", 0, b, -1).await;
    }
    assert_eq!(list_offset(&mut client, "timed", 0, -2).await, (0, 0));
    assert_eq!(list_offset(&mut client, "timed", 0, -1).await, (0, 3));
    assert_eq!(list_offset(&mut client, "timed", 0, 1_500).await, (0, 1));
    assert_eq!(list_offset(&mut client, "timed", 0, 9_999).await, (0, -1));

    let request = DeleteRecordsRequest::default()
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(name("timed"))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(2)])])
        .with_timeout_ms(5000);
    let response = client.call(2, &request).await;
    let p = &response.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 2));
    assert_eq!(list_offset(&mut client, "timed", 0, -2).await, (0, 2));
    let response = client.call(12, &fetch_request("timed", 0, 0, 0)).await;
    assert_eq!(
        response.responses[0].partitions[0].error_code, 1,
        "offset 0 is gone"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn topic_configs_can_be_altered_and_partitions_added_and_topics_deleted() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    assert_eq!(create_topic(&mut client, "admin", 1, &[]).await, 0);

    let alter = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("admin"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str("cleanup.policy"))
                .with_config_operation(2)
                .with_value(Some(StrBytes::from_static_str("compact")))]),
    ]);
    let response = client.call(1, &alter).await;
    assert_eq!(response.responses[0].error_code, 0);
    let describe =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("admin"))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("cleanup.policy")]))]);
    let response = client.call(4, &describe).await;
    assert_eq!(
        response.results[0].configs[0].value.as_deref(),
        Some("delete,compact")
    );

    let grow = CreatePartitionsRequest::default().with_topics(vec![
        kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default()
            .with_name(name("admin"))
            .with_count(4),
    ]);
    assert_eq!(client.call(3, &grow).await.results[0].error_code, 0);
    assert_eq!(
        client.call(3, &grow).await.results[0].error_code,
        37,
        "cannot shrink or stay"
    );
    let (code, _) = produce(
        &mut client,
        "admin",
        3,
        batch(&[record("k", "v", 1)], Compression::Snappy),
        -1,
    )
    .await;
    assert_eq!(code, 0);

    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![name("admin")])
        .with_timeout_ms(5000);
    assert_eq!(client.call(5, &delete).await.responses[0].error_code, 0);
    assert_eq!(client.call(5, &delete).await.responses[0].error_code, 3);
    let metadata = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("admin")))
        ]))
        .with_allow_auto_topic_creation(false);
    assert_eq!(client.call(12, &metadata).await.topics[0].error_code, 3);
    broker.shutdown().await;
}

#[tokio::test]
async fn describe_broker_configs_reports_the_cluster_settings() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_in(
        dir.path(),
        &["broker.rack=rack-a", "replica.lag.time.max.ms=10000"],
    )
    .await;
    let port = broker.local_addr().port();
    let mut client = TestClient::connect(broker.local_addr()).await;
    let keys = [
        "process.roles",
        "controller.quorum.voters",
        "advertised.listeners",
        "broker.rack",
        "replica.lag.time.max.ms",
        "unclean.leader.election.enable",
    ];
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_static_str("1"))
            .with_configuration_keys(Some(
                keys.iter().map(|k| StrBytes::from_static_str(k)).collect(),
            ))]);
    let response = client.call(4, &request).await;
    assert_eq!(response.results[0].error_code, 0);
    let values: std::collections::BTreeMap<String, String> = response.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_deref().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expect = |key: &str, value: &str| {
        assert_eq!(
            values.get(key).map(String::as_str),
            Some(value),
            "{values:?}"
        );
    };
    expect("process.roles", "broker,controller");
    // Port 0 was asked for: the default voter and the advertised listener carry the bound port.
    expect("controller.quorum.voters", &format!("1@127.0.0.1:{port}"));
    expect(
        "advertised.listeners",
        &format!("PLAINTEXT://127.0.0.1:{port}"),
    );
    expect("broker.rack", "rack-a");
    expect("replica.lag.time.max.ms", "10000");
    expect("unclean.leader.election.enable", "false");
    broker.shutdown().await;
}

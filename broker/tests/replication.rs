//! Replicated partitions on a cluster of three in-process brokers: followers copy the leader
//! byte for byte, acks=all waits for the ISR, and a new leader from the ISR keeps every
//! acknowledged record when the old one stops.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use millrace_testkit::records::{batch, record};
use millrace_testkit::wire::{produce_to_leader, TestClient};
use millrace_testkit::{eventually, TestCluster, FAST_FAILOVER};

/// Logs to the test output with `RUST_LOG` (for example `RUST_LOG=millrace_broker=debug`).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn create_replicated(cluster: &TestCluster, topic: &str, min_isr: &str) {
    let mut client = TestClient::connect(cluster.members[0].addr).await;
    let response = client
        .call(
            7,
            &CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name(topic))
                    .with_num_partitions(1)
                    .with_replication_factor(3)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str("min.insync.replicas"))
                        .with_value(Some(StrBytes::from_string(min_isr.to_string())))])])
                .with_timeout_ms(10_000),
        )
        .await;
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
}

/// (leader, leader epoch, ISR) of partition 0 as broker `node_id` answers Metadata.
async fn partition_state(cluster: &TestCluster, node_id: i32, topic: &str) -> (i32, i32, Vec<i32>) {
    let mut client = TestClient::connect(cluster.member(node_id).addr).await;
    let response = client
        .call(
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic)))
            ])),
        )
        .await;
    let partition = &response.topics[0].partitions[0];
    (
        partition.leader_id.0,
        partition.leader_epoch,
        partition.isr_nodes.iter().map(|b| b.0).collect(),
    )
}

/// Produces with acks=all, retrying while the broker is not the leader yet
/// ([`produce_to_leader`]).
async fn produce(addr: std::net::SocketAddr, topic: &str, values: &[&str]) -> (i16, i64) {
    let records: Vec<_> = values.iter().map(|v| record("k", v, 1)).collect();
    produce_to_leader(addr, topic, &records, -1).await
}

/// One produce with acks=all, not retried: for the answers a non-leader gives.
async fn produce_once(addr: std::net::SocketAddr, topic: &str, values: &[&str]) -> (i16, i64) {
    let records: Vec<_> = values.iter().map(|v| record("k", v, 1)).collect();
    produce_records(addr, topic, &records, -1).await
}

async fn produce_records(
    addr: std::net::SocketAddr,
    topic: &str,
    records: &[kafka_protocol::records::Record],
    acks: i16,
) -> (i16, i64) {
    let mut client = TestClient::connect(addr).await;
    let response = client
        .call(
            9,
            &ProduceRequest::default()
                .with_acks(acks)
                .with_timeout_ms(10_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name(topic))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(records, Compression::None)))])]),
        )
        .await;
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

/// Everything broker `node_id` holds of partition 0, read straight from its log.
fn local_log(cluster: &TestCluster, node_id: i32, topic: &str) -> Bytes {
    let log = cluster
        .broker(node_id)
        .broker()
        .replicas
        .partition(topic, 0)
        .expect("a replica on this broker");
    // A read stops at a segment's end: read on until the log end.
    let mut all = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let chunk = log.read(offset, usize::MAX).unwrap();
        let records = millrace_testkit::records::decode_records(chunk.clone());
        let Some(last) = records.last() else { break };
        offset = last.offset + 1;
        all.extend_from_slice(&chunk);
    }
    Bytes::from(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_copy_the_leader_byte_for_byte_and_acks_all_waits_for_them() {
    init_logs();
    let cluster = TestCluster::start(3, FAST_FAILOVER).await;
    create_replicated(&cluster, "replicated", "2").await;
    let (leader, epoch, isr) = partition_state(&cluster, 1, "replicated").await;
    assert!(leader > 0 && epoch >= 0, "leader {leader} epoch {epoch}");
    assert_eq!(isr.len(), 3);

    for round in 0..5 {
        let (error, base) =
            produce(cluster.member(leader).addr, "replicated", &["a", "b", "c"]).await;
        assert_eq!(error, 0, "round {round}");
        assert_eq!(base, round * 3);
        // acks=all answered: every ISR member has the batch.
        let hw = cluster
            .broker(leader)
            .broker()
            .replicas
            .replica("replicated", 0)
            .unwrap()
            .high_watermark();
        assert!(
            hw >= (round + 1) * 3,
            "high watermark {hw} after round {round}"
        );
    }
    let on_leader = local_log(&cluster, leader, "replicated");
    for node in [1, 2, 3] {
        eventually("followers to hold the whole log", || {
            let same = local_log(&cluster, node, "replicated") == on_leader;
            async move { same }
        })
        .await;
    }
    // A produce to a follower is refused with the leader's error code.
    let follower = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    let (error, _) = produce_once(cluster.member(follower).addr, "replicated", &["x"]).await;
    assert_eq!(error, ResponseError::NotLeaderOrFollower.code());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_halted_leader_is_replaced_from_the_isr_and_no_acknowledged_record_is_lost() {
    init_logs();
    let mut cluster = TestCluster::start(3, FAST_FAILOVER).await;
    create_replicated(&cluster, "failover", "2").await;
    let (leader, epoch, _) = partition_state(&cluster, 1, "failover").await;
    for _ in 0..3 {
        assert_eq!(
            produce(cluster.member(leader).addr, "failover", &["v"])
                .await
                .0,
            0
        );
    }
    cluster.halt(leader).await;
    let survivor = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    let mut new_leader = -1;
    eventually("a new leader", || {
        let cluster = &cluster;
        async move {
            let (l, e, _) = partition_state(cluster, survivor, "failover").await;
            l > 0 && l != leader && e > epoch
        }
    })
    .await;
    let (l, _, isr) = partition_state(&cluster, survivor, "failover").await;
    new_leader = new_leader.max(l);
    assert!(
        !isr.contains(&leader),
        "the halted broker left the ISR: {isr:?}"
    );
    let (error, base) = produce(cluster.member(new_leader).addr, "failover", &["after"]).await;
    assert_eq!(error, 0);
    assert_eq!(
        base, 3,
        "every acknowledged record is still there, in order"
    );

    // The old leader comes back as a follower and catches up.
    cluster.restart(leader).await;
    eventually("the old leader to catch up", || {
        let same =
            local_log(&cluster, leader, "failover") == local_log(&cluster, new_leader, "failover");
        async move { same }
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_returns_to_the_preferred_replica_once_it_is_back_in_sync() {
    init_logs();
    let mut overrides = FAST_FAILOVER.to_vec();
    overrides.push("leader.imbalance.check.interval.seconds=1");
    let mut cluster = TestCluster::start(3, &overrides).await;
    create_replicated(&cluster, "preferred", "2").await;
    let (preferred, _, _) = partition_state(&cluster, 1, "preferred").await;
    assert_eq!(
        produce(cluster.member(preferred).addr, "preferred", &["v"])
            .await
            .0,
        0
    );
    cluster.halt(preferred).await;
    let survivor = [1, 2, 3].into_iter().find(|n| *n != preferred).unwrap();
    eventually("another leader", || {
        let cluster = &cluster;
        async move {
            let (leader, _, _) = partition_state(cluster, survivor, "preferred").await;
            leader > 0 && leader != preferred
        }
    })
    .await;
    cluster.restart(preferred).await;
    // Back in the ISR, it is made leader again by the controller's balancing.
    eventually("the preferred replica to lead again", || {
        let cluster = &cluster;
        async move {
            let (leader, _, isr) = partition_state(cluster, survivor, "preferred").await;
            leader == preferred && isr.len() == 3
        }
    })
    .await;
    // An explicit election now has nothing to do.
    let mut client = TestClient::connect(cluster.member(survivor).addr).await;
    let response = client
        .call(
            2,
            &ElectLeadersRequest::default()
                .with_election_type(0)
                .with_topic_partitions(Some(vec![
                    kafka_protocol::messages::elect_leaders_request::TopicPartitions::default()
                        .with_topic(name("preferred"))
                        .with_partitions(vec![0]),
                ]))
                .with_timeout_ms(10_000),
        )
        .await;
    assert_eq!(response.error_code, 0);
    assert_eq!(
        response.replica_election_results[0].partition_result[0].error_code,
        ResponseError::ElectionNotNeeded.code()
    );
    assert_eq!(
        produce(cluster.member(preferred).addr, "preferred", &["w"])
            .await
            .0,
        0
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reassignment_moves_a_partition_to_other_brokers_without_losing_records() {
    init_logs();
    let cluster = TestCluster::start(3, FAST_FAILOVER).await;
    let mut client = TestClient::connect(cluster.member(1).addr).await;
    let created = client
        .call(
            7,
            &CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name("moving"))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![
                        kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment::default()
                            .with_partition_index(0)
                            .with_broker_ids(vec![BrokerId(1)]),
                    ])])
                .with_timeout_ms(10_000),
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    for _ in 0..3 {
        assert_eq!(
            produce(cluster.member(1).addr, "moving", &["a", "b"])
                .await
                .0,
            0
        );
    }
    let before = local_log(&cluster, 1, "moving");

    let moved = client
        .call(
            0,
            &AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    kafka_protocol::messages::alter_partition_reassignments_request::ReassignableTopic::default()
                        .with_name(name("moving"))
                        .with_partitions(vec![
                            kafka_protocol::messages::alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_partition_index(0)
                                .with_replicas(Some(vec![BrokerId(2), BrokerId(3)])),
                        ]),
                ]),
        )
        .await;
    assert_eq!(moved.error_code, 0);
    assert_eq!(moved.responses[0].partitions[0].error_code, 0, "{moved:?}");

    eventually("the move to complete", || {
        let cluster = &cluster;
        async move {
            let mut client = TestClient::connect(cluster.member(2).addr).await;
            let ongoing = client
                .call(
                    0,
                    &ListPartitionReassignmentsRequest::default().with_timeout_ms(1000),
                )
                .await;
            let (leader, _, isr) = partition_state(cluster, 2, "moving").await;
            ongoing.topics.is_empty()
                && [2, 3].contains(&leader)
                && isr.len() == 2
                && !isr.contains(&1)
        }
    })
    .await;
    for node in [2, 3] {
        eventually("the new replicas to hold every record", || {
            let same = cluster
                .broker(node)
                .broker()
                .replicas
                .partition("moving", 0)
                .is_some()
                && local_log(&cluster, node, "moving") == before;
            async move { same }
        })
        .await;
    }
    eventually("broker 1 to drop its replica", || {
        let gone = cluster
            .broker(1)
            .broker()
            .replicas
            .partition("moving", 0)
            .is_none();
        async move { gone }
    })
    .await;
    let (leader, _, _) = partition_state(&cluster, 2, "moving").await;
    let (error, base) = produce(cluster.member(leader).addr, "moving", &["after"]).await;
    assert_eq!((error, base), (0, 6));
    cluster.shutdown().await;
}

/// (error code, offset) of ListOffsets v7 for partition 0 of `topic` at `timestamp` (or -1
/// latest, -2 earliest).
async fn list_offset(addr: std::net::SocketAddr, topic: &str, timestamp: i64) -> (i16, i64) {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let mut client = TestClient::connect(addr).await;
    let response = client
        .call(
            7,
            &ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(timestamp)])]),
        )
        .await;
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_offsets_by_time_gives_no_offset_at_or_above_the_high_watermark() {
    init_logs();
    // A halted follower stays in the ISR for the test's few seconds (no fencing, no lag
    // shrink), so it holds the high watermark where it was.
    let mut cluster = TestCluster::start(
        3,
        &[
            "broker.session.timeout.ms=30000",
            "broker.heartbeat.interval.ms=300",
            "replica.lag.time.max.ms=30000",
        ],
    )
    .await;
    create_replicated(&cluster, "by-time", "1").await;
    let (leader, _, _) = partition_state(&cluster, 1, "by-time").await;
    let addr = cluster.member(leader).addr;
    let t0 = 1_700_000_000_000;
    let first = [record("k", "a", t0), record("k", "b", t0 + 1000)];
    assert_eq!(produce_records(addr, "by-time", &first, -1).await, (0, 0));
    let hw = |cluster: &TestCluster| {
        cluster
            .broker(leader)
            .broker()
            .replicas
            .replica("by-time", 0)
            .unwrap()
            .high_watermark()
    };
    assert_eq!(
        hw(&cluster),
        2,
        "acks=all answered: the ISR has the first batch"
    );

    let follower = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    cluster.halt(follower).await;
    // acks=1: on the leader only, above the high watermark the halted follower holds.
    let later = [record("k", "c", t0 + 2000)];
    assert_eq!(produce_records(addr, "by-time", &later, 1).await, (0, 2));
    assert_eq!(
        hw(&cluster),
        2,
        "the halted follower holds the high watermark"
    );

    assert_eq!(list_offset(addr, "by-time", t0 + 500).await, (0, 1));
    assert_eq!(
        list_offset(addr, "by-time", -1).await,
        (0, 2),
        "latest is the high watermark"
    );
    assert_eq!(
        list_offset(addr, "by-time", t0 + 1500).await,
        (0, -1),
        "offset 2 is not readable yet, so no record is at or after that time"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_records_answers_once_every_in_sync_replica_moved_its_log_start() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    init_logs();
    let cluster = TestCluster::start(3, FAST_FAILOVER).await;
    create_replicated(&cluster, "trimmed", "2").await;
    let (leader, _, isr) = partition_state(&cluster, 1, "trimmed").await;
    assert_eq!(isr.len(), 3);
    for round in 0..3 {
        let answer = produce(cluster.member(leader).addr, "trimmed", &["a", "b"]).await;
        assert_eq!(answer, (0, round * 2));
    }
    let mut client = TestClient::connect(cluster.member(leader).addr).await;
    let response = client
        .call(
            2,
            &DeleteRecordsRequest::default()
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(name("trimmed"))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(4)])])
                .with_timeout_ms(10_000),
        )
        .await;
    let result = &response.topics[0].partitions[0];
    assert_eq!((result.error_code, result.low_watermark), (0, 4));
    // Answered: no replica that could lead next still serves the deleted records.
    for node in [1, 2, 3] {
        let log = cluster
            .broker(node)
            .broker()
            .replicas
            .partition("trimmed", 0)
            .unwrap();
        assert_eq!(log.log_start_offset(), 4, "broker {node}");
    }
    cluster.shutdown().await;
}

/// A Produce v9 request (header and body) with acks=0 for partition 0 of `topic`: the
/// broker answers nothing, so a client may send the same frame again and again.
fn acks_0_produce_frame(topic: &str, records: &[kafka_protocol::records::Record]) -> Vec<u8> {
    use kafka_protocol::protocol::{Encodable, Request};
    let mut frame = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ProduceRequest::KEY)
        .with_request_api_version(9)
        .with_correlation_id(1)
        .encode(&mut frame, ApiKey::Produce.request_header_version(9))
        .unwrap();
    ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(records, Compression::None)))])])
        .encode(&mut frame, 9)
        .unwrap();
    frame.to_vec()
}

/// Creates `topic` with one partition on brokers [1, 2] (1 leads) and these topic configs.
async fn create_on_1_and_2(cluster: &TestCluster, topic: &str, configs: &[(&str, &str)]) {
    use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
    let mut client = TestClient::connect(cluster.member(1).addr).await;
    let created = client
        .call(
            7,
            &CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name(topic))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(vec![BrokerId(1), BrokerId(2)])])
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
                .with_timeout_ms(10_000),
        )
        .await;
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_above_the_replica_fetch_limit_is_replicated_while_another_partition_is_busy() {
    init_logs();
    // Followers take at most 1 KiB of a partition per fetch: a producer writing without
    // pause keeps "a-busy" ahead of its follower, so every fetch finds data there.
    let cluster = TestCluster::start(3, &["replica.fetch.max.bytes=1024"]).await;
    // Broker 2 follows both from broker 1 in one fetch, "a-busy" first by name.
    create_on_1_and_2(&cluster, "a-busy", &[]).await;
    create_on_1_and_2(&cluster, "b-big", &[]).await;
    let leader = cluster.member(1).addr;
    assert_eq!(produce(leader, "a-busy", &["warm"]).await, (0, 0));
    assert_eq!(produce(leader, "b-big", &["warm"]).await, (0, 0));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        let frame = acks_0_produce_frame("a-busy", &[record("k", "busy", 1)]);
        tokio::spawn(async move {
            let mut client = TestClient::connect(leader).await;
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client.send_raw(&frame).await;
                sent += 1;
                tokio::task::yield_now().await;
            }
            sent
        })
    };
    // Above the 1 KiB limit: a leader sends it only to a fetch in which no partition asked
    // before it has data (KIP-74), so asked after "a-busy" it would never be sent.
    let big = "x".repeat(64 << 10);
    let answer = produce_records(leader, "b-big", &[record("k", &big, 1)], -1).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = busy.await.unwrap();
    assert_eq!(answer, (0, 1), "acks=all: broker 2 copied the big batch");
    assert!(sent > 0);
    cluster.shutdown().await;
}

//! Fetch v13-v15 on a cluster of three in-process brokers: topics named by id (an unknown or
//! re-created topic's id gets UNKNOWN_TOPIC_ID), and a follower's broker epoch in
//! `ReplicaState` (KIP-903: an earlier incarnation's fetch gets STALE_BROKER_EPOCH and reads
//! nothing).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use millrace_testkit::records::{decode_records, record};
use millrace_testkit::wire::{produce_to_leader, TestClient};
use millrace_testkit::{eventually, TestCluster, FAST_FAILOVER};
use uuid::Uuid;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn create(addr: SocketAddr, topic: &str, replication_factor: i16) {
    let mut client = TestClient::connect(addr).await;
    let response = client
        .call(
            7,
            &CreateTopicsRequest::default()
                .with_topics(vec![CreatableTopic::default()
                    .with_name(name(topic))
                    .with_num_partitions(1)
                    .with_replication_factor(replication_factor)])
                .with_timeout_ms(10_000),
        )
        .await;
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
}

/// (topic id, leader, ISR) of partition 0 of `topic`, once it has a leader.
async fn describe(cluster: &TestCluster, topic: &str) -> (Uuid, i32, Vec<i32>) {
    eventually("the topic to have a leader", || async move {
        try_describe(cluster, topic).await.is_some()
    })
    .await;
    try_describe(cluster, topic).await.unwrap()
}

async fn try_describe(cluster: &TestCluster, topic: &str) -> Option<(Uuid, i32, Vec<i32>)> {
    let mut client = TestClient::connect(cluster.members[0].addr).await;
    let response = client
        .call(
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic)))
            ])),
        )
        .await;
    let t = &response.topics[0];
    let p = t.partitions.first()?;
    (t.error_code == 0 && p.leader_id.0 >= 0).then(|| {
        (
            t.topic_id,
            p.leader_id.0,
            p.isr_nodes.iter().map(|b| b.0).collect(),
        )
    })
}

/// Produces `count` records to partition 0 on `addr` with acks=all, retrying while `addr` has
/// not applied its leadership yet.
async fn produce(addr: SocketAddr, topic: &str, count: usize) {
    let records: Vec<_> = (0..count)
        .map(|i| record("k", &format!("v{i}"), 1))
        .collect();
    let (error, _) = produce_to_leader(addr, topic, &records, -1).await;
    assert_eq!(error, 0, "produce to {topic}");
}

/// A Fetch of partition 0 of topic `topic_id` from offset 0, as `replica` (consumer: -1).
fn fetch_request(topic_id: Uuid, replica: ReplicaState) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_replica_state(replica)
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic_id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(1 << 20)])])
}

fn consumer() -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(-1))
        .with_replica_epoch(-1)
}

/// (error code, records read, the answer's topic id) of the one partition fetched.
async fn fetch(addr: SocketAddr, version: i16, request: &FetchRequest) -> (i16, usize, Uuid) {
    let mut client = TestClient::connect(addr).await;
    let response = client.call(version, request).await;
    assert_eq!(response.error_code, 0, "{response:?}");
    let topic = &response.responses[0];
    let partition = &topic.partitions[0];
    let records = partition
        .records
        .clone()
        .map_or(0, |r| decode_records(r).len());
    (partition.error_code, records, topic.topic_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetch_by_topic_id_reads_that_topic_and_never_a_recreated_one() {
    let cluster = TestCluster::start(3, FAST_FAILOVER).await;
    create(cluster.members[0].addr, "by-id", 3).await;
    let (topic_id, leader, _) = describe(&cluster, "by-id").await;
    let leader_addr = cluster.member(leader).addr;
    produce(leader_addr, "by-id", 3).await;

    for version in [13, 14, 15] {
        let (error, records, answered_id) =
            fetch(leader_addr, version, &fetch_request(topic_id, consumer())).await;
        assert_eq!((error, records), (0, 3), "v{version}");
        assert_eq!(answered_id, topic_id, "v{version} names the topic by id");
    }
    let (error, records, _) =
        fetch(leader_addr, 15, &fetch_request(Uuid::new_v4(), consumer())).await;
    assert_eq!(error, ResponseError::UnknownTopicId.code());
    assert_eq!(records, 0);

    // Deleted and created again under the same name: the old id names nothing.
    let mut client = TestClient::connect(cluster.members[0].addr).await;
    let deleted = client
        .call(
            6,
            &DeleteTopicsRequest::default()
                .with_topics(vec![
                    DeleteTopicState::default().with_name(Some(name("by-id")))
                ])
                .with_timeout_ms(10_000),
        )
        .await;
    assert_eq!(deleted.responses[0].error_code, 0, "{deleted:?}");
    create(cluster.members[0].addr, "by-id", 3).await;
    let (new_id, new_leader, _) = describe(&cluster, "by-id").await;
    assert_ne!(new_id, topic_id);
    let new_leader_addr = cluster.member(new_leader).addr;
    produce(new_leader_addr, "by-id", 1).await;
    let (error, records, _) =
        fetch(new_leader_addr, 15, &fetch_request(topic_id, consumer())).await;
    assert_eq!(error, ResponseError::UnknownTopicId.code());
    assert_eq!(records, 0, "nothing of the new topic is read by the old id");
    let (error, records, _) = fetch(new_leader_addr, 15, &fetch_request(new_id, consumer())).await;
    assert_eq!((error, records), (0, 1));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_fetch_from_an_earlier_incarnation_of_a_follower_is_refused() {
    let cluster = TestCluster::start(3, FAST_FAILOVER).await;
    create(cluster.members[0].addr, "epochs", 3).await;
    let (topic_id, leader, _) = describe(&cluster, "epochs").await;
    let leader_addr = cluster.member(leader).addr;
    produce(leader_addr, "epochs", 2).await;
    let follower = [1, 2, 3].into_iter().find(|n| *n != leader).unwrap();
    let registered = cluster
        .broker(leader)
        .broker()
        .controller
        .with_image(|i| i.broker(follower).map(|b| b.epoch))
        .unwrap();
    let as_follower = |epoch: i64| {
        ReplicaState::default()
            .with_replica_id(BrokerId(follower))
            .with_replica_epoch(epoch)
    };

    let (error, records, _) = fetch(
        leader_addr,
        15,
        &fetch_request(topic_id, as_follower(registered - 1)),
    )
    .await;
    assert_eq!(error, ResponseError::StaleBrokerEpoch.code());
    assert_eq!(records, 0, "a stale incarnation reads nothing");

    // The registered incarnation is served, beyond nothing it should not see.
    let (error, records, _) = fetch(
        leader_addr,
        15,
        &fetch_request(topic_id, as_follower(registered)),
    )
    .await;
    assert_eq!((error, records), (0, 2));
    // A broker that is not a replica is still refused by id, whatever its epoch.
    let outsider = ReplicaState::default()
        .with_replica_id(BrokerId(99))
        .with_replica_epoch(0);
    let (error, _, _) = fetch(leader_addr, 15, &fetch_request(topic_id, outsider)).await;
    assert_eq!(error, ResponseError::NotLeaderOrFollower.code());

    // The followers themselves fetch with v15 and their epochs: the ISR stays whole and new
    // records reach every replica.
    produce(leader_addr, "epochs", 1).await;
    let (_, _, isr) = describe(&cluster, "epochs").await;
    assert_eq!(isr.len(), 3, "ISR {isr:?}");
    cluster.shutdown().await;
}

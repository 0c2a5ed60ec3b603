//! Broker-only nodes (`process.roles=broker`): three voters and two brokers that observe the
//! metadata quorum. The observers learn every change, host and lead replicas, forward admin
//! requests to the active controller, follow it when it changes, and start again from the
//! voters' metadata alone.
#![allow(clippy::unwrap_used)]

use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use millrace_testkit::records::{decode_records, record};
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

async fn create(cluster: &TestCluster, via: i32, topic: CreatableTopic) -> i16 {
    let mut client = TestClient::connect(cluster.member(via).addr).await;
    let response = client
        .call(
            7,
            &CreateTopicsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(10_000),
        )
        .await;
    response.topics[0].error_code
}

async fn metadata(cluster: &TestCluster, via: i32, topic: &str) -> MetadataResponse {
    let mut client = TestClient::connect(cluster.member(via).addr).await;
    client
        .call(
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(topic)))
            ])),
        )
        .await
}

async fn controller_seen_by(cluster: &TestCluster, via: i32) -> i32 {
    let mut client = TestClient::connect(cluster.member(via).addr).await;
    let response: DescribeClusterResponse =
        client.call(0, &DescribeClusterRequest::default()).await;
    response.controller_id.0
}

/// Produces `values` with acks=all to partition 0, retrying while the leader has not heard of
/// its leadership yet.
async fn produce(cluster: &TestCluster, to: i32, topic: &str, values: &[&str]) -> (i16, i64) {
    let records: Vec<_> = values.iter().map(|v| record("k", v, 1)).collect();
    produce_to_leader(cluster.member(to).addr, topic, &records, -1).await
}

/// The values broker `node_id` holds in partition 0 of `topic`, read from its log.
fn local_values(cluster: &TestCluster, node_id: i32, topic: &str) -> Vec<String> {
    let log = cluster
        .broker(node_id)
        .broker()
        .replicas
        .partition(topic, 0)
        .expect("a replica on this broker");
    let mut values = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let records = decode_records(log.read(offset, usize::MAX).unwrap());
        let Some(last) = records.last() else { break };
        offset = last.offset + 1;
        values.extend(
            records.iter().map(|r| {
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
            }),
        );
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_only_nodes_follow_the_quorum_lead_replicas_and_outlive_a_controller() {
    init_logs();
    let mut cluster = TestCluster::start_with_brokers(3, 2, FAST_FAILOVER).await;
    assert!(cluster.members[3..].iter().all(|m| !m.voter));

    // Created through an observer (forwarded to the active controller), led by the other
    // observer, replicated to a voter.
    let topic = CreatableTopic::default()
        .with_name(name("observed"))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_assignments(vec![CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(4), BrokerId(5), BrokerId(1)])])
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("min.insync.replicas"))
            .with_value(Some(StrBytes::from_static_str("2")))]);
    assert_eq!(create(&cluster, 5, topic).await, 0);

    // Every node, voter or not, answers the same metadata (once it has applied the change):
    // five brokers, a voter controlling.
    for node in 1..=5 {
        eventually("every node to know the topic", || async {
            metadata(&cluster, node, "observed").await.topics[0].error_code == 0
        })
        .await;
        let response = metadata(&cluster, node, "observed").await;
        let mut brokers: Vec<i32> = response.brokers.iter().map(|b| b.node_id.0).collect();
        brokers.sort_unstable();
        assert_eq!(brokers, vec![1, 2, 3, 4, 5], "brokers seen by {node}");
        assert!((1..=3).contains(&response.controller_id.0), "{response:?}");
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.error_code, 0, "seen by {node}");
        assert_eq!(partition.leader_id, BrokerId(4), "seen by {node}");
    }

    let (error, base) = produce(&cluster, 4, "observed", &["a", "b", "c"]).await;
    assert_eq!((error, base), (0, 0));
    for node in [4, 5, 1] {
        eventually("every replica to hold the records", || {
            let values = local_values(&cluster, node, "observed");
            async move { values == ["a", "b", "c"] }
        })
        .await;
    }

    // The active controller dies: the observers learn of its successor and their admin
    // requests reach it.
    let old = controller_seen_by(&cluster, 4).await;
    assert!((1..=3).contains(&old));
    cluster.halt(old).await;
    for observer in [4, 5] {
        eventually("the observer to follow the new controller", || async {
            let now = controller_seen_by(&cluster, observer).await;
            now != old && now > 0
        })
        .await;
    }
    let after = CreatableTopic::default()
        .with_name(name("after-failover"))
        .with_num_partitions(2)
        .with_replication_factor(3);
    assert_eq!(create(&cluster, 4, after).await, 0);
    let (error, _) = produce(&cluster, 4, "observed", &["d"]).await;
    assert_eq!(error, 0, "the observer still leads and replicates");

    // An observer keeps no metadata on disk: restarted, it is sent the image and takes up its
    // replicas again.
    cluster.stop(5).await;
    cluster.restart(5).await;
    let response = metadata(&cluster, 5, "after-failover").await;
    assert_eq!(response.topics[0].error_code, 0, "{response:?}");
    eventually("the restarted observer to catch up its replica", || {
        let values = local_values(&cluster, 5, "observed");
        async move { values == ["a", "b", "c", "d"] }
    })
    .await;
    cluster.shutdown().await;
}

//! The cluster metadata on one broker: registered brokers, replicas, leaders, leader epochs
//! and ISR come from the metadata records, on the same code path a cluster uses.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;
use millrace_broker::metadata::{MetadataLog, MetadataRecord};
use millrace_testkit::records::{batch, record};
use millrace_testkit::wire::TestClient;
use millrace_testkit::{start_broker_in, TestBroker};
use uuid::Uuid;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

async fn metadata(client: &mut TestClient, topic: &str) -> MetadataResponse {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic)))
        ]))
        .with_allow_auto_topic_creation(false);
    client.call(12, &request).await
}

async fn create(client: &mut TestClient, topic: CreatableTopic) -> (i16, Option<String>) {
    let response = client
        .call(
            7,
            &CreateTopicsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(5000),
        )
        .await;
    let result = &response.topics[0];
    (
        result.error_code,
        result.error_message.as_ref().map(|m| m.to_string()),
    )
}

#[tokio::test]
async fn one_broker_registers_and_leads_what_it_creates() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&["node.id=4"]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;
    let (error, _) = create(
        &mut client,
        CreatableTopic::default()
            .with_name(name("events"))
            .with_num_partitions(3)
            .with_replication_factor(-1),
    )
    .await;
    assert_eq!(error, 0);

    let response = metadata(&mut client, "events").await;
    assert_eq!(response.controller_id, BrokerId(4));
    assert_eq!(response.brokers.len(), 1);
    assert_eq!(response.brokers[0].node_id, BrokerId(4));
    assert_eq!(
        response.brokers[0].port,
        i32::from(broker.local_addr().port())
    );
    let partitions = &response.topics[0].partitions;
    assert_eq!(partitions.len(), 3);
    for partition in partitions {
        assert_eq!(partition.error_code, 0);
        assert_eq!(partition.leader_id, BrokerId(4));
        assert_eq!(partition.leader_epoch, 0);
        assert_eq!(partition.replica_nodes, vec![BrokerId(4)]);
        assert_eq!(partition.isr_nodes, vec![BrokerId(4)]);
        assert!(partition.offline_replicas.is_empty());
    }

    let cluster = client.call(0, &DescribeClusterRequest::default()).await;
    assert_eq!(cluster.controller_id, BrokerId(4));
    assert_eq!(
        cluster
            .brokers
            .iter()
            .map(|b| b.broker_id)
            .collect::<Vec<_>>(),
        vec![BrokerId(4)]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn replication_beyond_the_registered_brokers_is_refused_with_kafka_errors() {
    let TestBroker { broker, dir: _dir } = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.local_addr()).await;

    let (error, message) = create(
        &mut client,
        CreatableTopic::default()
            .with_name(name("replicated"))
            .with_num_partitions(1)
            .with_replication_factor(3),
    )
    .await;
    assert_eq!(error, ResponseError::InvalidReplicationFactor.code());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("available brokers (1)")),
        "{message:?}"
    );

    let (error, message) = create(
        &mut client,
        CreatableTopic::default()
            .with_name(name("assigned"))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(vec![BrokerId(1), BrokerId(7)])]),
    )
    .await;
    assert_eq!(error, ResponseError::InvalidReplicaAssignment.code());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("broker 7 is not registered")),
        "{message:?}"
    );
    assert_eq!(
        metadata(&mut client, "assigned").await.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_data_dir_from_before_replica_records_keeps_its_topics_and_records() {
    let dir = tempfile::tempdir().unwrap();
    // The metadata a single-node broker wrote before partitions had replica records.
    let topic_id = Uuid::new_v4();
    {
        let (mut log, _) =
            MetadataLog::open(&dir.path().join("__cluster_metadata-0/metadata.log")).unwrap();
        log.append(&[
            MetadataRecord::Cluster {
                cluster_id: "legacy-cluster-id-0001".into(),
            },
            MetadataRecord::Topic {
                name: "old".into(),
                topic_id,
                partitions: 2,
                configs: BTreeMap::new(),
            },
        ])
        .unwrap();
    }
    for restart in 0..2 {
        let broker = start_broker_in(dir.path(), &[]).await;
        let mut client = TestClient::connect(broker.local_addr()).await;
        let response = metadata(&mut client, "old").await;
        assert_eq!(
            response.cluster_id.as_ref().map(|c| c.to_string()),
            Some("legacy-cluster-id-0001".to_string())
        );
        let topic = &response.topics[0];
        assert_eq!(topic.error_code, 0);
        assert_eq!(topic.topic_id, topic_id);
        assert_eq!(topic.partitions.len(), 2);
        assert!(topic
            .partitions
            .iter()
            .all(|p| p.leader_id == BrokerId(1) && p.replica_nodes == vec![BrokerId(1)]));

        let produced = client
            .call(
                9,
                &ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(5000)
                    .with_topic_data(vec![produce_request::TopicProduceData::default()
                        .with_name(name("old"))
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_index(1)
                                .with_records(Some(batch(
                                    &[record("k", "v", 1)],
                                    Compression::None,
                                ))),
                        ])]),
            )
            .await;
        let partition = &produced.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0);
        assert_eq!(partition.base_offset, restart);
        broker.shutdown().await;
    }
}

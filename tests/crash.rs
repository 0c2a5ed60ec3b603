//! Fault tests: `kill -9` the broker process and check that nothing acknowledged is lost.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::MILLRACE_BIN;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use millrace_testkit::records::{batch, decode_records, record};
use millrace_testkit::wire::TestClient;
use millrace_testkit::BrokerProcess;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn create_topic(c: &mut TestClient, name: &str) {
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    assert_eq!(c.call(7, &request).await.topics[0].error_code, 0);
}

#[tokio::test]
async fn committed_offsets_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        MILLRACE_BIN,
        dir.path(),
        0,
        &["-o", "offsets.topic.num.partitions=2"],
    );
    let mut c = TestClient::connect(broker.addr).await;
    create_topic(&mut c, "events").await;
    for offset in [10, 20, 30] {
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(s("crashy")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("events")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)])]);
        assert_eq!(
            c.call(8, &commit).await.topics[0].partitions[0].error_code,
            0
        );
    }
    broker.kill9();

    let broker = BrokerProcess::start(
        MILLRACE_BIN,
        dir.path(),
        0,
        &["-o", "offsets.topic.num.partitions=2"],
    );
    let mut c = TestClient::connect(broker.addr).await;
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("crashy")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s("events")))
            .with_partition_indexes(vec![0])]));
    let response = c.call(7, &fetch).await;
    assert_eq!(response.topics[0].partitions[0].committed_offset, 30);
}

#[tokio::test]
async fn acknowledged_produces_survive_kill_9_in_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        MILLRACE_BIN,
        dir.path(),
        0,
        &["-o", "offsets.topic.num.partitions=2"],
    );
    let addr = broker.addr;
    let mut c = TestClient::connect(addr).await;
    create_topic(&mut c, "ledger").await;

    // A producer task appends batches with acks=-1 until the connection dies; every answered
    // batch is recorded.
    let producer = tokio::spawn(async move {
        let mut acked: Vec<(i64, String)> = Vec::new();
        let mut p = TestClient::connect(addr).await;
        for i in 0.. {
            let value = format!("record-{i}");
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(s("ledger")))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(
                            &[record("k", &value, i)],
                            Compression::None,
                        )))])]);
            let Some(response) = p.try_call(9, &request).await else {
                break;
            };
            let partition = &response.responses[0].partition_responses[0];
            assert_eq!(partition.error_code, 0);
            acked.push((partition.base_offset, value));
        }
        acked
    });
    // Kill once a good number of records has been acknowledged (watched via ListOffsets).
    loop {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default()
                    .with_name(TopicName(s("ledger")))
                    .with_partitions(vec![
                    kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
            ]);
        if c.call(7, &request).await.topics[0].partitions[0].offset >= 300 {
            break;
        }
        tokio::task::yield_now().await;
    }
    broker.kill9();
    let acked = producer.await.unwrap();
    assert!(acked.len() >= 250, "only {} acknowledged", acked.len());

    let broker = BrokerProcess::start(
        MILLRACE_BIN,
        dir.path(),
        0,
        &["-o", "offsets.topic.num.partitions=2"],
    );
    let mut c = TestClient::connect(broker.addr).await;
    let mut stored: Vec<(i64, Bytes)> = Vec::new();
    let mut offset = 0;
    loop {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(s("ledger")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let response = c.call(12, &request).await;
        let records = decode_records(response.responses[0].partitions[0].records.clone().unwrap());
        if records.is_empty() {
            break;
        }
        for r in records {
            offset = r.offset + 1;
            stored.push((r.offset, r.value.unwrap()));
        }
    }
    for (i, (offset, value)) in acked.iter().enumerate() {
        assert_eq!(*offset, i as i64, "acknowledged offsets are contiguous");
        let (stored_offset, stored_value) = &stored[i];
        assert_eq!(stored_offset, offset);
        assert_eq!(
            stored_value,
            &Bytes::from(value.clone()),
            "record at offset {offset}"
        );
    }
    // Anything stored past the last acknowledgement was written but not yet answered: allowed,
    // but in order and never duplicated.
    for (i, (offset, _)) in stored.iter().enumerate() {
        assert_eq!(*offset, i as i64);
    }
}

//! The kit against itself: a broker it starts takes the topics and records its helpers make.
#![allow(clippy::unwrap_used)]

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use kafka_protocol::records::Compression;
use millrace_client::{ProducerConfig, ProducerRecord};
use millrace_testkit::records::{batch, decode_records, record};
use millrace_testkit::wire::TestClient;
use millrace_testkit::{create_topic, free_port, produce_all, TestBroker, FAST_GROUPS};

#[tokio::test]
async fn produce_all_returns_each_records_place_in_order() {
    let broker = TestBroker::start(&[FAST_GROUPS]).await;
    let client = broker.client_config("testkit-test");
    create_topic(&client, "kit", 2).await;
    let records = (0..6)
        .map(|i| ProducerRecord::new("kit", format!("v{i}")).partition(i % 2))
        .collect();
    let placed = produce_all(ProducerConfig::new(client), records).await;
    let places: Vec<(i32, i64)> = placed.iter().map(|m| (m.partition, m.offset)).collect();
    assert_eq!(places, [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]);
    broker.shutdown().await;
}

#[tokio::test]
async fn the_wire_client_talks_to_the_broker() {
    let broker = TestBroker::start(&[]).await;
    let mut client = TestClient::connect(broker.addr()).await;
    let versions = client.call(3, &ApiVersionsRequest::default()).await;
    assert_eq!(versions.error_code, 0);
    assert!(versions
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
    broker.shutdown().await;
}

#[test]
fn a_batch_decodes_to_its_records() {
    let records = [record("a", "1", 10), record("b", "2", 20)];
    let decoded = decode_records(batch(&records, Compression::None));
    let keys: Vec<_> = decoded.iter().map(|r| r.key.clone().unwrap()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(decoded[1].offset, 1);
    assert_eq!(decoded[1].timestamp, 20);
}

#[test]
fn a_free_port_can_be_bound() {
    let port = free_port();
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

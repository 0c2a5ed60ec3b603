//! The producer's idempotence on brokers with and without InitProducerId: the default steps
//! down (as the Java client does, KIP-679), an explicit request does not.
#![allow(clippy::unwrap_used)]

use kafka_protocol::messages::ApiKey;
use millrace_client::admin::NewTopic;
use millrace_client::{
    Acks, Admin, ClientConfig, ClientError, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use millrace_testkit::api_hiding_proxy::{start_broker_without, BrokerWithoutApis};

fn client_config(broker: &BrokerWithoutApis) -> ClientConfig {
    ClientConfig::new(broker.bootstrap.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_idempotence_steps_down_on_a_broker_without_init_producer_id() {
    let broker = start_broker_without(&[ApiKey::InitProducerId]).await;
    let admin = Admin::connect(client_config(&broker)).await.unwrap();
    admin.create_topic(NewTopic::new("lines", 1)).await.unwrap();

    let config = ProducerConfig::builder(client_config(&broker))
        .acks(Acks::All)
        .build()
        .unwrap();
    assert!(config.enable_idempotence, "idempotence is on by default");
    let producer = Producer::connect(config).await.unwrap();
    for value in ["one", "two"] {
        producer
            .send(ProducerRecord::new("lines", value.as_bytes().to_vec()))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await;

    let end = admin
        .list_offsets(&[(TopicPartition::new("lines", 0), OffsetSpec::Latest)])
        .await
        .unwrap();
    assert_eq!(end[&TopicPartition::new("lines", 0)].offset, 2);
    broker.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_idempotence_fails_on_a_broker_without_init_producer_id() {
    let broker = start_broker_without(&[ApiKey::InitProducerId]).await;
    let config = ProducerConfig::builder(client_config(&broker))
        .enable_idempotence(true)
        .build()
        .unwrap();

    let error = Producer::connect(config).await.unwrap_err();

    assert!(
        matches!(
            error,
            ClientError::UnsupportedVersion {
                api: "InitProducerId",
                ..
            }
        ),
        "{error}"
    );
    broker.broker.shutdown().await;
}

#[test]
fn default_idempotence_is_off_with_acks_other_than_all_and_explicit_is_an_error() {
    let client = ClientConfig::new("127.0.0.1:9092");
    let config = ProducerConfig::builder(client.clone())
        .acks(Acks::Leader)
        .build()
        .unwrap();
    assert!(!config.enable_idempotence);

    let explicit = ProducerConfig::builder(client)
        .acks(Acks::Leader)
        .enable_idempotence(true)
        .build();
    assert!(matches!(explicit, Err(ClientError::InvalidArgument(_))));
}

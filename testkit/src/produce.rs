//! Producing records and waiting for them.

use millrace_client::{Producer, ProducerConfig, ProducerRecord, RecordMetadata};
use serde::Serialize;

/// Sends every record with one producer, waits for every acknowledgement, closes the producer,
/// and returns where each record landed, in the order given. Sends are not awaited one by
/// one, so the producer batches them as it would in production.
///
/// The records come as a `Vec` rather than any iterator: a future that holds a borrowing
/// iterator across awaits can fail `tokio::spawn`'s `Send` check ("FnOnce is not general
/// enough"), and tests produce from spawned tasks.
pub async fn produce_all(
    config: ProducerConfig,
    records: Vec<ProducerRecord>,
) -> Vec<RecordMetadata> {
    let producer = Producer::connect(config)
        .await
        .expect("a producer for the test broker");
    let mut deliveries = Vec::new();
    for record in records {
        deliveries.push(producer.send(record).await.expect("the record is sent"));
    }
    let mut placed = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        placed.push(delivery.await.expect("the record is acknowledged"));
    }
    producer.close().await;
    placed
}

/// A record for `topic` keyed by `key` whose value is `value` as JSON (`None`: a tombstone).
pub fn json_record<T: Serialize>(topic: &str, key: &str, value: Option<&T>) -> ProducerRecord {
    ProducerRecord {
        topic: topic.to_string(),
        key: Some(key.as_bytes().to_vec().into()),
        value: value.map(|v| {
            serde_json::to_vec(v)
                .expect("the value serialises as JSON")
                .into()
        }),
        ..ProducerRecord::default()
    }
}

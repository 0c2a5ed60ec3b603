//! The dead-letter topic: records a sink cannot write, sent on as they were read, with why.
//! A [`Sink`](super::Sink) keeps its [`DeadLetter`]s for the task, which delivers them through
//! a [`DeadLetterQueue`] before every commit. (Sources reject input through
//! [`SourceContext::reject`](super::SourceContext::reject) with the same `millrace.error`
//! header.)
//!
//! Headers added to the original ones: `millrace.error` (the reason), `millrace.topic`,
//! `millrace.partition` and `millrace.offset` (where the record came from). Delivery is
//! at-least-once: a record dead-lettered after the last checkpoint is sent again when a
//! restart replays it.

use millrace_client::producer::{Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use millrace_client::record::ConsumerRecord;
use millrace_client::ClientConfig;

use crate::error::Result;

/// Header with the reason a record was dead-lettered.
pub const ERROR_HEADER: &str = "millrace.error";
/// Header with the record's original topic.
pub const TOPIC_HEADER: &str = "millrace.topic";
/// Header with the record's original partition.
pub const PARTITION_HEADER: &str = "millrace.partition";
/// Header with the record's original offset.
pub const OFFSET_HEADER: &str = "millrace.offset";
/// Header with where a source's rejected input came from (`FILE:BYTE` for the file source).
pub const SOURCE_HEADER: &str = "millrace.source";

/// A record that cannot be written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The record as read.
    pub record: ConsumerRecord,
    /// The reason, for the `millrace.error` header.
    pub reason: String,
}

/// Sends dead letters to a topic, or only logs them when no topic is configured.
pub struct DeadLetterQueue {
    target: Option<(Producer, String)>,
    in_flight: Vec<DeliveryFuture>,
}

impl DeadLetterQueue {
    /// A queue producing to `topic` (acks=all), or one that logs and drops when `None`.
    pub async fn connect(client: &ClientConfig, topic: Option<&str>) -> Result<Self> {
        let target = match topic {
            Some(topic) => {
                let config = ProducerConfig::builder(client.clone())
                    .acks(Acks::All)
                    .linger_ms(0)
                    .build()?;
                Some((Producer::connect(config).await?, topic.to_string()))
            }
            None => None,
        };
        Ok(DeadLetterQueue {
            target,
            in_flight: Vec::new(),
        })
    }

    /// Starts sending `letters`; [`Self::flush`] waits for them.
    pub async fn send(&mut self, letters: Vec<DeadLetter>) -> Result<()> {
        for letter in letters {
            let Some((producer, topic)) = &self.target else {
                tracing::warn!(
                    topic = %letter.record.topic,
                    partition = letter.record.partition,
                    offset = letter.record.offset,
                    reason = %letter.reason,
                    "record skipped (no dead-letter topic configured)"
                );
                continue;
            };
            let record = letter.record;
            let mut headers = record.headers;
            headers.push((ERROR_HEADER.into(), Some(letter.reason.into_bytes().into())));
            headers.push((
                TOPIC_HEADER.into(),
                Some(record.topic.as_bytes().to_vec().into()),
            ));
            headers.push((
                PARTITION_HEADER.into(),
                Some(record.partition.to_string().into_bytes().into()),
            ));
            headers.push((
                OFFSET_HEADER.into(),
                Some(record.offset.to_string().into_bytes().into()),
            ));
            let out = ProducerRecord {
                topic: topic.clone(),
                partition: None,
                key: record.key,
                value: record.value,
                headers,
                timestamp: Some(record.timestamp),
            };
            self.in_flight.push(producer.send(out).await?);
        }
        Ok(())
    }

    /// Waits until every dead letter sent so far is acknowledged.
    pub async fn flush(&mut self) -> Result<()> {
        for delivery in self.in_flight.drain(..) {
            delivery.await?;
        }
        Ok(())
    }

    /// Flushes and closes the producer.
    pub async fn close(&mut self) -> Result<()> {
        self.flush().await?;
        if let Some((producer, _)) = &self.target {
            producer.close().await;
        }
        Ok(())
    }
}

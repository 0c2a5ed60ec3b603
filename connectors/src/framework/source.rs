//! What the framework gives a [`Source`](super::Source): a producer with acks=all behind a
//! `send` that returns only when a whole batch is acknowledged, dead letters, and metrics.
//!
//! With a `transactional_id` each `send` (and each `reject`) is one transaction: its records
//! are all committed or, if any fails, all aborted, so read_committed consumers see a file
//! chunk or a request whole or not at all. One transaction is open at a time: concurrent
//! sends (HTTP requests) take turns.

use std::sync::Arc;

use millrace_client::producer::{Acks, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
use millrace_client::ClientConfig;

use super::dead_letter::{ERROR_HEADER, SOURCE_HEADER};
use crate::error::Result;
use crate::metrics::SourceMetrics;

/// Produces for a source. Cheap to clone (one producer shared by every clone).
#[derive(Clone)]
pub struct SourceContext {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    producer: Producer,
    /// Set for a transactional producer: held for the length of each transaction.
    transaction: Option<tokio::sync::Mutex<()>>,
    dead_letter_topic: Option<String>,
    metrics: Arc<SourceMetrics>,
}

/// Input a source could not turn into a record, for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedInput {
    /// The input as it was (a line of a file, say).
    pub value: Vec<u8>,
    /// Why it was rejected (the `millrace.error` header).
    pub reason: String,
    /// Where it came from, e.g. `events.jsonl:1234` (the `millrace.source` header).
    pub origin: String,
}

impl SourceContext {
    /// Connects the producer: acks=all, idempotent (a retried batch is not written twice)
    /// where the broker supports it; on a broker without InitProducerId the producer warns
    /// and goes on without idempotence.
    ///
    /// With `transactional_id` the producer is transactional (see the module documentation);
    /// connecting fences an older producer with the same id and aborts what it left open.
    pub async fn connect(
        name: impl Into<String>,
        client: ClientConfig,
        dead_letter_topic: Option<String>,
        metrics: Arc<SourceMetrics>,
        transactional_id: Option<String>,
    ) -> Result<Self> {
        let mut config = ProducerConfig::builder(client).acks(Acks::All);
        if let Some(id) = &transactional_id {
            config = config.transactional_id(id.clone());
        }
        let config = config.build()?;
        Ok(SourceContext {
            inner: Arc::new(Inner {
                name: name.into(),
                producer: Producer::connect(config).await?,
                transaction: transactional_id.map(|_| tokio::sync::Mutex::new(())),
                dead_letter_topic,
                metrics,
            }),
        })
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The connector's counters.
    pub fn metrics(&self) -> &Arc<SourceMetrics> {
        &self.inner.metrics
    }

    /// Produces `records` and waits until every one is acknowledged by all in-sync replicas;
    /// returns where each was written, in order. On an error some records may have been
    /// written and others not: the caller must not record its position past them.
    pub async fn send(&self, records: Vec<ProducerRecord>) -> Result<Vec<RecordMetadata>> {
        let bytes: u64 = records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
            .sum();
        let count = records.len() as u64;
        let result = self.send_all(records).await;
        match &result {
            Ok(_) => self.inner.metrics.add_batch(count, bytes),
            Err(_) => self.inner.metrics.add_error(),
        }
        result
    }

    async fn send_all(&self, records: Vec<ProducerRecord>) -> Result<Vec<RecordMetadata>> {
        let Some(transaction) = &self.inner.transaction else {
            return self.send_and_wait(records).await;
        };
        let _turn = transaction.lock().await;
        let producer = &self.inner.producer;
        producer.begin_transaction()?;
        let sent = self.send_and_wait(records).await;
        let ended = match &sent {
            Ok(_) => producer.commit_transaction().await,
            Err(_) => Err(millrace_client::ClientError::TransactionState(
                "a record of the transaction failed".into(),
            )),
        };
        if let Err(error) = ended {
            // Nothing of it is committed; a producer fenced meanwhile cannot even abort
            // (its successor's initialisation did).
            if let Err(abort) = producer.abort_transaction().await {
                tracing::warn!(connector = %self.inner.name, %abort, "aborting a transaction");
            }
            return Err(match sent {
                Err(send_error) => send_error,
                Ok(_) => error.into(),
            });
        }
        sent
    }

    /// Hands every record to the producer (so that it batches), then awaits every ack.
    async fn send_and_wait(&self, records: Vec<ProducerRecord>) -> Result<Vec<RecordMetadata>> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            deliveries.push(self.inner.producer.send(record).await?);
        }
        let mut written = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            written.push(delivery.await?);
        }
        Ok(written)
    }

    /// Sends rejected input to the dead-letter topic (acks=all, awaited), or logs it when the
    /// connector has none. Either way it is counted.
    pub async fn reject(&self, rejected: Vec<RejectedInput>) -> Result<()> {
        if rejected.is_empty() {
            return Ok(());
        }
        self.inner.metrics.add_rejected(rejected.len() as u64);
        let Some(topic) = &self.inner.dead_letter_topic else {
            for r in &rejected {
                tracing::warn!(
                    connector = %self.inner.name,
                    origin = %r.origin,
                    reason = %r.reason,
                    "input skipped (no dead-letter topic configured)"
                );
            }
            return Ok(());
        };
        let records = rejected
            .into_iter()
            .map(|r| {
                ProducerRecord::new(topic.clone(), r.value)
                    .header(ERROR_HEADER, r.reason.into_bytes())
                    .header(SOURCE_HEADER, r.origin.into_bytes())
            })
            .collect();
        self.send_all(records).await?;
        Ok(())
    }

    /// Flushes and closes the producer.
    pub async fn close(&self) {
        self.inner.producer.close().await;
    }
}

/// Connects a [`SourceContext`] and runs `source` on it until `shutdown` is triggered or the
/// source fails (counted in `metrics.errors`); the producer is flushed and closed either way.
pub async fn run_source<S: super::Source>(
    source: S,
    name: String,
    client: ClientConfig,
    dead_letter_topic: Option<String>,
    metrics: Arc<SourceMetrics>,
    transactional_id: Option<String>,
    shutdown: super::Shutdown,
) -> Result<()> {
    let ctx = SourceContext::connect(
        name,
        client,
        dead_letter_topic,
        metrics.clone(),
        transactional_id,
    )
    .await?;
    let result = source.run(ctx.clone(), shutdown).await;
    ctx.close().await;
    if result.is_err() {
        metrics.add_error();
    }
    result
}

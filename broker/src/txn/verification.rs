//! KIP-890's server-side defence: before the first transactional write of a producer to a
//! partition, the partition leader asks the transaction coordinator whether the partition is
//! in the producer's open transaction (AddPartitionsToTxn v4, verify-only). A write that is
//! not is refused, so a late or stray record can never open a transaction the coordinator
//! does not know of (a hanging transaction that would pin the last stable offset forever).
//!
//! Once a partition holds the producer's open transaction at its epoch, later writes of that
//! transaction need no question: the first one was verified.
//!
//! On transaction version 2 (Produce v12, TxnOffsetCommit v5) the producer does not add
//! partitions itself: the leader's question becomes "add it" (AddPartitionsToTxn v5 without
//! `verify_only`), so the first write to a partition brings it into the transaction.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId};

use super::coordinator::{Refusal, TRANSACTION_STATE_TOPIC};
use crate::api::metadata::client_endpoint;
use crate::api::str_bytes;
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};

const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a partition leader asks the transaction coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Is the partition in the open transaction? (transaction version 1)
    InTransaction,
    /// Add the partition to the transaction (transaction version 2).
    AddToTransaction,
}

/// Asks the coordinator of `transactional_id` whether each partition is in the open
/// transaction of `(producer_id, producer_epoch)` (or to add it); one answer per partition,
/// `None` for yes.
pub async fn verify_partitions(
    broker: &Arc<Broker>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
    question: Verification,
) -> Vec<Option<Refusal>> {
    if partitions.is_empty() {
        return Vec::new();
    }
    let all = |refusal: Refusal| vec![Some(refusal); partitions.len()];
    let Some(topic) = broker.controller.topic(TRANSACTION_STATE_TOPIC) else {
        return all((
            ResponseError::InvalidTxnState,
            "no transaction coordinator exists yet".into(),
        ));
    };
    let partition = broker
        .transactions
        .partition_of(transactional_id, topic.partitions);
    let leader = topic.partition(partition).map_or(-1, |p| p.leader);
    if leader == broker.replicas.local_id() {
        if question == Verification::AddToTransaction {
            let added = broker
                .transactions
                .add_partitions(
                    broker,
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    partitions,
                    2,
                )
                .await;
            return vec![added.err(); partitions.len()];
        }
        return broker.transactions.verify(
            broker,
            transactional_id,
            producer_id,
            producer_epoch,
            partitions,
        );
    }
    match verify_remote(
        broker,
        leader,
        transactional_id,
        producer_id,
        producer_epoch,
        partitions,
        question,
    )
    .await
    {
        Ok(answers) => answers,
        // The coordinator cannot be asked: refuse with a retriable error.
        Err(message) => all((ResponseError::NotEnoughReplicas, message)),
    }
}

async fn verify_remote(
    broker: &Broker,
    leader: i32,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
    question: Verification,
) -> Result<Vec<Option<Refusal>>, String> {
    // Over the inter-broker listener, as Kafka's brokers do (which is PLAINTEXT: security on
    // broker-to-broker connections is not built yet, see config/cluster.rs).
    let address = broker
        .controller
        .with_image(|i| {
            i.broker(leader)
                .and_then(|b| client_endpoint(b, &broker.config.inter_broker_listener_name))
                .map(|e| format!("{}:{}", e.host, e.port))
        })
        .or_else(|| broker.replicas.broker_address(leader))
        .ok_or_else(|| format!("no address for the coordinator {leader}"))?;
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (topic, partition) in partitions {
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(*partition),
            None => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(str_bytes(topic.clone())))
                    .with_partitions(vec![*partition]),
            ),
        }
    }
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(str_bytes(transactional_id)))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_verify_only(question == Verification::InTransaction)
            .with_topics(topics),
    ]);
    let client_id = format!("txn-verification-{}", broker.replicas.local_id());
    // v5 says the producer is on transaction version 2.
    let version = match question {
        Verification::InTransaction => 4,
        Verification::AddToTransaction => 5,
    };
    let response = broker
        .transactions
        .channels
        .call(&address, &client_id, version, &request, VERIFY_TIMEOUT)
        .await?;
    if let Some(error) = ResponseError::try_from_code(response.error_code) {
        return Ok(vec![
            Some((error, "the coordinator refused".into()));
            partitions.len()
        ]);
    }
    let result = response.results_by_transaction.first();
    Ok(partitions
        .iter()
        .map(|(topic, partition)| {
            let code = result
                .and_then(|r| r.topic_results.iter().find(|t| t.name.0.as_str() == topic))
                .and_then(|t| {
                    t.results_by_partition
                        .iter()
                        .find(|p| p.partition_index == *partition)
                })
                .map_or(ResponseError::InvalidTxnState.code(), |p| {
                    p.partition_error_code
                });
            (code != NONE).then(|| {
                (
                    ResponseError::try_from_code(code).unwrap_or(ResponseError::InvalidTxnState),
                    format!("the coordinator did not verify {topic}-{partition}"),
                )
            })
        })
        .collect())
}

/// The partitions of a produce request whose transactional records may not be written, with
/// why: records of a producer whose transaction there was not verified by the coordinator
/// (or, at `version` 12 and later, that it would not add), or transactional records without
/// a transactional id. Partitions already holding the producer's open transaction at its
/// epoch need no question, and those the request may not write (`writable` false: refused
/// for another reason) get none.
pub async fn verify_produce(
    broker: &Arc<Broker>,
    request: &kafka_protocol::messages::ProduceRequest,
    version: i16,
    writable: impl Fn(&str, i32) -> bool,
) -> std::collections::HashMap<(String, i32), Refusal> {
    let question = if version >= 12 {
        Verification::AddToTransaction
    } else {
        Verification::InTransaction
    };
    let mut refused = std::collections::HashMap::new();
    // (partition, producer id, epoch) of first batches that are transactional and unverified.
    let mut unverified: Vec<((String, i32), i64, i16)> = Vec::new();
    for topic in &request.topic_data {
        for data in &topic.partition_data {
            let Some((pid, epoch)) = data
                .records
                .as_deref()
                .and_then(crate::log::transactional_producer)
            else {
                continue;
            };
            let key = (topic.name.0.to_string(), data.index);
            if !writable(&key.0, key.1) {
                continue; // refused for another reason; never asked about, never added
            }
            if request.transactional_id.is_none() {
                refused.insert(
                    key,
                    (
                        ResponseError::InvalidTxnState,
                        "transactional records need a transactional id".to_string(),
                    ),
                );
                continue;
            }
            let open = broker
                .replicas
                .partition(&key.0, key.1)
                .is_some_and(|log| log.has_open_txn(pid, epoch));
            if !open {
                unverified.push((key, pid, epoch));
            }
        }
    }
    let Some(transactional_id) = request.transactional_id.as_ref() else {
        return refused;
    };
    // One producer per request in practice; group by it anyway.
    let mut producers: Vec<(i64, i16)> = unverified.iter().map(|(_, p, e)| (*p, *e)).collect();
    producers.sort_unstable();
    producers.dedup();
    for (pid, epoch) in producers {
        let partitions: Vec<(String, i32)> = unverified
            .iter()
            .filter(|(_, p, e)| (*p, *e) == (pid, epoch))
            .map(|(k, _, _)| k.clone())
            .collect();
        let answers = verify_partitions(
            broker,
            &transactional_id.0,
            pid,
            epoch,
            &partitions,
            question,
        )
        .await;
        for (key, answer) in partitions.into_iter().zip(answers) {
            if let Some((error, message)) = answer {
                // A fenced producer learns it the way Kafka tells produce requests.
                let error = match error {
                    ResponseError::ProducerFenced | ResponseError::InvalidProducerIdMapping => {
                        ResponseError::InvalidProducerEpoch
                    }
                    // The coordinator could not answer (moving, loading, unreachable): a
                    // retriable error, as Kafka answers, so the producer tries again.
                    ResponseError::NotEnoughReplicas
                    | ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::CoordinatorLoadInProgress
                    // The previous transaction is still writing its markers.
                    | ResponseError::ConcurrentTransactions => ResponseError::NotEnoughReplicas,
                    _ => ResponseError::InvalidTxnState,
                };
                refused.insert(key, (error, message));
            }
        }
    }
    refused
}

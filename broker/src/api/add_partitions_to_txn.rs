//! AddPartitionsToTxn: partitions join a producer's transaction (v0-3, from clients), or,
//! v4+ with `verify_only`, a partition leader asks whether they are in it (KIP-890); v5
//! without it, a partition leader adds them for a producer on transaction version 2.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName};

use super::access::Access;
use super::{RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers an AddPartitionsToTxn request.
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: AddPartitionsToTxnRequest = ctx.decode(&mut body)?;
    let response = AddPartitionsToTxnResponse::default().with_throttle_time_ms(0);
    let access = Access::new(broker, ctx);
    let response = if ctx.version <= 3 {
        let results = add(
            broker,
            Some(&access),
            &request.v3_and_below_transactional_id.0,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            &request.v3_and_below_topics,
            Some(0),
        )
        .await;
        response.with_results_by_topic_v3_and_below(results)
    } else if !access.authorize(AclOperation::ClusterAction, Resource::cluster()) {
        // v4+ batches come from brokers verifying transactional produce (KIP-890).
        response.with_error_code(ResponseError::ClusterAuthorizationFailed.code())
    } else {
        let mut results = Vec::with_capacity(request.transactions.len());
        for txn in &request.transactions {
            let topics = add(
                broker,
                None,
                &txn.transactional_id.0,
                txn.producer_id.0,
                txn.producer_epoch,
                &txn.topics,
                // v5 adds for a producer on transaction version 2.
                (!txn.verify_only).then_some(if ctx.version >= 5 { 2 } else { 0 }),
            )
            .await;
            results.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(txn.transactional_id.clone())
                    .with_topic_results(topics),
            );
        }
        response
            .with_error_code(NONE)
            .with_results_by_transaction(results)
    };
    ctx.respond(&response)
}

/// Adds (or verifies) one transaction's partitions; per-partition results. A client's request
/// (`access` given) needs WRITE on the transactional id and on each topic. `add`: the client
/// transaction version to add them for, `None` to only verify.
async fn add(
    broker: &Arc<Broker>,
    access: Option<&Access<'_>>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    add: Option<i16>,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut wanted: Vec<(TopicName, i32)> = Vec::new();
    for topic in topics {
        for &p in &topic.partitions {
            wanted.push((topic.name.clone(), p));
        }
    }
    // Unknown partitions fail alone; the others are then not attempted, as in Kafka.
    let unknown: Vec<bool> = wanted
        .iter()
        .map(|(name, p)| {
            broker
                .controller
                .topic(name)
                .is_none_or(|t| *p < 0 || *p >= t.partitions)
        })
        .collect();
    let partitions: Vec<(String, i32)> =
        wanted.iter().map(|(n, p)| (n.0.to_string(), *p)).collect();
    let txn_denied = access.is_some_and(|a| {
        !a.authorize(
            AclOperation::Write,
            Resource::transactional_id(transactional_id),
        )
    });
    let topic_denied: Vec<bool> = wanted
        .iter()
        .map(|(name, _)| {
            access.is_some_and(|a| !a.authorize(AclOperation::Write, Resource::topic(name)))
        })
        .collect();
    let errors: Vec<i16> = if txn_denied {
        vec![ResponseError::TransactionalIdAuthorizationFailed.code(); wanted.len()]
    } else if topic_denied.iter().any(|d| *d) {
        topic_denied
            .iter()
            .map(|&d| {
                if d {
                    ResponseError::TopicAuthorizationFailed.code()
                } else {
                    ResponseError::OperationNotAttempted.code()
                }
            })
            .collect()
    } else if unknown.iter().any(|u| *u) {
        unknown
            .iter()
            .map(|&u| {
                if u {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    ResponseError::OperationNotAttempted.code()
                }
            })
            .collect()
    } else if let Some(client_transaction_version) = add {
        let code = match broker
            .transactions
            .add_partitions(
                broker,
                transactional_id,
                producer_id,
                producer_epoch,
                &partitions,
                client_transaction_version,
            )
            .await
        {
            Ok(()) => NONE,
            Err((error, message)) => {
                tracing::debug!(transactional_id, %error, %message, "AddPartitionsToTxn refused");
                error.code()
            }
        };
        vec![code; partitions.len()]
    } else {
        broker
            .transactions
            .verify(
                broker,
                transactional_id,
                producer_id,
                producer_epoch,
                &partitions,
            )
            .into_iter()
            .map(|r| r.map_or(NONE, |(e, _)| e.code()))
            .collect()
    };
    let mut results: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((name, p), code) in wanted.into_iter().zip(errors) {
        let result = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(p)
            .with_partition_error_code(code);
        match results.iter_mut().find(|r| r.name == name) {
            Some(r) => r.results_by_partition.push(result),
            None => results.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(name)
                    .with_results_by_partition(vec![result]),
            ),
        }
    }
    results
}

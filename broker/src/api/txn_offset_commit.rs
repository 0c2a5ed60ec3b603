//! TxnOffsetCommit: a transaction's consumed offsets, visible to the group only when the
//! transaction commits (see `group/txn_offsets.rs`).

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::access::Access;
use super::{now_ms, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::group::txn_offsets::store_txn_offsets;
use crate::group::{GroupError, OFFSETS_TOPIC};
use crate::security::authorizer::{AclOperation, Resource};
use crate::txn::verification::{verify_partitions, Verification};

/// Answers a TxnOffsetCommit request.
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: TxnOffsetCommitRequest = ctx.decode(&mut body)?;
    let group_id = request.group_id.0.to_string();
    let transactional_id = request.transactional_id.0.to_string();
    let (pid, epoch) = (request.producer_id.0, request.producer_epoch);
    // WRITE on the transactional id and READ on the group refuse the whole request; READ on
    // each topic refuses that topic's partitions, and the others are not attempted.
    let access = Access::new(broker, ctx);
    let refused_all = if !access.authorize(
        AclOperation::Write,
        Resource::transactional_id(&transactional_id),
    ) {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !access.authorize(AclOperation::Read, Resource::group(&group_id)) {
        Some(ResponseError::GroupAuthorizationFailed)
    } else {
        None
    };
    let denied_topics: Vec<String> = request
        .topics
        .iter()
        .filter(|t| {
            refused_all.is_none() && !access.authorize(AclOperation::Read, Resource::topic(&t.name))
        })
        .map(|t| t.name.0.to_string())
        .collect();
    drop(access);
    if refused_all.is_some() || !denied_topics.is_empty() {
        let topics = request
            .topics
            .iter()
            .map(|topic| {
                let code = match refused_all {
                    Some(error) => error,
                    None if denied_topics.contains(&topic.name.0.to_string()) => {
                        ResponseError::TopicAuthorizationFailed
                    }
                    None => ResponseError::OperationNotAttempted,
                };
                TxnOffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(
                        topic
                            .partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code.code())
                            })
                            .collect(),
                    )
            })
            .collect();
        return ctx.respond(
            &TxnOffsetCommitResponse::default()
                .with_throttle_time_ms(0)
                .with_topics(topics),
        );
    }

    let mut to_store = Vec::new();
    let mut unknown = Vec::new();
    for topic in &request.topics {
        let partitions = broker.controller.topic(&topic.name).map(|t| t.partitions);
        for p in &topic.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let unknown_partition =
                partitions.is_none_or(|n| p.partition_index < 0 || p.partition_index >= n);
            // Kafka answers an oversized metadata string per partition; so does this, with
            // the closest code a client treats as final for that partition.
            if unknown_partition || metadata.len() > broker.config.offset_metadata_max_bytes {
                unknown.push((topic.name.0.to_string(), p.partition_index));
            } else {
                to_store.push((
                    (topic.name.0.to_string(), p.partition_index),
                    Some((p.committed_offset, p.committed_leader_epoch, metadata)),
                ));
            }
        }
    }

    // The group's offsets partition must be in the producer's transaction (AddOffsetsToTxn).
    let outcome: Result<(), ResponseError> = async {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        // KIP-447: a producer naming its consumer's generation is fenced by a rebalance, like
        // an OffsetCommit; without one (v0-2, or generation -1) the transaction alone counts.
        if ctx.version >= 3 && request.generation_id >= 0 {
            broker
                .groups
                .check_commit(
                    &group_id,
                    request.generation_id,
                    &request.member_id,
                    request.group_instance_id.as_deref(),
                )
                .map_err(ResponseError::from)?;
        }
        let partitions = broker.offsets.ensure_topic().await.map_err(ResponseError::from)?;
        broker
            .offsets
            .offsets_replica(&group_id)
            .map_err(ResponseError::from)?;
        let partition = broker.offsets.partition_of(&group_id, partitions);
        let verified = verify_partitions(
            broker,
            &transactional_id,
            pid,
            epoch,
            &[(OFFSETS_TOPIC.to_string(), partition)],
            // v5 (transaction version 2): the offsets join the transaction here, without
            // AddOffsetsToTxn.
            if ctx.version >= 5 {
                Verification::AddToTransaction
            } else {
                Verification::InTransaction
            },
        )
        .await;
        if let Some(Some((error, message))) = verified.into_iter().next() {
            tracing::debug!(%transactional_id, %group_id, %error, %message, "TxnOffsetCommit not in the transaction");
            return Err(match error {
                ResponseError::ProducerFenced | ResponseError::InvalidProducerIdMapping => {
                    ResponseError::InvalidProducerEpoch
                }
                // The transaction coordinator could not answer: retriable, not this group's
                // coordinator's fault (which NOT_COORDINATOR would send the client to find).
                ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::NotEnoughReplicas => ResponseError::CoordinatorLoadInProgress,
                other => other,
            });
        }
        store_txn_offsets(&broker.offsets, &group_id, pid, epoch, to_store.clone(), now_ms())
            .await
            .map_err(|e: GroupError| ResponseError::from(e))
    }
    .await;

    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
    for topic in &request.topics {
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let key = (topic.name.0.to_string(), p.partition_index);
                let code = if unknown.contains(&key) {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    outcome.as_ref().err().map_or(NONE, |e| e.code())
                };
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
            })
            .collect();
        topics.push(
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    ctx.respond(
        &TxnOffsetCommitResponse::default()
            .with_throttle_time_ms(0)
            .with_topics(topics),
    )
}

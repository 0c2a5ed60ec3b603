//! OffsetCommit: validate membership, write the offsets to `__consumer_offsets`, answer once
//! fsynced.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::access::Access;
use super::{now_ms, Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError};
use crate::security::authorizer::{AclOperation, Resource};

/// Handles an OffsetCommit request.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Reply, RequestError> {
    let request: OffsetCommitRequest = ctx.decode(&mut body)?;
    let group_id = request.group_id.0.to_string();
    let access = Access::new(broker, ctx);
    let membership = if access.authorize(AclOperation::Read, Resource::group(&group_id)) {
        broker
            .groups
            .check_commit(
                &group_id,
                request.generation_id_or_member_epoch,
                &request.member_id,
                request.group_instance_id.as_deref(),
            )
            .map_err(ResponseError::from)
    } else {
        Err(ResponseError::GroupAuthorizationFailed)
    };

    // Per topic, per partition: Ok(value to store) or Err(why not).
    type Decision = Result<(i64, i32, String), ResponseError>;
    let mut decisions: Vec<(kafka_protocol::messages::TopicName, Vec<(i32, Decision)>)> =
        Vec::new();
    let mut to_store = Vec::new();
    for topic in &request.topics {
        let partitions = broker.controller.topic(&topic.name).map(|t| t.partitions);
        let topic_allowed = membership.is_err()
            || access.authorize(AclOperation::Read, Resource::topic(&topic.name));
        let mut list = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let decision = match &membership {
                Err(error) => Err(*error),
                Ok(()) if !topic_allowed => Err(ResponseError::TopicAuthorizationFailed),
                Ok(())
                    if partitions
                        .is_none_or(|n| p.partition_index < 0 || p.partition_index >= n) =>
                {
                    Err(ResponseError::UnknownTopicOrPartition)
                }
                Ok(()) if metadata.len() > broker.config.offset_metadata_max_bytes => {
                    Err(ResponseError::OffsetMetadataTooLarge)
                }
                Ok(()) => {
                    let value = (p.committed_offset, p.committed_leader_epoch, metadata);
                    to_store.push((
                        (topic.name.0.to_string(), p.partition_index),
                        Some(value.clone()),
                    ));
                    Ok(value)
                }
            };
            list.push((p.partition_index, decision));
        }
        decisions.push((topic.name.clone(), list));
    }

    let broker = broker.clone();
    let ctx = ctx.clone();
    Ok(Reply::Later(Box::pin(async move {
        let stored = broker
            .offsets
            .store(&broker.groups, &group_id, to_store, now_ms())
            .await;
        let topics = decisions
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(index, decision)| {
                        let error = match (&decision, &stored) {
                            (Err(error), _) => Some(*error),
                            (Ok(_), Err(error)) => Some((*error).into()),
                            (Ok(_), Ok(())) => None,
                        };
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(index)
                            .with_error_code(error_code(error))
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect();
        let response = OffsetCommitResponse::default()
            .with_throttle_time_ms(0)
            .with_topics(topics);
        match ctx.respond(&response) {
            Ok(frame) => Some(frame),
            Err(error) => {
                tracing::error!(%error, "cannot encode OffsetCommit response");
                None
            }
        }
    })))
}

//! OffsetDelete: remove committed offsets of topics the group no longer consumes.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::access::Access;
use super::{now_ms, Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError};
use crate::group::GroupError;
use crate::security::authorizer::{AclOperation, Resource};

/// Handles an OffsetDelete request.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Reply, RequestError> {
    let request: OffsetDeleteRequest = ctx.decode(&mut body)?;
    let group_id = request.group_id.0.to_string();
    let access = Access::new(broker, ctx);
    if !access.authorize(AclOperation::Delete, Resource::group(&group_id)) {
        let response = OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
        return ctx.respond(&response).map(Reply::Now);
    }
    // A group-level refusal (no such group) answers the whole request.
    let mut group_error: Option<GroupError> = None;
    let mut decisions = Vec::new();
    let mut tombstones = Vec::new();
    for topic in &request.topics {
        let subscribed = broker.groups.subscribed_to(&group_id, &topic.name);
        let partitions = broker.controller.topic(&topic.name).map(|t| t.partitions);
        let topic_allowed = access.authorize(AclOperation::Read, Resource::topic(&topic.name));
        let mut list = Vec::new();
        for p in &topic.partitions {
            let error: Option<ResponseError> = match subscribed {
                Err(error) => {
                    group_error = Some(error);
                    Some(error.into())
                }
                Ok(_) if !topic_allowed => Some(ResponseError::TopicAuthorizationFailed),
                Ok(true) => Some(GroupError::GroupSubscribedToTopic.into()),
                Ok(false) if partitions.is_none_or(|n| p.partition_index >= n) => {
                    Some(ResponseError::UnknownTopicOrPartition)
                }
                Ok(false) => {
                    tombstones.push(((topic.name.0.to_string(), p.partition_index), None));
                    None
                }
            };
            list.push((p.partition_index, error));
        }
        decisions.push((topic.name.clone(), list));
    }
    let broker = broker.clone();
    let ctx = ctx.clone();
    Ok(Reply::Later(Box::pin(async move {
        let stored = if group_error.is_none() {
            broker
                .offsets
                .store(&broker.groups, &group_id, tombstones, now_ms())
                .await
        } else {
            Ok(())
        };
        let response = OffsetDeleteResponse::default()
            .with_throttle_time_ms(0)
            .with_error_code(error_code(group_error.or(stored.err())))
            .with_topics(if group_error.is_some() {
                Vec::new()
            } else {
                decisions
                    .into_iter()
                    .map(|(name, list)| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(name)
                            .with_partitions(
                                list.into_iter()
                                    .map(|(index, error)| {
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(index)
                                            .with_error_code(error_code(error))
                                    })
                                    .collect(),
                            )
                    })
                    .collect()
            });
        ctx.respond(&response).ok()
    })))
}

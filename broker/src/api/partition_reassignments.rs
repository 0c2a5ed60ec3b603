//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455): move a partition's
//! replicas to other brokers. The active controller adds the new replicas, which catch up as
//! followers; once they are all in sync the old ones are removed (and a removed leader hands
//! over in a new epoch).

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::metadata::controller::partitions::ReassignmentError;
use crate::security::authorizer::{AclOperation, Resource};

/// Answers an AlterPartitionReassignments request.
pub async fn alter(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: AlterPartitionReassignmentsRequest = ctx.decode(&mut body)?;
    if !Access::new(broker, ctx).authorize(AclOperation::Alter, Resource::cluster()) {
        return ctx.respond(
            &AlterPartitionReassignmentsResponse::default()
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                .with_error_message(Some(str_bytes(
                    "reassigning partitions needs ALTER on the cluster",
                ))),
        );
    }
    let moves: Vec<(String, i32, Option<Vec<i32>>)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                )
            })
        })
        .collect();
    let response = AlterPartitionReassignmentsResponse::default().with_throttle_time_ms(0);
    let response = match broker.controller.reassign(moves).await {
        Ok(results) => {
            let mut by_topic: BTreeMap<String, Vec<ReassignablePartitionResponse>> =
                BTreeMap::new();
            for (topic, partition, refusal) in results {
                let (code, message) = match refusal {
                    None => (NONE, None),
                    Some(ReassignmentError::UnknownPartition) => {
                        (ResponseError::UnknownTopicOrPartition.code(), None)
                    }
                    Some(ReassignmentError::InvalidAssignment(why)) => {
                        (ResponseError::InvalidReplicaAssignment.code(), Some(why))
                    }
                    Some(ReassignmentError::NoReassignmentInProgress) => {
                        (ResponseError::NoReassignmentInProgress.code(), None)
                    }
                };
                by_topic.entry(topic).or_default().push(
                    ReassignablePartitionResponse::default()
                        .with_partition_index(partition)
                        .with_error_code(code)
                        .with_error_message(message.map(str_bytes)),
                );
            }
            response.with_error_code(NONE).with_responses(
                by_topic
                    .into_iter()
                    .map(|(name, partitions)| {
                        ReassignableTopicResponse::default()
                            .with_name(TopicName(str_bytes(name)))
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
        }
        Err(error) => response
            .with_error_code(ResponseError::from(&error).code())
            .with_error_message(Some(str_bytes(error.to_string()))),
    };
    ctx.respond(&response)
}

/// Answers a ListPartitionReassignments request from the metadata.
pub fn list(broker: &Broker, ctx: &RequestContext, mut body: Bytes) -> Result<Bytes, RequestError> {
    let request: ListPartitionReassignmentsRequest = ctx.decode(&mut body)?;
    if !Access::new(broker, ctx).authorize(AclOperation::Describe, Resource::cluster()) {
        return ctx.respond(
            &ListPartitionReassignmentsResponse::default()
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                .with_error_message(Some(str_bytes(
                    "listing reassignments needs DESCRIBE on the cluster",
                ))),
        );
    }
    let wanted: Option<BTreeMap<String, Vec<i32>>> = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let ids = |brokers: &[i32]| brokers.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let topics = broker.controller.with_image(|image| {
        image
            .topics()
            .filter_map(|topic| {
                let only = match &wanted {
                    Some(w) => Some(w.get(&topic.name)?),
                    None => None,
                };
                let partitions: Vec<OngoingPartitionReassignment> = topic
                    .partition_states
                    .iter()
                    .filter(|(index, _)| only.is_none_or(|o| o.contains(index)))
                    .filter(|(_, s)| {
                        !s.adding_replicas.is_empty() || !s.removing_replicas.is_empty()
                    })
                    .map(|(index, s)| {
                        OngoingPartitionReassignment::default()
                            .with_partition_index(*index)
                            .with_replicas(ids(&s.replicas))
                            .with_adding_replicas(ids(&s.adding_replicas))
                            .with_removing_replicas(ids(&s.removing_replicas))
                    })
                    .collect();
                (!partitions.is_empty()).then(|| {
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(str_bytes(topic.name.clone())))
                        .with_partitions(partitions)
                })
            })
            .collect::<Vec<_>>()
    });
    ctx.respond(
        &ListPartitionReassignmentsResponse::default()
            .with_throttle_time_ms(0)
            .with_error_code(NONE)
            .with_topics(topics),
    )
}

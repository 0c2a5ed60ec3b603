//! ElectLeaders: preferred-leader elections (the first assigned replica leads again when it is
//! in sync), decided by the active controller. Unclean elections are refused: they could elect
//! a replica without every acknowledged record.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::metadata::controller::partitions::ElectionOutcome;
use crate::security::authorizer::{AclOperation, Resource};

/// Kafka's election types.
const PREFERRED: i8 = 0;

/// Answers an ElectLeaders request.
pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: ElectLeadersRequest = ctx.decode(&mut body)?;
    // The election type exists from v1; v0 is always preferred.
    let election_type = if ctx.version >= 1 {
        request.election_type
    } else {
        PREFERRED
    };
    let wanted: Option<Vec<(String, i32)>> = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect()
    });
    let response = ElectLeadersResponse::default().with_throttle_time_ms(0);
    if !Access::new(broker, ctx).authorize(AclOperation::Alter, Resource::cluster()) {
        let results = per_topic(wanted.unwrap_or_default().into_iter().map(|(t, p)| {
            (
                t,
                p,
                ResponseError::ClusterAuthorizationFailed.code(),
                Some("electing leaders needs ALTER on the cluster".to_string()),
            )
        }));
        return ctx.respond(
            &response
                .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                .with_replica_election_results(results),
        );
    }
    if election_type != PREFERRED {
        let results = per_topic(wanted.unwrap_or_default().into_iter().map(|(t, p)| {
            (
                t,
                p,
                ResponseError::InvalidRequest.code(),
                Some("unclean leader elections are not supported: they can lose acknowledged records".to_string()),
            )
        }));
        return ctx.respond(
            &response
                .with_error_code(NONE)
                .with_replica_election_results(results),
        );
    }
    let response = match broker.controller.elect_preferred_leaders(wanted).await {
        Ok(outcomes) => {
            let results = per_topic(outcomes.into_iter().map(|(topic, partition, outcome)| {
                let (code, message) = match outcome {
                    ElectionOutcome::Elected => (NONE, None),
                    ElectionOutcome::NotNeeded => (
                        ResponseError::ElectionNotNeeded.code(),
                        Some("the preferred replica already leads".to_string()),
                    ),
                    ElectionOutcome::PreferredNotAvailable => (
                        ResponseError::PreferredLeaderNotAvailable.code(),
                        Some("the preferred replica is fenced or not in sync".to_string()),
                    ),
                    ElectionOutcome::UnknownPartition => {
                        (ResponseError::UnknownTopicOrPartition.code(), None)
                    }
                };
                (topic, partition, code, message)
            }));
            response
                .with_error_code(NONE)
                .with_replica_election_results(results)
        }
        Err(error) => response.with_error_code(ResponseError::from(&error).code()),
    };
    ctx.respond(&response)
}

/// Groups per-partition results by topic, as the response wants them.
fn per_topic(
    results: impl Iterator<Item = (String, i32, i16, Option<String>)>,
) -> Vec<ReplicaElectionResult> {
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition, code, message) in results {
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(code)
                .with_error_message(message.map(str_bytes)),
        );
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(str_bytes(topic)))
                .with_partition_result(partitions)
        })
        .collect()
}

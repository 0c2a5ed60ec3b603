//! OffsetForLeaderEpoch (KIP-101, KIP-320): where a leader epoch ends on this partition's
//! leader, from its leader-epoch cache. Consumers use it after a leader change to tell whether
//! the log they read was truncated; followers (replica id >= 0) could use it instead of Fetch's
//! DivergingEpoch.

use bytes::Bytes;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::access::Access;
use super::{RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// Answers an OffsetForLeaderEpoch request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: OffsetForLeaderEpochRequest = ctx.decode(&mut body)?;
    // Followers (replica id >= 0, v3+) need CLUSTER_ACTION; clients DESCRIBE on the topic.
    let access = Access::new(broker, ctx);
    let follower = ctx.version >= 3 && request.replica_id.0 >= 0;
    let cluster_action =
        follower && access.authorize(AclOperation::ClusterAction, Resource::cluster());
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let allowed = if follower {
                cluster_action
            } else {
                access.authorize(AclOperation::Describe, Resource::topic(&topic.topic))
            };
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let answer = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    if !allowed {
                        return answer
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    let Some(replica) = broker.replicas.replica(&topic.topic, p.partition) else {
                        return answer
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    // The current leader epoch exists from v2.
                    let current = if ctx.version >= 2 {
                        p.current_leader_epoch
                    } else {
                        -1
                    };
                    if let Err((error, _)) = replica.check_leader(current) {
                        return answer.with_error_code(error.code());
                    }
                    let (epoch, end_offset) = replica.log().end_offset_for_epoch(p.leader_epoch);
                    answer
                        .with_error_code(NONE)
                        .with_leader_epoch(epoch)
                        .with_end_offset(end_offset)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    ctx.respond(
        &OffsetForLeaderEpochResponse::default()
            .with_throttle_time_ms(0)
            .with_topics(topics),
    )
}

//! OffsetFetch: committed offsets of one group (v1-7) or several (v8+).

use bytes::Bytes;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::access::Access;
use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, ResponseError, NONE};
use crate::group::CommittedOffset;
use crate::security::authorizer::{AclOperation, Resource};

/// Per topic: its name, whether the principal may DESCRIBE it, and per partition its committed
/// offset or the error it is answered with instead.
type Committed = Vec<(
    String,
    bool,
    Vec<(i32, Result<Option<CommittedOffset>, i16>)>,
)>;

/// Answers an OffsetFetch request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: OffsetFetchRequest = ctx.decode(&mut body)?;
    let access = Access::new(broker, ctx);
    // KIP-447 (v7+): a read_committed consumer asks for stable offsets only, so that it never
    // starts from an offset an open transaction is about to move past.
    let require_stable = request.require_stable;
    // Topics the principal may not DESCRIBE are left out of "all topics" and refused when
    // named.
    let lookup = |group: &str, topics: Option<Vec<(String, Vec<i32>)>>| -> Committed {
        let explicit = topics.is_some();
        let unstable = if require_stable {
            broker.offsets.txn_offsets.pending_partitions(group)
        } else {
            Default::default()
        };
        broker
            .groups
            .committed(group, topics.as_deref())
            .into_iter()
            .map(|(topic, partitions)| {
                let allowed = access.allowed(AclOperation::Describe, Resource::topic(&topic));
                let partitions = partitions
                    .into_iter()
                    .map(|(index, committed)| {
                        let outcome = if !allowed {
                            Err(ResponseError::TopicAuthorizationFailed.code())
                        } else if unstable.contains(&(topic.clone(), index)) {
                            Err(ResponseError::UnstableOffsetCommit.code())
                        } else {
                            Ok(committed)
                        };
                        (index, outcome)
                    })
                    .collect();
                (topic, allowed, partitions)
            })
            .filter(|(_, allowed, _)| *allowed || explicit)
            .collect()
    };
    let check_group = |group: &str| {
        if access.authorize(AclOperation::Describe, Resource::group(group)) {
            broker
                .groups
                .check_owned(group)
                .map_err(ResponseError::from)
        } else {
            Err(ResponseError::GroupAuthorizationFailed)
        }
    };
    let response = if ctx.version >= 8 {
        let groups = request
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let topics = lookup(&g.group_id, wanted)
                    .into_iter()
                    .map(|(topic, _, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(topic)))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|(index, outcome)| {
                                        let (offset, epoch, metadata, error) = unpack(outcome);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(index)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(str_bytes(metadata)))
                                            .with_error_code(error)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                let error = error_code(check_group(&g.group_id).err());
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(g.group_id.0.clone()))
                    .with_topics(if error == NONE { topics } else { Vec::new() })
                    .with_error_code(error)
            })
            .collect();
        OffsetFetchResponse::default().with_groups(groups)
    } else {
        let owned = check_group(&request.group_id);
        let wanted = request.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        let topics = lookup(&request.group_id, wanted)
            .into_iter()
            .map(|(topic, _, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, outcome)| {
                                let (offset, epoch, metadata, error) = unpack(outcome);
                                // A v1 client has only this error code to learn that the
                                // offsets are not (yet) known here.
                                let partition = OffsetFetchResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_committed_offset(offset)
                                    .with_metadata(Some(str_bytes(metadata)))
                                    .with_error_code(match owned {
                                        Err(error) => error.code(),
                                        Ok(()) => error,
                                    });
                                if ctx.version >= 5 {
                                    partition.with_committed_leader_epoch(epoch)
                                } else {
                                    partition
                                }
                            })
                            .collect(),
                    )
            })
            .collect();
        // The top-level error code exists from v2; a v1 client sees the offsets it asked for.
        if let (true, Err(error)) = (ctx.version >= 2, owned) {
            OffsetFetchResponse::default().with_error_code(error_code(Some(error)))
        } else {
            OffsetFetchResponse::default()
                .with_topics(topics)
                .with_error_code(NONE)
        }
    };
    ctx.respond(&response.with_throttle_time_ms(0))
}

/// A partition's answer as (offset, leader epoch, metadata, error code); nothing committed,
/// or an error, is offset -1.
fn unpack(outcome: Result<Option<CommittedOffset>, i16>) -> (i64, i32, String, i16) {
    match outcome {
        Ok(Some(c)) => (c.offset, c.leader_epoch, c.metadata, NONE),
        Ok(None) => (-1, -1, String::new(), NONE),
        Err(error) => (-1, -1, String::new(), error),
    }
}

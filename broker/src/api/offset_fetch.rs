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

/// Per topic: its name, whether the principal may DESCRIBE it, and its committed offsets.
type Committed = Vec<(String, bool, Vec<(i32, Option<CommittedOffset>)>)>;

/// Answers an OffsetFetch request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: OffsetFetchRequest = ctx.decode(&mut body)?;
    let access = Access::new(broker, ctx);
    // Topics the principal may not DESCRIBE are left out of "all topics" and refused when
    // named.
    let lookup = |group: &str, topics: Option<Vec<(String, Vec<i32>)>>| -> Committed {
        let explicit = topics.is_some();
        broker
            .groups
            .committed(group, topics.as_deref())
            .into_iter()
            .map(|(topic, partitions)| {
                let allowed = access.allowed(AclOperation::Describe, Resource::topic(&topic));
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
                    .map(|(topic, allowed, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(topic)))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|(index, c)| {
                                        let (offset, epoch, metadata) =
                                            unpack(c.filter(|_| allowed));
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(index)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(str_bytes(metadata)))
                                            .with_error_code(denied_code(allowed))
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
            .map(|(topic, allowed, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, c)| {
                                let (offset, epoch, metadata) = unpack(c.filter(|_| allowed));
                                // A v1 client has only this error code to learn that the
                                // offsets are not (yet) known here.
                                let partition = OffsetFetchResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_committed_offset(offset)
                                    .with_metadata(Some(str_bytes(metadata)))
                                    .with_error_code(match owned {
                                        Err(error) => error.code(),
                                        Ok(()) => denied_code(allowed),
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

/// NONE, or TOPIC_AUTHORIZATION_FAILED for a topic the principal may not DESCRIBE.
fn denied_code(allowed: bool) -> i16 {
    if allowed {
        NONE
    } else {
        ResponseError::TopicAuthorizationFailed.code()
    }
}

/// A committed offset as (offset, leader epoch, metadata); nothing committed is offset -1.
fn unpack(committed: Option<CommittedOffset>) -> (i64, i32, String) {
    match committed {
        Some(c) => (c.offset, c.leader_epoch, c.metadata),
        None => (-1, -1, String::new()),
    }
}

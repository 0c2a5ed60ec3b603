//! OffsetFetch: committed offsets of one group (v1-7) or several (v8+).

use bytes::Bytes;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{str_bytes, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{error_code, NONE};
use crate::group::CommittedOffset;

type Committed = crate::group::state::TopicOffsets;

/// Answers an OffsetFetch request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: OffsetFetchRequest = ctx.decode(&mut body)?;
    let lookup = |group: &str, topics: Option<Vec<(String, Vec<i32>)>>| -> Committed {
        broker.groups.committed(group, topics.as_deref())
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
                    .map(|(topic, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(topic)))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|(index, c)| {
                                        let (offset, epoch, metadata) = unpack(c);
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(index)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(str_bytes(metadata)))
                                            .with_error_code(NONE)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                let error = error_code(broker.groups.check_owned(&g.group_id).err());
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(g.group_id.0.clone()))
                    .with_topics(if error == NONE { topics } else { Vec::new() })
                    .with_error_code(error)
            })
            .collect();
        OffsetFetchResponse::default().with_groups(groups)
    } else {
        let owned = broker.groups.check_owned(&request.group_id);
        let wanted = request.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        let topics = lookup(&request.group_id, wanted)
            .into_iter()
            .map(|(topic, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, c)| {
                                let (offset, epoch, metadata) = unpack(c);
                                // A v1 client has only this error code to learn that the
                                // offsets are not (yet) known here.
                                let partition = OffsetFetchResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_committed_offset(offset)
                                    .with_metadata(Some(str_bytes(metadata)))
                                    .with_error_code(error_code(owned.err()));
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

/// A committed offset as (offset, leader epoch, metadata); nothing committed is offset -1.
fn unpack(committed: Option<CommittedOffset>) -> (i64, i32, String) {
    match committed {
        Some(c) => (c.offset, c.leader_epoch, c.metadata),
        None => (-1, -1, String::new()),
    }
}

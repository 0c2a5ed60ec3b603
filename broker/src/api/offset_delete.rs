//! OffsetDelete: remove committed offsets of topics the group no longer consumes.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::{now_ms, Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::group::coordinator::codes::GROUP_SUBSCRIBED_TO_TOPIC;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// Handles an OffsetDelete request.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Reply, RequestError> {
    let request: OffsetDeleteRequest = ctx.decode(&mut body)?;
    let group_id = request.group_id.0.to_string();
    let mut group_error = 0;
    let mut decisions = Vec::new();
    let mut tombstones = Vec::new();
    for topic in &request.topics {
        let subscribed = broker.groups.subscribed_to(&group_id, &topic.name);
        let partitions = broker.controller.topic(&topic.name).map(|t| t.partitions);
        let mut list = Vec::new();
        for p in &topic.partitions {
            let code = match subscribed {
                Err(code) => {
                    group_error = code;
                    code
                }
                Ok(true) => GROUP_SUBSCRIBED_TO_TOPIC,
                Ok(false) if partitions.is_none_or(|n| p.partition_index >= n) => {
                    UNKNOWN_TOPIC_OR_PARTITION
                }
                Ok(false) => {
                    tombstones.push(((topic.name.0.to_string(), p.partition_index), None));
                    0
                }
            };
            list.push((p.partition_index, code));
        }
        decisions.push((topic.name.clone(), list));
    }
    let broker = broker.clone();
    let ctx = ctx.clone();
    Ok(Reply::Later(Box::pin(async move {
        let stored = if group_error == 0 {
            broker
                .offsets
                .store(&broker.groups, &group_id, tombstones, now_ms())
                .await
        } else {
            Ok(())
        };
        let response = OffsetDeleteResponse::default()
            .with_throttle_time_ms(0)
            .with_error_code(if group_error != 0 {
                group_error
            } else {
                stored.err().unwrap_or(0)
            })
            .with_topics(if group_error != 0 {
                Vec::new()
            } else {
                decisions
                    .into_iter()
                    .map(|(name, list)| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(name)
                            .with_partitions(
                                list.into_iter()
                                    .map(|(index, code)| {
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect()
            });
        ctx.respond(&response).ok()
    })))
}

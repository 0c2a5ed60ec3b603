//! ListOffsets: earliest, latest, max-timestamp, or the first offset at or after a time.

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::access::Access;
use super::{RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::security::authorizer::{AclOperation, Resource};

/// Special timestamps of the protocol.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

/// Answers a ListOffsets request.
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Bytes, RequestError> {
    let request: ListOffsetsRequest = ctx.decode(&mut body)?;
    let read_committed = ctx.version >= 2 && request.isolation_level == 1;
    let access = Access::new(broker, ctx);
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let allowed = access.authorize(AclOperation::Describe, Resource::topic(&topic.name));
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        // The field exists from v4; setting it earlier fails the encoding.
                        .with_leader_epoch(if ctx.version >= 4 { 0 } else { -1 });
                    if !allowed {
                        return response
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                            .with_leader_epoch(-1);
                    }
                    let Some(replica) = broker.replicas.replica(&topic.name, p.partition_index)
                    else {
                        return response
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_leader_epoch(-1);
                    };
                    // Only the leader answers, and only in the epoch the client knows (v4+).
                    let current_epoch = if ctx.version >= 4 {
                        p.current_leader_epoch
                    } else {
                        -1
                    };
                    let view = match replica.list_offsets_view(current_epoch) {
                        Ok(view) => view,
                        Err((error, _)) => {
                            return response
                                .with_error_code(error.code())
                                .with_leader_epoch(-1);
                        }
                    };
                    let response = response.with_leader_epoch(if ctx.version >= 4 {
                        view.leader_epoch
                    } else {
                        -1
                    });
                    let not_available = || {
                        response
                            .clone()
                            .with_error_code(ResponseError::OffsetNotAvailable.code())
                    };
                    let log = replica.log();
                    let found = match p.timestamp {
                        // Consumers see up to the high watermark, so the end they can reach is there.
                        LATEST if !view.high_watermark_settled => return not_available(),
                        // read_committed (v2+) consumers end at the last stable offset.
                        LATEST if read_committed => Ok(Some((view.last_stable_offset, -1))),
                        LATEST => Ok(Some((view.high_watermark, -1))),
                        EARLIEST => Ok(Some((log.log_start_offset(), -1))),
                        MAX_TIMESTAMP if ctx.version >= 7 => log.max_timestamp(),
                        ts if ts < 0 => {
                            return response.with_error_code(ResponseError::InvalidRequest.code());
                        }
                        // A record at or above the high watermark is not (yet) readable: no
                        // answer, as Kafka gives, unless a new leader does not know the high
                        // watermark yet (the record may well be readable: the client retries).
                        ts => match log.offset_for_timestamp(ts) {
                            Ok(Some((offset, _))) if offset >= view.high_watermark => {
                                if !view.high_watermark_settled {
                                    return not_available();
                                }
                                Ok(None)
                            }
                            other => other,
                        },
                    };
                    match found {
                        Ok(Some((offset, timestamp))) => response
                            .with_error_code(NONE)
                            .with_offset(offset)
                            .with_timestamp(timestamp),
                        // No record at or after the time: offset -1, as Kafka answers.
                        Ok(None) => response.with_error_code(NONE),
                        Err(error) => {
                            tracing::warn!(topic = %topic.name.0, partition = p.partition_index, %error, "list offsets failed");
                            response.with_error_code(ResponseError::from(&error).code())
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    let response = ListOffsetsResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics);
    ctx.respond(&response)
}

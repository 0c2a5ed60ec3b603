//! Produce: validate and append record batches, then answer once they are durable. A
//! transactional produce is first checked against the transaction (`txn/verification.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};

use super::access::Access;
use super::{now_ms, str_bytes, Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::log::AppendInfo;
use crate::quota::QuotaType;
use crate::replica::Partition;
use crate::security::authorizer::{AclOperation, Resource};

/// One partition's outcome before durability: the replica, what was appended, and the
/// leader epoch it was appended in.
struct Appended {
    partition: i32,
    outcome: Result<(Arc<Partition>, AppendInfo, i32), (ResponseError, String)>,
}

/// Handles a Produce request: appends happen now, in request order, on the partitions this
/// broker leads; the answer waits for fsync (group commit) unless acks=0, and with acks=all
/// for the in-sync replicas too (up to the request's timeout).
///
/// Async only for KIP-890: the first write of a transaction to a partition waits for the
/// coordinator's verification before anything of the request is appended (the connection
/// reads its next request only after, so appends stay in request order).
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Reply, RequestError> {
    // Kafka counts a produce request's size against the producer's byte-rate quota.
    let produced_bytes = body.len();
    let request: ProduceRequest = ctx.decode(&mut body)?;
    let acks = request.acks;
    let now = now_ms();
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));

    let access = Access::new(broker, ctx);
    let refuse_all: Option<(ResponseError, String)> = if !(-1..=1).contains(&acks) {
        Some((
            ResponseError::InvalidRequiredAcks,
            format!("acks must be -1, 0 or 1, got {acks}"),
        ))
    } else {
        match &request.transactional_id {
            Some(id) if !access.authorize(AclOperation::Write, Resource::transactional_id(id)) => {
                Some((
                    ResponseError::TransactionalIdAuthorizationFailed,
                    format!("no WRITE on transactional id {}", id.as_str()),
                ))
            }
            _ => None,
        }
    };
    // Only partitions this request may write ask the transaction coordinator: on transaction
    // version 2 the question adds the partition to the transaction, and a partition refused
    // here (no WRITE, not led here) must not join it.
    let writable = |topic: &str, partition: i32| {
        refuse_all.is_none()
            && access.allowed(AclOperation::Write, Resource::topic(topic))
            && broker
                .replicas
                .replica(topic, partition)
                .is_some_and(|r| r.role() == crate::replica::Role::Leader)
    };
    let refused =
        crate::txn::verification::verify_produce(broker, &request, ctx.version, writable).await;

    let mut topics: Vec<(TopicName, Vec<Appended>)> = Vec::with_capacity(request.topic_data.len());
    let mut failures = 0usize;
    for topic in request.topic_data {
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        let counters = broker.metrics.topics.topic(&topic.name.0);
        let unauthorized = (!access.authorize(AclOperation::Write, Resource::topic(&topic.name)))
            .then(|| {
                (
                    ResponseError::TopicAuthorizationFailed,
                    format!("no WRITE on topic {}", topic.name.0.as_str()),
                )
            });
        for data in topic.partition_data {
            let not_in_txn = if refused.is_empty() {
                None // the common case: no key to build
            } else {
                refused.get(&(topic.name.0.to_string(), data.index))
            };
            let bytes = data.records.as_ref().map_or(0, |r| r.len() as u64);
            let outcome = match (
                refuse_all.as_ref().or(unauthorized.as_ref()).or(not_in_txn),
                broker.replicas.replica(&topic.name, data.index),
            ) {
                (Some(refusal), _) => Err(refusal.clone()),
                (None, None) => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!(
                        "this broker has no partition {}-{}",
                        topic.name.0, data.index
                    ),
                )),
                (None, Some(replica)) => match data.records {
                    None => Err((ResponseError::InvalidRecord, "records are null".to_string())),
                    Some(records) => match replica.append_as_leader(records, acks, now) {
                        Ok((info, epoch)) => {
                            if acks != 0 {
                                replica.log().request_durable(info.last_offset);
                            }
                            Ok((replica, info, epoch))
                        }
                        Err((error, message)) => {
                            // Leadership moves are routine in a cluster; bad batches are not.
                            if error == ResponseError::NotLeaderOrFollower {
                                tracing::debug!(topic = %topic.name.0, partition = data.index, %message, "produce to a non-leader");
                            } else {
                                tracing::warn!(
                                    topic = %topic.name.0,
                                    partition = data.index,
                                    client_id = ?ctx.client_id,
                                    %message,
                                    "produce rejected"
                                );
                            }
                            Err((error, message))
                        }
                    },
                },
            };
            if let Some(counters) = &counters {
                counters.produced(match &outcome {
                    // A retried batch was not written again: nothing came in.
                    Ok((_, info, _)) if info.duplicate => Some((0, 0)),
                    Ok((_, info, _)) => {
                        Some((u64::try_from(info.record_count).unwrap_or(0), bytes))
                    }
                    Err(_) => None,
                });
            }
            if outcome.is_err() {
                failures += 1;
            }
            partitions.push(Appended {
                partition: data.index,
                outcome,
            });
        }
        topics.push((topic.name, partitions));
    }

    if acks == 0 {
        // With acks=0 there is no answer; Kafka closes the connection so the producer notices.
        if failures > 0 {
            return Err(RequestError::Malformed {
                api: ctx.api_key,
                version: ctx.version,
                reason: format!("acks=0 produce failed for {failures} partition(s)"),
            });
        }
        return Ok(Reply::Nothing);
    }

    // The bytes count against the producer's quota when appended, as in Kafka, and the
    // answer waits for whatever time the quota asks: until a deadline, not for a duration,
    // because the answer future only starts once the connection's earlier answers are
    // written and must not add its wait to theirs.
    let throttle = crate::quota::delay_for(broker, ctx, QuotaType::Produce, produced_bytes);
    let release = tokio::time::Instant::now() + throttle;
    let ctx = ctx.clone();
    Ok(Reply::Later(Box::pin(async move {
        // Only a real throttle sleeps: tokio's timer rounds a deadline up to its next
        // millisecond tick, so sleeping until "now" added up to a millisecond to every answer.
        if !throttle.is_zero() {
            tokio::time::sleep_until(release).await;
        }
        let mut responses = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let waits = partitions.into_iter().map(|appended| async move {
                let response = PartitionProduceResponse::default().with_index(appended.partition);
                match appended.outcome {
                    Ok((replica, info, epoch)) => {
                        if let Err(error) = replica.log().wait_durable(info.last_offset).await {
                            tracing::error!(%error, "fsync failed; produce not acknowledged");
                            return failed(
                                response,
                                ResponseError::from(&error),
                                error.to_string(),
                            );
                        }
                        if acks == -1 {
                            if let Err((error, message)) =
                                replica.wait_for_isr(info.last_offset, epoch, timeout).await
                            {
                                return failed(response, error, message);
                            }
                        }
                        response
                            .with_error_code(NONE)
                            .with_base_offset(info.base_offset)
                            .with_log_append_time_ms(info.log_append_time_ms)
                            .with_log_start_offset(info.log_start_offset)
                    }
                    Err((error, message)) => failed(response, error, message),
                }
            });
            let partition_responses = join_all(waits).await;
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        let response = ProduceResponse::default()
            .with_responses(responses)
            .with_throttle_time_ms(crate::quota::throttle_ms(throttle));
        match ctx.respond(&response) {
            Ok(frame) => Some(frame),
            Err(error) => {
                tracing::error!(%error, "cannot encode produce response");
                None
            }
        }
    })))
}

fn failed(
    response: PartitionProduceResponse,
    error: ResponseError,
    message: String,
) -> PartitionProduceResponse {
    response
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(Some(str_bytes(message)))
}

//! Fetch: read record batches, long-polling until `min_bytes` are available or `max_wait_ms`
//! passes. Waiting is woken by appends or high-watermark moves (watches), never by polling.
//!
//! Two kinds of fetchers use it: consumers (replica id -1), served by the leader up to the
//! high watermark, and followers (replica id = their broker id), served beyond it, whose fetch
//! offset tells the leader how far they have come (and may put them back in the ISR).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use tokio::time::Instant;

use super::{Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::replica::{FollowerFetch, Partition};

/// Kafka's replica id of a debugging consumer: served by any replica, up to its high
/// watermark.
const DEBUGGING_CONSUMER_ID: i32 = -2;

/// One partition a fetch asks for.
struct Wanted {
    partition: i32,
    offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
    /// A follower's log start offset (v5+; -1 otherwise).
    log_start_offset: i64,
    replica: Option<Arc<Partition>>,
}

/// Handles a Fetch request. The response is always deferred: it may wait for data.
pub fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    mut body: Bytes,
) -> Result<Reply, RequestError> {
    let request: FetchRequest = ctx.decode(&mut body)?;

    // We never create fetch sessions (we answer session id 0), so a client can only name one
    // it invented; tell it to start over with a full fetch.
    if ctx.version >= 7 && request.session_id != 0 {
        let response = FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
        return ctx.respond(&response).map(Reply::Now);
    }

    let topics: Vec<(TopicName, Vec<Wanted>)> = request
        .topics
        .into_iter()
        .map(|topic| {
            let wanted = topic
                .partitions
                .iter()
                .map(|p| Wanted {
                    partition: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                    current_leader_epoch: if ctx.version >= 9 {
                        p.current_leader_epoch
                    } else {
                        -1
                    },
                    last_fetched_epoch: if ctx.version >= 12 {
                        p.last_fetched_epoch
                    } else {
                        -1
                    },
                    log_start_offset: if ctx.version >= 5 {
                        p.log_start_offset
                    } else {
                        -1
                    },
                    replica: broker.replicas.replica(&topic.topic, p.partition),
                })
                .collect();
            (topic.topic, wanted)
        })
        .collect();

    let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let response_max_bytes = usize::try_from(request.max_bytes).unwrap_or(0);
    let read_committed = request.isolation_level == 1;
    // Followers say who they are; consumers send -1.
    let replica_id = request.replica_id.0;
    let ctx = ctx.clone();
    let broker = broker.clone();

    Ok(Reply::Later(Box::pin(async move {
        let deadline = Instant::now() + max_wait;
        loop {
            // Subscribe before reading, so an append between the read and the wait still
            // wakes us.
            // Consumers see records when the high watermark passes them; followers as soon as
            // they are appended.
            let mut watches: FuturesUnordered<_> = topics
                .iter()
                .flat_map(|(_, ws)| ws.iter())
                .filter_map(|w| {
                    w.replica.as_ref().map(|r| {
                        if replica_id >= 0 {
                            r.log().subscribe()
                        } else {
                            r.subscribe_high_watermark()
                        }
                    })
                })
                .map(|mut rx| async move { rx.changed().await })
                .collect();
            let gathered = gather(
                &broker,
                &topics,
                response_max_bytes,
                read_committed,
                replica_id,
            );
            let done = gathered.bytes >= min_bytes
                || gathered.has_error
                || Instant::now() >= deadline
                || watches.is_empty();
            if done {
                broker
                    .metrics
                    .topics
                    .fetch_answered(&gathered.responses, replica_id >= 0);
                let response = FetchResponse::default()
                    .with_throttle_time_ms(0)
                    .with_error_code(NONE)
                    .with_session_id(0)
                    .with_responses(gathered.responses);
                return match ctx.respond(&response) {
                    Ok(frame) => Some(frame),
                    Err(error) => {
                        tracing::error!(%error, "cannot encode fetch response");
                        None
                    }
                };
            }
            // Either some partition grew, or time is up; both lead to a fresh read.
            let _ = tokio::time::timeout_at(deadline, watches.next()).await;
        }
    })))
}

struct Gathered {
    responses: Vec<FetchableTopicResponse>,
    bytes: usize,
    has_error: bool,
}

fn gather(
    broker: &Broker,
    topics: &[(TopicName, Vec<Wanted>)],
    response_max_bytes: usize,
    read_committed: bool,
    replica_id: i32,
) -> Gathered {
    let mut remaining = response_max_bytes;
    let mut bytes = 0usize;
    let mut has_error = false;
    let mut responses = Vec::with_capacity(topics.len());
    for (name, wanted) in topics {
        let mut partitions = Vec::with_capacity(wanted.len());
        for w in wanted {
            let mut data = PartitionData::default()
                .with_partition_index(w.partition)
                .with_records(Some(Bytes::new()))
                .with_aborted_transactions(read_committed.then(Vec::new));
            let Some(replica) = &w.replica else {
                has_error = true;
                partitions.push(
                    data.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_log_start_offset(-1),
                );
                continue;
            };
            let limit = w.max_bytes.min(remaining);
            // KIP-74: the first non-empty partition returns at least one whole batch, even
            // above the limits, so a big record can never stall a consumer.
            let first_with_data = bytes == 0;
            let may_serve = replica_id == DEBUGGING_CONSUMER_ID
                || replica.check_leader(w.current_leader_epoch).is_ok();
            if limit == 0 && !first_with_data && replica_id < 0 && may_serve {
                // The response is full: nothing would be sent, so nothing is read. (A follower
                // is still served, for its fetch offset tells the leader its position.)
                let high_watermark = replica.high_watermark();
                partitions.push(
                    data.with_high_watermark(high_watermark)
                        .with_last_stable_offset(replica.last_stable_offset())
                        .with_log_start_offset(replica.log().log_start_offset()),
                );
                continue;
            }
            let read_limit = if limit == 0 && first_with_data {
                1
            } else {
                limit
            };
            let read = if replica_id >= 0 {
                follower_read(broker, replica, w, replica_id, read_limit)
            } else if replica_id == DEBUGGING_CONSUMER_ID {
                replica
                    .read_for_debugging(w.offset, read_limit)
                    .map(|(records, high_watermark)| (records, high_watermark, None))
            } else if read_committed {
                replica
                    .read_committed_for_consumer(w.offset, read_limit, w.current_leader_epoch)
                    .map(|(records, high_watermark, lso, aborted)| {
                        data.last_stable_offset = lso;
                        data.aborted_transactions = Some(
                            aborted
                                .iter()
                                .map(|a| {
                                    AbortedTransaction::default()
                                        .with_producer_id(a.producer_id.into())
                                        .with_first_offset(a.first_offset)
                                })
                                .collect(),
                        );
                        (records, high_watermark, None)
                    })
            } else {
                replica
                    .read_for_consumer(w.offset, read_limit, w.current_leader_epoch)
                    .map(|(records, high_watermark)| (records, high_watermark, None))
            };
            let log_start_offset = replica.log().log_start_offset();
            match read {
                Ok((records, high_watermark, diverging)) => {
                    // The last stable offset of a read_committed read was set with its
                    // records; otherwise no transaction bounds what is answered.
                    let lso = if read_committed
                        && replica_id < 0
                        && replica_id != DEBUGGING_CONSUMER_ID
                    {
                        data.last_stable_offset
                    } else {
                        high_watermark
                    };
                    data = data
                        .with_high_watermark(high_watermark)
                        .with_last_stable_offset(lso)
                        .with_log_start_offset(log_start_offset);
                    if let Some(diverging) = diverging {
                        has_error = true; // answer at once: the follower must truncate first
                        partitions.push(data.with_diverging_epoch(diverging));
                        continue;
                    }
                    if limit == 0 && !first_with_data {
                        partitions.push(data);
                        continue;
                    }
                    if records.len() > limit && !first_with_data {
                        partitions.push(data);
                        continue;
                    }
                    bytes += records.len();
                    remaining = remaining.saturating_sub(records.len());
                    partitions.push(data.with_records(Some(records)));
                }
                Err((error, message)) => {
                    has_error = true;
                    if !matches!(
                        error,
                        ResponseError::OffsetOutOfRange
                            | ResponseError::NotLeaderOrFollower
                            | ResponseError::FencedLeaderEpoch
                            | ResponseError::UnknownLeaderEpoch
                    ) {
                        tracing::warn!(topic = %name.0, partition = w.partition, %message, "fetch read failed");
                    }
                    partitions.push(
                        data.with_error_code(error.code())
                            .with_high_watermark(replica.high_watermark())
                            .with_last_stable_offset(replica.last_stable_offset())
                            .with_log_start_offset(log_start_offset),
                    );
                }
            }
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(name.clone())
                .with_partitions(partitions),
        );
    }
    Gathered {
        responses,
        bytes,
        has_error,
    }
}

/// A follower's read: records from its fetch offset, or where its log diverges. An ISR the
/// follower now qualifies for is sent to the controller in the background.
fn follower_read(
    broker: &Broker,
    replica: &Arc<Partition>,
    wanted: &Wanted,
    replica_id: i32,
    max_bytes: usize,
) -> Result<(Bytes, i64, Option<EpochEndOffset>), crate::replica::Refusal> {
    match replica.fetch_from_follower(
        replica_id,
        wanted.offset,
        wanted.log_start_offset,
        wanted.last_fetched_epoch,
        wanted.current_leader_epoch,
        max_bytes,
    )? {
        FollowerFetch::Records {
            records,
            high_watermark,
            expand_isr,
            ..
        } => {
            if let Some(isr) = expand_isr {
                broker.alter_partition.propose(replica.clone(), isr);
            }
            Ok((records, high_watermark, None))
        }
        FollowerFetch::Diverging {
            epoch,
            end_offset,
            high_watermark,
            ..
        } => Ok((
            Bytes::new(),
            high_watermark,
            Some(
                EpochEndOffset::default()
                    .with_epoch(epoch)
                    .with_end_offset(end_offset),
            ),
        )),
    }
}

//! Fetch: read record batches, long-polling until `min_bytes` are available or `max_wait_ms`
//! passes. Waiting is woken by appends (each partition log's end-offset watch), never by
//! polling.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use tokio::time::Instant;

use super::{Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::log::{LogError, PartitionLog};

/// One partition a fetch asks for.
struct Wanted {
    partition: i32,
    offset: i64,
    max_bytes: usize,
    log: Option<Arc<PartitionLog>>,
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
                    log: broker.replicas.partition(&topic.topic, p.partition),
                })
                .collect();
            (topic.topic, wanted)
        })
        .collect();

    let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let response_max_bytes = usize::try_from(request.max_bytes).unwrap_or(0);
    let read_committed = request.isolation_level == 1;
    let ctx = ctx.clone();

    Ok(Reply::Later(Box::pin(async move {
        let deadline = Instant::now() + max_wait;
        loop {
            // Subscribe before reading, so an append between the read and the wait still
            // wakes us.
            let mut watches: FuturesUnordered<_> = topics
                .iter()
                .flat_map(|(_, ws)| ws.iter())
                .filter_map(|w| w.log.as_ref().map(|log| log.subscribe()))
                .map(|mut rx| async move { rx.changed().await })
                .collect();
            let gathered = gather(&topics, response_max_bytes, read_committed);
            let done = gathered.bytes >= min_bytes
                || gathered.has_error
                || Instant::now() >= deadline
                || watches.is_empty();
            if done {
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
    topics: &[(TopicName, Vec<Wanted>)],
    response_max_bytes: usize,
    read_committed: bool,
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
            let Some(log) = &w.log else {
                has_error = true;
                partitions.push(
                    data.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_log_start_offset(-1),
                );
                continue;
            };
            let high_watermark = log.log_end_offset();
            data = data
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(high_watermark)
                .with_log_start_offset(log.log_start_offset());
            let limit = w.max_bytes.min(remaining);
            // KIP-74: the first non-empty partition returns at least one whole batch, even
            // above the limits, so a big record can never stall a consumer.
            let first_with_data = bytes == 0;
            if limit == 0 && !first_with_data {
                partitions.push(data);
                continue;
            }
            match log.read(w.offset, limit) {
                Ok(records) => {
                    if records.len() > limit && !first_with_data {
                        partitions.push(data);
                        continue;
                    }
                    bytes += records.len();
                    remaining = remaining.saturating_sub(records.len());
                    partitions.push(data.with_records(Some(records)));
                }
                Err(error) => {
                    has_error = true;
                    if !matches!(error, LogError::OffsetOutOfRange { .. }) {
                        tracing::warn!(topic = %name.0, partition = w.partition, %error, "fetch read failed");
                    }
                    partitions.push(data.with_error_code(ResponseError::from(&error).code()));
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

//! Fetch: read record batches, long-polling until `min_bytes` are available or `max_wait_ms`
//! passes. Waiting is woken by appends or high-watermark moves (watches), never by polling.
//!
//! Two kinds of fetchers use it: consumers (replica id -1), served by the leader up to the
//! high watermark, and followers (replica id = their broker id), served beyond it, whose fetch
//! offset tells the leader how far they have come (and may put them back in the ISR).
//!
//! From v13 topics are named by id (an id this broker does not know gets UNKNOWN_TOPIC_ID,
//! so a fetcher can never read a re-created topic of the same name by mistake); from v15 a
//! follower sends its broker epoch (`ReplicaState`, KIP-903), and a fetch from an earlier
//! incarnation of that broker gets STALE_BROKER_EPOCH.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use tokio::time::Instant;
use uuid::Uuid;

use super::access::Access;
use super::{Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::error::{ResponseError, NONE};
use crate::replica::{FollowerFetch, FollowerFetchRequest, Partition};
use crate::security::authorizer::{AclOperation, Resource};

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
    /// The partition, or why it cannot be read at all.
    replica: Result<Arc<Partition>, ResponseError>,
}

/// One topic a fetch asks for: its name (resolved from the id from v13) and id.
struct WantedTopic {
    name: TopicName,
    topic_id: Uuid,
    partitions: Vec<Wanted>,
}

/// Who is fetching: a follower's broker id and epoch, or a consumer.
#[derive(Clone, Copy)]
struct Fetcher {
    /// The follower's broker id, or -1 (consumer) or -2 (debugging consumer).
    replica_id: i32,
    /// The follower's broker epoch (v15+), -1 when not sent.
    replica_epoch: i64,
}

impl Fetcher {
    fn is_follower(self) -> bool {
        self.replica_id >= 0
    }
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

    // Followers say who they are (from v15 with their broker epoch); consumers send -1.
    let fetcher = if ctx.version >= 15 {
        Fetcher {
            replica_id: request.replica_state.replica_id.0,
            replica_epoch: request.replica_state.replica_epoch,
        }
    } else {
        Fetcher {
            replica_id: request.replica_id.0,
            replica_epoch: -1,
        }
    };
    let stale_epoch = fetcher.is_follower() && stale_broker_epoch(broker, fetcher);
    let access = Access::new(broker, ctx);
    // Followers need CLUSTER_ACTION on the cluster; consumers READ on each topic.
    let follower_denied = fetcher.is_follower()
        && !access.authorize(AclOperation::ClusterAction, Resource::cluster());
    let by_id = ctx.version >= 13;
    let topics: Vec<WantedTopic> = request
        .topics
        .into_iter()
        .map(|topic| {
            let (name, topic_error) = if by_id {
                match broker
                    .controller
                    .with_image(|i| i.topic_by_id(&topic.topic_id).map(|t| t.name.clone()))
                {
                    Some(name) => (TopicName(name.into()), None),
                    None => (TopicName::default(), Some(ResponseError::UnknownTopicId)),
                }
            } else {
                (topic.topic, None)
            };
            let denied = topic_error.is_none()
                && (follower_denied
                    || (!fetcher.is_follower()
                        && !access.authorize(AclOperation::Read, Resource::topic(&name))));
            let partitions = topic
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
                    replica: match topic_error {
                        Some(error) => Err(error),
                        None if denied => Err(ResponseError::TopicAuthorizationFailed),
                        None if stale_epoch => Err(ResponseError::StaleBrokerEpoch),
                        None => locate(broker, &name, topic.topic_id, by_id, p.partition),
                    },
                })
                .collect();
            WantedTopic {
                name,
                topic_id: topic.topic_id,
                partitions,
            }
        })
        .collect();

    let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let response_max_bytes = usize::try_from(request.max_bytes).unwrap_or(0);
    let read_committed = request.isolation_level == 1;
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
                .flat_map(|t| t.partitions.iter())
                .filter_map(|w| {
                    w.replica.as_ref().ok().map(|r| {
                        if fetcher.is_follower() {
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
                fetcher,
            );
            let done = gathered.bytes >= min_bytes
                || gathered.has_error
                || Instant::now() >= deadline
                || watches.is_empty();
            if done {
                broker
                    .metrics
                    .topics
                    .fetch_answered(&gathered.responses, fetcher.is_follower());
                // Consumers' bytes count against their quota (replication is exempt, as
                // in Kafka); an answer over it waits.
                let throttle = if fetcher.is_follower() {
                    Duration::ZERO
                } else {
                    crate::quota::delay_for(
                        &broker,
                        &ctx,
                        crate::quota::QuotaType::Fetch,
                        gathered.bytes,
                    )
                };
                if !throttle.is_zero() {
                    tokio::time::sleep(throttle).await;
                }
                let response = FetchResponse::default()
                    .with_throttle_time_ms(crate::quota::throttle_ms(throttle))
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

/// The hosted partition a fetch names; from v13 only if it is still the topic of that id
/// (a topic re-created under the same name is another topic).
fn locate(
    broker: &Broker,
    name: &TopicName,
    topic_id: Uuid,
    by_id: bool,
    partition: i32,
) -> Result<Arc<Partition>, ResponseError> {
    match broker.replicas.replica(name, partition) {
        Some(replica) if !by_id || replica.topic_id() == topic_id => Ok(replica),
        Some(_) => Err(ResponseError::UnknownTopicId),
        None => Err(ResponseError::UnknownTopicOrPartition),
    }
}

/// Whether a follower's fetch comes from an earlier incarnation of its broker: its epoch is
/// older than the registration the metadata holds (KIP-903). A newer epoch is a registration
/// this broker has not applied yet, not a stale one.
fn stale_broker_epoch(broker: &Broker, fetcher: Fetcher) -> bool {
    fetcher.replica_epoch >= 0
        && broker.controller.with_image(|i| {
            i.broker(fetcher.replica_id)
                .is_some_and(|b| b.epoch > fetcher.replica_epoch)
        })
}

/// Whether a follower's fetch may bring it into an ISR: a fetch without a broker epoch (before
/// v15) may; one with an epoch only if it is the registered one, so a broker whose
/// registration this broker has not seen yet waits for it.
fn isr_eligible(broker: &Broker, fetcher: Fetcher) -> bool {
    fetcher.replica_epoch < 0
        || broker.controller.with_image(|i| {
            i.broker(fetcher.replica_id)
                .is_some_and(|b| b.epoch == fetcher.replica_epoch)
        })
}

fn gather(
    broker: &Broker,
    topics: &[WantedTopic],
    response_max_bytes: usize,
    read_committed: bool,
    fetcher: Fetcher,
) -> Gathered {
    let replica_id = fetcher.replica_id;
    let mut remaining = response_max_bytes;
    let mut bytes = 0usize;
    let mut has_error = false;
    let mut responses = Vec::with_capacity(topics.len());
    for topic in topics {
        let name = &topic.name;
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for w in &topic.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(w.partition)
                .with_records(Some(Bytes::new()))
                .with_aborted_transactions(read_committed.then(Vec::new));
            let replica = match &w.replica {
                Ok(replica) => replica,
                Err(error) => {
                    has_error = true;
                    partitions.push(
                        data.with_error_code(error.code())
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1),
                    );
                    continue;
                }
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
                follower_read(broker, replica, w, fetcher, read_limit)
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
                .with_topic_id(topic.topic_id)
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
    fetcher: Fetcher,
    max_bytes: usize,
) -> Result<(Bytes, i64, Option<EpochEndOffset>), crate::replica::Refusal> {
    match replica.fetch_from_follower(FollowerFetchRequest {
        replica_id: fetcher.replica_id,
        fetch_offset: wanted.offset,
        log_start_offset: wanted.log_start_offset,
        last_fetched_epoch: wanted.last_fetched_epoch,
        current_leader_epoch: wanted.current_leader_epoch,
        max_bytes,
        isr_eligible: isr_eligible(broker, fetcher),
    })? {
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

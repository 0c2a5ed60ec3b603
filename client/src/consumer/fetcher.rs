//! Fetch requests: one in flight per partition leader, run as spawned tasks that also decode
//! the records, so the next batches arrive (and are decoded on another core) while the
//! application processes the current ones.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest};
use kafka_protocol::ResponseError;

use crate::error::{ClientError, Result};
use crate::network::cluster::Cluster;
use crate::offsets::topic_name;
use crate::record::decode::decode_committed_record_set;
use crate::record::ConsumerRecord;
use crate::types::{IsolationLevel, TopicPartition};

/// One partition in a fetch request.
#[derive(Debug, Clone)]
pub(crate) struct FetchTarget {
    pub(crate) partition: TopicPartition,
    /// Shared topic name for the decoded records.
    pub(crate) topic: Arc<str>,
    pub(crate) offset: i64,
    /// The partition's seek epoch when the fetch was sent; an answer for an older epoch is
    /// dropped (the application moved the position meanwhile).
    pub(crate) epoch: u64,
    /// The leader epoch metadata gave for the partition (-1 if unknown), sent as
    /// `current_leader_epoch` (Fetch v9+) so a broker that is no longer leader, or not yet,
    /// says so (FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH) instead of serving stale data.
    pub(crate) current_leader_epoch: i32,
    /// The leader epoch of the last batch fetched before `offset` (Fetch v12+
    /// `last_fetched_epoch`): the broker compares it with its log and answers a
    /// `diverging_epoch` when the two logs went different ways.
    pub(crate) last_fetched_epoch: Option<i32>,
}

/// The limits of one fetch request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchLimits {
    pub(crate) max_wait: Duration,
    pub(crate) min_bytes: i32,
    pub(crate) max_bytes: i32,
    pub(crate) partition_max_bytes: i32,
    pub(crate) isolation: IsolationLevel,
    pub(crate) check_crcs: bool,
}

/// What one partition's part of a fetch response held.
#[derive(Debug)]
pub(crate) enum PartitionFetch {
    /// Records (possibly none) and where to fetch next.
    Records {
        records: Vec<ConsumerRecord>,
        /// Size of the record set on the wire (for the prefetch limit).
        bytes: usize,
        /// The offset after the last complete batch; `None` if no batch was complete.
        next_offset: Option<i64>,
        high_watermark: i64,
        log_start_offset: i64,
        /// The leader epoch of the last complete batch (for the next `last_fetched_epoch`).
        last_epoch: Option<i32>,
        /// The broker's `diverging_epoch` (epoch, its end offset) when the log diverges from
        /// what the consumer fetched (Fetch v12+); no records come with it.
        diverging: Option<(i32, i64)>,
    },
    /// A Kafka error for this partition.
    Error(ResponseError, i16),
    /// A batch could not be decoded.
    Corrupt(ClientError),
}

/// The answer to one fetch request.
#[derive(Debug)]
pub(crate) struct FetchOutcome {
    pub(crate) node: i32,
    /// `Err` when the request itself failed (connection, timeout); every target is then
    /// retried after a backoff.
    pub(crate) result: Result<Vec<(FetchTarget, PartitionFetch)>>,
    pub(crate) targets: Vec<FetchTarget>,
}

/// Sends one fetch to `node` and decodes the answer.
pub(crate) async fn fetch(
    cluster: Arc<Cluster>,
    node: i32,
    targets: Vec<FetchTarget>,
    limits: FetchLimits,
) -> FetchOutcome {
    let result = fetch_inner(&cluster, node, &targets, limits).await;
    FetchOutcome {
        node,
        result,
        targets,
    }
}

async fn fetch_inner(
    cluster: &Cluster,
    node: i32,
    targets: &[FetchTarget],
    limits: FetchLimits,
) -> Result<Vec<(FetchTarget, PartitionFetch)>> {
    let connection = cluster.connection(node).await?;
    let version = connection.version(ApiKey::Fetch)?;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for target in targets {
        let partition = FetchPartition::default()
            .with_partition(target.partition.partition)
            .with_fetch_offset(target.offset)
            .with_partition_max_bytes(limits.partition_max_bytes)
            .with_current_leader_epoch(if version >= 9 {
                target.current_leader_epoch
            } else {
                -1
            })
            .with_last_fetched_epoch(match target.last_fetched_epoch {
                Some(epoch) if version >= 12 => epoch,
                _ => -1,
            });
        match topics.last_mut() {
            Some(topic) if topic.topic.0.as_str() == target.partition.topic => {
                topic.partitions.push(partition)
            }
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(topic_name(&target.partition.topic))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(limits.max_wait.as_millis() as i32)
        .with_min_bytes(limits.min_bytes)
        .with_max_bytes(limits.max_bytes)
        .with_isolation_level(limits.isolation.wire())
        .with_topics(topics);
    let timeout = cluster.config.request_timeout + limits.max_wait;
    let response = connection.send_at(&request, version, timeout).await?;
    if response.error_code != 0 {
        return Err(ClientError::kafka(
            "Fetch",
            format!("broker {node}"),
            response.error_code,
            None,
        ));
    }
    let mut out = Vec::with_capacity(targets.len());
    for topic in response.responses {
        for data in topic.partitions {
            let Some(target) = targets.iter().find(|t| {
                t.partition.partition == data.partition_index
                    && t.partition.topic == topic.topic.0.as_str()
            }) else {
                continue;
            };
            // Fields a version lacks decode as their defaults (-1), so this reads as "none" on
            // brokers before v12.
            let diverging = Some((data.diverging_epoch.epoch, data.diverging_epoch.end_offset))
                .filter(|(epoch, offset)| *epoch >= 0 && *offset >= 0);
            let outcome = match ResponseError::try_from_code(data.error_code) {
                Some(error) => PartitionFetch::Error(error, data.error_code),
                None if diverging.is_some() => PartitionFetch::Records {
                    records: Vec::new(),
                    bytes: 0,
                    next_offset: None,
                    high_watermark: data.high_watermark,
                    log_start_offset: data.log_start_offset,
                    last_epoch: None,
                    diverging,
                },
                None => {
                    let mut records = Vec::new();
                    let bytes = data.records.unwrap_or_default();
                    // Listed only for read_committed fetches: their records are skipped.
                    let aborted: Vec<(i64, i64)> = data
                        .aborted_transactions
                        .iter()
                        .flatten()
                        .map(|a| (a.producer_id.0, a.first_offset))
                        .collect();
                    match decode_committed_record_set(
                        &bytes,
                        &target.topic,
                        target.partition.partition,
                        target.offset,
                        limits.check_crcs,
                        &aborted,
                        &mut records,
                    ) {
                        Ok(decoded) => PartitionFetch::Records {
                            records,
                            bytes: bytes.len(),
                            next_offset: decoded.next_offset,
                            high_watermark: data.high_watermark,
                            log_start_offset: data.log_start_offset,
                            last_epoch: decoded.last_epoch,
                            diverging: None,
                        },
                        Err(error) => PartitionFetch::Corrupt(ClientError::CorruptRecord {
                            topic: target.partition.topic.clone(),
                            partition: target.partition.partition,
                            offset: error.offset,
                            reason: error.reason,
                        }),
                    }
                }
            };
            out.push((target.clone(), outcome));
        }
    }
    Ok(out)
}

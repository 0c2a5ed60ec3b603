//! Consumer groups: the coordinator of the classic protocol and committed offsets stored in
//! the compacted internal topic `__consumer_offsets`.
//!
//! A commit is appended to the group's `__consumer_offsets` partition and fsynced before it is
//! acknowledged; at start-up those partitions are replayed, so no acknowledged commit is lost
//! to a crash.

pub mod coordinator;
pub mod records;
pub mod state;
pub mod subscription;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

pub use coordinator::{GroupCoordinator, JoinRequest, SyncRequest};
pub use state::CommittedOffset;

use crate::controller::{NewTopic, TopicError};
use crate::log::PartitionLog;
use crate::server::Broker;
use records::{OffsetKey, OffsetValue};

/// The internal topic of committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Error code when the offsets topic cannot be written.
const COORDINATOR_NOT_AVAILABLE: i16 = 15;

/// The `__consumer_offsets` partition log of a group, creating the topic on first use (as
/// Kafka does, on the first FindCoordinator or commit).
pub fn offsets_log(broker: &Broker, group_id: &str) -> Result<Arc<PartitionLog>, i16> {
    let partitions = match broker.controller.topic(OFFSETS_TOPIC) {
        Some(topic) => topic.partitions,
        None => {
            let configs: BTreeMap<String, String> = [
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("segment.bytes".to_string(), "104857600".to_string()),
            ]
            .into();
            let new = NewTopic {
                name: OFFSETS_TOPIC.to_string(),
                partitions: Some(broker.config.offsets_topic_num_partitions),
                replication_factor: Some(1),
                assignments: Vec::new(),
                configs,
            };
            match broker.controller.create_topic(new, false) {
                Ok(topic) => topic.partitions,
                Err(TopicError::AlreadyExists(_)) => broker
                    .controller
                    .topic(OFFSETS_TOPIC)
                    .map_or(broker.config.offsets_topic_num_partitions, |t| t.partitions),
                Err(error) => {
                    tracing::error!(%error, "cannot create {OFFSETS_TOPIC}");
                    return Err(COORDINATOR_NOT_AVAILABLE);
                }
            }
        }
    };
    let partition = records::partition_for(group_id, partitions);
    broker
        .replicas
        .partition(OFFSETS_TOPIC, partition)
        .ok_or(COORDINATOR_NOT_AVAILABLE)
}

/// A commit to write: (topic, partition) and Some((offset, leader epoch, metadata)), or None
/// to delete the committed offset.
pub type OffsetWrite = ((String, i32), Option<(i64, i32, String)>);

/// Durably writes offset commits (`Some`) and deletions (`None`) of one group, then applies
/// them to the coordinator. Returns once they are fsynced.
pub async fn store_offsets(
    broker: &Broker,
    group_id: &str,
    entries: Vec<OffsetWrite>,
    now_ms: i64,
) -> Result<(), i16> {
    if entries.is_empty() {
        return Ok(());
    }
    let log = offsets_log(broker, group_id)?;
    let encoded: Vec<(Bytes, Option<Bytes>)> = entries
        .iter()
        .map(|((topic, partition), value)| {
            let key = OffsetKey {
                group: group_id.to_string(),
                topic: topic.clone(),
                partition: *partition,
            };
            let value = value.as_ref().map(|(offset, leader_epoch, metadata)| {
                OffsetValue {
                    offset: *offset,
                    leader_epoch: *leader_epoch,
                    metadata: metadata.clone(),
                    commit_timestamp: now_ms,
                }
                .encode()
            });
            (key.encode(), value)
        })
        .collect();
    let batch = records::encode_batch(&encoded, now_ms).ok_or(COORDINATOR_NOT_AVAILABLE)?;
    let info = log.append(batch, now_ms).map_err(|error| {
        tracing::error!(%error, "cannot append to {OFFSETS_TOPIC}");
        COORDINATOR_NOT_AVAILABLE
    })?;
    log.wait_durable(info.last_offset).await.map_err(|error| {
        tracing::error!(%error, "cannot fsync {OFFSETS_TOPIC}");
        COORDINATOR_NOT_AVAILABLE
    })?;
    let applied = entries
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let log_offset = info.base_offset + i as i64;
            let value = value.map(|(offset, leader_epoch, metadata)| CommittedOffset {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp: now_ms,
                log_offset,
            });
            (key, value)
        })
        .collect();
    broker.groups.apply_offsets(group_id, applied);
    Ok(())
}

/// Replays every `__consumer_offsets` partition into the coordinator (start-up).
pub fn load_offsets(broker: &Broker) {
    let Some(hosted) = broker.replicas.topic(OFFSETS_TOPIC) else {
        return;
    };
    let mut loaded = 0usize;
    for log in &hosted.partitions {
        let mut offset = log.log_start_offset();
        let end = log.log_end_offset();
        while offset < end {
            let chunk = match log.read(offset, 1 << 20) {
                Ok(chunk) if !chunk.is_empty() => chunk,
                Ok(_) => break,
                Err(error) => {
                    tracing::error!(%error, "reading {OFFSETS_TOPIC} failed; offsets may be missing");
                    break;
                }
            };
            let mut buf = chunk;
            let mut next = offset;
            while !buf.is_empty() {
                let Ok(set) = RecordBatchDecoder::decode(&mut buf) else {
                    break;
                };
                for record in set.records {
                    next = next.max(record.offset + 1);
                    if record.offset < offset || record.control {
                        continue;
                    }
                    let Some(key) = record.key.and_then(OffsetKey::decode) else {
                        continue;
                    };
                    let value =
                        record
                            .value
                            .and_then(OffsetValue::decode)
                            .map(|v| CommittedOffset {
                                offset: v.offset,
                                leader_epoch: v.leader_epoch,
                                metadata: v.metadata,
                                commit_timestamp: v.commit_timestamp,
                                log_offset: record.offset,
                            });
                    broker
                        .groups
                        .apply_offsets(&key.group, vec![((key.topic, key.partition), value)]);
                    loaded += 1;
                }
            }
            if next <= offset {
                // A batch we cannot decode: skip past it rather than loop forever.
                tracing::error!(offset, "undecodable batch in {OFFSETS_TOPIC}; skipping");
                next = offset + 1;
            }
            offset = next;
        }
    }
    tracing::info!(records = loaded, "replayed {OFFSETS_TOPIC}");
}

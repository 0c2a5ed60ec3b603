//! Transactional offset commits (TxnOffsetCommit): offsets that become a group's committed
//! offsets only when their transaction commits (Kafka's pending transactional offsets in the
//! `OffsetMetadataManager`).
//!
//! They are written at once to the group's `__consumer_offsets` partition as a transactional
//! batch of the producer (so they survive a crash and replicate like any commit) and held
//! aside in memory. The transaction coordinator's marker in that partition settles them: a
//! commit applies them to the group coordinator, an abort drops them. Replaying the partition
//! does the same: transactional records wait for their producer's marker.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::coordinator::GroupCoordinator;
use super::error::GroupError;
use super::offsets::{OffsetMetadataManager, OffsetWrite};
use super::records::{OffsetKey, OffsetValue};
use super::state::CommittedOffset;
use crate::error::ResponseError;

/// How long transactional offsets wait for the in-sync replicas.
const TXN_OFFSETS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Offsets of one group waiting for their transaction: (topic, partition) and the offset.
pub type PendingOffsets = Vec<((String, i32), Option<CommittedOffset>)>;

/// The groups' pending offsets of one producer in one offsets partition.
type ByGroup = Vec<(String, PendingOffsets)>;

/// Offsets written by open transactions, by producer id and offsets partition.
#[derive(Debug, Default)]
pub struct TxnOffsetStore {
    pending: Mutex<HashMap<(i64, i32), ByGroup>>,
}

impl TxnOffsetStore {
    /// Holds a group's offsets for `producer_id`'s transaction in offsets partition
    /// `partition`.
    pub fn add(&self, producer_id: i64, partition: i32, group: String, offsets: PendingOffsets) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((producer_id, partition))
            .or_default()
            .push((group, offsets));
    }

    /// Settles `producer_id`'s transaction in offsets partition `partition`: a commit applies
    /// its offsets to `groups`, an abort drops them.
    pub fn complete(
        &self,
        groups: &GroupCoordinator,
        producer_id: i64,
        partition: i32,
        commit: bool,
    ) {
        let settled = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(producer_id, partition));
        if !commit {
            return;
        }
        for (group, offsets) in settled.unwrap_or_default() {
            groups.apply_offsets(&group, offsets);
        }
    }

    /// Forgets what partition `partition` held (its replay rebuilds it).
    pub fn forget_partition(&self, partition: i32) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, p), _| *p != partition);
    }
}

/// Whether a control record's key says commit (Kafka's key: version `i16`, type `i16`).
pub fn is_commit_marker(key: Option<&Bytes>) -> bool {
    key.and_then(|k| k.get(2..4))
        .is_some_and(|t| i16::from_be_bytes([t[0], t[1]]) == 1)
}

/// Writes a group's offsets for `producer_id`'s open transaction to its `__consumer_offsets`
/// partition (durably) and holds them until the transaction ends.
pub async fn store_txn_offsets(
    offsets: &OffsetMetadataManager,
    group_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    entries: Vec<OffsetWrite>,
    now_ms: i64,
) -> Result<(), GroupError> {
    if entries.is_empty() {
        return Ok(());
    }
    let partitions = offsets.ensure_topic().await?;
    let partition = offsets.partition_of(group_id, partitions);
    let replica = offsets.offsets_replica(group_id)?;
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, ((topic, p), value))| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Not checked for these batches; constant offset - sequence keeps one batch.
            sequence: i32::try_from(i).unwrap_or(i32::MAX),
            timestamp: now_ms,
            key: Some(
                OffsetKey {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition: *p,
                }
                .encode(),
            ),
            value: value.as_ref().map(|(offset, leader_epoch, metadata)| {
                OffsetValue {
                    offset: *offset,
                    leader_epoch: *leader_epoch,
                    metadata: metadata.clone(),
                    commit_timestamp: now_ms,
                }
                .encode()
            }),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|_| GroupError::CoordinatorNotAvailable)?;
    let (info, epoch) = replica
        .append_txn_offsets_as_leader(buf.freeze(), now_ms)
        .map_err(|(error, message)| {
            tracing::warn!(%error, %message, group_id, producer_id, "transactional offset commit refused");
            match error {
                ResponseError::NotLeaderOrFollower | ResponseError::FencedLeaderEpoch => {
                    GroupError::NotCoordinator
                }
                _ => GroupError::CoordinatorNotAvailable,
            }
        })?;
    replica
        .log()
        .wait_durable(info.last_offset)
        .await
        .map_err(|_| GroupError::CoordinatorNotAvailable)?;
    // Replicated like any commit (offsets.commit.required.acks=-1): the offsets must survive
    // the group coordinator's failover as the transaction's records do.
    replica
        .wait_for_isr(info.last_offset, epoch, TXN_OFFSETS_TIMEOUT)
        .await
        .map_err(|_| GroupError::CoordinatorNotAvailable)?;
    let pending = entries
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let value = value.map(|(offset, leader_epoch, metadata)| CommittedOffset {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp: now_ms,
                log_offset: info.base_offset + i as i64,
            });
            (key, value)
        })
        .collect();
    offsets
        .txn_offsets
        .add(producer_id, partition, group_id.to_string(), pending);
    Ok(())
}

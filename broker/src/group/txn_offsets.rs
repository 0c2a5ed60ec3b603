//! Transactional offset commits (TxnOffsetCommit): offsets that become a group's committed
//! offsets only when their transaction commits (Kafka's pending transactional offsets in the
//! `OffsetMetadataManager`).
//!
//! They are written at once to the group's `__consumer_offsets` partition as a transactional
//! batch of the producer (so they survive a crash and replicate like any commit) and held
//! aside in memory. The transaction coordinator's marker in that partition settles them: a
//! commit applies them to the group coordinator, an abort drops them. Replaying the partition
//! does the same: transactional records wait for their producer's marker.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use super::coordinator::GroupCoordinator;
use super::error::GroupError;
use super::offsets::{committed_offsets, encode_commits, OffsetMetadataManager, OffsetWrite};
use super::state::CommittedOffset;

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

    /// The partitions an open transaction holds an offset of `group` for: an OffsetFetch that
    /// requires stable offsets (KIP-447) is told UNSTABLE_OFFSET_COMMIT for them rather than
    /// given the offset the transaction may be about to replace.
    pub fn pending_partitions(&self, group: &str) -> HashSet<(String, i32)> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .flatten()
            .filter(|(g, _)| g == group)
            .flat_map(|(_, offsets)| offsets.iter().map(|(tp, _)| tp.clone()))
            .collect()
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
    // Replicated like any commit (offsets.commit.required.acks=-1): the offsets must survive
    // the group coordinator's failover as the transaction's records do.
    let encoded = encode_commits(group_id, &entries, now_ms);
    let info = offsets
        .append_replicated(
            group_id,
            &encoded,
            now_ms,
            Some((producer_id, producer_epoch)),
        )
        .await?;
    let pending = committed_offsets(entries, info.base_offset, now_ms);
    offsets
        .txn_offsets
        .add(producer_id, partition, group_id.to_string(), pending);
    Ok(())
}

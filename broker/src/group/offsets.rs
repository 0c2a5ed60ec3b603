//! Committed offsets on disk: Kafka's OffsetMetadataManager over the replica manager.
//!
//! A commit is appended to the group's `__consumer_offsets` partition and fsynced before it is
//! acknowledged; at start-up those partitions are replayed into the coordinator, so no
//! acknowledged commit is lost to a crash. The coordinator holds the offsets in memory; this
//! module only reads and writes their records.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::coordinator::{GroupCoordinator, Ownership};
use super::error::GroupError;
use super::records::{self, GroupMetadataKey, GroupMetadataValue, OffsetKey, OffsetValue};
use super::state::CommittedOffset;
use super::txn_offsets::{is_commit_marker, PendingOffsets, TxnOffsetStore};
use crate::config::BrokerConfig;
use crate::log::AppendInfo;
use crate::log::PartitionLog;
use crate::metadata::controller::Controller;
use crate::replica::{Partition, ReplicaManager, Role};

/// The internal topic of committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A commit to write: (topic, partition) and Some((offset, leader epoch, metadata)), or None
/// to delete the committed offset.
pub type OffsetWrite = ((String, i32), Option<(i64, i32, String)>);

/// How long a commit waits for the in-sync replicas (Kafka's `offsets.commit.timeout.ms`).
const OFFSETS_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The group error a refused offsets append means (as Kafka maps them for OffsetCommit).
fn refused(what: &str, (error, message): crate::replica::Refusal) -> GroupError {
    use kafka_protocol::error::ResponseError;
    match error {
        ResponseError::NotLeaderOrFollower | ResponseError::FencedLeaderEpoch => {
            GroupError::NotCoordinator
        }
        _ => {
            tracing::warn!(%message, "cannot {what} {OFFSETS_TOPIC}");
            GroupError::CoordinatorNotAvailable
        }
    }
}

/// The records of offset commits (`Some`) and deletions (`None`) of one group.
pub(super) fn encode_commits(
    group_id: &str,
    entries: &[OffsetWrite],
    now_ms: i64,
) -> Vec<(Bytes, Option<Bytes>)> {
    entries
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
        .collect()
}

/// The committed offsets `entries` became once written from `base_offset` on, one record each.
pub(super) fn committed_offsets(
    entries: Vec<OffsetWrite>,
    base_offset: i64,
    now_ms: i64,
) -> Vec<((String, i32), Option<CommittedOffset>)> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let value = value.map(|(offset, leader_epoch, metadata)| CommittedOffset {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp: now_ms,
                log_offset: base_offset + i as i64,
            });
            (key, value)
        })
        .collect()
}

/// Reads and writes the records of `__consumer_offsets` (Kafka's OffsetMetadataManager).
///
/// It goes through the controller only to create the topic on first use, and through the
/// replica manager for the partition logs, so that with the cluster it can follow the
/// leadership of the offsets partitions without knowing about the rest of the broker.
pub struct OffsetMetadataManager {
    controller: Arc<Controller>,
    replicas: Arc<ReplicaManager>,
    /// `offsets.topic.num.partitions`, used when the topic is created.
    num_partitions: i32,
    /// `offsets.topic.replication.factor`, used when the topic is created.
    replication_factor: i16,
    /// The `__consumer_offsets` partitions whose groups are loaded here.
    led: Arc<Mutex<BTreeSet<i32>>>,
    /// Offsets of open transactions, applied when they commit.
    pub txn_offsets: TxnOffsetStore,
}

impl OffsetMetadataManager {
    /// A manager writing through `replicas`, creating the topic through `controller`.
    pub fn new(
        config: &BrokerConfig,
        controller: Arc<Controller>,
        replicas: Arc<ReplicaManager>,
    ) -> Self {
        OffsetMetadataManager {
            controller,
            replicas,
            num_partitions: config.offsets_topic_num_partitions,
            replication_factor: config.offsets_topic_replication_factor,
            led: Arc::new(Mutex::new(BTreeSet::new())),
            txn_offsets: TxnOffsetStore::default(),
        }
    }

    /// Creates `__consumer_offsets` on first use (as Kafka does, on the first FindCoordinator
    /// or commit); returns its partition count. Its replication factor is
    /// `offsets.topic.replication.factor`, capped at the brokers there are, so that a
    /// single-node broker has one too.
    pub async fn ensure_topic(&self) -> Result<i32, GroupError> {
        self.controller
            .ensure_internal_topic(
                OFFSETS_TOPIC,
                self.num_partitions,
                self.replication_factor,
                |_| {
                    [
                        ("cleanup.policy".to_string(), "compact".to_string()),
                        ("segment.bytes".to_string(), "104857600".to_string()),
                    ]
                    .into()
                },
            )
            .await
            .map_err(|error| {
                tracing::error!(%error, "cannot create {OFFSETS_TOPIC}");
                GroupError::CoordinatorNotAvailable
            })
    }

    /// The `__consumer_offsets` partition of a group.
    pub fn partition_of(&self, group_id: &str, partitions: i32) -> i32 {
        records::partition_for(group_id, partitions)
    }

    /// The group's `__consumer_offsets` partition, which this broker must lead
    /// (NOT_COORDINATOR otherwise: the client looks the coordinator up again).
    pub fn offsets_replica(&self, group_id: &str) -> Result<Arc<Partition>, GroupError> {
        let partitions = self
            .controller
            .topic(OFFSETS_TOPIC)
            .map(|t| t.partitions)
            .ok_or(GroupError::CoordinatorNotAvailable)?;
        let partition = records::partition_for(group_id, partitions);
        let replica = self
            .replicas
            .replica(OFFSETS_TOPIC, partition)
            .ok_or(GroupError::NotCoordinator)?;
        if replica.role() != Role::Leader {
            return Err(GroupError::NotCoordinator);
        }
        Ok(replica)
    }

    /// Appends records to the group's `__consumer_offsets` partition as its leader and waits
    /// until they are fsynced here and on every in-sync replica (Kafka's
    /// `offsets.commit.required.acks=-1`): an acknowledged commit survives the coordinator's
    /// failover.
    ///
    /// With `producer` (id, epoch) the records are that producer's transactional batch
    /// (TxnOffsetCommit), held back from the group until the transaction's marker.
    pub(super) async fn append_replicated(
        &self,
        group_id: &str,
        entries: &[(Bytes, Option<Bytes>)],
        now_ms: i64,
        producer: Option<(i64, i16)>,
    ) -> Result<AppendInfo, GroupError> {
        let replica = self.offsets_replica(group_id)?;
        let appended = match producer {
            None => records::encode_batch(entries, now_ms)
                .map(|batch| replica.append_as_leader(batch, -1, now_ms)),
            Some((producer_id, producer_epoch)) => {
                records::encode_transactional_batch(entries, now_ms, producer_id, producer_epoch)
                    .map(|batch| replica.append_txn_offsets_as_leader(batch, now_ms))
            }
        };
        let (info, epoch) = appended
            .ok_or(GroupError::CoordinatorNotAvailable)?
            .map_err(|refusal| refused("append to", refusal))?;
        replica.log().request_durable(info.last_offset);
        replica
            .log()
            .wait_durable(info.last_offset)
            .await
            .map_err(|error| {
                tracing::error!(%error, "cannot fsync {OFFSETS_TOPIC}");
                GroupError::CoordinatorNotAvailable
            })?;
        replica
            .wait_for_isr(info.last_offset, epoch, OFFSETS_COMMIT_TIMEOUT)
            .await
            .map_err(|refusal| refused("replicate", refusal))?;
        Ok(info)
    }

    /// Durably writes offset commits (`Some`) and deletions (`None`) of one group, then applies
    /// them to `coordinator`. Returns once they are fsynced.
    pub async fn store(
        &self,
        coordinator: &GroupCoordinator,
        group_id: &str,
        entries: Vec<OffsetWrite>,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.ensure_topic().await?;
        // A topic this call created is led here before the group timer notices.
        self.sync_coordination(coordinator);
        let encoded = encode_commits(group_id, &entries, now_ms);
        let info = self
            .append_replicated(group_id, &encoded, now_ms, None)
            .await?;
        coordinator.apply_offsets(
            group_id,
            committed_offsets(entries, info.base_offset, now_ms),
        );
        Ok(())
    }

    /// Whether this broker coordinates `group_id`: it leads the group's `__consumer_offsets`
    /// partition and has loaded its groups (before the topic exists, any broker may take the
    /// group's first requests; its first commit creates the topic and finds the coordinator).
    /// A leader that has not loaded the partition yet answers COORDINATOR_LOAD_IN_PROGRESS: an
    /// OffsetFetch answered before the load would tell a consumer it has no committed offset.
    pub fn ownership(&self) -> Ownership {
        let controller = self.controller.clone();
        let replicas = self.replicas.clone();
        let led = self.led.clone();
        Arc::new(move |group_id: &str| {
            let Some(topic) = controller.topic(OFFSETS_TOPIC) else {
                return Ok(());
            };
            let partition = records::partition_for(group_id, topic.partitions);
            let leads = replicas
                .replica(OFFSETS_TOPIC, partition)
                .is_some_and(|r| r.role() == Role::Leader);
            if !leads {
                return Err(GroupError::NotCoordinator);
            }
            let loaded = led
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&partition);
            if loaded {
                Ok(())
            } else {
                Err(GroupError::CoordinatorLoadInProgress)
            }
        })
    }

    /// Durably writes a group's metadata record (`None`: a tombstone, the group is deleted).
    /// Returns once it is fsynced.
    pub async fn store_group(
        &self,
        coordinator: &GroupCoordinator,
        group_id: &str,
        value: Option<GroupMetadataValue>,
    ) -> Result<(), GroupError> {
        self.ensure_topic().await?;
        // A topic this call created is led here before the group timer notices.
        self.sync_coordination(coordinator);
        let key = GroupMetadataKey {
            group: group_id.to_string(),
        }
        .encode();
        let now_ms = value.as_ref().map_or(0, |v| v.state_timestamp);
        self.append_replicated(group_id, &[(key, value.map(|v| v.encode()))], now_ms, None)
            .await
            .map(|_| ())
    }

    /// Follows leadership of the `__consumer_offsets` partitions: groups of partitions this
    /// broker now leads are loaded from the log (their committed offsets), groups of partitions
    /// it no longer leads are forgotten. Cheap when nothing changed; the group timer calls it.
    pub fn sync_coordination(&self, coordinator: &GroupCoordinator) {
        let Some(hosted) = self.replicas.topic(OFFSETS_TOPIC) else {
            return;
        };
        let now_led: BTreeSet<i32> = hosted
            .partitions
            .iter()
            .filter(|(_, r)| r.role() == Role::Leader)
            .map(|(index, _)| *index)
            .collect();
        let mut led = self.led.lock().unwrap_or_else(|e| e.into_inner());
        if *led == now_led {
            return;
        }
        let lost: BTreeSet<i32> = led.difference(&now_led).copied().collect();
        let gained: BTreeSet<i32> = now_led.difference(&led).copied().collect();
        let partitions = self
            .controller
            .topic(OFFSETS_TOPIC)
            .map_or(self.num_partitions, |t| t.partitions);
        if !lost.is_empty() {
            tracing::info!(
                ?lost,
                "no longer coordinating the groups of these offsets partitions"
            );
            coordinator.unload(|group| !lost.contains(&records::partition_for(group, partitions)));
            for index in &lost {
                self.txn_offsets.forget_partition(*index);
            }
        }
        if !gained.is_empty() {
            tracing::info!(
                ?gained,
                "coordinating the groups of these offsets partitions"
            );
            for index in &gained {
                if let Some(replica) = hosted.partitions.get(index) {
                    self.load_log(coordinator, replica.log(), *index);
                }
            }
        }
        *led = now_led;
    }

    /// Replays one `__consumer_offsets` partition into `coordinator`.
    fn load_log(&self, coordinator: &GroupCoordinator, log: &PartitionLog, partition: i32) {
        let mut loaded = 0usize;
        // Transactional commits wait for their producer's marker (see txn_offsets.rs).
        let mut open: HashMap<i64, Vec<(String, PendingOffsets)>> = HashMap::new();
        crate::log::replay_records(log, OFFSETS_TOPIC, |record| {
            if record.control {
                let settled = open.remove(&record.producer_id).unwrap_or_default();
                if is_commit_marker(record.key.as_ref()) {
                    for (group, offsets) in settled {
                        coordinator.apply_offsets(&group, offsets);
                    }
                }
                return;
            }
            let transactional = record.transactional;
            let producer_id = record.producer_id;
            let Some(key_bytes) = record.key else {
                return;
            };
            if let Some(key) = GroupMetadataKey::decode(key_bytes.clone()) {
                match record.value.map(GroupMetadataValue::decode) {
                    None => coordinator.restore(&key.group, None),
                    Some(Some(value)) => coordinator.restore(&key.group, Some(value)),
                    // Another version or damage: the members rejoin instead.
                    Some(None) => tracing::warn!(
                        group = %key.group,
                        offset = record.offset,
                        "unreadable group metadata in {OFFSETS_TOPIC}; skipped"
                    ),
                }
                loaded += 1;
                return;
            }
            let Some(key) = OffsetKey::decode(key_bytes) else {
                return;
            };
            let value = record
                .value
                .and_then(OffsetValue::decode)
                .map(|v| CommittedOffset {
                    offset: v.offset,
                    leader_epoch: v.leader_epoch,
                    metadata: v.metadata,
                    commit_timestamp: v.commit_timestamp,
                    log_offset: record.offset,
                });
            let entry = vec![((key.topic, key.partition), value)];
            if transactional {
                open.entry(producer_id)
                    .or_default()
                    .push((key.group, entry));
            } else {
                coordinator.apply_offsets(&key.group, entry);
            }
            loaded += 1;
        });
        for (producer_id, groups) in open {
            for (group, offsets) in groups {
                self.txn_offsets.add(producer_id, partition, group, offsets);
            }
        }
        tracing::info!(records = loaded, "replayed a partition of {OFFSETS_TOPIC}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use super::*;
    use crate::broker::Broker;

    fn config(dir: &Path) -> BrokerConfig {
        let listen = "127.0.0.1:0".parse().unwrap();
        BrokerConfig::new(listen, dir.to_path_buf())
    }

    /// A whole broker on `dir`: its offsets manager works through its controller and replicas.
    async fn open(dir: &Path) -> Arc<Broker> {
        Broker::open(config(dir), None).await.unwrap()
    }

    async fn close(broker: Arc<Broker>) {
        broker.close().await;
    }

    fn commit(offset: i64) -> Vec<OffsetWrite> {
        vec![(("t".to_string(), 0), Some((offset, -1, String::new())))]
    }

    fn committed(coordinator: &GroupCoordinator) -> Option<i64> {
        let all = coordinator.committed("g", None);
        all.first()
            .and_then(|(_, partitions)| partitions.first())
            .and_then(|(_, value)| value.as_ref())
            .map(|value| value.offset)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_use_creates_the_offsets_topic() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path()).await;
        broker.offsets.ensure_topic().await.unwrap();
        broker.offsets.offsets_replica("g").unwrap();
        assert!(broker.replicas.topic(OFFSETS_TOPIC).is_some());
        close(broker).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stored_commit_is_applied_to_the_coordinator() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path()).await;
        let coordinator = GroupCoordinator::new(&Arc::new(config(dir.path())));
        broker
            .offsets
            .store(&coordinator, "g", commit(42), 1)
            .await
            .unwrap();
        assert_eq!(committed(&coordinator), Some(42));
        close(broker).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_commits_are_loaded_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path()).await;
        let before = GroupCoordinator::new(&Arc::new(config(dir.path())));
        broker
            .offsets
            .store(&before, "g", commit(42), 1)
            .await
            .unwrap();
        close(broker).await;
        let broker = open(dir.path()).await;
        assert_eq!(committed(&broker.groups), Some(42));
        close(broker).await;
    }
}

//! The consumer: group membership (classic protocol), assignment strategies, committed
//! offsets, seeking, pausing, and pipelined fetches.
//!
//! ```no_run
//! # async fn run() -> millrace_client::Result<()> {
//! use std::time::Duration;
//! use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
//! use millrace_client::ClientConfig;
//!
//! let config = ConsumerConfig::builder(ClientConfig::new("localhost:9092"))
//!     .group_id("page-view-counter")
//!     .auto_offset_reset(AutoOffsetReset::Earliest)
//!     .build()?;
//! let mut consumer = Consumer::connect(config).await?;
//! consumer.subscribe(&["page-views"])?;
//! loop {
//!     for record in consumer.poll(Duration::from_secs(1)).await? {
//!         println!("{}-{}@{}: {:?}", record.topic, record.partition, record.offset, record.value);
//!     }
//! }
//! # }
//! ```
//!
//! Everything happens inside [`Consumer::poll`] (or [`Consumer::poll_event`]): joining the
//! group when needed, looking up start positions, sending fetches and handing out what they
//! brought. A background task only sends heartbeats, so a consumer that processes a batch
//! for a while stays in its group (up to `max_poll_interval`).
//!
//! Rebalances are visible two ways: a [`RebalanceListener`] called from within `poll`, and
//! [`Consumer::poll_event`], which returns [`ConsumerEvent::Revoked`] *before* the partitions
//! are given up, so the application can flush its work and [`Consumer::commit`] them, the
//! way Kafka's `onPartitionsRevoked` callback is used.

mod assignor;
mod config;
mod fetcher;
mod group;
mod group_metadata;
pub(crate) mod protocol;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tokio::task::JoinSet;

pub use assignor::AssignmentStrategy;
pub use config::{AutoOffsetReset, ConsumerConfig, ConsumerConfigBuilder};
pub use group::GroupWatch;
pub use group_metadata::ConsumerGroupMetadata;
pub use protocol::Subscription;

use crate::error::{ClientError, Result};
use crate::network::cluster::Cluster;
use crate::offsets::{
    commit_offsets, fetch_committed, fetch_committed_with_epochs, list_offsets,
    offsets_for_leader_epochs,
};
use crate::record::ConsumerRecord;
use crate::types::{ListedOffset, OffsetSpec, TopicPartition};
use crate::IsolationLevel;

use fetcher::{FetchLimits, FetchOutcome, FetchTarget, PartitionFetch};
use group::GroupMembership;

/// What [`Consumer::poll_event`] returns.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// Records, in offset order per partition.
    Records(Vec<ConsumerRecord>),
    /// These partitions are about to be taken away in a rebalance. They stay assigned until
    /// the next poll, so the application can finish its work on them and commit.
    Revoked(Vec<TopicPartition>),
    /// These partitions were added to the assignment.
    Assigned(Vec<TopicPartition>),
    /// These partitions were lost without a chance to commit (the member was removed from its
    /// generation, for example after missing heartbeats); another member may own them already.
    Lost(Vec<TopicPartition>),
}

/// Callbacks on assignment changes, called from within `poll`.
///
/// Every method has a default that does nothing, so an implementation states only what it
/// needs. With auto commit on, the consumer has already committed the revoked partitions'
/// positions when `on_partitions_revoked` runs; applications that commit themselves use
/// [`Consumer::poll_event`] instead, which lets them commit before the partitions go.
pub trait RebalanceListener: Send {
    /// Partitions about to be revoked.
    fn on_partitions_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// Partitions newly assigned.
    fn on_partitions_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// Partitions lost without a clean revocation (defaults to `on_partitions_revoked`).
    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_partitions_revoked(partitions);
    }
}

/// How partitions got to this consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    None,
    /// Through the group: the subscribed topics, sorted.
    Subscribed(Vec<String>),
    /// Chosen by the application with [`Consumer::assign`].
    Assigned,
}

/// Where a partition's position comes from when it is not known yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PositionSource {
    /// The group's committed offset, else `auto_offset_reset`.
    Committed,
    /// `auto_offset_reset` only (the committed offset is out of range).
    ResetPolicy,
    /// An explicit ListOffsets lookup (seek to beginning, end or time).
    Lookup(OffsetSpec),
}

/// One assigned partition.
#[derive(Debug)]
struct PartitionState {
    topic: Arc<str>,
    /// The offset of the next record to hand to the application; `None` until looked up.
    position: Option<i64>,
    /// How to find the position when it is `None`.
    source: PositionSource,
    /// The offset the next fetch starts at (after what is buffered).
    next_fetch: i64,
    /// Records fetched but not handed out yet, one chunk per fetch response (kept as the
    /// decoder's vectors, so a whole chunk can be handed out without moving its records).
    buffered: VecDeque<Chunk>,
    buffered_bytes: usize,
    paused: bool,
    /// Bumped by every seek; fetch answers for an older epoch are dropped.
    epoch: u64,
    in_flight: bool,
    /// No fetch before this (after an error).
    retry_at: Option<Instant>,
    high_watermark: i64,
    log_start_offset: i64,
    /// The leader epoch of the last record handed out (KIP-320's "offset epoch"): after a
    /// leader change, the new leader is asked where that epoch ends in its log, to find out
    /// whether records already consumed were truncated away.
    position_epoch: Option<i32>,
    /// The leader epoch of the last batch fetched (before `next_fetch`), sent as
    /// `last_fetched_epoch`.
    fetch_epoch: Option<i32>,
    /// The leader (node id, leader epoch) the last fetch went to; a different one in the
    /// metadata means the leadership moved.
    leader: Option<(i32, i32)>,
    /// The leader changed: no fetch until the position is validated with
    /// OffsetForLeaderEpoch.
    awaiting_validation: bool,
}

impl PartitionState {
    fn new(topic: Arc<str>) -> Self {
        PartitionState {
            topic,
            position: None,
            source: PositionSource::Committed,
            next_fetch: 0,
            buffered: VecDeque::new(),
            buffered_bytes: 0,
            paused: false,
            epoch: 0,
            in_flight: false,
            retry_at: None,
            high_watermark: -1,
            log_start_offset: -1,
            position_epoch: None,
            fetch_epoch: None,
            leader: None,
            awaiting_validation: false,
        }
    }

    fn reset_to(&mut self, source: PositionSource) {
        self.position = None;
        self.source = source;
        self.clear_buffer();
        self.epoch += 1;
        self.forget_epochs();
    }

    /// A seek to an offset whose epoch is unknown: nothing to validate it against (as in Java,
    /// an explicit seek is trusted).
    fn seek(&mut self, offset: i64) {
        self.position = Some(offset);
        self.next_fetch = offset;
        self.clear_buffer();
        self.epoch += 1;
        self.forget_epochs();
    }

    fn forget_epochs(&mut self) {
        self.position_epoch = None;
        self.fetch_epoch = None;
        self.awaiting_validation = false;
    }

    /// Compares the leader the metadata names now with the one fetched from last; a change
    /// with a known position epoch starts a validation (KIP-320). Records buffered from the
    /// old leader are dropped: they may be among what the new leader truncated, and the
    /// validated position refetches them otherwise.
    fn note_leader(&mut self, node: i32, leader_epoch: i32) {
        let moved = self
            .leader
            .is_some_and(|(old_node, old_epoch)| old_node != node || leader_epoch > old_epoch);
        self.leader = Some((node, leader_epoch));
        if moved && self.position_epoch.is_some() && !self.awaiting_validation {
            if let Some(position) = self.position {
                tracing::debug!(
                    node,
                    leader_epoch,
                    position,
                    "leader changed; validating the position"
                );
                self.awaiting_validation = true;
                self.next_fetch = position;
                self.fetch_epoch = self.position_epoch;
                self.clear_buffer();
                self.epoch += 1;
            }
        }
    }

    /// Applies what the leader said about the epoch of the position: `end_offset` is where
    /// `leader_epoch` ends in its log. Below the position, the log was truncated: with a reset
    /// policy the position moves back to the divergence point (the first offset not known
    /// to match, as the Java consumer does), without one a [`ClientError::LogTruncation`]
    /// is returned and the partition stays unvalidated until the application seeks.
    fn apply_epoch_end(
        &mut self,
        partition: &TopicPartition,
        leader_epoch: i32,
        end_offset: i64,
        reset: AutoOffsetReset,
    ) -> Result<()> {
        let Some(position) = self.position else {
            self.awaiting_validation = false;
            return Ok(());
        };
        if leader_epoch < 0 || end_offset < 0 {
            // The leader knows no such epoch (or no end for it): nothing matches, so the
            // position is as good as out of range.
            tracing::info!(%partition, position, "the leader has no end offset for the position's epoch; resetting by auto_offset_reset");
            self.reset_to(PositionSource::ResetPolicy);
            return Ok(());
        }
        if end_offset >= position {
            self.awaiting_validation = false;
            return Ok(());
        }
        if reset == AutoOffsetReset::None {
            return Err(ClientError::LogTruncation {
                topic: partition.topic.clone(),
                partition: partition.partition,
                position,
                divergent_offset: end_offset,
            });
        }
        tracing::warn!(%partition, position, divergent_offset = end_offset, leader_epoch,
            "log truncation detected; moving the position back to where the logs diverge");
        self.seek(end_offset);
        self.position_epoch = Some(leader_epoch);
        self.fetch_epoch = Some(leader_epoch);
        Ok(())
    }

    /// Past compacted-away offsets or control batches, with nothing buffered, the position
    /// follows the fetch position. A fetch in flight does not hold it back: it starts at the
    /// fetch position, so nothing before it is still to come (a log ending with a
    /// transaction marker would otherwise keep the position before the marker for as long
    /// as long polls are in flight, which is always).
    fn skip_to_fetch_position(&mut self) {
        if self.buffered.is_empty() {
            if let Some(position) = self.position {
                if self.next_fetch > position {
                    self.position = Some(self.next_fetch);
                    self.position_epoch = self.fetch_epoch.or(self.position_epoch);
                }
            }
        }
    }

    fn clear_buffer(&mut self) {
        self.buffered.clear();
        self.buffered_bytes = 0;
    }
}

/// The records of one fetch response for one partition.
#[derive(Debug)]
struct Chunk {
    records: VecDeque<ConsumerRecord>,
    /// Average bytes per record, for the prefetch limit.
    record_bytes: usize,
}

impl Chunk {
    fn new(records: Vec<ConsumerRecord>, bytes: usize) -> Self {
        let record_bytes = bytes / records.len().max(1);
        Chunk {
            // From a Vec this is O(1): no record moves.
            records: VecDeque::from(records),
            record_bytes,
        }
    }
}

/// One partition's position to validate with its new leader.
#[derive(Debug)]
struct EpochQuery {
    partition: TopicPartition,
    current_leader_epoch: i32,
    /// The epoch of the last consumed record.
    leader_epoch: i32,
    position: i64,
    /// The partition's seek counter when asked.
    seek_epoch: u64,
}

/// A Kafka consumer. See the [module documentation](self) for an example.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    group: Option<GroupMembership>,
    mode: Mode,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    fetches: JoinSet<FetchOutcome>,
    nodes_in_flight: HashSet<i32>,
    events: VecDeque<ConsumerEvent>,
    /// Partitions announced as revoked and given up at the start of the next poll.
    revoking: Option<Vec<TopicPartition>>,
    /// In a mutex only so that `Consumer` is `Sync` (its futures can then be sent between
    /// threads); it is never contended.
    listener: Option<std::sync::Mutex<Box<dyn RebalanceListener>>>,
    next_auto_commit: Instant,
    /// An error from a fetch to report from the next poll.
    pending_error: Option<ClientError>,
    /// Where the next poll starts handing out records, so no partition starves.
    rotation: usize,
    topic_names: HashMap<String, Arc<str>>,
    closed: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.config.group_id)
            .field("mode", &self.mode)
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.fetches.abort_all();
        self.cluster.close();
    }
}

impl Consumer {
    /// Connects to the cluster. Nothing is read until [`Consumer::subscribe`] or
    /// [`Consumer::assign`] and then [`Consumer::poll`].
    pub async fn connect(config: ConsumerConfig) -> Result<Consumer> {
        config.validate()?;
        let cluster = Cluster::connect(config.client.clone(), false).await?;
        let group = config
            .group_id
            .clone()
            .map(|group| GroupMembership::new(cluster.clone(), config.clone(), group));
        Ok(Consumer {
            next_auto_commit: Instant::now() + config.auto_commit_interval,
            cluster,
            config,
            group,
            mode: Mode::None,
            partitions: BTreeMap::new(),
            fetches: JoinSet::new(),
            nodes_in_flight: HashSet::new(),
            events: VecDeque::new(),
            revoking: None,
            listener: None,
            pending_error: None,
            rotation: 0,
            topic_names: HashMap::new(),
            closed: false,
        })
    }

    /// The settings this consumer runs with.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Sets the callbacks for assignment changes.
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Some(std::sync::Mutex::new(Box::new(listener)));
    }

    /// Subscribes to `topics` through the consumer group (replacing any earlier subscription);
    /// partitions arrive with the next polls. Needs a `group_id`. Takes any list of names:
    /// `&["views"]`, a `Vec<String>`, an iterator of `&str`.
    pub fn subscribe<I>(&mut self, topics: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let topics: Vec<String> = topics.into_iter().map(|t| t.as_ref().to_string()).collect();
        self.check_open()?;
        let Some(group) = &self.group else {
            return Err(ClientError::InvalidArgument(
                "subscribe needs a group_id; use assign to read without a group".to_string(),
            ));
        };
        if topics.is_empty() || topics.iter().any(|t| t.is_empty()) {
            return Err(ClientError::InvalidArgument(
                "subscribe needs at least one non-empty topic name".to_string(),
            ));
        }
        if self.mode == Mode::Assigned {
            return Err(ClientError::InvalidArgument(
                "this consumer uses assign; call unsubscribe first".to_string(),
            ));
        }
        let mut sorted = topics;
        sorted.sort();
        sorted.dedup();
        self.cluster.add_interest(sorted.iter().map(String::as_str));
        if self.mode != Mode::Subscribed(sorted.clone()) {
            self.mode = Mode::Subscribed(sorted);
            group.request_rejoin();
        }
        Ok(())
    }

    /// Reads exactly these partitions, without group membership (offsets can still be
    /// committed to the `group_id`, if one is set). Replaces any earlier assignment; positions
    /// of partitions kept are kept.
    pub fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.check_open()?;
        if matches!(self.mode, Mode::Subscribed(_)) {
            return Err(ClientError::InvalidArgument(
                "this consumer is subscribed; call unsubscribe first".to_string(),
            ));
        }
        self.mode = Mode::Assigned;
        let wanted: HashSet<&TopicPartition> = partitions.iter().collect();
        self.partitions.retain(|tp, _| wanted.contains(tp));
        for tp in partitions {
            self.add_partition(tp.clone());
        }
        self.cluster
            .add_interest(partitions.iter().map(|tp| tp.topic.as_str()));
        Ok(())
    }

    /// Stops reading: leaves the group (after an auto commit) or drops the manual assignment.
    pub async fn unsubscribe(&mut self) -> Result<()> {
        self.check_open()?;
        if let Mode::Subscribed(_) = self.mode {
            if self.config.enable_auto_commit {
                self.commit_positions_quietly().await;
            }
            let revoked: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
            if !revoked.is_empty() {
                if let Some(listener) = self.listener.as_mut() {
                    listener
                        .get_mut()
                        .unwrap_or_else(|p| p.into_inner())
                        .on_partitions_revoked(&revoked);
                }
            }
            if let Some(group) = &self.group {
                group.leave().await;
                // A fresh membership for a later subscribe.
                let group_id = self.config.group_id.clone().unwrap_or_default();
                self.group = Some(GroupMembership::new(
                    self.cluster.clone(),
                    self.config.clone(),
                    group_id,
                ));
            }
        }
        self.mode = Mode::None;
        self.partitions.clear();
        self.revoking = None;
        self.events.clear();
        Ok(())
    }

    /// The partitions assigned now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// The subscribed topics (empty without a subscription).
    pub fn subscription(&self) -> Vec<String> {
        match &self.mode {
            Mode::Subscribed(topics) => topics.clone(),
            _ => Vec::new(),
        }
    }

    /// A watch on the group membership that another task may hold (`None` without a group).
    pub fn group_watch(&self) -> Option<GroupWatch> {
        self.group.as_ref().map(|group| group.watch())
    }

    /// This member's id and generation in the group (`None` outside a generation).
    pub fn group_generation(&self) -> Option<(String, i32)> {
        let identity = self.group.as_ref()?.state.identity();
        (identity.generation >= 0).then_some((identity.member_id, identity.generation))
    }

    /// This member's group metadata for a transactional producer's offsets (KIP-447):
    /// `None` without a group id. Outside a generation the generation is -1.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        let group_id = self.config.group_id.clone()?;
        let (member_id, generation_id) = match &self.group {
            Some(group) => {
                let identity = group.state.identity();
                (identity.member_id, identity.generation)
            }
            None => (String::new(), -1),
        };
        Some(ConsumerGroupMetadata {
            group_id,
            generation_id,
            member_id,
            group_instance_id: self.config.group_instance_id.clone(),
        })
    }

    /// Rejoins the group at the next poll (Kafka's `enforceRebalance`): for an application
    /// that learned its generation ended, for example from a transactional offset commit
    /// refused with ILLEGAL_GENERATION.
    pub fn enforce_rebalance(&self) {
        if let Some(group) = &self.group {
            group.request_rejoin();
        }
    }

    /// The offset of the next record `poll` will return for `partition`, if known.
    pub fn position(&self, partition: &TopicPartition) -> Option<i64> {
        self.partitions.get(partition).and_then(|p| p.position)
    }

    /// The high watermark the last fetch of `partition` reported (-1 before any fetch).
    pub fn high_watermark(&self, partition: &TopicPartition) -> i64 {
        self.partitions
            .get(partition)
            .map_or(-1, |p| p.high_watermark)
    }

    /// Records between the position and the high watermark of `partition`, as of the last
    /// fetch (`None` if either is unknown).
    pub fn lag(&self, partition: &TopicPartition) -> Option<i64> {
        let state = self.partitions.get(partition)?;
        let position = state.position?;
        (state.high_watermark >= 0).then(|| (state.high_watermark - position).max(0))
    }

    /// Moves `partition`'s position to `offset`; the next poll reads from there.
    pub fn seek(&mut self, partition: &TopicPartition, offset: i64) -> Result<()> {
        if offset < 0 {
            return Err(ClientError::InvalidArgument(format!(
                "cannot seek {partition} to negative offset {offset}"
            )));
        }
        self.assigned_mut(partition)?.seek(offset);
        Ok(())
    }

    /// Moves the positions of `partitions` to the first record still stored.
    pub fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_lookup(partitions, OffsetSpec::Earliest)
    }

    /// Moves the positions of `partitions` to the end of the log (only new records).
    pub fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.seek_lookup(partitions, OffsetSpec::Latest)
    }

    /// Moves the positions of `partitions` to the first record with a timestamp at or after
    /// `timestamp_ms` (the end of the log where there is none).
    pub fn seek_to_timestamp(
        &mut self,
        partitions: &[TopicPartition],
        timestamp_ms: i64,
    ) -> Result<()> {
        self.seek_lookup(partitions, OffsetSpec::Timestamp(timestamp_ms))
    }

    fn seek_lookup(&mut self, partitions: &[TopicPartition], spec: OffsetSpec) -> Result<()> {
        for tp in partitions {
            self.assigned_mut(tp)?;
        }
        for tp in partitions {
            self.assigned_mut(tp)?
                .reset_to(PositionSource::Lookup(spec));
        }
        Ok(())
    }

    /// Stops fetching `partitions` (they stay assigned; buffered records are kept for later).
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            self.assigned_mut(tp)?.paused = true;
        }
        Ok(())
    }

    /// Resumes fetching paused `partitions`.
    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            self.assigned_mut(tp)?.paused = false;
        }
        Ok(())
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Offsets for `partitions` by [`OffsetSpec`] (ListOffsets), without moving positions.
    pub async fn offsets_for(
        &self,
        partitions: &[TopicPartition],
        spec: OffsetSpec,
    ) -> Result<HashMap<TopicPartition, ListedOffset>> {
        let specs: Vec<(TopicPartition, OffsetSpec)> =
            partitions.iter().map(|tp| (tp.clone(), spec)).collect();
        list_offsets(&self.cluster, &specs, self.config.isolation_level).await
    }

    /// The partition indexes of `topic` (from metadata, refreshed if the topic is unknown).
    pub async fn partitions_for(&self, topic: &str) -> Result<Vec<i32>> {
        self.cluster.add_interest([topic]);
        let mut metadata = self.cluster.fresh_metadata().await?;
        if !metadata.topics.contains_key(topic) {
            metadata = self.cluster.refresh_interest().await?;
        }
        let info = metadata
            .topics
            .get(topic)
            .ok_or_else(|| ClientError::kafka("Metadata", format!("topic {topic}"), 3, None))?;
        if info.error_code != 0 {
            return Err(ClientError::kafka(
                "Metadata",
                format!("topic {topic}"),
                info.error_code,
                None,
            ));
        }
        Ok(info.partitions.iter().map(|p| p.id).collect())
    }

    /// Commits the current positions of every assigned partition, and waits for the answer.
    pub async fn commit(&mut self) -> Result<()> {
        let offsets = self.positions();
        self.commit_offsets(&offsets).await
    }

    /// Commits `offsets` (each the offset of the next record to read, as in Kafka).
    pub async fn commit_offsets(&mut self, offsets: &HashMap<TopicPartition, i64>) -> Result<()> {
        self.check_open()?;
        let Some(group) = self.config.group_id.clone() else {
            return Err(ClientError::InvalidArgument(
                "commit needs a group_id".to_string(),
            ));
        };
        let (member_id, generation) = match (&self.mode, &self.group) {
            (Mode::Subscribed(_), Some(membership)) => {
                let identity = membership.state.identity();
                (identity.member_id, identity.generation)
            }
            // Simple (assign-mode) commits are outside any generation.
            _ => (String::new(), -1),
        };
        // An offset that is a partition's position goes with the epoch of the record before
        // it; any other offset has no known epoch.
        let epochs: HashMap<TopicPartition, i32> = offsets
            .iter()
            .filter_map(|(tp, offset)| {
                let state = self.partitions.get(tp)?;
                (state.position == Some(*offset))
                    .then_some(state.position_epoch)
                    .flatten()
                    .map(|epoch| (tp.clone(), epoch))
            })
            .collect();
        let result = commit_offsets(
            &self.cluster,
            &group,
            generation,
            &member_id,
            self.config.group_instance_id.as_deref(),
            offsets,
            &epochs,
        )
        .await;
        if let Err(error) = &result {
            if matches!(
                error.kafka_error(),
                Some(
                    ResponseError::RebalanceInProgress
                        | ResponseError::IllegalGeneration
                        | ResponseError::UnknownMemberId
                )
            ) {
                if let Some(membership) = &self.group {
                    membership.request_rejoin();
                }
            }
        }
        result
    }

    /// The group's committed offsets for `partitions` (partitions without one are left out).
    /// A read_committed consumer waits for offsets an open transaction is writing (KIP-447).
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, i64>> {
        let Some(group) = &self.config.group_id else {
            return Err(ClientError::InvalidArgument(
                "committed offsets need a group_id".to_string(),
            ));
        };
        fetch_committed(
            &self.cluster,
            group,
            Some(partitions),
            self.requires_stable_offsets(),
        )
        .await
    }

    /// A read_committed consumer never starts before offsets a transaction is writing
    /// (KIP-447's `require_stable`): it would read again what that transaction's output
    /// covers once it commits.
    fn requires_stable_offsets(&self) -> bool {
        self.config.isolation_level == IsolationLevel::ReadCommitted
    }

    /// The positions of all assigned partitions that have one.
    pub fn positions(&self) -> HashMap<TopicPartition, i64> {
        self.partitions
            .iter()
            .filter_map(|(tp, p)| p.position.map(|offset| (tp.clone(), offset)))
            .collect()
    }

    /// Waits up to `timeout` for records and returns them (empty if none came). Rebalance
    /// events go to the [`RebalanceListener`], if one is set.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.poll_event(remaining).await? {
                Some(ConsumerEvent::Records(records)) => return Ok(records),
                Some(_) => {}
                None => return Ok(Vec::new()),
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// The next record, waiting as long as it takes.
    pub async fn recv(&mut self) -> Result<ConsumerRecord> {
        // Buffered records come back without waiting; yield every so many so that a tight
        // loop does not starve the fetches and heartbeats woken on this worker thread.
        tokio::task::coop::consume_budget().await;
        loop {
            if let Some(record) = self.take_records(1).pop() {
                return Ok(record);
            }
            let records = self.poll_limited(Duration::from_secs(1), 1).await?;
            if let Some(record) = records.into_iter().next() {
                return Ok(record);
            }
        }
    }

    /// The records as a stream, one at a time (each handed out only when the stream is
    /// polled, so auto commit never commits a record the application has not seen).
    pub fn stream(&mut self) -> impl futures_util::Stream<Item = Result<ConsumerRecord>> + '_ {
        futures_util::stream::unfold(self, |consumer| async move {
            if consumer.closed {
                return None;
            }
            let next = consumer.recv().await;
            Some((next, consumer))
        })
    }

    async fn poll_limited(
        &mut self,
        timeout: Duration,
        max_records: usize,
    ) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.poll_event_limited(remaining, max_records).await? {
                Some(ConsumerEvent::Records(records)) => return Ok(records),
                Some(_) => {}
                None => return Ok(Vec::new()),
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    /// Waits up to `timeout` for the next thing that happens: records, or a change of
    /// assignment. `None` when the time ran out with nothing to report.
    pub async fn poll_event(&mut self, timeout: Duration) -> Result<Option<ConsumerEvent>> {
        let max = self.config.max_poll_records;
        self.poll_event_limited(timeout, max).await
    }

    async fn poll_event_limited(
        &mut self,
        timeout: Duration,
        max_records: usize,
    ) -> Result<Option<ConsumerEvent>> {
        self.check_open()?;
        let deadline = Instant::now() + timeout;
        if let Some(group) = &self.group {
            group.state.polled();
        }
        // Partitions announced as revoked on the previous poll are given up now.
        if let Some(revoked) = self.revoking.take() {
            for tp in &revoked {
                self.partitions.remove(tp);
            }
        }
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            if let Some(error) = self.pending_error.take() {
                return Err(error);
            }
            if let Some(event) = self.group_work(deadline).await? {
                self.notify_listener(&event);
                if matches!(event, ConsumerEvent::Revoked(_)) {
                    return Ok(Some(event));
                }
                self.events.push_back(event);
                continue;
            }
            self.maybe_auto_commit().await;
            self.update_positions().await?;
            self.ensure_leaders().await;
            self.validate_positions().await?;
            self.send_fetches();
            let records = self.take_records(max_records);
            if !records.is_empty() {
                return Ok(Some(ConsumerEvent::Records(records)));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.wait(deadline).await;
        }
    }

    /// Waits for a fetch to complete, the group to need attention, a retry to come due, or
    /// the deadline.
    async fn wait(&mut self, deadline: Instant) {
        let retry_due = self.partitions.values().filter_map(|p| p.retry_at).min();
        let mut wake_at = deadline;
        if let Some(at) = retry_due {
            wake_at = wake_at.min(at);
        }
        if self.config.enable_auto_commit && self.group.is_some() {
            wake_at = wake_at.min(self.next_auto_commit);
        }
        let changed = self.group.as_ref().map(|g| g.state.clone());
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at));
        let fetches = &mut self.fetches;
        let completed = tokio::select! {
            Some(joined) = fetches.join_next(), if !fetches.is_empty() => Some(joined),
            _ = async {
                match changed {
                    Some(state) => state.changed.notified().await,
                    None => std::future::pending().await,
                }
            } => None,
            _ = sleep => None,
        };
        match completed {
            Some(Ok(outcome)) => self.handle_fetch(outcome),
            Some(Err(error)) => tracing::warn!(%error, "fetch task failed"),
            None => {}
        }
        // Take whatever else completed meanwhile without waiting.
        while let Some(joined) = self.fetches.try_join_next() {
            match joined {
                Ok(outcome) => self.handle_fetch(outcome),
                Err(error) => tracing::warn!(%error, "fetch task failed"),
            }
        }
    }

    /// Joins or rejoins the group when needed; returns an assignment change to report.
    async fn group_work(&mut self, deadline: Instant) -> Result<Option<ConsumerEvent>> {
        let Mode::Subscribed(topics) = &self.mode else {
            return Ok(None);
        };
        let topics = topics.clone();
        let Some(group) = &self.group else {
            return Ok(None);
        };
        if let Some(error) = group.state.take_fatal() {
            return Err(error);
        }
        if group.state.lost.swap(false, Ordering::AcqRel) && !self.partitions.is_empty() {
            let lost: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
            self.partitions.clear();
            return Ok(Some(ConsumerEvent::Lost(lost)));
        }
        if !group.state.rejoin_needed.load(Ordering::Acquire) {
            return Ok(None);
        }
        let cooperative = group.cooperative();
        if !cooperative && !self.partitions.is_empty() {
            // Eager protocol: give up everything before joining.
            if self.config.enable_auto_commit {
                self.commit_positions_quietly().await;
            }
            let revoked: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
            self.revoking = Some(revoked.clone());
            return Ok(Some(ConsumerEvent::Revoked(revoked)));
        }
        let owned: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        // A join may take the whole rebalance; it is not bounded by this poll's timeout.
        let join_deadline = deadline.max(Instant::now() + self.cluster.config.request_timeout);
        let group = self.group.as_ref().ok_or(ClientError::Closed("consumer"))?;
        let joined = group.join(&topics, &owned, join_deadline).await?;
        let new: HashSet<&TopicPartition> = joined.assignment.iter().collect();
        let revoked: Vec<TopicPartition> = owned
            .iter()
            .filter(|tp| !new.contains(tp))
            .cloned()
            .collect();
        let added: Vec<TopicPartition> = joined
            .assignment
            .iter()
            .filter(|tp| !self.partitions.contains_key(tp))
            .cloned()
            .collect();
        tracing::debug!(assigned = ?joined.assignment, ?revoked, "assignment received");
        for tp in &added {
            self.add_partition(tp.clone());
        }
        if !added.is_empty() {
            let event = ConsumerEvent::Assigned(added);
            self.notify_listener(&event);
            self.events.push_back(event);
        }
        if !revoked.is_empty() {
            // Cooperative: give these up, then rejoin so they can move.
            if self.config.enable_auto_commit {
                let offsets: HashMap<TopicPartition, i64> = revoked
                    .iter()
                    .filter_map(|tp| self.position(tp).map(|o| (tp.clone(), o)))
                    .collect();
                if let Err(error) = self.commit_offsets(&offsets).await {
                    tracing::warn!(%error, "auto commit before revocation failed");
                }
            }
            for tp in &revoked {
                if let Some(state) = self.partitions.get_mut(tp) {
                    // No more records from these while the revocation is pending.
                    state.paused = true;
                    state.clear_buffer();
                }
            }
            self.revoking = Some(revoked.clone());
            if let Some(group) = &self.group {
                group.request_rejoin();
            }
            return Ok(Some(ConsumerEvent::Revoked(revoked)));
        }
        if joined.assignment.is_empty() && !joined.cooperative {
            // An eager member with nothing assigned still reports the (empty) assignment.
            let event = ConsumerEvent::Assigned(Vec::new());
            self.notify_listener(&event);
            self.events.push_back(event);
        }
        Ok(None)
    }

    fn notify_listener(&mut self, event: &ConsumerEvent) {
        let Some(listener) = self.listener.as_mut() else {
            return;
        };
        let listener = listener.get_mut().unwrap_or_else(|p| p.into_inner());
        match event {
            ConsumerEvent::Revoked(partitions) => listener.on_partitions_revoked(partitions),
            ConsumerEvent::Assigned(partitions) => listener.on_partitions_assigned(partitions),
            ConsumerEvent::Lost(partitions) => listener.on_partitions_lost(partitions),
            ConsumerEvent::Records(_) => {}
        }
    }

    async fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit
            || self.group.is_none()
            || Instant::now() < self.next_auto_commit
        {
            return;
        }
        self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
        self.commit_positions_quietly().await;
    }

    /// Commits current positions, logging (not returning) a failure: auto commit retries on
    /// its next interval, as Kafka's does.
    async fn commit_positions_quietly(&mut self) {
        if self.config.group_id.is_none() {
            return;
        }
        let offsets = self.positions();
        if offsets.is_empty() {
            return;
        }
        if let Err(error) = self.commit_offsets(&offsets).await {
            tracing::warn!(%error, "auto commit failed");
        }
    }

    /// Finds positions for partitions that have none: committed offsets, the reset policy,
    /// or explicit lookups from seeks.
    async fn update_positions(&mut self) -> Result<()> {
        let missing: Vec<(TopicPartition, PositionSource)> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.position.is_none())
            .map(|(tp, p)| (tp.clone(), p.source))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut resolved: HashMap<TopicPartition, i64> = HashMap::new();
        // Committed offsets that came with the epoch of the record before them.
        let mut committed_epochs: HashMap<TopicPartition, i32> = HashMap::new();
        let wants_committed: Vec<TopicPartition> = missing
            .iter()
            .filter(|(_, s)| *s == PositionSource::Committed)
            .map(|(tp, _)| tp.clone())
            .collect();
        if let (false, Some(group)) = (wants_committed.is_empty(), &self.config.group_id) {
            let committed = fetch_committed_with_epochs(
                &self.cluster,
                group,
                Some(&wants_committed),
                self.requires_stable_offsets(),
            )
            .await?;
            for (tp, (offset, epoch)) in committed {
                if let Some(epoch) = epoch {
                    committed_epochs.insert(tp.clone(), epoch);
                }
                resolved.insert(tp, offset);
            }
        }
        let mut lookups: Vec<(TopicPartition, OffsetSpec)> = Vec::new();
        for (tp, source) in &missing {
            if resolved.contains_key(tp) {
                continue;
            }
            let spec = match source {
                PositionSource::Lookup(spec) => *spec,
                PositionSource::Committed | PositionSource::ResetPolicy => {
                    match self.config.auto_offset_reset {
                        AutoOffsetReset::Earliest => OffsetSpec::Earliest,
                        AutoOffsetReset::Latest => OffsetSpec::Latest,
                        AutoOffsetReset::None => {
                            return Err(ClientError::NoOffsetForPartition {
                                topic: tp.topic.clone(),
                                partition: tp.partition,
                            })
                        }
                    }
                }
            };
            lookups.push((tp.clone(), spec));
        }
        if !lookups.is_empty() {
            let found = list_offsets(&self.cluster, &lookups, self.config.isolation_level).await?;
            let mut missing_end = Vec::new();
            for (tp, spec) in &lookups {
                match found.get(tp) {
                    Some(listed) if listed.offset >= 0 => {
                        resolved.insert(tp.clone(), listed.offset);
                    }
                    // No record at or after that time: the end of the log.
                    _ if matches!(spec, OffsetSpec::Timestamp(_)) => {
                        missing_end.push((tp.clone(), OffsetSpec::Latest))
                    }
                    _ => {}
                }
            }
            if !missing_end.is_empty() {
                let ends =
                    list_offsets(&self.cluster, &missing_end, self.config.isolation_level).await?;
                for (tp, listed) in ends {
                    resolved.insert(tp, listed.offset);
                }
            }
        }
        for (tp, offset) in resolved {
            if let Some(state) = self.partitions.get_mut(&tp) {
                if state.position.is_none() {
                    tracing::debug!(partition = %tp, offset, "position set");
                    state.seek(offset);
                    // A committed offset with its epoch is validated with the leader before
                    // the first fetch, as after a leader change: the log may have been
                    // truncated while nobody read it (KIP-320).
                    if let Some(epoch) = committed_epochs.get(&tp) {
                        state.position_epoch = Some(*epoch);
                        state.fetch_epoch = Some(*epoch);
                        state.awaiting_validation = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Validates the positions of partitions whose leader changed (KIP-320): asks each new
    /// leader with OffsetForLeaderEpoch where the epoch of the last consumed record ends in
    /// its log. A broker without the API cannot say, so its partitions go on unvalidated.
    async fn validate_positions(&mut self) -> Result<()> {
        let metadata = self.cluster.metadata();
        // A leader change is noticed when fetches are planned; do it here too so a partition
        // is validated before its first fetch from the new leader.
        for (tp, state) in self.partitions.iter_mut() {
            if let Some(leader) = metadata.leader(&tp.topic, tp.partition) {
                if state.position.is_some() && !state.paused && !state.in_flight {
                    state.note_leader(leader, metadata.leader_epoch(&tp.topic, tp.partition));
                }
            }
        }
        let now = Instant::now();
        let mut by_leader: BTreeMap<i32, Vec<EpochQuery>> = BTreeMap::new();
        for (tp, state) in self.partitions.iter_mut() {
            if !state.awaiting_validation
                || state.in_flight
                || state.retry_at.is_some_and(|at| at > now)
            {
                continue;
            }
            let (Some(position), Some(epoch)) = (state.position, state.position_epoch) else {
                state.awaiting_validation = false;
                continue;
            };
            let Some(leader) = metadata.leader(&tp.topic, tp.partition) else {
                continue;
            };
            by_leader.entry(leader).or_default().push(EpochQuery {
                partition: tp.clone(),
                current_leader_epoch: metadata.leader_epoch(&tp.topic, tp.partition),
                leader_epoch: epoch,
                position,
                seek_epoch: state.epoch,
            });
        }
        let retry_at = now + self.cluster.config.retry_backoff;
        for (leader, queries) in by_leader {
            let asked: Vec<(TopicPartition, i32, i32)> = queries
                .iter()
                .map(|q| (q.partition.clone(), q.current_leader_epoch, q.leader_epoch))
                .collect();
            let answers = match offsets_for_leader_epochs(&self.cluster, leader, &asked).await {
                Ok(answers) => answers,
                Err(ClientError::UnsupportedVersion { .. }) => {
                    tracing::debug!(
                        leader,
                        "broker lacks OffsetForLeaderEpoch; positions not validated"
                    );
                    for query in &queries {
                        if let Some(state) = self.partitions.get_mut(&query.partition) {
                            state.awaiting_validation = false;
                        }
                    }
                    continue;
                }
                Err(error) if error.is_retriable() => {
                    tracing::debug!(leader, %error, "OffsetForLeaderEpoch failed; retrying");
                    if error.leader_may_have_moved() {
                        self.cluster.invalidate_metadata();
                        self.refresh_metadata_in_background();
                    }
                    for query in &queries {
                        if let Some(state) = self.partitions.get_mut(&query.partition) {
                            state.retry_at = Some(retry_at);
                        }
                    }
                    continue;
                }
                Err(error) => return Err(error),
            };
            for (query, answer) in queries.into_iter().zip(answers) {
                let Some(state) = self.partitions.get_mut(&query.partition) else {
                    continue;
                };
                // The application moved the position meanwhile: the answer is moot.
                if state.epoch != query.seek_epoch || state.position != Some(query.position) {
                    continue;
                }
                match answer {
                    Ok(end) => state.apply_epoch_end(
                        &query.partition,
                        end.leader_epoch,
                        end.end_offset,
                        self.config.auto_offset_reset,
                    )?,
                    Err(error) if error.is_retriable() => {
                        state.retry_at = Some(retry_at);
                        if error.leader_may_have_moved() {
                            self.cluster.invalidate_metadata();
                            self.refresh_metadata_in_background();
                        }
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// Refreshes metadata first when a partition about to be fetched has no known leader
    /// (just assigned, or its leader moved), rather than waiting a retry backoff for it.
    async fn ensure_leaders(&mut self) {
        let metadata = self.cluster.metadata();
        let now = Instant::now();
        let missing = self.partitions.iter().any(|(tp, state)| {
            state.position.is_some()
                && !state.paused
                && state.retry_at.is_none_or(|at| at <= now)
                && metadata.leader(&tp.topic, tp.partition).is_none()
        });
        if missing {
            if let Err(error) = self.cluster.refresh_interest().await {
                tracing::debug!(%error, "metadata refresh failed");
            }
        }
    }

    /// Sends a fetch to every leader that has fetchable partitions and none in flight.
    fn send_fetches(&mut self) {
        let metadata = self.cluster.metadata();
        let now = Instant::now();
        let partition_max = self.config.max_partition_fetch_bytes.max(1) as usize;
        let mut by_node: BTreeMap<i32, Vec<FetchTarget>> = BTreeMap::new();
        let mut stale_metadata = false;
        for (tp, state) in self.partitions.iter_mut() {
            if state.paused
                || state.in_flight
                || state.position.is_none()
                || state.buffered_bytes >= partition_max
                || state.retry_at.is_some_and(|at| at > now)
            {
                continue;
            }
            let Some(leader) = metadata.leader(&tp.topic, tp.partition) else {
                stale_metadata = true;
                state.retry_at = Some(now + self.cluster.config.retry_backoff);
                continue;
            };
            let leader_epoch = metadata.leader_epoch(&tp.topic, tp.partition);
            state.note_leader(leader, leader_epoch);
            if state.awaiting_validation || self.nodes_in_flight.contains(&leader) {
                continue;
            }
            state.retry_at = None;
            by_node.entry(leader).or_default().push(FetchTarget {
                partition: tp.clone(),
                topic: state.topic.clone(),
                offset: state.next_fetch,
                epoch: state.epoch,
                current_leader_epoch: leader_epoch,
                last_fetched_epoch: state.fetch_epoch,
            });
        }
        if stale_metadata {
            self.refresh_metadata_in_background();
        }
        let limits = FetchLimits {
            max_wait: self.config.fetch_max_wait,
            min_bytes: self.config.fetch_min_bytes,
            max_bytes: self.config.fetch_max_bytes,
            partition_max_bytes: self.config.max_partition_fetch_bytes,
            isolation: self.config.isolation_level,
            check_crcs: self.config.check_crcs,
        };
        for (node, targets) in by_node {
            for target in &targets {
                if let Some(state) = self.partitions.get_mut(&target.partition) {
                    state.in_flight = true;
                }
            }
            self.nodes_in_flight.insert(node);
            self.fetches
                .spawn(fetcher::fetch(self.cluster.clone(), node, targets, limits));
        }
    }

    fn refresh_metadata_in_background(&self) {
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            if let Err(error) = cluster.refresh_interest().await {
                tracing::debug!(%error, "metadata refresh failed");
            }
        });
    }

    /// Buffers a fetch's records where the partition is still where the fetch left it.
    fn handle_fetch(&mut self, outcome: FetchOutcome) {
        self.nodes_in_flight.remove(&outcome.node);
        for target in &outcome.targets {
            if let Some(state) = self.partitions.get_mut(&target.partition) {
                state.in_flight = false;
            }
        }
        let results = match outcome.result {
            Ok(results) => results,
            Err(error) => {
                tracing::debug!(node = outcome.node, %error, "fetch failed");
                if error.leader_may_have_moved() {
                    self.cluster.invalidate_metadata();
                    self.refresh_metadata_in_background();
                }
                let retry_at = Instant::now() + self.cluster.config.retry_backoff;
                for target in &outcome.targets {
                    if let Some(state) = self.partitions.get_mut(&target.partition) {
                        state.retry_at = Some(retry_at);
                    }
                }
                return;
            }
        };
        for (target, fetched) in results {
            let Some(state) = self.partitions.get_mut(&target.partition) else {
                continue;
            };
            // A seek or reset since the fetch was sent makes its data stale.
            if state.epoch != target.epoch || state.next_fetch != target.offset {
                continue;
            }
            match fetched {
                PartitionFetch::Records {
                    diverging: Some((leader_epoch, end_offset)),
                    ..
                } => {
                    // The leader's log went another way after `leader_epoch` (Fetch v12+):
                    // whatever is buffered may be gone; check the consumed position against
                    // the divergence point as a validation would.
                    state.clear_buffer();
                    state.epoch += 1;
                    if let Some(position) = state.position {
                        state.next_fetch = position;
                        state.fetch_epoch = state.position_epoch;
                    }
                    if let Err(error) = state.apply_epoch_end(
                        &target.partition,
                        leader_epoch,
                        end_offset,
                        self.config.auto_offset_reset,
                    ) {
                        state.awaiting_validation = true;
                        self.pending_error = Some(error);
                    }
                }
                PartitionFetch::Records {
                    records,
                    bytes,
                    next_offset,
                    high_watermark,
                    log_start_offset,
                    last_epoch,
                    diverging: None,
                } => {
                    state.high_watermark = high_watermark;
                    state.log_start_offset = log_start_offset;
                    if let Some(next) = next_offset {
                        state.next_fetch = state.next_fetch.max(next);
                        state.fetch_epoch = last_epoch.or(state.fetch_epoch);
                    }
                    if !records.is_empty() {
                        let chunk = Chunk::new(records, bytes);
                        state.buffered_bytes += chunk.record_bytes * chunk.records.len();
                        state.buffered.push_back(chunk);
                    }
                }
                PartitionFetch::Error(ResponseError::OffsetOutOfRange, _) => {
                    tracing::info!(partition = %target.partition, offset = target.offset,
                        "offset out of range; resetting by auto_offset_reset");
                    state.reset_to(PositionSource::ResetPolicy);
                }
                PartitionFetch::Error(error, code) => {
                    let client_error =
                        ClientError::kafka("Fetch", target.partition.to_string(), code, None);
                    if client_error.is_retriable() || client_error.leader_may_have_moved() {
                        tracing::debug!(partition = %target.partition, ?error, "fetch error; retrying");
                        state.retry_at = Some(Instant::now() + self.cluster.config.retry_backoff);
                        if client_error.leader_may_have_moved() {
                            self.cluster.invalidate_metadata();
                            self.refresh_metadata_in_background();
                        }
                    } else {
                        state.retry_at = Some(Instant::now() + self.cluster.config.retry_backoff);
                        self.pending_error = Some(client_error);
                    }
                }
                PartitionFetch::Corrupt(error) => {
                    // Do not skip silently: stop this partition and report.
                    state.paused = true;
                    self.pending_error = Some(error);
                }
            }
        }
    }

    /// Hands out up to `max` buffered records, rotating over partitions.
    fn take_records(&mut self, max: usize) -> Vec<ConsumerRecord> {
        let mut out = Vec::new();
        let count = self.partitions.len();
        if count == 0 {
            return out;
        }
        let start = self.rotation % count;
        self.rotation = self.rotation.wrapping_add(1);
        let keys: Vec<TopicPartition> = self
            .partitions
            .keys()
            .cycle()
            .skip(start)
            .take(count)
            .cloned()
            .collect();
        for tp in keys {
            if out.len() >= max {
                break;
            }
            let Some(state) = self.partitions.get_mut(&tp) else {
                continue;
            };
            if state.paused {
                continue;
            }
            while out.len() < max {
                let Some(chunk) = state.buffered.front_mut() else {
                    break;
                };
                let take = chunk.records.len().min(max - out.len());
                state.buffered_bytes = state
                    .buffered_bytes
                    .saturating_sub(take * chunk.record_bytes);
                if out.is_empty() && take == chunk.records.len() {
                    // The common case under load: hand the decoder's vector out as it is,
                    // alone (appending other chunks to it would move every record).
                    if let Some(chunk) = state.buffered.pop_front() {
                        out = Vec::from(chunk.records);
                    }
                    if let Some(last) = out.last() {
                        state.position = Some(last.offset + 1);
                        state.position_epoch = last.leader_epoch;
                    }
                    state.skip_to_fetch_position();
                    return out;
                } else {
                    out.extend(chunk.records.drain(..take));
                    if chunk.records.is_empty() {
                        state.buffered.pop_front();
                    }
                }
                if let Some(last) = out.last() {
                    state.position = Some(last.offset + 1);
                    state.position_epoch = last.leader_epoch;
                }
            }
            state.skip_to_fetch_position();
        }
        out
    }

    fn add_partition(&mut self, tp: TopicPartition) {
        if self.partitions.contains_key(&tp) {
            return;
        }
        let topic = self
            .topic_names
            .entry(tp.topic.clone())
            .or_insert_with(|| Arc::from(tp.topic.as_str()))
            .clone();
        self.partitions.insert(tp, PartitionState::new(topic));
    }

    fn assigned_mut(&mut self, partition: &TopicPartition) -> Result<&mut PartitionState> {
        self.partitions.get_mut(partition).ok_or_else(|| {
            ClientError::InvalidArgument(format!("{partition} is not assigned to this consumer"))
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(ClientError::Closed("consumer"))
        } else {
            Ok(())
        }
    }

    /// Commits (with auto commit on), leaves the group (unless static) and closes the
    /// connections.
    pub async fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let mut result = Ok(());
        if self.config.enable_auto_commit && self.config.group_id.is_some() {
            let offsets = self.positions();
            if !offsets.is_empty() {
                result = self.commit_offsets(&offsets).await;
            }
        }
        if matches!(self.mode, Mode::Subscribed(_)) {
            if let Some(group) = &self.group {
                group.leave().await;
            }
        }
        self.closed = true;
        self.fetches.abort_all();
        self.group = None;
        self.cluster.close();
        result
    }
}

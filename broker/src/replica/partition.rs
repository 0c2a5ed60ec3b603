//! One hosted replica of a partition and its place in the partition's replication (Kafka's
//! `Partition`): leader or follower, leader epoch, ISR and high watermark; on the leader, what
//! each follower has fetched.
//!
//! The metadata decides roles ([`Partition::apply_metadata`]); this type enforces them on
//! every request: only the leader of the current epoch appends client records, consumers
//! read up to the high watermark, and a follower's fetch moves the high watermark and may
//! ask the controller to let it back into the ISR.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::ResponseError;
use crate::log::{AbortedTxn, AppendInfo, ControlRecordType, LogError, PartitionLog};
use crate::metadata::PartitionImage;

/// A refusal with Kafka's error code and a message for the client.
pub type Refusal = (ResponseError, String);

/// What this broker is for the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It takes writes and serves consumers.
    Leader,
    /// It fetches from `leader` (-1: no leader right now).
    Follower {
        /// The leader's broker id.
        leader: i32,
    },
}

/// What a metadata update changed for this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleChange {
    /// Nothing that the fetchers care about.
    Unchanged,
    /// It became leader (of a new epoch).
    BecameLeader,
    /// It now follows `leader` (a new leader or a new epoch).
    BecameFollower {
        /// The leader to fetch from (-1: none).
        leader: i32,
    },
}

/// What the leader knows of one follower.
#[derive(Clone, Copy, Debug)]
struct FollowerState {
    /// The follower's log end offset, from its last fetch offset (-1: unknown).
    log_end_offset: i64,
    /// Last time it was caught up with the leader's log end offset.
    last_caught_up: Instant,
    /// The leader's log end offset when the follower last fetched, and when: a follower
    /// that reaches it was caught up at that time (Kafka's rule).
    leader_end_at_last_fetch: i64,
    last_fetch: Instant,
    /// The follower's log start offset, from its last fetch (-1: unknown).
    log_start_offset: i64,
}

#[derive(Debug)]
struct ReplicaState {
    role: Role,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// An ISR change sent to the controller and not yet seen in the metadata. While
    /// expanding, the new member counts for the high watermark at once (the larger set is
    /// the safe one); while shrinking, the old members count until it is committed.
    pending_isr: Option<Vec<i32>>,
    followers: BTreeMap<i32, FollowerState>,
    /// Log end offset when this replica became leader of `leader_epoch`: a follower joins the
    /// ISR only once it has reached it (it then has everything of earlier epochs).
    leader_epoch_start_offset: i64,
    high_watermark: i64,
    min_insync_replicas: usize,
}

impl ReplicaState {
    /// The replicas whose log end counts for the high watermark.
    fn maximal_isr(&self) -> Vec<i32> {
        let mut members = self.isr.clone();
        if let Some(pending) = &self.pending_isr {
            for id in pending {
                if !members.contains(id) {
                    members.push(*id);
                }
            }
        }
        members
    }
}

/// A follower's fetch of one partition, as its leader is asked it.
#[derive(Clone, Copy, Debug)]
pub struct FollowerFetchRequest {
    /// The follower's broker id.
    pub replica_id: i32,
    /// The follower's (durable) log end.
    pub fetch_offset: i64,
    /// The follower's log start offset.
    pub log_start_offset: i64,
    /// The follower's latest leader epoch (-1: unknown), for the divergence check.
    pub last_fetched_epoch: i32,
    /// The leader epoch the follower believes current (-1: not checked).
    pub current_leader_epoch: i32,
    /// The most record bytes to return.
    pub max_bytes: usize,
    /// Whether this fetch may bring the follower into the ISR: not when it came from another
    /// incarnation of the follower's broker than the one registered (KIP-903).
    pub isr_eligible: bool,
}

/// A follower's fetch, as the leader answers it.
#[derive(Debug)]
pub enum FollowerFetch {
    /// Records from the fetch offset (possibly none).
    Records {
        /// The batches.
        records: Bytes,
        /// The leader's high watermark after this fetch.
        high_watermark: i64,
        /// The leader's log start offset.
        log_start_offset: i64,
        /// An ISR the controller should be asked for (the follower caught up).
        expand_isr: Option<Vec<i32>>,
    },
    /// The follower's log diverges from the leader's after `end_offset` of `epoch`: it must
    /// truncate there (KIP-320's DivergingEpoch).
    Diverging {
        /// The largest epoch of the leader not above the follower's last fetched epoch.
        epoch: i32,
        /// Where that epoch ends on the leader.
        end_offset: i64,
        /// The leader's high watermark.
        high_watermark: i64,
        /// The leader's log start offset.
        log_start_offset: i64,
    },
}

/// A leader's offsets as ListOffsets sees them ([`Partition::list_offsets_view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsView {
    /// The leader epoch they were read in.
    pub leader_epoch: i32,
    /// Consumers read below it, so no offset at or above it is given out.
    pub high_watermark: i64,
    /// read_committed consumers read below it (at most the high watermark).
    pub last_stable_offset: i64,
    /// Whether the high watermark has reached the start of this leader's epoch. A new leader
    /// learns the high watermark from its followers' fetches; until then it may be lower than
    /// one the previous leader already gave out, and Kafka answers OFFSET_NOT_AVAILABLE
    /// (retriable) rather than let a client's end offset go backwards.
    pub high_watermark_settled: bool,
}

/// One hosted replica.
#[derive(Debug)]
pub struct Partition {
    topic: String,
    index: i32,
    topic_id: Uuid,
    local_id: i32,
    log: Arc<PartitionLog>,
    state: Mutex<ReplicaState>,
    hw_tx: watch::Sender<i64>,
    /// Ticks when what [`Partition::wait_low_watermark`] waits on may have changed: a
    /// follower's log start offset, the ISR, the leadership.
    start_tx: watch::Sender<()>,
}

impl Partition {
    /// A replica over `log`, a follower without a leader until the metadata says more.
    pub fn new(
        topic: impl Into<String>,
        index: i32,
        topic_id: Uuid,
        local_id: i32,
        log: Arc<PartitionLog>,
    ) -> Arc<Partition> {
        // Until it learns better, a replica only vouches for what it has itself; a leader's
        // followers and the first fetches move it from there.
        let high_watermark = log.log_end_offset();
        let (hw_tx, _) = watch::channel(high_watermark);
        Arc::new(Partition {
            topic: topic.into(),
            index,
            topic_id,
            local_id,
            log,
            state: Mutex::new(ReplicaState {
                role: Role::Follower { leader: -1 },
                leader_epoch: -1,
                partition_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                pending_isr: None,
                followers: BTreeMap::new(),
                leader_epoch_start_offset: 0,
                high_watermark,
                min_insync_replicas: 1,
            }),
            hw_tx,
            start_tx: watch::channel(()).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, ReplicaState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition index.
    pub fn index(&self) -> i32 {
        self.index
    }

    /// The topic id.
    pub fn topic_id(&self) -> Uuid {
        self.topic_id
    }

    /// This broker's id.
    pub fn local_id(&self) -> i32 {
        self.local_id
    }

    /// The local log.
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// Leader or follower.
    pub fn role(&self) -> Role {
        self.lock().role
    }

    /// The current leader epoch (-1 before the first metadata).
    pub fn leader_epoch(&self) -> i32 {
        self.lock().leader_epoch
    }

    /// The in-sync replicas as the metadata last said.
    pub fn isr(&self) -> Vec<i32> {
        self.lock().isr.clone()
    }

    /// The high watermark: the offset below which every in-sync replica has the records.
    pub fn high_watermark(&self) -> i64 {
        self.lock().high_watermark
    }

    /// A watch of the high watermark (produce with acks=all and consumer fetches await it).
    pub fn subscribe_high_watermark(&self) -> watch::Receiver<i64> {
        self.hw_tx.subscribe()
    }

    /// Applies the partition's state from the metadata. `min_insync_replicas` is the topic's
    /// effective `min.insync.replicas`.
    pub fn apply_metadata(&self, image: &PartitionImage, min_insync_replicas: usize) -> RoleChange {
        let mut st = self.lock();
        st.min_insync_replicas = min_insync_replicas.max(1);
        if image.leader_epoch < st.leader_epoch {
            // Metadata older than what we acted on: never go back.
            return RoleChange::Unchanged;
        }
        let new_epoch = image.leader_epoch > st.leader_epoch;
        st.replicas = image.replicas.clone();
        if image.partition_epoch >= st.partition_epoch {
            st.partition_epoch = image.partition_epoch;
            st.isr = image.isr.clone();
            if st.pending_isr.as_ref() == Some(&image.isr) {
                st.pending_isr = None;
            }
        }
        let change = if image.leader == self.local_id {
            if new_epoch || st.role != Role::Leader {
                st.leader_epoch = image.leader_epoch;
                st.role = Role::Leader;
                st.pending_isr = None;
                let end = self.log.log_end_offset();
                st.leader_epoch_start_offset = end;
                let now = Instant::now();
                // Kafka's rule: followers start with an unknown position; ISR members get the
                // lag budget from now, so a leader change alone shrinks no ISR.
                st.followers = st
                    .replicas
                    .iter()
                    .filter(|id| **id != self.local_id)
                    .map(|id| {
                        (
                            *id,
                            FollowerState {
                                log_end_offset: -1,
                                last_caught_up: now,
                                leader_end_at_last_fetch: end,
                                last_fetch: now,
                                log_start_offset: -1,
                            },
                        )
                    })
                    .collect();
                if let Err(error) = self.log.assign_leader_epoch(image.leader_epoch) {
                    tracing::error!(topic = %self.topic, partition = self.index, %error, "cannot record the new leader epoch");
                }
                tracing::info!(topic = %self.topic, partition = self.index, epoch = image.leader_epoch, isr = ?st.isr, "became leader");
                RoleChange::BecameLeader
            } else {
                // Same epoch, other replicas (a reassignment): track the new followers from
                // now, forget the removed ones.
                let now = Instant::now();
                let end = self.log.log_end_offset();
                let replicas = st.replicas.clone();
                st.followers.retain(|id, _| replicas.contains(id));
                for id in replicas.iter().filter(|id| **id != self.local_id) {
                    st.followers.entry(*id).or_insert(FollowerState {
                        log_end_offset: -1,
                        last_caught_up: now,
                        leader_end_at_last_fetch: end,
                        last_fetch: now,
                        log_start_offset: -1,
                    });
                }
                RoleChange::Unchanged
            }
        } else {
            let was = st.role;
            st.leader_epoch = image.leader_epoch;
            st.role = Role::Follower {
                leader: image.leader,
            };
            st.followers.clear();
            st.pending_isr = None;
            if new_epoch || was != st.role {
                tracing::info!(topic = %self.topic, partition = self.index, leader = image.leader, epoch = image.leader_epoch, "following");
                RoleChange::BecameFollower {
                    leader: image.leader,
                }
            } else {
                RoleChange::Unchanged
            }
        };
        self.advance_high_watermark(&mut st);
        drop(st);
        self.start_tx.send_replace(());
        change
    }

    /// Checks a client's view of the leader epoch (KIP-320): an older one is fenced, a newer
    /// one is unknown here yet. -1 means the client does not say.
    fn check_epoch(st: &ReplicaState, current_leader_epoch: i32) -> Result<(), Refusal> {
        if current_leader_epoch < 0 || current_leader_epoch == st.leader_epoch {
            Ok(())
        } else if current_leader_epoch < st.leader_epoch {
            Err((
                ResponseError::FencedLeaderEpoch,
                format!(
                    "leader epoch {current_leader_epoch} is older than the current {}",
                    st.leader_epoch
                ),
            ))
        } else {
            Err((
                ResponseError::UnknownLeaderEpoch,
                format!(
                    "leader epoch {current_leader_epoch} is newer than this broker knows ({})",
                    st.leader_epoch
                ),
            ))
        }
    }

    fn not_leader(&self, st: &ReplicaState) -> Refusal {
        let leader = match st.role {
            Role::Leader => self.local_id,
            Role::Follower { leader } => leader,
        };
        (
            ResponseError::NotLeaderOrFollower,
            format!(
                "broker {} is not the leader of {}-{} (leader: {leader}, epoch {})",
                self.local_id, self.topic, self.index, st.leader_epoch
            ),
        )
    }

    /// Appends a client's batches as leader. With `acks=all`, an ISR below
    /// `min.insync.replicas` refuses before writing (NOT_ENOUGH_REPLICAS).
    pub fn append_as_leader(
        &self,
        records: Bytes,
        acks: i16,
        now_ms: i64,
    ) -> Result<(AppendInfo, i32), Refusal> {
        let mut st = self.lock();
        if st.role != Role::Leader {
            return Err(self.not_leader(&st));
        }
        if acks == -1 && st.isr.len() < st.min_insync_replicas {
            return Err((
                ResponseError::NotEnoughReplicas,
                format!(
                    "{} in-sync replicas ({:?}) for {}-{}, min.insync.replicas is {}",
                    st.isr.len(),
                    st.isr,
                    self.topic,
                    self.index,
                    st.min_insync_replicas
                ),
            ));
        }
        let epoch = st.leader_epoch;
        let info = self
            .log
            .append_as_leader(records, now_ms, epoch)
            .map_err(|e| (ResponseError::from(&e), e.to_string()))?;
        self.advance_high_watermark(&mut st);
        Ok((info, epoch))
    }

    /// Appends the group coordinator's transactional offsets as leader (TxnOffsetCommit); see
    /// [`PartitionLog::append_txn_offsets`]. Returns what was written and the leader epoch.
    pub fn append_txn_offsets_as_leader(
        &self,
        records: Bytes,
        now_ms: i64,
    ) -> Result<(AppendInfo, i32), Refusal> {
        self.write_as_leader(|log, epoch| log.append_txn_offsets(records, now_ms, Some(epoch)))
    }

    /// Writes a transaction marker as leader (WriteTxnMarkers); see
    /// [`PartitionLog::append_txn_marker`]. Returns what was written and the leader epoch.
    pub fn append_txn_marker_as_leader(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        kind: ControlRecordType,
        now_ms: i64,
    ) -> Result<(AppendInfo, i32), Refusal> {
        self.write_as_leader(|log, epoch| {
            log.append_txn_marker(
                producer_id,
                producer_epoch,
                coordinator_epoch,
                kind,
                Some(epoch),
                now_ms,
            )
        })
    }

    /// Runs `write` on the log in the current leader epoch, as leader, then moves the high
    /// watermark: the common steps of the coordinators' appends.
    fn write_as_leader(
        &self,
        write: impl FnOnce(&PartitionLog, i32) -> Result<AppendInfo, LogError>,
    ) -> Result<(AppendInfo, i32), Refusal> {
        let mut st = self.lock();
        if st.role != Role::Leader {
            return Err(self.not_leader(&st));
        }
        let epoch = st.leader_epoch;
        let info = write(&self.log, epoch).map_err(|e| (ResponseError::from(&e), e.to_string()))?;
        self.advance_high_watermark(&mut st);
        Ok((info, epoch))
    }

    /// Waits until the in-sync replicas have everything up to `last_offset` (acks=all), or the
    /// leadership moved (NOT_LEADER_OR_FOLLOWER), or `timeout` passed (REQUEST_TIMED_OUT).
    /// An ISR that shrank below `min.insync.replicas` meanwhile answers
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND: the records are written but not safe as asked.
    pub async fn wait_for_isr(
        &self,
        last_offset: i64,
        epoch: i32,
        timeout: Duration,
    ) -> Result<(), Refusal> {
        let mut hw = self.hw_tx.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let st = self.lock();
                if st.leader_epoch != epoch || st.role != Role::Leader {
                    return Err(self.not_leader(&st));
                }
                if st.high_watermark > last_offset {
                    if st.isr.len() < st.min_insync_replicas {
                        return Err((
                            ResponseError::NotEnoughReplicasAfterAppend,
                            format!(
                                "written, but the ISR shrank to {:?}, below min.insync.replicas {}",
                                st.isr, st.min_insync_replicas
                            ),
                        ));
                    }
                    return Ok(());
                }
            }
            match tokio::time::timeout_at(deadline, hw.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err((
                        ResponseError::RequestTimedOut,
                        format!(
                            "the in-sync replicas of {}-{} did not acknowledge offset {last_offset} in time",
                            self.topic, self.index
                        ),
                    ))
                }
            }
        }
    }

    /// Reads for a consumer: only the leader serves, and only up to the high watermark.
    /// Returns the records and the high watermark they were read under.
    pub fn read_for_consumer(
        &self,
        offset: i64,
        max_bytes: usize,
        current_leader_epoch: i32,
    ) -> Result<(Bytes, i64), Refusal> {
        let high_watermark = {
            let st = self.lock();
            if st.role != Role::Leader {
                return Err(self.not_leader(&st));
            }
            Self::check_epoch(&st, current_leader_epoch)?;
            st.high_watermark
        };
        let records = self
            .log
            .read_up_to(offset, max_bytes, high_watermark)
            .map_err(|e| (ResponseError::from(&e), e.to_string()))?;
        Ok((records, high_watermark))
    }

    /// Reads for a read_committed consumer (Fetch isolation level 1): like
    /// [`Partition::read_for_consumer`] but up to the last stable offset, with the aborted
    /// transactions in the range read. Returns records, high watermark, last stable offset
    /// and aborted transactions.
    pub fn read_committed_for_consumer(
        &self,
        offset: i64,
        max_bytes: usize,
        current_leader_epoch: i32,
    ) -> Result<(Bytes, i64, i64, Vec<AbortedTxn>), Refusal> {
        let high_watermark = {
            let st = self.lock();
            if st.role != Role::Leader {
                return Err(self.not_leader(&st));
            }
            Self::check_epoch(&st, current_leader_epoch)?;
            st.high_watermark
        };
        let (records, lso, aborted) = self
            .log
            .read_committed(offset, max_bytes, high_watermark)
            .map_err(|e| (ResponseError::from(&e), e.to_string()))?;
        Ok((records, high_watermark, lso, aborted))
    }

    /// The last stable offset: the first offset of the oldest open transaction, or the high
    /// watermark if that is lower or no transaction is open.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        self.log
            .first_unstable_offset()
            .map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// Reads for a debugging consumer (replica id -2, as in Kafka): any replica, leader or
    /// follower, up to its own high watermark. Tests compare replicas with it.
    pub fn read_for_debugging(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Bytes, i64), Refusal> {
        let high_watermark = self.high_watermark();
        let records = self
            .log
            .read_up_to(offset, max_bytes, high_watermark)
            .map_err(|e| (ResponseError::from(&e), e.to_string()))?;
        Ok((records, high_watermark))
    }

    /// Checks that a request may be served here as leader of the current epoch (ListOffsets,
    /// DeleteRecords, ...).
    pub fn check_leader(&self, current_leader_epoch: i32) -> Result<(), Refusal> {
        let st = self.lock();
        if st.role != Role::Leader {
            return Err(self.not_leader(&st));
        }
        Self::check_epoch(&st, current_leader_epoch)
    }

    /// DeleteRecords on the leader: moves the log start offset here to `offset` (at most the
    /// high watermark; -1: the high watermark), in the leader epoch the answer returns. The
    /// followers follow from their next fetch: see [`Partition::wait_low_watermark`].
    pub fn delete_records_as_leader(&self, offset: i64) -> Result<(i64, i32), Refusal> {
        let st = self.lock();
        if st.role != Role::Leader {
            return Err(self.not_leader(&st));
        }
        // Beyond the high watermark is out of range, as in Kafka: followers may not have
        // those records yet.
        let offset = if offset == -1 {
            st.high_watermark
        } else {
            offset
        };
        if offset < 0 || offset > st.high_watermark {
            return Err((
                ResponseError::OffsetOutOfRange,
                format!(
                    "cannot delete before {offset}: the high watermark is {}",
                    st.high_watermark
                ),
            ));
        }
        let epoch = st.leader_epoch;
        // Under the state lock, so that no leader change comes between the check and the
        // deletion.
        self.log
            .delete_records_before(offset)
            .map_err(|e| (ResponseError::from(&e), e.to_string()))?;
        Ok((offset, epoch))
    }

    /// Kafka's `lowWatermarkIfLeader`: the smallest log start offset over this leader and the
    /// followers that may become leader (the ISR); -1 while one of them has not fetched yet.
    fn low_watermark(&self, st: &ReplicaState) -> i64 {
        let mut low = self.log.log_start_offset();
        for id in st.maximal_isr() {
            if id == self.local_id {
                continue;
            }
            match st.followers.get(&id) {
                Some(f) if f.log_start_offset >= 0 => low = low.min(f.log_start_offset),
                _ => return -1,
            }
        }
        low
    }

    /// Waits until every in-sync replica has moved its log start offset to `offset` (so no
    /// next leader serves the deleted records), and returns the low watermark then; or the
    /// leadership moved (NOT_LEADER_OR_FOLLOWER), or `timeout` passed (REQUEST_TIMED_OUT).
    /// DeleteRecords answers only then, as Kafka's does.
    pub async fn wait_low_watermark(
        &self,
        offset: i64,
        epoch: i32,
        timeout: Duration,
    ) -> Result<i64, Refusal> {
        let mut changed = self.start_tx.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let st = self.lock();
                if st.leader_epoch != epoch || st.role != Role::Leader {
                    return Err(self.not_leader(&st));
                }
                let low = self.low_watermark(&st);
                if low >= offset {
                    return Ok(low);
                }
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return Err((
                        ResponseError::RequestTimedOut,
                        format!(
                            "the in-sync replicas of {}-{} did not move their log start to {offset} in time",
                            self.topic, self.index
                        ),
                    ))
                }
            }
        }
    }

    /// What ListOffsets answers from, read at once under one lock: checks that this replica
    /// leads in the epoch the client knows, like [`Partition::check_leader`].
    pub fn list_offsets_view(&self, current_leader_epoch: i32) -> Result<ListOffsetsView, Refusal> {
        let st = self.lock();
        if st.role != Role::Leader {
            return Err(self.not_leader(&st));
        }
        Self::check_epoch(&st, current_leader_epoch)?;
        Ok(ListOffsetsView {
            leader_epoch: st.leader_epoch,
            high_watermark: st.high_watermark,
            last_stable_offset: self
                .log
                .first_unstable_offset()
                .map_or(st.high_watermark, |first| first.min(st.high_watermark)),
            high_watermark_settled: st.high_watermark >= st.leader_epoch_start_offset,
        })
    }

    /// Serves a follower's fetch: records from `fetch_offset` (beyond the high watermark:
    /// followers need them to move it), or where its log diverges. The fetch offset is the
    /// follower's (durable) log end: it moves the high watermark and may qualify the
    /// follower for the ISR.
    pub fn fetch_from_follower(
        &self,
        fetch: FollowerFetchRequest,
    ) -> Result<FollowerFetch, Refusal> {
        let FollowerFetchRequest {
            replica_id,
            fetch_offset,
            log_start_offset: follower_log_start,
            last_fetched_epoch,
            current_leader_epoch,
            max_bytes,
            isr_eligible,
        } = fetch;
        let mut st = self.lock();
        if st.role != Role::Leader {
            return Err(self.not_leader(&st));
        }
        Self::check_epoch(&st, current_leader_epoch)?;
        if !st.replicas.contains(&replica_id) || replica_id == self.local_id {
            return Err((
                ResponseError::NotLeaderOrFollower,
                format!(
                    "broker {replica_id} is not a replica of {}-{} (replicas {:?})",
                    self.topic, self.index, st.replicas
                ),
            ));
        }
        let log_start_offset = self.log.log_start_offset();
        if last_fetched_epoch >= 0 {
            let (epoch, end_offset) = self.log.end_offset_for_epoch(last_fetched_epoch);
            if epoch != last_fetched_epoch || end_offset < fetch_offset {
                // No epoch of ours is that old: everything the follower has from before our
                // log start is unknown here, so it keeps nothing past our log start.
                let end_offset = if epoch < 0 {
                    log_start_offset
                } else {
                    end_offset
                };
                return Ok(FollowerFetch::Diverging {
                    epoch,
                    end_offset,
                    high_watermark: st.high_watermark,
                    log_start_offset,
                });
            }
        }
        let leader_end = self.log.log_end_offset();
        if fetch_offset > leader_end {
            return Err((
                ResponseError::OffsetOutOfRange,
                format!("fetch offset {fetch_offset} is beyond the log end {leader_end}"),
            ));
        }
        let now = Instant::now();
        if let Some(follower) = st.followers.get_mut(&replica_id) {
            if fetch_offset >= leader_end {
                follower.last_caught_up = now;
            } else if fetch_offset >= follower.leader_end_at_last_fetch {
                // It has reached where the leader was at its previous fetch: it was caught up
                // then.
                follower.last_caught_up = follower.last_fetch;
            }
            follower.log_end_offset = fetch_offset;
            follower.leader_end_at_last_fetch = leader_end;
            follower.last_fetch = now;
        }
        let start_moved = match st.followers.get_mut(&replica_id) {
            Some(follower) if follower.log_start_offset != follower_log_start => {
                follower.log_start_offset = follower_log_start;
                true
            }
            _ => false,
        };
        let expand_isr = isr_eligible
            .then(|| self.maybe_expand_isr(&mut st, replica_id, fetch_offset))
            .flatten();
        self.advance_high_watermark(&mut st);
        let high_watermark = st.high_watermark;
        drop(st);
        if start_moved {
            self.start_tx.send_replace(());
        }
        let records = self
            .log
            .read(fetch_offset, max_bytes)
            .map_err(|e| (ResponseError::from(&e), e.to_string()))?;
        Ok(FollowerFetch::Records {
            records,
            high_watermark,
            log_start_offset,
            expand_isr,
        })
    }

    /// A follower outside the ISR joins it once it has the high watermark and everything of
    /// the current epoch's start (KIP-841: and it is not fenced; the controller checks that).
    fn maybe_expand_isr(
        &self,
        st: &mut ReplicaState,
        replica_id: i32,
        fetch_offset: i64,
    ) -> Option<Vec<i32>> {
        if st.maximal_isr().contains(&replica_id) {
            return None;
        }
        if fetch_offset < st.high_watermark || fetch_offset < st.leader_epoch_start_offset {
            return None;
        }
        let mut isr = st.isr.clone();
        isr.push(replica_id);
        isr.sort_unstable();
        st.pending_isr = Some(isr.clone());
        Some(isr)
    }

    /// The ISR without the followers that have not caught up for `max_lag`
    /// (`replica.lag.time.max.ms`), if that removes any; the caller asks the controller.
    pub fn maybe_shrink_isr(&self, max_lag: Duration) -> Option<Vec<i32>> {
        let mut st = self.lock();
        if st.role != Role::Leader || st.pending_isr.is_some() {
            return None;
        }
        let now = Instant::now();
        let lagging: Vec<i32> = st
            .isr
            .iter()
            .copied()
            .filter(|id| *id != self.local_id)
            .filter(|id| {
                st.followers
                    .get(id)
                    .is_none_or(|f| now.duration_since(f.last_caught_up) > max_lag)
            })
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let isr: Vec<i32> = st
            .isr
            .iter()
            .copied()
            .filter(|id| !lagging.contains(id))
            .collect();
        tracing::info!(topic = %self.topic, partition = self.index, ?lagging, new_isr = ?isr, "shrinking ISR");
        st.pending_isr = Some(isr.clone());
        Some(isr)
    }

    /// Forgets an ISR change the controller refused, so that it can be proposed again.
    pub fn clear_pending_isr(&self) {
        self.lock().pending_isr = None;
    }

    /// The partition epoch the next AlterPartition must name.
    pub fn partition_epoch(&self) -> i32 {
        self.lock().partition_epoch
    }

    /// On the leader: the high watermark is the smallest log end offset over the ISR (the
    /// larger of the current and a pending ISR). On a follower it only follows what the
    /// leader says ([`Partition::follower_high_watermark`]).
    fn advance_high_watermark(&self, st: &mut ReplicaState) {
        if st.role != Role::Leader {
            return;
        }
        let mut candidate = self.log.log_end_offset();
        for id in st.maximal_isr() {
            if id == self.local_id {
                continue;
            }
            match st.followers.get(&id) {
                Some(f) if f.log_end_offset >= 0 => candidate = candidate.min(f.log_end_offset),
                // A member we have not heard from yet holds the high watermark where it is.
                _ => candidate = candidate.min(st.high_watermark),
            }
        }
        if candidate > st.high_watermark {
            st.high_watermark = candidate;
            self.hw_tx.send_replace(candidate);
        }
    }

    /// On a follower: appends what the leader sent, exactly as the leader stored it.
    pub fn append_as_follower(&self, records: Bytes) -> Result<AppendInfo, LogError> {
        self.log.append_as_follower(records)
    }

    /// On a follower: takes the leader's high watermark, capped at the local log end.
    pub fn follower_high_watermark(&self, leader_high_watermark: i64) {
        let mut st = self.lock();
        if st.role == Role::Leader {
            return;
        }
        let hw = leader_high_watermark.min(self.log.log_end_offset());
        if hw != st.high_watermark {
            st.high_watermark = hw;
            self.hw_tx.send_replace(hw);
        }
    }

    /// On a follower: truncates the divergent suffix, never below what the leader said.
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        self.log.truncate_to(offset)?;
        let mut st = self.lock();
        if st.high_watermark > offset {
            st.high_watermark = offset;
            self.hw_tx.send_replace(offset);
        }
        Ok(())
    }

    /// The leader's state of each follower, for metrics and tests: (id, log end offset).
    pub fn follower_positions(&self) -> Vec<(i32, i64)> {
        self.lock()
            .followers
            .iter()
            .map(|(id, f)| (*id, f.log_end_offset))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use kafka_protocol::records::Compression;
    use millrace_testkit::records::{batch, record};

    use super::*;
    use crate::log::LogConfig;

    /// Partition 0 on broker 1 of replicas [1, 2], led by broker 1 in `epoch`, with `n`
    /// records appended with acks=1 (broker 2 has not fetched them).
    fn leader_with_records(dir: &std::path::Path, n: usize) -> Arc<Partition> {
        let log = PartitionLog::open(dir.to_path_buf(), LogConfig::default()).unwrap();
        let partition = Partition::new("t", 0, Uuid::nil(), 1, log);
        lead(&partition, 0);
        let values: Vec<_> = (0..n).map(|i| record("k", &format!("v{i}"), 1)).collect();
        partition
            .append_as_leader(batch(&values, Compression::None), 1, 1)
            .unwrap();
        partition
    }

    fn lead(partition: &Partition, epoch: i32) {
        let image = PartitionImage {
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: epoch,
            partition_epoch: epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        assert_eq!(
            partition.apply_metadata(&image, 1),
            RoleChange::BecameLeader
        );
    }

    /// Broker 2 fetches from `offset`, its log starting at `log_start`.
    fn follower_fetches(partition: &Partition, offset: i64, log_start: i64) {
        partition
            .fetch_from_follower(FollowerFetchRequest {
                replica_id: 2,
                fetch_offset: offset,
                log_start_offset: log_start,
                last_fetched_epoch: -1,
                current_leader_epoch: -1,
                max_bytes: 1 << 20,
                isr_eligible: true,
            })
            .unwrap();
    }

    #[test]
    fn a_new_leader_offers_no_end_offset_until_its_high_watermark_reaches_its_epoch_start() {
        let dir = tempfile::tempdir().unwrap();
        let partition = leader_with_records(dir.path(), 3);
        let view = partition.list_offsets_view(-1).unwrap();
        assert_eq!(view.high_watermark, 0, "broker 2 has not fetched yet");
        assert!(view.high_watermark_settled, "epoch 0 started at offset 0");

        // Leader again in epoch 1: its epoch starts at 3, the high watermark is still 0.
        lead(&partition, 1);
        let view = partition.list_offsets_view(1).unwrap();
        assert_eq!((view.leader_epoch, view.high_watermark), (1, 0));
        assert!(!view.high_watermark_settled);

        follower_fetches(&partition, 3, 0);
        let view = partition.list_offsets_view(1).unwrap();
        assert_eq!(view.high_watermark, 3);
        assert!(view.high_watermark_settled);
        assert_eq!(
            partition.list_offsets_view(0).unwrap_err().0,
            ResponseError::FencedLeaderEpoch
        );
    }

    #[tokio::test]
    async fn delete_records_waits_for_the_in_sync_followers_to_move_their_log_start() {
        let dir = tempfile::tempdir().unwrap();
        let partition = leader_with_records(dir.path(), 3);
        assert_eq!(
            partition.delete_records_as_leader(1).unwrap_err().0,
            ResponseError::OffsetOutOfRange,
            "beyond the high watermark (0)"
        );
        follower_fetches(&partition, 3, 0);
        assert_eq!(partition.delete_records_as_leader(2).unwrap(), (2, 0));
        assert_eq!(partition.log().log_start_offset(), 2);

        let short = Duration::from_millis(20);
        assert_eq!(
            partition
                .wait_low_watermark(2, 0, short)
                .await
                .unwrap_err()
                .0,
            ResponseError::RequestTimedOut,
            "broker 2's log still starts at 0"
        );
        let waiting = {
            let partition = partition.clone();
            tokio::spawn(async move {
                partition
                    .wait_low_watermark(2, 0, Duration::from_secs(30))
                    .await
            })
        };
        follower_fetches(&partition, 3, 2);
        assert_eq!(
            waiting.await.unwrap().unwrap(),
            2,
            "done once the follower says so"
        );

        // A waiter learns that the leadership moved.
        let waiting = {
            let partition = partition.clone();
            tokio::spawn(async move {
                partition
                    .wait_low_watermark(3, 0, Duration::from_secs(30))
                    .await
            })
        };
        lead(&partition, 1);
        assert_eq!(
            waiting.await.unwrap().unwrap_err().0,
            ResponseError::NotLeaderOrFollower
        );
    }
}

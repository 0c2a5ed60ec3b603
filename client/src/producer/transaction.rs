//! The transactional producer (`transactional.id`): Kafka's TransactionManager.
//!
//! [`Producer::connect`] finds the transaction coordinator (FindCoordinator, key type 1) and
//! gets the id's producer id and epoch (InitProducerId), fencing any previous producer with
//! the same id. Then, per transaction: [`Producer::begin_transaction`]; a `send` to a partition
//! new to the transaction queues the partition to be added and returns at once, as Kafka's
//! producer does: one AddPartitionsToTxn at a time carries every partition queued meanwhile,
//! and the sender holds a partition's batches until it is in the transaction (a partition
//! the coordinator refuses fails its batches with the refusal);
//! [`Producer::send_offsets_to_transaction`] adds the group (AddOffsetsToTxn) and
//! writes the offsets (TxnOffsetCommit to the group coordinator);
//! [`Producer::commit_transaction`] flushes and ends it (EndTxn), or
//! [`Producer::abort_transaction`] does. A batch that failed during the transaction makes
//! commit fail: the transaction can only be aborted. Fencing is the distinct
//! [`ClientError::ProducerFenced`].
//!
//! With a coordinator that finalized `transaction.version` 2 (KIP-890, as Kafka 4's Java
//! producer does): no AddPartitionsToTxn or AddOffsetsToTxn (Produce v12 and TxnOffsetCommit v5
//! bring partitions and the group in on their first write), and EndTxn v5 answers the epoch of
//! the next transaction, which starts its sequences again at 0.
//!
//! [`Producer::commit_and_begin_transaction`] commits without waiting: the next transaction
//! begins at once and its records fill batches while the commit goes on, and they are sent
//! once it has ended (each batch carries its transaction's `generation`; the sender holds a
//! batch until every earlier transaction has ended; up to `MAX_COMMITS_IN_FLIGHT` commits wait
//! their turn). A producer that waits for each commit leaves its pipeline empty for a commit's
//! length; this one keeps filling it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Shared as SharedFuture};
use futures_util::FutureExt;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId,
    InitProducerIdRequest, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Producer, Shared};
use crate::consumer::ConsumerGroupMetadata;
use crate::coordinator::{find_group_coordinator, find_transaction_coordinator};
use crate::error::{ClientError, Result};
use crate::network::cluster::Cluster;
use crate::retry::with_retries;

/// Where the current transaction is, client side.
#[derive(Debug, Default)]
struct TxnProgress {
    /// Between `begin_transaction` and its end.
    open: bool,
    /// Which transaction of the producer this is (the first is 1).
    generation: u64,
    /// Partitions already added to the open transaction.
    partitions: HashSet<(String, i32)>,
    /// Partitions queued to be added by the next AddPartitionsToTxn.
    queued: BTreeSet<(String, i32)>,
    /// An AddPartitionsToTxn task is running (it takes what is queued until nothing is).
    adding: bool,
    /// Partitions the coordinator would not add, and why: their batches fail.
    refused: HashMap<(String, i32), ClientError>,
    /// Whether a group's offsets joined the open transaction.
    offsets_added: bool,
    /// Batches failed since the transaction began: it can only abort.
    failed: Option<String>,
    /// Fenced: nothing more is possible.
    fenced: bool,
}

impl TxnProgress {
    /// Whether the transaction wrote anything (without, the coordinator never heard of it).
    fn touched(&self) -> bool {
        !self.partitions.is_empty() || self.offsets_added
    }
}

/// The transaction state of a transactional producer.
#[derive(Debug)]
pub(crate) struct TransactionManager {
    pub(crate) transactional_id: String,
    /// The producer id and epoch of the current transaction: on transaction version 2, each
    /// EndTxn answers the next ones.
    identity: Mutex<(i64, i16)>,
    /// Transaction version 2 (see the module documentation).
    version_2: bool,
    /// The coordinator's node id, looked up again when it moves.
    coordinator: Mutex<Option<i32>>,
    progress: Mutex<TxnProgress>,
    /// The transaction begun last (0 before the first).
    generation: AtomicU64,
    /// The open transaction's generation; 0 while none is open or once fenced. A send to a
    /// partition that already joined it checks only this (every record does).
    open_generation: AtomicU64,
    /// Every transaction up to this one has ended: the batches of the next may go.
    ended: AtomicU64,
    /// Batches created and not yet completed, per transaction.
    batches: Mutex<BTreeMap<u64, usize>>,
    /// The transactions [`Producer::commit_and_begin_transaction`] is committing, by
    /// generation.
    ending: Mutex<BTreeMap<u64, Ending>>,
    /// Their commits' outcomes, oldest first: each commit begins after the one before it has
    /// ended, so the newest settles last. All are awaited before a transaction ends or adds
    /// offsets in the foreground.
    pending_ends: Mutex<VecDeque<PendingCommit>>,
}

/// How many commits [`Producer::commit_and_begin_transaction`] keeps going at once: the
/// transactions behind the one committing fill meanwhile (their records wait in buffer
/// memory), so a commit that takes longer than usual does not stall the producer.
pub const MAX_COMMITS_IN_FLIGHT: usize = 4;

/// A transaction committing while later ones fill.
#[derive(Debug)]
struct Ending {
    /// Whether it wrote anything (without, the coordinator never heard of it).
    touched: bool,
    /// A batch of it that failed after it was handed over: it aborts instead.
    failed: Option<String>,
}

/// The outcome of a commit started by [`Producer::commit_and_begin_transaction`]: resolves
/// once the transaction has committed, or with why it did not (it was aborted then, and the
/// transaction begun after it can only abort too). Clones share the outcome.
#[derive(Clone)]
pub struct PendingCommit(SharedFuture<BoxFuture<'static, Result<()>>>);

impl PendingCommit {
    fn done(outcome: Result<()>) -> Self {
        PendingCommit(futures_util::future::ready(outcome).boxed().shared())
    }
}

impl Future for PendingCommit {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.0.poll_unpin(cx)
    }
}

impl std::fmt::Debug for PendingCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0.peek() {
            None => "committing",
            Some(Ok(())) => "committed",
            Some(Err(_)) => "failed",
        };
        f.debug_tuple("PendingCommit").field(&state).finish()
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl TransactionManager {
    fn progress(&self) -> MutexGuard<'_, TxnProgress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ending(&self) -> MutexGuard<'_, BTreeMap<u64, Ending>> {
        self.ending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn batches(&self) -> MutexGuard<'_, BTreeMap<u64, usize>> {
        self.batches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transaction new records belong to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The open transaction's generation, 0 if none is open (or the producer is fenced).
    pub(crate) fn open_generation(&self) -> u64 {
        self.open_generation.load(Ordering::Acquire)
    }

    /// Notes that a newer producer fenced this one: nothing more is possible.
    fn note_fenced(&self, progress: &mut TxnProgress) {
        progress.fenced = true;
        self.open_generation.store(0, Ordering::Release);
    }

    /// A batch of transaction `generation` was created.
    pub(crate) fn batch_created(&self, generation: u64) {
        *self.batches().entry(generation).or_insert(0) += 1;
    }

    /// A batch of transaction `generation` was acknowledged or failed.
    pub(crate) fn batch_completed(&self, generation: u64) {
        let mut batches = self.batches();
        if let Some(count) = batches.get_mut(&generation) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                batches.remove(&generation);
            }
        }
    }

    /// Whether a batch of transaction `generation` or an earlier one is incomplete.
    fn has_batches_up_to(&self, generation: u64) -> bool {
        self.batches().range(..=generation).next().is_some()
    }

    /// Whether a batch of transaction `generation` may be sent: once every earlier
    /// transaction has ended. A fenced producer's waiting batches fail.
    pub(crate) fn may_send_generation(&self, generation: u64) -> Result<bool> {
        if generation <= self.ended.load(Ordering::Acquire) + 1 {
            return Ok(true);
        }
        if self.progress().fenced {
            return Err(self.fenced());
        }
        Ok(false)
    }

    /// Notes that every transaction up to `generation` has ended.
    fn note_ended(&self, generation: u64) {
        self.ended.fetch_max(generation, Ordering::AcqRel);
    }

    /// Initialises transactions: the coordinator, then the producer id and epoch
    /// (InitProducerId), retried while the coordinator finishes a previous transaction of
    /// the id (CONCURRENT_TRANSACTIONS).
    pub(crate) async fn init(
        cluster: &Cluster,
        transactional_id: &str,
        timeout_ms: i32,
    ) -> Result<TransactionManager> {
        // The coordinator is looked up on each attempt: a retry usually follows its move.
        let (producer_id, producer_epoch, node) =
            with_retries(cluster, "InitProducerId", || async {
                let node = find_transaction_coordinator(cluster, transactional_id).await?;
                let request = InitProducerIdRequest::default()
                    .with_transactional_id(Some(TransactionalId(s(transactional_id))))
                    .with_transaction_timeout_ms(timeout_ms)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1);
                let (_, response) = cluster.send_to(node, &request).await?;
                match response.error_code {
                    0 => Ok((response.producer_id.0, response.producer_epoch, node)),
                    code => Err(kafka("InitProducerId", transactional_id, code)),
                }
            })
            .await?;
        let version_2 = cluster
            .connection(node)
            .await
            .is_ok_and(|c| c.transaction_version_2());
        tracing::debug!(
            transactional_id,
            producer_id,
            epoch = producer_epoch,
            transaction_version = if version_2 { 2 } else { 1 },
            "transactional producer initialised"
        );
        Ok(TransactionManager {
            transactional_id: transactional_id.to_string(),
            identity: Mutex::new((producer_id, producer_epoch)),
            version_2,
            coordinator: Mutex::new(Some(node)),
            progress: Mutex::default(),
            generation: AtomicU64::new(0),
            open_generation: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            batches: Mutex::default(),
            ending: Mutex::default(),
            pending_ends: Mutex::default(),
        })
    }

    /// The producer id and epoch batches carry.
    pub(crate) fn identity(&self) -> (i64, i16) {
        *self.identity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the producer speaks transaction version 2.
    pub(crate) fn version_2(&self) -> bool {
        self.version_2
    }

    /// Notes a failed batch of transaction `generation`: fenced errors fence the producer,
    /// others make that transaction abort-only.
    pub(crate) fn note_failed_batch(&self, error: &ClientError, generation: u64) {
        let mut progress = self.progress();
        if matches!(
            error.kafka_error(),
            Some(ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch)
        ) {
            self.note_fenced(&mut progress);
        }
        let mut ending = self.ending();
        match ending.get_mut(&generation) {
            Some(ending) => ending.failed.get_or_insert_with(|| error.to_string()),
            None => progress.failed.get_or_insert_with(|| error.to_string()),
        };
    }

    fn fenced(&self) -> ClientError {
        ClientError::ProducerFenced {
            transactional_id: self.transactional_id.clone(),
        }
    }

    /// The coordinator's node id, looked up if unknown.
    async fn coordinator(&self, cluster: &Cluster) -> Result<i32> {
        let known = *self.coordinator.lock().unwrap_or_else(|p| p.into_inner());
        match known {
            Some(node) => Ok(node),
            None => {
                let node = find_transaction_coordinator(cluster, &self.transactional_id).await?;
                *self.coordinator.lock().unwrap_or_else(|p| p.into_inner()) = Some(node);
                Ok(node)
            }
        }
    }

    /// Passes a request's outcome on, forgetting the coordinator when it could not be
    /// reached: a halted coordinator's successor is found by the next attempt's lookup
    /// instead of every retry going to the dead node.
    fn forget_unreachable<T>(&self, sent: Result<T>) -> Result<T> {
        if sent.is_err() {
            *self.coordinator.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        sent
    }

    /// Turns a coordinator's error code into the client's error, forgetting the coordinator
    /// when it moved and recognising fencing.
    fn coordinator_error(&self, api: &'static str, code: i16) -> Result<()> {
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch) => {
                self.note_fenced(&mut self.progress());
                Err(self.fenced())
            }
            Some(ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable) => {
                *self.coordinator.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Err(kafka(api, &self.transactional_id, code))
            }
            Some(_) => Err(kafka(api, &self.transactional_id, code)),
        }
    }

    fn begin(&self) -> Result<()> {
        let mut progress = self.progress();
        if progress.fenced {
            return Err(self.fenced());
        }
        if progress.open {
            return Err(ClientError::TransactionState(
                "a transaction is already open".into(),
            ));
        }
        self.open_next(&mut progress);
        Ok(())
    }

    /// Hands the open transaction over to be committed in the background and begins the
    /// next one; returns the generation handed over. Fails, handing nothing over, when the
    /// transaction cannot commit.
    fn hand_over(&self) -> Result<u64> {
        let mut progress = self.progress();
        self.check_open_in(&progress, true)?;
        let generation = progress.generation;
        self.ending().insert(
            generation,
            Ending {
                touched: progress.touched(),
                failed: None,
            },
        );
        self.open_next(&mut progress);
        Ok(generation)
    }

    /// Opens the producer's next transaction in `progress` (a fresh one, fencing kept).
    fn open_next(&self, progress: &mut TxnProgress) {
        *progress = TxnProgress {
            open: true,
            generation: self.generation.fetch_add(1, Ordering::AcqRel) + 1,
            fenced: progress.fenced,
            ..TxnProgress::default()
        };
        self.open_generation
            .store(progress.generation, Ordering::Release);
    }

    fn pending_ends(&self) -> MutexGuard<'_, VecDeque<PendingCommit>> {
        self.pending_ends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for every commit [`Producer::commit_and_begin_transaction`] started: the open
    /// transaction may end or take offsets only after them (a failed one has already made it
    /// abort-only).
    async fn settle_previous(&self) {
        // The newest settles last: each commit waits for the one before it.
        let newest = self.pending_ends().drain(..).next_back();
        if let Some(pending) = newest {
            let _ = pending.await;
        }
    }

    /// Waits until fewer than [`MAX_COMMITS_IN_FLIGHT`] commits are going on; returns the
    /// newest, which the next commit waits for before it ends its own transaction.
    async fn make_room_for_commit(&self) -> Option<PendingCommit> {
        loop {
            let oldest = {
                let mut pending = self.pending_ends();
                // Those already settled leave the queue without waiting.
                while pending.front().is_some_and(|p| p.0.peek().is_some()) {
                    pending.pop_front();
                }
                if pending.len() < MAX_COMMITS_IN_FLIGHT {
                    return pending.back().cloned();
                }
                pending.pop_front()
            };
            if let Some(oldest) = oldest {
                let _ = oldest.await;
            }
        }
    }

    /// Ends the handed-over transaction once its batches are done: commits it, or aborts it
    /// when one of them failed; sequences start again if the producer id or epoch changed
    /// with it. Then its successor's batches may go.
    async fn end_handed_over(&self, shared: &Shared, generation: u64) -> Result<()> {
        loop {
            let done = shared.batch_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if !self.has_batches_up_to(generation) {
                break;
            }
            done.await;
        }
        let (touched, failed) = match self.ending().get(&generation) {
            Some(ending) => (ending.touched, ending.failed.clone()),
            None => (false, None),
        };
        let ended = if touched {
            self.end_at_coordinator(&shared.cluster, failed.is_none())
                .await
        } else {
            Ok(false)
        };
        if ended? {
            shared.restart_sequences();
        }
        match failed {
            None => Ok(()),
            Some(failed) => Err(ClientError::TransactionState(format!(
                "a send of the transaction failed ({failed}): it was aborted"
            ))),
        }
    }

    /// After a handed-over transaction's end: its successor may send, and can only abort if
    /// it did not commit (a successor handed over already aborts instead of committing).
    fn finish_hand_over(&self, generation: u64, outcome: &Result<()>) {
        let mut progress = self.progress();
        let mut ending = self.ending();
        ending.remove(&generation);
        if let Err(error) = outcome {
            let why = format!("the transaction before this one did not commit: {error}");
            match ending.get_mut(&(generation + 1)) {
                Some(successor) => successor.failed.get_or_insert(why),
                None => progress.failed.get_or_insert(why),
            };
        }
        self.note_ended(generation);
    }

    fn check_open(&self) -> Result<()> {
        self.check_open_in(&self.progress(), false)
    }

    /// Refuses when fenced or no transaction is open, and, with `committing`, when a send of
    /// the open transaction failed.
    fn check_open_in(&self, progress: &TxnProgress, committing: bool) -> Result<()> {
        if progress.fenced {
            return Err(self.fenced());
        }
        if !progress.open {
            return Err(ClientError::TransactionState(
                "no transaction is open: call begin_transaction first".into(),
            ));
        }
        match &progress.failed {
            Some(failed) if committing => Err(ClientError::TransactionState(format!(
                "a send of this transaction failed ({failed}): it can only be aborted"
            ))),
            _ => Ok(()),
        }
    }

    /// Queues a partition to be added to the open transaction unless it is in (or queued)
    /// already. `true`: no AddPartitionsToTxn task is running, the caller starts one
    /// ([`Self::add_queued`]).
    pub(crate) fn queue_partition(&self, topic: &str, partition: i32) -> Result<bool> {
        self.check_open()?;
        let mut progress = self.progress();
        let key = (topic.to_string(), partition);
        if self.version_2 {
            // Its first Produce (v12) brings it in.
            progress.partitions.insert(key);
            return Ok(false);
        }
        if progress.partitions.contains(&key)
            || progress.queued.contains(&key)
            || progress.refused.contains_key(&key)
        {
            return Ok(false);
        }
        progress.queued.insert(key);
        let start = !progress.adding;
        progress.adding = true;
        Ok(start)
    }

    /// Whether the batches of a partition may be sent: `Ok(true)` once it is in the open
    /// transaction (or the producer has none open), `Ok(false)` while it waits to be added,
    /// and the refusal when the coordinator would not add it.
    pub(crate) fn may_send(&self, topic: &str, partition: i32) -> Result<bool> {
        let progress = self.progress();
        // The sender asks for every partition with batches on every pass: answer without
        // building a key when nothing waits to join and nothing was refused (always so on
        // transaction version 2).
        if !progress.open || (progress.queued.is_empty() && progress.refused.is_empty()) {
            return Ok(true);
        }
        let key = (topic.to_string(), partition);
        if let Some(error) = progress.refused.get(&key) {
            return Err(error.clone());
        }
        Ok(!progress.queued.contains(&key) || progress.partitions.contains(&key))
    }

    /// Adds the queued partitions, one AddPartitionsToTxn for all that are queued, until none
    /// are; `added` is called after each request (the sender has batches to send, or to fail).
    pub(crate) async fn add_queued(&self, cluster: &Cluster, added: impl Fn()) {
        loop {
            let batch: Vec<(String, i32)> = {
                let mut progress = self.progress();
                if progress.queued.is_empty() {
                    progress.adding = false;
                    return;
                }
                progress.queued.iter().cloned().collect()
            };
            let outcome = self.add_partitions(cluster, &batch).await;
            {
                let mut progress = self.progress();
                for key in batch {
                    progress.queued.remove(&key);
                    match &outcome {
                        Ok(()) => {
                            progress.partitions.insert(key);
                        }
                        Err(error) => {
                            progress.refused.insert(key, error.clone());
                        }
                    }
                }
                if let Err(error) = &outcome {
                    progress.failed.get_or_insert_with(|| error.to_string());
                }
            }
            added();
        }
    }

    /// One AddPartitionsToTxn for `partitions`, retried while retriable.
    async fn add_partitions(&self, cluster: &Cluster, partitions: &[(String, i32)]) -> Result<()> {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in partitions {
            by_topic.entry(topic).or_default().push(*partition);
        }
        let topics: Vec<AddPartitionsToTxnTopic> = by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(partitions)
            })
            .collect();
        with_retries(cluster, "AddPartitionsToTxn", || async {
            let node = self.coordinator(cluster).await?;
            let (producer_id, producer_epoch) = self.identity();
            let request = AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s(&self.transactional_id)))
                .with_v3_and_below_producer_id(ProducerId(producer_id))
                .with_v3_and_below_producer_epoch(producer_epoch)
                .with_v3_and_below_topics(topics.clone());
            let (_, response) =
                self.forget_unreachable(cluster.send_to_coordinator(node, &request).await)?;
            // A refusal of one partition fails the whole request (Kafka answers the others
            // OPERATION_NOT_ATTEMPTED then); the first real error is the one that counts.
            let code = response
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| t.results_by_partition.iter())
                .map(|p| p.partition_error_code)
                .filter(|c| *c != 0)
                .find(|c| *c != ResponseError::OperationNotAttempted.code())
                .unwrap_or(0);
            self.coordinator_error("AddPartitionsToTxn", code)
        })
        .await
    }

    async fn send_offsets(
        &self,
        cluster: &Cluster,
        offsets: &[(String, i32, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        // On transaction version 2 the offsets would join the transaction still committing.
        self.settle_previous().await;
        self.check_open()?;
        let group_id = group.group_id.as_str();
        let (producer_id, producer_epoch) = self.identity();
        // On transaction version 2, TxnOffsetCommit v5 brings the group in.
        if !self.version_2 {
            with_retries(cluster, "AddOffsetsToTxn", || async {
                let node = self.coordinator(cluster).await?;
                let request = AddOffsetsToTxnRequest::default()
                    .with_transactional_id(TransactionalId(s(&self.transactional_id)))
                    .with_producer_id(ProducerId(producer_id))
                    .with_producer_epoch(producer_epoch)
                    .with_group_id(GroupId(s(group_id)));
                let (_, response) =
                    self.forget_unreachable(cluster.send_to_coordinator(node, &request).await)?;
                self.coordinator_error("AddOffsetsToTxn", response.error_code)
            })
            .await?;
        }
        self.progress().offsets_added = true;
        let mut by_topic: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
        for (topic, partition, offset) in offsets {
            by_topic.entry(topic).or_default().push(
                TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(-1),
            );
        }
        let topics: Vec<TxnOffsetCommitRequestTopic> = by_topic
            .into_iter()
            .map(|(t, ps)| {
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partitions(ps)
            })
            .collect();
        with_retries(cluster, "TxnOffsetCommit", || async {
            let node = find_group_coordinator(cluster, group_id).await?;
            let request = TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(s(&self.transactional_id)))
                .with_group_id(GroupId(s(group_id)))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer_epoch)
                // KIP-447: with the consumer's generation the coordinator also refuses a
                // member whose generation ended; with -1 the transaction alone fences.
                .with_generation_id(group.generation_id)
                .with_member_id(s(&group.member_id))
                .with_group_instance_id(group.group_instance_id.as_deref().map(s))
                .with_topics(topics.clone());
            // v5 adds the group on transaction version 2; version 1 stays at v3 (a broker
            // takes v5 as version 2).
            let (_, response) = cluster
                .send_to_capped(node, &request, if self.version_2 { 5 } else { 3 })
                .await?;
            let code = response
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .map(|p| p.error_code)
                .find(|c| *c != 0)
                .unwrap_or(0);
            match ResponseError::try_from_code(code) {
                Some(ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch) => {
                    self.note_fenced(&mut self.progress());
                    Err(self.fenced())
                }
                Some(_) => Err(kafka("TxnOffsetCommit", group_id, code)),
                None => Ok(()),
            }
        })
        .await
    }

    /// Ends the open transaction; `true` when the producer id or epoch changed with it
    /// (transaction version 2).
    async fn end(&self, cluster: &Cluster, commit: bool) -> Result<bool> {
        let touched = {
            let progress = self.progress();
            self.check_open_in(&progress, commit)?;
            progress.touched()
        };
        // The coordinator never heard of a transaction that added nothing (Kafka's clients
        // skip EndTxn then too: it would answer INVALID_TXN_STATE).
        let new_identity = touched && self.end_at_coordinator(cluster, commit).await?;
        let mut progress = self.progress();
        self.note_ended(progress.generation);
        self.open_generation.store(0, Ordering::Release);
        progress.open = false;
        progress.partitions.clear();
        progress.refused.clear();
        progress.offsets_added = false;
        progress.failed = None;
        Ok(new_identity)
    }

    /// EndTxn, retried while retriable; on transaction version 2, takes up the producer id
    /// and epoch it answers. `true`: they changed, so the producer's sequences start again.
    async fn end_at_coordinator(&self, cluster: &Cluster, commit: bool) -> Result<bool> {
        let (producer_id, producer_epoch) = self.identity();
        let next = with_retries(cluster, "EndTxn", || async {
            let node = self.coordinator(cluster).await?;
            let request = EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s(&self.transactional_id)))
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer_epoch)
                .with_committed(commit);
            let max = if self.version_2 { 5 } else { 3 };
            let (version, response) = self.forget_unreachable(
                cluster
                    .send_to_coordinator_capped(node, &request, max)
                    .await,
            )?;
            self.coordinator_error("EndTxn", response.error_code)?;
            Ok((version >= 5).then_some((response.producer_id.0, response.producer_epoch)))
        })
        .await?;
        match next {
            Some(next) if next.0 >= 0 && next != (producer_id, producer_epoch) => {
                *self.identity.lock().unwrap_or_else(|p| p.into_inner()) = next;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

fn kafka(api: &'static str, resource: &str, code: i16) -> ClientError {
    ClientError::kafka(api, resource.to_string(), code, None)
}

impl Producer {
    fn transaction(&self) -> Result<&TransactionManager> {
        self.inner.shared.transaction.as_ref().ok_or_else(|| {
            ClientError::TransactionState("the producer has no transactional_id".into())
        })
    }

    /// Starts a transaction: records sent from now on commit or abort together.
    pub fn begin_transaction(&self) -> Result<()> {
        self.transaction()?.begin()
    }

    /// Adds consumed offsets (`(topic, partition, next offset to read)`) of `group_id` to the
    /// transaction: the group's committed offsets become these when, and only if, it commits
    /// (consume-transform-produce exactly once).
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(String, i32, i64)],
        group_id: &str,
    ) -> Result<()> {
        self.send_offsets_to_transaction_for(offsets, &ConsumerGroupMetadata::new(group_id))
            .await
    }

    /// [`Producer::send_offsets_to_transaction`] with the consumer's group metadata
    /// ([`crate::consumer::Consumer::group_metadata`]): the offsets are refused
    /// (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID) when that member's generation has ended, so a
    /// zombie that lost its partitions cannot commit them (KIP-447).
    pub async fn send_offsets_to_transaction_for(
        &self,
        offsets: &[(String, i32, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let txn = self.transaction()?;
        txn.send_offsets(&self.inner.shared.cluster, offsets, group)
            .await
    }

    /// Sends everything of the transaction, then commits it. Fails, leaving the transaction
    /// open for [`Producer::abort_transaction`], if one of its sends failed.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(true).await
    }

    /// Aborts the transaction: its records are never read by read_committed consumers, its
    /// offsets never committed.
    pub async fn abort_transaction(&self) -> Result<()> {
        self.end_transaction(false).await
    }

    async fn end_transaction(&self, commit: bool) -> Result<()> {
        let txn = self.transaction()?;
        txn.settle_previous().await;
        txn.check_open()?;
        self.flush().await;
        if txn.end(&self.inner.shared.cluster, commit).await? {
            self.inner.shared.restart_sequences();
        }
        Ok(())
    }

    /// Commits the open transaction without waiting for it and begins the next one: records
    /// sent from now on belong to the next transaction. They fill batches while the commit
    /// goes on and are sent once it is over, so the producer's pipeline does not run dry at
    /// every commit (with `commit_transaction`, a producer idles for the commit's length).
    /// Commits started this way end one after another, in order; up to
    /// [`MAX_COMMITS_IN_FLIGHT`] (4) go on at once, and this waits only when that many do.
    ///
    /// The returned [`PendingCommit`] resolves with the commit's outcome. If it fails, the
    /// transaction was aborted (or the producer fenced), so were those handed over after it,
    /// and the one open then can only be aborted. On transaction version 1 (a broker without
    /// KIP-890) the commit is complete when this returns: the next transaction's partitions
    /// could join only after it.
    pub async fn commit_and_begin_transaction(&self) -> Result<PendingCommit> {
        let txn = self.transaction()?;
        if !txn.version_2() {
            self.commit_transaction().await?;
            self.begin_transaction()?;
            return Ok(PendingCommit::done(Ok(())));
        }
        let previous = txn.make_room_for_commit().await;
        let generation = txn.hand_over()?;
        let shared = Arc::clone(&self.inner.shared);
        // Closes the handed-over transaction's open batches (they go without lingering).
        shared.wake.notify_one();
        let commit = async move {
            let Some(txn) = &shared.transaction else {
                return Ok(());
            };
            // Transactions end in order: a failed predecessor makes this one abort.
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let outcome = txn.end_handed_over(&shared, generation).await;
            txn.finish_hand_over(generation, &outcome);
            shared.wake.notify_one();
            outcome
        }
        .boxed()
        .shared();
        // Driven to its end whether or not anyone awaits it.
        tokio::spawn(commit.clone());
        let pending = PendingCommit(commit);
        txn.pending_ends().push_back(pending.clone());
        Ok(pending)
    }

    /// Whether a newer producer with the same transactional id fenced this one.
    pub fn is_fenced(&self) -> bool {
        self.inner
            .shared
            .transaction
            .as_ref()
            .is_some_and(|t| t.progress().fenced)
    }

    /// Queues `topic`-`partition` to join the open transaction before a record goes there;
    /// does not wait for it (see the module documentation).
    pub(crate) fn add_to_transaction(&self, topic: &str, partition: i32) -> Result<()> {
        let Some(txn) = &self.inner.shared.transaction else {
            return Ok(());
        };
        if txn.queue_partition(topic, partition)? {
            let shared = Arc::clone(&self.inner.shared);
            tokio::spawn(async move {
                if let Some(txn) = &shared.transaction {
                    txn.add_queued(&shared.cluster, || shared.wake.notify_one())
                        .await;
                }
            });
        }
        Ok(())
    }
}

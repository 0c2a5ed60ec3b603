//! The transaction coordinator (Kafka's `TransactionCoordinator` with its
//! `TransactionStateManager`): the state of each transactional id this broker coordinates, the
//! rules of InitProducerId, AddPartitionsToTxn, EndTxn and the timeout, and the state's
//! durability in `__transaction_state`.
//!
//! A broker coordinates the transactional ids of the `__transaction_state` partitions it leads.
//! Every change is written to that partition (acks=all, like any replicated write) before it
//! takes effect in memory, so a new leader replays the partition and carries on: a transaction
//! it finds preparing gets its markers written again (markers are idempotent for the log: a
//! second one for a transaction already ended changes nothing).
//!
//! Each transactional id has a slot: an async lock that orders the operations on it (one
//! request, or the marker writing, at a time) and the published state that readers (KIP-890
//! verification, DescribeTransactions) look at without waiting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::channels::InterBrokerChannels;
use super::markers;
use super::records;
use super::state::{TxnMetadata, TxnState};
use crate::api::now_ms;
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::error::ResponseError;
use crate::group::records::{encode_batch, partition_for};
use crate::replica::{Partition, Role};

/// The internal topic of transaction states.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// How long a state write waits for the in-sync replicas.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long EndTxn and a fencing InitProducerId wait for the markers before answering anyway
/// (the markers are then finished in the background; the client retries on
/// CONCURRENT_TRANSACTIONS meanwhile).
const MARKERS_INLINE_WAIT: Duration = Duration::from_secs(5);

/// A transaction-level refusal: the Kafka error and a message for the logs.
pub type Refusal = (ResponseError, String);

/// One transactional id: its operation lock and its published state.
#[derive(Default)]
struct TxnSlot {
    op: tokio::sync::Mutex<()>,
    meta: Mutex<Option<TxnMetadata>>,
}

impl TxnSlot {
    fn get(&self) -> Option<TxnMetadata> {
        self.meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, meta: TxnMetadata) {
        *self.meta.lock().unwrap_or_else(PoisonError::into_inner) = Some(meta);
    }

    /// Forgets the id's state (it expired): the next InitProducerId starts it afresh.
    fn clear(&self) {
        *self.meta.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Coordinates the transactional ids of the `__transaction_state` partitions this broker leads.
pub struct TransactionCoordinator {
    num_partitions: i32,
    replication_factor: i16,
    max_timeout_ms: i32,
    /// How often expired transactions are aborted.
    pub cleanup_interval: Duration,
    /// `transactional.id.expiration.ms`: an id idle this long is removed.
    id_expiration_ms: i64,
    /// How often expired ids are looked for.
    pub id_removal_interval: Duration,
    slots: Mutex<HashMap<String, Arc<TxnSlot>>>,
    /// The `__transaction_state` partitions loaded here, with the leader epoch they were
    /// loaded in (the coordinator epoch written into markers).
    led: Mutex<BTreeMap<i32, i32>>,
    /// Connections to other brokers (markers, verification).
    pub channels: InterBrokerChannels,
}

fn refusal(error: ResponseError, message: impl Into<String>) -> Refusal {
    (error, message.into())
}

impl TransactionCoordinator {
    /// A coordinator with nothing loaded yet.
    pub fn new(config: &BrokerConfig) -> Self {
        TransactionCoordinator {
            num_partitions: config.transaction_state_log_num_partitions,
            replication_factor: config.transaction_state_log_replication_factor,
            max_timeout_ms: config.transaction_max_timeout_ms,
            cleanup_interval: Duration::from_millis(
                config.transaction_abort_timed_out_transaction_cleanup_interval_ms,
            ),
            id_expiration_ms: i64::try_from(config.transactional_id_expiration_ms)
                .unwrap_or(i64::MAX),
            id_removal_interval: Duration::from_millis(
                config.transaction_remove_expired_transaction_cleanup_interval_ms,
            ),
            slots: Mutex::new(HashMap::new()),
            led: Mutex::new(BTreeMap::new()),
            channels: InterBrokerChannels::new(config.inter_broker.clone()),
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<TxnSlot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, transactional_id: &str) -> Arc<TxnSlot> {
        self.slots()
            .entry(transactional_id.to_string())
            .or_default()
            .clone()
    }

    /// Creates `__transaction_state` on first use (compacted, replicated like
    /// `__consumer_offsets`); returns its partition count.
    pub async fn ensure_topic(&self, broker: &Broker) -> Result<i32, Refusal> {
        broker
            .controller
            .ensure_internal_topic(
                TRANSACTION_STATE_TOPIC,
                self.num_partitions,
                self.replication_factor,
                |replication_factor| {
                    [
                        ("cleanup.policy".to_string(), "compact".to_string()),
                        ("segment.bytes".to_string(), "104857600".to_string()),
                        // Kafka's transaction.state.log.min.isr: a state write survives one
                        // broker loss.
                        (
                            "min.insync.replicas".to_string(),
                            replication_factor.min(2).to_string(),
                        ),
                    ]
                    .into()
                },
            )
            .await
            .map_err(|error| {
                refusal(
                    ResponseError::CoordinatorNotAvailable,
                    format!("cannot create {TRANSACTION_STATE_TOPIC}: {error}"),
                )
            })
    }

    /// The `__transaction_state` partition of a transactional id (Kafka's: the Java hash of
    /// the id modulo the partition count, as for groups).
    pub fn partition_of(&self, transactional_id: &str, partitions: i32) -> i32 {
        partition_for(transactional_id, partitions)
    }

    /// The replica of the id's `__transaction_state` partition, which this broker must lead
    /// and have loaded (NOT_COORDINATOR otherwise), and the coordinator epoch.
    fn owner(
        &self,
        broker: &Broker,
        transactional_id: &str,
    ) -> Result<(Arc<Partition>, i32), Refusal> {
        let Some(topic) = broker.controller.topic(TRANSACTION_STATE_TOPIC) else {
            return Err(refusal(
                ResponseError::CoordinatorNotAvailable,
                format!("{TRANSACTION_STATE_TOPIC} does not exist yet"),
            ));
        };
        let partition = self.partition_of(transactional_id, topic.partitions);
        self.sync_coordination(broker);
        let replica = broker
            .replicas
            .replica(TRANSACTION_STATE_TOPIC, partition)
            .filter(|r| r.role() == Role::Leader);
        let loaded = self.led_epoch(partition);
        match (replica, loaded) {
            (Some(r), Some(epoch)) if r.leader_epoch() == epoch => Ok((r, epoch)),
            _ => Err(refusal(
                ResponseError::NotCoordinator,
                format!("not the coordinator of {TRANSACTION_STATE_TOPIC}-{partition}"),
            )),
        }
    }

    fn led_epoch(&self, partition: i32) -> Option<i32> {
        self.led
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&partition)
            .copied()
    }

    /// Writes `meta` to `__transaction_state` and waits for the in-sync replicas.
    async fn write_state(&self, replica: &Partition, meta: &TxnMetadata) -> Result<(), Refusal> {
        let (last_offset, epoch) = Self::append_state(replica, meta)?;
        Self::wait_written(replica, last_offset, epoch).await
    }

    /// Writes the id's tombstone and waits for the in-sync replicas, like [`Self::write_state`].
    async fn write_tombstone(replica: &Partition, transactional_id: &str) -> Result<(), Refusal> {
        let (last_offset, epoch) = Self::append_entry(replica, transactional_id, None)?;
        Self::wait_written(replica, last_offset, epoch).await
    }

    /// Waits until the state record at `last_offset` is durable and on the in-sync replicas.
    async fn wait_written(
        replica: &Partition,
        last_offset: i64,
        epoch: i32,
    ) -> Result<(), Refusal> {
        replica
            .log()
            .wait_durable(last_offset)
            .await
            .map_err(|e| refusal(ResponseError::CoordinatorNotAvailable, e.to_string()))?;
        replica
            .wait_for_isr(last_offset, epoch, WRITE_TIMEOUT)
            .await
            .map_err(Self::not_coordinator)
    }

    /// Appends `meta` to `__transaction_state` without waiting for it to be durable: the
    /// offset and leader epoch it was appended at.
    fn append_state(replica: &Partition, meta: &TxnMetadata) -> Result<(i64, i32), Refusal> {
        Self::append_entry(
            replica,
            &meta.transactional_id,
            Some(records::encode_value(meta)),
        )
    }

    /// Appends the id's state record, or with `None` its tombstone (compaction then removes
    /// the id from the log).
    fn append_entry(
        replica: &Partition,
        transactional_id: &str,
        value: Option<bytes::Bytes>,
    ) -> Result<(i64, i32), Refusal> {
        let now = now_ms();
        let entry = (records::encode_key(transactional_id), value);
        let batch = encode_batch(&[entry], now).ok_or_else(|| {
            refusal(
                ResponseError::CoordinatorNotAvailable,
                "cannot encode state",
            )
        })?;
        let (info, epoch) = replica
            .append_as_leader(batch, -1, now)
            .map_err(Self::not_coordinator)?;
        Ok((info.last_offset, epoch))
    }

    /// A write refused because this broker no longer leads the state partition means it no
    /// longer coordinates the id.
    fn not_coordinator((error, message): Refusal) -> Refusal {
        let error = match error {
            ResponseError::NotLeaderOrFollower | ResponseError::FencedLeaderEpoch => {
                ResponseError::NotCoordinator
            }
            _ => ResponseError::CoordinatorNotAvailable,
        };
        (
            error,
            format!("writing {TRANSACTION_STATE_TOPIC}: {message}"),
        )
    }

    /// InitProducerId with a transactional id: the id's producer id and a bumped epoch. An
    /// open transaction of the previous producer is aborted first (its markers carry the
    /// bumped epoch, fencing it everywhere).
    pub async fn init_producer_id(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        timeout_ms: i32,
        requested: (i64, i16),
    ) -> Result<(i64, i16), Refusal> {
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Err(refusal(
                ResponseError::InvalidTransactionTimeout,
                format!(
                    "transaction.timeout.ms {timeout_ms} is not in 1..={}",
                    self.max_timeout_ms
                ),
            ));
        }
        // Kafka's clients look the coordinator up first, which creates the topic; a client
        // that does not still gets an answer rather than a retriable error forever.
        self.ensure_topic(broker).await?;
        let (replica, coordinator_epoch) = self.owner(broker, transactional_id)?;
        let slot = self.slot(transactional_id);
        let _op = slot.op.lock().await;
        let now = now_ms();
        let mut meta = match slot.get() {
            None => {
                let producer_id = broker
                    .producer_ids
                    .next_id(&broker.controller)
                    .await
                    .map_err(|e| refusal(ResponseError::CoordinatorNotAvailable, e.to_string()))?;
                TxnMetadata {
                    transactional_id: transactional_id.to_string(),
                    producer_id,
                    producer_epoch: -1,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeSet::new(),
                    start_ms: -1,
                    last_update_ms: now,
                    client_transaction_version: 0,
                    previous_producer_id: -1,
                    next_producer_id: -1,
                }
            }
            Some(current) => {
                let (pid, epoch) = requested;
                // KIP-360: a producer that names its id and epoch must be the current one.
                if pid >= 0 && (pid != current.producer_id || epoch != current.producer_epoch) {
                    return Err(refusal(
                        ResponseError::ProducerFenced,
                        format!(
                            "producer {pid} epoch {epoch} is not the current producer {} epoch {}",
                            current.producer_id, current.producer_epoch
                        ),
                    ));
                }
                if current.state.is_preparing() {
                    return Err(refusal(
                        ResponseError::ConcurrentTransactions,
                        "the previous transaction is still completing",
                    ));
                }
                if current.state == TxnState::Ongoing {
                    // Fence the previous producer: abort its transaction at a bumped epoch.
                    let mut aborting = current.clone();
                    aborting.producer_epoch = bump(current.producer_epoch);
                    aborting.state = TxnState::PrepareAbort;
                    aborting.last_update_ms = now;
                    self.write_state(&replica, &aborting).await?;
                    slot.set(aborting.clone());
                    tracing::info!(
                        transactional_id,
                        producer_id = aborting.producer_id,
                        epoch = aborting.producer_epoch,
                        "fencing the previous producer: aborting its open transaction"
                    );
                    match tokio::time::timeout(
                        MARKERS_INLINE_WAIT,
                        self.finish(broker, &slot, &replica, coordinator_epoch, aborting.clone()),
                    )
                    .await
                    {
                        Ok(Ok(done)) => done,
                        _ => {
                            self.finish_later(broker, transactional_id, slot.clone());
                            return Err(refusal(
                                ResponseError::ConcurrentTransactions,
                                "aborting the previous producer's transaction",
                            ));
                        }
                    }
                } else {
                    current
                }
            }
        };
        if meta.producer_epoch >= i16::MAX - 1 {
            // The epoch is exhausted: a new producer id starts again at 0.
            meta.producer_id = broker
                .producer_ids
                .next_id(&broker.controller)
                .await
                .map_err(|e| refusal(ResponseError::CoordinatorNotAvailable, e.to_string()))?;
            meta.producer_epoch = 0;
        } else {
            meta.producer_epoch = bump(meta.producer_epoch);
        }
        meta.timeout_ms = timeout_ms;
        meta.state = TxnState::Empty;
        meta.partitions.clear();
        meta.start_ms = -1;
        meta.last_update_ms = now;
        self.write_state(&replica, &meta).await?;
        slot.set(meta.clone());
        Ok((meta.producer_id, meta.producer_epoch))
    }

    /// Checks that `(producer_id, producer_epoch)` is the id's current producer.
    fn check_producer(
        meta: &TxnMetadata,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(), Refusal> {
        if producer_id != meta.producer_id {
            return Err(refusal(
                ResponseError::InvalidProducerIdMapping,
                format!(
                    "producer id {producer_id} is not the id's producer {}",
                    meta.producer_id
                ),
            ));
        }
        if producer_epoch != meta.producer_epoch {
            return Err(refusal(
                ResponseError::ProducerFenced,
                format!(
                    "epoch {producer_epoch} is not the current epoch {}",
                    meta.producer_epoch
                ),
            ));
        }
        Ok(())
    }

    fn current(&self, transactional_id: &str) -> Result<(Arc<TxnSlot>, TxnMetadata), Refusal> {
        let slot = self.slots().get(transactional_id).cloned();
        match slot.as_ref().and_then(|s| s.get()) {
            Some(meta) => Ok((slot.unwrap_or_default(), meta)),
            None => Err(refusal(
                ResponseError::InvalidProducerIdMapping,
                format!("no producer for transactional id {transactional_id}"),
            )),
        }
    }

    /// AddPartitionsToTxn (and the partition AddOffsetsToTxn adds): the partitions join the
    /// transaction, which becomes Ongoing. `client_transaction_version` 2: a partition leader
    /// adds them on behalf of a producer on transaction version 2 (its Produce v12 or
    /// TxnOffsetCommit v5 wrote to a partition not yet in the transaction).
    pub async fn add_partitions(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
        client_transaction_version: i16,
    ) -> Result<(), Refusal> {
        let (replica, _) = self.owner(broker, transactional_id)?;
        let (slot, _) = self.current(transactional_id)?;
        let _op = slot.op.lock().await;
        let (_, meta) = self.current(transactional_id)?;
        Self::check_producer(&meta, producer_id, producer_epoch)?;
        if meta.state.is_preparing() {
            return Err(refusal(
                ResponseError::ConcurrentTransactions,
                "the previous transaction is still completing",
            ));
        }
        if meta.state == TxnState::Ongoing && partitions.iter().all(|p| meta.partitions.contains(p))
        {
            return Ok(());
        }
        let mut next = meta.clone();
        let now = now_ms();
        if meta.state != TxnState::Ongoing {
            next.partitions.clear();
            next.start_ms = now;
        }
        next.partitions.extend(partitions.iter().cloned());
        next.state = TxnState::Ongoing;
        next.last_update_ms = now;
        next.client_transaction_version = next
            .client_transaction_version
            .max(client_transaction_version);
        self.write_state(&replica, &next).await?;
        slot.set(next);
        Ok(())
    }

    /// KIP-890 verification (AddPartitionsToTxn v4 verify-only): whether each partition is in
    /// the open transaction of this producer. Changes nothing.
    pub fn verify(
        &self,
        broker: &Broker,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<Option<Refusal>> {
        let outcome = self.owner(broker, transactional_id).and_then(|_| {
            let (_, meta) = self.current(transactional_id)?;
            Self::check_producer(&meta, producer_id, producer_epoch)?;
            Ok(meta)
        });
        partitions
            .iter()
            .map(|p| match &outcome {
                Err(e) => Some(e.clone()),
                Ok(meta) if meta.state == TxnState::Ongoing && meta.partitions.contains(p) => None,
                Ok(_) => Some(refusal(
                    ResponseError::InvalidTxnState,
                    format!("{}-{} is not in the open transaction", p.0, p.1),
                )),
            })
            .collect()
    }

    /// EndTxn: the transaction prepares to commit or abort (written to
    /// `__transaction_state`), its markers are written, then it completes. Answers once
    /// prepared and, unless that takes longer than a few seconds, completed: the producer id
    /// and epoch the producer goes on with.
    ///
    /// With `transaction_version_2` (EndTxn v5, KIP-890) every transaction ends at a new
    /// epoch: the markers carry it, so a late write of the ended transaction is fenced on
    /// every partition, and the answer hands it to the producer (with a new producer id when
    /// the epochs are used up). A retry of an EndTxn that went through (the producer never
    /// got the answer) is recognised by the epoch before the bump and answered the same.
    pub async fn end_txn(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        transaction_version_2: bool,
    ) -> Result<(i64, i16), Refusal> {
        let (replica, coordinator_epoch) = self.owner(broker, transactional_id)?;
        let (slot, _) = self.current(transactional_id)?;
        let _op = slot.op.lock().await;
        let (_, meta) = self.current(transactional_id)?;
        if transaction_version_2 {
            if let Some(continuation) = ended_already(&meta, producer_id, producer_epoch, commit) {
                return Ok(continuation);
            }
        }
        Self::check_producer(&meta, producer_id, producer_epoch)?;
        let invalid = |what: &str| {
            Err(refusal(
                ResponseError::InvalidTxnState,
                format!("cannot {what} a transaction in state {}", meta.state.name()),
            ))
        };
        let what = if commit { "commit" } else { "abort" };
        let current = (meta.producer_id, meta.producer_epoch);
        match (meta.state, commit) {
            (TxnState::Ongoing, _) => {}
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                return Err(refusal(
                    ResponseError::ConcurrentTransactions,
                    "the transaction is completing",
                ))
            }
            // A producer on transaction version 2 does not know whether a partition joined:
            // a transaction that wrote nothing ends at a new epoch without markers.
            (TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort, _)
                if transaction_version_2 =>
            {
                let mut ending = meta.clone();
                ending.client_transaction_version = 2;
                self.advance_epoch(broker, &mut ending).await?;
                let continuation = continuation_of(&ending);
                let done = ending.completed(commit, now_ms());
                self.write_state(&replica, &done).await?;
                slot.set(done);
                return Ok(continuation);
            }
            // A retried EndTxn whose first attempt completed.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                return Ok(current)
            }
            _ => return invalid(what),
        }
        let mut prepared = meta.clone();
        prepared.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        prepared.last_update_ms = now_ms();
        if transaction_version_2 {
            prepared.client_transaction_version = 2;
            self.advance_epoch(broker, &mut prepared).await?;
        }
        self.write_state(&replica, &prepared).await?;
        slot.set(prepared.clone());
        // On version 1 the prepared state keeps the producer's id and epoch.
        let continuation = continuation_of(&prepared);
        let finished = tokio::time::timeout(
            MARKERS_INLINE_WAIT,
            self.finish(broker, &slot, &replica, coordinator_epoch, prepared),
        )
        .await;
        if !matches!(finished, Ok(Ok(_))) {
            self.finish_later(broker, transactional_id, slot.clone());
        }
        Ok(continuation)
    }

    /// Bumps the epoch of a transaction ending on transaction version 2; when that uses up
    /// the epochs, the producer continues with a new producer id (`next_producer_id`).
    async fn advance_epoch(&self, broker: &Broker, meta: &mut TxnMetadata) -> Result<(), Refusal> {
        meta.producer_epoch = bump(meta.producer_epoch);
        if meta.producer_epoch >= i16::MAX - 1 {
            meta.next_producer_id = broker
                .producer_ids
                .next_id(&broker.controller)
                .await
                .map_err(|e| refusal(ResponseError::CoordinatorNotAvailable, e.to_string()))?;
        }
        Ok(())
    }

    /// Writes the markers of a prepared transaction until every partition has one, then its
    /// completion. The caller holds the slot's operation lock. Gives up (Err) when this broker
    /// no longer coordinates the id: the new coordinator finishes it.
    async fn finish(
        &self,
        broker: &Arc<Broker>,
        slot: &TxnSlot,
        replica: &Partition,
        coordinator_epoch: i32,
        prepared: TxnMetadata,
    ) -> Result<TxnMetadata, Refusal> {
        let commit = prepared.state == TxnState::PrepareCommit;
        let mut backoff = Duration::from_millis(20);
        loop {
            if replica.role() != Role::Leader || replica.leader_epoch() != coordinator_epoch {
                return Err(refusal(
                    ResponseError::NotCoordinator,
                    "lost the coordination of the transaction",
                ));
            }
            match markers::write_markers(
                broker,
                prepared.producer_id,
                prepared.producer_epoch,
                coordinator_epoch,
                commit,
                &prepared.partitions,
            )
            .await
            {
                Ok(()) => break,
                Err(message) => {
                    tracing::debug!(transactional_id = %prepared.transactional_id, %message, "writing transaction markers failed; retrying");
                    if *broker.background_shutdown.borrow() {
                        return Err(refusal(ResponseError::CoordinatorNotAvailable, message));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        let done = prepared.completed(commit, now_ms());
        // Not waited for: the id's next state write waits for its own offset, which makes this
        // one durable and replicated too, and a coordinator that loses it finds the
        // transaction preparing and writes the (idempotent) markers again. Waiting would put
        // one more fsync and replication round on every commit.
        Self::append_state(replica, &done)?;
        slot.set(done.clone());
        broker.metrics.transactions.completed(commit);
        Ok(done)
    }

    /// Finishes a prepared transaction in the background (after an inline attempt timed out,
    /// or when a new coordinator finds it preparing).
    fn finish_later(&self, broker: &Arc<Broker>, transactional_id: &str, slot: Arc<TxnSlot>) {
        let broker = broker.clone();
        let transactional_id = transactional_id.to_string();
        tokio::spawn(async move {
            let coordinator = &broker.transactions;
            let Ok((replica, epoch)) = coordinator.owner(&broker, &transactional_id) else {
                return;
            };
            let _op = slot.op.lock().await;
            let Some(meta) = slot
                .get()
                .filter(|m| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
            else {
                return;
            };
            if let Err((error, message)) = coordinator
                .finish(&broker, &slot, &replica, epoch, meta)
                .await
            {
                tracing::warn!(%transactional_id, %error, %message, "transaction not completed here");
            }
        });
    }

    /// Aborts open transactions past their `transaction.timeout.ms`, bumping the epoch so the
    /// producer is fenced (Kafka's timed-out transaction cleanup).
    pub fn abort_timed_out(&self, broker: &Arc<Broker>) {
        let now = now_ms();
        let expired: Vec<(String, Arc<TxnSlot>)> = self
            .slots()
            .iter()
            .filter(|(_, slot)| {
                slot.get().is_some_and(|m| {
                    m.state == TxnState::Ongoing
                        && now.saturating_sub(m.start_ms) > i64::from(m.timeout_ms)
                })
            })
            .map(|(id, slot)| (id.clone(), slot.clone()))
            .collect();
        for (transactional_id, slot) in expired {
            let broker = broker.clone();
            tokio::spawn(async move {
                let coordinator = &broker.transactions;
                let Ok((replica, epoch)) = coordinator.owner(&broker, &transactional_id) else {
                    return;
                };
                let _op = slot.op.lock().await;
                let now = now_ms();
                let Some(meta) = slot.get().filter(|m| {
                    m.state == TxnState::Ongoing
                        && now.saturating_sub(m.start_ms) > i64::from(m.timeout_ms)
                }) else {
                    return;
                };
                tracing::info!(%transactional_id, producer_id = meta.producer_id, "aborting a transaction past its timeout");
                broker.metrics.transactions.timed_out();
                let mut aborting = meta;
                aborting.producer_epoch = bump(aborting.producer_epoch);
                aborting.state = TxnState::PrepareAbort;
                aborting.last_update_ms = now;
                if let Err((error, message)) = coordinator.write_state(&replica, &aborting).await {
                    tracing::warn!(%transactional_id, %error, %message, "cannot abort a timed-out transaction");
                    return;
                }
                slot.set(aborting.clone());
                if let Err((error, message)) = coordinator
                    .finish(&broker, &slot, &replica, epoch, aborting)
                    .await
                {
                    tracing::warn!(%transactional_id, %error, %message, "timed-out transaction not completed here");
                }
            });
        }
    }

    /// Removes the transactional ids idle longer than `transactional.id.expiration.ms` (Kafka's
    /// expired transactional id cleanup): an id whose last transaction ended that long ago, or
    /// that never began one, gets a tombstone in `__transaction_state` and is forgotten. An id
    /// with a transaction going on never expires. Its producer then starts afresh: a new
    /// InitProducerId gets a new producer id, and the old producer's requests are refused
    /// (INVALID_PRODUCER_ID_MAPPING).
    pub fn remove_expired_ids(&self, broker: &Arc<Broker>) {
        let expiration = self.id_expiration_ms;
        let expired = move |meta: &TxnMetadata, now: i64| {
            matches!(
                meta.state,
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
            ) && now.saturating_sub(meta.last_update_ms) > expiration
        };
        let now = now_ms();
        let candidates: Vec<(String, Arc<TxnSlot>)> = self
            .slots()
            .iter()
            .filter(|(_, slot)| slot.get().is_some_and(|m| expired(&m, now)))
            .map(|(id, slot)| (id.clone(), slot.clone()))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let broker = broker.clone();
        tokio::spawn(async move {
            let coordinator = &broker.transactions;
            let mut removed = 0usize;
            for (transactional_id, slot) in candidates {
                let Ok((replica, _)) = coordinator.owner(&broker, &transactional_id) else {
                    continue;
                };
                {
                    let _op = slot.op.lock().await;
                    // A request may have used the id since it was picked.
                    if !slot.get().is_some_and(|m| expired(&m, now_ms())) {
                        continue;
                    }
                    if let Err((error, message)) =
                        Self::write_tombstone(&replica, &transactional_id).await
                    {
                        tracing::warn!(%transactional_id, %error, %message, "cannot remove an expired transactional id");
                        continue;
                    }
                    slot.clear();
                }
                // The slot leaves the map only if no request holds it; one that does finds it
                // empty and starts the id afresh, as a new one would.
                let mut slots = coordinator.slots();
                if slots
                    .get(&transactional_id)
                    .is_some_and(|s| Arc::ptr_eq(s, &slot) && Arc::strong_count(s) == 2)
                {
                    slots.remove(&transactional_id);
                }
                removed += 1;
            }
            if removed > 0 {
                tracing::info!(removed, "removed expired transactional ids");
            }
        });
    }

    /// Every transaction this broker coordinates (ListTransactions, DescribeTransactions).
    pub fn transactions(&self) -> Vec<TxnMetadata> {
        let mut all: Vec<TxnMetadata> = self.slots().values().filter_map(|s| s.get()).collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }

    /// One transaction's state, if this broker coordinates it.
    pub fn describe(
        &self,
        broker: &Broker,
        transactional_id: &str,
    ) -> Result<TxnMetadata, Refusal> {
        self.owner(broker, transactional_id)?;
        self.current(transactional_id).map(|(_, m)| m).map_err(|_| {
            refusal(
                ResponseError::TransactionalIdNotFound,
                format!("no transactional id {transactional_id}"),
            )
        })
    }

    /// Follows the leadership of `__transaction_state` partitions: ids of partitions led now
    /// (in a new leader epoch) are loaded from the log, ids of partitions no longer led are
    /// forgotten. Cheap when nothing changed. Transactions found preparing are finished in the
    /// background; that needs the broker, so the timer (which has it) calls
    /// [`TransactionCoordinator::resume_prepared`] after this.
    pub fn sync_coordination(&self, broker: &Broker) {
        let Some(hosted) = broker.replicas.topic(TRANSACTION_STATE_TOPIC) else {
            return;
        };
        let now_led: BTreeMap<i32, i32> = hosted
            .partitions
            .iter()
            .filter(|(_, r)| r.role() == Role::Leader)
            .map(|(index, r)| (*index, r.leader_epoch()))
            .collect();
        let mut led = self.led.lock().unwrap_or_else(PoisonError::into_inner);
        if *led == now_led {
            return;
        }
        let partitions = broker
            .controller
            .topic(TRANSACTION_STATE_TOPIC)
            .map_or(self.num_partitions, |t| t.partitions);
        let changed: BTreeSet<i32> = led
            .iter()
            .filter(|(p, e)| now_led.get(p) != Some(e))
            .map(|(p, _)| *p)
            .chain(
                now_led
                    .keys()
                    .filter(|p| led.get(p) != now_led.get(p))
                    .copied(),
            )
            .collect();
        // Everything of a changed partition is dropped, then reloaded if still led.
        self.slots()
            .retain(|id, _| !changed.contains(&partition_for(id, partitions)));
        for p in &changed {
            if now_led.contains_key(p) {
                if let Some(replica) = hosted.partitions.get(p) {
                    self.load(replica);
                }
            }
        }
        tracing::info!(led = ?now_led.keys().collect::<Vec<_>>(), "coordinating the transactional ids of these {TRANSACTION_STATE_TOPIC} partitions");
        *led = now_led;
    }

    /// Replays one `__transaction_state` partition: the last state of each id wins.
    fn load(&self, replica: &Partition) {
        let log = replica.log();
        let mut states: HashMap<String, Option<TxnMetadata>> = HashMap::new();
        crate::log::replay_records(log, TRANSACTION_STATE_TOPIC, |record| {
            if record.control {
                return;
            }
            let Some(id) = record.key.as_deref().and_then(records::decode_key) else {
                return;
            };
            let value = record
                .value
                .as_deref()
                .and_then(|v| records::decode_value(&id, v));
            states.insert(id, value);
        });
        let mut slots = self.slots();
        let mut loaded = 0usize;
        for (id, meta) in states {
            if let Some(meta) = meta {
                let slot = Arc::new(TxnSlot::default());
                slot.set(meta);
                slots.insert(id, slot);
                loaded += 1;
            }
        }
        tracing::info!(
            partition = replica.index(),
            transactional_ids = loaded,
            "loaded a partition of {TRANSACTION_STATE_TOPIC}"
        );
    }

    /// Finishes, in the background, every transaction found preparing (after a load).
    pub fn resume_prepared(&self, broker: &Arc<Broker>) {
        let preparing: Vec<(String, Arc<TxnSlot>)> = self
            .slots()
            .iter()
            .filter(|(_, s)| {
                s.get().is_some_and(|m| {
                    matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
                }) && s.op.try_lock().is_ok()
            })
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        for (id, slot) in preparing {
            self.finish_later(broker, &id, slot);
        }
    }

    /// The background work: follows leadership often, aborts expired transactions every
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms` and removes expired ids
    /// every `transaction.remove.expired.transaction.cleanup.interval.ms`. Holds the broker only
    /// weakly, so a closed broker is dropped.
    pub async fn run(
        broker: std::sync::Weak<Broker>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some((interval, removal_interval)) = broker.upgrade().map(|b| {
            (
                b.transactions.cleanup_interval,
                b.transactions.id_removal_interval,
            )
        }) else {
            return;
        };
        let tick = interval
            .min(removal_interval)
            .min(Duration::from_millis(500));
        let mut last_cleanup = tokio::time::Instant::now();
        let mut last_removal = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let Some(broker) = broker.upgrade() else {
                return;
            };
            broker.transactions.sync_coordination(&broker);
            broker.transactions.resume_prepared(&broker);
            if last_cleanup.elapsed() >= interval {
                last_cleanup = tokio::time::Instant::now();
                broker.transactions.abort_timed_out(&broker);
            }
            if last_removal.elapsed() >= removal_interval {
                last_removal = tokio::time::Instant::now();
                broker.transactions.remove_expired_ids(&broker);
            }
        }
    }
}

/// The next epoch (epochs stop below `i16::MAX`; `init_producer_id` switches to a new producer
/// id before that).
fn bump(epoch: i16) -> i16 {
    epoch.saturating_add(1)
}

/// The producer id and epoch a producer on transaction version 2 continues with once `meta`
/// (prepared or completed at the bumped epoch) is done.
fn continuation_of(meta: &TxnMetadata) -> (i64, i16) {
    if meta.next_producer_id >= 0 {
        (meta.next_producer_id, 0)
    } else {
        (meta.producer_id, meta.producer_epoch)
    }
}

/// Whether an EndTxn v5 from `(producer_id, producer_epoch)` asks again for an end that
/// already happened (the producer missed the answer): the transaction is preparing or
/// complete in the same direction, at the epoch after the producer's (or moved on to a new
/// producer id). The answer is what the first attempt answered.
fn ended_already(
    meta: &TxnMetadata,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Option<(i64, i16)> {
    if !meta.bumps_epoch_per_transaction() {
        return None;
    }
    let same_direction = match meta.state {
        TxnState::PrepareCommit | TxnState::CompleteCommit => commit,
        TxnState::PrepareAbort | TxnState::CompleteAbort => !commit,
        _ => return None,
    };
    let bumped_from_this =
        producer_id == meta.producer_id && meta.producer_epoch == producer_epoch.saturating_add(1);
    let moved_from_this = producer_id == meta.previous_producer_id
        && meta.producer_epoch == 0
        && matches!(
            meta.state,
            TxnState::CompleteCommit | TxnState::CompleteAbort
        );
    (same_direction && (bumped_from_this || moved_from_this)).then(|| continuation_of(meta))
}

//! The transactional producer (`transactional.id`): Kafka's TransactionManager.
//!
//! [`Producer::connect`] finds the transaction coordinator (FindCoordinator, key type 1) and
//! gets the id's producer id and epoch (InitProducerId), fencing any previous producer with
//! the same id. Then, per transaction: [`Producer::begin_transaction`]; each `send` to a
//! partition new to the transaction first adds it (AddPartitionsToTxn, one round trip per new
//! partition); [`Producer::send_offsets_to_transaction`] adds the group (AddOffsetsToTxn) and
//! writes the offsets (TxnOffsetCommit to the group coordinator);
//! [`Producer::commit_transaction`] flushes and ends it (EndTxn), or
//! [`Producer::abort_transaction`] does. A batch that failed during the transaction makes
//! commit fail: the transaction can only be aborted. Fencing is the distinct
//! [`ClientError::ProducerFenced`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, EndTxnRequest,
    FindCoordinatorRequest, GroupId, InitProducerIdRequest, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::Producer;
use crate::coordinator::find_group_coordinator;
use crate::error::{ClientError, Result};
use crate::network::cluster::Cluster;
use crate::retry::with_retries;

/// Where the current transaction is, client side.
#[derive(Debug, Default)]
struct TxnProgress {
    /// Between `begin_transaction` and its end.
    open: bool,
    /// Partitions already added to the open transaction.
    partitions: HashSet<(String, i32)>,
    /// Whether a group's offsets joined the open transaction.
    offsets_added: bool,
    /// Batches failed since the transaction began: it can only abort.
    failed: Option<String>,
    /// Fenced: nothing more is possible.
    fenced: bool,
}

/// The transaction state of a transactional producer.
#[derive(Debug)]
pub(crate) struct TransactionManager {
    pub(crate) transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    /// The coordinator's node id, looked up again when it moves.
    coordinator: Mutex<Option<i32>>,
    progress: Mutex<TxnProgress>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl TransactionManager {
    fn progress(&self) -> std::sync::MutexGuard<'_, TxnProgress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
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
                let node = find_txn_coordinator(cluster, transactional_id).await?;
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
        tracing::debug!(
            transactional_id,
            producer_id,
            epoch = producer_epoch,
            "transactional producer initialised"
        );
        Ok(TransactionManager {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            coordinator: Mutex::new(Some(node)),
            progress: Mutex::default(),
        })
    }

    /// The producer id and epoch batches carry.
    pub(crate) fn identity(&self) -> (i64, i16) {
        (self.producer_id, self.producer_epoch)
    }

    /// Notes a failed batch: fenced errors fence the producer, others make the open
    /// transaction abort-only.
    pub(crate) fn note_failed_batch(&self, error: &ClientError) {
        let mut progress = self.progress();
        if matches!(
            error.kafka_error(),
            Some(ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch)
        ) {
            progress.fenced = true;
        }
        progress.failed.get_or_insert_with(|| error.to_string());
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
                let node = find_txn_coordinator(cluster, &self.transactional_id).await?;
                *self.coordinator.lock().unwrap_or_else(|p| p.into_inner()) = Some(node);
                Ok(node)
            }
        }
    }

    /// Turns a coordinator's error code into the client's error, forgetting the coordinator
    /// when it moved and recognising fencing.
    fn coordinator_error(&self, api: &'static str, code: i16) -> Result<()> {
        match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch) => {
                self.progress().fenced = true;
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
        *progress = TxnProgress {
            open: true,
            ..TxnProgress::default()
        };
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        let progress = self.progress();
        if progress.fenced {
            return Err(self.fenced());
        }
        if !progress.open {
            return Err(ClientError::TransactionState(
                "no transaction is open: call begin_transaction first".into(),
            ));
        }
        Ok(())
    }

    /// Adds a partition to the open transaction unless it is in already.
    pub(crate) async fn ensure_partition(
        &self,
        cluster: &Cluster,
        topic: &str,
        partition: i32,
    ) -> Result<()> {
        self.check_open()?;
        let key = (topic.to_string(), partition);
        if self.progress().partitions.contains(&key) {
            return Ok(());
        }
        with_retries(cluster, "AddPartitionsToTxn", || async {
            let node = self.coordinator(cluster).await?;
            let request = AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s(&self.transactional_id)))
                .with_v3_and_below_producer_id(ProducerId(self.producer_id))
                .with_v3_and_below_producer_epoch(self.producer_epoch)
                .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![partition])]);
            let (_, response) = cluster.send_to(node, &request).await?;
            let code = response
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| t.results_by_partition.iter())
                .map(|p| p.partition_error_code)
                .find(|c| *c != 0)
                .unwrap_or(0);
            self.coordinator_error("AddPartitionsToTxn", code)
        })
        .await?;
        self.progress().partitions.insert(key);
        Ok(())
    }

    async fn send_offsets(
        &self,
        cluster: &Cluster,
        offsets: &[(String, i32, i64)],
        group_id: &str,
    ) -> Result<()> {
        self.check_open()?;
        with_retries(cluster, "AddOffsetsToTxn", || async {
            let node = self.coordinator(cluster).await?;
            let request = AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(s(&self.transactional_id)))
                .with_producer_id(ProducerId(self.producer_id))
                .with_producer_epoch(self.producer_epoch)
                .with_group_id(GroupId(s(group_id)));
            let (_, response) = cluster.send_to(node, &request).await?;
            self.coordinator_error("AddOffsetsToTxn", response.error_code)
        })
        .await?;
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
                .with_producer_id(ProducerId(self.producer_id))
                .with_producer_epoch(self.producer_epoch)
                // No consumer generation: the transaction alone fences (KIP-447's check is
                // for producers that pass their consumer's group metadata).
                .with_generation_id(-1)
                .with_topics(topics.clone());
            let (_, response) = cluster.send_to(node, &request).await?;
            let code = response
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .map(|p| p.error_code)
                .find(|c| *c != 0)
                .unwrap_or(0);
            match ResponseError::try_from_code(code) {
                Some(ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch) => {
                    self.progress().fenced = true;
                    Err(self.fenced())
                }
                Some(_) => Err(kafka("TxnOffsetCommit", group_id, code)),
                None => Ok(()),
            }
        })
        .await
    }

    async fn end(&self, cluster: &Cluster, commit: bool) -> Result<()> {
        self.check_open()?;
        if commit {
            if let Some(failed) = self.progress().failed.clone() {
                return Err(ClientError::TransactionState(format!(
                    "a send of this transaction failed ({failed}): it can only be aborted"
                )));
            }
        }
        let touched = {
            let progress = self.progress();
            !progress.partitions.is_empty() || progress.offsets_added
        };
        // The coordinator never heard of a transaction that added nothing (Kafka's clients
        // skip EndTxn then too: it would answer INVALID_TXN_STATE).
        if touched {
            self.end_at_coordinator(cluster, commit).await?;
        }
        let mut progress = self.progress();
        progress.open = false;
        progress.partitions.clear();
        progress.offsets_added = false;
        progress.failed = None;
        Ok(())
    }

    async fn end_at_coordinator(&self, cluster: &Cluster, commit: bool) -> Result<()> {
        with_retries(cluster, "EndTxn", || async {
            let node = self.coordinator(cluster).await?;
            let request = EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s(&self.transactional_id)))
                .with_producer_id(ProducerId(self.producer_id))
                .with_producer_epoch(self.producer_epoch)
                .with_committed(commit);
            let (_, response) = cluster.send_to(node, &request).await?;
            self.coordinator_error("EndTxn", response.error_code)
        })
        .await
    }
}

fn kafka(api: &'static str, resource: &str, code: i16) -> ClientError {
    ClientError::kafka(api, resource.to_string(), code, None)
}

/// The node id of the transaction coordinator of `transactional_id`.
async fn find_txn_coordinator(cluster: &Cluster, transactional_id: &str) -> Result<i32> {
    with_retries(cluster, "FindCoordinator", || async {
        let connection = cluster.any_connection().await?;
        let version = connection.version(ApiKey::FindCoordinator)?;
        let request = FindCoordinatorRequest::default()
            .with_key(s(transactional_id))
            .with_key_type(1);
        let response = connection
            .send_at(&request, version, cluster.config.request_timeout)
            .await?;
        if response.error_code != 0 {
            return Err(kafka(
                "FindCoordinator",
                transactional_id,
                response.error_code,
            ));
        }
        let node = response.node_id.0;
        if !cluster.metadata().brokers.contains_key(&node) {
            cluster.refresh_interest().await?;
        }
        Ok(node)
    })
    .await
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
        let txn = self.transaction()?;
        txn.send_offsets(&self.inner.shared.cluster, offsets, group_id)
            .await
    }

    /// Sends everything of the transaction, then commits it. Fails, leaving the transaction
    /// open for [`Producer::abort_transaction`], if one of its sends failed.
    pub async fn commit_transaction(&self) -> Result<()> {
        let txn = self.transaction()?;
        txn.check_open()?;
        self.flush().await;
        txn.end(&self.inner.shared.cluster, true).await
    }

    /// Aborts the transaction: its records are never read by read_committed consumers, its
    /// offsets never committed.
    pub async fn abort_transaction(&self) -> Result<()> {
        let txn = self.transaction()?;
        txn.check_open()?;
        self.flush().await;
        txn.end(&self.inner.shared.cluster, false).await
    }

    /// Whether a newer producer with the same transactional id fenced this one.
    pub fn is_fenced(&self) -> bool {
        self.inner
            .shared
            .transaction
            .as_ref()
            .is_some_and(|t| t.progress().fenced)
    }

    /// Adds `topic`-`partition` to the open transaction before a record goes there.
    pub(crate) async fn add_to_transaction(&self, topic: &str, partition: i32) -> Result<()> {
        match &self.inner.shared.transaction {
            Some(txn) => {
                txn.ensure_partition(&self.inner.shared.cluster, topic, partition)
                    .await
            }
            None => Ok(()),
        }
    }
}

//! Exactly-once (`processing.guarantee = exactly_once_v2`): one transactional producer per
//! instance, a transaction per commit interval, and what happens when one must abort.
//!
//! The producer's `transactional.id` is `<application id>-<instance id>` (Kafka Streams v2
//! names it after the application, the process and the thread; an instance here runs one
//! loop). A transaction is always open between commits: everything the instance sends goes
//! into it, and the commit adds the input offsets and commits it (see `commit`).
//!
//! When a transaction aborts, the state the tasks built since the last commit has no
//! changelog behind it any more, and their consumer positions are past input whose results
//! were thrown away. So every task is dropped (in-memory state and on-disk working copies
//! alike: local state written after the last commit is never trusted), the consumer goes
//! back to the group's committed offsets, and the tasks are restored from the changelog
//! read with read_committed, as after a crash. A fenced producer (a newer instance with the
//! same id) or a refused generation (a zombie whose partitions moved, KIP-447) is recovered
//! from in place: the producer is replaced (its InitProducerId fences and aborts as needed),
//! the consumer rejoins the group, and the job goes on; it never crash-loops on fencing.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use millrace_client::{ClientError, Producer, ProducerConfig, ResponseError, TopicPartition};

use crate::error::StreamsError;

use super::running::{Data, Running};

/// The `transactional.id` of an instance.
pub(super) fn transactional_id(application_id: &str, instance_id: &str) -> String {
    format!("{application_id}-{instance_id}")
}

/// An instance id for a process that was given none: unique enough among the instances of
/// one application (process id, start time and the standard library's random hash keys).
pub(super) fn random_instance_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    format!("{:016x}", hasher.finish())
}

/// Connects the exactly-once producer: InitProducerId fences an older producer of the same
/// id and aborts its open transaction; then the first transaction begins.
pub(super) async fn connect_transactional(
    config: &ProducerConfig,
) -> Result<Producer, StreamsError> {
    let producer = Producer::connect(config.clone())
        .await
        .map_err(|e| StreamsError::client("connecting the transactional producer", e))?;
    producer
        .begin_transaction()
        .map_err(|e| StreamsError::client("beginning a transaction", e))?;
    Ok(producer)
}

/// Whether `error` means this instance may no longer commit for its tasks: its producer
/// was fenced, or the group refused its generation. Both are recovered from in place.
pub(super) fn is_task_migrated(error: &StreamsError, producer: &Producer) -> bool {
    if producer.is_fenced() {
        return true;
    }
    let StreamsError::Client { source, .. } = error else {
        return false;
    };
    matches!(source, ClientError::ProducerFenced { .. })
        || matches!(
            source.kafka_error(),
            Some(
                ResponseError::IllegalGeneration
                    | ResponseError::UnknownMemberId
                    | ResponseError::RebalanceInProgress
                    | ResponseError::FencedInstanceId
                    | ResponseError::ProducerFenced
                    | ResponseError::InvalidProducerEpoch
            )
        )
}

/// Whether `error` is a client error the cluster may stop giving (a broker or coordinator
/// moving or unreachable, a timeout).
pub(super) fn is_retriable(error: &StreamsError) -> bool {
    matches!(error, StreamsError::Client { source, .. } if source.is_retriable())
}

/// Recoveries closer together than this wait for the rest of it: two instances configured
/// with the same instance id would otherwise fence each other in a tight loop.
const MIN_RECOVERY_GAP: Duration = Duration::from_secs(1);

impl<K0: Data, V0: Data, K: Data, V: Data> Running<K0, V0, K, V> {
    /// Aborts the open transaction (replacing the producer when it cannot), then restores
    /// every remaining task from its last commit (see the module documentation).
    pub(super) async fn recover(&mut self) -> Result<(), StreamsError> {
        if let Some(last) = self.last_recovery {
            let since = last.elapsed();
            if since < MIN_RECOVERY_GAP {
                tokio::time::sleep(MIN_RECOVERY_GAP - since).await;
            }
        }
        self.last_recovery = Some(Instant::now());
        self.abort_transaction().await?;
        // The consumer's generation may be over: rejoin, as Kafka Streams does on a
        // migrated task. Partitions that move are revoked or lost by the next polls.
        self.consumer.enforce_rebalance();
        let tasks: BTreeSet<i32> = self.tasks.keys().copied().collect();
        for &task in &tasks {
            self.tasks.remove(&task);
            self.state.remove_task(task);
        }
        self.forwarded.clear();
        // Back to the committed offsets: what was read since was processed into the aborted
        // transaction (a source record forwarded to the repartition topic, too).
        let assigned = self.consumer.assignment();
        let committed = self
            .consumer
            .committed(&assigned)
            .await
            .map_err(|e| StreamsError::client("reading the committed offsets", e))?;
        for tp in &assigned {
            match committed.get(tp) {
                Some(&offset) => self.consumer.seek(tp, offset),
                None => self.consumer.seek_to_beginning(std::slice::from_ref(tp)),
            }
            .map_err(|e| StreamsError::client(format!("seeking {tp}"), e))?;
        }
        let restore: Vec<TopicPartition> = assigned
            .into_iter()
            .filter(|tp| self.partition_id(&tp.topic).is_some() && tasks.contains(&tp.partition))
            .collect();
        tracing::info!(tasks = ?tasks, "transaction aborted; tasks restored from their last commit");
        self.assigned(&restore).await
    }

    /// Aborts the open transaction and begins the next one; a producer that cannot abort
    /// (fenced, or the coordinator unreachable) is replaced by a new one with the same
    /// `transactional.id`, whose initialisation aborts what the old one left open.
    pub(super) async fn abort_transaction(&mut self) -> Result<(), StreamsError> {
        let aborted = if self.producer.is_fenced() {
            Err(ClientError::ProducerFenced {
                transactional_id: String::new(),
            })
        } else {
            self.producer.abort_transaction().await
        };
        // Deliveries of the aborted transaction: nobody waits for them any more.
        self.pending.clear();
        match aborted {
            Ok(()) => self
                .producer
                .begin_transaction()
                .map_err(|e| StreamsError::client("beginning a transaction", e)),
            Err(error) => {
                tracing::warn!(%error, "replacing the transactional producer");
                self.producer.close().await;
                self.producer = connect_transactional(&self.producer_config).await?;
                Ok(())
            }
        }
    }
}

//! The record accumulator: one queue of batches per partition, filled by `send` and drained
//! by the sender task.
//!
//! `send` appends a record's bytes straight into the partition's open batch (no per-record
//! allocation); a batch closes when it is full, or when `linger` has passed since its first
//! record, and then waits in the partition's queue for the sender.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::record::BatchCompletion;
use crate::error::ClientError;
use crate::record::batch::BatchBuilder;

/// A batch of one partition, from its first record to its acknowledgement.
#[derive(Debug)]
pub(crate) struct ProducerBatch {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    /// The records while the batch is open; taken when it is encoded.
    pub(crate) builder: Option<BatchBuilder>,
    /// The encoded batch, kept for retries (same bytes, same sequence).
    pub(crate) encoded: Option<bytes::Bytes>,
    pub(crate) record_count: i32,
    /// Assigned on the first send when idempotent; -1 otherwise.
    pub(crate) base_sequence: i32,
    pub(crate) completion: Arc<BatchCompletion>,
    pub(crate) created: Instant,
    pub(crate) attempts: u32,
    pub(crate) retry_at: Option<Instant>,
    pub(crate) last_error: Option<ClientError>,
    /// The broker the last attempt went to: a retry waits out its backoff only while the
    /// metadata still names that broker as leader.
    pub(crate) sent_to: Option<i32>,
    /// Bytes of `buffer_memory` this batch holds, given back on completion.
    pub(crate) memory: usize,
    /// The transaction its records belong to (0 without transactions): a batch holds one
    /// transaction's records, and goes only once the transaction before its own has ended.
    pub(crate) generation: u64,
}

impl ProducerBatch {
    pub(crate) fn new(topic: Arc<str>, partition: i32, capacity: usize, generation: u64) -> Self {
        ProducerBatch {
            topic,
            partition,
            builder: Some(BatchBuilder::new(capacity)),
            encoded: None,
            record_count: 0,
            base_sequence: -1,
            completion: Arc::new(BatchCompletion::default()),
            created: Instant::now(),
            attempts: 0,
            retry_at: None,
            last_error: None,
            sent_to: None,
            memory: 0,
            generation,
        }
    }

    /// Bytes the batch takes now (encoded if it was, else as built so far).
    pub(crate) fn size(&self) -> usize {
        match (&self.encoded, &self.builder) {
            (Some(bytes), _) => bytes.len(),
            (None, Some(builder)) => builder.size(),
            (None, None) => 0,
        }
    }
}

/// One partition's batches.
#[derive(Debug, Default)]
pub(crate) struct PartitionQueue {
    /// The batch records are appended to.
    pub(crate) open: Option<ProducerBatch>,
    /// Closed batches waiting to be sent, oldest first; retried batches go back to the front
    /// in sequence order.
    pub(crate) ready: VecDeque<ProducerBatch>,
    /// The sequence number of the next batch's first record (idempotence).
    pub(crate) next_sequence: i32,
    /// Produce requests in flight carrying a batch of this partition.
    pub(crate) in_flight: u32,
    /// Of those, the ones carrying a retried batch. No new batch goes out while one is in
    /// flight: the broker remembers only a partition's last five batches for deduplication,
    /// so new batches passing a retry that fails again would push the retried batch out of
    /// that window, and its next attempt would be OUT_OF_ORDER_SEQUENCE forever instead of
    /// DUPLICATE_SEQUENCE.
    pub(crate) retries_in_flight: u32,
    /// Whether the leader acknowledged a batch of this partition. Until it has, an idempotent
    /// producer sends one batch at a time: a leader with no state for the producer accepts
    /// any sequence (as Kafka's does), so a second batch pipelined behind a first one that was
    /// refused (the partition not created on the leader yet) would be written, and the first
    /// one could never follow it (OUT_OF_ORDER_SEQUENCE).
    pub(crate) acknowledged: bool,
    /// Bytes of the last batch closed here: a busy partition's next batch starts that big
    /// instead of growing from small again (each growth copies the batch).
    pub(crate) last_batch_bytes: usize,
}

impl PartitionQueue {
    /// Puts a batch that must be sent again back into the queue, before every batch with a
    /// higher sequence number or none yet, so batches go out again in their original order.
    pub(crate) fn requeue(&mut self, batch: ProducerBatch) {
        let position = self
            .ready
            .iter()
            .position(|b| {
                b.base_sequence < 0 || b.base_sequence > batch.base_sequence || b.attempts == 0
            })
            .unwrap_or(self.ready.len());
        self.ready.insert(position, batch);
    }
}

/// A topic's partitions as the producer knows them.
#[derive(Debug)]
pub(crate) struct TopicQueues {
    pub(crate) name: Arc<str>,
    pub(crate) partitions: Vec<Mutex<PartitionQueue>>,
    /// Per partition, the generation of the transaction it last joined (transactional
    /// producers): only a transaction's first record to a partition goes to the
    /// transaction manager.
    pub(crate) joined: Vec<AtomicU64>,
    /// The partition unkeyed records currently stick to (KIP-480).
    pub(crate) sticky: AtomicUsize,
    /// State of a small xorshift generator for choosing the next sticky partition.
    rng: AtomicU64,
}

impl TopicQueues {
    pub(crate) fn new(name: &str, partitions: usize) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        let queues = TopicQueues {
            name: Arc::from(name),
            partitions: (0..partitions)
                .map(|_| Mutex::new(PartitionQueue::default()))
                .collect(),
            joined: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            sticky: AtomicUsize::new(0),
            rng: AtomicU64::new(seed),
        };
        queues
            .sticky
            .store(queues.random_partition(None), Ordering::Relaxed);
        queues
    }

    /// A random partition, different from `not` when there is a choice.
    pub(crate) fn random_partition(&self, not: Option<usize>) -> usize {
        let n = self.partitions.len().max(1);
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        let mut choice = (x % n as u64) as usize;
        if n > 1 && Some(choice) == not {
            choice = (choice + 1) % n;
        }
        choice
    }

    /// Moves unkeyed records on to another partition once the sticky one's batch is closed.
    pub(crate) fn switch_sticky(&self, from: usize) {
        let next = self.random_partition(Some(from));
        let _ = self
            .sticky
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

//! The producer: batches records per partition and sends them to partition leaders.
//!
//! [`Producer::send`] picks the partition (the Java client's murmur2 of the key, or sticky
//! partitioning for records without a key), appends the record to that partition's open batch
//! in the accumulator, and returns a [`DeliveryFuture`]. A sender task drains full or lingered
//! batches into one Produce request per broker, keeps up to
//! `max_in_flight_requests_per_connection` requests in flight per broker, retries what failed
//! in sequence order, and completes the futures. Memory is bounded by `buffer_memory`: `send`
//! waits for acknowledgements to free space rather than growing.

mod accumulator;
pub mod config;
pub mod murmur2;
mod record;
mod sender;
mod transaction;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, ProducerId};
use tokio::sync::{Notify, Semaphore};

pub use config::{Acks, ProducerConfig, ProducerConfigBuilder};
pub use record::{DeliveryFuture, ProducerRecord, RecordMetadata};
pub use transaction::{PendingCommit, MAX_COMMITS_IN_FLIGHT};

use crate::error::{check, ClientError, Result};
use crate::network::cluster::Cluster;
use crate::record::batch::{max_record_len, BatchBuilder, BATCH_HEADER_LEN};
use crate::retry::with_retries;
use accumulator::{ProducerBatch, TopicQueues};

/// State shared by the producer handles and the sender task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) config: ProducerConfig,
    pub(crate) topics: RwLock<HashMap<String, Arc<TopicQueues>>>,
    /// `buffer_memory` in bytes, as permits.
    pub(crate) memory: Semaphore,
    /// Wakes the sender: a batch filled up, a new batch started its linger, a flush began.
    pub(crate) wake: Notify,
    /// Batches created and not yet completed.
    pub(crate) incomplete: AtomicUsize,
    /// Signalled whenever a batch completes (flush waits on it).
    pub(crate) batch_done: Notify,
    /// Flushes in progress: while non-zero, batches are sent without lingering.
    pub(crate) flushing: AtomicUsize,
    /// No more sends accepted.
    pub(crate) closed: AtomicBool,
    /// The sender stops once everything is sent.
    pub(crate) closing: AtomicBool,
    /// Producer id and epoch when idempotent and not transactional (a transactional
    /// producer's change with its transactions: see [`Shared::identity`]).
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    /// The latest batch put back for another attempt, for [`Producer::last_retry`].
    pub(crate) last_retry: Mutex<Option<RetriedBatch>>,
    /// The transaction state of a transactional producer.
    pub(crate) transaction: Option<transaction::TransactionManager>,
}

impl Shared {
    /// The producer id and epoch batches carry now.
    pub(crate) fn identity(&self) -> (i64, i16) {
        match &self.transaction {
            Some(txn) => txn.identity(),
            None => (self.producer_id, self.producer_epoch),
        }
    }

    /// The highest Produce version to speak: a transactional producer on transaction version
    /// 1 stays below 12, where a broker adds partitions to the transaction by itself.
    pub(crate) fn max_produce_version(&self) -> i16 {
        match &self.transaction {
            Some(txn) if !txn.version_2() => 11,
            _ => i16::MAX,
        }
    }

    /// The `transactional.id` Produce requests carry.
    pub(crate) fn transactional_id(&self) -> Option<kafka_protocol::messages::TransactionalId> {
        self.transaction.as_ref().map(|t| {
            kafka_protocol::messages::TransactionalId(
                kafka_protocol::protocol::StrBytes::from_string(t.transactional_id.clone()),
            )
        })
    }

    /// The transaction new records belong to (0 without transactions).
    pub(crate) fn generation(&self) -> u64 {
        self.transaction.as_ref().map_or(0, |t| t.generation())
    }

    /// A batch failed for good: the transaction it belonged to can only abort.
    pub(crate) fn note_failed_batch(&self, error: &ClientError, generation: u64) {
        if let Some(txn) = &self.transaction {
            txn.note_failed_batch(error, generation);
        }
    }

    /// Every partition's sequences start again at 0 (a transaction ended at a new epoch, on
    /// transaction version 2), and each partition sends one batch at a time until the leader
    /// has acknowledged one at the new epoch. Nothing of the producer is in flight then: a
    /// transaction's end waits for its batches, and the next one's wait for its end.
    pub(crate) fn restart_sequences(&self) {
        let topics = self.topics.read().unwrap_or_else(|p| p.into_inner());
        for topic in topics.values() {
            for queue in &topic.partitions {
                let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                queue.next_sequence = 0;
                queue.acknowledged = false;
            }
        }
    }
}

/// A batch the producer is retrying, and why: retries are silent (each record's future waits
/// up to `delivery_timeout`), so a tool that wants to say why nothing is acknowledged asks
/// [`Producer::last_retry`].
#[derive(Debug, Clone)]
pub struct RetriedBatch {
    /// The batch's topic.
    pub topic: String,
    /// The batch's partition.
    pub partition: i32,
    /// The error of the failed attempt (for example the broker's `KAFKA_STORAGE_ERROR`).
    pub error: ClientError,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the attempt failed.
    pub at: Instant,
}

/// An async Kafka producer. Cheap to clone; clones share batches and connections.
///
/// ```no_run
/// # async fn run() -> millrace_client::Result<()> {
/// use millrace_client::producer::{Producer, ProducerConfig, ProducerRecord};
/// use millrace_client::ClientConfig;
///
/// let producer = Producer::connect(ProducerConfig::new(ClientConfig::new("localhost:9092"))).await?;
/// let delivery = producer.send(ProducerRecord::new("events", "hello").key("user-1")).await?;
/// let metadata = delivery.await?;
/// println!("written to partition {} at offset {}", metadata.partition, metadata.offset);
/// producer.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    sender: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The sender finishes what was accepted and then stops.
        self.shared.closed.store(true, Ordering::Release);
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

impl Producer {
    /// Connects to the cluster and, with idempotence, gets a producer id (InitProducerId).
    ///
    /// Idempotence that was not asked for explicitly is dropped, with a warning, on a broker
    /// without InitProducerId: the producer then works against any Kafka-protocol broker,
    /// as the Java client does. An explicit `enable_idempotence(true)` fails there instead.
    pub async fn connect(config: ProducerConfig) -> Result<Producer> {
        let mut config = config.resolve_idempotence();
        config.validate()?;
        let cluster = Cluster::connect(config.client.clone(), true).await?;
        let transaction = match &config.transactional_id {
            Some(id) => {
                let timeout_ms =
                    i32::try_from(config.transaction_timeout.as_millis()).unwrap_or(i32::MAX);
                Some(transaction::TransactionManager::init(&cluster, id, timeout_ms).await?)
            }
            None => None,
        };
        let (producer_id, producer_epoch) = if let Some(txn) = &transaction {
            txn.identity()
        } else if config.enable_idempotence {
            match init_producer_id(&cluster).await {
                Ok(identity) => identity,
                Err(
                    error @ ClientError::UnsupportedVersion {
                        api: "InitProducerId",
                        ..
                    },
                ) if !config.idempotence_explicit => {
                    tracing::warn!(
                        %error,
                        "producing without idempotence, so a retried batch may be written twice"
                    );
                    config.enable_idempotence = false;
                    (-1, -1)
                }
                Err(error) => return Err(error),
            }
        } else {
            (-1, -1)
        };
        let shared = Arc::new(Shared {
            cluster,
            memory: Semaphore::new(config.buffer_memory.min(Semaphore::MAX_PERMITS)),
            config,
            topics: RwLock::new(HashMap::new()),
            wake: Notify::new(),
            incomplete: AtomicUsize::new(0),
            batch_done: Notify::new(),
            flushing: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            producer_id,
            producer_epoch,
            last_retry: Mutex::new(None),
            transaction,
        });
        let sender = tokio::spawn(sender::Sender::new(shared.clone()).run());
        Ok(Producer {
            inner: Arc::new(Inner {
                shared,
                sender: Mutex::new(Some(sender)),
            }),
        })
    }

    /// Queues a record for sending and returns a future of its acknowledgement.
    ///
    /// Waits only when the topic's metadata is not known yet (up to `max_block`) or when
    /// `buffer_memory` is used up (until acknowledgements free enough of it). Fails at once
    /// for a record larger than `max_request_size` or `buffer_memory`, an unknown partition, or
    /// a closed producer.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed("producer"));
        }
        // A send that finds buffer memory free never waits, so a tight loop of sends would
        // hold its worker thread until the buffer is full. Tasks woken on that thread (the
        // sender with the next request, the response handlers) could not run meanwhile: the
        // broker then idled for tens of milliseconds between requests. Taking a unit of
        // tokio's cooperative budget yields every so many sends instead.
        tokio::task::coop::consume_budget().await;
        let key = record.key.as_deref();
        let value = record.value.as_deref();
        let size = max_record_len(key, value, &record.headers);
        let limit = shared
            .config
            .max_request_size
            .min(shared.config.buffer_memory);
        if size + BATCH_HEADER_LEN > limit {
            return Err(ClientError::InvalidArgument(format!(
                "record of {size} bytes is larger than max_request_size/buffer_memory ({limit} bytes)"
            )));
        }
        let topic = self.topic_queues(&record.topic).await?;
        let partition_count = topic.partitions.len();
        let explicit = record.partition;
        let partition = match (explicit, key) {
            (Some(p), _) => {
                if p < 0 || p as usize >= partition_count {
                    return Err(ClientError::InvalidArgument(format!(
                        "partition {p} of {} does not exist (it has {partition_count})",
                        record.topic
                    )));
                }
                p as usize
            }
            (None, Some(key)) => murmur2::partition_for_key(key, partition_count) as usize,
            (None, None) => topic.sticky.load(Ordering::Relaxed) % partition_count,
        };
        // A transaction's first record to a partition queues the partition to join it;
        // later ones only compare generations.
        if let Some(txn) = &shared.transaction {
            let open = txn.open_generation();
            let joined = &topic.joined[partition];
            if open == 0 || joined.load(Ordering::Acquire) != open {
                self.add_to_transaction(&record.topic, partition as i32)?;
                joined.store(open, Ordering::Release);
            }
        }
        // Back-pressure: memory first, so a full buffer makes the caller wait here.
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        match shared.memory.try_acquire_many(permits) {
            Ok(permit) => permit.forget(),
            Err(_) => shared
                .memory
                .acquire_many(permits)
                .await
                .map_err(|_| ClientError::Closed("producer"))?
                .forget(),
        }
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        // A batch must fit in a request with room for the request's own headers.
        let batch_size = shared.config.batch_size.min(
            shared
                .config
                .max_request_size
                .saturating_sub(256)
                .max(BATCH_HEADER_LEN + 64),
        );
        let mut wake = false;
        let mut closed_batch = false;
        let future = {
            let mut queue = topic.partitions[partition]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // A batch holds one transaction's records: the first record of a transaction
            // begun while the one before it commits closes that one's batch.
            let generation = shared.generation();
            if queue
                .open
                .as_ref()
                .is_some_and(|b| b.generation != generation)
            {
                if let Some(previous) = queue.open.take() {
                    queue.last_batch_bytes = previous.builder.as_ref().map_or(0, |b| b.size());
                    queue.ready.push_back(previous);
                    closed_batch = true;
                    wake = true;
                }
            }
            let record_len = queue
                .open
                .as_ref()
                .and_then(|b| b.builder.as_ref())
                .map(|b| {
                    (
                        b.size(),
                        b.body_len(timestamp, key, value, &record.headers),
                        b.count(),
                    )
                });
            let start_new = match record_len {
                None => true,
                Some((current, body, count)) => {
                    let add = BatchBuilder::encoded_len(body);
                    count > 0 && current + add > batch_size.max(BATCH_HEADER_LEN + add)
                }
            };
            // The body length computed above holds unless a new batch starts.
            let known_body = record_len.filter(|_| !start_new).map(|(_, body, _)| body);
            if start_new {
                if let Some(full) = queue.open.take() {
                    queue.last_batch_bytes = full.builder.as_ref().map_or(0, |b| b.size());
                    queue.ready.push_back(full);
                    closed_batch = true;
                }
                // Start small and grow: a quiet partition should not hold a full batch_size;
                // a busy one starts at the size its last batch reached.
                let capacity = batch_size
                    .min(queue.last_batch_bytes.max(16 * 1024))
                    .max(size + BATCH_HEADER_LEN);
                queue.open = Some(ProducerBatch::new(
                    topic.name.clone(),
                    partition as i32,
                    capacity,
                    generation,
                ));
                shared.incomplete.fetch_add(1, Ordering::AcqRel);
                if let Some(txn) = &shared.transaction {
                    txn.batch_created(generation);
                }
                wake = true;
            }
            let batch = match queue.open.as_mut() {
                Some(batch) => batch,
                None => return Err(ClientError::Closed("producer")),
            };
            let builder = match batch.builder.as_mut() {
                Some(builder) => builder,
                None => return Err(ClientError::Closed("producer")),
            };
            let offset_delta = match known_body {
                Some(body) => builder.append_body(body, timestamp, key, value, &record.headers),
                None => builder.append(timestamp, key, value, &record.headers),
            };
            let full = builder.size() >= batch_size;
            batch.record_count += 1;
            batch.memory += size;
            let future = DeliveryFuture {
                completion: batch.completion.clone(),
                partition: partition as i32,
                offset_delta,
                timestamp,
                waker_slot: None,
            };
            if full {
                if let Some(batch) = queue.open.take() {
                    queue.last_batch_bytes = batch.builder.as_ref().map_or(0, |b| b.size());
                    queue.ready.push_back(batch);
                }
                closed_batch = true;
                wake = true;
            }
            future
        };
        if closed_batch && explicit.is_none() && key.is_none() {
            topic.switch_sticky(partition);
        }
        if wake {
            shared.wake.notify_one();
        }
        Ok(future)
    }

    /// Sends everything queued now, without waiting for `linger`, and waits until every batch
    /// created before it returns is acknowledged or has failed. (Records sent concurrently
    /// with a flush may extend the wait.)
    pub async fn flush(&self) {
        let shared = &self.inner.shared;
        shared.flushing.fetch_add(1, Ordering::AcqRel);
        shared.wake.notify_one();
        loop {
            let done = shared.batch_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if shared.incomplete.load(Ordering::Acquire) == 0 {
                break;
            }
            done.await;
        }
        shared.flushing.fetch_sub(1, Ordering::AcqRel);
    }

    /// Stops accepting records, sends and waits for everything queued, and stops the sender.
    pub async fn close(&self) {
        let shared = &self.inner.shared;
        shared.closed.store(true, Ordering::Release);
        self.flush().await;
        shared.closing.store(true, Ordering::Release);
        shared.wake.notify_one();
        let sender = self
            .inner
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.await;
        }
        shared.cluster.close();
    }

    /// The number of partitions of `topic` (fetching its metadata if needed).
    pub async fn partition_count(&self, topic: &str) -> Result<usize> {
        Ok(self.topic_queues(topic).await?.partitions.len())
    }

    /// The latest batch that failed an attempt and was put back to be retried, if any.
    pub fn last_retry(&self) -> Option<RetriedBatch> {
        self.inner
            .shared
            .last_retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The producer id from InitProducerId (-1 without idempotence).
    pub fn producer_id(&self) -> i64 {
        self.inner.shared.identity().0
    }

    async fn topic_queues(&self, topic: &str) -> Result<Arc<TopicQueues>> {
        let shared = &self.inner.shared;
        if let Some(queues) = shared
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return Ok(queues.clone());
        }
        if topic.is_empty() {
            return Err(ClientError::InvalidArgument("empty topic name".to_string()));
        }
        // First record for this topic: learn its partitions (the broker may create it).
        shared.cluster.add_interest([topic]);
        let deadline = Instant::now() + shared.config.max_block;
        let names = [topic.to_string()];
        let partitions = loop {
            let metadata = shared.cluster.refresh_metadata(Some(&names)).await;
            let last_error = match metadata {
                Ok(metadata) => match metadata.topics.get(topic) {
                    Some(t) if t.error_code == 0 && !t.partitions.is_empty() => {
                        break t.partitions.len()
                    }
                    Some(t) => ClientError::kafka("Metadata", topic, t.error_code.max(5), None),
                    None => ClientError::kafka("Metadata", topic, 3, None),
                },
                Err(error) => error,
            };
            if !last_error.is_retriable() || Instant::now() >= deadline {
                return Err(last_error);
            }
            tokio::time::sleep(shared.config.client.retry_backoff).await;
        };
        let mut topics = shared.topics.write().unwrap_or_else(|p| p.into_inner());
        Ok(topics
            .entry(topic.to_string())
            .or_insert_with(|| Arc::new(TopicQueues::new(topic, partitions)))
            .clone())
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    // Seconds and milliseconds separately: `as_millis` goes through u128 arithmetic, which
    // showed up in profiles of the send path (one call per record).
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64 * 1000 + i64::from(d.subsec_millis()))
        .unwrap_or(0)
}

/// Gets a producer id and epoch for an idempotent producer.
async fn init_producer_id(cluster: &Cluster) -> Result<(i64, i16)> {
    with_retries(cluster, "InitProducerId", || async {
        let connection = cluster.any_connection().await?;
        let version = connection.version(ApiKey::InitProducerId)?;
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            // Not transactional: Kafka's clients send the largest timeout.
            .with_transaction_timeout_ms(i32::MAX)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let response = connection
            .send_at(&request, version, cluster.config.request_timeout)
            .await?;
        check(
            "InitProducerId",
            || "idempotent producer".to_string(),
            response.error_code,
            None,
        )?;
        tracing::debug!(
            producer_id = response.producer_id.0,
            epoch = response.producer_epoch,
            "idempotent producer initialised"
        );
        Ok((response.producer_id.0, response.producer_epoch))
    })
    .await
}

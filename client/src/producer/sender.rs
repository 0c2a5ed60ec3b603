//! The sender task: drains ready batches into Produce requests, one request per broker at a
//! time up to the in-flight limit, and handles the answers (complete, retry or fail).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use tokio::sync::mpsc;

use super::accumulator::{ProducerBatch, TopicQueues};
use super::record::BatchAck;
use super::Shared;
use crate::error::{ClientError, Result};
use crate::network::connection::BrokerConnection;
use crate::offsets::topic_name;
use crate::record::batch::BatchIdentity;

/// What comes back to the sender loop from the tasks it started.
enum Event {
    /// A Produce request was answered, failed, or (acks=0) written.
    Produced {
        broker: i32,
        /// The request's place among those sent to `broker` (see `Sender::answered`).
        sequence: u64,
        batches: Vec<ProducerBatch>,
        result: Result<Option<ProduceResponse>>,
    },
    /// A connection attempt finished.
    Connected {
        broker: i32,
        result: Result<Arc<BrokerConnection>>,
    },
    /// A metadata refresh finished.
    MetadataRefreshed,
}

pub(crate) struct Sender {
    shared: Arc<Shared>,
    connections: HashMap<i32, Arc<BrokerConnection>>,
    connecting: HashSet<i32>,
    in_flight: HashMap<i32, usize>,
    events: mpsc::UnboundedSender<Event>,
    event_rx: mpsc::UnboundedReceiver<Event>,
    refreshing_metadata: bool,
    last_metadata_refresh: Option<Instant>,
    /// Per broker, the sequence number of the next request sent...
    sent: HashMap<i32, u64>,
    /// ...and of the next answer to handle; answers that come back early wait in `parked`.
    answered: HashMap<i32, u64>,
    /// Answers are handled in the order their requests were sent, as the broker gave them:
    /// each is awaited by its own task, and the tasks may finish in any order. Handling a
    /// later success before an earlier failure would free an in-flight slot for a new batch
    /// before the failed batch is queued for retry, letting the new batch pass it.
    parked: HashMap<i32, BTreeMap<u64, Event>>,
}

/// One Produce request being assembled for a broker.
#[derive(Default)]
struct Pending {
    batches: Vec<ProducerBatch>,
    bytes: usize,
}

impl Sender {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let (events, event_rx) = mpsc::unbounded_channel();
        Sender {
            shared,
            connections: HashMap::new(),
            connecting: HashSet::new(),
            in_flight: HashMap::new(),
            events,
            event_rx,
            refreshing_metadata: false,
            last_metadata_refresh: None,
            sent: HashMap::new(),
            answered: HashMap::new(),
            parked: HashMap::new(),
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            // One drain makes at most one request per broker, so drain again while requests
            // go out: waiting for the next event here left free in-flight slots unused
            // until a response or a new batch woke the sender.
            let (next_wake, need_metadata) = loop {
                let (requests, next_wake, need_metadata) = self.drain(Instant::now());
                if requests.is_empty() {
                    break (next_wake, need_metadata);
                }
                for (broker, pending) in requests {
                    self.dispatch(broker, pending.batches);
                }
            };
            if need_metadata {
                self.refresh_metadata();
            }
            let idle = self.in_flight.values().all(|n| *n == 0);
            if self.shared.closing.load(Ordering::Acquire)
                && idle
                && self.shared.incomplete.load(Ordering::Acquire) == 0
            {
                break;
            }
            let sleep = next_wake.map(|at| tokio::time::sleep_until(at.into()));
            tokio::select! {
                event = self.event_rx.recv() => {
                    if let Some(event) = event {
                        self.handle(event);
                    }
                    while let Ok(event) = self.event_rx.try_recv() {
                        self.handle(event);
                    }
                }
                _ = self.shared.wake.notified() => {}
                _ = async { match sleep { Some(sleep) => sleep.await, None => std::future::pending().await } } => {}
            }
        }
        tracing::debug!("producer sender stopped");
    }

    /// Collects the batches that can go now, per broker; returns when to look again and
    /// whether metadata is missing.
    fn drain(&mut self, now: Instant) -> (BTreeMap<i32, Pending>, Option<Instant>, bool) {
        let shared = self.shared.clone();
        let config = &shared.config;
        let flushing = self.shared.flushing.load(Ordering::Acquire) > 0
            || self.shared.closing.load(Ordering::Acquire)
            || self.shared.closed.load(Ordering::Acquire);
        let current_generation = self.shared.generation();
        let metadata = self.shared.cluster.metadata();
        let topics: Vec<Arc<TopicQueues>> = self
            .shared
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut requests: BTreeMap<i32, Pending> = BTreeMap::new();
        let mut next_wake: Option<Instant> = None;
        let mut need_metadata = false;
        let mut wake_at = |at: Instant| {
            next_wake = Some(next_wake.map_or(at, |w| w.min(at)));
        };
        let mut expired = Vec::new();
        let mut failed = Vec::new();
        let mut to_connect = HashSet::new();
        for topic in &topics {
            for (index, queue) in topic.partitions.iter().enumerate() {
                let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                let leader = metadata.leader(&topic.name, index as i32);
                let connected =
                    leader.filter(|l| self.connections.get(l).is_some_and(|c| c.is_open()));
                let sendable = connected.is_some_and(|l| {
                    self.in_flight.get(&l).copied().unwrap_or(0)
                        < config.max_in_flight_requests_per_connection
                });
                if let Some(open) = &queue.open {
                    let due = open.created + config.linger;
                    let give_up = open.created + config.delivery_timeout;
                    // A committing transaction's batches go without lingering.
                    let ending = open.generation < current_generation;
                    if !flushing && !ending && due > now {
                        wake_at(due);
                    } else if (queue.ready.is_empty() && sendable) || give_up <= now {
                        // Close the open batch only when it can go at once: while the
                        // broker has all the requests it may, records keep filling it (as
                        // in the Java client), so a busy producer sends full batches instead
                        // of one small batch per linger or per sender wake-up.
                        if let Some(open) = queue.open.take() {
                            queue.ready.push_back(open);
                        }
                    } else {
                        // A response, connection or metadata event wakes the sender sooner.
                        wake_at(give_up);
                    }
                }
                // Batches that waited longer than the delivery timeout fail here.
                while let Some(head) = queue.ready.front() {
                    if head.created + config.delivery_timeout > now {
                        break;
                    }
                    if let Some(batch) = queue.ready.pop_front() {
                        expired.push(batch);
                    }
                }
                let Some(head) = queue.ready.front() else {
                    if queue.open.is_some() {
                        match (leader, connected) {
                            (None, _) => need_metadata = true,
                            (Some(leader), None) => {
                                to_connect.insert(leader);
                            }
                            _ => {}
                        }
                    }
                    continue;
                };
                // A retry goes at once to a new leader (as the Java client does since KIP-951):
                // the backoff is for the broker that failed it. While the metadata still names
                // that broker, it is refreshed (at most once per `retry_backoff`), so the new
                // leader is seen as soon as it is elected, even while the old one cannot be
                // reached at all.
                let leader_moved = leader.is_some() && leader != head.sent_to;
                if head.attempts > 0
                    && !leader_moved
                    && head
                        .last_error
                        .as_ref()
                        .is_some_and(|error| error.leader_may_have_moved())
                {
                    need_metadata = true;
                }
                if let Some(at) = head.retry_at.filter(|at| *at > now) {
                    if !leader_moved {
                        wake_at(at);
                        continue;
                    }
                }
                // A retried batch waits until nothing of its partition is in flight, so it
                // cannot overtake or be overtaken (ordering with idempotence); new batches
                // wait while a retry is in flight (see `retries_in_flight`).
                if (head.attempts > 0 && queue.in_flight > 0) || queue.retries_in_flight > 0 {
                    continue;
                }
                if config.enable_idempotence && !queue.acknowledged && queue.in_flight > 0 {
                    continue;
                }
                // A transaction's batches go once the transaction before it has ended, and a
                // partition's once it is in the transaction; the end and the
                // AddPartitionsToTxn task wake the sender then.
                if let Some(txn) = &shared.transaction {
                    let allowed = match txn.may_send_generation(head.generation) {
                        Ok(true) => txn.may_send(&topic.name, index as i32),
                        other => other,
                    };
                    match allowed {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(error) => {
                            while let Some(batch) = queue.ready.pop_front() {
                                failed.push((batch, error.clone()));
                            }
                            continue;
                        }
                    }
                }
                let Some(leader) = leader else {
                    need_metadata = true;
                    continue;
                };
                if connected.is_none() {
                    to_connect.insert(leader);
                    continue;
                }
                let in_flight = self.in_flight.get(&leader).copied().unwrap_or(0);
                let pending = requests.entry(leader).or_default();
                if in_flight >= config.max_in_flight_requests_per_connection {
                    continue;
                }
                let Some(mut batch) = queue.ready.pop_front() else {
                    continue;
                };
                if batch.encoded.is_none() {
                    let identity = if config.enable_idempotence {
                        let sequence = queue.next_sequence;
                        queue.next_sequence = sequence.wrapping_add(batch.record_count);
                        batch.base_sequence = sequence;
                        let (producer_id, producer_epoch) = self.shared.identity();
                        BatchIdentity {
                            producer_id,
                            producer_epoch,
                            base_sequence: sequence,
                            transactional: self.shared.transaction.is_some(),
                        }
                    } else {
                        BatchIdentity::NONE
                    };
                    let encoded = batch
                        .builder
                        .take()
                        .map(|builder| builder.finish(config.compression, identity));
                    match encoded {
                        Some(Ok(bytes)) => batch.encoded = Some(bytes),
                        Some(Err(error)) => {
                            failed.push((batch, error));
                            continue;
                        }
                        None => {}
                    }
                }
                if !pending.batches.is_empty()
                    && pending.bytes + batch.size() > config.max_request_size
                {
                    queue.ready.push_front(batch);
                    continue;
                }
                pending.bytes += batch.size();
                batch.sent_to = Some(leader);
                queue.in_flight += 1;
                if batch.attempts > 0 {
                    queue.retries_in_flight += 1;
                }
                pending.batches.push(batch);
            }
        }
        for leader in to_connect {
            self.connect(leader);
        }
        for (batch, error) in failed {
            self.complete(batch, Err(error));
        }
        for batch in expired {
            let error = ClientError::DeliveryTimeout {
                topic: batch.topic.to_string(),
                partition: batch.partition,
                elapsed: batch.created.elapsed(),
                last_error: batch.last_error.as_ref().map(|e| e.to_string()),
            };
            self.complete(batch, Err(error));
        }
        requests.retain(|_, pending| !pending.batches.is_empty());
        (requests, next_wake, need_metadata)
    }

    /// Sends one Produce request. The request is queued on the connection here, in the sender
    /// task, so requests to a broker go out in the order their sequence numbers were given.
    fn dispatch(&mut self, broker: i32, batches: Vec<ProducerBatch>) {
        let config = &self.shared.config;
        let Some(connection) = self.connections.get(&broker).cloned() else {
            self.retry_all(
                batches,
                ClientError::NoBrokerAvailable(format!("no connection to broker {broker}")),
            );
            return;
        };
        let mut request =
            produce_request(config.acks.wire(), config.client.request_timeout, &batches);
        request.transactional_id = self.shared.transactional_id();
        let version = match connection.version(ApiKey::Produce) {
            Ok(version) => version.min(self.shared.max_produce_version()),
            Err(error) => {
                for batch in batches {
                    self.release_in_flight(&batch);
                    self.complete(batch, Err(error.clone()));
                }
                return;
            }
        };
        let sequence = {
            let next = self.sent.entry(broker).or_default();
            *next += 1;
            *next - 1
        };
        if config.acks.wire() == 0 {
            let result = connection.send_no_response(&request, version);
            let _ = self.events.send(Event::Produced {
                broker,
                sequence,
                batches,
                result: result.map(|()| None),
            });
            *self.in_flight.entry(broker).or_default() += 1;
            return;
        }
        *self.in_flight.entry(broker).or_default() += 1;
        let timeout = config.client.request_timeout;
        match connection.queue_request(&request, version) {
            Ok(response) => {
                let events = self.events.clone();
                tokio::spawn(async move {
                    let result = connection
                        .await_response::<ProduceRequest>(response, version, timeout)
                        .await
                        .map(Some);
                    let _ = events.send(Event::Produced {
                        broker,
                        sequence,
                        batches,
                        result,
                    });
                });
            }
            Err(error) => {
                let _ = self.events.send(Event::Produced {
                    broker,
                    sequence,
                    batches,
                    result: Err(error),
                });
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Produced {
                broker, sequence, ..
            } => {
                let parked = self.parked.entry(broker).or_default();
                parked.insert(sequence, event);
                loop {
                    let next = self.answered.entry(broker).or_default();
                    let Some(event) = self
                        .parked
                        .get_mut(&broker)
                        .and_then(|parked| parked.remove(next))
                    else {
                        break;
                    };
                    *next += 1;
                    if let Event::Produced {
                        batches, result, ..
                    } = event
                    {
                        if let Some(n) = self.in_flight.get_mut(&broker) {
                            *n = n.saturating_sub(1);
                        }
                        self.produced(batches, result);
                    }
                }
            }
            Event::Connected { broker, result } => {
                self.connecting.remove(&broker);
                match result {
                    Ok(connection) => {
                        self.connections.insert(broker, connection);
                    }
                    Err(error) => {
                        tracing::debug!(broker, %error, "producer cannot reach broker");
                        self.refresh_metadata();
                    }
                }
            }
            Event::MetadataRefreshed => {
                self.refreshing_metadata = false;
            }
        }
    }

    fn produced(&mut self, batches: Vec<ProducerBatch>, result: Result<Option<ProduceResponse>>) {
        let response = match result {
            Ok(Some(response)) => response,
            Ok(None) => {
                // acks=0: nothing comes back; the records count as sent.
                for batch in batches {
                    self.release_in_flight(&batch);
                    self.complete(
                        batch,
                        Ok(BatchAck {
                            base_offset: -1,
                            log_append_time: -1,
                        }),
                    );
                }
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "produce request failed; retrying its batches");
                self.shared.cluster.invalidate_metadata();
                self.refresh_metadata();
                self.retry_all(batches, error);
                return;
            }
        };
        let mut answers: HashMap<(&str, i32), PartitionAnswer> = HashMap::new();
        for topic in &response.responses {
            for partition in &topic.partition_responses {
                answers.insert(
                    (topic.name.0.as_str(), partition.index),
                    (
                        partition.error_code,
                        partition.base_offset,
                        partition.log_append_time_ms,
                        partition
                            .error_message
                            .as_ref()
                            .map(|m| m.as_str().to_string()),
                    ),
                );
            }
        }
        let mut outcomes = Vec::with_capacity(batches.len());
        for batch in &batches {
            let answer = answers.get(&(&*batch.topic, batch.partition)).cloned();
            outcomes.push(answer);
        }
        drop(answers);
        let mut stale_metadata = false;
        for (batch, answer) in batches.into_iter().zip(outcomes) {
            self.release_in_flight(&batch);
            let resource = format!("{}-{}", batch.topic, batch.partition);
            match answer {
                None => {
                    let error = ClientError::Protocol {
                        api: "Produce",
                        reason: format!("no answer for {resource}"),
                    };
                    self.retry(batch, error);
                }
                Some((0, base_offset, log_append_time, _)) => {
                    self.note_acknowledged(&batch);
                    self.complete(
                        batch,
                        Ok(BatchAck {
                            base_offset,
                            log_append_time,
                        }),
                    );
                }
                // The broker already has this batch (a retry of one it wrote): it counts as
                // written, at the offsets the broker reports.
                Some((46, base_offset, log_append_time, _)) => {
                    self.note_acknowledged(&batch);
                    self.complete(
                        batch,
                        Ok(BatchAck {
                            base_offset,
                            log_append_time,
                        }),
                    );
                }
                Some((code, _, _, message)) => {
                    let error = ClientError::Kafka {
                        api: "Produce",
                        resource,
                        error: ResponseError::try_from_code(code)
                            .unwrap_or(ResponseError::Unknown(code)),
                        message,
                    };
                    stale_metadata |= error.leader_may_have_moved();
                    // Out of order: an earlier batch of the partition failed and is being
                    // retried first; this one follows it.
                    if error.is_retriable() || code == 45 {
                        self.retry(batch, error);
                    } else {
                        self.complete(batch, Err(error));
                    }
                }
            }
        }
        if stale_metadata {
            self.shared.cluster.invalidate_metadata();
            self.refresh_metadata();
        }
    }

    /// Notes that the leader has acknowledged a batch of `batch`'s partition.
    fn note_acknowledged(&self, batch: &ProducerBatch) {
        if let Some(topic) = self.queue_of(batch) {
            topic.partitions[batch.partition as usize]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .acknowledged = true;
        }
    }

    fn release_in_flight(&self, batch: &ProducerBatch) {
        if let Some(topic) = self.queue_of(batch) {
            let mut queue = topic.partitions[batch.partition as usize]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            queue.in_flight = queue.in_flight.saturating_sub(1);
            if batch.attempts > 0 {
                queue.retries_in_flight = queue.retries_in_flight.saturating_sub(1);
            }
        }
    }

    fn queue_of(&self, batch: &ProducerBatch) -> Option<Arc<TopicQueues>> {
        self.shared
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&*batch.topic)
            .cloned()
            .filter(|t| (batch.partition as usize) < t.partitions.len())
    }

    fn retry_all(&mut self, batches: Vec<ProducerBatch>, error: ClientError) {
        for batch in batches {
            self.release_in_flight(&batch);
            self.retry(batch, error.clone());
        }
    }

    /// Puts a batch back for another attempt, or fails it when retries or time ran out.
    fn retry(&mut self, mut batch: ProducerBatch, error: ClientError) {
        let config = &self.shared.config;
        batch.attempts += 1;
        let out_of_time = batch.created.elapsed() >= config.delivery_timeout;
        if batch.attempts > config.retries
            || out_of_time
            || self.shared.closing.load(Ordering::Acquire) && !error.is_retriable()
        {
            let error = if out_of_time {
                ClientError::DeliveryTimeout {
                    topic: batch.topic.to_string(),
                    partition: batch.partition,
                    elapsed: batch.created.elapsed(),
                    last_error: Some(error.to_string()),
                }
            } else {
                error
            };
            self.complete(batch, Err(error));
            return;
        }
        tracing::debug!(topic = %batch.topic, partition = batch.partition, attempt = batch.attempts, %error, "retrying batch");
        *self
            .shared
            .last_retry
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(super::RetriedBatch {
            topic: batch.topic.to_string(),
            partition: batch.partition,
            error: error.clone(),
            attempts: batch.attempts,
            at: Instant::now(),
        });
        batch.retry_at = Some(
            Instant::now()
                + backoff(
                    config.client.retry_backoff,
                    batch.attempts,
                    config.client.reconnect_backoff_max,
                ),
        );
        batch.last_error = Some(error);
        match self.queue_of(&batch) {
            Some(topic) => {
                let partition = batch.partition as usize;
                topic.partitions[partition]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .requeue(batch);
            }
            None => self.complete(batch, Err(ClientError::Closed("producer"))),
        }
    }

    /// Resolves a batch's futures and gives its memory back.
    fn complete(&self, batch: ProducerBatch, outcome: Result<BatchAck>) {
        if let Err(error) = &outcome {
            tracing::warn!(topic = %batch.topic, partition = batch.partition, records = batch.record_count, %error, "batch failed");
            self.shared.note_failed_batch(error, batch.generation);
        }
        batch.completion.complete(outcome);
        self.shared.memory.add_permits(batch.memory);
        self.shared.incomplete.fetch_sub(1, Ordering::AcqRel);
        if let Some(txn) = &self.shared.transaction {
            txn.batch_completed(batch.generation);
        }
        self.shared.batch_done.notify_waiters();
    }

    fn connect(&mut self, broker: i32) {
        if !self.connecting.insert(broker) {
            return;
        }
        let cluster = self.shared.cluster.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = cluster.connection(broker).await;
            let _ = events.send(Event::Connected { broker, result });
        });
    }

    /// Starts a metadata refresh unless one runs or one ran within `retry_backoff`.
    fn refresh_metadata(&mut self) {
        if self.refreshing_metadata {
            return;
        }
        let backoff = self.shared.config.client.retry_backoff;
        if self
            .last_metadata_refresh
            .is_some_and(|at| at.elapsed() < backoff)
        {
            // Too soon: come back after the backoff.
            let events = self.events.clone();
            self.refreshing_metadata = true;
            tokio::spawn(async move {
                tokio::time::sleep(backoff).await;
                let _ = events.send(Event::MetadataRefreshed);
            });
            return;
        }
        self.refreshing_metadata = true;
        self.last_metadata_refresh = Some(Instant::now());
        let cluster = self.shared.cluster.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Err(error) = cluster.refresh_interest().await {
                tracing::debug!(%error, "producer metadata refresh failed");
            }
            let _ = events.send(Event::MetadataRefreshed);
        });
    }
}

/// A partition's answer: error code, base offset, log append time, error message.
type PartitionAnswer = (i16, i64, i64, Option<String>);

fn backoff(base: Duration, attempts: u32, max: Duration) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(10);
    (base * factor).min(max.max(base))
}

fn produce_request(acks: i16, timeout: Duration, batches: &[ProducerBatch]) -> ProduceRequest {
    let mut by_topic: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for batch in batches {
        by_topic.entry(&batch.topic).or_default().push(
            PartitionProduceData::default()
                .with_index(batch.partition)
                .with_records(batch.encoded.clone()),
        );
    }
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(acks)
        .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
        .with_topic_data(
            by_topic
                .into_iter()
                .map(|(name, partitions)| {
                    TopicProduceData::default()
                        .with_name(topic_name(name))
                        .with_partition_data(partitions)
                })
                .collect(),
        )
}

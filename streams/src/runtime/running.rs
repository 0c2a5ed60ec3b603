//! The running loop of a job: polls the consumer, feeds records to their tasks, sends what
//! comes out, and commits, snapshots and ends input when it is time.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_client::consumer::{Consumer, ConsumerEvent};
use millrace_client::record::ConsumerRecord;
use millrace_client::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord, TopicPartition};

use crate::error::StreamsError;
use crate::query::QueryableState;
use crate::record::Record;
use crate::time::{PartitionId, Timestamp};

use super::changelog::ChangelogReader;
use super::config::StreamsConfig;
use super::end::{EndOfInput, EndPhase};
use super::exactly_once::{is_retriable, is_task_migrated};
use super::job::{Build, Ingest};
use super::metrics::JobMetrics;
use super::repartition::repartitioned;
use super::sink::Sink;
use super::task::Task;

/// How often live state is published for queries. Also bounds how often an on-disk store is
/// scanned for a snapshot (up to [`crate::state::backend::SNAPSHOT_ROW_CAP`] rows each time); the
/// only other publish is the one at the end of each end-of-input round.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// What the record types of a running job must be: what a task's pipeline can carry to
/// another thread (the job runs in a spawned task).
pub(super) trait Data: Send + 'static {}

impl<T: Send + 'static> Data for T {}

/// Everything the running loop owns.
pub(super) struct Running<K0, V0, K, V> {
    pub(super) config: StreamsConfig,
    pub(super) ingest: Ingest<K0, V0>,
    /// Next offset per source partition whose records were forwarded to the repartition
    /// topic (committed once the forwarded records are acknowledged).
    pub(super) forwarded: HashMap<TopicPartition, i64>,
    pub(super) build: Build<K0, V0, K, V>,
    pub(super) sink: Sink<K, V>,
    pub(super) metrics: Arc<JobMetrics>,
    pub(super) state: QueryableState,
    pub(super) stores: Vec<String>,
    /// Partition count of each source topic (in `Repartition::source_topics` order).
    pub(super) source_partitions: Vec<i32>,
    pub(super) consumer: Consumer,
    pub(super) producer: Producer,
    /// How `producer` was made: exactly-once replaces a fenced producer with a new one.
    pub(super) producer_config: ProducerConfig,
    /// When the last aborted transaction was recovered from (exactly-once).
    pub(super) last_recovery: Option<Instant>,
    pub(super) reader: ChangelogReader,
    pub(super) tasks: BTreeMap<i32, Task<K0, V0, K, V>>,
    /// Deliveries (outputs, dead letters, late records) not yet confirmed; a commit waits
    /// for all of them before it commits input offsets.
    pub(super) pending: Vec<DeliveryFuture>,
    pub(super) end: EndOfInput,
    /// The latest end-of-input signal taken up.
    pub(super) end_round: u64,
    pub(super) end_phase: EndPhase,
}

/// Milliseconds since the epoch now.
pub(super) fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl<K0: Data, V0: Data, K: Data, V: Data> Running<K0, V0, K, V> {
    /// Polls and processes until `shutdown` completes or an error stops the job; commits and
    /// publishes state when their intervals pass. Exactly-once, a fenced producer or a
    /// refused generation aborts the transaction and the job goes on from its last commit;
    /// any other error aborts it and stops the job.
    pub(super) async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StreamsError> {
        tokio::pin!(shutdown);
        loop {
            let error = match self.process_until_error(shutdown.as_mut()).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if !self.config.is_exactly_once() {
                return Err(error);
            }
            if is_task_migrated(&error, &self.producer) {
                tracing::warn!(%error, "producer fenced or generation over: aborting and rejoining");
                self.recover().await?;
                continue;
            }
            if is_retriable(&error) {
                // A broker or coordinator went away mid-transaction: abort it and go on
                // from the last commit, as after a crash, without stopping the job.
                tracing::warn!(%error, "transaction failed on a retriable error: aborting it");
                self.recover().await?;
                continue;
            }
            if let Err(abort) = self.abort_transaction().await {
                tracing::warn!(%abort, "aborting the transaction of a failed job");
            }
            return Err(error);
        }
    }

    /// The loop of [`Running::run`], up to its first error.
    async fn process_until_error(
        &mut self,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), StreamsError> {
        let mut next_commit = Instant::now() + self.config.commit_interval;
        let mut next_snapshot = Instant::now() + SNAPSHOT_INTERVAL;
        loop {
            let event = tokio::select! {
                _ = shutdown.as_mut() => return Ok(()),
                event = self.consumer.poll_event(Duration::from_millis(100)) => event,
            };
            match event.map_err(|e| StreamsError::client("polling the source topics", e))? {
                Some(ConsumerEvent::Records(records)) => self.process(records).await?,
                Some(ConsumerEvent::Assigned(partitions)) => self.assigned(&partitions).await?,
                Some(ConsumerEvent::Revoked(partitions)) => {
                    // Commit before the partitions go, so their next owner starts exactly
                    // where this instance stopped. Their tasks go even if it fails: they
                    // must not write to changelogs another instance owns next.
                    let committed = self.commit().await;
                    self.drop_tasks(&partitions);
                    committed?;
                }
                Some(ConsumerEvent::Lost(partitions)) => {
                    self.drop_tasks(&partitions);
                    if self.config.is_exactly_once() {
                        // The open transaction holds the lost tasks' writes: it must abort,
                        // and the other tasks go back to their last commit with it.
                        self.recover().await?;
                    }
                }
                None => {}
            }
            let now = now_ms();
            for task in self.tasks.values_mut() {
                task.pipeline.advance(now);
            }
            self.drain().await?;
            self.end_of_input_step().await?;
            if Instant::now() >= next_commit {
                self.commit().await?;
                next_commit = Instant::now() + self.config.commit_interval;
            }
            if Instant::now() >= next_snapshot {
                self.publish_state(now);
                next_snapshot = Instant::now() + SNAPSHOT_INTERVAL;
            }
        }
    }

    /// Commits (after a clean run) and closes the clients.
    pub(super) async fn shut_down(mut self, commit: bool) {
        let committed = if commit {
            let committed = self.commit().await;
            if let Err(error) = &committed {
                tracing::warn!(%error, "final commit failed");
            }
            committed.is_ok()
        } else {
            false
        };
        if self.config.is_exactly_once() && !committed {
            // Abort now rather than leave read_committed readers waiting for the timeout.
            if self.producer.abort_transaction().await.is_err() {
                tracing::debug!("no transaction to abort at shutdown");
            }
        }
        if let Err(error) = self.consumer.close().await {
            tracing::debug!(%error, "closing the consumer");
        }
        self.producer.close().await;
        self.reader.close().await;
    }

    /// The pipeline-topic partitions task `task` reads.
    pub(super) fn task_partitions(&self, task: i32) -> Vec<TopicPartition> {
        self.ingest
            .pipeline_topics
            .iter()
            .map(|t| TopicPartition::new(t, task))
            .collect()
    }

    /// The partition id inside a task of a pipeline topic (`None` for other topics).
    pub(super) fn partition_id(&self, topic: &str) -> Option<PartitionId> {
        self.ingest
            .pipeline_topics
            .iter()
            .position(|t| t == topic)
            .map(|i| i as PartitionId)
    }

    /// Feeds records to their tasks and sends what comes out.
    pub(super) async fn process(
        &mut self,
        records: Vec<ConsumerRecord>,
    ) -> Result<(), StreamsError> {
        self.metrics
            .records_in
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let mut bad = Vec::new();
        let mut forward_to = Vec::new();
        for record in &records {
            if self.partition_id(&record.topic).is_none() {
                if let Some(repartition) = &self.ingest.repartition {
                    let index = repartition
                        .source_topics
                        .iter()
                        .position(|t| **t == *record.topic)
                        .unwrap_or(0);
                    match (repartition.rekey)(record) {
                        Ok(key) => {
                            forward_to.push(repartitioned(&repartition.topic, record, index, key))
                        }
                        Err(reason) => bad.push((record, reason)),
                    }
                    self.forwarded.insert(
                        TopicPartition::new(record.topic.to_string(), record.partition),
                        record.offset + 1,
                    );
                }
                continue;
            }
            let Some((pid, offset)) = self.input_position(record) else {
                bad.push((
                    record,
                    "repartitioned record without its source position".into(),
                ));
                continue;
            };
            let repartitioned = self.ingest.repartition.is_some();
            let Some(task) = self.tasks.get_mut(&record.partition) else {
                continue;
            };
            if repartitioned {
                let next = task.next_source_offset.entry(pid).or_insert(0);
                if offset < *next {
                    continue;
                }
                *next = offset + 1;
            }
            match (self.ingest.decode)(record) {
                Ok((key, value, timestamp)) => task
                    .pipeline
                    .push(Record::new(key, value, timestamp).at(pid, offset)),
                Err(reason) => bad.push((record, reason)),
            }
        }
        for (record, reason) in bad {
            self.bad_record(record, reason).await?;
        }
        for record in forward_to {
            self.send(record).await?;
        }
        self.route_late(&records).await?;
        self.drain().await
    }

    /// Sends every task's output to the sink.
    pub(super) async fn drain(&mut self) -> Result<(), StreamsError> {
        let mut outputs = Vec::new();
        let mut state = 0u64;
        let mut duplicates = 0u64;
        let mut watermark = i64::MAX;
        for task in self.tasks.values_mut() {
            outputs.extend(task.pipeline.take_output());
            state += task.pipeline.state_len() as u64;
            duplicates += task.pipeline.metrics().duplicates_dropped;
            watermark = watermark.min(task.pipeline.watermark());
        }
        self.metrics.state_entries.store(state, Ordering::Relaxed);
        self.metrics
            .duplicates_dropped
            .store(duplicates, Ordering::Relaxed);
        if watermark != i64::MAX {
            self.metrics.watermark.store(watermark, Ordering::Relaxed);
        }
        let lag: i64 = self
            .consumer
            .assignment()
            .iter()
            .filter_map(|tp| self.consumer.lag(tp))
            .sum();
        self.metrics.lag.store(lag, Ordering::Relaxed);
        if outputs.is_empty() {
            return Ok(());
        }
        self.metrics
            .records_out
            .fetch_add(outputs.len() as u64, Ordering::Relaxed);
        match self.sink.clone() {
            Sink::Callback(callback) => callback(outputs),
            Sink::Topic { topic, encode } => {
                for output in outputs {
                    match encode(&output) {
                        Ok((key, value)) => {
                            let record = ProducerRecord {
                                topic: topic.clone(),
                                key: key.map(Into::into),
                                value: value.map(Into::into),
                                timestamp: Some(output.timestamp).filter(|t| *t >= 0),
                                ..ProducerRecord::default()
                            };
                            self.send(record).await?;
                        }
                        Err(reason) => {
                            self.metrics.bad_records.fetch_add(1, Ordering::Relaxed);
                            if self.config.fail_on_bad_record {
                                return Err(StreamsError::BadRecord {
                                    topic,
                                    partition: output.partition as i32,
                                    offset: output.offset,
                                    reason: format!("cannot encode output: {reason}"),
                                });
                            }
                            tracing::warn!(%reason, "output record could not be encoded; skipped");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends `record`; the next commit waits for its acknowledgement.
    pub(super) async fn send(&mut self, record: ProducerRecord) -> Result<(), StreamsError> {
        send(&self.producer, &mut self.pending, record).await
    }
}

/// Sends `record` through `producer`, keeping its delivery in `pending` for the next commit
/// to wait for.
pub(super) async fn send(
    producer: &Producer,
    pending: &mut Vec<DeliveryFuture>,
    record: ProducerRecord,
) -> Result<(), StreamsError> {
    let delivery = producer
        .send(record)
        .await
        .map_err(|e| StreamsError::client("producing", e))?;
    pending.push(delivery);
    Ok(())
}

//! The commit, in its order: flush each task's state into changelog records (ending with
//! its input offsets and event-time progress), send them, wait until they and every output
//! record sent before are acknowledged, and only then commit the input offsets.
//!
//! A failure anywhere before the offset commit fails the commit, and with it the job: the
//! input offsets stay where the previous commit left them, so the restarted task restores
//! the changelog's last complete state and replays the input after it (records the state
//! already reflects are skipped). Only a failed offset commit during a rebalance, or one
//! the client may retry, is not fatal: the changelog already holds the state with its
//! offsets, which the partition's next owner resumes from.
//!
//! Exactly-once (`exactly_once_v2`), the same steps happen inside the instance's open
//! transaction, and step 3 is different: the input offsets go into the transaction
//! (TxnOffsetCommit, with the consumer's generation so that a zombie's are refused), and the
//! transaction commits. Nothing is skipped there: a refused offset commit fails the commit,
//! and the caller aborts the transaction (see `exactly_once`).
//!
//! The Kafka clients are reached through [`CommitIo`], so that the order and the failure
//! handling are tested here without a broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;

use millrace_client::consumer::Consumer;
use millrace_client::{
    ClientError, DeliveryFuture, Producer, ProducerRecord, ResponseError, TopicPartition,
};

use crate::error::StreamsError;

use super::changelog::changelog_topic;
use super::running::{send, Data, Running};
use super::task::Task;

impl<K0: Data, V0: Data, K: Data, V: Data> Running<K0, V0, K, V> {
    /// Flushes state to the changelogs, waits for every delivery, then commits offsets.
    pub(super) async fn commit(&mut self) -> Result<(), StreamsError> {
        let started = Instant::now();
        let inputs = Inputs {
            application_id: &self.config.application_id,
            pipeline_topics: &self.ingest.pipeline_topics,
            repartitioned: self.ingest.repartition.is_some(),
            forwarded: &self.forwarded,
            exactly_once: self.config.is_exactly_once(),
        };
        let mut io = KafkaIo {
            producer: &self.producer,
            consumer: &mut self.consumer,
            pending: &mut self.pending,
        };
        commit(&mut io, &mut self.tasks, &inputs).await?;
        if inputs.exactly_once {
            // The next commit interval's writes go into a new transaction.
            self.producer
                .begin_transaction()
                .map_err(|e| StreamsError::client("beginning a transaction", e))?;
        }
        self.metrics.commits.fetch_add(1, Ordering::Relaxed);
        self.metrics.last_commit_micros.store(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(())
    }
}

/// What carries a commit out: the producer the outputs went through, and the consumer.
pub(super) trait CommitIo {
    /// Sends a changelog record; its acknowledgement is awaited with the outputs'.
    async fn send(&mut self, record: ProducerRecord) -> Result<(), StreamsError>;

    /// Waits until every record sent so far (outputs, dead letters, late records, changelog)
    /// is acknowledged.
    async fn acknowledged(&mut self) -> Result<(), StreamsError>;

    /// How far the consumer has handed out records of `partition`.
    fn position(&self, partition: &TopicPartition) -> Option<i64>;

    /// The partitions assigned to this instance now.
    fn assignment(&self) -> Vec<TopicPartition>;

    /// Commits input offsets to the consumer group.
    async fn commit_offsets(
        &mut self,
        offsets: &HashMap<TopicPartition, i64>,
    ) -> Result<(), ClientError>;

    /// Exactly-once: adds input offsets to the open transaction, with the consumer's group
    /// metadata.
    async fn send_offsets_to_transaction(
        &mut self,
        offsets: &HashMap<TopicPartition, i64>,
    ) -> Result<(), ClientError>;

    /// Exactly-once: commits the open transaction.
    async fn commit_transaction(&mut self) -> Result<(), ClientError>;
}

/// What a commit needs to know about the job's input.
pub(super) struct Inputs<'a> {
    /// The application id (the prefix of the changelog topics).
    pub(super) application_id: &'a str,
    /// The topics whose records feed the pipelines; a topic's position is its partition id
    /// inside a task.
    pub(super) pipeline_topics: &'a [String],
    /// Whether the pipelines read the repartition topic (then the pipelines' offsets are
    /// source positions, and the repartition topic's offsets are the consumer's positions).
    pub(super) repartitioned: bool,
    /// Next offset per source partition whose records were forwarded to the repartition
    /// topic.
    pub(super) forwarded: &'a HashMap<TopicPartition, i64>,
    /// Whether the commit ends the instance's transaction (`exactly_once_v2`).
    pub(super) exactly_once: bool,
}

/// One commit of `tasks` (see the module documentation).
pub(super) async fn commit<K0: Data, V0: Data, K: Data, V: Data>(
    io: &mut impl CommitIo,
    tasks: &mut BTreeMap<i32, Task<K0, V0, K, V>>,
    inputs: &Inputs<'_>,
) -> Result<(), StreamsError> {
    // 1. Every task's state into changelog records, before anything is sent: a store that
    // failed fails the commit here.
    let mut offsets = HashMap::new();
    let mut changelog = Vec::new();
    for (&task, state) in tasks.iter_mut() {
        let checkpoint = state.pipeline.commit()?;
        for batch in checkpoint.stores {
            let topic = changelog_topic(inputs.application_id, &batch.store);
            for change in batch.changes {
                changelog.push(ProducerRecord {
                    topic: topic.clone(),
                    partition: Some(task),
                    key: Some(change.key.into()),
                    value: change.value.map(Into::into),
                    ..ProducerRecord::default()
                });
            }
        }
        if inputs.repartitioned {
            // Everything the consumer handed out has been pushed into the pipelines.
            for topic in inputs.pipeline_topics {
                let tp = TopicPartition::new(topic, task);
                if let Some(position) = io.position(&tp) {
                    offsets.insert(tp, position);
                }
            }
        } else {
            for (pid, offset) in checkpoint.offsets {
                if let Some(topic) = inputs.pipeline_topics.get(pid as usize) {
                    offsets.insert(TopicPartition::new(topic, task), offset);
                }
            }
        }
    }
    offsets.extend(inputs.forwarded.iter().map(|(tp, o)| (tp.clone(), *o)));
    // 2. The changelog, then every acknowledgement: outputs and state are durable before
    // the offsets that say they were produced.
    for record in changelog {
        io.send(record).await?;
    }
    io.acknowledged().await?;
    // 3. The input offsets, of the partitions this instance still owns.
    let assigned = io.assignment();
    offsets.retain(|tp, _| assigned.contains(tp));
    if inputs.exactly_once {
        // 3'. The offsets join the transaction, which then commits: all or nothing.
        if !offsets.is_empty() {
            io.send_offsets_to_transaction(&offsets)
                .await
                .map_err(|e| StreamsError::client("adding input offsets to the transaction", e))?;
        }
        return io
            .commit_transaction()
            .await
            .map_err(|e| StreamsError::client("committing the transaction", e));
    }
    if !offsets.is_empty() {
        if let Err(error) = io.commit_offsets(&offsets).await {
            // Not fatal: a rebalance is under way (the next owner restores from the
            // changelog, which is already written) or the coordinator moved.
            if !error.is_retriable() && !is_generation_error(&error) {
                return Err(StreamsError::client("committing offsets", error));
            }
            tracing::info!(%error, "offset commit skipped");
        }
    }
    Ok(())
}

/// [`CommitIo`] over the job's clients.
struct KafkaIo<'a> {
    producer: &'a Producer,
    consumer: &'a mut Consumer,
    /// Deliveries not yet confirmed (see `Running::pending`).
    pending: &'a mut Vec<DeliveryFuture>,
}

impl CommitIo for KafkaIo<'_> {
    async fn send(&mut self, record: ProducerRecord) -> Result<(), StreamsError> {
        send(self.producer, self.pending, record).await
    }

    async fn acknowledged(&mut self) -> Result<(), StreamsError> {
        for delivery in std::mem::take(self.pending) {
            delivery
                .await
                .map_err(|e| StreamsError::client("waiting for output and changelog acks", e))?;
        }
        Ok(())
    }

    fn position(&self, partition: &TopicPartition) -> Option<i64> {
        self.consumer.position(partition)
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.consumer.assignment()
    }

    async fn commit_offsets(
        &mut self,
        offsets: &HashMap<TopicPartition, i64>,
    ) -> Result<(), ClientError> {
        self.consumer.commit_offsets(offsets).await
    }

    async fn send_offsets_to_transaction(
        &mut self,
        offsets: &HashMap<TopicPartition, i64>,
    ) -> Result<(), ClientError> {
        let group = self.consumer.group_metadata().ok_or_else(|| {
            ClientError::InvalidArgument("the job's consumer has no group".into())
        })?;
        let offsets: Vec<(String, i32, i64)> = offsets
            .iter()
            .map(|(tp, &offset)| (tp.topic.to_string(), tp.partition, offset))
            .collect();
        self.producer
            .send_offsets_to_transaction_for(&offsets, &group)
            .await
    }

    async fn commit_transaction(&mut self) -> Result<(), ClientError> {
        self.producer.commit_transaction().await
    }
}

/// Whether an offset commit failed because the group is rebalancing or this member's
/// generation ended.
fn is_generation_error(error: &ClientError) -> bool {
    matches!(
        error.kafka_error(),
        Some(
            ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
        )
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::dsl::{Pipeline, Stream};
    use crate::record::{Record, Windowed};
    use crate::state::StateBackend;
    use crate::windows::Windows;

    /// What the fake clients saw, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Event {
        /// A changelog record: topic, partition, key.
        Sent(String, Option<i32>, Vec<u8>),
        /// Every delivery awaited.
        Acknowledged,
        /// Offsets committed.
        Committed(Vec<(String, i32, i64)>),
        /// Offsets added to the transaction.
        OffsetsInTransaction(Vec<(String, i32, i64)>),
        /// The transaction committed.
        TransactionCommitted,
    }

    /// Clients that record what a commit does, and fail where told.
    #[derive(Default)]
    struct Recorder {
        events: Vec<Event>,
        positions: HashMap<TopicPartition, i64>,
        assigned: Vec<TopicPartition>,
        fail_acks: bool,
        commit_error: Option<ResponseError>,
    }

    impl CommitIo for Recorder {
        async fn send(&mut self, record: ProducerRecord) -> Result<(), StreamsError> {
            let key = record.key.map(|k| k.to_vec()).unwrap_or_default();
            self.events
                .push(Event::Sent(record.topic, record.partition, key));
            Ok(())
        }

        async fn acknowledged(&mut self) -> Result<(), StreamsError> {
            if self.fail_acks {
                return Err(StreamsError::Store("delivery failed".into()));
            }
            self.events.push(Event::Acknowledged);
            Ok(())
        }

        fn position(&self, partition: &TopicPartition) -> Option<i64> {
            self.positions.get(partition).copied()
        }

        fn assignment(&self) -> Vec<TopicPartition> {
            self.assigned.clone()
        }

        async fn commit_offsets(
            &mut self,
            offsets: &HashMap<TopicPartition, i64>,
        ) -> Result<(), ClientError> {
            if let Some(error) = self.commit_error {
                return Err(ClientError::Kafka {
                    api: "OffsetCommit",
                    resource: "app".into(),
                    error,
                    message: None,
                });
            }
            self.events.push(Event::Committed(sorted(offsets)));
            Ok(())
        }

        async fn send_offsets_to_transaction(
            &mut self,
            offsets: &HashMap<TopicPartition, i64>,
        ) -> Result<(), ClientError> {
            if let Some(error) = self.commit_error {
                return Err(ClientError::Kafka {
                    api: "TxnOffsetCommit",
                    resource: "app".into(),
                    error,
                    message: None,
                });
            }
            self.events
                .push(Event::OffsetsInTransaction(sorted(offsets)));
            Ok(())
        }

        async fn commit_transaction(&mut self) -> Result<(), ClientError> {
            self.events.push(Event::TransactionCommitted);
            Ok(())
        }
    }

    fn sorted(offsets: &HashMap<TopicPartition, i64>) -> Vec<(String, i32, i64)> {
        let mut sorted: Vec<_> = offsets
            .iter()
            .map(|(tp, &o)| (tp.topic.to_string(), tp.partition, o))
            .collect();
        sorted.sort();
        sorted
    }

    type Counts = Task<String, (), Windowed<String>, u64>;

    /// A task counting records per key in one-minute windows, in store `counts`, with its
    /// state where `backend` says.
    fn task(backend: StateBackend) -> Counts {
        Task {
            pipeline: Pipeline::with_backend(backend, |s: Stream<String, ()>| {
                s.window(Windows::tumbling(Duration::from_secs(60)).no_grace())
                    .named("counts")
                    .count()
            }),
            next_source_offset: HashMap::new(),
        }
    }

    /// Task `id` of a job reading `in-a` (partition id 0) and `in-b` (1), having processed
    /// `records` records of each input partition id.
    fn tasks(ids: &[i32], records: &[(u32, i64)]) -> BTreeMap<i32, Counts> {
        let mut tasks = BTreeMap::new();
        for &id in ids {
            let mut task = task(StateBackend::InMemory);
            for &(pid, n) in records {
                for offset in 0..n {
                    let record = Record::new(format!("k{offset}"), (), 1_000).at(pid, offset);
                    task.pipeline.push(record);
                }
            }
            tasks.insert(id, task);
        }
        tasks
    }

    fn topics() -> Vec<String> {
        vec!["in-a".to_string(), "in-b".to_string()]
    }

    fn inputs<'a>(topics: &'a [String], forwarded: &'a HashMap<TopicPartition, i64>) -> Inputs<'a> {
        Inputs {
            application_id: "app",
            pipeline_topics: topics,
            repartitioned: false,
            forwarded,
            exactly_once: false,
        }
    }

    /// Every partition of `topics` for `tasks`.
    fn assignment(topics: &[String], tasks: &[i32]) -> Vec<TopicPartition> {
        let mut all = Vec::new();
        for topic in topics {
            for &task in tasks {
                all.push(TopicPartition::new(topic, task));
            }
        }
        all
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        let mut kinds: Vec<&'static str> = events
            .iter()
            .map(|e| match e {
                Event::Sent(..) => "changelog",
                Event::Acknowledged => "acknowledged",
                Event::Committed(_) => "offsets",
                Event::OffsetsInTransaction(_) => "offsets in transaction",
                Event::TransactionCommitted => "transaction committed",
            })
            .collect();
        kinds.dedup();
        kinds
    }

    fn run(
        io: &mut Recorder,
        tasks: &mut BTreeMap<i32, Counts>,
        inputs: &Inputs<'_>,
    ) -> Result<(), StreamsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(commit(io, tasks, inputs))
    }

    #[test]
    fn the_changelog_is_sent_and_acknowledged_before_the_input_offsets_are_committed() {
        let (topics, forwarded) = (topics(), HashMap::new());
        let mut tasks = tasks(&[0], &[(0, 3)]);
        let mut io = Recorder {
            assigned: assignment(&topics, &[0]),
            ..Recorder::default()
        };
        run(&mut io, &mut tasks, &inputs(&topics, &forwarded)).unwrap();
        assert_eq!(
            kinds(&io.events),
            vec!["changelog", "acknowledged", "offsets"]
        );
    }

    #[test]
    fn each_task_writes_its_changelog_partition_ending_with_the_task_metadata() {
        let (topics, forwarded) = (topics(), HashMap::new());
        let mut tasks = tasks(&[0, 2], &[(0, 2)]);
        let mut io = Recorder {
            assigned: assignment(&topics, &[0, 2]),
            ..Recorder::default()
        };
        run(&mut io, &mut tasks, &inputs(&topics, &forwarded)).unwrap();
        // Per task: two accumulators (k0, k1), then the metadata entry (key [1]).
        let sent: Vec<(String, Option<i32>, bool)> = io
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Sent(topic, partition, key) => {
                    Some((topic.clone(), *partition, key == &[1]))
                }
                _ => None,
            })
            .collect();
        let batch = |task| {
            let record = |meta| ("app-counts-changelog".to_string(), Some(task), meta);
            vec![record(false), record(false), record(true)]
        };
        assert_eq!(sent, [batch(0), batch(2)].concat());
    }

    #[test]
    fn the_committed_offsets_are_the_next_offsets_the_flushed_state_reflects() {
        let (topics, forwarded) = (topics(), HashMap::new());
        let mut tasks = tasks(&[1], &[(0, 5), (1, 3)]);
        let mut io = Recorder {
            assigned: assignment(&topics, &[1]),
            ..Recorder::default()
        };
        run(&mut io, &mut tasks, &inputs(&topics, &forwarded)).unwrap();
        let expected = vec![("in-a".to_string(), 1, 5), ("in-b".to_string(), 1, 3)];
        assert_eq!(io.events.last(), Some(&Event::Committed(expected)));
    }

    #[test]
    fn a_failed_store_fails_the_commit_before_anything_is_sent() {
        let (topics, forwarded) = (topics(), HashMap::new());
        // A file where the state directory should be: the on-disk store cannot open.
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut tasks = tasks(&[0], &[(0, 2)]);
        tasks.insert(1, task(StateBackend::on_disk(file.path())));
        let mut io = Recorder {
            assigned: assignment(&topics, &[0, 1]),
            ..Recorder::default()
        };
        let result = run(&mut io, &mut tasks, &inputs(&topics, &forwarded));
        assert!(
            result.is_err() && io.events.is_empty(),
            "{result:?} {:?}",
            io.events
        );
    }

    #[test]
    fn a_failed_delivery_fails_the_commit_before_the_offsets_are_committed() {
        let (topics, forwarded) = (topics(), HashMap::new());
        let mut tasks = tasks(&[0], &[(0, 2)]);
        let mut io = Recorder {
            assigned: assignment(&topics, &[0]),
            fail_acks: true,
            ..Recorder::default()
        };
        let result = run(&mut io, &mut tasks, &inputs(&topics, &forwarded));
        assert!(
            result.is_err() && kinds(&io.events) == vec!["changelog"],
            "{result:?} {:?}",
            io.events
        );
    }

    #[test]
    fn offsets_of_partitions_no_longer_assigned_are_not_committed() {
        let (topics, forwarded) = (topics(), HashMap::new());
        let mut tasks = tasks(&[0], &[(0, 4), (1, 2)]);
        let mut io = Recorder {
            assigned: vec![TopicPartition::new("in-b", 0)],
            ..Recorder::default()
        };
        run(&mut io, &mut tasks, &inputs(&topics, &forwarded)).unwrap();
        let expected = vec![("in-b".to_string(), 0, 2)];
        assert_eq!(io.events.last(), Some(&Event::Committed(expected)));
    }

    #[test]
    fn nothing_is_committed_when_no_partition_is_assigned_any_more() {
        let (topics, forwarded) = (topics(), HashMap::new());
        let mut tasks = tasks(&[0], &[(0, 4)]);
        let mut io = Recorder::default();
        run(&mut io, &mut tasks, &inputs(&topics, &forwarded)).unwrap();
        assert_eq!(kinds(&io.events), vec!["changelog", "acknowledged"]);
    }

    #[test]
    fn a_rebalance_during_the_offset_commit_does_not_fail_the_commit() {
        let (topics, forwarded) = (topics(), HashMap::new());
        let mut tasks = tasks(&[0], &[(0, 1)]);
        let mut io = Recorder {
            assigned: assignment(&topics, &[0]),
            commit_error: Some(ResponseError::RebalanceInProgress),
            ..Recorder::default()
        };
        let result = run(&mut io, &mut tasks, &inputs(&topics, &forwarded));
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn an_offset_commit_refused_for_good_fails_the_commit() {
        let (topics, forwarded) = (topics(), HashMap::new());
        let mut tasks = tasks(&[0], &[(0, 1)]);
        let mut io = Recorder {
            assigned: assignment(&topics, &[0]),
            commit_error: Some(ResponseError::GroupAuthorizationFailed),
            ..Recorder::default()
        };
        let result = run(&mut io, &mut tasks, &inputs(&topics, &forwarded));
        assert!(
            matches!(&result, Err(StreamsError::Client { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn a_repartitioned_job_commits_consumer_positions_and_forwarded_source_offsets() {
        let topics = vec!["app-repartition".to_string()];
        let source = TopicPartition::new("clicks", 0);
        let forwarded = HashMap::from([(source.clone(), 9)]);
        // The pipeline's own offsets are source positions: not what the group commits.
        let mut tasks = tasks(&[0], &[(0, 4)]);
        let repartition = TopicPartition::new("app-repartition", 0);
        let mut io = Recorder {
            assigned: vec![repartition.clone(), source],
            positions: HashMap::from([(repartition, 7)]),
            ..Recorder::default()
        };
        let inputs = Inputs {
            repartitioned: true,
            ..inputs(&topics, &forwarded)
        };
        run(&mut io, &mut tasks, &inputs).unwrap();
        let expected = vec![
            ("app-repartition".to_string(), 0, 7),
            ("clicks".to_string(), 0, 9),
        ];
        assert_eq!(io.events.last(), Some(&Event::Committed(expected)));
    }

    #[test]
    fn exactly_once_the_offsets_join_the_transaction_which_commits_last() {
        let (topics, forwarded) = (topics(), HashMap::new());
        let mut tasks = tasks(&[0], &[(0, 3)]);
        let mut io = Recorder {
            assigned: assignment(&topics, &[0]),
            ..Recorder::default()
        };
        let inputs = Inputs {
            exactly_once: true,
            ..inputs(&topics, &forwarded)
        };
        run(&mut io, &mut tasks, &inputs).unwrap();
        assert_eq!(
            kinds(&io.events),
            vec![
                "changelog",
                "acknowledged",
                "offsets in transaction",
                "transaction committed"
            ]
        );
    }

    #[test]
    fn exactly_once_a_refused_offset_commit_fails_the_commit_before_the_transaction_commits() {
        let (topics, forwarded) = (topics(), HashMap::new());
        let mut tasks = tasks(&[0], &[(0, 1)]);
        let mut io = Recorder {
            assigned: assignment(&topics, &[0]),
            commit_error: Some(ResponseError::IllegalGeneration),
            ..Recorder::default()
        };
        let inputs = Inputs {
            exactly_once: true,
            ..inputs(&topics, &forwarded)
        };
        let result = run(&mut io, &mut tasks, &inputs);
        assert!(
            result.is_err() && !io.events.contains(&Event::TransactionCommitted),
            "{result:?} {:?}",
            io.events
        );
    }
}

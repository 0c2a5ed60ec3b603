//! The Kafka runtime: runs a [`Pipeline`] per input partition ("task") against a cluster.
//!
//! Instances of a job with the same application id form one consumer group; partition `p` of
//! every source topic is task `p`, which moves between instances with its state. Each task's
//! state stores are backed by compacted changelog topics (`<app>-<store>-changelog`,
//! partition `p`). A commit, every `commit_interval` and before partitions are given up:
//!
//! 1. flushes each task's state changes, ending with its input offsets and event-time
//!    progress, to the changelog topics;
//! 2. waits until those and every output record produced so far are acknowledged;
//! 3. commits the input offsets to the consumer group.
//!
//! On assignment a task restores its stores from the changelog (complete commits only) and
//! resumes reading at the offsets stored *with* that state, so restored state and resume
//! position always agree: after a crash, input is replayed from the last commit, and records
//! the restored state already counts are skipped. Delivery of output records is
//! at-least-once (a window emitted after the last commit may be emitted again, with the same
//! value); final window results are never double counted.

mod changelog;
mod end;
mod sink;
mod source;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_client::admin::NewTopic;
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig, ConsumerEvent};
use millrace_client::record::ConsumerRecord;
use millrace_client::{
    Acks, Admin, ClientConfig, ClientError, DeliveryFuture, OffsetSpec, Producer, ProducerConfig,
    ProducerRecord, ResponseError, TopicPartition,
};
use serde::Serialize;

pub use changelog::changelog_topic;
pub use end::EndOfInput;
pub use sink::{Callback, Encoder, Sink};
pub use source::{Decoder, Source};

use crate::backend::StateBackend;
use crate::dsl::{Pipeline, Stream};
use crate::error::StreamsError;
use crate::query::QueryableState;
use crate::record::Record;
use crate::time::{PartitionId, Timestamp};

use changelog::ChangelogReader;

/// How a job runs. Build with [`StreamsConfig::new`] and the setters.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// `application.id`: the consumer group, and the prefix of the changelog topics.
    pub application_id: String,
    /// How to reach the cluster.
    pub client: ClientConfig,
    /// How often state, outputs and offsets are committed (default 5 s).
    pub commit_interval: Duration,
    /// Bounded out-of-orderness of event time (default 5 s).
    pub max_out_of_orderness: Duration,
    /// A partition without records for this long stops holding windows open (default 30 s).
    pub idle_timeout: Option<Duration>,
    /// Where records that cannot be decoded or encoded go, with the reason in the
    /// `millrace.error` header. Without one, they are counted and skipped; with
    /// `fail_on_bad_record` the job stops instead.
    pub dead_letter_topic: Option<String>,
    /// Stop the job on a bad record instead of routing it.
    pub fail_on_bad_record: bool,
    /// Where records that arrive after their windows closed go (the original bytes, with the
    /// refusing operator in the `millrace.late.operator` header). They are counted either way.
    pub late_topic: Option<String>,
    /// Longest a task may take to restore its state.
    pub restore_timeout: Duration,
    /// The consumer's session timeout (default 45 s): how soon the group notices an instance
    /// that died and moves its tasks.
    pub session_timeout: Duration,
    /// Where the tasks' state stores live (default: in memory). Set with
    /// [`StreamsConfig::state_dir`].
    pub state_backend: StateBackend,
}

impl StreamsConfig {
    /// Defaults for `application_id` on `client`.
    pub fn new(application_id: impl Into<String>, client: ClientConfig) -> Self {
        StreamsConfig {
            application_id: application_id.into(),
            client,
            commit_interval: Duration::from_secs(5),
            max_out_of_orderness: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(30)),
            dead_letter_topic: None,
            fail_on_bad_record: false,
            late_topic: None,
            restore_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(45),
            state_backend: StateBackend::InMemory,
        }
    }

    /// Keeps every state store of the job on disk, under `dir/<application id>/` (Kafka
    /// Streams' `state.dir`): a redb file per store and task, a working copy restored from
    /// the changelog when the task starts and removed when it goes. For state larger than
    /// memory; steps can still choose `.in_memory()`. See [`crate::backend`].
    #[must_use]
    pub fn state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        let dir = dir.into().join(&self.application_id);
        self.state_backend = StateBackend::OnDisk(dir);
        self
    }

    /// Sets the consumer's session timeout (heartbeats go at a third of it, at most 3 s).
    #[must_use]
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets the commit interval.
    #[must_use]
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Sets the bounded out-of-orderness and the idle timeout of event time.
    #[must_use]
    pub fn event_time(mut self, max_out_of_orderness: Duration, idle: Option<Duration>) -> Self {
        self.max_out_of_orderness = max_out_of_orderness;
        self.idle_timeout = idle;
        self
    }

    /// Routes bad records to `topic`.
    #[must_use]
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// Routes late records to `topic`.
    #[must_use]
    pub fn late_topic(mut self, topic: impl Into<String>) -> Self {
        self.late_topic = Some(topic.into());
        self
    }

    /// Stops the job on a bad record.
    #[must_use]
    pub fn fail_on_bad_record(mut self, fail: bool) -> Self {
        self.fail_on_bad_record = fail;
        self
    }
}

/// Counters of a running job, shared with whoever watches it (the dashboard).
#[derive(Debug, Default)]
pub struct JobMetrics {
    records_in: AtomicU64,
    records_out: AtomicU64,
    late_records: AtomicU64,
    bad_records: AtomicU64,
    duplicates_dropped: AtomicU64,
    commits: AtomicU64,
    last_commit_micros: AtomicU64,
    state_entries: AtomicU64,
    tasks: AtomicU64,
    lag: AtomicI64,
    watermark: AtomicI64,
}

/// A copy of [`JobMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Records read from the source topics.
    pub records_in: u64,
    /// Records written to the sink.
    pub records_out: u64,
    /// Records that arrived after their windows had closed.
    pub late_records: u64,
    /// Records that could not be decoded or encoded.
    pub bad_records: u64,
    /// Records dropped by `dedupe`.
    pub duplicates_dropped: u64,
    /// Commits completed.
    pub commits: u64,
    /// How long the last commit took, in microseconds.
    pub last_commit_micros: u64,
    /// Live state entries over all tasks.
    pub state_entries: u64,
    /// Tasks (input partitions) this instance runs.
    pub tasks: u64,
    /// Records behind the end of the assigned source partitions, as of the last fetches.
    pub lag: i64,
    /// The smallest watermark over this instance's tasks (ms since the epoch).
    pub watermark: i64,
}

impl JobMetrics {
    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            late_records: self.late_records.load(Ordering::Relaxed),
            bad_records: self.bad_records.load(Ordering::Relaxed),
            duplicates_dropped: self.duplicates_dropped.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            last_commit_micros: self.last_commit_micros.load(Ordering::Relaxed),
            state_entries: self.state_entries.load(Ordering::Relaxed),
            tasks: self.tasks.load(Ordering::Relaxed),
            lag: self.lag.load(Ordering::Relaxed),
            watermark: self.watermark.load(Ordering::Relaxed),
        }
    }
}

type Build<K0, V0, K, V> = Arc<dyn Fn(Stream<K0, V0>) -> Stream<K, V> + Send + Sync>;

/// Computes a source record's new key (as bytes) for repartitioning.
type Rekey = Arc<dyn Fn(&ConsumerRecord) -> Result<Vec<u8>, String> + Send + Sync>;

/// How source records reach the pipeline.
struct Ingest<K, V> {
    /// Topics the consumer subscribes to (sources, and the repartition topic if any).
    subscribed: Vec<String>,
    /// Topics whose records feed the pipeline; a task is one partition index of these, and
    /// a topic's position here is its partition id inside the task.
    pipeline_topics: Vec<String>,
    /// Decodes records of the pipeline topics.
    decode: Decoder<K, V>,
    /// Set when the pipeline is keyed differently from the sources.
    repartition: Option<Repartition>,
}

impl<K, V> Clone for Ingest<K, V> {
    fn clone(&self) -> Self {
        Ingest {
            subscribed: self.subscribed.clone(),
            pipeline_topics: self.pipeline_topics.clone(),
            decode: self.decode.clone(),
            repartition: self.repartition.clone(),
        }
    }
}

/// Records of the source topics are re-keyed and written to `topic` (partitioned by the new
/// key, as Kafka Streams' repartition topics), so that every record of a key reaches the
/// same task; the pipeline then reads `topic`.
#[derive(Clone)]
struct Repartition {
    topic: String,
    source_topics: Vec<String>,
    rekey: Rekey,
}

/// Header carrying a repartitioned record's original key.
const ORIGINAL_KEY_HEADER: &str = "millrace.key";
/// Header carrying a repartitioned record's source position: `topic-index:partition:offset`.
/// The pipeline tracks progress (replay skipping, watermarks) by *source* partition and
/// offset, so a record forwarded twice (the source offset was not committed before a crash)
/// is recognised as a replay and not counted twice, and event time is tracked per source
/// partition, as if the task read the sources directly.
const SOURCE_POSITION_HEADER: &str = "millrace.source";

/// Partition ids of source partitions inside a repartitioned task: topic index in the high
/// bits, partition in the low 20.
fn source_partition_id(topic_index: usize, partition: i32) -> PartitionId {
    ((topic_index as PartitionId) << 20) | (partition as PartitionId & 0xF_FFFF)
}

/// The repartition topic of an application.
pub fn repartition_topic(application_id: &str) -> String {
    format!("{application_id}-repartition")
}

/// A stream job: a source, a pipeline built per task, and a sink.
///
/// Global tables the pipeline joins with ([`crate::Stream::join_table`]) are found by the
/// job itself: each instance reads every partition of each table topic up to its end before
/// processing stream records, then follows its updates.
///
/// ```no_run
/// # async fn run() -> Result<(), millrace_streams::StreamsError> {
/// use std::time::Duration;
/// use millrace_client::ClientConfig;
/// use millrace_streams::runtime::{Job, Sink, Source, StreamsConfig};
/// use millrace_streams::{EmitMode, Windows};
///
/// #[derive(serde::Deserialize)]
/// struct PageView { page: String, ts: i64 }
///
/// let config = StreamsConfig::new("page-views-per-minute", ClientConfig::new("127.0.0.1:9092"));
/// // page-views is keyed by user; group by page (through the repartition topic).
/// let job = Job::group_by(
///     config,
///     Source::json(&["page-views"], |v: &PageView| v.ts),
///     |_user, view| view.page.clone(),
///     |views| {
///         views
///             .window(Windows::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(10)))
///             .emit(EmitMode::Final)
///             .count()
///             .map(|w, views| (w.key.clone(), serde_json::json!({
///                 "page": w.key, "window_start": w.window_start,
///                 "window_end": w.window_end, "views": views })))
///     },
///     Sink::json_values("page-views-per-minute"),
/// );
/// job.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub struct Job<K0, V0, K, V> {
    config: StreamsConfig,
    ingest: Ingest<K0, V0>,
    build: Build<K0, V0, K, V>,
    sink: Sink<K, V>,
    metrics: Arc<JobMetrics>,
    state: QueryableState,
    end: EndOfInput,
}

/// How often live state is published for queries. Also bounds how often an on-disk store is
/// scanned for a snapshot (up to [`crate::backend::SNAPSHOT_ROW_CAP`] rows each time); the
/// only other publish is the one at the end of each end-of-input round.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

impl<K0, V0, K, V> std::fmt::Debug for Job<K0, V0, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("application_id", &self.config.application_id)
            .field("sources", &self.ingest.subscribed)
            .field("sink", &self.sink)
            .finish()
    }
}

/// One input partition index across the source topics, with its pipeline.
struct Task<K0, V0, K, V> {
    pipeline: Pipeline<K0, V0, K, V>,
    /// Repartitioned tasks: the next source offset expected per source partition. A source
    /// record forwarded twice (its offset was not committed before a crash) arrives again
    /// after records forwarded later, so replays are skipped here by source position; each
    /// source record is forwarded to exactly one task, so this is exact.
    next_source_offset: HashMap<PartitionId, i64>,
}

/// Everything the running loop owns.
struct Running<K0, V0, K, V> {
    config: StreamsConfig,
    ingest: Ingest<K0, V0>,
    /// Next offset per source partition whose records were forwarded to the repartition
    /// topic (committed once the forwarded records are acknowledged).
    forwarded: HashMap<TopicPartition, i64>,
    build: Build<K0, V0, K, V>,
    sink: Sink<K, V>,
    metrics: Arc<JobMetrics>,
    state: QueryableState,
    stores: Vec<String>,
    /// Partition count of each source topic (in `Repartition::source_topics` order).
    source_partitions: Vec<i32>,
    consumer: Consumer,
    producer: Producer,
    reader: ChangelogReader,
    tasks: BTreeMap<i32, Task<K0, V0, K, V>>,
    /// Deliveries (outputs, dead letters, late records) not yet confirmed; a commit waits
    /// for all of them before it commits input offsets.
    pending: Vec<DeliveryFuture>,
    end: EndOfInput,
    /// The latest end-of-input signal taken up.
    end_round: u64,
    end_phase: EndPhase,
}

/// Progress of an end of input (see [`EndOfInput`]).
enum EndPhase {
    /// None under way.
    Idle,
    /// `group_by` jobs: the source partitions must all be forwarded up to `ends`, by this
    /// instance or another one; the group's committed offsets say when they are, because an
    /// instance commits a source offset only after the forwarded records are acknowledged.
    Forwarding {
        ends: HashMap<TopicPartition, i64>,
        next_check: Instant,
        last_commit: Option<Instant>,
    },
    /// The pipeline topics must be read up to `ends` by this instance's tasks.
    Reading { ends: HashMap<TopicPartition, i64> },
}

/// How often a `group_by` end of input checks whether every source partition is forwarded.
const END_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Whether a partition read up to `position` has reached `end`.
fn reached(position: Option<i64>, end: i64) -> bool {
    end <= 0 || position.is_some_and(|p| p >= end)
}

impl<K0, V0, K, V> Job<K0, V0, K, V>
where
    K0: Send + 'static,
    V0: Send + 'static,
    K: Send + 'static,
    V: Send + 'static,
{
    /// A job reading `source`, processing each task with the pipeline `build` makes, and
    /// writing to `sink`.
    ///
    /// The source topics must be keyed the way the pipeline groups records (partition `p` of
    /// each is one task); when the pipeline groups by something else, use
    /// [`Job::group_by`], or a window's counts would be split between tasks.
    pub fn new(
        config: StreamsConfig,
        source: Source<K0, V0>,
        build: impl Fn(Stream<K0, V0>) -> Stream<K, V> + Send + Sync + 'static,
        sink: Sink<K, V>,
    ) -> Self {
        let ingest = Ingest {
            subscribed: source.topics.clone(),
            pipeline_topics: source.topics.clone(),
            decode: source.decode,
            repartition: None,
        };
        Job {
            config,
            ingest,
            build: Arc::new(build),
            sink,
            metrics: Arc::new(JobMetrics::default()),
            state: QueryableState::new(),
            end: EndOfInput::new(),
        }
    }

    /// A job whose pipeline is keyed by `key` of each source record (Kafka Streams'
    /// `groupBy`): the runtime writes the re-keyed records to the repartition topic
    /// `<application id>-repartition`, partitioned by the new key, and the pipeline reads
    /// that, so all records of a key meet in one task whichever instance runs it.
    pub fn group_by<KS>(
        config: StreamsConfig,
        source: Source<KS, V0>,
        key: impl Fn(&KS, &V0) -> K0 + Send + Sync + 'static,
        build: impl Fn(Stream<K0, V0>) -> Stream<K, V> + Send + Sync + 'static,
        sink: Sink<K, V>,
    ) -> Self
    where
        KS: 'static,
        K0: Serialize + serde::de::DeserializeOwned,
    {
        let topic = repartition_topic(&config.application_id);
        let decode_source = source.decode.clone();
        let rekey: Rekey = Arc::new(move |record: &ConsumerRecord| {
            let (k, v, _) = decode_source(record)?;
            serde_json::to_vec(&key(&k, &v)).map_err(|e| format!("cannot encode key: {e}"))
        });
        let decode_source = source.decode.clone();
        let decode: Decoder<K0, V0> = Arc::new(move |record: &ConsumerRecord| {
            let key_bytes = record
                .key
                .as_deref()
                .ok_or_else(|| "repartitioned record without a key".to_string())?;
            let key: K0 = serde_json::from_slice(key_bytes)
                .map_err(|e| format!("cannot decode repartitioned key: {e}"))?;
            // The source decoder sees the record as it was produced originally.
            let mut original = record.clone();
            original.key = record
                .headers
                .iter()
                .rev()
                .find(|(name, _)| name == ORIGINAL_KEY_HEADER)
                .and_then(|(_, value)| value.clone());
            original
                .headers
                .retain(|(name, _)| name != ORIGINAL_KEY_HEADER);
            let (_, value, timestamp) = decode_source(&original)?;
            Ok((key, value, timestamp))
        });
        let mut subscribed = source.topics.clone();
        subscribed.push(topic.clone());
        let ingest = Ingest {
            subscribed,
            pipeline_topics: vec![topic.clone()],
            decode,
            repartition: Some(Repartition {
                topic,
                source_topics: source.topics,
                rekey,
            }),
        };
        Job {
            config,
            ingest,
            build: Arc::new(build),
            sink,
            metrics: Arc::new(JobMetrics::default()),
            state: QueryableState::new(),
            end: EndOfInput::new(),
        }
    }

    /// The job's live counters.
    pub fn metrics(&self) -> Arc<JobMetrics> {
        self.metrics.clone()
    }

    /// The job's live state stores, for queries while it runs (Arrow batches, DataFusion
    /// tables: see [`QueryableState`]). Published about once a second.
    pub fn state(&self) -> QueryableState {
        self.state.clone()
    }

    /// The job's end-of-input handle (see [`EndOfInput`]): signal it to have the job
    /// process what its sources hold, close every window and commit; await its `drained()`
    /// for that to be done. Get it before [`Job::run`], which consumes the job.
    pub fn end_of_input(&self) -> EndOfInput {
        self.end.clone()
    }

    /// The state stores the pipeline has, by name (the changelog topics follow from them).
    pub fn store_names(&self) -> Result<Vec<String>, StreamsError> {
        let build = self.build.clone();
        let mut probe = Pipeline::new(move |s| build(s));
        Ok(probe
            .commit()?
            .stores
            .into_iter()
            .map(|s| s.store)
            .collect())
    }

    /// Runs until `shutdown` completes (then commits and leaves the group) or an error stops
    /// the job.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StreamsError> {
        if self.config.application_id.is_empty() {
            return Err(StreamsError::Config("application_id is empty".to_string()));
        }
        let stores = self.store_names()?;
        let tables = {
            let build = self.build.clone();
            Pipeline::new(move |s| build(s)).tables()
        };
        let table_topics: Vec<String> = tables.iter().map(|t| t.topic().to_string()).collect();
        let source_partitions = self.prepare_topics(&stores, &table_topics).await?;
        let partitions = source_partitions.iter().copied().max().unwrap_or(0);
        tracing::info!(
            application = %self.config.application_id,
            sources = ?self.ingest.subscribed,
            partitions,
            ?stores,
            "stream job starting"
        );
        let consumer_config = ConsumerConfig::builder(self.config.client.clone())
            .group_id(&self.config.application_id)
            .enable_auto_commit(false)
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(100))
            .session_timeout(self.config.session_timeout)
            .heartbeat_interval((self.config.session_timeout / 3).min(Duration::from_secs(3)))
            .build()
            .map_err(|e| StreamsError::client("configuring the consumer", e))?;
        let mut consumer = Consumer::connect(consumer_config)
            .await
            .map_err(|e| StreamsError::client("connecting the consumer", e))?;
        let topics: Vec<&str> = self.ingest.subscribed.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| StreamsError::client("subscribing", e))?;
        let producer = Producer::connect(
            ProducerConfig::builder(self.config.client.clone())
                .acks(Acks::All)
                .linger_ms(5)
                .build()
                .map_err(|e| StreamsError::client("configuring the producer", e))?,
        )
        .await
        .map_err(|e| StreamsError::client("connecting the producer", e))?;
        let reader = ChangelogReader::connect(self.config.client.clone()).await?;
        // Tables first: stream records are joined with a table loaded to its end.
        let loaders = table::TableLoaders::start(
            &self.config.client,
            tables,
            self.config.restore_timeout,
            self.metrics.clone(),
        )
        .await?;
        let mut running = Running {
            config: self.config,
            ingest: self.ingest,
            forwarded: HashMap::new(),
            build: self.build,
            sink: self.sink,
            metrics: self.metrics,
            state: self.state,
            stores,
            source_partitions,
            consumer,
            producer,
            reader,
            tasks: BTreeMap::new(),
            pending: Vec::new(),
            end: self.end,
            end_round: 0,
            end_phase: EndPhase::Idle,
        };
        let result = running.run(shutdown).await;
        running.shut_down(result.is_ok()).await;
        loaders.stop().await;
        result
    }

    /// Checks the sources, creates the changelog topics (compacted, one partition per task)
    /// and a missing sink topic. Returns each source topic's partition count (the largest is
    /// the number of tasks).
    async fn prepare_topics(
        &self,
        stores: &[String],
        table_topics: &[String],
    ) -> Result<Vec<i32>, StreamsError> {
        let admin = Admin::connect(self.config.client.clone())
            .await
            .map_err(|e| StreamsError::client("connecting the admin client", e))?;
        let sources = match &self.ingest.repartition {
            Some(repartition) => &repartition.source_topics,
            None => &self.ingest.pipeline_topics,
        };
        let mut partitions = 0;
        let mut counts = Vec::with_capacity(sources.len());
        for topic in sources {
            let described = admin
                .describe_topics(&[topic.as_str()])
                .await
                .map_err(|e| {
                    StreamsError::Config(format!("source topic `{topic}` is not usable: {e}"))
                })?;
            let count = described.first().map_or(0, |t| t.partitions.len() as i32);
            partitions = partitions.max(count);
            counts.push(count);
        }
        if partitions == 0 {
            return Err(StreamsError::Config(
                "the source topics have no partitions".to_string(),
            ));
        }
        let mut wanted: Vec<NewTopic> = stores
            .iter()
            .map(|store| {
                NewTopic::new(
                    changelog_topic(&self.config.application_id, store),
                    partitions,
                )
                .config("cleanup.policy", "compact")
            })
            .collect();
        if let Some(topic) = self.sink.topic_name() {
            wanted.push(NewTopic::new(topic, partitions));
        }
        // A table topic that does not exist yet is an empty table that fills later.
        for topic in table_topics {
            wanted.push(NewTopic::new(topic, partitions).config("cleanup.policy", "compact"));
        }
        if let Some(repartition) = &self.ingest.repartition {
            wanted.push(NewTopic::new(&repartition.topic, partitions));
        }
        for extra in [&self.config.dead_letter_topic, &self.config.late_topic]
            .into_iter()
            .flatten()
        {
            wanted.push(NewTopic::new(extra, 1));
        }
        for topic in wanted {
            let name = topic.name.clone();
            match admin.create_topic(topic).await {
                Ok(()) => tracing::info!(topic = %name, "created topic"),
                Err(error) if error.kafka_error() == Some(ResponseError::TopicAlreadyExists) => {}
                Err(error) => {
                    return Err(StreamsError::client(
                        format!("creating topic {name}"),
                        error,
                    ))
                }
            }
        }
        Ok(counts)
    }
}

/// Milliseconds since the epoch now.
fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl<K0, V0, K, V> Running<K0, V0, K, V>
where
    K0: Send + 'static,
    V0: Send + 'static,
    K: Send + 'static,
    V: Send + 'static,
{
    async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), StreamsError> {
        tokio::pin!(shutdown);
        let mut next_commit = Instant::now() + self.config.commit_interval;
        let mut next_snapshot = Instant::now() + SNAPSHOT_INTERVAL;
        loop {
            let event = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                event = self.consumer.poll_event(Duration::from_millis(100)) => event,
            };
            match event.map_err(|e| StreamsError::client("polling the source topics", e))? {
                Some(ConsumerEvent::Records(records)) => self.process(records).await?,
                Some(ConsumerEvent::Assigned(partitions)) => self.assigned(&partitions).await?,
                Some(ConsumerEvent::Revoked(partitions)) => {
                    // Commit before the partitions go, so their next owner starts exactly
                    // where this instance stopped.
                    self.commit().await?;
                    self.drop_tasks(&partitions);
                }
                Some(ConsumerEvent::Lost(partitions)) => self.drop_tasks(&partitions),
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

    /// Moves an end of input along (see [`EndOfInput`]); called once per loop turn.
    async fn end_of_input_step(&mut self) -> Result<(), StreamsError> {
        let signalled = self.end.signalled();
        if signalled > self.end_round {
            // A new signal (possibly during an earlier round): take the ends of now.
            self.end_round = signalled;
            self.end_phase = match self.ingest.repartition.clone() {
                Some(repartition) => EndPhase::Forwarding {
                    ends: Self::end_offsets(&self.consumer, &repartition.source_topics).await?,
                    next_check: Instant::now(),
                    last_commit: None,
                },
                None => EndPhase::Reading {
                    ends: Self::end_offsets(&self.consumer, &self.ingest.pipeline_topics).await?,
                },
            };
            tracing::info!(
                round = self.end_round,
                "end of input: reading up to the ends"
            );
        }
        // Taken out while it is worked on (the checks need the rest of `self`), put back
        // unless it is complete.
        let phase = std::mem::replace(&mut self.end_phase, EndPhase::Idle);
        self.end_phase = match phase {
            EndPhase::Idle => EndPhase::Idle,
            EndPhase::Forwarding {
                ends,
                next_check,
                last_commit,
            } => self.end_forwarding(ends, next_check, last_commit).await?,
            EndPhase::Reading { ends } => {
                let done = self.consumer.group_generation().is_some()
                    && self
                        .consumer
                        .assignment()
                        .iter()
                        .filter(|tp| self.partition_id(&tp.topic).is_some())
                        .all(|tp| {
                            ends.get(tp)
                                .is_none_or(|&end| reached(self.consumer.position(tp), end))
                        });
                if done {
                    for task in self.tasks.values_mut() {
                        task.pipeline.end_of_input();
                    }
                    self.drain().await?;
                    self.commit().await?;
                    self.publish_state(now_ms());
                    self.end.mark_drained(self.end_round);
                    EndPhase::Idle
                } else {
                    EndPhase::Reading { ends }
                }
            }
        };
        Ok(())
    }

    /// The forwarding phase of a `group_by` end of input: returns the next phase.
    async fn end_forwarding(
        &mut self,
        ends: HashMap<TopicPartition, i64>,
        next_check: Instant,
        mut last_commit: Option<Instant>,
    ) -> Result<EndPhase, StreamsError> {
        let waiting = |last_commit| EndPhase::Forwarding {
            ends: ends.clone(),
            next_check: Instant::now() + END_CHECK_INTERVAL,
            last_commit,
        };
        if Instant::now() < next_check {
            return Ok(EndPhase::Forwarding {
                ends,
                next_check,
                last_commit,
            });
        }
        // Outside a group generation the assignment is not settled yet (or is moving): an
        // empty one would look done.
        let own_done = self.consumer.group_generation().is_some()
            && self
                .consumer
                .assignment()
                .iter()
                .filter_map(|tp| ends.get(tp).map(|&end| (tp, end)))
                .all(|(tp, end)| reached(self.consumer.position(tp), end));
        if !own_done {
            return Ok(waiting(last_commit));
        }
        // This instance's forwarded records acknowledged and its source offsets committed:
        // the group's commits then show its part is done (once a second at most, while
        // waiting for other instances).
        if last_commit.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            last_commit = Some(Instant::now());
            self.commit().await?;
        }
        let partitions: Vec<TopicPartition> = ends.keys().cloned().collect();
        let committed = self
            .consumer
            .committed(&partitions)
            .await
            .map_err(|e| StreamsError::client("end of input: reading commits", e))?;
        let all_forwarded = ends
            .iter()
            .all(|(tp, &end)| reached(committed.get(tp).copied(), end));
        if !all_forwarded {
            return Ok(waiting(last_commit));
        }
        let topic = self
            .ingest
            .repartition
            .as_ref()
            .map(|r| r.topic.clone())
            .unwrap_or_default();
        let ends = Self::end_offsets(&self.consumer, &[topic]).await?;
        tracing::info!(
            round = self.end_round,
            "end of input: sources forwarded, reading the repartition topic"
        );
        Ok(EndPhase::Reading { ends })
    }

    /// The end offsets of every partition of `topics` now.
    // Takes the consumer, not `&self`: a future holding `&self` across an await would need
    // the tasks' pipelines to be `Sync`, and `run` must stay `Send` for `tokio::spawn`.
    async fn end_offsets(
        consumer: &Consumer,
        topics: &[String],
    ) -> Result<HashMap<TopicPartition, i64>, StreamsError> {
        let mut partitions = Vec::new();
        for topic in topics {
            let ids = consumer.partitions_for(topic).await.map_err(|e| {
                StreamsError::client(format!("end of input: partitions of {topic}"), e)
            })?;
            partitions.extend(ids.into_iter().map(|p| TopicPartition::new(topic, p)));
        }
        let listed = consumer
            .offsets_for(&partitions, OffsetSpec::Latest)
            .await
            .map_err(|e| StreamsError::client("end of input: listing end offsets", e))?;
        Ok(listed
            .into_iter()
            .map(|(tp, listed)| (tp, listed.offset))
            .collect())
    }

    /// Commits (after a clean run) and closes the clients.
    async fn shut_down(mut self, commit: bool) {
        if commit {
            if let Err(error) = self.commit().await {
                tracing::warn!(%error, "final commit failed");
            }
        }
        if let Err(error) = self.consumer.close().await {
            tracing::debug!(%error, "closing the consumer");
        }
        self.producer.close().await;
        self.reader.close().await;
    }

    fn task_partitions(&self, task: i32) -> Vec<TopicPartition> {
        self.ingest
            .pipeline_topics
            .iter()
            .map(|t| TopicPartition::new(t, task))
            .collect()
    }

    /// The partition id inside a task of a pipeline topic (`None` for other topics).
    fn partition_id(&self, topic: &str) -> Option<PartitionId> {
        self.ingest
            .pipeline_topics
            .iter()
            .position(|t| t == topic)
            .map(|i| i as PartitionId)
    }

    /// Where a pipeline-topic record counts as read from: its own partition and offset, or
    /// for a repartitioned record its source partition and offset.
    fn input_position(&self, record: &ConsumerRecord) -> Option<(PartitionId, i64)> {
        let pid = self.partition_id(&record.topic)?;
        if self.ingest.repartition.is_none() {
            return Some((pid, record.offset));
        }
        let (_, value) = record
            .headers
            .iter()
            .rev()
            .find(|(name, _)| name == SOURCE_POSITION_HEADER)?;
        let text = std::str::from_utf8(value.as_deref()?).ok()?;
        let mut parts = text.split(':');
        let topic_index: usize = parts.next()?.parse().ok()?;
        let partition: i32 = parts.next()?.parse().ok()?;
        let offset: i64 = parts.next()?.parse().ok()?;
        Some((source_partition_id(topic_index, partition), offset))
    }

    /// Creates tasks for newly assigned partitions, restoring their state and positions.
    async fn assigned(&mut self, partitions: &[TopicPartition]) -> Result<(), StreamsError> {
        let mut new_tasks: Vec<i32> = partitions
            .iter()
            .filter(|tp| self.partition_id(&tp.topic).is_some())
            .map(|tp| tp.partition)
            .collect();
        new_tasks.sort_unstable();
        new_tasks.dedup();
        for task in new_tasks {
            if self.tasks.contains_key(&task) {
                continue;
            }
            let build = self.build.clone();
            let backend = self.config.state_backend.clone();
            let mut pipeline = Pipeline::with_backend(backend, move |s| build(s))
                .event_time(self.config.max_out_of_orderness, self.config.idle_timeout);
            // Processing time first: idleness is measured from it.
            pipeline.advance(now_ms());
            let mut batches = Vec::with_capacity(self.stores.len());
            let started = Instant::now();
            for store in &self.stores {
                let topic = changelog_topic(&self.config.application_id, store);
                batches.push(
                    self.reader
                        .read(store, &topic, task, self.config.restore_timeout)
                        .await?,
                );
            }
            let restored_entries: usize = batches.iter().map(|b| b.changes.len()).sum();
            let resume = pipeline.restore(batches)?;
            // Repartitioned tasks track source positions; the repartition topic itself
            // resumes from the group's committed offset (never ahead of the restored state,
            // and replays behind it are skipped by source position).
            let repartitioned = self.ingest.repartition.is_some();
            for (pid, offset) in resume.iter().filter(|_| !repartitioned) {
                if let Some(topic) = self.ingest.pipeline_topics.get(*pid as usize) {
                    let tp = TopicPartition::new(topic, task);
                    if partitions.contains(&tp) {
                        self.consumer
                            .seek(&tp, *offset)
                            .map_err(|e| StreamsError::client(format!("seeking {tp}"), e))?;
                    }
                }
            }
            if repartitioned {
                // Every source partition may send this task records: each holds the task's
                // watermark back until it does (or goes idle), so a backlog read from one
                // source partition first does not make the others' records late.
                for (index, count) in self.source_partitions.iter().enumerate() {
                    for partition in 0..*count {
                        pipeline.assign(source_partition_id(index, partition));
                    }
                }
            } else {
                for tp in self.task_partitions(task) {
                    if let Some(pid) = self.partition_id(&tp.topic) {
                        pipeline.assign(pid);
                    }
                }
            }
            tracing::info!(
                task,
                restored_entries,
                ?resume,
                elapsed = ?started.elapsed(),
                "task restored"
            );
            let next_source_offset = if repartitioned {
                resume.into_iter().collect()
            } else {
                HashMap::new()
            };
            self.tasks.insert(
                task,
                Task {
                    pipeline,
                    next_source_offset,
                },
            );
        }
        self.metrics
            .tasks
            .store(self.tasks.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn publish_state(&self, now: Timestamp) {
        for (&task, state) in &self.tasks {
            self.state.publish(task, state.pipeline.snapshot(), now);
        }
    }

    fn drop_tasks(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if self.partition_id(&tp.topic).is_some() {
                self.tasks.remove(&tp.partition);
                self.state.remove_task(tp.partition);
            }
            self.forwarded.remove(tp);
        }
        self.metrics
            .tasks
            .store(self.tasks.len() as u64, Ordering::Relaxed);
    }

    /// Feeds records to their tasks and sends what comes out.
    async fn process(&mut self, records: Vec<ConsumerRecord>) -> Result<(), StreamsError> {
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
        // Late records: route the original bytes, found in this batch, to the late topic.
        let mut late = Vec::new();
        for task in self.tasks.values_mut() {
            late.extend(task.pipeline.take_late());
        }
        if !late.is_empty() {
            self.metrics
                .late_records
                .fetch_add(late.len() as u64, Ordering::Relaxed);
            if let Some(topic) = self.config.late_topic.clone() {
                let by_position: HashMap<(PartitionId, i64), &ConsumerRecord> = records
                    .iter()
                    .filter_map(|r| self.input_position(r).map(|position| (position, r)))
                    .collect();
                for entry in late {
                    if let Some(original) = by_position.get(&(entry.partition, entry.offset)) {
                        let record = forward(&topic, original)
                            .header("millrace.late.operator", entry.operator.clone())
                            .header("millrace.watermark", entry.watermark.to_string());
                        self.send(record).await?;
                    }
                }
            }
        }
        self.drain().await
    }

    /// Sends every task's output to the sink.
    async fn drain(&mut self) -> Result<(), StreamsError> {
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

    async fn bad_record(
        &mut self,
        record: &ConsumerRecord,
        reason: String,
    ) -> Result<(), StreamsError> {
        self.metrics.bad_records.fetch_add(1, Ordering::Relaxed);
        if self.config.fail_on_bad_record {
            return Err(StreamsError::BadRecord {
                topic: record.topic.to_string(),
                partition: record.partition,
                offset: record.offset,
                reason,
            });
        }
        match self.config.dead_letter_topic.clone() {
            Some(topic) => {
                let forwarded = forward(&topic, record).header("millrace.error", reason);
                self.send(forwarded).await?;
            }
            None => tracing::warn!(
                topic = %record.topic,
                partition = record.partition,
                offset = record.offset,
                %reason,
                "bad record skipped"
            ),
        }
        Ok(())
    }

    async fn send(&mut self, record: ProducerRecord) -> Result<(), StreamsError> {
        let delivery = self
            .producer
            .send(record)
            .await
            .map_err(|e| StreamsError::client("producing", e))?;
        self.pending.push(delivery);
        Ok(())
    }

    /// Flushes state to the changelogs, waits for every delivery, then commits offsets.
    async fn commit(&mut self) -> Result<(), StreamsError> {
        let started = Instant::now();
        let mut offsets = HashMap::new();
        let mut changelog = Vec::new();
        for (&task, state) in self.tasks.iter_mut() {
            let checkpoint = state.pipeline.commit()?;
            for batch in checkpoint.stores {
                let topic = changelog_topic(&self.config.application_id, &batch.store);
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
            if self.ingest.repartition.is_none() {
                for (pid, offset) in checkpoint.offsets {
                    if let Some(topic) = self.ingest.pipeline_topics.get(pid as usize) {
                        offsets.insert(TopicPartition::new(topic, task), offset);
                    }
                }
            }
        }
        if self.ingest.repartition.is_some() {
            // Everything the consumer handed out has been pushed into the pipelines.
            let tasks: Vec<i32> = self.tasks.keys().copied().collect();
            for task in tasks {
                for tp in self.task_partitions(task) {
                    if let Some(position) = self.consumer.position(&tp) {
                        offsets.insert(tp, position);
                    }
                }
            }
        }
        offsets.extend(self.forwarded.iter().map(|(tp, o)| (tp.clone(), *o)));
        for record in changelog {
            self.send(record).await?;
        }
        for delivery in std::mem::take(&mut self.pending) {
            delivery
                .await
                .map_err(|e| StreamsError::client("waiting for output and changelog acks", e))?;
        }
        let assigned = self.consumer.assignment();
        offsets.retain(|tp, _| assigned.contains(tp));
        if !offsets.is_empty() {
            if let Err(error) = self.consumer.commit_offsets(&offsets).await {
                // Not fatal: a rebalance is under way (the next owner restores from the
                // changelog, which is already written) or the coordinator moved.
                if !error.is_retriable() && !is_generation_error(&error) {
                    return Err(StreamsError::client("committing offsets", error));
                }
                tracing::info!(%error, "offset commit skipped");
            }
        }
        self.metrics.commits.fetch_add(1, Ordering::Relaxed);
        self.metrics.last_commit_micros.store(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(())
    }
}

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

/// A source record re-keyed for the repartition topic: the new key, the original value,
/// headers and timestamp, and the original key in a header.
fn repartitioned(
    topic: &str,
    original: &ConsumerRecord,
    topic_index: usize,
    key: Vec<u8>,
) -> ProducerRecord {
    let mut headers = original.headers.clone();
    headers.push((ORIGINAL_KEY_HEADER.to_string(), original.key.clone()));
    let position = format!("{topic_index}:{}:{}", original.partition, original.offset);
    headers.push((SOURCE_POSITION_HEADER.to_string(), Some(position.into())));
    ProducerRecord {
        topic: topic.to_string(),
        key: Some(key.into()),
        value: original.value.clone(),
        headers,
        timestamp: Some(original.timestamp),
        ..ProducerRecord::default()
    }
}

/// The original record's key, value and headers, bound for `topic`, with where it came from.
fn forward(topic: &str, original: &ConsumerRecord) -> ProducerRecord {
    let mut record = ProducerRecord {
        topic: topic.to_string(),
        key: original.key.clone(),
        value: original.value.clone(),
        headers: original.headers.clone(),
        timestamp: Some(original.timestamp),
        ..ProducerRecord::default()
    };
    record = record
        .header("millrace.topic", original.topic.to_string())
        .header("millrace.partition", original.partition.to_string())
        .header("millrace.offset", original.offset.to_string());
    record
}

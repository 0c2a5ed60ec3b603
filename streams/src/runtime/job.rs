//! [`Job`]: a stream job (source, pipeline per task, sink), how it is set up and started.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use millrace_client::admin::NewTopic;
use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
use millrace_client::record::ConsumerRecord;
use millrace_client::{Acks, Admin, Producer, ProducerConfig, ResponseError};
use serde::Serialize;

use crate::dsl::{Pipeline, Stream};
use crate::error::StreamsError;
use crate::query::QueryableState;

use super::changelog::{changelog_topic, ChangelogReader};
use super::config::StreamsConfig;
use super::end::{EndOfInput, EndPhase};
use super::exactly_once::{connect_transactional, random_instance_id, transactional_id};
use super::metrics::JobMetrics;
use super::repartition::{repartition_topic, Rekey, Repartition, ORIGINAL_KEY_HEADER};
use super::running::Running;
use super::sink::Sink;
use super::source::{Decoder, Source};
use super::table;

pub(super) type Build<K0, V0, K, V> = Arc<dyn Fn(Stream<K0, V0>) -> Stream<K, V> + Send + Sync>;

/// How source records reach the pipeline.
pub(super) struct Ingest<K, V> {
    /// Topics the consumer subscribes to (sources, and the repartition topic if any).
    pub(super) subscribed: Vec<String>,
    /// Topics whose records feed the pipeline; a task is one partition index of these, and
    /// a topic's position here is its partition id inside the task.
    pub(super) pipeline_topics: Vec<String>,
    /// Decodes records of the pipeline topics.
    pub(super) decode: Decoder<K, V>,
    /// Set when the pipeline is keyed differently from the sources.
    pub(super) repartition: Option<Repartition>,
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

impl<K0, V0, K, V> std::fmt::Debug for Job<K0, V0, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("application_id", &self.config.application_id)
            .field("sources", &self.ingest.subscribed)
            .field("sink", &self.sink)
            .finish()
    }
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
        Self::with_ingest(config, ingest, Arc::new(build), sink)
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
        Self::with_ingest(config, ingest, Arc::new(build), sink)
    }

    fn with_ingest(
        config: StreamsConfig,
        ingest: Ingest<K0, V0>,
        build: Build<K0, V0, K, V>,
        sink: Sink<K, V>,
    ) -> Self {
        Job {
            config,
            ingest,
            build,
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
        let mut consumer_config = ConsumerConfig::builder(self.config.client.clone())
            .group_id(&self.config.application_id)
            .enable_auto_commit(false)
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait(Duration::from_millis(100))
            .session_timeout(self.config.session_timeout)
            .heartbeat_interval((self.config.session_timeout / 3).min(Duration::from_secs(3)))
            .isolation_level(self.config.isolation_level());
        if let Some(instance) = &self.config.instance_id {
            // A stable instance is a static member (KIP-345): restarted, it takes its own
            // place in the group back without waiting for its old session to expire.
            consumer_config = consumer_config.group_instance_id(instance);
        }
        let consumer_config = consumer_config
            .build()
            .map_err(|e| StreamsError::client("configuring the consumer", e))?;
        let mut consumer = Consumer::connect(consumer_config)
            .await
            .map_err(|e| StreamsError::client("connecting the consumer", e))?;
        let topics: Vec<&str> = self.ingest.subscribed.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| StreamsError::client("subscribing", e))?;
        let mut producer_config = ProducerConfig::builder(self.config.client.clone())
            .acks(Acks::All)
            .linger_ms(5);
        if self.config.is_exactly_once() {
            let instance = match &self.config.instance_id {
                Some(id) => id.clone(),
                None => random_instance_id(),
            };
            let id = transactional_id(&self.config.application_id, &instance);
            tracing::info!(transactional_id = %id, "exactly-once processing");
            producer_config = producer_config.transactional_id(id).transaction_timeout_ms(
                u64::try_from(self.config.transaction_timeout.as_millis()).unwrap_or(u64::MAX),
            );
        }
        let producer_config = producer_config
            .build()
            .map_err(|e| StreamsError::client("configuring the producer", e))?;
        let producer = if self.config.is_exactly_once() {
            connect_transactional(&producer_config).await?
        } else {
            Producer::connect(producer_config.clone())
                .await
                .map_err(|e| StreamsError::client("connecting the producer", e))?
        };
        let reader = ChangelogReader::connect(self.config.client.clone()).await?;
        // Tables first: stream records are joined with a table loaded to its end.
        let loaders = table::TableLoaders::start(
            &self.config.client,
            self.config.isolation_level(),
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
            producer_config,
            last_recovery: None,
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

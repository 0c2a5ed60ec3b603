//! The Parquet sink: JSON records of Kafka topics to Hive-partitioned Parquet files, exactly
//! once.
//!
//! One file per idea: [`schema`] (declared or inferred columns, what fits), [`decode`] (JSON
//! bytes straight to Arrow, the fast path), [`convert`] (JSON values to Arrow, the general
//! path), [`partitioning`] (directories and file names), [`rolling`] (when files close),
//! [`writer`] (one open file), `encoder` (the thread that encodes a task's Parquet),
//! [`commit`] (the commit log and renames), [`recovery`] (restart), [`engine`] (all of it
//! without Kafka, and the [`Sink`](crate::framework::Sink) the framework runs), and this
//! module's [`ParquetSink`], which runs its tasks.

pub mod commit;
pub mod convert;
pub mod decode;
mod encoder;
pub mod engine;
pub mod partitioning;
pub mod recovery;
pub mod rolling;
pub mod schema;
pub mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use millrace_client::{ClientConfig, IsolationLevel};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

pub use engine::{EngineConfig, SinkEngine};
pub use partitioning::{Partitioner, TimePartitioning};
pub use rolling::RollingPolicy;
pub use schema::{ColumnSpec, ColumnType, ExtraFields, SchemaConfig, SinkSchema};
pub use writer::{Codec, FileFormat};

use crate::error::{ConnectorError, Result};
pub use crate::framework::StartFrom;
use crate::framework::{run_sink_task, supervise, Shutdown, SinkTaskSettings};
use crate::metrics::SinkMetrics;

/// One `[[parquet_sink]]` table of a connect configuration file.
///
/// ```toml
/// [[parquet_sink]]
/// name = "page-views-archive"
/// bootstrap = "127.0.0.1:9092"
/// topics = ["page-views"]
/// out = "/data/lake"
/// time_field = "ts"
/// partition_by = ["country"]
/// dead_letter_topic = "page-views-dead-letters"
///
/// [parquet_sink.rolling]
/// max_records = 500000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Name of this connector (logs, and the default group id `millrace-parquet-<name>`).
    pub name: String,
    /// Brokers to bootstrap from, comma-separated `HOST:PORT`.
    pub bootstrap: String,
    /// Kafka client settings for its connections, as Kafka Connect's worker takes them
    /// (`security.protocol`, `ssl.ca.location`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, ...); empty for a plaintext cluster.
    #[serde(default)]
    pub client: std::collections::BTreeMap<String, String>,
    /// Topics to read. Each topic's files go under `topic=<name>/`.
    pub topics: Vec<String>,
    /// Output root directory. Its `_millrace/` subdirectory holds the sink's commit logs:
    /// keep it with the files and give each sink its own root.
    pub out: PathBuf,
    /// Consumer group; instances with the same group share the partitions.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Members of the group this process runs (default 1), each writing its own partitions,
    /// in parallel on the runtime's threads. More than the topics' partitions leaves some idle.
    #[serde(default = "default_tasks")]
    pub tasks: usize,
    /// Static membership (`group.instance.id`): a restarted instance with the same id takes
    /// its partitions back at once instead of waiting for the group to drop its old member,
    /// which after a crash takes `session_timeout_ms`. Give every instance its own id.
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// How long the group waits for a silent member before moving its partitions (default
    /// 10 s: shorter than Kafka's 45 s because a crashed sink stalls its partitions that long).
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Where partitions without a checkpoint start.
    #[serde(default)]
    pub start: StartFrom,
    /// JSON field holding the event time (ms since the epoch or RFC 3339). Without it, the
    /// Kafka record timestamp is the event time.
    #[serde(default)]
    pub time_field: Option<String>,
    /// `hour` (default), `day` or `none`.
    #[serde(default)]
    pub time_partitioning: TimePartitioning,
    /// Record fields to partition directories by, after the time directories.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// `zstd` (default), `snappy` or `none`.
    #[serde(default)]
    pub codec: Codec,
    /// Most rows per row group (default 122,880, about what DuckDB and Spark use).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// Add `_kafka_partition`, `_kafka_offset` and `_kafka_timestamp` columns.
    #[serde(default)]
    pub kafka_metadata: bool,
    /// Topic for records that cannot be written. Without one they are logged and skipped
    /// (and counted).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// When files close.
    #[serde(default)]
    pub rolling: RollingPolicy,
    /// Declared columns, or inference settings.
    #[serde(default)]
    pub schema: SchemaConfig,
}

fn default_tasks() -> usize {
    1
}

fn default_session_timeout_ms() -> u64 {
    10_000
}

fn default_row_group_rows() -> usize {
    122_880
}

impl ParquetSinkConfig {
    /// The consumer group id.
    pub fn group(&self) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("millrace-parquet-{}", self.name))
    }

    /// The engine settings this configuration implies.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            out: self.out.clone(),
            partitioner: Partitioner::new(self.time_partitioning, self.partition_by.clone()),
            rolling: self.rolling,
            format: FileFormat {
                codec: self.codec,
                row_group_rows: self.row_group_rows,
            },
            schema: self.schema.clone(),
            time_field: self.time_field.clone(),
            kafka_metadata: self.kafka_metadata,
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(ConnectorError::Config(format!("{}: {what}", self.name)));
        if self.topics.is_empty() {
            return bad("no topics".into());
        }
        if self.tasks == 0 {
            return bad("tasks must be at least 1".into());
        }
        if self.rolling.max_records == 0 || self.rolling.max_bytes == 0 {
            return bad("rolling.max_records and rolling.max_bytes must be positive".into());
        }
        if self.rolling.event_time_interval_ms <= 0 {
            return bad("rolling.event_time_interval_ms must be positive".into());
        }
        if let Some(columns) = &self.schema.columns {
            for (i, c) in columns.iter().enumerate() {
                if columns[..i].iter().any(|o| o.name == c.name) {
                    return bad(format!("column `{}` declared twice", c.name));
                }
            }
        }
        Ok(())
    }

    /// Connection settings for the consumer and the dead-letter producer.
    pub fn client_config(&self) -> Result<ClientConfig> {
        crate::config::client_config(
            &self.bootstrap,
            format!("millrace-parquet-{}", self.name),
            &self.client,
        )
    }
}

/// A running Parquet sink: `tasks` members of its consumer group, each a [`SinkEngine`] run
/// by the [framework](crate::framework).
pub struct ParquetSink {
    config: ParquetSinkConfig,
    metrics: Arc<SinkMetrics>,
}

impl ParquetSink {
    /// A sink for `config` (validated; nothing connects until [`Self::run`]).
    pub fn new(config: ParquetSinkConfig) -> Result<Self> {
        config.validate()?;
        Ok(ParquetSink {
            config,
            metrics: Arc::new(SinkMetrics::default()),
        })
    }

    /// The sink's counters (summed over its tasks).
    pub fn metrics(&self) -> Arc<SinkMetrics> {
        self.metrics.clone()
    }

    /// Runs until `shutdown` completes, then closes and commits open files and leaves the
    /// group. If a task fails, the others are stopped the same way and the error returned.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let (trigger, stop) = Shutdown::new();
        let mut tasks = JoinSet::new();
        for index in 0..self.config.tasks.max(1) {
            let settings = self.task_settings(index)?;
            let engine = SinkEngine::new(self.config.engine_config(), self.metrics.clone())?;
            let metrics = self.metrics.clone();
            let stop = stop.clone();
            tasks.spawn(async move { run_sink_task(engine, &settings, metrics, stop).await });
        }
        let result = supervise(tasks, trigger, shutdown).await;
        if result.is_err() {
            self.metrics.add_error();
        }
        result
    }

    /// The Kafka settings of task `index`.
    fn task_settings(&self, index: usize) -> Result<SinkTaskSettings> {
        Ok(SinkTaskSettings {
            name: self.config.name.clone(),
            client: self.config.client_config()?,
            group: self.config.group(),
            // Static ids must differ per member; the first task keeps the configured one so
            // a one-task sink's id is what the configuration says.
            group_instance_id: self.config.group_instance_id.as_ref().map(|id| {
                if index == 0 {
                    id.clone()
                } else {
                    format!("{id}-{index}")
                }
            }),
            session_timeout: Duration::from_millis(self.config.session_timeout_ms),
            topics: self.config.topics.clone(),
            start: self.config.start,
            dead_letter_topic: self.config.dead_letter_topic.clone(),
            // An export holds what the topic's writers committed: never an aborted
            // transaction's records, nor an open one's (they may still abort).
            isolation_level: IsolationLevel::ReadCommitted,
        })
    }
}

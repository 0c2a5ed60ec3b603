//! The file source: JSON lines or CSV (rows to JSON objects by the header) from a tailed file
//! or a directory of files, to a topic.
//!
//! It reads a batch of complete records ([`reader`]), produces it with acks=all, and only then
//! stores the new positions in its [`PositionFile`], so a restart resumes after the last
//! acknowledged batch and does not send it again. The window that remains is a crash between
//! the acknowledgement and the position write: that one batch is sent again (at-least-once,
//! as in Kafka Connect's file sources). A line that is not JSON (or a row that does not match
//! the header) goes to the dead-letter topic with the reason and its `file:byte` origin.
//!
//! ```toml
//! [[file_source]]
//! name = "access-log"
//! bootstrap = "127.0.0.1:9092"
//! topic = "page-views"
//! path = "/var/log/app/events.jsonl"   # a file to tail, or a directory
//! format = "json_lines"                # or "csv"
//! ```

pub mod csv;
pub mod reader;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use millrace_client::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::error::{ConnectorError, Result};
use crate::framework::{run_source, PositionFile, Shutdown, Source, SourceContext};
use crate::metrics::SourceMetrics;
use reader::{FileReader, Positions, ReaderSettings};

/// What the files hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// One JSON value per line (default); blank lines are skipped.
    #[default]
    JsonLines,
    /// RFC 4180 CSV with a header row; each row becomes a JSON object.
    Csv,
}

/// One `[[file_source]]` table of a connect configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Name of this connector (logs, dead-letter headers).
    pub name: String,
    /// Brokers to bootstrap from, comma-separated `HOST:PORT`.
    pub bootstrap: String,
    /// Kafka client settings for its connections, as Kafka Connect's worker takes them
    /// (`security.protocol`, `ssl.ca.location`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, ...); empty for a plaintext cluster.
    #[serde(default)]
    pub client: std::collections::BTreeMap<String, String>,
    /// Topic to produce to.
    pub topic: String,
    /// A file to tail (it may not exist yet), or a directory whose files are read in name
    /// order (dot files skipped) and watched for new ones and for appends.
    pub path: PathBuf,
    /// `json_lines` (default) or `csv`.
    #[serde(default)]
    pub format: InputFormat,
    /// Directory mode: only files whose names end with this (e.g. `.jsonl`).
    #[serde(default)]
    pub suffix: Option<String>,
    /// JSON field whose value becomes the record key (strings as they are, other values as
    /// JSON text); no key without it.
    #[serde(default)]
    pub key_field: Option<String>,
    /// CSV: numbers, `true`/`false` and empty fields (null) are typed (default true);
    /// integers with leading zeros stay text. `false`: every field is a string.
    #[serde(default = "default_true")]
    pub csv_infer_types: bool,
    /// Where the position is kept. Default: `<path>.millrace-position` next to a tailed
    /// file, `<dir>/.millrace-position` in a directory.
    #[serde(default)]
    pub position_file: Option<PathBuf>,
    /// How often to look for new data once everything is read (default 500 ms).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Most records per produced batch, and so per position write (default 10,000).
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// Topic for lines or rows that cannot be records; logged and skipped without one.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// `transactional.id`: write each chunk (up to `batch_records` lines) in one transaction,
    /// so read_committed consumers see all of its lines or none (default: plain idempotent
    /// writes). Give each file source its own.
    #[serde(default)]
    pub transactional_id: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_poll_interval_ms() -> u64 {
    500
}

fn default_batch_records() -> usize {
    10_000
}

impl FileSourceConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(ConnectorError::Config(format!("{}: {what}", self.name)));
        if self.topic.is_empty() {
            return bad("topic is empty");
        }
        if self.batch_records == 0 {
            return bad("batch_records must be positive");
        }
        if self.poll_interval_ms == 0 {
            return bad("poll_interval_ms must be positive");
        }
        Ok(())
    }

    /// Whether `path` names a directory (a file that does not exist yet is tailed).
    fn is_directory(&self) -> bool {
        self.path.is_dir()
    }

    /// The position file this source uses.
    pub fn position_path(&self) -> PathBuf {
        if let Some(path) = &self.position_file {
            return path.clone();
        }
        if self.is_directory() {
            self.path.join(".millrace-position")
        } else {
            let mut name = self.path.as_os_str().to_owned();
            name.push(".millrace-position");
            PathBuf::from(name)
        }
    }

    /// Connection settings for the producer.
    pub fn client_config(&self) -> Result<ClientConfig> {
        crate::config::client_config(
            &self.bootstrap,
            format!("millrace-file-source-{}", self.name),
            &self.client,
        )
    }
}

/// A file source. See the [module documentation](self).
pub struct FileSource {
    config: FileSourceConfig,
    metrics: Arc<SourceMetrics>,
}

impl FileSource {
    /// A source for `config` (validated; nothing is read until it runs).
    pub fn new(config: FileSourceConfig) -> Result<Self> {
        config.validate()?;
        Ok(FileSource {
            config,
            metrics: Arc::new(SourceMetrics::default()),
        })
    }

    /// The source's counters.
    pub fn metrics(&self) -> Arc<SourceMetrics> {
        self.metrics.clone()
    }

    /// Connects and runs until `shutdown` is triggered.
    pub async fn run_until(self, shutdown: Shutdown) -> Result<()> {
        let client = self.config.client_config()?;
        let name = self.config.name.clone();
        let dead_letter_topic = self.config.dead_letter_topic.clone();
        let metrics = self.metrics.clone();
        let transactional_id = self.config.transactional_id.clone();
        run_source(
            self,
            name,
            client,
            dead_letter_topic,
            metrics,
            transactional_id,
            shutdown,
        )
        .await
    }
}

impl Source for FileSource {
    async fn run(self, ctx: SourceContext, mut shutdown: Shutdown) -> Result<()> {
        let config = self.config;
        let position_file = PositionFile::new(config.position_path());
        let positions: Positions = position_file.load()?.unwrap_or_default();
        let mut reader = FileReader::new(
            ReaderSettings {
                name: config.name.clone(),
                path: config.path.clone(),
                directory: config.is_directory(),
                suffix: config.suffix.clone(),
                format: config.format,
                csv_infer_types: config.csv_infer_types,
                key_field: config.key_field.clone(),
                topic: config.topic.clone(),
                batch_records: config.batch_records,
            },
            positions,
        );
        tracing::info!(
            name = %config.name,
            path = %config.path.display(),
            topic = %config.topic,
            position_file = %position_file.path().display(),
            "file source started"
        );
        let poll = Duration::from_millis(config.poll_interval_ms);
        while !shutdown.is_triggered() {
            let batch = reader.next_batch()?;
            if batch.is_empty() {
                if &batch.positions != reader.positions() {
                    // Only bookkeeping changed (a file gone or replaced): keep it too.
                    position_file.store(&batch.positions)?;
                    reader.acknowledge(batch.positions);
                }
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep(poll) => {}
                }
                continue;
            }
            ctx.reject(batch.rejected).await?;
            ctx.send(batch.records).await?;
            // Only now: every record of the batch is acknowledged by the cluster.
            position_file.store(&batch.positions)?;
            reader.acknowledge(batch.positions);
        }
        tracing::info!(name = %config.name, "file source stopped");
        Ok(())
    }
}

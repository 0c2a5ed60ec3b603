//! The connect configuration file: which connectors `millrace connect` runs. One array of
//! tables per kind of connector; any mix, at least one.
//!
//! ```toml
//! [[parquet_sink]]                 # topic -> Parquet files
//! name = "page-views-archive"
//! bootstrap = "127.0.0.1:9092"
//! topics = ["page-views"]
//! out = "/data/lake"
//!
//! [[file_source]]                  # JSON lines or CSV files -> topic
//! name = "imports"
//! bootstrap = "127.0.0.1:9092"
//! topic = "page-views"
//! path = "/data/incoming"
//!
//! [[http_source]]                  # POST /topics/{topic} -> topic
//! name = "ingest"
//! bootstrap = "127.0.0.1:9092"
//! listen = "127.0.0.1:8088"
//! ```
//!
//! A connector of a secured cluster takes Kafka's client settings in a `client` table:
//!
//! ```toml
//! [parquet_sink.client]
//! "security.protocol" = "SASL_SSL"
//! "ssl.ca.location" = "ca.pem"
//! "sasl.mechanism" = "SCRAM-SHA-512"
//! "sasl.username" = "archiver"
//! "sasl.password" = "..."
//! ```
//!
//! Every table is a plain serde struct whose fields are documented where they are declared
//! ([`ParquetSinkConfig`], [`FileSourceConfig`], [`HttpSourceConfig`]); unknown keys are
//! errors, so a typo does not silently fall back to a default.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{ConnectorError, IoContext, Result};
use crate::file_source::{FileSource, FileSourceConfig};
use crate::framework::{supervise, Shutdown};
use crate::http_source::{HttpSource, HttpSourceConfig};
use crate::metrics::{SinkMetrics, SourceMetrics};
use crate::parquet_sink::{ParquetSink, ParquetSinkConfig};
use serde::{Deserialize, Serialize};

/// A whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    /// Parquet sinks, one `[[parquet_sink]]` table each.
    #[serde(default)]
    pub parquet_sink: Vec<ParquetSinkConfig>,
    /// File sources, one `[[file_source]]` table each.
    #[serde(default)]
    pub file_source: Vec<FileSourceConfig>,
    /// HTTP ingest endpoints, one `[[http_source]]` table each.
    #[serde(default)]
    pub http_source: Vec<HttpSourceConfig>,
}

impl ConnectConfig {
    /// Parses TOML text and validates every connector.
    pub fn parse(text: &str) -> Result<Self> {
        let config: ConnectConfig =
            toml::from_str(text).map_err(|e| ConnectorError::Config(e.to_string()))?;
        for sink in &config.parquet_sink {
            sink.validate()?;
        }
        for source in &config.file_source {
            source.validate()?;
        }
        for source in &config.http_source {
            source.validate()?;
        }
        let names = config.names();
        if names.is_empty() {
            return Err(ConnectorError::Config("no connectors declared".into()));
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(ConnectorError::Config(format!(
                    "two connectors are named `{name}`"
                )));
            }
        }
        Ok(config)
    }

    /// The names of all connectors, in file order per kind.
    pub fn names(&self) -> Vec<&str> {
        self.parquet_sink
            .iter()
            .map(|c| c.name.as_str())
            .chain(self.file_source.iter().map(|c| c.name.as_str()))
            .chain(self.http_source.iter().map(|c| c.name.as_str()))
            .collect()
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).io("reading", path)?;
        Self::parse(&text)
    }
}

/// Runs every connector of `config` until `shutdown` completes (then each closes and
/// commits) or one of them fails (then the others are stopped the same way and the first
/// error is returned).
pub async fn run_connectors(
    config: ConnectConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    // Endpoints bind first: a taken port fails the run before anything else starts.
    let mut endpoints = Vec::new();
    for source_config in config.http_source {
        let source = HttpSource::bind(source_config).await?;
        endpoints.push(source);
    }
    let (trigger, stop) = Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut watched = Vec::new();
    for sink_config in config.parquet_sink {
        let name = sink_config.name.clone();
        let sink = ParquetSink::new(sink_config)?;
        watched.push((name, Watched::Sink(sink.metrics())));
        let mut stop = stop.clone();
        tasks.spawn(async move { sink.run(async move { stop.wait().await }).await });
    }
    for source_config in config.file_source {
        let name = source_config.name.clone();
        let source = FileSource::new(source_config)?;
        watched.push((name, Watched::Source(source.metrics())));
        tasks.spawn(source.run_until(stop.clone()));
    }
    for source in endpoints {
        let name = source.name().to_string();
        watched.push((name, Watched::Source(source.metrics())));
        tasks.spawn(source.run_until(stop.clone()));
    }
    tasks.spawn(report_metrics(watched, stop));
    supervise(tasks, trigger, shutdown).await
}

/// How often `millrace connect` logs every connector's counters.
const METRICS_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The counters of one connector.
enum Watched {
    Sink(Arc<SinkMetrics>),
    Source(Arc<SourceMetrics>),
}

/// Logs every connector's counters every [`METRICS_LOG_INTERVAL`] and once more at the stop.
async fn report_metrics(watched: Vec<(String, Watched)>, mut stop: Shutdown) -> Result<()> {
    let log = |watched: &[(String, Watched)]| {
        for (name, metrics) in watched {
            match metrics {
                Watched::Sink(m) => {
                    let s = m.snapshot();
                    tracing::info!(
                        connector = %name,
                        records_in = s.records_in,
                        records_written = s.records_written,
                        bytes_written = s.bytes_written,
                        files = s.files_committed,
                        dead_lettered = s.dead_lettered,
                        lag = s.lag,
                        errors = s.errors,
                        "sink metrics"
                    );
                }
                Watched::Source(m) => {
                    let s = m.snapshot();
                    tracing::info!(
                        connector = %name,
                        records = s.records,
                        bytes = s.bytes,
                        batches = s.batches,
                        rejected = s.rejected,
                        errors = s.errors,
                        "source metrics"
                    );
                }
            }
        }
    };
    loop {
        tokio::select! {
            _ = stop.wait() => break,
            _ = tokio::time::sleep(METRICS_LOG_INTERVAL) => log(&watched),
        }
    }
    log(&watched);
    Ok(())
}

/// The client settings of a connector: its bootstrap list, client id, and Kafka client
/// settings (TLS, SASL), each checked by the client (an unknown one is an error naming it).
pub fn client_config(
    bootstrap: &str,
    client_id: String,
    settings: &BTreeMap<String, String>,
) -> crate::error::Result<millrace_client::ClientConfig> {
    let mut builder = millrace_client::ClientConfig::builder(bootstrap.split(',').map(str::trim))
        .client_id(client_id);
    for (name, value) in settings {
        builder = builder.set(name, value)?;
    }
    Ok(builder.build()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::parquet_sink::{Codec, ColumnType, TimePartitioning};

    #[test]
    fn a_full_sink_table_parses() {
        let config = ConnectConfig::parse(
            r#"
            [[parquet_sink]]
            name = "views"
            bootstrap = "127.0.0.1:9092"
            topics = ["page-views"]
            out = "/tmp/lake"
            time_field = "ts"
            time_partitioning = "day"
            partition_by = ["country"]
            codec = "snappy"
            row_group_rows = 1000
            dead_letter_topic = "views-dlq"

            [parquet_sink.rolling]
            max_records = 10

            [parquet_sink.schema]
            columns = [
                { name = "user", type = "string", nullable = false },
                { name = "ts", type = "timestamp_ms" },
            ]
            "#,
        )
        .unwrap();
        let sink = &config.parquet_sink[0];
        assert_eq!(sink.codec, Codec::Snappy);
        assert_eq!(sink.time_partitioning, TimePartitioning::Day);
        assert_eq!(sink.rolling.max_records, 10);
        assert_eq!(sink.rolling.max_open_ms, 600_000);
        let columns = sink.schema.columns.as_ref().unwrap();
        assert_eq!(columns[1].kind, ColumnType::TimestampMs);
        assert!(columns[1].nullable);
        assert_eq!(sink.group(), "millrace-parquet-views");
    }

    #[test]
    fn sources_and_sinks_parse_together_and_names_are_unique_across_kinds() {
        let text = r#"
            [[file_source]]
            name = "files"
            bootstrap = "b:1"
            topic = "t"
            path = "/data/in"
            format = "csv"

            [[http_source]]
            name = "ingest"
            bootstrap = "b:1"

            [[parquet_sink]]
            name = "lake"
            bootstrap = "b:1"
            topics = ["t"]
            out = "/lake"
            tasks = 3
            "#;
        let config = ConnectConfig::parse(text).unwrap();
        assert_eq!(config.names(), ["lake", "files", "ingest"]);
        assert_eq!(
            config.file_source[0].format,
            crate::file_source::InputFormat::Csv
        );
        assert!(config.file_source[0].csv_infer_types);
        assert_eq!(config.http_source[0].listen, "127.0.0.1:8088");
        assert_eq!(config.http_source[0].max_body_bytes, 1 << 20);
        assert_eq!(config.parquet_sink[0].tasks, 3);

        let clash = text.replace("name = \"ingest\"", "name = \"lake\"");
        let err = ConnectConfig::parse(&clash).unwrap_err();
        assert!(
            err.to_string().contains("two connectors are named `lake`"),
            "{err}"
        );
        assert!(ConnectConfig::parse("")
            .unwrap_err()
            .to_string()
            .contains("no connectors"));
    }

    #[test]
    fn a_misspelt_key_is_an_error() {
        let err = ConnectConfig::parse(
            r#"
            [[parquet_sink]]
            name = "v"
            bootstrap = "b:1"
            topics = ["t"]
            out = "/tmp"
            codex = "zstd"
            "#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("codex"), "{err}");
    }
}

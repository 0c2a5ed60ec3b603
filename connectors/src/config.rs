//! The connect configuration file: which connectors `millrace connect` runs.
//!
//! ```toml
//! [[parquet_sink]]
//! name = "page-views-archive"
//! bootstrap = "127.0.0.1:9092"
//! topics = ["page-views"]
//! out = "/data/lake"
//! ```
//!
//! Every table is a plain serde struct whose fields are documented where they are declared
//! ([`ParquetSinkConfig`]); unknown keys are errors, so a typo does not silently fall back
//! to a default.

use std::future::Future;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{ConnectorError, IoContext, Result};
use crate::parquet_sink::{ParquetSink, ParquetSinkConfig};

/// A whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    /// Parquet sinks, one `[[parquet_sink]]` table each.
    #[serde(default)]
    pub parquet_sink: Vec<ParquetSinkConfig>,
}

impl ConnectConfig {
    /// Parses TOML text and validates every connector.
    pub fn parse(text: &str) -> Result<Self> {
        let config: ConnectConfig =
            toml::from_str(text).map_err(|e| ConnectorError::Config(e.to_string()))?;
        if config.parquet_sink.is_empty() {
            return Err(ConnectorError::Config("no connectors declared".into()));
        }
        for (i, sink) in config.parquet_sink.iter().enumerate() {
            sink.validate()?;
            if config.parquet_sink[..i].iter().any(|s| s.name == sink.name) {
                return Err(ConnectorError::Config(format!(
                    "two connectors are named `{}`",
                    sink.name
                )));
            }
        }
        Ok(config)
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for sink_config in config.parquet_sink {
        let sink = ParquetSink::new(sink_config)?;
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            sink.run(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
            .await
        });
    }
    tokio::pin!(shutdown);
    let mut first_error = None;
    loop {
        tokio::select! {
            _ = &mut shutdown, if !*stop_tx.borrow() => {
                let _ = stop_tx.send(true);
            }
            joined = tasks.join_next() => match joined {
                None => break,
                Some(result) => {
                    let result = result.unwrap_or_else(|e| {
                        Err(ConnectorError::Config(format!("connector task failed: {e}")))
                    });
                    if let Err(error) = result {
                        tracing::error!(%error, "connector failed; stopping the others");
                        first_error.get_or_insert(error);
                        let _ = stop_tx.send(true);
                    }
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
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

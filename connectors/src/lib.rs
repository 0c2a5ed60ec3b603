//! Sources and sinks between Millrace (or any Kafka) topics and the outside world: a file
//! source, an HTTP ingest endpoint, and first of all the exactly-once Parquet sink, which
//! lands JSON topics as Hive-partitioned Parquet files that pyarrow, DuckDB, DataFusion, Spark
//! or Trino read as they are.
//!
//! ```no_run
//! # async fn run() -> millrace_connectors::Result<()> {
//! use millrace_connectors::parquet_sink::{ParquetSink, ParquetSinkConfig};
//! use millrace_connectors::ConnectConfig;
//!
//! let config = ConnectConfig::parse(r#"
//!     [[parquet_sink]]
//!     name = "page-views-archive"
//!     bootstrap = "127.0.0.1:9092"
//!     topics = ["page-views"]
//!     out = "/data/lake"
//!     time_field = "ts"
//! "#)?;
//! let sink = ParquetSink::new(config.parquet_sink[0].clone())?;
//! let metrics = sink.metrics();
//! sink.run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! println!("{:?}", metrics.snapshot());
//! # Ok(()) }
//! ```
//!
//! Where to start reading: [`framework`] (the `Source` and `Sink` traits, sink tasks as one
//! consumer group, position files); [`parquet_sink`] explains the layout and links one module
//! per idea; [`parquet_sink::engine`] holds the exactly-once argument; [`export`] is the
//! one-shot ETL export on the same engine; [`file_source`] and [`http_source`] bring data in;
//! [`config`] is the `millrace connect` file format.

pub mod config;
mod durable;
pub mod error;
pub mod export;
pub mod file_source;
pub mod framework;
pub mod http_source;
pub mod metrics;
pub mod parquet_sink;
#[cfg(feature = "sql")]
pub mod sql;

pub use config::{run_connectors, ConnectConfig};
pub use error::{ConnectorError, Result};
pub use metrics::{MetricsSnapshot, SinkMetrics, SourceMetrics, SourceMetricsSnapshot};

//! The crate's error type.

use std::path::{Path, PathBuf};

/// Everything that can stop a connector.
///
/// Bad *records* are not errors: they go to the dead-letter topic and the connector keeps
/// running. These are the failures that end a run (the disk, the cluster, the configuration).
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The Kafka client failed (connection, group, commit, produce).
    #[error("kafka: {0}")]
    Client(#[from] millrace_client::ClientError),
    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "renaming".
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a Parquet file failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Building an Arrow batch failed where no single record was to blame.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The commit log of a partition cannot be read or does not match the output directory.
    #[error("commit log {}: {reason}", path.display())]
    CommitLog {
        /// The log file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A source's position file cannot be read (corrupt or from another format).
    #[error("position file {}: {reason}", path.display())]
    Position {
        /// The position file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A source's input cannot be read as a whole (not a single record of it).
    #[error("source {name}: {reason}")]
    Source {
        /// The connector.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A connector task panicked or was cancelled.
    #[error("connector task: {0}")]
    Task(String),
    /// A SQL query failed to parse, plan or run (DataFusion's innermost message: the outer
    /// layers only repeat it).
    #[cfg(feature = "sql")]
    #[error("{0}")]
    Sql(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, ConnectorError>;

/// Attaches the action and the path to an I/O error.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`ConnectorError::Io`].
    fn io(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| ConnectorError::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(feature = "sql")]
impl From<datafusion::error::DataFusionError> for ConnectorError {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        ConnectorError::Sql(error.find_root().to_string())
    }
}

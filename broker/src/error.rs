//! Errors that stop the broker from starting or running.

use std::path::PathBuf;

/// A failure of the broker as a whole (not of one request: those become Kafka error codes).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Another broker process holds the data directory.
    #[error(
        "data dir {0} is locked by another running broker (remove it or pick another --data-dir)"
    )]
    DataDirLocked(PathBuf),
    /// A file system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The metadata log failed.
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataLogError),
    /// A partition log could not be opened.
    #[error("storage: {0}")]
    Storage(String),
}

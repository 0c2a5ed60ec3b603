//! The crate's error type.

/// What can go wrong in the stream engine. Processing itself is infallible; errors come from
/// encoding state for the changelog and decoding it back on restore.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// State could not be encoded for the store or changelog.
    #[error("cannot encode state: {0}")]
    Encode(String),
    /// A stored or restored entry could not be decoded (corrupt changelog, or a type change
    /// between releases of the job).
    #[error("cannot decode state: {0}")]
    Decode(String),
    /// A state store's local storage (an on-disk store's file) failed.
    #[error("state store: {0}")]
    Store(String),
    /// The checkpoint handed to `restore` names a store this pipeline does not have.
    #[error("unknown state store {0:?}")]
    UnknownStore(String),
    /// Talking to the cluster failed (consuming, producing, committing, admin calls).
    #[error("{context}: {source}")]
    Client {
        /// What the runtime was doing.
        context: String,
        /// The client's error.
        source: millrace_client::ClientError,
    },
    /// The job is set up wrongly (a missing source topic, an empty application id).
    #[error("invalid job: {0}")]
    Config(String),
    /// Converting live state to Arrow or registering it with DataFusion failed.
    #[error("query over live state failed: {0}")]
    Query(String),
    /// A record could not be decoded or encoded and the job is set to fail on bad records.
    #[error("bad record in {topic}-{partition} at offset {offset}: {reason}")]
    BadRecord {
        /// Source topic.
        topic: String,
        /// Source partition.
        partition: i32,
        /// Offset of the record.
        offset: i64,
        /// Why it could not be processed.
        reason: String,
    },
}

impl StreamsError {
    /// Wraps a client error with what the runtime was doing.
    pub(crate) fn client(context: impl Into<String>, source: millrace_client::ClientError) -> Self {
        StreamsError::Client {
            context: context.into(),
            source,
        }
    }
}

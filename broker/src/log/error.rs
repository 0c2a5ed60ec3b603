//! The one error type of the log; `crate::error` maps it to the Kafka error a handler sends
//! back.

/// Everything that can go wrong in partition storage.
///
/// Each variant converts into the Kafka error a produce, fetch or list-offsets handler puts in
/// its response (`ResponseError::from(&error)`), so handlers never translate errors themselves.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The bytes are not a well-formed record batch: bad CRC, bad length, truncated batch.
    #[error("corrupt record batch: {0}")]
    CorruptRecord(String),
    /// The batch is well-formed but breaks a rule: magic != 2, record count mismatch.
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// A batch is larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge {
        /// Size of the offending batch in bytes, header included.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The requested offset lies outside `[log_start, log_end]`.
    #[error("offset {requested} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: i64,
        /// The first offset still in the log.
        log_start: i64,
        /// The next offset to be written.
        log_end: i64,
    },
    /// The file system failed us.
    #[error("log I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The log was closed or deleted.
    #[error("log is closed")]
    Closed,
    /// An idempotent producer's batch carries an epoch older than the one the log has seen for
    /// its producer id: a newer instance of the producer has taken over (fenced).
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        /// The producer id of the batch.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The epoch the log knows for the producer id.
        current: i16,
    },
    /// A follower's append does not continue its log: the first replicated batch starts below
    /// the log end offset (it overlaps what the log holds). The replica fetcher asked for the
    /// wrong offset, or its log changed under it; nothing was written.
    #[error("replicated batches start at offset {got}, below the log end offset {expected}")]
    OffsetMismatch {
        /// The log end offset: where the next batch had to start at the earliest.
        expected: i64,
        /// The base offset of the first batch received.
        got: i64,
    },
    /// An append as leader with a leader epoch older than the newest one the log has recorded:
    /// this replica is no longer the leader of that epoch.
    #[error("leader epoch {epoch} is older than the log's latest leader epoch {latest}")]
    FencedLeaderEpoch {
        /// The epoch the append was made with.
        epoch: i32,
        /// The newest epoch in the leader epoch cache.
        latest: i32,
    },
    /// An idempotent producer's batch does not continue its sequence: batches were lost or
    /// reordered, or a new epoch did not start at 0.
    #[error(
        "out of order sequence {sequence} from producer {producer_id} epoch {epoch}: {detail}"
    )]
    OutOfOrderSequence {
        /// The producer id of the batch.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The batch's base sequence.
        sequence: i32,
        /// What was expected instead.
        detail: String,
    },
    /// A batch breaks the rules of transactions: a producer with an open transaction wrote
    /// outside it, a client sent a control batch, or a marker came for an older epoch.
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
}

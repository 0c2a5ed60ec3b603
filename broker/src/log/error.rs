//! The one error type of the log, carrying the Kafka error code a handler sends back.

/// Everything that can go wrong in partition storage.
///
/// Each variant maps to the Kafka error code a produce, fetch or list-offsets handler puts in
/// its response (see [`LogError::error_code`]), so handlers never translate errors themselves.
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
}

impl LogError {
    /// The Kafka protocol error code for this error.
    pub fn error_code(&self) -> i16 {
        match self {
            LogError::CorruptRecord(_) => 2,
            LogError::InvalidRecord(_) => 87,
            LogError::RecordTooLarge { .. } => 10,
            LogError::OffsetOutOfRange { .. } => 1,
            LogError::Io(_) => 56,
            LogError::Closed => 3,
            LogError::InvalidProducerEpoch { .. } => 47,
            LogError::OutOfOrderSequence { .. } => 45,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_match_kafka() {
        assert_eq!(LogError::CorruptRecord(String::new()).error_code(), 2);
        assert_eq!(LogError::InvalidRecord(String::new()).error_code(), 87);
        assert_eq!(
            LogError::RecordTooLarge { size: 2, max: 1 }.error_code(),
            10
        );
        let oor = LogError::OffsetOutOfRange {
            requested: 5,
            log_start: 0,
            log_end: 1,
        };
        assert_eq!(oor.error_code(), 1);
        assert_eq!(LogError::Io(std::io::Error::other("x")).error_code(), 56);
        assert_eq!(LogError::Closed.error_code(), 3);
        let fenced = LogError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 0,
            current: 1,
        };
        assert_eq!(fenced.error_code(), 47);
        let gap = LogError::OutOfOrderSequence {
            producer_id: 1,
            epoch: 0,
            sequence: 7,
            detail: String::new(),
        };
        assert_eq!(gap.error_code(), 45);
    }
}

//! The broker's error vocabulary: [`BrokerError`] for failures of the broker as a whole, and
//! Kafka's [`ResponseError`] for the error code a request is answered with.
//!
//! Every error a request can meet (of the log, the controller, the group coordinator) converts
//! into a [`ResponseError`] here, so the mapping from our errors to Kafka's codes is written
//! once, in Kafka's own names, and no handler carries a numeric code.

use std::path::PathBuf;

pub use kafka_protocol::ResponseError;

use crate::group::GroupError;
use crate::log::LogError;
use crate::metadata::TopicError;

/// Kafka's `NONE`: the error code of a success, which [`ResponseError`] has no variant for.
pub const NONE: i16 = 0;

/// The error code a response carries: [`NONE`] without an error, else the error's Kafka code.
pub fn error_code<E: Into<ResponseError>>(error: Option<E>) -> i16 {
    error.map_or(NONE, |error| error.into().code())
}

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
    /// The data dir belongs to another cluster or node
    /// ([`MetaPropertiesError::Mismatch`](crate::meta_properties::MetaPropertiesError::Mismatch),
    /// `NodeMismatch`), or its `meta.properties` is unreadable or malformed.
    #[error(transparent)]
    MetaProperties(#[from] crate::meta_properties::MetaPropertiesError),
    /// A partition log could not be opened.
    #[error("storage: {0}")]
    Storage(String),
}

impl From<&LogError> for ResponseError {
    fn from(error: &LogError) -> Self {
        match error {
            LogError::CorruptRecord(_) => ResponseError::CorruptMessage,
            LogError::InvalidRecord(_) => ResponseError::InvalidRecord,
            LogError::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
            LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            LogError::Io(_) => ResponseError::KafkaStorageError,
            // A closed log is one being deleted: to the client the partition is gone.
            LogError::Closed => ResponseError::UnknownTopicOrPartition,
            LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
            LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            // Only the replica fetcher meets it (Kafka's UnexpectedAppendOffsetException, which
            // has no error code of its own either).
            LogError::OffsetMismatch { .. } => ResponseError::UnknownServerError,
            LogError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            LogError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
        }
    }
}

impl From<&TopicError> for ResponseError {
    fn from(error: &TopicError) -> Self {
        match error {
            TopicError::InvalidTopic(_) => ResponseError::InvalidTopicException,
            TopicError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
            TopicError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            TopicError::UnknownTopicId(_) => ResponseError::UnknownTopicId,
            TopicError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            TopicError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            TopicError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            TopicError::InvalidConfig(_) => ResponseError::InvalidConfig,
            TopicError::DeletionDisabled => ResponseError::TopicDeletionDisabled,
            TopicError::Storage(_) => ResponseError::KafkaStorageError,
            TopicError::NotController(_) => ResponseError::NotController,
        }
    }
}

impl From<GroupError> for ResponseError {
    fn from(error: GroupError) -> Self {
        match error {
            GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
            GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
            GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
            GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
            GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
            GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
            GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
            GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
            GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
            GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
            GroupError::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
            GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
            GroupError::NotCoordinator => ResponseError::NotCoordinator,
            GroupError::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
        }
    }
}

impl From<&GroupError> for ResponseError {
    fn from(error: &GroupError) -> Self {
        ResponseError::from(*error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts each error becomes the code the protocol crate gives the expected Kafka error.
    fn assert_codes<E>(cases: impl IntoIterator<Item = (E, ResponseError)>)
    where
        ResponseError: From<E>,
        E: std::fmt::Debug + Clone,
    {
        for (error, expected) in cases {
            let code = ResponseError::from(error.clone()).code();
            assert_eq!(code, expected.code(), "{error:?} should be {expected}");
        }
    }

    #[test]
    fn none_is_the_code_the_protocol_reads_as_success() {
        assert_eq!(ResponseError::try_from_code(NONE), None);
        assert_eq!(error_code(None::<GroupError>), NONE);
    }

    #[test]
    fn error_code_of_an_error_is_its_kafka_code() {
        assert_eq!(
            error_code(Some(GroupError::UnknownMemberId)),
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn log_errors_become_kafka_errors() {
        let out_of_range = LogError::OffsetOutOfRange {
            requested: 5,
            log_start: 0,
            log_end: 1,
        };
        let fenced = LogError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 0,
            current: 1,
        };
        let gap = LogError::OutOfOrderSequence {
            producer_id: 1,
            epoch: 0,
            sequence: 7,
            detail: String::new(),
        };
        let io = LogError::Io(std::io::Error::other("x"));
        let corrupt = LogError::CorruptRecord(String::new());
        let invalid = LogError::InvalidRecord(String::new());
        let too_large = LogError::RecordTooLarge { size: 2, max: 1 };
        assert_codes([
            (&corrupt, ResponseError::CorruptMessage),
            (&invalid, ResponseError::InvalidRecord),
            (&too_large, ResponseError::MessageTooLarge),
            (&out_of_range, ResponseError::OffsetOutOfRange),
            (&io, ResponseError::KafkaStorageError),
            (&LogError::Closed, ResponseError::UnknownTopicOrPartition),
            (&fenced, ResponseError::InvalidProducerEpoch),
            (&gap, ResponseError::OutOfOrderSequenceNumber),
            (
                &LogError::OffsetMismatch {
                    expected: 2,
                    got: 1,
                },
                ResponseError::UnknownServerError,
            ),
            (
                &LogError::FencedLeaderEpoch {
                    epoch: 1,
                    latest: 2,
                },
                ResponseError::FencedLeaderEpoch,
            ),
        ]);
    }

    #[test]
    fn topic_errors_become_kafka_errors() {
        let s = String::new;
        assert_codes([
            (
                &TopicError::InvalidTopic(s()),
                ResponseError::InvalidTopicException,
            ),
            (
                &TopicError::AlreadyExists(s()),
                ResponseError::TopicAlreadyExists,
            ),
            (
                &TopicError::UnknownTopic(s()),
                ResponseError::UnknownTopicOrPartition,
            ),
            (
                &TopicError::UnknownTopicId(uuid::Uuid::nil()),
                ResponseError::UnknownTopicId,
            ),
            (
                &TopicError::InvalidPartitions(s()),
                ResponseError::InvalidPartitions,
            ),
            (
                &TopicError::InvalidReplicationFactor(s()),
                ResponseError::InvalidReplicationFactor,
            ),
            (
                &TopicError::InvalidReplicaAssignment(s()),
                ResponseError::InvalidReplicaAssignment,
            ),
            (
                &TopicError::InvalidConfig(s()),
                ResponseError::InvalidConfig,
            ),
            (
                &TopicError::DeletionDisabled,
                ResponseError::TopicDeletionDisabled,
            ),
            (&TopicError::Storage(s()), ResponseError::KafkaStorageError),
        ]);
    }

    #[test]
    fn group_errors_become_kafka_errors() {
        assert_codes([
            (
                GroupError::IllegalGeneration,
                ResponseError::IllegalGeneration,
            ),
            (
                GroupError::InconsistentGroupProtocol,
                ResponseError::InconsistentGroupProtocol,
            ),
            (GroupError::InvalidGroupId, ResponseError::InvalidGroupId),
            (GroupError::UnknownMemberId, ResponseError::UnknownMemberId),
            (
                GroupError::InvalidSessionTimeout,
                ResponseError::InvalidSessionTimeout,
            ),
            (
                GroupError::RebalanceInProgress,
                ResponseError::RebalanceInProgress,
            ),
            (GroupError::NonEmptyGroup, ResponseError::NonEmptyGroup),
            (GroupError::GroupIdNotFound, ResponseError::GroupIdNotFound),
            (
                GroupError::MemberIdRequired,
                ResponseError::MemberIdRequired,
            ),
            (
                GroupError::FencedInstanceId,
                ResponseError::FencedInstanceId,
            ),
            (
                GroupError::GroupSubscribedToTopic,
                ResponseError::GroupSubscribedToTopic,
            ),
            (
                GroupError::CoordinatorNotAvailable,
                ResponseError::CoordinatorNotAvailable,
            ),
            (GroupError::NotCoordinator, ResponseError::NotCoordinator),
            (
                GroupError::CoordinatorLoadInProgress,
                ResponseError::CoordinatorLoadInProgress,
            ),
        ]);
    }
}

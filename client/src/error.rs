//! The client's error type: what failed, and whether trying again can help.

use std::time::Duration;

pub use kafka_protocol::ResponseError;

/// Everything that can go wrong in the client.
///
/// Every variant says what failed; [`ClientError::is_retriable`] says whether the same call can
/// succeed later without the caller changing anything (a broker restarting, a leader moving, a
/// rebalance in progress), so applications can tell "try again" from "fix the request".
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// A broker answered with a Kafka error code.
    #[error("{api} failed for {resource}: {error} (code {code}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(), code = error.code())]
    Kafka {
        /// The API that was called, e.g. "Produce".
        api: &'static str,
        /// What the error is about: a topic, a partition, a group.
        resource: String,
        /// The error code the broker sent.
        error: ResponseError,
        /// The broker's explanation, when it sent one.
        message: Option<String>,
    },
    /// The TCP connection to a broker could not be opened or broke while a request was in
    /// flight.
    #[error("connection to broker {broker} failed: {reason}")]
    Connection {
        /// The broker's address or id.
        broker: String,
        /// What went wrong (the I/O error).
        reason: String,
    },
    /// TLS or SASL authentication with a broker failed: wrong password, unknown user, a
    /// mechanism the broker does not enable, an untrusted certificate. Retrying with the same
    /// settings cannot help.
    #[error("authentication with broker {broker} failed: {reason}")]
    Authentication {
        /// The broker's address.
        broker: String,
        /// What the broker (or the TLS handshake) said.
        reason: String,
    },
    /// A broker did not answer within the request timeout.
    #[error("{api} request to broker {broker} timed out after {timeout:?}")]
    Timeout {
        /// The API that was called.
        api: &'static str,
        /// The broker's address.
        broker: String,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The broker does not support any version of an API the client needs, or a feature needs
    /// a newer version than the broker has.
    #[error("broker {broker} does not support {api} {needed} (it offers {offered})")]
    UnsupportedVersion {
        /// The API.
        api: &'static str,
        /// The broker's address.
        broker: String,
        /// The versions the client can speak.
        needed: String,
        /// The versions the broker advertised ("none" if it did not list the API).
        offered: String,
    },
    /// A request could not be encoded or a response could not be decoded.
    #[error("protocol error in {api}: {reason}")]
    Protocol {
        /// The API.
        api: &'static str,
        /// What could not be encoded or decoded.
        reason: String,
    },
    /// A record batch from a broker is malformed (bad CRC, truncated, unknown codec).
    #[error("corrupt record batch in {topic}-{partition} at offset {offset}: {reason}")]
    CorruptRecord {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The batch's base offset.
        offset: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// The caller asked for something invalid (bad configuration, unknown partition, a record
    /// too large, a consumer call without a group).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No broker of the bootstrap list could be reached, or metadata never named a leader in
    /// time.
    #[error("no broker available: {0}")]
    NoBrokerAvailable(String),
    /// A produced record was not acknowledged before `delivery_timeout_ms` ran out.
    #[error("record for {topic}-{partition} expired after {elapsed:?} without acknowledgement{}", last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    DeliveryTimeout {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// How long the record waited.
        elapsed: Duration,
        /// The last error seen while retrying, if any.
        last_error: Option<String>,
    },
    /// The consumer's position for a partition is invalid and `auto_offset_reset` is `none`.
    #[error("no valid offset for {topic}-{partition} and auto_offset_reset is none")]
    NoOffsetForPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The partition's log was truncated under the consumer's position by a leader change
    /// (KIP-320): records it already handed out are gone from the new leader's log, and
    /// `auto_offset_reset` is `none`, so it does not choose where to go on (Java:
    /// `LogTruncationException`). Seek to `divergent_offset` (or elsewhere) to continue.
    #[error("log of {topic}-{partition} truncated below the position {position} (the leader's log diverges at offset {divergent_offset}) and auto_offset_reset is none")]
    LogTruncation {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The consumer's position when the truncation was found.
        position: i64,
        /// The first offset where the leader's log and what was consumed differ: the end
        /// offset, on the leader, of the epoch of the last record consumed.
        divergent_offset: i64,
    },
    /// The producer or consumer was closed; no further calls are possible.
    #[error("the {0} is closed")]
    Closed(&'static str),
    /// A newer producer with the same `transactional.id` took over (PRODUCER_FENCED or
    /// INVALID_PRODUCER_EPOCH from the transaction coordinator or a partition leader): this
    /// producer can do nothing more and should be closed.
    #[error(
        "producer fenced: a newer producer with transactional id {transactional_id} took over"
    )]
    ProducerFenced {
        /// The transactional id.
        transactional_id: String,
    },
    /// A transactional method called out of order (commit without begin, send outside a
    /// transaction, begin twice, or after a failed send the transaction can only abort).
    #[error("invalid transaction state: {0}")]
    TransactionState(String),
}

impl ClientError {
    /// True when the same call may succeed if tried again later without changes: broken
    /// connections, timeouts, and Kafka errors the protocol marks as retriable (leader moves,
    /// coordinators loading, rebalances in progress).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Kafka { error, .. } => {
                error.is_retriable()
                    || matches!(
                        error,
                        // Not marked retriable by the protocol, but they go away on their own once
                        // the group settles: the member rejoins and tries again.
                        ResponseError::RebalanceInProgress
                            | ResponseError::BrokerNotAvailable
                            | ResponseError::LeaderNotAvailable
                    )
            }
            ClientError::Connection { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoBrokerAvailable(_) => true,
            ClientError::UnsupportedVersion { .. }
            | ClientError::Authentication { .. }
            | ClientError::Protocol { .. }
            | ClientError::CorruptRecord { .. }
            | ClientError::InvalidArgument(_)
            | ClientError::DeliveryTimeout { .. }
            | ClientError::NoOffsetForPartition { .. }
            | ClientError::LogTruncation { .. }
            | ClientError::ProducerFenced { .. }
            | ClientError::TransactionState(_)
            | ClientError::Closed(_) => false,
        }
    }

    /// The Kafka error code this error carries, if a broker sent one.
    pub fn kafka_error(&self) -> Option<ResponseError> {
        match self {
            ClientError::Kafka { error, .. } => Some(*error),
            _ => None,
        }
    }

    /// Builds a [`ClientError::Kafka`] from a non-zero error code.
    pub(crate) fn kafka(
        api: &'static str,
        resource: impl Into<String>,
        code: i16,
        message: Option<&kafka_protocol::protocol::StrBytes>,
    ) -> Self {
        ClientError::Kafka {
            api,
            resource: resource.into(),
            error: ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code)),
            message: message.map(|m| m.as_str().to_string()),
        }
    }

    /// True for the errors after which cached metadata (leaders, partitions) is stale.
    pub(crate) fn invalidates_metadata(&self) -> bool {
        matches!(
            self.kafka_error(),
            Some(
                ResponseError::NotLeaderOrFollower
                    | ResponseError::UnknownTopicOrPartition
                    | ResponseError::LeaderNotAvailable
                    | ResponseError::FencedLeaderEpoch
                    | ResponseError::UnknownLeaderEpoch
                    | ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::UnknownTopicId
            )
        ) || matches!(self, ClientError::Connection { .. })
    }
}

impl ClientError {
    /// True for the errors after which a partition's leader may be elsewhere, or its replica
    /// set changed: the stale-metadata errors, plus the replication errors a leader answers
    /// while its followers fall behind (NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    /// REQUEST_TIMED_OUT) and a timed-out request. The producer and fetcher refresh metadata
    /// after any of these before retrying, so a failover is followed within one backoff.
    pub(crate) fn leader_may_have_moved(&self) -> bool {
        self.invalidates_metadata()
            || matches!(
                self.kafka_error(),
                Some(
                    ResponseError::NotEnoughReplicas
                        | ResponseError::NotEnoughReplicasAfterAppend
                        | ResponseError::RequestTimedOut
                        | ResponseError::KafkaStorageError
                )
            )
            || matches!(self, ClientError::Timeout { .. })
    }
}

/// `Result` with a [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Returns `Err` for a non-zero Kafka error code.
pub(crate) fn check(
    api: &'static str,
    resource: impl FnOnce() -> String,
    code: i16,
    message: Option<&kafka_protocol::protocol::StrBytes>,
) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(ClientError::kafka(api, resource(), code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_is_retriable_and_invalid_config_is_not() {
        assert!(ClientError::kafka("Produce", "t-0", 6, None).is_retriable());
        assert!(!ClientError::kafka("CreateTopics", "t", 40, None).is_retriable());
    }

    #[test]
    fn every_leader_change_error_is_retriable_and_refreshes_metadata() {
        // NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS,
        // NOT_ENOUGH_REPLICAS_AFTER_APPEND, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH.
        for code in [6, 5, 7, 19, 20, 74, 75] {
            let error = ClientError::kafka("Produce", "t-0", code, None);
            assert!(error.is_retriable(), "code {code}");
            assert!(error.leader_may_have_moved(), "code {code}");
        }
        let lost = ClientError::Connection {
            broker: "b".into(),
            reason: "reset".into(),
        };
        assert!(lost.is_retriable() && lost.leader_may_have_moved());
        // A bad request is neither.
        let invalid = ClientError::kafka("Produce", "t-0", 87, None);
        assert!(!invalid.is_retriable() && !invalid.leader_may_have_moved());
    }

    #[test]
    fn log_truncation_is_not_retriable() {
        let error = ClientError::LogTruncation {
            topic: "t".into(),
            partition: 0,
            position: 10,
            divergent_offset: 7,
        };
        assert!(!error.is_retriable());
        assert!(error.to_string().contains("offset 7"), "{error}");
    }

    #[test]
    fn kafka_error_display_names_api_resource_and_code() {
        let error = ClientError::kafka("Produce", "t-0", 6, None);
        assert_eq!(
            error.to_string(),
            "Produce failed for t-0: NotLeaderOrFollower (code 6)"
        );
    }
}

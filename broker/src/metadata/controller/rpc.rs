//! What brokers ask the active controller, and its answers: the payloads of the quorum's
//! application calls (JSON), for requests that arrive at a broker that is not the active
//! controller (forwarded, as Kafka forwards admin requests with Envelope) and for the broker
//! lifecycle (registration, heartbeats) and ISR changes.
//!
//! Answers from another controller are input: one that does not parse is an error, never a
//! panic.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::brokers::{
    BrokerHeartbeatRequest, BrokerHeartbeatResponse, BrokerRegistrationRequest, BrokerRequestError,
};
use super::partitions::{ElectionOutcome, ReassignmentError};
use super::quotas::{QuotaAlteration, QuotaResults};
use super::users::{ScramDeletion, ScramUpsertion, UserResults};
use super::{AlterPartitionError, ConfigOp, NewTopic, TopicError};
use crate::metadata::TopicImage;
use crate::replica::AlterPartition;
use crate::security::authorizer::{AclBinding, AclBindingFilter};

/// A request to the active controller.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// CreateTopics (one topic).
    CreateTopic {
        /// The topic.
        topic: NewTopic,
        /// Check only.
        validate_only: bool,
    },
    /// DeleteTopics (one topic).
    DeleteTopic {
        /// Its name.
        name: String,
    },
    /// CreatePartitions (one topic).
    CreatePartitions {
        /// The topic.
        name: String,
        /// The new total.
        count: i32,
        /// Explicit assignments of the new partitions.
        assignments: Vec<(i32, Vec<i32>)>,
        /// Check only.
        validate_only: bool,
    },
    /// IncrementalAlterConfigs (one topic).
    AlterTopicConfigs {
        /// The topic.
        name: String,
        /// The changes.
        ops: Vec<(String, ConfigOp)>,
        /// Check only.
        validate_only: bool,
    },
    /// AllocateProducerIds.
    AllocateProducerIds {
        /// How many.
        size: i64,
    },
    /// AlterPartition.
    AlterPartition(AlterPartition),
    /// BrokerRegistration.
    RegisterBroker(BrokerRegistrationRequest),
    /// BrokerHeartbeat.
    Heartbeat(BrokerHeartbeatRequest),
    /// AlterPartitionReassignments: per (topic, partition), the target replicas (None cancels).
    Reassign {
        /// The moves.
        moves: Vec<(String, i32, Option<Vec<i32>>)>,
    },
    /// AlterClientQuotas.
    AlterClientQuotas {
        /// Each entity's changes.
        alterations: Vec<QuotaAlteration>,
        /// Check only.
        validate_only: bool,
    },
    /// AlterUserScramCredentials.
    AlterScramCredentials {
        /// Credentials to set.
        upsertions: Vec<ScramUpsertion>,
        /// Credentials to delete.
        deletions: Vec<ScramDeletion>,
    },
    /// CreateAcls: ACLs checked by the broker that received them.
    CreateAcls {
        /// The ACLs.
        acls: Vec<AclBinding>,
    },
    /// DeleteAcls.
    DeleteAcls {
        /// Which ACLs.
        filters: Vec<AclBindingFilter>,
    },
    /// ElectLeaders (preferred): the given (topic, partition)s, or every partition.
    ElectPreferredLeaders {
        /// Which partitions; `None` for all.
        partitions: Option<Vec<(String, i32)>>,
    },
}

/// The active controller's answer. `index` is the metadata log index that holds the change
/// (if any): the caller waits until its own image has applied it, so that it reads its writes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ControllerResponse {
    /// A topic was (or would be) created.
    Topic {
        /// The topic.
        topic: TopicImage,
        /// Where it was committed.
        index: Option<u64>,
    },
    /// A topic was deleted.
    Deleted {
        /// Its id.
        topic_id: Uuid,
        /// Where it was committed.
        index: Option<u64>,
    },
    /// A change was committed (or was a no-op, or validated only).
    Done {
        /// Where it was committed.
        index: Option<u64>,
    },
    /// Producer ids reserved.
    ProducerIds {
        /// The first id of the block.
        start: i64,
        /// Where it was committed.
        index: Option<u64>,
    },
    /// A broker registered.
    Registered {
        /// Its broker epoch.
        broker_epoch: i64,
        /// Where it was committed.
        index: Option<u64>,
    },
    /// A heartbeat was answered.
    Heartbeat {
        /// The answer.
        response: BrokerHeartbeatResponse,
        /// Where a change it caused was committed.
        index: Option<u64>,
    },
    /// Reassignments started or cancelled, per partition.
    Reassignments {
        /// (topic, partition, refusal if any).
        results: Vec<(String, i32, Option<ReassignmentError>)>,
        /// Where they were committed.
        index: Option<u64>,
    },
    /// Preferred-leader elections, per partition.
    Elections {
        /// (topic, partition, outcome).
        results: Vec<(String, i32, ElectionOutcome)>,
        /// Where the elections were committed.
        index: Option<u64>,
    },
    /// Client quota changes, per entity.
    QuotaResults {
        /// Per entity: `None` if taken, else (error code, message).
        results: QuotaResults,
        /// Where they were committed.
        index: Option<u64>,
    },
    /// SCRAM credential changes, per user.
    ScramResults {
        /// Per user: `None` if taken, else (error code, message).
        results: UserResults,
        /// Where they were committed.
        index: Option<u64>,
    },
    /// ACLs deleted, per filter.
    AclsDeleted {
        /// The ACLs each filter deleted.
        results: Vec<Vec<AclBinding>>,
        /// Where the deletions were committed.
        index: Option<u64>,
    },
    /// A topic request was refused.
    TopicError(TopicError),
    /// An ISR change was refused.
    AlterPartitionError(AlterPartitionError),
    /// A broker request was refused.
    BrokerError(BrokerRequestError),
    /// The node asked is not the active controller (any more); `leader` is who it thinks is.
    NotController {
        /// The active controller as the node knows it.
        leader: Option<u64>,
    },
    /// The quorum could not commit (timeout, shutdown, storage).
    Unavailable(String),
}

impl ControllerResponse {
    /// The log index the change was committed at.
    pub fn index(&self) -> Option<u64> {
        match self {
            ControllerResponse::Topic { index, .. }
            | ControllerResponse::Deleted { index, .. }
            | ControllerResponse::Done { index }
            | ControllerResponse::ProducerIds { index, .. }
            | ControllerResponse::Registered { index, .. }
            | ControllerResponse::Heartbeat { index, .. }
            | ControllerResponse::Elections { index, .. }
            | ControllerResponse::Reassignments { index, .. }
            | ControllerResponse::ScramResults { index, .. }
            | ControllerResponse::QuotaResults { index, .. }
            | ControllerResponse::AclsDeleted { index, .. } => *index,
            _ => None,
        }
    }
}

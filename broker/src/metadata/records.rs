//! The metadata records: every change to topics and their settings is one of these.
//!
//! They are the entries of the metadata log (see [`super::log`]) and the commands of the
//! state machine [`super::image::MetadataImage`]. Kept small and self-describing (JSON) so
//! that the cluster work can replicate the same records through a Raft quorum.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::security::{ScramCredential, ScramMechanism};

/// One change to the cluster metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// The cluster's identity, written once when a data dir is first used.
    Cluster {
        /// Cluster id as clients see it (base64 of a UUID, like Kafka's).
        cluster_id: String,
    },
    /// A topic was created.
    Topic {
        /// Topic name.
        name: String,
        /// Topic id (KIP-516).
        topic_id: Uuid,
        /// Number of partitions.
        partitions: i32,
        /// Topic-level overrides.
        configs: BTreeMap<String, String>,
    },
    /// A topic grew to `count` partitions (CreatePartitions).
    PartitionCount {
        /// Topic id.
        topic_id: Uuid,
        /// The new total.
        count: i32,
    },
    /// Topic overrides changed: `set` entries were set, `removed` ones reverted to defaults.
    TopicConfig {
        /// Topic id.
        topic_id: Uuid,
        /// Settings set.
        set: BTreeMap<String, String>,
        /// Settings removed.
        removed: Vec<String>,
    },
    /// A block of producer ids was handed out: ids below `next_block_start` are used.
    ProducerIds {
        /// First id of the next block.
        next_block_start: i64,
    },
    /// A topic was deleted.
    RemoveTopic {
        /// Topic id.
        topic_id: Uuid,
    },
    /// A broker registered with the controller, or registered again after a restart
    /// (Kafka's BrokerRegistrationRecord). A new registration replaces the old one and starts
    /// fenced: the broker is unfenced once it has caught up with the metadata.
    RegisterBroker {
        /// `node.id` of the broker.
        broker_id: i32,
        /// Random per process start: tells a restart from a duplicate registration.
        incarnation_id: Uuid,
        /// The epoch the controller gave this registration; requests carrying an older one
        /// come from a previous incarnation and are refused.
        broker_epoch: i64,
        /// Where clients and other brokers reach it, per listener name.
        listeners: Vec<BrokerEndpoint>,
        /// `broker.rack`, for rack-aware replica placement.
        #[serde(default)]
        rack: Option<String>,
        /// Whether it starts fenced (not given leaderships, not listed to clients).
        #[serde(default)]
        fenced: bool,
    },
    /// A broker was fenced (missed heartbeats, or shut down) or unfenced (caught up and
    /// heartbeating); Kafka's FenceBrokerRecord and UnfenceBrokerRecord.
    BrokerFencing {
        /// The broker.
        broker_id: i32,
        /// The registration this applies to; a stale epoch makes the record a no-op.
        broker_epoch: i64,
        /// Fenced (true) or unfenced (false).
        fenced: bool,
    },
    /// A user's SCRAM credential for one mechanism was set (Kafka's
    /// UserScramCredentialRecord): salted and iterated, never the password.
    UserScramCredential {
        /// The user name.
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512.
        mechanism: ScramMechanism,
        /// Salt, stored key, server key, iterations.
        credential: ScramCredential,
    },
    /// A user's SCRAM credential for one mechanism was deleted
    /// (RemoveUserScramCredentialRecord).
    RemoveUserScramCredential {
        /// The user name.
        name: String,
        /// The mechanism.
        mechanism: ScramMechanism,
    },
    /// A client quota was set (`value`) or removed (`None`) for an entity (Kafka's
    /// ClientQuotaRecord).
    ClientQuota {
        /// Who it applies to.
        entity: super::client_quotas::QuotaEntity,
        /// `producer_byte_rate`, `consumer_byte_rate` or `request_percentage`.
        key: String,
        /// The limit, or `None` to remove it.
        value: Option<f64>,
    },
    /// An ACL was created (Kafka's AccessControlEntryRecord).
    AccessControlEntry {
        /// Its id, by which it is removed.
        id: Uuid,
        /// The ACL.
        acl: crate::security::authorizer::AclBinding,
    },
    /// An ACL was deleted (RemoveAccessControlEntryRecord).
    RemoveAccessControlEntry {
        /// Its id.
        id: Uuid,
    },
    /// A broker left the cluster for good (UnregisterBrokerRecord).
    UnregisterBroker {
        /// The broker.
        broker_id: i32,
        /// The registration removed.
        broker_epoch: i64,
    },
    /// The whole state of one partition: replicas, leader, leader epoch and ISR. Written when
    /// a partition is created and on every change (Kafka splits these into PartitionRecord
    /// and PartitionChangeRecord; one full record keeps replay trivially idempotent).
    Partition {
        /// Topic id.
        topic_id: Uuid,
        /// Partition index.
        partition: i32,
        /// Assigned replicas, preferred leader first.
        replicas: Vec<i32>,
        /// In-sync replicas.
        isr: Vec<i32>,
        /// Leader broker, or -1 when the partition is offline.
        leader: i32,
        /// Bumped on every leader change; fences requests from older leaders.
        leader_epoch: i32,
        /// Bumped on every change of the partition's state (ISR updates compare it).
        partition_epoch: i32,
        /// Replicas being added by a reassignment.
        #[serde(default)]
        adding_replicas: Vec<i32>,
        /// Replicas being removed by a reassignment.
        #[serde(default)]
        removing_replicas: Vec<i32>,
    },
}

/// One listener of a registered broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    /// Listener name (`PLAINTEXT`, ...).
    pub name: String,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: u16,
    /// Security protocol of the listener (`PLAINTEXT`, ...).
    pub security_protocol: String,
}

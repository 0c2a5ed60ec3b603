//! The metadata records: every change to topics and their settings is one of these.
//!
//! They are the entries of the metadata log (see [`super::log`]) and the commands of the
//! state machine [`super::image::MetadataImage`]. Kept small and self-describing (JSON) so
//! that the cluster work can replicate the same records through a Raft quorum.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
}

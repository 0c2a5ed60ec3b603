//! The openraft type configuration of the metadata quorum: what a log entry carries and how
//! nodes are named.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::metadata::records::MetadataRecord;

/// A position in the quorum's Raft log (openraft's log index; the first entry, the initial
/// membership, is at 0).
pub type LogIndex = u64;

/// A quorum member's id: the broker's `node.id`.
pub type NodeId = u64;

/// The payload of one Raft log entry: the records of one controller decision, applied
/// together so that no reader sees half of a decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataBatch(pub Vec<MetadataRecord>);

openraft::declare_raft_types!(
    /// The quorum's openraft types. A snapshot is an in-memory buffer: the metadata image is
    /// small (topics and settings, not data), so chunked transfer from memory is enough.
    pub TypeConfig:
        D = MetadataBatch,
        R = (),
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle with our types.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id (leader term and node, index) with our node ids.
pub type LogId = openraft::LogId<NodeId>;
/// A log entry with our payload.
pub type Entry = openraft::Entry<TypeConfig>;
/// Openraft's storage error with our node ids.
pub type StorageError = openraft::StorageError<NodeId>;
/// The membership as stored by the log and the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// The description of a snapshot (last log id, membership, id).
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

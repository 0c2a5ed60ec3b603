//! Consumer groups: the coordinator of the classic protocol and committed offsets stored in
//! the compacted internal topic `__consumer_offsets`.
//!
//! - `coordinator.rs`: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the commit rules, over
//!   the in-memory group state of `state.rs`.
//! - `offsets.rs`: committed offsets on disk (Kafka's OffsetMetadataManager), in the record
//!   formats of `records.rs`.
//! - `error.rs`: why a group request is refused, in Kafka's terms.
//! - `subscription.rs`: the topics a consumer's JoinGroup metadata names.
//! - `txn_offsets.rs`: TxnOffsetCommit's offsets, visible once their transaction commits.

pub mod coordinator;
pub mod error;
pub mod offsets;
pub mod records;
pub mod state;
pub mod subscription;
pub mod txn_offsets;

pub use coordinator::{GroupCoordinator, JoinRequest, SyncRequest};
pub use error::GroupError;
pub use offsets::{OffsetMetadataManager, OffsetWrite, OFFSETS_TOPIC};
pub use state::CommittedOffset;

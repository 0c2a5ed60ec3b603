//! Replicas: the partitions this broker hosts and how they follow their leaders.
//!
//! - `replica_manager.rs`: the hosted replicas, opened and re-roled from the metadata.
//! - `partition.rs`: one replica's role, leader epoch, ISR and high watermark.
//! - `replica_fetcher.rs`: followers copying their leaders' logs (Fetch as a replica).
//! - `alter_partition.rs`: ISR changes proposed to the controller.
//! - `broker_connection.rs`: the inter-broker connection the fetchers use.

pub mod alter_partition;
pub mod broker_connection;
pub mod partition;
pub mod replica_fetcher;
pub mod replica_manager;

pub use alter_partition::{AlterPartition, AlterPartitionManager};
pub use partition::{
    FollowerFetch, FollowerFetchRequest, ListOffsetsView, Partition, Refusal, Role, RoleChange,
};
pub use replica_fetcher::{FetcherConfig, ReplicaFetcherManager};
pub use replica_manager::{HostedTopic, ReplicaManager};

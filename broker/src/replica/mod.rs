//! Replicas: the partitions this broker hosts and, with the cluster, how they follow their
//! leaders.
//!
//! Today every partition has one replica, the local log, and [`ReplicaManager`] finds it by
//! topic and partition. The cluster work adds the replica fetcher, the leader-epoch cache and
//! the high watermark here, next to the manager they extend.

pub mod replica_manager;

pub use replica_manager::{HostedTopic, ReplicaManager};

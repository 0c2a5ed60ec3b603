//! Cluster metadata: topics, partitions, settings and producer-id blocks as a log of records
//! replayed into a state machine, and the controller that writes them.
//!
//! The records are the entries of a Raft log (`quorum/`) that every voter applies into its
//! [`MetadataImage`]; every reader goes through the image, every writer through the active
//! controller (`controller/`).
//!
//! - `records.rs`, `image.rs`: the records and the state they build; `log.rs` reads the
//!   single-node metadata log of earlier versions, imported into the quorum on first start.
//! - `controller/`: the one writer (the active controller) and the way to it from any broker:
//!   topics, partitions (ISR, elections, reassignments), brokers (registration, fencing).
//! - `placement.rs`: which brokers hold a new partition's replicas (rack-aware).
//! - `publisher.rs`: each applied image made real on this broker's replicas.
//! - `topic_config.rs`: topic-level settings, their broker-level defaults and validation.
//! - `client_quotas.rs`: client quotas per user and client id, and which one applies.
//! - `producer_ids.rs`: producer ids handed out from blocks the controller reserves.
//! - `quorum/`: the records replicated by a Raft quorum (openraft), applied into the image.

pub mod client_quotas;
pub mod controller;
pub mod image;
pub mod log;
pub mod placement;
pub mod producer_ids;
pub mod publisher;
pub mod quorum;
pub mod records;
pub mod topic_config;

pub use controller::{Controller, ControllerHandler, TopicError};
pub use image::{BrokerRegistration, MetadataImage, PartitionImage, TopicImage};
pub use log::{MetadataLog, MetadataLogError};
pub use producer_ids::ProducerIdManager;
pub use records::{BrokerEndpoint, MetadataRecord};

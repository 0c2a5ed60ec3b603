//! Talking to brokers: connections, version negotiation, cluster metadata.

pub(crate) mod cluster;
pub(crate) mod connection;
pub mod metadata;
pub(crate) mod versions;

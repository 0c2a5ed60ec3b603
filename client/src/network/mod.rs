//! Talking to brokers: connections, version negotiation, cluster metadata.

pub(crate) mod cluster;
pub(crate) mod connection;
pub mod metadata;
pub(crate) mod sasl;
pub mod security;
pub(crate) mod versions;

pub use sasl::{random_bytes, ScramHash};
pub use security::{SaslMechanism, SaslMechanismConfig, SecurityConfig, SecurityProtocol};

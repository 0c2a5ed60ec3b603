//! The Millrace broker: a Kafka-wire-protocol broker on a durable segmented log.
//!
//! Real Kafka clients (librdkafka, kafka-python, kcat, kafkajs, the Java client) talk to it
//! unchanged.
//!
//! ```no_run
//! # async fn run() -> Result<(), millrace_broker::BrokerError> {
//! use millrace_broker::{start, BrokerConfig};
//! let config = BrokerConfig::new("127.0.0.1:9092".parse().unwrap(), "./data".into());
//! let broker = start(config).await?;
//! println!("serving on {}", broker.local_addr());
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Where to start reading:
//!
//! - [`server`] accepts connections and [`server::connection`] frames requests;
//! - [`api`] dispatches them, one module per Kafka API (`api/produce.rs`, `api/fetch.rs`, ...),
//!   each handler given the shared [`Broker`] (`broker.rs`);
//! - [`log`] is the partition storage, and [`replica`] finds the partition logs this broker
//!   hosts;
//! - [`group`] is the group coordinator and its committed offsets;
//! - [`metadata`] holds the cluster metadata: its records and image, the [`metadata::controller`]
//!   that changes topics, topic settings and producer ids;
//! - [`error`] is the error vocabulary: what stops the broker, and the Kafka error every
//!   request-level error (of the log, the controller, the coordinator) converts into;
//! - [`config`] is the broker settings, and [`meta_properties`] the identity (cluster id and
//!   node id) each data dir carries.
//! - [`security`] is who a connection is: TLS listeners, SASL (PLAIN, SCRAM), and the
//!   [`security::Session`] every request handler sees;
//! - [`metrics`] is observability: Prometheus metrics under Kafka's names, the health checks
//!   and the slow-request log, served on `metrics.listener`.

pub mod api;
pub mod broker;
pub mod config;
pub mod error;
pub mod group;
pub mod log;
pub mod meta_properties;
pub mod metadata;
pub mod metrics;
pub mod quota;
pub mod replica;
pub mod security;
pub mod server;
pub mod txn;

pub use broker::Broker;
pub use config::BrokerConfig;
pub use error::BrokerError;
pub use server::{start, start_controller, RunningBroker, RunningController};

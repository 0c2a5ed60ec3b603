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
//! Where to start reading: [`server`] accepts connections and [`server::connection`] frames
//! requests; [`api`] dispatches them, one module per Kafka API; [`log`] is the partition
//! storage; [`controller`] and [`metadata`] own topics and settings.

pub mod api;
pub mod config;
pub mod controller;
pub mod error;
pub mod group;
pub mod log;
pub mod metadata;
pub mod producer_ids;
pub mod replica_manager;
pub mod server;
pub mod topic_config;

pub use config::BrokerConfig;
pub use error::BrokerError;
pub use server::{start, Broker, RunningBroker};

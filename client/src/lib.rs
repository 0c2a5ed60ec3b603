//! Async Rust Kafka client: producer, consumer, admin.
//!
//! A topic created, a record produced and read back through a consumer group, against any
//! Kafka-protocol cluster (the address may be a `&str` or a `String`, for example read from
//! the command line):
//!
//! ```no_run
//! # async fn run() -> millrace_client::Result<()> {
//! use std::time::Duration;
//! use millrace_client::admin::NewTopic;
//! use millrace_client::consumer::{AutoOffsetReset, Consumer, ConsumerConfig};
//! use millrace_client::{Admin, ClientConfig, Producer, ProducerConfig, ProducerRecord};
//!
//! let bootstrap: String = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9092".into());
//! let client = ClientConfig::new(bootstrap);
//!
//! Admin::connect(client.clone()).await?.create_topic(NewTopic::new("greetings", 3)).await?;
//!
//! let producer = Producer::connect(ProducerConfig::new(client.clone())).await?;
//! let delivered = producer
//!     .send(ProducerRecord::new("greetings", "hello").key("user-1"))
//!     .await?
//!     .await?;
//! println!("written to partition {} at offset {}", delivered.partition, delivered.offset);
//!
//! let config = ConsumerConfig::builder(client)
//!     .group_id("greeters")
//!     .auto_offset_reset(AutoOffsetReset::Earliest)
//!     .build()?;
//! let mut consumer = Consumer::connect(config).await?;
//! consumer.subscribe(["greetings"])?;
//! for record in consumer.poll(Duration::from_secs(5)).await? {
//!     println!("{}: {:?}", record.offset, record.value);
//! }
//! consumer.close().await?;
//! producer.close().await;
//! # Ok(()) }
//! ```
//!
//! Where to start reading: [`producer`] (batching, retries, idempotence), [`consumer`]
//! (groups, fetching, offsets), [`admin`]; [`network`] holds the connections and the
//! cluster's metadata.
#![allow(dead_code)]

pub mod config;
pub mod error;
pub mod network;

pub use config::{ClientConfig, ClientConfigBuilder};
pub use error::{ClientError, ResponseError, Result};
mod coordinator;
mod offsets;
mod retry;
pub mod types;
pub use types::{IsolationLevel, ListedOffset, OffsetSpec, TopicPartition};
pub mod admin;
pub mod consumer;
pub use admin::Admin;
pub mod producer;
pub use producer::{
    Acks, DeliveryFuture, PendingCommit, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use record::Compression;
pub mod record;

//! Async Rust Kafka client: producer, consumer, admin.
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
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use record::Compression;
pub mod record;

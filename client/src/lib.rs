//! Async Rust Kafka client: producer, consumer, admin.
//!
//! Not built yet: see the open issues. This crate exists so the workspace has its final shape.

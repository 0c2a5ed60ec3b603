//! The Millrace broker: a Kafka-wire-protocol broker on a durable segmented log.
//!
//! Start reading at [`log`], the partition storage.

pub mod log;

//! Partition storage: segmented append-only logs with sparse indexes.
//!
//! A [`PartitionLog`] is one directory of segments (`<base offset>.log`, `.index`,
//! `.timeindex`) holding record batches byte for byte as producers sent them, with offsets
//! assigned on append. Start reading at `partition_log.rs`, then `segment.rs` and `batch.rs`.

// Stage 1: helpers for maintenance and timestamp lookups land in the next commit.
#![allow(dead_code)]

mod batch;
mod checkpoint;
mod config;
mod error;
mod flush;
mod index;
mod partition_log;
mod segment;
mod time_index;

#[cfg(test)]
mod test_util;

pub use config::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType};
pub use error::LogError;
pub use partition_log::{AppendInfo, MaintenanceReport, PartitionLog};

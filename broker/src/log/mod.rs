//! Partition storage: segmented append-only logs with sparse indexes.
//!
//! A [`PartitionLog`] is one directory of segments (`<base offset>.log`, `.index`,
//! `.timeindex`) holding record batches byte for byte as producers sent them, with offsets
//! assigned on append. Start reading at `partition_log.rs`, then `segment.rs` and `batch.rs`.
//! Idempotent producers' epochs and sequences live in `producer_state.rs`, persisted as
//! `<offset>.snapshot` files and rebuilt from batch headers on open.

mod batch;
mod checkpoint;
mod cleaner;
mod config;
mod error;
mod flush;
mod index;
mod partition_log;
mod producer_state;
mod records;
mod retention;
mod segment;
mod time_index;
mod timestamp_lookup;

#[cfg(test)]
mod test_util;

pub use config::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType};
pub use error::LogError;
pub use partition_log::{AppendInfo, MaintenanceReport, PartitionLog};

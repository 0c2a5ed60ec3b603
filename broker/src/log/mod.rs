//! Partition storage: segmented append-only logs with sparse indexes.
//!
//! A [`PartitionLog`] is one directory of segments (`<base offset>.log`, `.index`,
//! `.timeindex`) holding record batches byte for byte as producers sent them, with offsets
//! assigned on append. Start reading at `partition_log.rs`, then `segment.rs` and `batch.rs`.
//! Idempotent producers' epochs and sequences live in `producer_state.rs`, persisted as
//! `<offset>.snapshot` files and rebuilt from batch headers on open. Which leader epoch began
//! at which offset is in `leader_epoch_cache.rs` (`leader-epoch-checkpoint`), what followers
//! truncate by. Transactions: control batches (`control_batch.rs`) end them, producer state
//! tracks the open ones (bounding the last stable offset) and aborts go into the per-segment
//! aborted-transaction index (`txn_index.rs`, `.txnindex`). A follower writes its leader's batches unchanged with
//! `PartitionLog::append_as_follower` and cuts its log with `PartitionLog::truncate_to`.

mod batch;
mod checkpoint;
mod cleaner;
mod config;
mod control_batch;
mod error;
mod flush;
mod index;
mod leader_epoch_cache;
mod partition_log;
mod producer_state;
mod records;
mod replay;
mod retention;
mod segment;
mod time_index;
mod timestamp_lookup;
mod txn_index;

#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod txn_tests;

pub use batch::transactional_producer;
pub use config::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType};
pub use control_batch::ControlRecordType;
pub use error::LogError;
pub use leader_epoch_cache::{EpochEntry, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use partition_log::{AppendInfo, MaintenanceReport, PartitionLog, ProducerInfo};
pub use replay::replay_records;
pub use txn_index::AbortedTxn;

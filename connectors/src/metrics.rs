//! Counters a running connector exposes: what came in, what was written, what failed, and how
//! far behind it is.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Live counters of a sink, shared with whoever watches it (cheap to read at any time).
#[derive(Debug, Default)]
pub struct SinkMetrics {
    records_in: AtomicU64,
    records_written: AtomicU64,
    bytes_written: AtomicU64,
    files_committed: AtomicU64,
    dead_lettered: AtomicU64,
    lag: AtomicI64,
}

/// A copy of [`SinkMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Records read from Kafka (replayed ones after a restart included).
    pub records_in: u64,
    /// Records in committed files.
    pub records_written: u64,
    /// Bytes of committed Parquet files.
    pub bytes_written: u64,
    /// Files committed.
    pub files_committed: u64,
    /// Records sent to the dead-letter topic (or dropped and logged without one).
    pub dead_lettered: u64,
    /// Records between the consumer's positions and the high watermarks, summed over the
    /// assigned partitions, as of the last fetch.
    pub lag: i64,
}

impl SinkMetrics {
    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_written: self.records_written.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            files_committed: self.files_committed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            lag: self.lag.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add_records_in(&self, n: u64) {
        self.records_in.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_committed(&self, files: u64, records: u64, bytes: u64) {
        self.files_committed.fetch_add(files, Ordering::Relaxed);
        self.records_written.fetch_add(records, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_dead_lettered(&self, n: u64) {
        self.dead_lettered.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_lag(&self, lag: i64) {
        self.lag.store(lag, Ordering::Relaxed);
    }
}

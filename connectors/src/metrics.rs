//! Counters a running connector exposes: what came in, what was written, what failed, and how
//! far behind it is. Sinks count into [`SinkMetrics`], sources into [`SourceMetrics`]; both are
//! shared (`Arc`) by all tasks of one connector and cheap to read at any time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Live counters of a sink, shared with whoever watches it (cheap to read at any time).
#[derive(Debug, Default)]
pub struct SinkMetrics {
    records_in: AtomicU64,
    records_written: AtomicU64,
    bytes_written: AtomicU64,
    files_committed: AtomicU64,
    dead_lettered: AtomicU64,
    errors: AtomicU64,
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
    /// assigned partitions of every task, as of each task's last fetch.
    pub lag: i64,
    /// Failures that were not about one record: a task that stopped with an error, a
    /// consumer group commit that failed (the files were committed; only the lag shown by
    /// group tools lagged).
    pub errors: u64,
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
            errors: self.errors.load(Ordering::Relaxed),
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

    /// Moves the summed lag by `delta`: each task adds the change of its own lag, so the
    /// total is the sum over tasks without a lock.
    pub(crate) fn add_lag(&self, delta: i64) {
        self.lag.fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Live counters of a source.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    records: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
}

/// A copy of [`SourceMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceMetricsSnapshot {
    /// Records produced and acknowledged (acks=all).
    pub records: u64,
    /// Value bytes of those records.
    pub bytes: u64,
    /// Acknowledged batches (file reads, HTTP requests).
    pub batches: u64,
    /// Input that could not become a record (malformed JSON or CSV, oversized or refused
    /// requests): sent to the dead-letter topic or answered with an error.
    pub rejected: u64,
    /// Failures not about one input: produce errors, position files that could not be
    /// written.
    pub errors: u64,
}

impl SourceMetrics {
    /// The current values.
    pub fn snapshot(&self) -> SourceMetricsSnapshot {
        SourceMetricsSnapshot {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add_batch(&self, records: u64, bytes: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn add_rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

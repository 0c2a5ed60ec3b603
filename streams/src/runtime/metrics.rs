//! [`JobMetrics`]: the counters of a running job, shared with whoever watches it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

/// Counters of a running job, shared with whoever watches it (the dashboard).
#[derive(Debug, Default)]
pub struct JobMetrics {
    pub(super) records_in: AtomicU64,
    pub(super) records_out: AtomicU64,
    pub(super) late_records: AtomicU64,
    pub(super) bad_records: AtomicU64,
    pub(super) duplicates_dropped: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) last_commit_micros: AtomicU64,
    pub(super) state_entries: AtomicU64,
    pub(super) tasks: AtomicU64,
    pub(super) lag: AtomicI64,
    pub(super) watermark: AtomicI64,
}

/// A copy of [`JobMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Records read from the source topics.
    pub records_in: u64,
    /// Records written to the sink.
    pub records_out: u64,
    /// Records that arrived after their windows had closed.
    pub late_records: u64,
    /// Records that could not be decoded or encoded.
    pub bad_records: u64,
    /// Records dropped by `dedupe`.
    pub duplicates_dropped: u64,
    /// Commits completed.
    pub commits: u64,
    /// How long the last commit took, in microseconds.
    pub last_commit_micros: u64,
    /// Live state entries over all tasks.
    pub state_entries: u64,
    /// Tasks (input partitions) this instance runs.
    pub tasks: u64,
    /// Records behind the end of the assigned source partitions, as of the last fetches.
    pub lag: i64,
    /// The smallest watermark over this instance's tasks (ms since the epoch).
    pub watermark: i64,
}

impl JobMetrics {
    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            late_records: self.late_records.load(Ordering::Relaxed),
            bad_records: self.bad_records.load(Ordering::Relaxed),
            duplicates_dropped: self.duplicates_dropped.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            last_commit_micros: self.last_commit_micros.load(Ordering::Relaxed),
            state_entries: self.state_entries.load(Ordering::Relaxed),
            tasks: self.tasks.load(Ordering::Relaxed),
            lag: self.lag.load(Ordering::Relaxed),
            watermark: self.watermark.load(Ordering::Relaxed),
        }
    }
}

//! When an open file is closed and committed: by record count, by size, by event time, and
//! by wall-clock age.
//!
//! Event time alone is not enough: a file of an hour that no longer gets records would stay
//! open forever (and hold back the partition's resume point), so a file is also closed once
//! its partition's event time has moved `event_time_interval_ms` past the file's newest
//! record, and, for quiet topics, once it has been open `max_open_ms` of wall-clock time.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The `[rolling]` part of a sink's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollingPolicy {
    /// Close a file when it holds this many records (default 1,000,000).
    #[serde(default = "default_max_records")]
    pub max_records: u64,
    /// Close a file when its estimated size reaches this many bytes (default 128 MiB). The
    /// estimate is the encoded bytes so far plus the uncompressed size of what is buffered,
    /// so files come out somewhat smaller than this.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Event-time span of one file in ms (default one hour): a record this much newer than
    /// the file's first record starts a new file, and a file is closed when its partition's
    /// event time has moved this far past the file's newest record.
    #[serde(default = "default_event_time_interval_ms")]
    pub event_time_interval_ms: i64,
    /// Close a file that has been open this long in wall-clock time (default 10 minutes), so
    /// that quiet topics still land in files.
    #[serde(default = "default_max_open_ms")]
    pub max_open_ms: u64,
}

fn default_max_records() -> u64 {
    1_000_000
}
fn default_max_bytes() -> u64 {
    128 * 1024 * 1024
}
fn default_event_time_interval_ms() -> i64 {
    3_600_000
}
fn default_max_open_ms() -> u64 {
    600_000
}

impl Default for RollingPolicy {
    fn default() -> Self {
        RollingPolicy {
            max_records: default_max_records(),
            max_bytes: default_max_bytes(),
            event_time_interval_ms: default_event_time_interval_ms(),
            max_open_ms: default_max_open_ms(),
        }
    }
}

/// What the policy looks at for one open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStats {
    /// Records in the file.
    pub records: u64,
    /// Estimated size in bytes.
    pub bytes: u64,
    /// Event time of the first record (ms).
    pub first_event_ms: i64,
    /// Newest event time in the file (ms).
    pub max_event_ms: i64,
    /// When the file was opened.
    pub opened_at: Instant,
}

/// Why a file was closed (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollReason {
    /// `max_records` reached.
    Records,
    /// `max_bytes` reached.
    Bytes,
    /// The next record is outside the file's event-time span.
    EventTime,
    /// The partition's event time moved past the file.
    Idle,
    /// Open for `max_open_ms`.
    Age,
    /// The partition is being revoked or the sink stops.
    Close,
}

impl RollingPolicy {
    /// Whether `file` must be closed before a record with event time `event_ms` is added.
    pub fn before_append(&self, file: &FileStats, event_ms: i64) -> Option<RollReason> {
        (event_ms.saturating_sub(file.first_event_ms) >= self.event_time_interval_ms)
            .then_some(RollReason::EventTime)
    }

    /// Whether `file` is full after an append.
    pub fn after_append(&self, file: &FileStats) -> Option<RollReason> {
        if file.records >= self.max_records {
            Some(RollReason::Records)
        } else if file.bytes >= self.max_bytes {
            Some(RollReason::Bytes)
        } else {
            None
        }
    }

    /// Whether `file` should be closed now that its partition's newest event time is
    /// `partition_event_ms` and the wall clock says `now`.
    pub fn on_tick(
        &self,
        file: &FileStats,
        partition_event_ms: i64,
        now: Instant,
    ) -> Option<RollReason> {
        if partition_event_ms.saturating_sub(file.max_event_ms) >= self.event_time_interval_ms {
            Some(RollReason::Idle)
        } else if now.saturating_duration_since(file.opened_at)
            >= Duration::from_millis(self.max_open_ms)
        {
            Some(RollReason::Age)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RollingPolicy {
        RollingPolicy {
            max_records: 3,
            max_bytes: 1000,
            event_time_interval_ms: 60_000,
            max_open_ms: 5_000,
        }
    }

    fn stats(records: u64, bytes: u64) -> FileStats {
        FileStats {
            records,
            bytes,
            first_event_ms: 0,
            max_event_ms: 10_000,
            opened_at: Instant::now(),
        }
    }

    #[test]
    fn a_file_rolls_at_the_record_count() {
        assert_eq!(policy().after_append(&stats(2, 0)), None);
        assert_eq!(
            policy().after_append(&stats(3, 0)),
            Some(RollReason::Records)
        );
    }

    #[test]
    fn a_file_rolls_at_the_byte_size() {
        assert_eq!(
            policy().after_append(&stats(1, 1000)),
            Some(RollReason::Bytes)
        );
    }

    #[test]
    fn a_record_past_the_event_time_span_starts_a_new_file() {
        assert_eq!(policy().before_append(&stats(1, 0), 59_999), None);
        assert_eq!(
            policy().before_append(&stats(1, 0), 60_000),
            Some(RollReason::EventTime)
        );
    }

    #[test]
    fn a_file_left_behind_by_event_time_is_closed() {
        let now = Instant::now();
        assert_eq!(policy().on_tick(&stats(1, 0), 69_999, now), None);
        assert_eq!(
            policy().on_tick(&stats(1, 0), 70_000, now),
            Some(RollReason::Idle)
        );
    }

    #[test]
    fn an_old_file_is_closed_by_wall_clock() {
        let file = stats(1, 0);
        let later = file.opened_at + Duration::from_millis(5_000);
        assert_eq!(policy().on_tick(&file, 0, later), Some(RollReason::Age));
    }
}

//! Event time and watermarks.
//!
//! Every record carries an event time: milliseconds since the Unix epoch, the same unit as
//! Kafka's record timestamps. Windows close on the *watermark*, an estimate of how far event
//! time has progressed that tolerates a bounded amount of disorder.
//!
//! The [`WatermarkTracker`] follows the rules the rest of the crate relies on:
//! - per input partition, watermark = max event time seen − max out-of-orderness;
//! - the task's watermark is the minimum over partitions that are not idle, so a slow partition
//!   holds windows open rather than turning its records late;
//! - a partition that delivered nothing for `idle_timeout` of *processing* time stops holding
//!   the watermark back (a quiet partition must not stall every window forever);
//! - the task watermark never goes backwards, even when an idle partition wakes up behind it.
//!
//! Processing time is never read from the system clock here: callers pass `now` in, which keeps
//! the engine deterministic and its tests exact. The runtime passes wall-clock milliseconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Event time: milliseconds since the Unix epoch (Kafka's record timestamp unit).
pub type Timestamp = i64;

/// The watermark before any record was seen: every window is still open.
pub const MIN_WATERMARK: Timestamp = Timestamp::MIN;

/// Identifies an input partition within one task.
///
/// The runtime assigns it, and it must be stable across restarts because input offsets are
/// stored per partition in the state changelog (for example the position of
/// `(topic, partition)` in the job's sorted list of source topics).
pub type PartitionId = u32;

/// Converts a duration to milliseconds, saturating instead of overflowing.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Event-time progress of one input partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTime {
    /// The partition.
    pub partition: PartitionId,
    /// Largest event time seen on it, if any record was seen.
    pub max_event_time: Option<Timestamp>,
    /// Processing time (ms) of its last record or of its assignment; not persisted, because
    /// idleness is about this process's view of the partition.
    #[serde(skip)]
    pub last_activity: Timestamp,
}

/// Tracks per-partition event time and derives the task watermark.
///
/// Partitions are few per task (one per co-partitioned source topic), so they live in a small
/// vector and the minimum is recomputed by a linear scan when something changes.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    max_out_of_orderness: i64,
    idle_timeout: Option<i64>,
    partitions: Vec<PartitionTime>,
    watermark: Timestamp,
}

impl WatermarkTracker {
    /// A tracker tolerating `max_out_of_orderness` of disorder; with `idle_timeout` set, a
    /// partition silent for that long (processing time) stops holding the watermark back.
    pub fn new(max_out_of_orderness: Duration, idle_timeout: Option<Duration>) -> Self {
        Self {
            max_out_of_orderness: millis(max_out_of_orderness),
            idle_timeout: idle_timeout.map(millis),
            partitions: Vec::new(),
            watermark: MIN_WATERMARK,
        }
    }

    /// The current task watermark: no window ending before it accepts records any more.
    pub fn watermark(&self) -> Timestamp {
        self.watermark
    }

    /// The per-partition state, for checkpoints and metrics.
    pub fn partitions(&self) -> &[PartitionTime] {
        &self.partitions
    }

    /// Declares a partition assigned to this task at processing time `now`. Until it delivers
    /// a record (or goes idle) it holds the watermark back: we cannot know how old its first
    /// record will be.
    pub fn assign(&mut self, partition: PartitionId, now: Timestamp) {
        if let Some(p) = self
            .partitions
            .iter_mut()
            .find(|p| p.partition == partition)
        {
            p.last_activity = now;
        } else {
            self.partitions.push(PartitionTime {
                partition,
                max_event_time: None,
                last_activity: now,
            });
        }
        self.recompute(now);
    }

    /// Forgets a partition (revoked on rebalance), which may let the watermark advance.
    pub fn revoke(&mut self, partition: PartitionId, now: Timestamp) {
        self.partitions.retain(|p| p.partition != partition);
        self.recompute(now);
    }

    /// Records an event time seen on `partition` at processing time `now`; returns the new
    /// task watermark.
    pub fn observe(
        &mut self,
        partition: PartitionId,
        event_time: Timestamp,
        now: Timestamp,
    ) -> Timestamp {
        let idx = match self
            .partitions
            .iter()
            .position(|p| p.partition == partition)
        {
            Some(idx) => idx,
            None => {
                self.partitions.push(PartitionTime {
                    partition,
                    max_event_time: None,
                    last_activity: now,
                });
                self.partitions.len() - 1
            }
        };
        let p = &mut self.partitions[idx];
        let was_idle = self
            .idle_timeout
            .is_some_and(|t| now.saturating_sub(p.last_activity) >= t);
        p.last_activity = p.last_activity.max(now);
        let advanced = p.max_event_time.is_none_or(|m| event_time > m);
        if advanced {
            p.max_event_time = Some(event_time);
        }
        // The common case (in-order record, nobody idle) only needs a recompute when this
        // partition moved; waking from idle can also change which partitions count.
        if advanced || was_idle {
            self.recompute(now);
        }
        self.watermark
    }

    /// Lets processing time pass with no records (idle detection); returns the watermark.
    pub fn advance(&mut self, now: Timestamp) -> Timestamp {
        self.recompute(now);
        self.watermark
    }

    /// Restores event-time progress from a checkpoint; every partition counts as active now.
    pub fn restore(&mut self, partitions: &[PartitionTime], watermark: Timestamp, now: Timestamp) {
        for saved in partitions {
            match self
                .partitions
                .iter_mut()
                .find(|p| p.partition == saved.partition)
            {
                Some(p) => {
                    p.max_event_time = match (p.max_event_time, saved.max_event_time) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    p.last_activity = now;
                }
                None => self.partitions.push(PartitionTime {
                    last_activity: now,
                    ..*saved
                }),
            }
        }
        self.watermark = self.watermark.max(watermark);
        self.recompute(now);
    }

    /// Ends the input: every window may close (used for bounded input and tests).
    pub fn finish(&mut self) -> Timestamp {
        self.watermark = Timestamp::MAX;
        self.watermark
    }

    /// The furthest event time seen on any partition (`None` before any record).
    pub fn max_event_time(&self) -> Option<Timestamp> {
        self.partitions
            .iter()
            .filter_map(|p| p.max_event_time)
            .max()
    }

    /// After [`WatermarkTracker::finish`] closed every window, sets the watermark back to
    /// `watermark` so that input arriving after an end of input is processed normally
    /// instead of being late forever (and so that the watermark stored in checkpoints stays
    /// a real event time). Only the runtime's end of input uses it, right after the
    /// operators emptied their state: nothing already open can be reopened by it.
    pub(crate) fn rewind_after_finish(&mut self, watermark: Timestamp) {
        self.watermark = watermark;
    }

    fn partition_watermark(&self, p: &PartitionTime) -> Timestamp {
        p.max_event_time.map_or(MIN_WATERMARK, |m| {
            m.saturating_sub(self.max_out_of_orderness)
        })
    }

    fn recompute(&mut self, now: Timestamp) {
        let is_idle = |p: &PartitionTime| {
            self.idle_timeout
                .is_some_and(|t| now.saturating_sub(p.last_activity) >= t)
        };
        let active_min = self
            .partitions
            .iter()
            .filter(|p| !is_idle(p))
            .map(|p| self.partition_watermark(p))
            .min();
        // With every partition idle nothing holds time back: what was seen is all there is,
        // so the watermark may reach the furthest partition.
        let candidate = match active_min {
            Some(m) => m,
            None => self
                .partitions
                .iter()
                .map(|p| self.partition_watermark(p))
                .max()
                .unwrap_or(MIN_WATERMARK),
        };
        // Stream time never goes backwards: a partition waking up behind the watermark makes
        // its old records late instead of reopening closed windows.
        self.watermark = self.watermark.max(candidate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(ooo_ms: u64, idle_ms: Option<u64>) -> WatermarkTracker {
        WatermarkTracker::new(
            Duration::from_millis(ooo_ms),
            idle_ms.map(Duration::from_millis),
        )
    }

    #[test]
    fn watermark_is_max_event_time_minus_out_of_orderness() {
        let mut t = tracker(100, None);
        t.observe(0, 1_000, 0);
        t.observe(0, 900, 0);
        assert_eq!(t.watermark(), 900);
    }

    #[test]
    fn task_watermark_is_minimum_over_partitions() {
        let mut t = tracker(0, None);
        t.assign(0, 0);
        t.assign(1, 0);
        t.observe(0, 5_000, 0);
        t.observe(1, 2_000, 0);
        assert_eq!(t.watermark(), 2_000);
    }

    #[test]
    fn assigned_partition_without_records_holds_watermark_back() {
        let mut t = tracker(0, None);
        t.assign(1, 0);
        t.observe(0, 5_000, 0);
        assert_eq!(t.watermark(), MIN_WATERMARK);
    }

    #[test]
    fn idle_partition_stops_holding_watermark_back() {
        let mut t = tracker(0, Some(1_000));
        t.observe(1, 2_000, 0);
        t.observe(0, 5_000, 500);
        assert_eq!(t.watermark(), 2_000);
        t.observe(0, 6_000, 1_200);
        assert_eq!(t.watermark(), 6_000);
    }

    #[test]
    fn advance_detects_idleness_without_records() {
        let mut t = tracker(0, Some(1_000));
        t.observe(0, 5_000, 900);
        t.observe(1, 2_000, 0);
        assert_eq!(t.advance(1_000), 5_000);
    }

    #[test]
    fn watermark_never_goes_backwards_when_idle_partition_wakes_up() {
        let mut t = tracker(0, Some(1_000));
        t.observe(0, 5_000, 0);
        t.observe(1, 1_000, 0);
        t.observe(0, 6_000, 2_000);
        assert_eq!(t.watermark(), 6_000);
        t.observe(1, 1_500, 2_100);
        assert_eq!(t.watermark(), 6_000);
    }

    #[test]
    fn all_partitions_idle_lets_watermark_reach_the_furthest() {
        let mut t = tracker(10, Some(100));
        t.observe(0, 1_000, 0);
        t.observe(1, 3_000, 0);
        assert_eq!(t.advance(100), 2_990);
    }

    #[test]
    fn restore_resumes_event_time_progress() {
        let mut a = tracker(0, None);
        a.observe(0, 7_000, 0);
        let mut b = tracker(0, None);
        b.restore(a.partitions(), a.watermark(), 0);
        assert_eq!(b.watermark(), 7_000);
    }
}

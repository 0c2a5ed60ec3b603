//! Window definitions, with Kafka Streams semantics.
//!
//! | kind | built with | bounds |
//! |---|---|---|
//! | tumbling | [`Windows::tumbling`] | `[start, end)`, epoch-aligned, no overlap |
//! | hopping | [`Windows::hopping`] | `[start, end)`, epoch-aligned, a record lands in size/advance windows |
//! | sliding | [`Windows::sliding`] | `[start, end]` inclusive, one window per record entering or leaving a `diff` span |
//! | session | [`Windows::session`] | `[first, last]` inclusive, per key, merged when a record bridges two |
//!
//! Every window kind needs an explicit grace period: `.grace(d)` or `.no_grace()`. Kafka's
//! implicit 24 h default confused enough users that Kafka deprecated it (KIP-633); here the
//! type system refuses a window without one, because only [`Windows`] and [`SessionWindows`]
//! (not their builders) can be handed to the DSL.
//!
//! A window *closes* once the watermark passes its last millisecond plus the grace period
//! (for a session: its last record plus the inactivity gap plus grace). After that it emits its
//! final result, is evicted from state, and records that would have landed in it are late.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::{millis, Timestamp};

/// One window instance: bounds in event-time milliseconds. Whether `end` is inclusive depends
/// on the window kind (see the module table); outputs carry both as `window_start` and
/// `window_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// First millisecond covered.
    pub start: Timestamp,
    /// Exclusive end for tumbling and hopping windows, inclusive for sliding and session ones.
    pub end: Timestamp,
}

/// Epoch-aligned window kinds (tumbling and hopping); sliding and session windows, whose
/// bounds depend on the records, have their own types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed size, epoch-aligned, no overlap.
    Tumbling {
        /// Window length in ms.
        size: i64,
    },
    /// Fixed size, epoch-aligned starts every `advance` ms.
    Hopping {
        /// Window length in ms.
        size: i64,
        /// Distance between window starts in ms (at most `size`).
        advance: i64,
    },
}

/// A tumbling or hopping window definition waiting for its grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a window needs an explicit grace period: call .grace(d) or .no_grace()"]
pub struct WindowsBuilder {
    kind: WindowKind,
}

/// A complete tumbling or hopping window definition (kind and grace period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    kind: WindowKind,
    grace: i64,
}

/// A session window definition waiting for its grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a window needs an explicit grace period: call .grace(d) or .no_grace()"]
pub struct SessionWindowsBuilder {
    gap: i64,
}

/// A complete session window definition (inactivity gap and grace period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    gap: i64,
    grace: i64,
}

impl Windows {
    /// Tumbling windows of `size` (sizes under 1 ms count as 1 ms).
    pub fn tumbling(size: Duration) -> WindowsBuilder {
        WindowsBuilder {
            kind: WindowKind::Tumbling {
                size: millis(size).max(1),
            },
        }
    }

    /// Hopping windows of `size` starting every `advance` (clamped to `1..=size` ms).
    pub fn hopping(size: Duration, advance: Duration) -> WindowsBuilder {
        let size = millis(size).max(1);
        let advance = millis(advance).clamp(1, size);
        let kind = if advance == size {
            WindowKind::Tumbling { size }
        } else {
            WindowKind::Hopping { size, advance }
        };
        WindowsBuilder { kind }
    }

    /// Sliding windows: two records share a window when their times differ by at most `diff`.
    pub fn sliding(diff: Duration) -> SlidingWindowsBuilder {
        SlidingWindowsBuilder {
            diff: millis(diff).max(0),
        }
    }

    /// Session windows closed after `gap` of inactivity, per key.
    pub fn session(gap: Duration) -> SessionWindowsBuilder {
        SessionWindowsBuilder {
            gap: millis(gap).max(0),
        }
    }

    /// The window kind.
    pub fn kind(&self) -> WindowKind {
        self.kind
    }

    /// The grace period in ms.
    pub fn grace_ms(&self) -> i64 {
        self.grace
    }

    /// Length of every window in ms.
    pub fn size_ms(&self) -> i64 {
        match self.kind {
            WindowKind::Tumbling { size } | WindowKind::Hopping { size, .. } => size,
        }
    }

    /// The windows a record at `t` falls into, oldest first.
    pub fn assign(&self, t: Timestamp) -> impl Iterator<Item = Window> {
        let (size, advance) = match self.kind {
            WindowKind::Tumbling { size } => (size, size),
            WindowKind::Hopping { size, advance } => (size, advance),
        };
        let last_start = t - t.rem_euclid(advance);
        // Windows [s, s + size) with s ≡ 0 mod advance and s ≤ t < s + size.
        let count = (size - 1) / advance + 1;
        let first_start = last_start.saturating_sub((count - 1) * advance);
        (0..count).filter_map(move |i| {
            let start = first_start.saturating_add(i * advance);
            let end = start.saturating_add(size);
            (start <= t && t < end).then_some(Window { start, end })
        })
    }

    /// The watermark at which `window` closes: once the watermark reaches it, the window emits
    /// its final result and records for it are late.
    pub fn close_at(&self, window: Window) -> Timestamp {
        // The end is exclusive: the last covered millisecond is end - 1.
        window.end.saturating_add(self.grace)
    }

    /// Whether `window` is closed under `watermark`.
    pub fn is_closed(&self, window: Window, watermark: Timestamp) -> bool {
        watermark >= self.close_at(window)
    }
}

impl WindowsBuilder {
    /// Accepts records up to `grace` after a window ends (by watermark).
    pub fn grace(self, grace: Duration) -> Windows {
        Windows {
            kind: self.kind,
            grace: millis(grace),
        }
    }

    /// Closes windows as soon as the watermark passes their end.
    pub fn no_grace(self) -> Windows {
        self.grace(Duration::ZERO)
    }
}

/// A sliding window definition waiting for its grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a window needs an explicit grace period: call .grace(d) or .no_grace()"]
pub struct SlidingWindowsBuilder {
    diff: i64,
}

/// A complete sliding window definition (Kafka's `SlidingWindows`): `diff` and grace period.
///
/// The windows are defined by the records (see [`sliding_windows`]); aggregate them with
/// `Stream::sliding_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    diff: i64,
    grace: i64,
}

impl SlidingWindowsBuilder {
    /// Accepts records up to `grace` after a window ends (by watermark).
    pub fn grace(self, grace: Duration) -> SlidingWindows {
        SlidingWindows {
            diff: self.diff,
            grace: millis(grace),
        }
    }

    /// Closes windows as soon as the watermark passes their end.
    pub fn no_grace(self) -> SlidingWindows {
        self.grace(Duration::ZERO)
    }
}

impl SlidingWindows {
    /// Maximum time difference between two records of one window, in ms.
    pub fn diff_ms(&self) -> i64 {
        self.diff
    }

    /// The grace period in ms.
    pub fn grace_ms(&self) -> i64 {
        self.grace
    }

    /// The watermark at which `window` closes; its end is inclusive, so that is end + 1 + grace.
    pub fn close_at(&self, window: Window) -> Timestamp {
        window.end.saturating_add(1).saturating_add(self.grace)
    }

    /// Whether `window` is closed under `watermark`.
    pub fn is_closed(&self, window: Window, watermark: Timestamp) -> bool {
        watermark >= self.close_at(window)
    }

    /// The windows defined by a set of record times (see [`sliding_windows`]).
    pub fn windows_for(&self, times: &[Timestamp]) -> Vec<Window> {
        sliding_windows(times, self.diff)
    }
}

impl SessionWindowsBuilder {
    /// Accepts records up to `grace` after a session could last have been extended.
    pub fn grace(self, grace: Duration) -> SessionWindows {
        SessionWindows {
            gap: self.gap,
            grace: millis(grace),
        }
    }

    /// Closes sessions as soon as the watermark passes their end plus the gap.
    pub fn no_grace(self) -> SessionWindows {
        self.grace(Duration::ZERO)
    }
}

impl SessionWindows {
    /// The inactivity gap in ms: records at most this far apart share a session.
    pub fn gap_ms(&self) -> i64 {
        self.gap
    }

    /// The grace period in ms.
    pub fn grace_ms(&self) -> i64 {
        self.grace
    }

    /// Whether a record at `t` is late: it could only extend sessions that are already closed.
    pub fn is_late(&self, t: Timestamp, watermark: Timestamp) -> bool {
        watermark > t.saturating_add(self.grace)
    }

    /// Whether a record at `t` joins the session `window` (possibly bridging it with others).
    pub fn touches(&self, window: Window, t: Timestamp) -> bool {
        t >= window.start.saturating_sub(self.gap) && t <= window.end.saturating_add(self.gap)
    }

    /// The watermark at which a session closes: no record that is not late can reach it.
    pub fn close_at(&self, window: Window) -> Timestamp {
        window
            .end
            .saturating_add(self.gap)
            .saturating_add(self.grace)
            .saturating_add(1)
    }
}

/// The sliding windows (Kafka `SlidingWindows` semantics) defined by a set of record times:
/// for every record at `t` the window `[t - diff, t]` ending with it, and the window
/// `[t + 1, t + 1 + diff]` starting just after it when that one holds any record. Returned
/// sorted and deduplicated; this is the batch definition the incremental operator must match.
pub fn sliding_windows(times: &[Timestamp], diff: i64) -> Vec<Window> {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::with_capacity(sorted.len() * 2);
    for &t in &sorted {
        out.push(Window {
            start: t.saturating_sub(diff),
            end: t,
        });
        let right = Window {
            start: t.saturating_add(1),
            end: t.saturating_add(1).saturating_add(diff),
        };
        let first_after = sorted.partition_point(|&x| x < right.start);
        if sorted.get(first_after).is_some_and(|&x| x <= right.end) {
            out.push(right);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn starts(w: &Windows, t: Timestamp) -> Vec<Timestamp> {
        w.assign(t).map(|w| w.start).collect()
    }

    #[test]
    fn tumbling_window_is_epoch_aligned_half_open() {
        let w = Windows::tumbling(60 * S).no_grace();
        assert_eq!(
            w.assign(119_999).collect::<Vec<_>>(),
            vec![Window {
                start: 60_000,
                end: 120_000
            }]
        );
    }

    #[test]
    fn tumbling_window_end_belongs_to_the_next_window() {
        let w = Windows::tumbling(60 * S).no_grace();
        assert_eq!(starts(&w, 120_000), vec![120_000]);
    }

    #[test]
    fn negative_timestamps_align_to_the_epoch() {
        let w = Windows::tumbling(10 * S).no_grace();
        assert_eq!(starts(&w, -1), vec![-10_000]);
    }

    #[test]
    fn hopping_record_lands_in_size_over_advance_windows() {
        let w = Windows::hopping(60 * S, 20 * S).no_grace();
        assert_eq!(starts(&w, 70_000), vec![20_000, 40_000, 60_000]);
    }

    #[test]
    fn hopping_with_uneven_advance_covers_every_containing_window() {
        let w = Windows::hopping(Duration::from_millis(10), Duration::from_millis(3)).no_grace();
        assert_eq!(starts(&w, 10), vec![3, 6, 9]);
    }

    #[test]
    fn hopping_with_advance_equal_to_size_is_tumbling() {
        let w = Windows::hopping(60 * S, 60 * S).no_grace();
        assert_eq!(w.kind(), WindowKind::Tumbling { size: 60_000 });
    }

    #[test]
    fn window_closes_when_watermark_passes_end_plus_grace() {
        let w = Windows::tumbling(60 * S).grace(5 * S);
        let win = Window {
            start: 0,
            end: 60_000,
        };
        assert!(!w.is_closed(win, 64_999));
        assert!(w.is_closed(win, 65_000));
    }

    #[test]
    fn sliding_window_end_is_inclusive_for_closing() {
        let w = Windows::sliding(10 * S).no_grace();
        let win = Window {
            start: 0,
            end: 10_000,
        };
        assert!(!w.is_closed(win, 10_000));
        assert!(w.is_closed(win, 10_001));
    }

    #[test]
    fn sliding_windows_follow_kafka_definition() {
        let got = sliding_windows(&[10, 15], 5);
        let want = vec![
            Window { start: 5, end: 10 },
            Window { start: 10, end: 15 },
            Window { start: 11, end: 16 },
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn session_record_within_gap_touches_session() {
        let s = Windows::session(10 * S).no_grace();
        let win = Window {
            start: 100_000,
            end: 120_000,
        };
        assert!(s.touches(win, 130_000) && !s.touches(win, 130_001));
    }

    #[test]
    fn session_closes_after_end_plus_gap_plus_grace() {
        let s = Windows::session(10 * S).grace(S);
        let win = Window { start: 0, end: 0 };
        assert_eq!(s.close_at(win), 11_001);
    }
}

//! Windows and the stateful steps that keep records or accumulators per key and time:
//!
//! - [`definition`]: what a window is (tumbling, hopping, sliding, session), with grace;
//! - [`fixed`]: tumbling and hopping window aggregates ([`WindowAggregate`]);
//! - [`session`]: session window aggregates ([`SessionAggregate`]);
//! - [`sliding`]: sliding window aggregates ([`SlidingAggregate`]);
//! - [`join`]: windowed stream-stream joins ([`WindowJoin`]);
//! - [`dedupe`]: duplicate removal within an event-time horizon ([`Dedupe`]).
//!
//! Every one of them is an [`Operator`](crate::Operator) over state that lives where the
//! [`StateBackend`](crate::StateBackend) says; the scaffolding they share (replay skipping,
//! late records, checkpoint and restore) is written once, in [`crate::operator`].

pub mod dedupe;
pub mod definition;
pub mod fixed;
pub mod join;
pub mod session;
pub mod sliding;

use serde::Serialize;

use crate::time::Timestamp;

pub use dedupe::Dedupe;
pub use definition::{
    sliding_windows, SessionWindows, SessionWindowsBuilder, SlidingWindows, SlidingWindowsBuilder,
    Window, WindowKind, Windows, WindowsBuilder,
};
pub use fixed::WindowAggregate;
pub use join::{JoinWindows, Side, WindowJoin};
pub use session::SessionAggregate;
pub use sliding::SlidingAggregate;

/// When a windowed aggregate emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitMode {
    /// On every update: each record produces the window's current result (Kafka's default,
    /// Quix's `.current()`). Fast feedback; downstream sees intermediate values.
    #[default]
    Update,
    /// Once, when the window closes (Kafka's `suppress(untilWindowCloses)`, Quix's
    /// `.final()`). One result per window, delayed by the grace period.
    Final,
}

/// One open window as a row: `key`, `window_start`, `window_end`, `value`.
pub(crate) fn window_row<K: Serialize, A: Serialize>(
    key: &K,
    start: Timestamp,
    end: Timestamp,
    acc: &A,
) -> serde_json::Value {
    serde_json::json!({
        "key": serde_json::to_value(key).unwrap_or(serde_json::Value::Null),
        "window_start": start,
        "window_end": end,
        "value": serde_json::to_value(acc).unwrap_or(serde_json::Value::Null),
    })
}

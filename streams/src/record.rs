//! Records flowing through a pipeline, and the windowed and late records operators produce.

use serde::{Deserialize, Serialize};

use crate::time::{PartitionId, Timestamp};

/// Offset of a record that did not come from a partition (tests, in-process feeds): it is
/// never treated as a replay.
pub const NO_OFFSET: i64 = -1;

/// A keyed record with its event time and its input position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<K, V> {
    /// The key; stateful steps group by it.
    pub key: K,
    /// The value.
    pub value: V,
    /// Event time in ms since the epoch.
    pub timestamp: Timestamp,
    /// Input partition the record (or the input record it was derived from) came from.
    pub partition: PartitionId,
    /// Offset of the input record in that partition, or [`NO_OFFSET`].
    pub offset: i64,
}

impl<K, V> Record<K, V> {
    /// A record at event time `timestamp`, on partition 0 with no offset.
    pub fn new(key: K, value: V, timestamp: Timestamp) -> Self {
        Self {
            key,
            value,
            timestamp,
            partition: 0,
            offset: NO_OFFSET,
        }
    }

    /// The same record, read from `partition` at `offset`.
    #[must_use]
    pub fn at(mut self, partition: PartitionId, offset: i64) -> Self {
        self.partition = partition;
        self.offset = offset;
        self
    }
}

/// The key of a windowed aggregate's output: the grouping key and the window bounds.
///
/// Tumbling and hopping windows are `[window_start, window_end)`; session windows are
/// `[window_start, window_end]` (first and last record).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Windowed<K> {
    /// The grouping key.
    pub key: K,
    /// Window start, ms since the epoch.
    pub window_start: Timestamp,
    /// Window end, ms since the epoch.
    pub window_end: Timestamp,
}

/// A record that arrived after every window it belonged to had closed (or, for dedupe, after
/// its id could no longer be checked). It is not processed; this side output says which input
/// record it was, so the runtime can route the original bytes to a late-records topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateRecord {
    /// Name of the operator (and state store) that refused it.
    pub operator: String,
    /// Event time of the record.
    pub timestamp: Timestamp,
    /// The watermark when it arrived.
    pub watermark: Timestamp,
    /// Input partition.
    pub partition: PartitionId,
    /// Input offset.
    pub offset: i64,
}

//! The `.timeindex`: sparse timestamp -> offset entries for ListOffsets by time.
//!
//! An entry `(t, o)` says: the batch at relative offset `o` is the first in the segment whose
//! max timestamp reached `t`, so every record before it is older than `t`. Entries are appended
//! only when the segment's max timestamp grows, which keeps them sorted by timestamp.

use super::index::IndexEntry;

/// A time index entry: timestamp (i64 BE) and relative offset of the batch (u32 BE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    type Key = i64;

    fn key(&self) -> i64 {
        self.timestamp
    }

    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::log::index::{write_index_file, SparseIndex};
    use proptest::prelude::*;

    fn entries_from(mut ts: Vec<i64>) -> Vec<TimeEntry> {
        ts.sort_unstable();
        ts.dedup();
        ts.into_iter()
            .enumerate()
            .map(|(i, t)| TimeEntry {
                timestamp: t,
                relative_offset: i as u32 * 10,
            })
            .collect()
    }

    #[test]
    fn file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let entries = entries_from(vec![-1, 0, 1_700_000_000_000, i64::MAX]);
        write_index_file(&path, &entries).unwrap();
        let idx = SparseIndex::<TimeEntry>::open_file(&path).unwrap();
        assert_eq!(idx.entries().unwrap(), entries);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * 12);
    }

    proptest! {
        #[test]
        fn lookup_returns_greatest_entry_at_or_below_target(
            ts in proptest::collection::vec(any::<i64>(), 0..200),
            targets in proptest::collection::vec(any::<i64>(), 1..20),
        ) {
            let entries = entries_from(ts);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.timeindex");
            write_index_file(&path, &entries).unwrap();
            let file_idx = SparseIndex::<TimeEntry>::open_file(&path).unwrap();
            let mem_idx = SparseIndex::Memory(entries.clone());
            for t in targets {
                let want = entries.iter().filter(|e| e.timestamp <= t).max_by_key(|e| e.timestamp).copied();
                prop_assert_eq!(mem_idx.lookup(t).unwrap(), want);
                prop_assert_eq!(file_idx.lookup(t).unwrap(), want);
            }
        }
    }
}

//! Partition storage: segmented append-only logs with sparse indexes.

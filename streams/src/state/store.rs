//! Keyed state stores and their changelog.
//!
//! A [`KeyValueStore`] maps byte keys to byte values, ordered by key so that operators can lay
//! out keys for range scans (all windows of a key, all entries older than a time). Every store
//! remembers the writes made since the last [`KeyValueStore::take_changes`]: that batch is what
//! the runtime appends to the store's compacted changelog topic at commit, and
//! [`KeyValueStore::restore`] replays such batches when a task starts or moves.
//!
//! Values are encoded with [`postcard`] (serde, varint integers, no field names): compact, and
//! stable for a given Rust type. Keys that must sort by time use [`encode_time`], a big-endian
//! form of `i64` whose byte order matches numeric order.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StreamsError;

/// One changelog entry: the latest value of a key, or `None` for a deletion (a tombstone in
/// the compacted topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The store key.
    pub key: Vec<u8>,
    /// The new value, or `None` when the key was deleted.
    pub value: Option<Vec<u8>>,
}

/// Key-value pairs read from a store, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One key-value pair read from a store.
pub type Entry = (Vec<u8>, Vec<u8>);

/// An ordered byte key-value store that records its changes for a changelog.
///
/// The model is Kafka Streams' changelogged store: writes go to the local store and are also
/// collected, the runtime ships the collection at commit, and a restore replays it. Methods
/// return `Result` so that on-disk implementations can report I/O errors; the in-memory one
/// never fails.
pub trait KeyValueStore: Send {
    /// The value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StreamsError>;

    /// Stores `value` under `key` and records the change.
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StreamsError>;

    /// Deletes `key` (a no-op when absent) and records a tombstone.
    fn delete(&mut self, key: &[u8]) -> Result<(), StreamsError>;

    /// Entries with keys in `(from, to)`, in key order.
    fn range(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<Entries, StreamsError>;

    /// The first entry with a key in `(from, to)`. On-disk stores answer without reading
    /// the rest of the range.
    fn first(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<Option<Entry>, StreamsError> {
        Ok(self.range(from, to)?.into_iter().next())
    }

    /// At most `limit` entries with keys in `(from, to)`, in key order: a scan in chunks,
    /// so that reading a large on-disk store never holds all of it in memory.
    fn scan(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StreamsError> {
        let mut all = self.range(from, to)?;
        all.truncate(limit);
        Ok(all)
    }

    /// Entries whose key starts with `prefix`, in key order.
    fn prefix(&self, prefix: &[u8]) -> Result<Entries, StreamsError> {
        // A bounded range: on disk, a scan to the end of the store would read all of it.
        match prefix_end(prefix) {
            Some(end) => self.range(Bound::Included(prefix), Bound::Excluded(&end)),
            None => self.range(Bound::Included(prefix), Bound::Unbounded),
        }
    }

    /// Makes buffered writes durable in the store's own storage, reporting failures (the
    /// in-memory store has nothing to do). Called at each checkpoint before
    /// [`KeyValueStore::take_changes`], so that a failing disk stops the commit.
    fn flush(&mut self) -> Result<(), StreamsError> {
        Ok(())
    }

    /// The changes since the previous call, one per key (the last write wins, as it would
    /// after compaction), in key order.
    fn take_changes(&mut self) -> Vec<Change>;

    /// Applies changelog entries without recording them as new changes.
    fn restore(&mut self, changes: Vec<Change>) -> Result<(), StreamsError>;

    /// Number of keys stored.
    fn len(&self) -> usize;

    /// Whether the store holds no keys.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The in-memory store: a `BTreeMap` plus the pending changes.
///
/// Pending changes are appended to a log (cheaper per write than a second ordered map) and
/// compacted to one change per key when taken: the changelog topic is compacted anyway, and a
/// value rewritten many times between commits then ships once.
#[derive(Debug, Default, Clone)]
pub struct InMemoryStore {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    pending: Vec<Change>,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl KeyValueStore for InMemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StreamsError> {
        Ok(self.entries.get(key).cloned())
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StreamsError> {
        self.pending.push(Change {
            key: key.clone(),
            value: Some(value.clone()),
        });
        self.entries.insert(key, value);
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StreamsError> {
        // Deleting an absent key needs no tombstone. A key written and deleted between two
        // commits still gets one: the store cannot know whether an earlier batch shipped it,
        // and a tombstone for an unknown key is harmless after compaction.
        if let Some((key, _)) = self.entries.remove_entry(key) {
            self.pending.push(Change { key, value: None });
        }
        Ok(())
    }

    fn range(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<Entries, StreamsError> {
        Ok(self
            .entries
            .range::<[u8], _>((from, to))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn first(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<Option<Entry>, StreamsError> {
        Ok(self
            .entries
            .range::<[u8], _>((from, to))
            .next()
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn scan(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StreamsError> {
        Ok(self
            .entries
            .range::<[u8], _>((from, to))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn take_changes(&mut self) -> Vec<Change> {
        let mut changes = std::mem::take(&mut self.pending);
        // Stable sort keeps writes to one key in order; then keep the last of each run.
        changes.sort_by(|a, b| a.key.cmp(&b.key));
        let mut compacted: Vec<Change> = Vec::with_capacity(changes.len());
        for change in changes {
            match compacted.last_mut() {
                Some(last) if last.key == change.key => *last = change,
                _ => compacted.push(change),
            }
        }
        compacted
    }

    fn restore(&mut self, changes: Vec<Change>) -> Result<(), StreamsError> {
        for Change { key, value } in changes {
            match value {
                Some(v) => self.entries.insert(key, v),
                None => self.entries.remove(&key),
            };
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Calls `f` with at most `cap` entries from `from` (inclusive) up to `to`, in key order,
/// reading `chunk` entries per scan: memory holds one chunk besides what `f` keeps, however
/// large the store (on-disk snapshots read stores larger than memory this way). Returns the
/// number of entries visited.
pub(crate) fn scan_in_chunks(
    store: &dyn KeyValueStore,
    from: &[u8],
    to: Bound<&[u8]>,
    cap: usize,
    chunk: usize,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StreamsError>,
) -> Result<usize, StreamsError> {
    let mut next = from.to_vec();
    let mut included = true;
    let mut visited = 0;
    while visited < cap {
        let lower = if included {
            Bound::Included(next.as_slice())
        } else {
            Bound::Excluded(next.as_slice())
        };
        let entries = store.scan(lower, to, (cap - visited).min(chunk.max(1)))?;
        let Some((last, _)) = entries.last() else {
            break;
        };
        let last = last.clone();
        for (k, v) in &entries {
            f(k, v)?;
        }
        visited += entries.len();
        next = last;
        included = false;
    }
    Ok(visited)
}

/// The first key after every key that starts with `prefix` (`None`: no such key, the prefix
/// is empty or all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Encodes a value for the store.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StreamsError> {
    postcard::to_stdvec(value).map_err(|e| StreamsError::Encode(e.to_string()))
}

/// Appends the encoding of `value` to `buf` (used to build composite keys without copies).
pub fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
) -> Result<(), StreamsError> {
    let encoded = postcard::to_extend(value, std::mem::take(buf))
        .map_err(|e| StreamsError::Encode(e.to_string()))?;
    *buf = encoded;
    Ok(())
}

/// Decodes a value read from the store (or a changelog).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StreamsError> {
    postcard::from_bytes(bytes).map_err(|e| StreamsError::Decode(e.to_string()))
}

/// Decodes a value from the front of `bytes`, returning the rest.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), StreamsError> {
    postcard::take_from_bytes(bytes).map_err(|e| StreamsError::Decode(e.to_string()))
}

/// A time as 8 bytes whose lexicographic order is numeric order (sign bit flipped).
pub fn encode_time(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// Reads a time written by [`encode_time`] from the front of `bytes`.
pub fn decode_time(bytes: &[u8]) -> Result<(i64, &[u8]), StreamsError> {
    let (head, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| StreamsError::Decode("truncated timestamp in store key".into()))?;
    Ok(((u64::from_be_bytes(*head) ^ (1 << 63)) as i64, rest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn put_then_get_returns_value() {
        let mut s = InMemoryStore::new();
        s.put(b"k".to_vec(), b"v".to_vec()).unwrap();
        assert_eq!(s.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn take_changes_keeps_last_write_per_key() {
        let mut s = InMemoryStore::new();
        s.put(b"k".to_vec(), b"1".to_vec()).unwrap();
        s.put(b"k".to_vec(), b"2".to_vec()).unwrap();
        assert_eq!(
            s.take_changes(),
            vec![Change {
                key: b"k".to_vec(),
                value: Some(b"2".to_vec())
            }]
        );
    }

    #[test]
    fn take_changes_empties_the_pending_batch() {
        let mut s = InMemoryStore::new();
        s.put(b"k".to_vec(), b"1".to_vec()).unwrap();
        s.take_changes();
        assert!(s.take_changes().is_empty());
    }

    #[test]
    fn delete_of_committed_key_records_tombstone() {
        let mut s = InMemoryStore::new();
        s.put(b"k".to_vec(), b"1".to_vec()).unwrap();
        s.take_changes();
        s.delete(b"k").unwrap();
        assert_eq!(
            s.take_changes(),
            vec![Change {
                key: b"k".to_vec(),
                value: None
            }]
        );
    }

    #[test]
    fn delete_of_absent_key_leaves_no_change() {
        let mut s = InMemoryStore::new();
        s.delete(b"k").unwrap();
        assert!(s.take_changes().is_empty());
    }

    #[test]
    fn restore_replays_changes_into_fresh_store() {
        let mut a = InMemoryStore::new();
        a.put(b"a".to_vec(), b"1".to_vec()).unwrap();
        a.put(b"b".to_vec(), b"2".to_vec()).unwrap();
        let first = a.take_changes();
        a.delete(b"a").unwrap();
        let second = a.take_changes();
        let mut b = InMemoryStore::new();
        b.restore(first).unwrap();
        b.restore(second).unwrap();
        assert_eq!(
            b.range(Bound::Unbounded, Bound::Unbounded).unwrap(),
            vec![(b"b".to_vec(), b"2".to_vec())]
        );
    }

    #[test]
    fn restore_does_not_record_changes() {
        let mut s = InMemoryStore::new();
        s.restore(vec![Change {
            key: b"k".to_vec(),
            value: Some(b"v".to_vec()),
        }])
        .unwrap();
        assert!(s.take_changes().is_empty());
    }

    #[test]
    fn prefix_scan_stops_at_first_other_key() {
        let mut s = InMemoryStore::new();
        for k in [&b"a1"[..], b"b1", b"b2", b"c1"] {
            s.put(k.to_vec(), vec![]).unwrap();
        }
        let keys: Vec<_> = s
            .prefix(b"b")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"b1".to_vec(), b"b2".to_vec()]);
    }

    #[test]
    fn prefix_scan_handles_trailing_ff_bytes() {
        let mut s = InMemoryStore::new();
        for k in [&b"a\xff"[..], b"a\xff\x01", b"b", b"\xff\xff"] {
            s.put(k.to_vec(), vec![]).unwrap();
        }
        let keys = |p: &[u8]| -> Vec<Vec<u8>> {
            s.prefix(p).unwrap().into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(
            keys(b"a\xff"),
            vec![b"a\xff".to_vec(), b"a\xff\x01".to_vec()]
        );
        assert_eq!(keys(b"\xff"), vec![b"\xff\xff".to_vec()]);
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    #[test]
    fn encoded_times_sort_numerically() {
        let mut times = vec![5i64, -3, i64::MIN, 0, i64::MAX, -1];
        let mut encoded: Vec<_> = times.iter().map(|&t| encode_time(t)).collect();
        encoded.sort();
        times.sort();
        let decoded: Vec<_> = encoded.iter().map(|e| decode_time(e).unwrap().0).collect();
        assert_eq!(decoded, times);
    }

    #[test]
    fn values_round_trip_through_postcard() {
        let v = ("key".to_string(), 42u64, Some(-7i64));
        assert_eq!(
            decode::<(String, u64, Option<i64>)>(&encode(&v).unwrap()).unwrap(),
            v
        );
    }
}

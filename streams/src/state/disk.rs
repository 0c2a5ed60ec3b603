//! An on-disk [`KeyValueStore`] for state larger than memory, on [`redb`] (an embedded,
//! pure-Rust B-tree store).
//!
//! The compacted changelog topic stays the durable copy of the state: the file is a local
//! working copy, created empty when the store opens and removed when it is dropped, and
//! filled by [`KeyValueStore::restore`] from the changelog like an in-memory store. So redb's
//! commits need no fsync (`Durability::None`), and a crash can never leave a file that
//! disagrees with the changelog.
//!
//! Writes go to an in-memory buffer first (the keys written since the last flush, usually the
//! hot set of keys being updated) and reach the file in one write transaction when the buffer
//! grows past [`DiskStore::FLUSH_ENTRIES`] and at every [`KeyValueStore::take_changes`] (each
//! commit). Memory is therefore bounded by the keys touched between two commits, not by the
//! state. Reads see the buffer over the file.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use crate::error::StreamsError;
use crate::state::store::{Change, Entries, Entry, KeyValueStore};

const TABLE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("state");

/// Distinguishes the files of the stores of one process.
static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// A key-value store in a redb file, with a write buffer and changelog capture.
pub struct DiskStore {
    db: Database,
    path: PathBuf,
    /// Writes not yet in the file (`None`: deleted).
    buffer: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The latest write per key since the last `take_changes`: the next changelog batch.
    changed: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.path)
            .field("buffered", &self.buffer.len())
            .finish()
    }
}

fn io(context: &str, error: impl std::fmt::Display) -> StreamsError {
    StreamsError::Store(format!("{context}: {error}"))
}

impl DiskStore {
    /// Buffered writes that trigger a flush to the file between commits.
    pub const FLUSH_ENTRIES: usize = 65_536;

    /// Page cache of each store file.
    pub const CACHE_BYTES: usize = 32 << 20;

    /// Creates an empty store in a new file in `dir` (created if missing), named after
    /// `name`. The file is removed when the store is dropped.
    pub fn create(dir: &Path, name: &str) -> Result<Self, StreamsError> {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the state directory", e))?;
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!(
            "{safe}-{}-{}.redb",
            std::process::id(),
            NEXT_FILE.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier process with the same id: the changelog is the truth, so
        // start from nothing.
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| io("removing an old state file", e))?;
        }
        // redb's default page cache is 1 GiB per database; a job has a store per stateful
        // step and task, and on-disk state is chosen to bound memory, so keep it small.
        let db = Database::builder()
            .set_cache_size(Self::CACHE_BYTES)
            .create(&path)
            .map_err(|e| io("creating the state file", e))?;
        let store = DiskStore {
            db,
            path,
            buffer: BTreeMap::new(),
            changed: BTreeMap::new(),
        };
        store.write(std::iter::empty())?;
        Ok(store)
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `entries` to the file in one transaction.
    fn write<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Result<(), StreamsError> {
        let mut tx = self
            .db
            .begin_write()
            .map_err(|e| io("starting a state write", e))?;
        // The changelog is the durable copy; the file is rebuilt from it after a crash.
        tx.set_durability(Durability::None)
            .map_err(|e| io("setting the state durability", e))?;
        {
            let mut table = tx
                .open_table(TABLE)
                .map_err(|e| io("opening the state table", e))?;
            for (key, value) in entries {
                match value {
                    Some(v) => {
                        table.insert(key, v).map_err(|e| io("writing state", e))?;
                    }
                    None => {
                        table.remove(key).map_err(|e| io("deleting state", e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| io("committing state", e))
    }

    /// Moves the buffered writes to the file (kept buffered if that fails).
    fn flush_buffer(&mut self) -> Result<(), StreamsError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.write(
            self.buffer
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref())),
        )?;
        self.buffer.clear();
        Ok(())
    }

    fn file_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StreamsError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| io("starting a state read", e))?;
        let table = tx
            .open_table(TABLE)
            .map_err(|e| io("opening the state table", e))?;
        Ok(table
            .get(key)
            .map_err(|e| io("reading state", e))?
            .map(|v| v.value().to_vec()))
    }

    fn buffered_write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StreamsError> {
        self.changed.insert(key.clone(), value.clone());
        self.buffer.insert(key, value);
        if self.buffer.len() >= Self::FLUSH_ENTRIES {
            self.flush_buffer()?;
        }
        Ok(())
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        // A working copy only: nothing is lost with it.
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::debug!(path = %self.path.display(), %error, "removing a state file");
        }
    }
}

impl KeyValueStore for DiskStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StreamsError> {
        match self.buffer.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.file_get(key),
        }
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StreamsError> {
        self.buffered_write(key, Some(value))
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StreamsError> {
        // As the in-memory store: no tombstone for a key that was never there.
        if self.get(key)?.is_none() && !self.changed.contains_key(key) {
            return Ok(());
        }
        self.buffered_write(key.to_vec(), None)
    }

    fn range(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<Entries, StreamsError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| io("starting a state read", e))?;
        let table = tx
            .open_table(TABLE)
            .map_err(|e| io("opening the state table", e))?;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for entry in table
            .range::<&[u8]>((from, to))
            .map_err(|e| io("scanning state", e))?
        {
            let (k, v) = entry.map_err(|e| io("scanning state", e))?;
            merged.insert(k.value().to_vec(), v.value().to_vec());
        }
        for (k, v) in self.buffer.range::<[u8], _>((from, to)) {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    fn scan(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StreamsError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tx = self
            .db
            .begin_read()
            .map_err(|e| io("starting a state read", e))?;
        let table = tx
            .open_table(TABLE)
            .map_err(|e| io("opening the state table", e))?;
        // The first `limit` entries of the merged view are among the first `limit` live
        // entries of the file (with buffered values over them) and the first `limit` live
        // buffered entries.
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut from_file = 0;
        for entry in table
            .range::<&[u8]>((from, to))
            .map_err(|e| io("scanning state", e))?
        {
            if from_file >= limit {
                break;
            }
            let (k, v) = entry.map_err(|e| io("scanning state", e))?;
            let k = k.value();
            match self.buffer.get(k) {
                Some(None) => continue,
                Some(Some(newer)) => merged.insert(k.to_vec(), newer.clone()),
                None => merged.insert(k.to_vec(), v.value().to_vec()),
            };
            from_file += 1;
        }
        for (k, v) in self
            .buffer
            .range::<[u8], _>((from, to))
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
            .take(limit)
        {
            merged.insert(k.clone(), v.clone());
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    fn flush(&mut self) -> Result<(), StreamsError> {
        self.flush_buffer()
    }

    fn first(&self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Result<Option<Entry>, StreamsError> {
        let buffered = self
            .buffer
            .range::<[u8], _>((from, to))
            .find_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())));
        let tx = self
            .db
            .begin_read()
            .map_err(|e| io("starting a state read", e))?;
        let table = tx
            .open_table(TABLE)
            .map_err(|e| io("opening the state table", e))?;
        let mut in_file = None;
        for entry in table
            .range::<&[u8]>((from, to))
            .map_err(|e| io("scanning state", e))?
        {
            let (k, v) = entry.map_err(|e| io("scanning state", e))?;
            let k = k.value();
            match self.buffer.get(k) {
                // Deleted since the last flush.
                Some(None) => continue,
                Some(Some(newer)) => in_file = Some((k.to_vec(), newer.clone())),
                None => in_file = Some((k.to_vec(), v.value().to_vec())),
            }
            break;
        }
        Ok(match (buffered, in_file) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        })
    }

    fn take_changes(&mut self) -> Vec<Change> {
        // Operators flush (fallibly) before taking changes; what the file has or not does
        // not change the batch, which comes from memory.
        if let Err(error) = self.flush_buffer() {
            tracing::warn!(path = %self.path.display(), %error, "state stays buffered");
        }
        std::mem::take(&mut self.changed)
            .into_iter()
            .map(|(key, value)| Change { key, value })
            .collect()
    }

    fn restore(&mut self, changes: Vec<Change>) -> Result<(), StreamsError> {
        self.flush_buffer()?;
        self.write(
            changes
                .iter()
                .map(|c| (c.key.as_slice(), c.value.as_deref())),
        )
    }

    fn len(&self) -> usize {
        let in_file = || -> Result<u64, StreamsError> {
            let tx = self
                .db
                .begin_read()
                .map_err(|e| io("starting a state read", e))?;
            let table = tx
                .open_table(TABLE)
                .map_err(|e| io("opening the state table", e))?;
            table.len().map_err(|e| io("counting state", e))
        };
        let mut len = in_file().unwrap_or(0) as i64;
        for (key, value) in &self.buffer {
            let on_file = self.file_get(key).ok().flatten().is_some();
            match (on_file, value.is_some()) {
                (false, true) => len += 1,
                (true, false) => len -= 1,
                _ => {}
            }
        }
        usize::try_from(len).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::state::store::InMemoryStore;

    fn store(dir: &tempfile::TempDir) -> DiskStore {
        DiskStore::create(dir.path(), "test store").unwrap()
    }

    #[test]
    fn reads_see_buffered_writes_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        s.put(b"a".to_vec(), b"1".to_vec()).unwrap();
        s.put(b"b".to_vec(), b"2".to_vec()).unwrap();
        s.take_changes();
        s.put(b"a".to_vec(), b"3".to_vec()).unwrap();
        s.delete(b"b").unwrap();
        s.put(b"c".to_vec(), b"4".to_vec()).unwrap();
        assert_eq!(s.get(b"a").unwrap(), Some(b"3".to_vec()));
        assert_eq!(s.get(b"b").unwrap(), None);
        assert_eq!(
            s.range(Bound::Unbounded, Bound::Unbounded).unwrap(),
            vec![
                (b"a".to_vec(), b"3".to_vec()),
                (b"c".to_vec(), b"4".to_vec())
            ]
        );
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.first(Bound::Included(b"b"), Bound::Unbounded).unwrap(),
            Some((b"c".to_vec(), b"4".to_vec()))
        );
        assert_eq!(
            s.first(Bound::Unbounded, Bound::Unbounded).unwrap(),
            Some((b"a".to_vec(), b"3".to_vec()))
        );
    }

    #[test]
    fn changes_match_the_in_memory_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = store(&dir);
        let mut memory = InMemoryStore::new();
        for s in [&mut disk as &mut dyn KeyValueStore, &mut memory] {
            s.put(b"k1".to_vec(), b"1".to_vec()).unwrap();
            s.put(b"k2".to_vec(), b"2".to_vec()).unwrap();
            s.put(b"k1".to_vec(), b"3".to_vec()).unwrap();
            s.delete(b"k2").unwrap();
            s.delete(b"never").unwrap();
        }
        assert_eq!(disk.take_changes(), memory.take_changes());
        assert!(disk.take_changes().is_empty());
    }

    #[test]
    fn a_fresh_store_restores_from_changelog_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = store(&dir);
        a.put(b"x".to_vec(), b"1".to_vec()).unwrap();
        a.put(b"y".to_vec(), b"2".to_vec()).unwrap();
        let first = a.take_changes();
        a.delete(b"x").unwrap();
        let second = a.take_changes();
        let mut b = store(&dir);
        b.restore(first).unwrap();
        b.restore(second).unwrap();
        assert_eq!(
            b.range(Bound::Unbounded, Bound::Unbounded).unwrap(),
            vec![(b"y".to_vec(), b"2".to_vec())]
        );
        // Restoring records no changes.
        assert!(b.take_changes().is_empty());
    }

    #[test]
    fn scans_in_chunks_see_the_buffer_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        for k in [1u8, 3, 5, 7] {
            s.put(vec![k], vec![k]).unwrap();
        }
        s.take_changes();
        s.delete(&[3]).unwrap();
        s.put(vec![4], vec![4]).unwrap();
        s.put(vec![5], vec![50]).unwrap();
        let mut all = Vec::new();
        let mut from: Option<Vec<u8>> = None;
        loop {
            let lower = from.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let chunk = s.scan(lower, Bound::Unbounded, 2).unwrap();
            let Some((last, _)) = chunk.last() else { break };
            from = Some(last.clone());
            all.extend(chunk);
        }
        assert_eq!(
            all,
            vec![
                (vec![1], vec![1]),
                (vec![4], vec![4]),
                (vec![5], vec![50]),
                (vec![7], vec![7])
            ]
        );
    }

    #[test]
    fn the_file_goes_away_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let s = store(&dir);
            assert!(s.path().exists());
            s.path().to_path_buf()
        };
        assert!(!path.exists());
    }

    #[test]
    fn more_writes_than_the_buffer_holds_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = store(&dir);
        let n = DiskStore::FLUSH_ENTRIES + 10;
        for i in 0..n {
            s.put((i as u64).to_be_bytes().to_vec(), vec![1]).unwrap();
        }
        assert!(s.buffer.len() < DiskStore::FLUSH_ENTRIES);
        assert_eq!(s.take_changes().len(), n);
        assert_eq!(s.len(), n);
    }
}

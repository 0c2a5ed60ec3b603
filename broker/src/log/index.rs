//! Sparse, sorted indexes: the `.index` offset index and the machinery shared with the
//! `.timeindex` ([`super::time_index`]).
//!
//! The active segment keeps its entries in memory (a few MiB at most) and writes them out when
//! it rolls or the log closes; after a crash they are rebuilt by the recovery scan. Closed
//! segments never load their indexes: lookups binary-search the file with positioned reads, so
//! memory does not grow with the size of the log.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A fixed-size entry of a sparse index, sorted by `key`.
pub(crate) trait IndexEntry: Copy + std::fmt::Debug {
    /// Bytes per entry on disk.
    const SIZE: usize;
    /// What lookups search by.
    type Key: Ord + Copy;
    /// The search key of this entry.
    fn key(&self) -> Self::Key;
    /// Writes the entry into `out` (exactly `SIZE` bytes).
    fn encode(&self, out: &mut [u8]);
    /// Reads an entry from `bytes` (exactly `SIZE` bytes).
    fn decode(bytes: &[u8]) -> Self;
}

/// An offset index entry: the batch starting at `relative_offset` (from the segment's base
/// offset) begins at byte `position` of the `.log` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    type Key = u32;

    fn key(&self) -> u32 {
        self.relative_offset
    }

    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            position: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }
}

/// A sparse index: entries in memory (active segment) or in a file (closed segments).
#[derive(Debug)]
pub(crate) enum SparseIndex<E> {
    /// The active segment's entries, appended as batches arrive.
    Memory(Vec<E>),
    /// A closed segment's index file, searched with positioned reads.
    File {
        /// The open index file.
        file: File,
        /// Number of whole entries in it.
        entries: u64,
    },
}

impl<E: IndexEntry> SparseIndex<E> {
    /// An empty in-memory index.
    pub(crate) fn memory() -> Self {
        SparseIndex::Memory(Vec::new())
    }

    /// Opens an index file for lookups; a trailing partial entry is ignored.
    pub(crate) fn open_file(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let entries = file.metadata()?.len() / E::SIZE as u64;
        Ok(SparseIndex::File { file, entries })
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> u64 {
        match self {
            SparseIndex::Memory(v) => v.len() as u64,
            SparseIndex::File { entries, .. } => *entries,
        }
    }

    /// Appends an entry; only the in-memory (active) index grows.
    pub(crate) fn push(&mut self, entry: E) {
        if let SparseIndex::Memory(v) = self {
            v.push(entry);
        }
    }

    /// The entry at `i`.
    pub(crate) fn get(&self, i: u64) -> io::Result<E> {
        match self {
            SparseIndex::Memory(v) => v
                .get(i as usize)
                .copied()
                .ok_or_else(|| io::Error::other("index entry out of bounds")),
            SparseIndex::File { file, .. } => {
                let mut buf = [0u8; 16];
                let buf = &mut buf[..E::SIZE];
                file.read_exact_at(buf, i * E::SIZE as u64)?;
                Ok(E::decode(buf))
            }
        }
    }

    /// The last entry, if any.
    pub(crate) fn last(&self) -> io::Result<Option<E>> {
        match self.len() {
            0 => Ok(None),
            n => self.get(n - 1).map(Some),
        }
    }

    /// The greatest entry whose key is `<= target`, if any.
    pub(crate) fn lookup(&self, target: E::Key) -> io::Result<Option<E>> {
        match self {
            SparseIndex::Memory(v) => {
                let n = v.partition_point(|e| e.key() <= target);
                Ok(n.checked_sub(1).map(|i| v[i]))
            }
            SparseIndex::File { entries, .. } => {
                // Binary search for the number of entries with key <= target.
                let (mut lo, mut hi) = (0u64, *entries);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if self.get(mid)?.key() <= target {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                match lo {
                    0 => Ok(None),
                    n => self.get(n - 1).map(Some),
                }
            }
        }
    }

    /// All entries (tests and index checks; not used on the read path).
    pub(crate) fn entries(&self) -> io::Result<Vec<E>> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// Writes `entries` as an index file at `path`, atomically (temp file, fsync, rename), so a
/// crash leaves either the old file or the whole new one.
pub(crate) fn write_index_file<E: IndexEntry>(path: &Path, entries: &[E]) -> io::Result<()> {
    let mut bytes = vec![0u8; entries.len() * E::SIZE];
    for (e, out) in entries.iter().zip(bytes.chunks_exact_mut(E::SIZE)) {
        e.encode(out);
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    let mut file = File::create(tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn entries_from(mut keys: Vec<u32>) -> Vec<OffsetEntry> {
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .map(|k| OffsetEntry {
                relative_offset: k,
                position: k.wrapping_mul(3),
            })
            .collect()
    }

    fn expected(entries: &[OffsetEntry], target: u32) -> Option<OffsetEntry> {
        entries
            .iter()
            .filter(|e| e.relative_offset <= target)
            .max_by_key(|e| e.relative_offset)
            .copied()
    }

    #[test]
    fn file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let entries = entries_from(vec![0, 5, 9, 100]);
        write_index_file(&path, &entries).unwrap();
        let idx = SparseIndex::<OffsetEntry>::open_file(&path).unwrap();
        assert_eq!(idx.entries().unwrap(), entries);
        assert_eq!(idx.last().unwrap(), Some(entries[3]));
    }

    #[test]
    fn empty_index_finds_nothing() {
        let idx = SparseIndex::<OffsetEntry>::memory();
        assert_eq!(idx.lookup(5).unwrap(), None);
        assert_eq!(idx.last().unwrap(), None);
    }

    proptest! {
        #[test]
        fn lookup_returns_greatest_entry_at_or_below_target(
            keys in proptest::collection::vec(any::<u32>(), 0..200),
            targets in proptest::collection::vec(any::<u32>(), 1..20),
        ) {
            let entries = entries_from(keys);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("x.index");
            write_index_file(&path, &entries).unwrap();
            let file_idx = SparseIndex::<OffsetEntry>::open_file(&path).unwrap();
            let mem_idx = SparseIndex::Memory(entries.clone());
            for t in targets.into_iter().chain(entries.iter().map(|e| e.relative_offset)) {
                let want = expected(&entries, t);
                prop_assert_eq!(mem_idx.lookup(t).unwrap(), want);
                prop_assert_eq!(file_idx.lookup(t).unwrap(), want);
            }
        }
    }
}

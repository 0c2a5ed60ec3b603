//! The aborted-transaction index: per segment, the transactions whose abort marker lies in
//! that segment (Kafka's `TransactionIndex`, `<base offset>.txnindex`).
//!
//! A read_committed fetch answers, next to its records, the aborted transactions that overlap
//! them (producer id and first offset), so the consumer can drop their records. Kafka's file
//! format: 34-byte entries of version `i16` (0), producer id `i64`, first offset `i64`, last
//! offset `i64` (the marker's offset) and last stable offset `i64` (the LSO once the abort
//! completed), appended in marker order.
//!
//! Entries are kept in memory too (aborts are rare, a few dozen bytes each). The file of the
//! active segment may lag or lead the log after a crash; recovery cuts it back to the offset
//! producer state replays from and appends what the replay found, so the index always agrees
//! with the markers in the log.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::segment::segment_file_name;

/// Extension of aborted-transaction index files.
pub(crate) const TXN_INDEX_EXT: &str = "txnindex";
/// Bytes of one entry.
const ENTRY_BYTES: usize = 34;
/// The entry version Kafka writes.
const ENTRY_VERSION: i16 = 0;

/// One aborted transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer whose transaction was aborted.
    pub producer_id: i64,
    /// Offset of the transaction's first record in this partition.
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
    /// The partition's last stable offset right after the abort.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut out = [0u8; ENTRY_BYTES];
        out[0..2].copy_from_slice(&ENTRY_VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b.get(at..at + 8)?);
            Some(i64::from_be_bytes(a))
        };
        if b.len() < ENTRY_BYTES || i16::from_be_bytes([b[0], b[1]]) != ENTRY_VERSION {
            return None;
        }
        Some(AbortedTxn {
            producer_id: i64_at(2)?,
            first_offset: i64_at(10)?,
            last_offset: i64_at(18)?,
            last_stable_offset: i64_at(26)?,
        })
    }
}

/// The aborted-transaction indexes of all segments of one partition.
#[derive(Debug)]
pub(crate) struct AbortedTxnIndex {
    dir: PathBuf,
    /// Entries by segment base offset, each in marker order.
    segments: BTreeMap<i64, Vec<AbortedTxn>>,
}

impl AbortedTxnIndex {
    /// Loads the index files of the segments at `bases`; files of other bases (segments gone
    /// in a crash) are deleted. An unreadable tail of a file (a torn last entry) is dropped.
    pub(crate) fn open(dir: &Path, bases: &[i64]) -> io::Result<AbortedTxnIndex> {
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(base) = entry
                .file_name()
                .to_str()
                .and_then(|n| super::segment::parse_segment_name(n, TXN_INDEX_EXT))
            else {
                continue;
            };
            if bases.binary_search(&base).is_err() {
                std::fs::remove_file(entry.path())?;
                continue;
            }
            let bytes = std::fs::read(entry.path())?;
            let entries: Vec<AbortedTxn> = bytes
                .chunks(ENTRY_BYTES)
                .map_while(AbortedTxn::decode)
                .collect();
            if entries.len() * ENTRY_BYTES != bytes.len() {
                warn!(path = %entry.path().display(), kept = entries.len(), "dropping a damaged tail of an aborted transaction index");
            }
            if !entries.is_empty() {
                segments.insert(base, entries);
            }
        }
        Ok(AbortedTxnIndex {
            dir: dir.to_path_buf(),
            segments,
        })
    }

    fn path(&self, base: i64) -> PathBuf {
        self.dir.join(segment_file_name(base, TXN_INDEX_EXT))
    }

    /// Appends an aborted transaction to the index of the segment at `base` (the segment
    /// holding its marker) and fsyncs it: aborts are rare, and a read_committed consumer
    /// must never be told less after a crash than it was before.
    pub(crate) fn append(&mut self, base: i64, txn: AbortedTxn) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(base))?;
        f.write_all(&txn.encode())?;
        f.sync_data()?;
        self.segments.entry(base).or_default().push(txn);
        Ok(())
    }

    /// Removes every entry whose marker is at or after `offset` (rewriting the files it
    /// touches): the log is being cut there, or replay is about to add them again.
    pub(crate) fn truncate_from(&mut self, offset: i64) -> io::Result<()> {
        let touched: Vec<i64> = self
            .segments
            .iter()
            .filter(|(_, es)| es.iter().any(|e| e.last_offset >= offset))
            .map(|(&b, _)| b)
            .collect();
        for base in touched {
            let keep: Vec<AbortedTxn> = self.segments[&base]
                .iter()
                .copied()
                .filter(|e| e.last_offset < offset)
                .collect();
            self.rewrite(base, &keep)?;
            if keep.is_empty() {
                self.segments.remove(&base);
            } else {
                self.segments.insert(base, keep);
            }
        }
        Ok(())
    }

    fn rewrite(&self, base: i64, entries: &[AbortedTxn]) -> io::Result<()> {
        let path = self.path(base);
        if entries.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let tmp = self
            .dir
            .join(format!("{}.tmp", segment_file_name(base, TXN_INDEX_EXT)));
        let mut f = File::create(&tmp)?;
        for e in entries {
            f.write_all(&e.encode())?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Forgets segments below `base` (deleted by retention or DeleteRecords, which remove
    /// their files with the segment).
    pub(crate) fn forget_below(&mut self, base: i64) {
        self.segments = self.segments.split_off(&base);
    }

    /// Forgets everything and deletes every file: the log starts afresh.
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        self.segments.clear();
        for base in bases {
            self.rewrite(base, &[])?;
        }
        Ok(())
    }

    /// The aborted transactions a read of `[start, upper_bound)` must name: those with a marker
    /// at or after `start` and a first record before `upper_bound`, in marker order.
    pub(crate) fn collect(&self, start: i64, upper_bound: i64) -> Vec<AbortedTxn> {
        self.segments
            .values()
            .flat_map(|es| es.iter())
            .filter(|e| e.last_offset >= start && e.first_offset < upper_bound)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn txn(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        }
    }

    #[test]
    fn entries_survive_reopen_in_kafkas_layout() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = AbortedTxnIndex::open(dir.path(), &[0, 100]).unwrap();
        idx.append(0, txn(1, 5, 9)).unwrap();
        idx.append(100, txn(2, 50, 120)).unwrap();
        let len = std::fs::metadata(dir.path().join("00000000000000000100.txnindex"))
            .unwrap()
            .len();
        assert_eq!(len, 34);
        let idx = AbortedTxnIndex::open(dir.path(), &[0, 100]).unwrap();
        assert_eq!(idx.collect(0, 1000), vec![txn(1, 5, 9), txn(2, 50, 120)]);
    }

    #[test]
    fn collect_names_only_overlapping_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = AbortedTxnIndex::open(dir.path(), &[0]).unwrap();
        idx.append(0, txn(1, 5, 9)).unwrap();
        idx.append(0, txn(2, 20, 30)).unwrap();
        assert_eq!(idx.collect(10, 20), vec![]);
        assert_eq!(idx.collect(9, 10), vec![txn(1, 5, 9)]);
        assert_eq!(idx.collect(10, 21), vec![txn(2, 20, 30)]);
    }

    #[test]
    fn truncation_drops_markers_at_or_after_the_offset_and_files_of_unknown_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = AbortedTxnIndex::open(dir.path(), &[0, 100]).unwrap();
        idx.append(0, txn(1, 5, 9)).unwrap();
        idx.append(100, txn(2, 50, 120)).unwrap();
        idx.truncate_from(100).unwrap();
        assert_eq!(idx.collect(0, 1000), vec![txn(1, 5, 9)]);
        idx.append(100, txn(2, 50, 130)).unwrap();
        let idx = AbortedTxnIndex::open(dir.path(), &[100]).unwrap();
        assert_eq!(idx.collect(0, 1000), vec![txn(2, 50, 130)]);
        assert!(!dir.path().join("00000000000000000000.txnindex").exists());
    }
}

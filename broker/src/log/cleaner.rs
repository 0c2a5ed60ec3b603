//! The log cleaner: compaction for `cleanup.policy=compact`.
//!
//! One pass builds, from every record in the log (the active segment included, since newer
//! values there make older ones removable), a map from key to the offset of its latest record.
//! Keys are stored as 128-bit hashes with per-run random keys, so the map costs about 40 bytes
//! per distinct key whatever the key sizes (Kafka's cleaner does the same with MD5).
//!
//! A second pass rewrites each closed segment that has something to drop, keeping a record if
//! it has no key or is the latest for its key, and dropping a latest record that is a
//! tombstone once its segment's newest record is older than `delete.retention.ms` (the
//! tombstone has then been visible for at least that long). Untouched batches are copied byte
//! for byte; partly kept batches are re-encoded with their offsets, timestamps and compression.
//! The new segment is written to `.cleaned` files, fsynced, and renamed into place, then
//! swapped in under the writer lock; readers holding the old segment finish on the old inode.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Record;
use tracing::{debug, info, warn};

use super::batch::BatchHeader;
use super::checkpoint::sync_dir;
use super::config::LogConfig;
use super::error::LogError;
use super::partition_log::PartitionLog;
use super::records::{decode_batch, encode_retained};
use super::segment::{read_batch_at, segment_file_name, LogSegment, NO_TIMESTAMP};
use super::txn_index::AbortedTxn;

/// Suffix of the cleaner's temporary files.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";

/// Key -> offset of its latest record, keyed by a 128-bit keyed hash of the key.
struct OffsetMap {
    hashers: (RandomState, RandomState),
    latest: HashMap<u128, i64>,
}

impl OffsetMap {
    fn new() -> Self {
        OffsetMap {
            hashers: (RandomState::new(), RandomState::new()),
            latest: HashMap::new(),
        }
    }

    fn hash(&self, key: &[u8]) -> u128 {
        let a = self.hashers.0.hash_one(key);
        let b = self.hashers.1.hash_one(key);
        (u128::from(a) << 64) | u128::from(b)
    }

    fn put(&mut self, key: &[u8], offset: i64) {
        let h = self.hash(key);
        self.latest.insert(h, offset);
    }

    fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(&self.hash(key)).copied()
    }
}

/// Calls `f` with every batch in `file[0..end]`.
fn for_each_batch(
    file: &File,
    end: u64,
    mut f: impl FnMut(u64, Bytes) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let mut pos = 0;
    while pos < end {
        let Some((_, bytes)) = read_batch_at(file, pos, end)? else {
            return Err(LogError::CorruptRecord(format!(
                "malformed batch at position {pos} while cleaning"
            )));
        };
        let size = bytes.len() as u64;
        f(pos, bytes)?;
        pos += size;
    }
    Ok(())
}

/// What the cleaner keeps of one record.
fn keep(map: &OffsetMap, record: &Record, tombstones_expired: bool) -> bool {
    let Some(key) = &record.key else {
        return true; // Kafka rejects keyless records on compacted topics; keep any that exist
    };
    if map.latest(key) != Some(record.offset) {
        return false;
    }
    record.value.is_some() || !tombstones_expired
}

/// The cleaned copy of one segment, while it is being written.
struct CleanedWriter {
    /// The `.cleaned` file.
    file: File,
    /// Bytes written so far.
    written: u64,
}

impl CleanedWriter {
    /// Appends `bytes` to the cleaned file.
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Result of cleaning one segment.
struct Cleaned {
    /// Whether the segment changed (else nothing was written).
    changed: bool,
    /// Whether a tombstone was kept only because it is not old enough yet.
    pending_tombstones: bool,
}

impl PartitionLog {
    /// Compacts the closed segments; returns how many were rewritten.
    ///
    /// A truncation (a follower cutting its log) during a pass abandons it: the key map may
    /// hold records the truncation removed, and dropping older records for them would lose
    /// keys (Kafka aborts its cleaner before truncating for the same reason). Errors met while
    /// a truncation cut the files being read are part of that and are not reported.
    pub(crate) fn compact(&self, now_ms: i64, config: &LogConfig) -> Result<usize, LogError> {
        let truncations = self.truncation_count();
        match self.compact_pass(now_ms, config, truncations) {
            Err(error) if self.truncation_count() != truncations => {
                debug!(dir = %self.dir().display(), %error, "compaction pass abandoned: the log was truncated meanwhile");
                Ok(0)
            }
            outcome => outcome,
        }
    }

    /// One compaction pass; `truncations` is the truncation count when it began.
    fn compact_pass(
        &self,
        now_ms: i64,
        config: &LogConfig,
        truncations: u64,
    ) -> Result<usize, LogError> {
        let (closed, active_file, active_size, log_end) = {
            let st = self.read_state();
            st.check_open()?;
            (
                st.closed.clone(),
                Arc::clone(st.active.file()),
                st.active.size(),
                st.active.next_offset(),
            )
        };
        let memo = (
            log_end,
            closed.len(),
            config.delete_retention_ms,
            config.min_compaction_lag_ms,
        );
        if *self.compaction_memo() == Some(memo) {
            return Ok(0); // nothing new since a pass that left nothing to do
        }
        // Segments with records younger than min.compaction.lag.ms stay as they are, and so
        // does everything after them.
        let lag_horizon = now_ms.saturating_sub(config.min_compaction_lag_ms.max(0));
        // Nor is anything from the oldest open transaction on cleaned (Kafka's first
        // uncleanable offset): whether its records count is not decided yet.
        let first_unstable = self.first_unstable_offset();
        let txns = Transactions {
            aborted: self.aborted().collect(0, i64::MAX),
            first_unstable,
        };
        let cleanable = closed
            .iter()
            .take_while(|s| config.min_compaction_lag_ms <= 0 || s.max_timestamp() <= lag_horizon)
            .take_while(|s| first_unstable.is_none_or(|f| s.next_offset() <= f))
            .count();
        if cleanable == 0 {
            return Ok(0);
        }

        let mut map = OffsetMap::new();
        let mut index_batch = |pos: u64, bytes: Bytes| -> Result<(), LogError> {
            // A batch whose records do not decode (appends never decompress, so a client can
            // store one) must not stop compaction for good: it is skipped here and kept as is.
            let decoded = match decode_batch(&bytes) {
                Ok(d) => d,
                Err(e) => {
                    warn!(position = pos, error = %e, "compaction skips an undecodable batch");
                    return Ok(());
                }
            };
            // Markers carry no keys; aborted and undecided records must not hide the
            // committed values of their keys.
            if decoded.header.is_control() || !txns.counts(&decoded.header) {
                return Ok(());
            }
            for r in &decoded.records {
                if let Some(k) = &r.key {
                    map.put(k, r.offset);
                }
            }
            Ok(())
        };
        for seg in &closed {
            for_each_batch(seg.file(), seg.size(), &mut index_batch)?;
        }
        for_each_batch(&active_file, active_size, &mut index_batch)?;

        let mut compacted = 0;
        let mut pending_tombstones = false;
        let tombstone_horizon = now_ms.saturating_sub(config.delete_retention_ms);
        for seg in &closed[..cleanable] {
            let expired =
                seg.max_timestamp() != NO_TIMESTAMP && seg.max_timestamp() < tombstone_horizon;
            let outcome = self.clean_segment(seg, &map, expired, &txns)?;
            pending_tombstones |= outcome.pending_tombstones;
            if outcome.changed && self.swap_cleaned(seg, config, truncations)? {
                compacted += 1;
            }
        }
        let truncated = self.truncation_count() != truncations;
        *self.compaction_memo() = if pending_tombstones || cleanable < closed.len() || truncated {
            None
        } else {
            // Any rewrite or swap above leaves log end and segment count as they were, except
            // removed empty segments; refresh the count so an idle log is not rescanned.
            let st = self.read_state();
            Some((st.active.next_offset(), st.closed.len(), memo.2, memo.3))
        };
        if compacted > 0 {
            info!(dir = %self.dir().display(), segments = compacted, "compacted log segments");
        }
        Ok(compacted)
    }

    /// Writes the cleaned copy of `seg` to `<base>.log.cleaned` if anything is to be dropped.
    fn clean_segment(
        &self,
        seg: &LogSegment,
        map: &OffsetMap,
        tombstones_expired: bool,
        txns: &Transactions,
    ) -> Result<Cleaned, LogError> {
        let path = seg
            .path("log")
            .with_extension(format!("log{CLEANED_SUFFIX}"));
        let mut out: Option<CleanedWriter> = None;
        let mut pending_tombstones = false;
        for_each_batch(seg.file(), seg.size(), |pos, bytes| {
            let Ok(decoded) = decode_batch(&bytes) else {
                // Undecodable: kept verbatim (see `compact`).
                if let Some(w) = &mut out {
                    w.write(&bytes)?;
                }
                return Ok(());
            };
            let retained: Vec<Record> = if decoded.header.is_control() {
                Vec::new()
            } else if txns.is_aborted(&decoded.header) {
                // Aborted records are never read by read_committed consumers: they go
                // (their abort marker stays, as it is what tells consumers to skip them).
                Vec::new()
            } else {
                decoded
                    .records
                    .iter()
                    .filter(|r| keep(map, r, tombstones_expired))
                    .cloned()
                    .collect()
            };
            pending_tombstones |= retained
                .iter()
                .any(|r| r.key.is_some() && r.value.is_none());
            let unchanged = decoded.header.is_control() || retained.len() == decoded.records.len();
            let unchanged = unchanged && !txns.is_aborted(&decoded.header);
            if unchanged {
                if let Some(w) = &mut out {
                    w.write(&bytes)?;
                }
                return Ok(());
            }
            let w = match &mut out {
                Some(w) => w,
                None => {
                    // First change: start the copy with every batch before this one, verbatim.
                    let file = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&path)?;
                    let w = out.insert(CleanedWriter { file, written: 0 });
                    copy_prefix(seg.file(), pos, w)?;
                    w
                }
            };
            if !retained.is_empty() {
                w.write(&encode_retained(&decoded.header, &retained)?)?;
            }
            Ok(())
        })?;
        let changed = match out {
            Some(w) => {
                w.file.sync_all()?;
                debug!(
                    base_offset = seg.base_offset(),
                    before = seg.size(),
                    after = w.written,
                    "cleaned segment"
                );
                true
            }
            None => false,
        };
        Ok(Cleaned {
            changed,
            pending_tombstones,
        })
    }

    /// Puts the cleaned copy of `old` in its place. Returns false if the segment went away in
    /// the meantime (DeleteRecords) or the log was truncated since the pass began (its key map
    /// is stale), in which case the copy is discarded.
    fn swap_cleaned(
        &self,
        old: &Arc<LogSegment>,
        config: &LogConfig,
        truncations: u64,
    ) -> Result<bool, LogError> {
        let dir = self.dir().to_path_buf();
        let base = old.base_offset();
        let interval = u64::from(config.index_interval_bytes.max(1));
        // Indexes for the copy are built (and fsynced) before taking the writer lock.
        let mut cleaned = LogSegment::recover_with_suffix(&dir, base, interval, CLEANED_SUFFIX)?;
        cleaned.seal()?;
        drop(cleaned);
        let cleaned_name =
            |ext: &str| dir.join(format!("{}{CLEANED_SUFFIX}", segment_file_name(base, ext)));

        let _writer = self.writer_lock();
        let still_there = {
            let st = self.read_state();
            !st.closed_flag
                && self.truncation_count() == truncations
                && st.closed.iter().any(|s| Arc::ptr_eq(s, old))
        };
        if !still_there {
            for ext in ["log", "index", "timeindex"] {
                let _ = std::fs::remove_file(cleaned_name(ext));
            }
            return Ok(false);
        }
        // Old indexes go first: a crash in between leaves a log without indexes, which
        // start-up rebuilds, never a log with indexes describing other bytes.
        for ext in ["index", "timeindex"] {
            match std::fs::remove_file(old.path(ext)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        sync_dir(&dir)?;
        std::fs::rename(cleaned_name("log"), old.path("log"))?;
        std::fs::rename(cleaned_name("index"), old.path("index"))?;
        std::fs::rename(cleaned_name("timeindex"), old.path("timeindex"))?;
        sync_dir(&dir)?;
        let fresh = LogSegment::open_closed(&dir, base, interval)?;
        let mut st = self.write_state();
        let Some(i) = st.closed.iter().position(|s| Arc::ptr_eq(s, old)) else {
            return Ok(false);
        };
        if fresh.size() == 0 && i > 0 {
            // Nothing left and not the first segment: the next one takes over its range.
            st.closed.remove(i);
            drop(st);
            fresh.delete_files()?;
            sync_dir(&dir)?;
        } else {
            st.closed[i] = Arc::new(fresh);
        }
        Ok(true)
    }
}

/// Copies `src[0..len]` into the cleaned file.
/// What compaction needs to know of transactions.
struct Transactions {
    /// Every aborted transaction of the log.
    aborted: Vec<AbortedTxn>,
    /// First offset of the oldest open transaction.
    first_unstable: Option<i64>,
}

impl Transactions {
    /// Whether the batch belongs to an aborted transaction.
    fn is_aborted(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && self.aborted.iter().any(|a| {
                a.producer_id == h.producer_id
                    && a.first_offset <= h.base_offset
                    && h.base_offset <= a.last_offset
            })
    }

    /// Whether the batch's records count for the latest value of their keys: not aborted,
    /// and not of a transaction that may still be open (at or after the first unstable
    /// offset).
    fn counts(&self, h: &BatchHeader) -> bool {
        let undecided =
            h.is_transactional() && self.first_unstable.is_some_and(|f| h.base_offset >= f);
        !undecided && !self.is_aborted(h)
    }
}

fn copy_prefix(src: &File, len: u64, out: &mut CleanedWriter) -> io::Result<()> {
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let mut pos = 0;
    while pos < len {
        let n = buf.len().min((len - pos) as usize);
        src.read_exact_at(&mut buf[..n], pos)?;
        out.write(&buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::log::test_util::{encode_batch, kv, read_all_records, record};
    use crate::log::{CleanupPolicy, PartitionLog};
    use kafka_protocol::records::Compression;

    const DAY: i64 = 86_400_000;

    fn compacted_log(dir: &std::path::Path) -> Arc<PartitionLog> {
        PartitionLog::open(
            dir.to_path_buf(),
            LogConfig {
                cleanup_policy: CleanupPolicy::Compact,
                segment_bytes: 1, // every append rolls the previous segment
                retention_ms: -1,
                ..LogConfig::default()
            },
        )
        .unwrap()
    }

    fn append(log: &PartitionLog, recs: &[(&str, Option<&str>)], ts: i64, c: Compression) {
        let recs: Vec<_> = recs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| record(i as i64, ts, Some(k), *v))
            .collect();
        log.append(encode_batch(&recs, c), ts).unwrap();
    }

    fn fill(log: &PartitionLog) {
        append(
            log,
            &[("a", Some("a1")), ("b", Some("b1")), ("c", Some("c1"))],
            1000,
            Compression::None,
        ); // 0..2
        append(
            log,
            &[("a", Some("a2")), ("b", None)],
            2000,
            Compression::Gzip,
        ); // 3..4
        append(
            log,
            &[("c", Some("c3")), ("d", Some("d3"))],
            3000,
            Compression::Zstd,
        ); // 5..6
        append(log, &[("d", Some("d4"))], 4000, Compression::None); // 7, the active segment
    }

    fn s(o: i64, k: &str, v: Option<&str>) -> (i64, String, Option<String>) {
        (o, k.to_string(), v.map(str::to_string))
    }

    #[test]
    fn a_truncation_during_a_pass_discards_its_work() {
        let dir = tempfile::tempdir().unwrap();
        let log = compacted_log(dir.path());
        fill(&log);
        let config = log.config();
        let before = log.truncation_count();
        let first = Arc::clone(&log.read_state().closed[0]);
        // The pass has seen "a" at offset 3 and cleaned the first segment accordingly ...
        let mut map = OffsetMap::new();
        map.put(b"a", 3);
        assert!(
            log.clean_segment(
                &first,
                &map,
                false,
                &Transactions {
                    aborted: Vec::new(),
                    first_unstable: None
                }
            )
            .unwrap()
            .changed
        );
        // ... when a follower truncation removes offset 3.
        log.truncate_to(3).unwrap();
        assert!(!log.swap_cleaned(&first, &config, before).unwrap());
        assert_eq!(
            kv(&read_all_records(&log)),
            vec![
                s(0, "a", Some("a1")),
                s(1, "b", Some("b1")),
                s(2, "c", Some("c1"))
            ]
        );
        assert!(!dir.path().join("00000000000000000000.log.cleaned").exists());
        // A whole pass after the truncation runs normally.
        assert_eq!(log.run_maintenance(DAY).unwrap().segments_compacted, 0);
    }

    #[test]
    fn keeps_latest_value_per_key_with_original_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = compacted_log(dir.path());
        fill(&log);
        let report = log.run_maintenance(3 * 1000 + DAY / 2).unwrap();
        assert_eq!(report.segments_compacted, 2); // the middle segment loses nothing yet
        assert_eq!(
            kv(&read_all_records(&log)),
            vec![
                s(3, "a", Some("a2")),
                s(4, "b", None), // tombstone younger than delete.retention.ms
                s(5, "c", Some("c3")),
                s(7, "d", Some("d4")),
            ]
        );
        assert_eq!(log.log_start_offset(), 0);
        assert_eq!(log.log_end_offset(), 8);
        // Every offset is still readable: a gap reads from the next surviving batch.
        for o in 0..8 {
            assert!(!log.read(o, 1).unwrap().is_empty(), "offset {o}");
        }
        // A second pass has nothing left to do.
        assert_eq!(
            log.run_maintenance(3000 + DAY / 2)
                .unwrap()
                .segments_compacted,
            0
        );
    }

    #[test]
    fn drops_tombstones_after_delete_retention() {
        let dir = tempfile::tempdir().unwrap();
        let log = compacted_log(dir.path());
        fill(&log);
        log.run_maintenance(3000 + DAY / 2).unwrap();
        let report = log.run_maintenance(2000 + DAY + 1).unwrap();
        assert_eq!(report.segments_compacted, 1);
        assert_eq!(
            kv(&read_all_records(&log)),
            vec![
                s(3, "a", Some("a2")),
                s(5, "c", Some("c3")),
                s(7, "d", Some("d4"))
            ]
        );
    }

    #[test]
    fn compacted_log_survives_reopen_and_keeps_compression() {
        let dir = tempfile::tempdir().unwrap();
        let log = compacted_log(dir.path());
        fill(&log);
        log.run_maintenance(3000 + DAY / 2).unwrap();
        let before = kv(&read_all_records(&log));
        // The Zstd batch lost one record and was re-encoded with its codec.
        let data = log.read(5, 1).unwrap();
        let h = crate::log::batch::BatchHeader::parse(&data).unwrap();
        assert_eq!(h.compression(), 4);
        assert_eq!((h.base_offset, h.last_offset()), (5, 6));
        log.close().unwrap();
        let log = compacted_log(dir.path());
        assert_eq!(kv(&read_all_records(&log)), before);
        assert_eq!(log.offset_for_timestamp(2500).unwrap(), Some((5, 3000)));
        assert_eq!(log.max_timestamp().unwrap(), Some((7, 4000)));
        let info = log
            .append(
                encode_batch(&[record(0, 5000, Some("e"), Some("e5"))], Compression::None),
                5000,
            )
            .unwrap();
        assert_eq!(info.base_offset, 8);
    }

    #[test]
    fn min_compaction_lag_protects_young_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = compacted_log(dir.path());
        log.set_config(LogConfig {
            min_compaction_lag_ms: 2500,
            ..log.config()
        });
        fill(&log);
        // Only the first segment (max ts 1000) is older than the lag at now = 3600.
        let report = log.run_maintenance(3600).unwrap();
        assert_eq!(report.segments_compacted, 1);
        let got = kv(&read_all_records(&log));
        assert_eq!(got.first().unwrap(), &s(3, "a", Some("a2")));
        assert!(got.contains(&s(4, "b", None)));
    }

    #[test]
    fn undecodable_batches_are_kept_and_do_not_stop_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let log = compacted_log(dir.path());
        append(&log, &[("a", Some("a1"))], 1000, Compression::None); // 0
                                                                     // Valid header and CRC, but claims gzip over plain records: only decoding notices.
        let mut bad =
            encode_batch(&[record(0, 1000, Some("x"), Some("y"))], Compression::None).to_vec();
        crate::log::batch::set_attributes(&mut bad, 1);
        crate::log::batch::update_crc(&mut bad);
        log.append(Bytes::from(bad.clone()), 1000).unwrap(); // 1
        append(&log, &[("a", Some("a2"))], 2000, Compression::None); // 2
        append(&log, &[("z", Some("z"))], 3000, Compression::None); // 3, active
        assert_eq!(log.offset_for_timestamp(1500).unwrap(), Some((2, 2000)));
        let report = log.run_maintenance(4000).unwrap();
        assert_eq!(report.segments_compacted, 1);
        let stored = log.read(1, 1).unwrap();
        assert_eq!(&stored[16..], &bad[16..]); // as stored, apart from offset and leader epoch
        assert!(log.read(0, 1).unwrap().len() == stored.len()); // offset 0 compacted away
    }

    #[test]
    fn delete_policy_does_not_compact() {
        let dir = tempfile::tempdir().unwrap();
        let log = compacted_log(dir.path());
        log.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::Delete,
            ..log.config()
        });
        fill(&log);
        assert_eq!(log.run_maintenance(10_000).unwrap().segments_compacted, 0);
        assert_eq!(read_all_records(&log).len(), 8);
    }
}

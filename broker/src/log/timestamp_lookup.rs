//! ListOffsets by time: [`PartitionLog::offset_for_timestamp`] and
//! [`PartitionLog::max_timestamp`].
//!
//! Segment metadata rules out whole segments, the time index finds where to start in the right
//! one, batch headers (max timestamp) find the batch, and only that one batch is decoded (and
//! decompressed) to find the exact record.

use std::fs::File;
use std::sync::Arc;

use tracing::warn;

use super::error::LogError;
use super::partition_log::PartitionLog;
use super::records::decode_batch;
use super::segment::{invalid_data, read_batch_at, read_header_at, LogSegment, NO_TIMESTAMP};

/// A segment to search: either a closed one (looked up without the lock) or the active one
/// (its in-memory index already consulted under the lock).
struct Candidate {
    closed: Option<Arc<LogSegment>>,
    file: Arc<File>,
    size: u64,
    max_timestamp: i64,
    max_timestamp_offset: i64,
    /// For the active segment: the scan start computed under the lock.
    active_start: u64,
}

/// The records of a stored batch; none (with a warning) if they do not decode. Appends never
/// decompress, so a client can store such a batch, and it must not break lookups for good.
fn decoded_records(bytes: &bytes::Bytes, pos: u64) -> Vec<kafka_protocol::records::Record> {
    match decode_batch(bytes) {
        Ok(d) => d.records,
        Err(e) => {
            warn!(position = pos, error = %e, "timestamp lookup skips an undecodable batch");
            Vec::new()
        }
    }
}

impl PartitionLog {
    /// Snapshot of every segment as a candidate; `position` computes the active segment's scan
    /// start while its in-memory index is safely borrowed.
    fn candidates(
        &self,
        position: impl FnOnce(&LogSegment) -> std::io::Result<u64>,
    ) -> Result<(Vec<Candidate>, i64), LogError> {
        let st = self.read_state();
        if st.closed_flag {
            return Err(LogError::Closed);
        }
        let mut out: Vec<Candidate> = st
            .closed
            .iter()
            .map(|s| Candidate {
                closed: Some(Arc::clone(s)),
                file: Arc::clone(s.file()),
                size: s.size(),
                max_timestamp: s.max_timestamp(),
                max_timestamp_offset: s.max_timestamp_offset(),
                active_start: 0,
            })
            .collect();
        let a = &st.active;
        out.push(Candidate {
            closed: None,
            file: Arc::clone(a.file()),
            size: a.size(),
            max_timestamp: a.max_timestamp(),
            max_timestamp_offset: a.max_timestamp_offset(),
            active_start: position(a)?,
        });
        Ok((out, st.log_start_offset))
    }

    /// ListOffsets by timestamp: the first record whose timestamp >= `timestamp`, as (offset,
    /// that record's timestamp); None if no such record. For LogAppendTime batches all records
    /// have the batch's max timestamp.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.untorn(|| self.offset_for_timestamp_published(timestamp))
    }

    /// [`PartitionLog::offset_for_timestamp`] against the segments published when it starts.
    fn offset_for_timestamp_published(
        &self,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        let (candidates, log_start) = self.candidates(|a| {
            if a.max_timestamp() >= timestamp {
                a.position_for_timestamp(timestamp)
            } else {
                Ok(0)
            }
        })?;
        for c in candidates {
            if c.max_timestamp == NO_TIMESTAMP || c.max_timestamp < timestamp {
                continue;
            }
            let start = match &c.closed {
                Some(seg) => seg.position_for_timestamp(timestamp)?,
                None => c.active_start,
            };
            let mut pos = start;
            while pos < c.size {
                let Some((h, size)) = read_header_at(&c.file, pos, c.size)? else {
                    return Err(invalid_data(format!("malformed batch at position {pos}")).into());
                };
                if h.max_timestamp >= timestamp && h.last_offset() >= log_start && !h.is_control() {
                    if let Some((_, bytes)) = read_batch_at(&c.file, pos, c.size)? {
                        let found = decoded_records(&bytes, pos)
                            .into_iter()
                            .find(|r| r.timestamp >= timestamp && r.offset >= log_start);
                        if let Some(r) = found {
                            return Ok(Some((r.offset, r.timestamp)));
                        }
                    }
                }
                pos += size;
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (-3): offset and timestamp of the record with the largest
    /// timestamp (the first such record on ties); None if empty.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        self.untorn(|| self.max_timestamp_published())
    }

    /// [`PartitionLog::max_timestamp`] against the segments published when it starts.
    fn max_timestamp_published(&self) -> Result<Option<(i64, i64)>, LogError> {
        let (candidates, _) = self.candidates(|a| a.position_for(a.max_timestamp_offset()))?;
        let mut best: Option<Candidate> = None;
        for c in candidates {
            if c.max_timestamp != NO_TIMESTAMP
                && best
                    .as_ref()
                    .is_none_or(|b| c.max_timestamp > b.max_timestamp)
            {
                best = Some(c);
            }
        }
        let Some(c) = best else {
            return Ok(None);
        };
        let (max, batch_offset) = (c.max_timestamp, c.max_timestamp_offset);
        let start = match &c.closed {
            Some(seg) => seg.position_for(batch_offset)?,
            None => c.active_start,
        };
        let mut pos = start;
        while pos < c.size {
            let Some((h, bytes)) = read_batch_at(&c.file, pos, c.size)? else {
                break;
            };
            if h.last_offset() >= batch_offset {
                let found = decoded_records(&bytes, pos)
                    .into_iter()
                    .find(|r| r.timestamp == max);
                if let Some(r) = found {
                    return Ok(Some((r.offset, r.timestamp)));
                }
                break;
            }
            pos += bytes.len() as u64;
        }
        // The batch header said so even if its records do not (e.g. all compacted away).
        Ok(Some((batch_offset, max)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::log::test_util::{encode_batch, record, records};
    use crate::log::{LogConfig, PartitionLog, TimestampType};
    use kafka_protocol::records::Compression;

    fn config() -> LogConfig {
        LogConfig {
            index_interval_bytes: 64,
            ..LogConfig::default()
        }
    }

    #[test]
    fn finds_first_record_at_or_after_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), config()).unwrap();
        // Batches of 10 records with timestamps 1000.., 2000.., 3000..
        for b in 0..3 {
            log.append(
                encode_batch(&records(0, 10, 1000 * (b + 1)), Compression::None),
                0,
            )
            .unwrap();
        }
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1000)));
        assert_eq!(log.offset_for_timestamp(1005).unwrap(), Some((5, 1005)));
        assert_eq!(log.offset_for_timestamp(1010).unwrap(), Some((10, 2000)));
        assert_eq!(log.offset_for_timestamp(3009).unwrap(), Some((29, 3009)));
        assert_eq!(log.offset_for_timestamp(3010).unwrap(), None);
    }

    #[test]
    fn finds_records_inside_compressed_batches_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode_batch(&records(0, 20, 0), Compression::Zstd);
        let cfg = LogConfig {
            segment_bytes: one.len() as u64 * 2,
            ..config()
        };
        let log = PartitionLog::open(dir.path().to_path_buf(), cfg).unwrap();
        for b in 0..8i64 {
            let c = [
                Compression::Gzip,
                Compression::Lz4,
                Compression::Zstd,
                Compression::Snappy,
            ][b as usize % 4];
            log.append(encode_batch(&records(0, 20, 100 * b), c), 0)
                .unwrap();
        }
        for b in 0..8i64 {
            for i in [0, 7, 19] {
                assert_eq!(
                    log.offset_for_timestamp(100 * b + i).unwrap(),
                    Some((20 * b + i, 100 * b + i)),
                    "batch {b} record {i}"
                );
            }
        }
        // Reopen: closed segments answer from their index files.
        log.close().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), config()).unwrap();
        assert_eq!(log.offset_for_timestamp(305).unwrap(), Some((65, 305)));
    }

    #[test]
    fn unordered_timestamps_find_the_first_qualifying_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), config()).unwrap();
        let recs = vec![
            record(0, 50, Some("a"), Some("1")),
            record(1, 10, Some("b"), Some("2")),
            record(2, 30, Some("c"), Some("3")),
        ];
        log.append(encode_batch(&recs, Compression::Gzip), 0)
            .unwrap();
        assert_eq!(log.offset_for_timestamp(20).unwrap(), Some((0, 50)));
        assert_eq!(log.max_timestamp().unwrap(), Some((0, 50)));
    }

    #[test]
    fn max_timestamp_finds_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), config()).unwrap();
        assert_eq!(log.max_timestamp().unwrap(), None);
        let recs = vec![
            record(0, 10, Some("a"), Some("1")),
            record(1, 900, Some("b"), Some("2")),
            record(2, 30, Some("c"), Some("3")),
        ];
        log.append(encode_batch(&records(0, 5, 100), Compression::None), 0)
            .unwrap();
        log.append(encode_batch(&recs, Compression::Snappy), 0)
            .unwrap();
        log.append(encode_batch(&records(0, 5, 200), Compression::None), 0)
            .unwrap();
        assert_eq!(log.max_timestamp().unwrap(), Some((6, 900)));
        log.close().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), config()).unwrap();
        assert_eq!(log.max_timestamp().unwrap(), Some((6, 900)));
    }

    #[test]
    fn log_append_time_topics_use_the_append_time() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            message_timestamp_type: TimestampType::LogAppendTime,
            ..config()
        };
        let log = PartitionLog::open(dir.path().to_path_buf(), cfg).unwrap();
        log.append(encode_batch(&records(0, 3, 5), Compression::Lz4), 1000)
            .unwrap();
        log.append(encode_batch(&records(0, 3, 5), Compression::Lz4), 2000)
            .unwrap();
        assert_eq!(log.offset_for_timestamp(1500).unwrap(), Some((3, 2000)));
        assert_eq!(log.offset_for_timestamp(5).unwrap(), Some((0, 1000)));
        assert_eq!(log.max_timestamp().unwrap(), Some((3, 2000)));
    }
}

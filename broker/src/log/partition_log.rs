//! [`PartitionLog`]: the storage of one partition, a directory of segments.
//!
//! Locking: `writer` serializes everything that changes the log (appends, rolls, retention,
//! DeleteRecords, the compaction swap, close). `state` is held only briefly: readers take it
//! shared to find the segment, file handle and published size to read, then do their I/O
//! without it; writers take it exclusively only to publish what they already wrote. So a read
//! never waits for a write syscall or an fsync, and never sees a partially written batch.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use std::os::unix::fs::FileExt;
use tokio::sync::watch;
use tracing::{info, warn};

use super::batch::{self, BatchHeader};
use super::checkpoint::{read_log_start, sync_dir, write_log_start};
use super::config::{FlushPolicy, LogConfig, TimestampType};
use super::error::LogError;
use super::flush::{FlushTarget, Flusher};
use super::segment::{parse_segment_name, read_batches, LogSegment};

/// What one `append` wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record of the first batch.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// The broker's timestamp for LogAppendTime topics, else -1.
    pub log_append_time_ms: i64,
    /// The log start offset after the append.
    pub log_start_offset: i64,
    /// Number of records appended.
    pub record_count: i64,
}

/// What one `run_maintenance` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Active segments rolled because they were too old.
    pub segments_rolled: usize,
    /// Closed segments deleted by retention.
    pub segments_deleted: usize,
    /// Bytes those deleted segments held.
    pub bytes_deleted: u64,
    /// Closed segments rewritten by compaction.
    pub segments_compacted: usize,
}

/// Everything readers need, behind the `state` lock.
#[derive(Debug)]
pub(crate) struct LogState {
    /// Closed segments by ascending base offset; immutable, shared with readers.
    pub(crate) closed: Vec<Arc<LogSegment>>,
    /// The segment appends go to.
    pub(crate) active: LogSegment,
    /// First offset still readable.
    pub(crate) log_start_offset: i64,
    /// Set by `close`.
    pub(crate) closed_flag: bool,
}

impl LogState {
    fn log_end_offset(&self) -> i64 {
        self.active.next_offset()
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.closed_flag {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }
}

/// The storage of one partition. Shared as `Arc<PartitionLog>`; all methods take `&self`.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    me: Weak<PartitionLog>,
    config: RwLock<LogConfig>,
    writer: Mutex<()>,
    state: RwLock<LogState>,
    end_tx: watch::Sender<i64>,
    flusher: Arc<Flusher>,
    /// Serializes `run_maintenance` calls; compaction does its long I/O under this lock only.
    maintenance: Mutex<()>,
}

/// Wall-clock milliseconds, for the few places without a caller-supplied `now_ms`.
pub(crate) fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PartitionLog {
    /// Opens (creating if missing) the partition directory and recovers it. Called inside a
    /// tokio runtime (may spawn the flusher task).
    pub fn open(dir: PathBuf, config: LogConfig) -> Result<Arc<Self>, LogError> {
        std::fs::create_dir_all(&dir)?;
        let interval = u64::from(config.index_interval_bytes.max(1));
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".cleaned") || name.ends_with(".tmp") {
                // Leftovers of a compaction or index write interrupted by a crash.
                std::fs::remove_file(entry.path())?;
            } else if let Some(base) = parse_segment_name(name, "log") {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let checkpoint = read_log_start(&dir)?;

        let mut closed = Vec::new();
        let active = match bases.split_last() {
            None => LogSegment::create(&dir, checkpoint.unwrap_or(0), wall_clock_ms())?,
            Some((&last, older)) => {
                for &base in older {
                    closed.push(Arc::new(LogSegment::open_closed(&dir, base, interval)?));
                }
                LogSegment::recover(&dir, last, interval)?
            }
        };
        let first_base = closed
            .first()
            .map_or(active.base_offset(), |s: &Arc<LogSegment>| s.base_offset());
        let mut state = LogState {
            closed,
            active,
            log_start_offset: checkpoint.unwrap_or(first_base).max(first_base),
            closed_flag: false,
        };
        // Segments wholly below the start offset: a DeleteRecords whose deletions a crash cut short.
        while state.closed.len() > 1 && state.closed[1].base_offset() <= state.log_start_offset {
            let seg = state.closed.remove(0);
            seg.delete_files()?;
        }
        if state.log_start_offset > state.log_end_offset() {
            // The start offset was persisted past data lost in the crash: start afresh there.
            warn!(dir = %dir.display(), log_start = state.log_start_offset, "log start offset beyond recovered log end; dropping all segments");
            for seg in state.closed.drain(..) {
                seg.delete_files()?;
            }
            state.active.delete_files()?;
            state.active = LogSegment::create(&dir, state.log_start_offset, wall_clock_ms())?;
        } else if state
            .closed
            .first()
            .is_some_and(|s| s.next_offset() <= state.log_start_offset)
            && state.closed.len() == 1
            && state.active.base_offset() <= state.log_start_offset
        {
            let seg = state.closed.remove(0);
            seg.delete_files()?;
        }
        sync_dir(&dir)?;
        let log_end = state.log_end_offset();
        info!(dir = %dir.display(), log_start = state.log_start_offset, log_end, segments = state.closed.len() + 1, "opened partition log");
        let (end_tx, _) = watch::channel(log_end);
        Ok(Arc::new_cyclic(|me| PartitionLog {
            dir,
            me: me.clone(),
            config: RwLock::new(config),
            writer: Mutex::new(()),
            state: RwLock::new(state),
            end_tx,
            // Recovery fsynced any truncation and trusts what it found; treat it as durable.
            flusher: Arc::new(Flusher::new(log_end)),
            maintenance: Mutex::new(()),
        }))
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write_state(&self) -> RwLockWriteGuard<'_, LogState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn writer_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.writer)
    }

    pub(crate) fn maintenance_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.maintenance)
    }

    /// Validates every batch in `records` (one or more concatenated record batches, magic 2, as
    /// a producer sent them) before writing any, assigns offsets (rewrites base offset), sets
    /// partition leader epoch to 0, and for LogAppendTime topics sets the timestamp-type
    /// attribute bit and max timestamp (= now_ms) and recomputes the CRC. Appends to the active
    /// segment (rolling first when the batch would exceed segment_bytes or the segment is older
    /// than segment_ms). Returns before fsync.
    pub fn append(&self, records: Bytes, now_ms: i64) -> Result<AppendInfo, LogError> {
        let config = self.config();
        let batches = batch::validate_produce(&records, config.max_message_bytes as usize)?;
        let record_count: i64 = batches.iter().map(|b| i64::from(b.record_count)).sum();
        let log_append_time = config.message_timestamp_type == TimestampType::LogAppendTime;
        // The only copy on the append path, and only if the caller still shares the buffer.
        let mut buf = BytesMut::from(records);
        let interval = u64::from(config.index_interval_bytes.max(1));

        let _writer = self.writer_lock();
        let needs_roll = {
            let st = self.read_state();
            st.check_open()?;
            let a = &st.active;
            a.size() > 0
                && (a.size() + buf.len() as u64 > config.effective_segment_bytes()
                    || (config.segment_ms >= 0 && now_ms - a.created_ms() >= config.segment_ms)
                    || a.next_offset() + record_count - a.base_offset() > i64::from(u32::MAX))
        };
        if needs_roll {
            self.roll_locked(now_ms)?;
        }
        let (file, position, base_offset) = {
            let st = self.read_state();
            (
                Arc::clone(st.active.file()),
                st.active.size(),
                st.active.next_offset(),
            )
        };
        let mut next = base_offset;
        for b in &batches {
            let bytes = &mut buf[b.position..b.position + b.size];
            batch::set_base_offset(bytes, next);
            batch::set_partition_leader_epoch(bytes, 0);
            if log_append_time {
                batch::set_log_append_time(bytes, now_ms);
            }
            next += i64::from(b.record_count);
        }
        file.write_all_at(&buf, position)?;

        let log_start_offset = {
            let mut st = self.write_state();
            if position == 0 {
                // Age counts from the first append, on the caller's clock.
                st.active.set_created_ms(now_ms);
            }
            for b in &batches {
                if let Some(h) = BatchHeader::parse(&buf[b.position..]) {
                    st.active.track_batch(
                        position + b.position as u64,
                        &h,
                        b.size as u64,
                        interval,
                    );
                }
            }
            st.log_start_offset
        };
        self.end_tx.send_replace(next);
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time_ms: if log_append_time { now_ms } else { -1 },
            log_start_offset,
            record_count,
        })
    }

    /// Rolls the active segment: fsyncs it and writes its indexes, then starts a new one at the
    /// log end offset. The caller holds the writer lock. A no-op for an empty active segment.
    pub(crate) fn roll_locked(&self, now_ms: i64) -> Result<(), LogError> {
        let new_base = {
            let st = self.read_state();
            if st.active.size() == 0 {
                return Ok(());
            }
            // fsync and index writes happen under the shared lock: readers carry on meanwhile.
            st.active.seal_files()?;
            st.log_end_offset()
        };
        let new_segment = LogSegment::create(&self.dir, new_base, now_ms)?;
        sync_dir(&self.dir)?;
        {
            let mut st = self.write_state();
            st.active.switch_to_index_files()?;
            let old = std::mem::replace(&mut st.active, new_segment);
            st.closed.push(Arc::new(old));
        }
        // Everything in the old segment is on disk now.
        self.flusher.mark_durable(new_base);
        info!(dir = %self.dir.display(), new_base, "rolled log segment");
        Ok(())
    }

    /// Resolves once everything up to and including `last_offset` is fsynced (immediately for
    /// FlushPolicy::PageCache). Group commit: while one fsync runs, further waiters queue and
    /// share the next fsync; never one fsync per waiter.
    pub async fn wait_durable(&self, last_offset: i64) -> Result<(), LogError> {
        if self.config().flush_policy == FlushPolicy::PageCache {
            return Ok(());
        }
        self.flusher
            .wait_durable(self.me.clone(), last_offset)
            .await
    }

    /// Whole batches starting with the batch containing `offset`, up to `max_bytes` total, but
    /// always at least one whole batch if any exists at/after offset (KIP-74). Empty Bytes if
    /// offset == log_end_offset. Err OffsetOutOfRange if offset < log_start_offset or >
    /// log_end_offset. Batches are served byte for byte as stored.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        let mut cursor = offset;
        loop {
            let target = {
                let st = self.read_state();
                st.check_open()?;
                let (start, end) = (st.log_start_offset, st.log_end_offset());
                if offset < start || offset > end {
                    return Err(LogError::OffsetOutOfRange {
                        requested: offset,
                        log_start: start,
                        log_end: end,
                    });
                }
                if cursor >= end {
                    return Ok(Bytes::new());
                }
                // The active segment's index is in memory: look it up under the lock.
                if cursor >= st.active.base_offset() || st.closed.is_empty() {
                    let pos = st.active.position_for(cursor)?;
                    ReadTarget::Active {
                        file: Arc::clone(st.active.file()),
                        start: pos,
                        end: st.active.size(),
                    }
                } else {
                    let i = st
                        .closed
                        .partition_point(|s| s.base_offset() <= cursor)
                        .saturating_sub(1);
                    let next_base = st
                        .closed
                        .get(i + 1)
                        .map_or(st.active.base_offset(), |s| s.base_offset());
                    ReadTarget::Closed {
                        segment: Arc::clone(&st.closed[i]),
                        next_base,
                    }
                }
            };
            match target {
                ReadTarget::Active { file, start, end } => {
                    return Ok(
                        read_batches(&file, start, end, cursor, max_bytes)?.unwrap_or_default()
                    );
                }
                ReadTarget::Closed { segment, next_base } => {
                    let start = segment.position_for(cursor)?;
                    let found =
                        read_batches(segment.file(), start, segment.size(), cursor, max_bytes)?;
                    match found {
                        Some(bytes) => return Ok(bytes),
                        // Nothing at/after `cursor` here (e.g. compacted away): try the next one.
                        None => cursor = next_base.max(cursor + 1),
                    }
                }
            }
        }
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.read_state().log_start_offset
    }

    /// Next offset to be assigned (= high watermark on a single replica).
    pub fn log_end_offset(&self) -> i64 {
        self.read_state().log_end_offset()
    }

    /// Watch of the log end offset; fetch long-polls await changes on it.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.end_tx.subscribe()
    }

    /// ListOffsets by timestamp: the first record whose timestamp >= `timestamp`, as (offset,
    /// that record's timestamp); None if no such record.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let _ = timestamp;
        self.read_state().check_open()?;
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (-3): offset and timestamp of the record with the largest
    /// timestamp; None if empty.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        self.read_state().check_open()?;
        Ok(None)
    }

    /// DeleteRecords: raises the log start offset to `offset` (persisted across restart),
    /// deletes whole segments entirely below it. Returns the new log start offset. Err
    /// OffsetOutOfRange if offset > log_end_offset. Never lowers the start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let _writer = self.writer_lock();
        let (start, end) = {
            let st = self.read_state();
            st.check_open()?;
            (st.log_start_offset, st.log_end_offset())
        };
        if offset > end || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset <= start {
            return Ok(start);
        }
        write_log_start(&self.dir, offset)?;
        if offset == end {
            // Everything goes: roll so the old active segment can be deleted too.
            self.roll_locked(wall_clock_ms())?;
        }
        let doomed = {
            let mut st = self.write_state();
            st.log_start_offset = offset;
            let active_base = st.active.base_offset();
            let keep_from = (0..st.closed.len())
                .find(|&i| {
                    let next_base = st
                        .closed
                        .get(i + 1)
                        .map_or(active_base, |s| s.base_offset());
                    next_base > offset
                })
                .unwrap_or(st.closed.len());
            st.closed.drain(..keep_from).collect::<Vec<_>>()
        };
        for seg in &doomed {
            seg.delete_files()?;
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(offset)
    }

    /// Bytes on disk of all segments' `.log` files.
    pub fn size_bytes(&self) -> u64 {
        let st = self.read_state();
        st.closed.iter().map(|s| s.size()).sum::<u64>() + st.active.size()
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current configuration.
    pub fn config(&self) -> LogConfig {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the configuration; size and age limits apply from the next append or
    /// maintenance run.
    pub fn set_config(&self, config: LogConfig) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// Roll by age, retention by time and bytes (Delete/CompactDelete), compaction
    /// (Compact/CompactDelete). The active segment is never deleted nor compacted. Blocking:
    /// call it from `spawn_blocking`.
    pub fn run_maintenance(&self, now_ms: i64) -> Result<MaintenanceReport, LogError> {
        // Stage 1: maintenance is not implemented yet.
        let _ = now_ms;
        self.read_state().check_open()?;
        Ok(MaintenanceReport::default())
    }

    /// Flushes and fsyncs everything, writes index files; afterwards append/read return
    /// LogError::Closed.
    pub fn close(&self) -> Result<(), LogError> {
        let _writer = self.writer_lock();
        let end = {
            let st = self.read_state();
            if st.closed_flag {
                return Ok(());
            }
            st.active.seal_files()?;
            st.log_end_offset()
        };
        {
            let mut st = self.write_state();
            st.active.switch_to_index_files()?;
            st.closed_flag = true;
        }
        self.flusher.mark_closed(end);
        info!(dir = %self.dir.display(), log_end = end, "closed partition log");
        Ok(())
    }
}

impl FlushTarget for PartitionLog {
    fn flush_target(&self) -> Option<(Arc<File>, i64)> {
        let st = self.read_state();
        if st.closed_flag {
            return None;
        }
        Some((Arc::clone(st.active.file()), st.log_end_offset()))
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        self.flusher.shutdown();
    }
}

/// Where a read goes, captured under the lock and used after releasing it.
enum ReadTarget {
    Active {
        file: Arc<File>,
        start: u64,
        end: u64,
    },
    Closed {
        segment: Arc<LogSegment>,
        next_base: i64,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::log::test_util::{batch_of, encode_batch, records};
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    pub(crate) fn small_config() -> LogConfig {
        LogConfig {
            index_interval_bytes: 256,
            ..LogConfig::default()
        }
    }

    /// Decodes fetched bytes into (offset, value) pairs.
    pub(crate) fn decode_all(mut bytes: Bytes) -> Vec<(i64, Option<Bytes>)> {
        RecordBatchDecoder::decode_all(&mut bytes)
            .unwrap()
            .into_iter()
            .flat_map(|set| set.records)
            .map(|r| (r.offset, r.value))
            .collect()
    }

    /// Every record from the log start to the end, fetching batch by batch.
    pub(crate) fn read_all(log: &PartitionLog) -> Vec<(i64, Option<Bytes>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let chunk = log.read(offset, 1 << 30).unwrap();
            let ranges = batch_ranges(&chunk);
            offset = ranges.last().unwrap().1 + 1;
            out.extend(decode_all(chunk));
        }
        out
    }

    /// Offsets of the batches in fetched bytes: (base, last).
    fn batch_ranges(bytes: &[u8]) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let h = BatchHeader::parse(&bytes[pos..]).unwrap();
            out.push((h.base_offset, h.last_offset()));
            pos += h.total_size().unwrap();
        }
        out
    }

    #[test]
    fn appends_assign_contiguous_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().join("t-0"), small_config()).unwrap();
        let a = log.append(batch_of(5, 10, 1000), 1).unwrap();
        let b = log.append(batch_of(3, 10, 1000), 1).unwrap();
        assert_eq!((a.base_offset, a.last_offset, a.record_count), (0, 4, 5));
        assert_eq!((b.base_offset, b.last_offset, b.record_count), (5, 7, 3));
        assert_eq!(a.log_append_time_ms, -1);
        assert_eq!(log.log_end_offset(), 8);
        let offsets: Vec<i64> = decode_all(log.read(0, 1 << 20).unwrap())
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(offsets, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn one_append_of_several_batches_assigns_offsets_to_each() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&batch_of(2, 10, 0));
        buf.extend_from_slice(&encode_batch(&records(0, 3, 0), Compression::Zstd));
        let info = log.append(buf.freeze(), 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 4));
        let data = log.read(0, 1 << 20).unwrap();
        assert_eq!(batch_ranges(&data), vec![(0, 1), (2, 4)]);
    }

    #[test]
    fn read_from_middle_returns_the_containing_batch() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        for _ in 0..50 {
            log.append(batch_of(10, 20, 0), 0).unwrap();
        }
        for offset in [0, 7, 10, 123, 255, 499] {
            let data = log.read(offset, 1).unwrap();
            let ranges = batch_ranges(&data);
            assert_eq!(ranges.len(), 1);
            assert!(ranges[0].0 <= offset && offset <= ranges[0].1, "{offset}");
        }
    }

    #[test]
    fn read_respects_max_bytes_but_returns_at_least_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        let one = batch_of(10, 20, 0);
        for _ in 0..10 {
            log.append(one.clone(), 0).unwrap();
        }
        assert_eq!(log.read(0, 1).unwrap().len(), one.len());
        assert_eq!(log.read(0, one.len() * 3 + 5).unwrap().len(), one.len() * 3);
        assert_eq!(log.read(95, 1 << 20).unwrap().len(), one.len());
        assert!(log.read(100, 1 << 20).unwrap().is_empty());
    }

    #[test]
    fn read_outside_the_log_is_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        log.append(batch_of(3, 5, 0), 0).unwrap();
        assert!(matches!(
            log.read(4, 100),
            Err(LogError::OffsetOutOfRange {
                requested: 4,
                log_start: 0,
                log_end: 3
            })
        ));
        assert!(matches!(
            log.read(-1, 100),
            Err(LogError::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn rejected_append_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&batch_of(2, 10, 0));
        buf.extend_from_slice(&[1, 2, 3]);
        assert!(log.append(buf.freeze(), 0).is_err());
        assert_eq!(log.log_end_offset(), 0);
        assert_eq!(log.size_bytes(), 0);
    }

    #[test]
    fn log_append_time_stamps_batches() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            message_timestamp_type: TimestampType::LogAppendTime,
            ..small_config()
        };
        let log = PartitionLog::open(dir.path().to_path_buf(), config).unwrap();
        let info = log.append(batch_of(3, 5, 10), 99_000).unwrap();
        assert_eq!(info.log_append_time_ms, 99_000);
        let data = log.read(0, 1 << 20).unwrap();
        let h = BatchHeader::parse(&data).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99_000);
        assert_eq!(decode_all(data).len(), 3); // CRC still valid
    }

    #[test]
    fn segments_roll_by_size_and_reads_cross_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch_of(10, 50, 0);
        let config = LogConfig {
            segment_bytes: one.len() as u64 * 3,
            ..small_config()
        };
        let log = PartitionLog::open(dir.path().to_path_buf(), config).unwrap();
        for _ in 0..10 {
            log.append(one.clone(), 0).unwrap();
        }
        let logs = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".log")
            })
            .count();
        assert_eq!(logs, 4);
        assert!(dir.path().join("00000000000000000030.log").exists());
        assert!(dir.path().join("00000000000000000000.index").exists());
        let mut offset = 0;
        let mut seen = Vec::new();
        while offset < log.log_end_offset() {
            let recs = decode_all(log.read(offset, 1 << 20).unwrap());
            offset = recs.last().unwrap().0 + 1;
            seen.extend(recs.into_iter().map(|r| r.0));
        }
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn segments_roll_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_ms: 1000,
            ..small_config()
        };
        let log = PartitionLog::open(dir.path().to_path_buf(), config).unwrap();
        log.append(batch_of(2, 5, 0), 10_000).unwrap();
        log.append(batch_of(2, 5, 0), 10_500).unwrap();
        assert!(!dir.path().join("00000000000000000004.log").exists());
        log.append(batch_of(2, 5, 0), 11_000).unwrap();
        assert!(dir.path().join("00000000000000000004.log").exists());
        assert_eq!(decode_all(log.read(0, 1 << 20).unwrap()).len(), 4);
        assert_eq!(decode_all(log.read(4, 1 << 20).unwrap()).len(), 2);
    }

    #[test]
    fn reopen_after_close_preserves_everything() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch_of(10, 50, 0);
        let config = LogConfig {
            segment_bytes: one.len() as u64 * 2,
            ..small_config()
        };
        let before = {
            let log = PartitionLog::open(dir.path().to_path_buf(), config.clone()).unwrap();
            for _ in 0..5 {
                log.append(one.clone(), 0).unwrap();
            }
            let data = read_all(&log);
            log.close().unwrap();
            assert!(matches!(log.read(0, 10), Err(LogError::Closed)));
            assert!(matches!(log.append(one.clone(), 0), Err(LogError::Closed)));
            data
        };
        let log = PartitionLog::open(dir.path().to_path_buf(), config).unwrap();
        assert_eq!(log.log_end_offset(), 50);
        assert_eq!(before.len(), 50);
        assert_eq!(read_all(&log), before);
        assert_eq!(log.append(one, 0).unwrap().base_offset, 50);
    }

    #[test]
    fn recovery_truncates_torn_tail_and_continues_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch_of(10, 50, 0);
        {
            let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
            for _ in 0..3 {
                log.append(one.clone(), 0).unwrap();
            }
            // Dropped without close(): a crash as far as the files are concerned.
        }
        let path = dir.path().join("00000000000000000000.log");
        let good_len = std::fs::metadata(&path).unwrap().len();
        // A torn batch: the first half of a fourth batch.
        let mut torn = one.to_vec();
        torn[..8].copy_from_slice(&30i64.to_be_bytes());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, &torn[..torn.len() / 2]).unwrap();
        drop(f);

        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        assert_eq!(log.log_end_offset(), 30);
        assert_eq!(log.append(one.clone(), 0).unwrap().base_offset, 30);
        assert_eq!(decode_all(log.read(25, 1 << 20).unwrap()).len(), 20);
    }

    #[test]
    fn recovery_drops_garbage_and_a_corrupt_batch() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch_of(10, 50, 0);
        {
            let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
            for _ in 0..3 {
                log.append(one.clone(), 0).unwrap();
            }
        }
        let path = dir.path().join("00000000000000000000.log");
        let len = std::fs::metadata(&path).unwrap().len();
        // Flip a byte inside the last batch and append garbage after it.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x55;
        bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef].repeat(40));
        std::fs::write(&path, &bytes).unwrap();

        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len - one.len() as u64
        );
        assert_eq!(log.log_end_offset(), 20);
        assert_eq!(log.append(one, 0).unwrap().base_offset, 20);
        assert_eq!(decode_all(log.read(0, 1 << 20).unwrap()).len(), 30);
    }

    #[tokio::test]
    async fn wait_durable_resolves_with_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        let info = log.append(batch_of(3, 5, 0), 0).unwrap();
        log.wait_durable(info.last_offset).await.unwrap();
        log.wait_durable(info.last_offset).await.unwrap();
    }

    #[tokio::test]
    async fn wait_durable_resolves_at_once_with_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush_policy: FlushPolicy::PageCache,
            ..small_config()
        };
        let log = PartitionLog::open(dir.path().to_path_buf(), config).unwrap();
        let info = log.append(batch_of(3, 5, 0), 0).unwrap();
        log.wait_durable(info.last_offset).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_waiters_all_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let log = Arc::clone(&log);
            tasks.push(tokio::spawn(async move {
                let info = log.append(batch_of(2, 10, 0), 0).unwrap();
                log.wait_durable(info.last_offset).await.unwrap();
                info.last_offset
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(log.log_end_offset(), 400);
    }
}

//! [`PartitionLog`]: the storage of one partition, a directory of segments.
//!
//! Locking: `writer` serializes everything that changes the log (appends, rolls, retention,
//! DeleteRecords, the compaction swap, close). `state` is held only briefly: readers take it
//! shared to find the segment, file handle and published size to read, then do their I/O
//! without it; writers take it exclusively only to publish what they already wrote. So a read
//! never waits for a write syscall or an fsync, and never sees a partially written batch.
//!
//! Truncation (a follower cutting its log back to where it agrees with its leader) is the one
//! change that shrinks files. It publishes the shortened segment list first, then cuts files,
//! and bumps `truncations`; a read that began before compares the counter after its I/O and
//! starts again, so a read never returns bytes a truncation was removing or replacing.
//!
//! Other locks are taken after `writer` and never while holding `state`: `producers` and
//! `epochs` (the leader epoch cache) change only under `writer`, and so does `aborted` (the
//! aborted-transaction index), taken while holding `producers` when a marker is written: an
//! abort is in the index before its transaction stops bounding the last stable offset, so a
//! read_committed reader that sees the LSO move past it also finds it in the index.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use std::os::unix::fs::FileExt;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::batch::{self, BatchHeader};
use super::checkpoint::{read_log_start, sync_dir, write_log_start};
use super::config::{FlushPolicy, LogConfig, TimestampType};
use super::control_batch::{self, ControlRecordType};
use super::error::LogError;
use super::flush::{FlushTarget, Flusher};
use super::leader_epoch_cache::{warn_corrupt, EpochEntry, LeaderEpochCache, Loaded};
use super::producer_state::{
    AppendCheck, IncomingBatch, ProducerStateManager, Rebuilt, PRODUCER_ID_EXPIRATION_MS,
};
use super::segment::{for_each_header, parse_segment_name, read_batches, LogSegment, NO_TIMESTAMP};
use super::txn_index::{AbortedTxn, AbortedTxnIndex};

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
    /// Number of records appended (for a duplicate, the records the original append wrote).
    pub record_count: i64,
    /// True when the batches repeat ones already in the log (an idempotent producer's retry):
    /// nothing was written and the offsets are those of the original append.
    pub duplicate: bool,
}

/// What a partition knows of one producer (Kafka's DescribeProducers answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerInfo {
    /// The producer id.
    pub producer_id: i64,
    /// The newest epoch seen.
    pub producer_epoch: i16,
    /// Sequence of its last record, -1 if none is remembered.
    pub last_sequence: i32,
    /// Max timestamp of its last batch.
    pub last_timestamp: i64,
    /// First offset of its open transaction here, -1 without one.
    pub current_txn_start_offset: i64,
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
    /// Idempotent producers forgotten after `producer.id.expiration.ms` without a batch.
    pub producers_expired: usize,
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

    pub(crate) fn check_open(&self) -> Result<(), LogError> {
        if self.closed_flag {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    /// A read may start anywhere in `[log start, log end]` of an open log.
    fn check_readable(&self, offset: i64) -> Result<(), LogError> {
        self.check_open()?;
        let (start, end) = (self.log_start_offset, self.log_end_offset());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start: start,
                log_end: end,
            });
        }
        Ok(())
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
    /// (log end, closed segments, delete.retention.ms, min.compaction.lag.ms) after the last
    /// compaction pass that left nothing for later, so an idle log is not rescanned.
    compaction_memo: Mutex<Option<CompactionMemo>>,
    /// Idempotent producer state; changed only under the writer lock, so that it always
    /// describes the log up to its end when a snapshot is taken.
    producers: Mutex<ProducerStateManager>,
    /// Which leader epoch began at which offset; changed only under the writer lock.
    epochs: Mutex<LeaderEpochCache>,
    /// Aborted transactions by segment (`.txnindex`); changed only under the writer lock.
    aborted: Mutex<AbortedTxnIndex>,
    /// Bumped by every truncation when it publishes the shortened log; see the module docs.
    truncations: AtomicU64,
}

/// See `PartitionLog::compaction_memo`.
pub(crate) type CompactionMemo = (i64, usize, i64, i64);

/// Wall-clock milliseconds, for the few places without a caller-supplied `now_ms`.
pub(crate) fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Locks a mutex, ignoring poisoning: no code path panics while holding one, and the state
/// behind them stays consistent between statements anyway.
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
        if state.log_start_offset > state.log_end_offset() {
            // The start offset was persisted past data lost in the crash: start afresh there.
            warn!(dir = %dir.display(), log_start = state.log_start_offset, "log start offset beyond recovered log end; dropping all segments");
            for seg in state.closed.drain(..) {
                seg.delete_files()?;
            }
            state.active.delete_files()?;
            state.active = LogSegment::create(&dir, state.log_start_offset, wall_clock_ms())?;
        }
        // Segments wholly below the start offset: a DeleteRecords whose deletions a crash cut short.
        while let Some(first) = state.closed.first() {
            let next_base = state
                .closed
                .get(1)
                .map_or(state.active.base_offset(), |s| s.base_offset());
            if next_base > state.log_start_offset {
                break;
            }
            first.delete_files()?;
            state.closed.remove(0);
        }
        // What recovery found may still sit only in the page cache (the process died, the
        // machine did not); make it durable so the flusher may treat it as such.
        state.active.file().sync_data()?;
        sync_dir(&dir)?;
        let rebuilt = ProducerStateManager::rebuild(&dir, &state)?;
        let mut aborted = AbortedTxnIndex::open(&dir, &segment_bases(&state))?;
        let producers = reconcile_aborted(&mut aborted, rebuilt)?;
        let epochs = open_epoch_cache(&dir, &state)?;
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
            compaction_memo: Mutex::new(None),
            producers: Mutex::new(producers),
            epochs: Mutex::new(epochs),
            aborted: Mutex::new(aborted),
            truncations: AtomicU64::new(0),
        }))
    }

    /// Shared access to the segment list and offsets; hold it only briefly.
    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Exclusive access to publish a change; take `writer_lock` first.
    pub(crate) fn write_state(&self) -> RwLockWriteGuard<'_, LogState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serializes everything that changes the log.
    pub(crate) fn writer_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.writer)
    }

    /// Serializes maintenance runs.
    pub(crate) fn maintenance_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.maintenance)
    }

    /// Idempotent producer state; change it only under the writer lock.
    pub(crate) fn producers(&self) -> MutexGuard<'_, ProducerStateManager> {
        lock(&self.producers)
    }

    /// The leader epoch cache; change it only under the writer lock.
    pub(crate) fn epochs(&self) -> MutexGuard<'_, LeaderEpochCache> {
        lock(&self.epochs)
    }

    /// The aborted-transaction index; change it only under the writer lock.
    pub(crate) fn aborted(&self) -> MutexGuard<'_, AbortedTxnIndex> {
        lock(&self.aborted)
    }

    /// The cleaner's note of a pass that left nothing for later.
    pub(crate) fn compaction_memo(&self) -> MutexGuard<'_, Option<CompactionMemo>> {
        lock(&self.compaction_memo)
    }

    /// Validates every batch in `records` (one or more concatenated record batches, magic 2, as
    /// a producer sent them) before writing any, assigns offsets (rewrites base offset), sets
    /// the partition leader epoch to the latest epoch of the leader epoch cache (0 on a log
    /// whose replica layer never assigned one; see [`PartitionLog::append_as_leader`]), and for
    /// LogAppendTime topics sets the timestamp-type
    /// attribute bit and max timestamp (= now_ms) and recomputes the CRC. Appends to the active
    /// segment (rolling first when the batch would exceed segment_bytes or the segment is older
    /// than segment_ms). Returns before fsync.
    ///
    /// Batches with a producer id (idempotent producers) are checked against the producer
    /// state first: an older epoch fails with InvalidProducerEpoch, a sequence gap with
    /// OutOfOrderSequence. If every batch repeats one of the last five of its producer (a
    /// retry), nothing is written and the original offsets come back with `duplicate` set; a
    /// call mixing such repeats with new batches fails with OutOfOrderSequence.
    ///
    /// Transactional batches open their producer's transaction here (see
    /// [`PartitionLog::first_unstable_offset`]); a non-transactional batch from a producer
    /// with an open transaction, and any control batch, fail with InvalidTxnState and
    /// InvalidRecord: only [`PartitionLog::append_txn_marker`] writes markers.
    pub fn append(&self, records: Bytes, now_ms: i64) -> Result<AppendInfo, LogError> {
        self.append_stamped(records, now_ms, None, Origin::Client)
    }

    /// [`PartitionLog::append`] by the leader of `leader_epoch`: stamps every batch's partition
    /// leader epoch with it (a field outside the CRC, so producers' CRCs stay valid) and, when
    /// the epoch is new, records in the leader epoch cache that it begins at the first offset
    /// written; the cache file is written only then, not on every append.
    ///
    /// Fails with FencedLeaderEpoch, writing nothing, if the cache already holds a newer epoch
    /// (this replica was leader of `leader_epoch` but no longer is), and with InvalidRecord for
    /// a negative epoch.
    pub fn append_as_leader(
        &self,
        records: Bytes,
        now_ms: i64,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        if leader_epoch < 0 {
            return Err(LogError::InvalidRecord(format!(
                "leader epoch {leader_epoch} is negative"
            )));
        }
        self.append_stamped(records, now_ms, Some(leader_epoch), Origin::Client)
    }

    /// Writes a transaction marker (Kafka's WriteTxnMarkers on a partition leader): a control
    /// batch ending `producer_id`'s transaction, committing or aborting it. An abort of a
    /// transaction open here goes into the aborted-transaction index; either way the
    /// transaction stops bounding the last stable offset. `leader_epoch` as for
    /// [`PartitionLog::append_as_leader`] (`None`: the cache's latest).
    ///
    /// Fails with InvalidProducerEpoch, writing nothing, when the log has seen a newer epoch
    /// of the producer than `producer_epoch`.
    pub fn append_txn_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        kind: ControlRecordType,
        leader_epoch: Option<i32>,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let marker = control_batch::marker_batch(
            producer_id,
            producer_epoch,
            coordinator_epoch,
            kind,
            now_ms,
        )?;
        self.append_stamped(marker, now_ms, leader_epoch, Origin::Coordinator)
    }

    /// Appends the group coordinator's transactional offset commits (TxnOffsetCommit) to an
    /// offsets partition: transactional batches whose sequences are not checked (Kafka writes
    /// them without one), fenced by epoch, opening the producer's transaction here.
    /// `leader_epoch` as for [`PartitionLog::append_as_leader`] (`None`: the cache's latest).
    pub fn append_txn_offsets(
        &self,
        records: Bytes,
        now_ms: i64,
        leader_epoch: Option<i32>,
    ) -> Result<AppendInfo, LogError> {
        self.append_stamped(records, now_ms, leader_epoch, Origin::Group)
    }

    /// The first offset of the oldest transaction still open in this partition, if any: the
    /// last stable offset is the lower of it and the high watermark.
    ///
    /// Never below the log start offset (as in Kafka): retention or DeleteRecords may remove
    /// the start of a transaction that is still open, and nothing below the start is readable.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        let first = self.producers().first_unstable_offset()?;
        Some(first.max(self.log_start_offset()))
    }

    /// Whether `producer_id` has a transaction open here at `producer_epoch`: its records
    /// were verified with the coordinator when the transaction first wrote here.
    pub fn has_open_txn(&self, producer_id: i64, producer_epoch: i16) -> bool {
        self.producers().get(producer_id).is_some_and(|e| {
            e.producer_epoch == producer_epoch && e.current_txn_first_offset.is_some()
        })
    }

    /// The producers this partition knows (DescribeProducers), by producer id.
    pub fn active_producers(&self) -> Vec<ProducerInfo> {
        let mut out: Vec<ProducerInfo> = self
            .producers()
            .entries()
            .map(|e| ProducerInfo {
                producer_id: e.producer_id,
                producer_epoch: e.producer_epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                current_txn_start_offset: e.current_txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_unstable_by_key(|p| p.producer_id);
        out
    }

    /// The aborted transactions whose markers are at or after `start` and whose first record
    /// is before `upper_bound`, for a read_committed fetch of `[start, upper_bound)`.
    pub fn aborted_transactions(&self, start: i64, upper_bound: i64) -> Vec<AbortedTxn> {
        self.aborted().collect(start, upper_bound)
    }

    /// A read_committed read (Fetch with isolation level 1): whole batches from `offset` below
    /// the last stable offset (the first open transaction's first offset, capped at
    /// `high_watermark`), and the aborted transactions overlapping what was read. Returns the
    /// records, the last stable offset and the aborted transactions.
    pub fn read_committed(
        &self,
        offset: i64,
        max_bytes: usize,
        high_watermark: i64,
    ) -> Result<(Bytes, i64, Vec<AbortedTxn>), LogError> {
        let lso = self
            .first_unstable_offset()
            .map_or(high_watermark, |first| first.min(high_watermark));
        let records = self.read_up_to(offset, max_bytes, lso)?;
        let mut end = offset;
        let mut used = 0;
        while let Some(h) = BatchHeader::parse(&records[used..]) {
            end = h.next_offset();
            match h.total_size() {
                Some(size) => used += size,
                None => break,
            }
        }
        let aborted = if end > offset {
            self.aborted_transactions(offset, end)
        } else {
            Vec::new()
        };
        Ok((records, lso, aborted))
    }

    /// The body of [`PartitionLog::append`] and [`PartitionLog::append_as_leader`]; `None`
    /// stamps the latest epoch the cache holds (read under the writer lock, so an epoch
    /// assigned concurrently is never fenced by a plain append).
    fn append_stamped(
        &self,
        records: Bytes,
        now_ms: i64,
        leader_epoch: Option<i32>,
        origin: Origin,
    ) -> Result<AppendInfo, LogError> {
        let config = self.config();
        let batches = batch::validate_produce(&records, config.max_message_bytes as usize)?;
        let headers = batches
            .iter()
            .map(|b| {
                BatchHeader::parse(&records[b.position..])
                    .ok_or_else(|| LogError::CorruptRecord("batch header vanished".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if origin != Origin::Coordinator && headers.iter().any(|h| h.is_control()) {
            // Kafka's rule too: a client could otherwise end any producer's transaction.
            return Err(LogError::InvalidRecord(
                "control batches may only be written by the transaction coordinator".into(),
            ));
        }
        let record_count: i64 = batches.iter().map(|b| i64::from(b.record_count)).sum();
        let log_append_time = config.message_timestamp_type == TimestampType::LogAppendTime;
        // The only copy on the append path, and only if the caller still shares the buffer.
        let mut buf = BytesMut::from(records);
        let interval = u64::from(config.index_interval_bytes.max(1));

        let _writer = self.writer_lock();
        let (log_end, log_start) = {
            let st = self.read_state();
            st.check_open()?;
            (st.log_end_offset(), st.log_start_offset)
        };
        let leader_epoch = {
            let latest = self.epochs().latest_epoch();
            match (leader_epoch, latest) {
                (Some(epoch), Some(latest)) if epoch < latest => {
                    return Err(LogError::FencedLeaderEpoch { epoch, latest });
                }
                (Some(epoch), _) => epoch,
                (None, latest) => latest.unwrap_or(0).max(0),
            }
        };
        // Producer checks come before the roll: a refused or repeated batch changes nothing.
        let mut next = log_end;
        let incoming: Vec<IncomingBatch> = headers
            .iter()
            .map(|h| {
                let max_ts = if log_append_time {
                    now_ms
                } else {
                    h.max_timestamp
                };
                let b = IncomingBatch::new(h, next, max_ts);
                next += i64::from(h.record_count);
                b
            })
            .collect();
        let check = match origin {
            Origin::Client => self.producers().check(&incoming)?,
            Origin::Group => AppendCheck::Append(self.producers().check_unsequenced(&incoming)?),
            Origin::Coordinator => {
                let producers = self.producers();
                for h in &headers {
                    producers.check_marker(h.producer_id, h.producer_epoch)?;
                }
                AppendCheck::Append(Default::default())
            }
        };
        let pending = match check {
            AppendCheck::Append(pending) => pending,
            AppendCheck::Duplicate {
                base_offset,
                last_offset,
                max_timestamp,
            } => {
                return Ok(AppendInfo {
                    base_offset,
                    last_offset,
                    log_append_time_ms: if log_append_time { max_timestamp } else { -1 },
                    log_start_offset: log_start,
                    record_count,
                    duplicate: true,
                });
            }
        };
        let needs_roll = {
            let st = self.read_state();
            let a = &st.active;
            a.size() > 0
                && (a.size() + buf.len() as u64 > config.effective_segment_bytes()
                    || (config.segment_ms >= 0
                        && now_ms.saturating_sub(a.created_ms()) >= config.segment_ms)
                    || a.next_offset() + record_count - a.base_offset() > i64::from(u32::MAX))
        };
        if needs_roll {
            self.roll_locked(now_ms)?;
        }
        let (file, position, base_offset, active_base) = {
            let st = self.read_state();
            (
                Arc::clone(st.active.file()),
                st.active.size(),
                st.active.next_offset(),
                st.active.base_offset(),
            )
        };
        {
            // Before the data, as Kafka does: a crash in between leaves an epoch beginning at
            // the log end with no records yet, which is what a new leader has anyway; the
            // other order could leave batches of an epoch the cache does not know.
            let mut epochs = self.epochs();
            if epochs.is_new_epoch(leader_epoch) {
                epochs.assign(leader_epoch, base_offset)?;
            }
        }
        let mut next = base_offset;
        for b in &batches {
            let bytes = &mut buf[b.position..b.position + b.size];
            batch::set_base_offset(bytes, next);
            batch::set_partition_leader_epoch(bytes, leader_epoch);
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
        match origin {
            Origin::Client | Origin::Group => self.producers().commit(pending),
            Origin::Coordinator => {
                for b in &batches {
                    self.complete_txn(&buf[b.position..b.position + b.size], active_base);
                }
            }
        }
        self.end_tx.send_replace(next);
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time_ms: if log_append_time { now_ms } else { -1 },
            log_start_offset,
            record_count,
            duplicate: false,
        })
    }

    /// Ends a transaction with the marker batch `marker` (as written, in the segment at
    /// `segment_base`): producer state first learns of it with the index updated under the
    /// same lock (see the module docs). The marker is in the log already, so an index write
    /// that fails is logged, not returned: the entry is kept in memory, and recovery rebuilds
    /// the file from the log.
    fn complete_txn(&self, marker: &[u8], segment_base: i64) {
        let Some(h) = BatchHeader::parse(marker) else {
            return;
        };
        let control = control_batch::control_type(marker);
        let mut producers = self.producers();
        if let Some(txn) = producers.replay(&h, control) {
            if let Err(error) = self.aborted().append(segment_base, txn) {
                tracing::error!(dir = %self.dir.display(), %error, "could not write the aborted transaction index");
            }
        }
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
        // The roll has happened whatever the snapshot does; without this snapshot, open
        // replays from an older one, which is slower but gives the same state.
        if let Err(error) = self.producers().write_snapshot(&self.dir, new_base) {
            warn!(dir = %self.dir.display(), new_base, %error, "could not write producer snapshot");
        }
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

    /// Starts making everything up to `last_offset` durable without waiting for it, so that
    /// [`PartitionLog::wait_durable`] called later finds the fsync already under way. Produce
    /// answers are awaited in request order; without this, each pipelined request's fsync
    /// would only begin once the previous answer was written. Must be called inside a tokio
    /// runtime.
    pub fn request_durable(&self, last_offset: i64) {
        if self.config().flush_policy == FlushPolicy::PageCache {
            return;
        }
        self.flusher.request(self.me.clone(), last_offset);
    }

    /// Whole batches starting with the batch containing `offset`, up to `max_bytes` total, but
    /// always at least one whole batch if any exists at/after offset (KIP-74). Empty Bytes if
    /// offset == log_end_offset. Err OffsetOutOfRange if offset < log_start_offset or >
    /// log_end_offset. Batches are served byte for byte as stored.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        self.untorn(|| self.read_published(offset, max_bytes))
    }

    /// Runs `read`, which captures segments under the state lock and does its I/O after
    /// releasing it, until no truncation ran meanwhile: if one did, what `read` found (or the
    /// error it met) may come from bytes being cut, so it reads the new log instead.
    pub(crate) fn untorn<T>(
        &self,
        mut read: impl FnMut() -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        loop {
            let truncations = self.truncations.load(Ordering::SeqCst);
            let result = read();
            if self.truncations.load(Ordering::SeqCst) == truncations {
                return result;
            }
            debug!(dir = %self.dir.display(), "read raced a truncation; reading again");
        }
    }

    /// How many truncations have been published; see the module docs.
    pub(crate) fn truncation_count(&self) -> u64 {
        self.truncations.load(Ordering::SeqCst)
    }

    /// [`PartitionLog::read`] against the segments published when it starts.
    fn read_published(&self, offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        let mut cursor = offset;
        loop {
            let target = {
                let st = self.read_state();
                st.check_readable(offset)?;
                let end = st.log_end_offset();
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
        self.epochs().truncate_from_start(offset)?;
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
            let first_base = {
                let st = self.read_state();
                st.closed
                    .first()
                    .map_or(st.active.base_offset(), |s| s.base_offset())
            };
            self.aborted().forget_below(first_base);
        }
        // Followers long-polling for appends learn the new start from their next answer, and
        // a leader's DeleteRecords waits for them to have moved theirs.
        self.end_tx.send_modify(|_| {});
        Ok(offset)
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.read_state().closed.len() + 1
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
        let _maintenance = self.maintenance_lock();
        let config = self.config();
        let mut report = MaintenanceReport::default();
        {
            let _writer = self.writer_lock();
            let (size, created, max_ts) = {
                let st = self.read_state();
                st.check_open()?;
                (
                    st.active.size(),
                    st.active.created_ms(),
                    st.active.max_timestamp(),
                )
            };
            let too_old =
                config.segment_ms >= 0 && now_ms.saturating_sub(created) >= config.segment_ms;
            // An active segment whose newest record is past retention can only be deleted once
            // it is closed; roll it now rather than waiting for segment.ms.
            let expired = config.cleanup_policy.deletes()
                && config.retention_ms >= 0
                && max_ts != NO_TIMESTAMP
                && max_ts < now_ms.saturating_sub(config.retention_ms);
            if size > 0 && (too_old || expired) {
                self.roll_locked(now_ms)?;
                report.segments_rolled += 1;
            }
            report.producers_expired = self
                .producers()
                .remove_expired(now_ms, PRODUCER_ID_EXPIRATION_MS);
        }
        if config.cleanup_policy.deletes() {
            let (segments, bytes) = self.apply_retention(now_ms, &config)?;
            report.segments_deleted = segments;
            report.bytes_deleted = bytes;
        }
        if config.cleanup_policy.compacts() {
            report.segments_compacted = self.compact(now_ms, &config)?;
        }
        Ok(report)
    }

    /// Flushes and fsyncs everything, writes index files and a producer snapshot at the log
    /// end; afterwards append/read return LogError::Closed.
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
        self.producers().write_snapshot(&self.dir, end)?;
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

/// Replication: the leader epoch cache, appends of a leader's batches on a follower, truncation.
impl PartitionLog {
    /// Records that this replica leads `epoch` from the current log end offset on: called when
    /// it becomes leader, before (and whether or not) anything is appended, so that it can
    /// answer OffsetForLeaderEpoch for an epoch without records (KAFKA-7415, KAFKA-20961).
    /// Returns false, changing nothing, if `epoch` is not newer than the latest epoch.
    pub fn assign_leader_epoch(&self, epoch: i32) -> Result<bool, LogError> {
        let _writer = self.writer_lock();
        let end = {
            let st = self.read_state();
            st.check_open()?;
            st.log_end_offset()
        };
        let assigned = self.epochs().assign(epoch, end)?;
        if assigned {
            info!(dir = %self.dir.display(), epoch, start_offset = end, "assigned leader epoch");
        }
        Ok(assigned)
    }

    /// The newest leader epoch in the cache, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs().latest_epoch()
    }

    /// OffsetForLeaderEpoch: `(epoch, end offset)` for a requested epoch, with Kafka's
    /// semantics: the largest epoch `<= requested` and the start offset of the next larger
    /// epoch, or the log end offset when that is the latest epoch. A requested epoch below the
    /// first known one answers `(requested, start offset of the first epoch)` (KIP-279);
    /// `UNDEFINED_EPOCH` requested, an empty cache or an epoch above the latest answer
    /// `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`, i.e. `(-1, -1)`.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let epochs = self.epochs();
        let log_end = self.log_end_offset();
        epochs.end_offset_for(epoch, log_end)
    }

    /// The leader epoch cache's entries, oldest first (tests and diagnostics).
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.epochs().entries().to_vec()
    }

    /// Appends batches a follower fetched from its leader, exactly as the leader stored them:
    /// offsets, leader epochs, timestamps and producer fields are kept, byte for byte.
    ///
    /// Every batch is validated first (length, magic 2, CRC-32C, record count, increasing
    /// offsets) and a bad one fails the whole call with CorruptRecord or InvalidRecord, writing
    /// nothing. The first batch must start at or after the log end offset: below it fails with
    /// OffsetMismatch. Above it is accepted, since compaction on the leader removes whole
    /// batches and leaves gaps in the offsets (Kafka checks the same way).
    ///
    /// Updates the leader epoch cache from the batches' partition leader epochs, and the
    /// producer state as the leader's appends did (without sequence checks: the leader made
    /// those), so this replica detects a retried batch should it become leader. Rolls segments
    /// as `append` does and publishes the new log end; returns before fsync (use
    /// [`PartitionLog::wait_durable`]). `max.message.bytes` is not applied: the leader accepted
    /// the batches, and refusing them here would stall replication.
    ///
    /// One case below the log end is accepted: an empty log (started with
    /// [`PartitionLog::truncate_fully_and_start_at`] at the leader's log start offset) whose
    /// end falls inside the first batch, because DeleteRecords on the leader moved its log
    /// start into that batch. The log then restarts at the batch's base offset and keeps its
    /// log start offset (Kafka does the same in `Partition`, on UnexpectedAppendOffset).
    pub fn append_as_follower(&self, records: Bytes) -> Result<AppendInfo, LogError> {
        let config = self.config();
        let batches = batch::validate_replicated(&records)?;
        let (Some(&(_, first)), Some(&(_, last))) = (batches.first(), batches.last()) else {
            return Err(LogError::InvalidRecord("empty record set".into()));
        };
        let record_count: i64 = batches.iter().map(|(b, _)| i64::from(b.record_count)).sum();
        let interval = u64::from(config.index_interval_bytes.max(1));
        let now_ms = wall_clock_ms();

        let _writer = self.writer_lock();
        let (log_end, log_start, empty) = {
            let st = self.read_state();
            st.check_open()?;
            let empty = st.active.size() == 0 && st.closed.iter().all(|s| s.size() == 0);
            (st.log_end_offset(), st.log_start_offset, empty)
        };
        let start_inside_first_batch =
            empty && log_start == log_end && first.last_offset() >= log_end;
        if first.base_offset < log_end {
            if !start_inside_first_batch {
                return Err(LogError::OffsetMismatch {
                    expected: log_end,
                    got: first.base_offset,
                });
            }
            info!(dir = %self.dir.display(), log_start, base_offset = first.base_offset, "log start offset falls inside the first replicated batch; restarting the empty log at the batch's base");
            self.truncate_fully_locked(first.base_offset, log_start)?;
        }
        if first.base_offset > log_end {
            debug!(dir = %self.dir.display(), log_end, base_offset = first.base_offset, "replicated batches leave an offset gap (compacted on the leader)");
        }
        let needs_roll = {
            let st = self.read_state();
            let a = &st.active;
            a.size() > 0
                && (a.size() + records.len() as u64 > config.effective_segment_bytes()
                    || (config.segment_ms >= 0
                        && now_ms.saturating_sub(a.created_ms()) >= config.segment_ms)
                    || last.last_offset() - a.base_offset() > i64::from(u32::MAX))
        };
        if needs_roll {
            self.roll_locked(now_ms)?;
        }
        let (file, position, active_base) = {
            let st = self.read_state();
            (
                Arc::clone(st.active.file()),
                st.active.size(),
                st.active.base_offset(),
            )
        };
        if last.last_offset() - active_base > i64::from(u32::MAX) {
            // Index entries hold offsets relative to the segment base in 32 bits.
            return Err(LogError::InvalidRecord(format!(
                "offset {} is too far past the segment base {active_base}",
                last.last_offset()
            )));
        }
        {
            // Before the data, for the reason given in `append_stamped`.
            let mut epochs = self.epochs();
            for (_, h) in &batches {
                epochs.assign_replicated(h.partition_leader_epoch, h.base_offset)?;
            }
        }
        file.write_all_at(&records, position)?;

        let log_start_offset = {
            let mut st = self.write_state();
            if position == 0 {
                st.active.set_created_ms(now_ms);
            }
            for (b, h) in &batches {
                st.active
                    .track_batch(position + b.position as u64, h, b.size as u64, interval);
            }
            st.log_start_offset
        };
        {
            let mut producers = self.producers();
            for (b, h) in &batches {
                if h.is_control() {
                    drop(producers);
                    self.complete_txn(&records[b.position..b.position + b.size], active_base);
                    producers = self.producers();
                } else {
                    producers.replay(h, None);
                }
            }
        }
        if first.base_offset < log_end {
            // The batch's epoch begins at the log start offset, as on the leader.
            self.epochs().truncate_from_start(log_start)?;
        }
        self.end_tx.send_replace(last.next_offset());
        Ok(AppendInfo {
            base_offset: first.base_offset,
            last_offset: last.last_offset(),
            log_append_time_ms: -1,
            log_start_offset,
            record_count,
            duplicate: false,
        })
    }

    /// Like [`PartitionLog::read`], but only whole batches whose last offset is below
    /// `upper_bound` (the high watermark, for consumers): a batch reaching the bound ends the
    /// answer, even if it is the first. An `offset` in `[upper_bound, log end]` answers empty
    /// bytes, not OffsetOutOfRange; outside `[log start, log end]` it is OffsetOutOfRange.
    pub fn read_up_to(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
    ) -> Result<Bytes, LogError> {
        self.read_state().check_readable(offset)?;
        if offset >= upper_bound {
            return Ok(Bytes::new());
        }
        let data = self.read(offset, max_bytes)?;
        let mut used = 0;
        while let Some(h) = BatchHeader::parse(&data[used..]) {
            match h.total_size() {
                Some(size) if h.last_offset() < upper_bound && used + size <= data.len() => {
                    used += size;
                }
                _ => break,
            }
        }
        Ok(data.slice(..used))
    }

    /// Removes every record at and after `offset`, so the log ends there: a follower cutting
    /// its log back to where it agrees with its leader. Segments wholly at or after `offset`
    /// are deleted, the one holding it is cut at the batch boundary (if `offset` falls inside
    /// a batch, that whole batch goes, with a warning: the log then ends at the batch's base),
    /// its indexes with it; the producer state is rebuilt for the new end (from the newest
    /// snapshot below it, then the batches after), leader epochs starting at or after the new
    /// end are removed, and the new end is fsynced and published.
    ///
    /// If `offset >= log end`, no record is removed, but leader epochs starting at or after
    /// `offset` still are (KAFKA-10706: epochs without records left by back-to-back elections
    /// would otherwise make the follower's next fetch diverge again). An `offset` below the
    /// log start offset empties the log and starts it at `offset`, as Kafka does.
    ///
    /// Readers see either the log before or the log after, never a mix (see the module docs).
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        let _writer = self.writer_lock();
        let (start, end) = {
            let st = self.read_state();
            st.check_open()?;
            (st.log_start_offset, st.log_end_offset())
        };
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset >= end {
            self.epochs().truncate_from_end(offset)?;
            return Ok(());
        }
        if offset < start {
            return self.truncate_fully_locked(offset, offset);
        }
        let interval = u64::from(self.config().index_interval_bytes.max(1));
        // The segment holding `offset` and the position of the batch holding (or following) it.
        let (index, base, cut, cut_batch_base) = {
            let st = self.read_state();
            let segments: Vec<&LogSegment> = st
                .closed
                .iter()
                .map(|s| s.as_ref())
                .chain(std::iter::once(&st.active))
                .collect();
            let index = segments
                .partition_point(|s| s.base_offset() <= offset)
                .saturating_sub(1);
            let Some(seg) = segments.get(index) else {
                return Err(LogError::Io(std::io::Error::other("log has no segment")));
            };
            let mut cut = seg.size();
            let mut cut_batch_base = None;
            for_each_header(
                seg.file(),
                seg.position_for(offset)?,
                seg.size(),
                |pos, h, _| {
                    if h.last_offset() >= offset {
                        cut = pos;
                        cut_batch_base = Some(h.base_offset);
                        return Ok(false);
                    }
                    Ok(true)
                },
            )?;
            (index, seg.base_offset(), cut, cut_batch_base)
        };
        if let Some(batch_base) = cut_batch_base.filter(|&b| b < offset) {
            warn!(dir = %self.dir.display(), offset, batch_base, "truncation offset falls inside a batch; truncating to the batch's start");
        }
        let new_active = LogSegment::reopen_truncated(&self.dir, base, interval, cut)?;
        let new_end = new_active.next_offset();
        if new_end < start {
            // The log start offset is inside the batch that goes (DeleteRecords moved it
            // there): nothing readable is left.
            drop(new_active);
            return self.truncate_fully_locked(offset, offset);
        }
        let (was_closed, tail, old_active) = {
            let mut st = self.write_state();
            let closed_count = st.closed.len();
            let was_closed = index < closed_count;
            let tail: Vec<Arc<LogSegment>> = st.closed.drain(index.min(closed_count)..).collect();
            let old_active = std::mem::replace(&mut st.active, new_active);
            self.truncations.fetch_add(1, Ordering::SeqCst);
            (was_closed, tail, old_active)
        };
        // Newest first, so that a crash part way leaves a prefix of the log. The segment being
        // cut (`tail[0]` when it was closed, else the old active) keeps its file.
        if was_closed {
            old_active.delete_files()?;
            for seg in tail.iter().skip(1).rev() {
                seg.delete_files()?;
            }
        }
        drop((tail, old_active));
        {
            let st = self.read_state();
            st.active.cut_file()?;
            if was_closed {
                st.active.remove_index_files()?;
            }
        }
        sync_dir(&self.dir)?;
        // Closed segments were fsynced when they rolled and the cut one just now.
        self.flusher.reset(new_end);
        let rebuilt = ProducerStateManager::rebuild(&self.dir, &self.read_state())?;
        let producers = reconcile_aborted(&mut self.aborted(), rebuilt)?;
        *self.producers() = producers;
        self.epochs().truncate_from_end(new_end)?;
        *self.compaction_memo() = None;
        self.end_tx.send_replace(new_end);
        info!(dir = %self.dir.display(), offset, old_end = end, new_end, "truncated log");
        Ok(())
    }

    /// Deletes every segment and starts the log empty at `offset`, which becomes the log start
    /// offset (persisted): a follower whose log lies wholly below its leader's log start. The
    /// producer state, its snapshots and the leader epoch cache are cleared.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        let _writer = self.writer_lock();
        self.read_state().check_open()?;
        self.truncate_fully_locked(offset, offset)
    }

    /// [`PartitionLog::truncate_fully_and_start_at`] under the writer lock, with the new
    /// segment at `offset` and the log start offset at `log_start` (`>= offset`; above it only
    /// for a follower about to append a batch that straddles its log start).
    fn truncate_fully_locked(&self, offset: i64, log_start: i64) -> Result<(), LogError> {
        if offset < 0 || log_start < offset {
            let st = self.read_state();
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start: st.log_start_offset,
                log_end: st.log_end_offset(),
            });
        }
        let old_end = self.log_end_offset();
        {
            // Unlinked files stay readable through the handles readers hold; newest first, so
            // a crash leaves a prefix of the log. A segment at `offset` itself is unlinked
            // before its name is reused, so its readers keep the old bytes.
            let st = self.read_state();
            st.active.delete_files()?;
            for seg in st.closed.iter().rev() {
                seg.delete_files()?;
            }
        }
        let new_active = LogSegment::create(&self.dir, offset, wall_clock_ms())?;
        sync_dir(&self.dir)?;
        // After the deletions: a crash before them then leaves the old log (or a prefix of it)
        // with its old start, never old records below an old DeleteRecords start made visible
        // again by a lower checkpoint.
        write_log_start(&self.dir, log_start)?;
        let old = {
            let mut st = self.write_state();
            let closed = std::mem::take(&mut st.closed);
            let active = std::mem::replace(&mut st.active, new_active);
            st.log_start_offset = log_start;
            self.truncations.fetch_add(1, Ordering::SeqCst);
            (closed, active)
        };
        drop(old);
        self.flusher.reset(offset);
        self.producers().truncate_fully(&self.dir)?;
        self.aborted().clear()?;
        self.epochs().clear()?;
        *self.compaction_memo() = None;
        self.end_tx.send_replace(offset);
        info!(dir = %self.dir.display(), old_end, offset, "emptied log; it starts afresh");
        Ok(())
    }
}

impl PartitionLog {
    /// Number of fsyncs the group-commit flusher has issued so far: a metric, and how tests
    /// observe that waiters share fsyncs.
    pub fn fsync_count(&self) -> u64 {
        self.flusher.fsync_count()
    }
}

/// Who an append comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A producer: sequence and transaction checks apply, control batches are refused.
    Client,
    /// The transaction coordinator writing markers.
    Coordinator,
    /// The group coordinator writing a transaction's offsets.
    Group,
}

/// Base offsets of all segments, ascending.
fn segment_bases(state: &LogState) -> Vec<i64> {
    state
        .closed
        .iter()
        .map(|s| s.base_offset())
        .chain(std::iter::once(state.active.base_offset()))
        .collect()
}

/// Makes the aborted-transaction index agree with the log after producer state was rebuilt:
/// entries from where replay started are dropped and replaced by what replay found (the
/// index may have lost the tail a crash cut, or hold markers the crash took back).
fn reconcile_aborted(
    index: &mut AbortedTxnIndex,
    rebuilt: Rebuilt,
) -> Result<ProducerStateManager, LogError> {
    index.truncate_from(rebuilt.from)?;
    for (base, txn) in rebuilt.aborted {
        index.append(base, txn)?;
    }
    Ok(rebuilt.manager)
}

/// Loads the leader epoch cache of a just recovered log and makes it agree with the log.
///
/// A missing file on a log holding data (one written before the cache existed) or a corrupt
/// one is rebuilt from the batches' partition leader epochs. Entries starting beyond the
/// recovered log end describe batches lost in a crash and go; one starting exactly at the end
/// is an epoch without records yet and stays (KAFKA-20961). Entries below the log start offset
/// go as retention would have removed them. The cache is written before the batches of a new
/// epoch, so the log cannot hold an epoch the cache lacks unless the file was lost.
fn open_epoch_cache(dir: &Path, state: &LogState) -> Result<LeaderEpochCache, LogError> {
    let has_data = state.active.size() > 0 || state.closed.iter().any(|s| s.size() > 0);
    let mut cache = match LeaderEpochCache::load(dir)? {
        Loaded::Cache(cache) => cache,
        Loaded::Missing(mut cache) => {
            if has_data {
                info!(dir = %dir.display(), "no leader epoch cache; building it from the log's batches");
                cache.replace(epochs_in_batches(state)?)?;
            }
            cache
        }
        Loaded::Corrupt(mut cache, error) => {
            warn_corrupt(dir, &error);
            cache.replace(epochs_in_batches(state)?)?;
            cache
        }
    };
    cache.truncate_from_end(state.log_end_offset().saturating_add(1))?;
    cache.truncate_from_start(state.log_start_offset)?;
    Ok(cache)
}

/// Where each leader epoch begins according to the batches' headers.
///
/// Epochs never decrease along a log, so a segment whose last batch carries no newer epoch
/// than found so far is skipped, and one whose first and last batches agree holds one epoch:
/// only segments where the epoch changes are scanned. A log written before the cache existed
/// (every batch stamped 0) costs two header reads per segment.
fn epochs_in_batches(state: &LogState) -> Result<Vec<EpochEntry>, LogError> {
    let mut entries: Vec<EpochEntry> = Vec::new();
    let mut note = |h: &BatchHeader| {
        let epoch = h.partition_leader_epoch;
        if epoch >= 0 && entries.last().is_none_or(|e| epoch > e.epoch) {
            entries.push(EpochEntry {
                epoch,
                start_offset: h.base_offset,
            });
        }
    };
    let segments = state
        .closed
        .iter()
        .map(|s| s.as_ref())
        .chain(std::iter::once(&state.active));
    let mut latest = None;
    for seg in segments {
        let (Some(first), Some(last)) = (seg.first_header()?, seg.last_header()?) else {
            continue;
        };
        if latest.is_some_and(|l| last.partition_leader_epoch <= l) {
            continue;
        }
        if first.partition_leader_epoch == last.partition_leader_epoch {
            note(&first);
        } else {
            seg.scan_headers(&mut note)?;
        }
        latest = Some(last.partition_leader_epoch);
    }
    Ok(entries)
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
        // Every offset finds its batch, through the closed segments' index files too.
        for o in 0..100 {
            let ranges = batch_ranges(&log.read(o, 1).unwrap());
            assert!(ranges[0].0 <= o && o <= ranges[0].1, "offset {o}");
        }
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
        // The rebuilt index finds batches in the middle and is written out on close.
        assert_eq!(batch_ranges(&log.read(35, 1).unwrap()), vec![(30, 39)]);
        log.close().unwrap();
        let index = std::fs::metadata(dir.path().join("00000000000000000000.index")).unwrap();
        assert!(index.len() > 0 && index.len().is_multiple_of(8));
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

    fn three_segments(dir: &Path) -> Arc<PartitionLog> {
        let one = batch_of(10, 50, 0);
        let config = LogConfig {
            segment_bytes: one.len() as u64,
            ..small_config()
        };
        let log = PartitionLog::open(dir.to_path_buf(), config).unwrap();
        for _ in 0..3 {
            log.append(one.clone(), 0).unwrap();
        }
        log
    }

    #[test]
    fn delete_records_moves_start_and_deletes_whole_segments_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = three_segments(dir.path());
        assert_eq!(log.delete_records_before(15).unwrap(), 15);
        assert_eq!(log.log_start_offset(), 15);
        assert!(!dir.path().join("00000000000000000000.log").exists());
        assert!(dir.path().join("00000000000000000010.log").exists());
        assert!(matches!(
            log.read(14, 100),
            Err(LogError::OffsetOutOfRange { log_start: 15, .. })
        ));
        // The batch containing 15 starts at 10; consumers skip what is below their position.
        assert_eq!(batch_ranges(&log.read(15, 1).unwrap()), vec![(10, 19)]);
        // Never lowers the start offset.
        assert_eq!(log.delete_records_before(3).unwrap(), 15);
        assert!(matches!(
            log.delete_records_before(31),
            Err(LogError::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn delete_records_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = {
            let log = three_segments(dir.path());
            log.delete_records_before(15).unwrap();
            let c = log.config();
            drop(log); // no close(): the checkpoint alone must carry the start offset
            c
        };
        let log = PartitionLog::open(dir.path().to_path_buf(), config.clone()).unwrap();
        assert_eq!(log.log_start_offset(), 15);
        assert_eq!(log.log_end_offset(), 30);
        log.close().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), config).unwrap();
        assert_eq!(log.log_start_offset(), 15);
    }

    #[test]
    fn delete_records_up_to_the_end_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = three_segments(dir.path());
        assert_eq!(log.delete_records_before(30).unwrap(), 30);
        assert_eq!(log.size_bytes(), 0);
        assert!(log.read(30, 100).unwrap().is_empty());
        assert_eq!(log.append(batch_of(1, 5, 0), 0).unwrap().base_offset, 30);
        let config = log.config();
        drop(log);
        let log = PartitionLog::open(dir.path().to_path_buf(), config).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (30, 31));
    }

    #[test]
    fn subscribers_see_the_new_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        let mut rx = log.subscribe();
        assert_eq!(*rx.borrow_and_update(), 0);
        log.append(batch_of(4, 5, 0), 0).unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 4);
    }

    #[test]
    fn concurrent_readers_never_see_a_partial_batch() {
        let dir = tempfile::tempdir().unwrap();
        let one = batch_of(5, 300, 0);
        let config = LogConfig {
            segment_bytes: one.len() as u64 * 20,
            ..small_config()
        };
        let log = PartitionLog::open(dir.path().to_path_buf(), config).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..400 {
                    log.append(one.clone(), 0).unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::Release);
            });
            for _ in 0..3 {
                scope.spawn(|| {
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        let end = log.log_end_offset();
                        let from = (end - 7).max(0);
                        let data = log.read(from, 1 << 16).unwrap();
                        // Every batch decodes (whole, CRC valid) and the first holds `from`.
                        let recs = decode_all(data);
                        if end > 0 {
                            assert!(recs.first().unwrap().0 <= from);
                        }
                    }
                });
            }
        });
        assert_eq!(log.log_end_offset(), 2000);
    }

    #[test]
    fn missing_or_damaged_index_files_of_closed_segments_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let config = {
            let log = three_segments(dir.path());
            log.close().unwrap();
            log.config()
        };
        let index = dir.path().join("00000000000000000000.index");
        let timeindex = dir.path().join("00000000000000000010.timeindex");
        let (index_len, timeindex_len) = (
            std::fs::metadata(&index).unwrap().len(),
            std::fs::metadata(&timeindex).unwrap().len(),
        );
        std::fs::remove_file(&index).unwrap();
        std::fs::write(&timeindex, [1, 2, 3, 4, 5]).unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), config).unwrap();
        assert_eq!(std::fs::metadata(&index).unwrap().len(), index_len);
        assert_eq!(std::fs::metadata(&timeindex).unwrap().len(), timeindex_len);
        assert_eq!(read_all(&log).len(), 30);
        assert_eq!(log.offset_for_timestamp(5).unwrap(), Some((5, 5)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn recovery_keeps_every_whole_batch_before_damage(
            cut_permille in 0u64..=1000,
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let one = batch_of(10, 50, 0);
            {
                let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
                for _ in 0..4 {
                    log.append(one.clone(), 0).unwrap();
                }
            }
            let path = dir.path().join("00000000000000000000.log");
            let mut bytes = std::fs::read(&path).unwrap();
            let cut = (bytes.len() as u64 * cut_permille / 1000) as usize;
            bytes.truncate(cut);
            bytes.extend_from_slice(&garbage);
            std::fs::write(&path, &bytes).unwrap();

            let whole = (cut / one.len()) as i64;
            let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
            proptest::prop_assert_eq!(log.log_end_offset(), whole * 10);
            proptest::prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64 * one.len() as u64);
            proptest::prop_assert_eq!(log.append(one.clone(), 0).unwrap().base_offset, whole * 10);
            proptest::prop_assert_eq!(read_all(&log).len() as i64, whole * 10 + 10);
        }
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
        assert!(log.fsync_count() <= 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiters_share_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        let mut last = Vec::new();
        for _ in 0..100 {
            last.push(log.append(batch_of(2, 10, 0), 0).unwrap().last_offset);
        }
        let waiters: Vec<_> = last
            .into_iter()
            .map(|o| {
                let log = Arc::clone(&log);
                tokio::spawn(async move { log.wait_durable(o).await })
            })
            .collect();
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        assert_eq!(log.fsync_count(), 1);
    }

    #[test]
    fn wait_durable_works_from_a_second_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        for _ in 0..2 {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let info = log.append(batch_of(2, 10, 0), 0).unwrap();
            rt.block_on(log.wait_durable(info.last_offset)).unwrap();
            drop(rt); // takes the flusher task with it
        }
    }

    #[tokio::test]
    async fn wait_durable_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path().to_path_buf(), small_config()).unwrap();
        let info = log.append(batch_of(2, 10, 0), 0).unwrap();
        log.close().unwrap();
        log.wait_durable(info.last_offset).await.unwrap();
        assert!(matches!(
            log.wait_durable(info.last_offset + 1).await,
            Err(LogError::Closed)
        ));
    }

    /// Throughput of appends of 100-record batches of 100-byte values. Run with
    /// `cargo test --release -p millrace-broker append_throughput -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    #[ignore = "benchmark"]
    async fn append_throughput() {
        for policy in [FlushPolicy::PageCache, FlushPolicy::Fsync] {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                flush_policy: policy,
                segment_bytes: 256 << 20,
                ..LogConfig::default()
            };
            let log = PartitionLog::open(dir.path().to_path_buf(), config).unwrap();
            let batch = batch_of(100, 100, 0);
            let (producers, per_producer) = (16, 2000);
            let start = std::time::Instant::now();
            let tasks: Vec<_> = (0..producers)
                .map(|_| {
                    let log = Arc::clone(&log);
                    let batch = batch.clone();
                    tokio::spawn(async move {
                        for _ in 0..per_producer {
                            let info = log.append(batch.clone(), 0).unwrap();
                            log.wait_durable(info.last_offset).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let secs = start.elapsed().as_secs_f64();
            let records = (producers * per_producer * 100) as f64;
            println!(
                "{policy:?}: {:.0} records/s, {:.0} MB/s, {} fsyncs",
                records / secs,
                records * 100.0 / secs / 1e6,
                log.fsync_count()
            );
        }
    }
}

//! Idempotent producers: per producer id, the epoch and the last few batches' sequence numbers,
//! which is what lets the log recognise a retried batch and refuse a lost or reordered one.
//!
//! Named after Kafka's `ProducerStateManager`. The state is derived from the log alone: every
//! batch header carries producer id, epoch, base sequence and last offset delta, so the state
//! at any offset is a fold over the headers before it. Snapshots (`<offset>.snapshot`, the
//! state at that log end offset) only spare a full scan on open; they are written on every
//! roll and on close, and the tail after the newest usable one is rescanned.
//!
//! Transactions: a transactional batch opens its producer's transaction in this partition
//! (remembering its first offset) unless one is open; a commit or abort marker closes it. The
//! oldest open transaction's first offset bounds the last stable offset, and an abort yields
//! the [`AbortedTxn`] entry the aborted-transaction index keeps.
//!
//! Snapshot file layout (big-endian): version `i16` (2), CRC-32C `u32` of everything after it,
//! entry count `u32`, then per entry producer id `i64`, epoch `i16`, last timestamp `i64`,
//! first offset of the open transaction `i64` (-1 for none; absent in version 1), batch count
//! `u8` and per batch first sequence `i32`, last sequence `i32`, base offset `i64`, last offset
//! `i64`, max timestamp `i64`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use super::batch::BatchHeader;
use super::checkpoint::sync_dir;
use super::control_batch::{self, ControlRecordType};
use super::error::LogError;
use super::partition_log::LogState;
use super::segment::{for_each_header, invalid_data, parse_segment_name, segment_file_name};
use super::txn_index::AbortedTxn;

/// Extension of producer snapshot files.
pub(crate) const SNAPSHOT_EXT: &str = "snapshot";
/// How many recent batches are remembered per producer: Kafka's clients keep at most five
/// requests in flight with idempotence, so a retry is always one of the last five.
pub(crate) const MAX_CACHED_BATCHES: usize = 5;
/// Kafka's `producer.id.expiration.ms` default: a producer silent for a day is forgotten.
pub(crate) const PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;
/// Snapshots kept on disk; the older one is the fallback if the newest is unusable.
const SNAPSHOTS_KEPT: usize = 2;
/// Version written in the first two bytes of a snapshot.
const SNAPSHOT_VERSION: i16 = 2;
/// The version before transactions, still readable.
const SNAPSHOT_VERSION_1: i16 = 1;
/// Bytes of one batch in a snapshot.
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;
/// Bytes of one entry in a snapshot before its batches.
const ENTRY_BYTES: usize = 8 + 2 + 8 + 8 + 1;

/// Sequence numbers wrap to 0 after `i32::MAX`, as in Kafka's `incrementSequence`.
pub(crate) fn increment_sequence(sequence: i32, by: i32) -> i32 {
    let modulus = i64::from(i32::MAX) + 1;
    // Both operands are non-negative here, so the remainder fits in an i32.
    ((i64::from(sequence) + i64::from(by)).rem_euclid(modulus)) as i32
}

/// What the log remembers of one batch of an idempotent producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchMetadata {
    /// Sequence number of the batch's first record.
    pub first_seq: i32,
    /// Sequence number of the batch's last record.
    pub last_seq: i32,
    /// Offset the batch was written at.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// Its max timestamp as stored (the append time for LogAppendTime topics).
    pub max_timestamp: i64,
}

/// The state of one producer id in one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProducerStateEntry {
    /// The producer id.
    pub producer_id: i64,
    /// The newest epoch seen; batches of older epochs are fenced.
    pub producer_epoch: i16,
    /// The last batches of `producer_epoch`, oldest first, at most [`MAX_CACHED_BATCHES`].
    pub batches: VecDeque<BatchMetadata>,
    /// Max timestamp of the newest batch; expiry counts from it, as in Kafka.
    pub last_timestamp: i64,
    /// First offset of the producer's open transaction in this partition, if one is open.
    pub current_txn_first_offset: Option<i64>,
}

impl ProducerStateEntry {
    fn new(producer_id: i64, producer_epoch: i16) -> Self {
        ProducerStateEntry {
            producer_id,
            producer_epoch,
            batches: VecDeque::with_capacity(MAX_CACHED_BATCHES),
            last_timestamp: -1,
            current_txn_first_offset: None,
        }
    }

    /// Sequence of the last record appended, if any batch is remembered.
    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    /// The remembered batch with exactly these sequence numbers: a retry of it.
    fn find_duplicate(&self, first_seq: i32, last_seq: i32) -> Option<&BatchMetadata> {
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
    }

    /// Records a batch; a new epoch starts from scratch, since older sequences no longer count.
    fn add_batch(&mut self, epoch: i16, batch: BatchMetadata) {
        if epoch != self.producer_epoch {
            self.producer_epoch = epoch;
            self.batches.clear();
        }
        if self.batches.len() == MAX_CACHED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_timestamp = batch.max_timestamp;
    }
}

/// The producer fields of one batch about to be appended, with the offsets it will get.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IncomingBatch {
    /// Producer id; negative for a batch without idempotence.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Whether the batch belongs to a transaction.
    pub transactional: bool,
    /// What the log will remember of it, should it be written.
    pub metadata: BatchMetadata,
}

impl IncomingBatch {
    /// The producer fields of `header`, written at `base_offset` with `max_timestamp` (which
    /// differs from the header's for LogAppendTime topics).
    pub(crate) fn new(header: &BatchHeader, base_offset: i64, max_timestamp: i64) -> Self {
        IncomingBatch {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            transactional: header.is_transactional(),
            metadata: BatchMetadata {
                first_seq: header.base_sequence,
                last_seq: increment_sequence(header.base_sequence, header.last_offset_delta),
                base_offset,
                last_offset: base_offset + i64::from(header.last_offset_delta),
                max_timestamp,
            },
        }
    }

    fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }
}

/// What the producer checks decided for one append.
#[derive(Debug)]
pub(crate) enum AppendCheck {
    /// Nothing is a duplicate: write the batches, then [`ProducerStateManager::commit`] this.
    Append(PendingUpdate),
    /// Every batch repeats one already in the log: write nothing, answer with these.
    Duplicate {
        /// Base offset of the first batch when it was first written.
        base_offset: i64,
        /// Last offset of the last batch when it was first written.
        last_offset: i64,
        /// Max timestamp of the first batch as stored.
        max_timestamp: i64,
    },
}

/// Producer entries as they will be once an append's batches are written.
#[derive(Debug, Default)]
pub(crate) struct PendingUpdate(HashMap<i64, ProducerStateEntry>);

/// Per producer id state of one partition (Kafka's `ProducerStateManager`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ProducerStateManager {
    entries: HashMap<i64, ProducerStateEntry>,
    /// Open transactions by first offset (producer id as value): derived from `entries`, kept
    /// so the oldest one is found without a scan.
    ongoing: BTreeMap<i64, i64>,
}

impl ProducerStateManager {
    /// The entry of `producer_id`, if it is tracked.
    #[cfg(test)]
    pub(crate) fn entry(&self, producer_id: i64) -> Option<&ProducerStateEntry> {
        self.entries.get(&producer_id)
    }

    /// Number of producers tracked.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// First offset of the oldest open transaction: the last stable offset, unless the high
    /// watermark is lower.
    pub(crate) fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// The entry of one producer, if tracked.
    pub(crate) fn get(&self, producer_id: i64) -> Option<&ProducerStateEntry> {
        self.entries.get(&producer_id)
    }

    /// Every tracked producer, for DescribeProducers and the transaction coordinator.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &ProducerStateEntry> {
        self.entries.values()
    }

    /// Replaces `producer_id`'s entry, keeping `ongoing` in step with it.
    fn put(&mut self, entry: ProducerStateEntry) {
        let pid = entry.producer_id;
        if let Some(old) = self
            .entries
            .get(&pid)
            .and_then(|e| e.current_txn_first_offset)
        {
            self.ongoing.remove(&old);
        }
        if let Some(first) = entry.current_txn_first_offset {
            self.ongoing.insert(first, pid);
        }
        self.entries.insert(pid, entry);
    }

    /// Checks that a transaction marker of `producer_id` at `epoch` may be written: a marker
    /// of an older epoch than the log has seen comes from a coordinator that lost a race with
    /// a newer producer, and would end the newer producer's transaction.
    pub(crate) fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), LogError> {
        match self.entries.get(&producer_id) {
            Some(e) if epoch < e.producer_epoch => Err(LogError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: e.producer_epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Ends `header`'s producer's transaction with a marker of `kind` (the marker's offset is
    /// `header.base_offset`); returns the aborted-transaction entry an abort of an open
    /// transaction yields. A marker for a producer without an open transaction here changes
    /// only its epoch (the coordinator writes to every partition it was told of, some may
    /// have seen no record).
    pub(crate) fn complete_txn(
        &mut self,
        header: &BatchHeader,
        kind: ControlRecordType,
    ) -> Option<AbortedTxn> {
        let pid = header.producer_id;
        let mut entry = self
            .entries
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| ProducerStateEntry::new(pid, header.producer_epoch));
        if header.producer_epoch > entry.producer_epoch {
            // A fencing abort is written with the bumped epoch: older sequences stop counting.
            entry.producer_epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = entry.last_timestamp.max(header.max_timestamp);
        let first = entry.current_txn_first_offset.take();
        self.put(entry);
        let first = first?;
        (kind == ControlRecordType::Abort).then(|| AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: header.base_offset,
            last_stable_offset: self
                .first_unstable_offset()
                .unwrap_or(header.base_offset + 1)
                .min(header.base_offset + 1),
        })
    }

    /// Checks the batches of one append, in order, each against the state as the earlier ones
    /// leave it; changes nothing.
    ///
    /// A call whose batches are all duplicates is answered with the original offsets. A call
    /// that mixes duplicates with anything else is refused with OutOfOrderSequence rather than
    /// half written: a client retries a whole request, so a mix means its view of the log is
    /// wrong, and refusing keeps appends all-or-nothing.
    pub(crate) fn check(&self, batches: &[IncomingBatch]) -> Result<AppendCheck, LogError> {
        let mut pending: HashMap<i64, ProducerStateEntry> = HashMap::new();
        let mut duplicates: Vec<BatchMetadata> = Vec::new();
        let mut first_new: Option<&IncomingBatch> = None;
        for batch in batches {
            if !batch.is_idempotent() {
                first_new.get_or_insert(batch);
                continue;
            }
            let (pid, epoch, meta) = (batch.producer_id, batch.producer_epoch, batch.metadata);
            if epoch < 0 || meta.first_seq < 0 {
                return Err(LogError::InvalidRecord(format!(
                    "producer {pid} sent epoch {epoch} and base sequence {}",
                    meta.first_seq
                )));
            }
            let current = pending.get(&pid).or_else(|| self.entries.get(&pid));
            if let Some(entry) = current {
                if epoch == entry.producer_epoch {
                    if let Some(dup) = entry.find_duplicate(meta.first_seq, meta.last_seq) {
                        duplicates.push(*dup);
                        continue;
                    }
                }
                check_sequence(entry, epoch, meta.first_seq, pid)?;
                if !batch.transactional && entry.current_txn_first_offset.is_some() {
                    return Err(LogError::InvalidTxnState(format!(
                        "producer {pid} wrote outside its open transaction"
                    )));
                }
            }
            first_new.get_or_insert(batch);
            let mut entry = current
                .cloned()
                .unwrap_or_else(|| ProducerStateEntry::new(pid, epoch));
            entry.add_batch(epoch, meta);
            if batch.transactional && entry.current_txn_first_offset.is_none() {
                entry.current_txn_first_offset = Some(meta.base_offset);
            }
            pending.insert(pid, entry);
        }
        match (duplicates.first(), duplicates.last(), first_new) {
            (Some(first), Some(last), None) => Ok(AppendCheck::Duplicate {
                base_offset: first.base_offset,
                last_offset: last.last_offset,
                max_timestamp: first.max_timestamp,
            }),
            (Some(dup), _, Some(new)) => Err(LogError::OutOfOrderSequence {
                producer_id: new.producer_id,
                epoch: new.producer_epoch,
                sequence: new.metadata.first_seq,
                detail: format!(
                    "the same append repeats the batch written at offset {} and adds new batches",
                    dup.base_offset
                ),
            }),
            _ => Ok(AppendCheck::Append(PendingUpdate(pending))),
        }
    }

    /// Checks batches the group coordinator writes for a transaction (TxnOffsetCommit): they
    /// carry no meaningful sequence, so only the epoch is checked (an older one is fenced),
    /// and each opens its producer's transaction here unless one is open.
    pub(crate) fn check_unsequenced(
        &self,
        batches: &[IncomingBatch],
    ) -> Result<PendingUpdate, LogError> {
        let mut pending: HashMap<i64, ProducerStateEntry> = HashMap::new();
        for batch in batches {
            let (pid, epoch) = (batch.producer_id, batch.producer_epoch);
            if pid < 0 || epoch < 0 || !batch.transactional {
                return Err(LogError::InvalidRecord(format!(
                    "producer {pid} epoch {epoch}: transactional offsets need a producer"
                )));
            }
            let mut entry = pending
                .get(&pid)
                .or_else(|| self.entries.get(&pid))
                .cloned()
                .unwrap_or_else(|| ProducerStateEntry::new(pid, epoch));
            if epoch < entry.producer_epoch {
                return Err(LogError::InvalidProducerEpoch {
                    producer_id: pid,
                    epoch,
                    current: entry.producer_epoch,
                });
            }
            if epoch > entry.producer_epoch {
                entry.producer_epoch = epoch;
                entry.batches.clear();
            }
            entry.last_timestamp = batch.metadata.max_timestamp;
            if entry.current_txn_first_offset.is_none() {
                entry.current_txn_first_offset = Some(batch.metadata.base_offset);
            }
            pending.insert(pid, entry);
        }
        Ok(PendingUpdate(pending))
    }

    /// Makes an append's checked state current, once its batches are written.
    pub(crate) fn commit(&mut self, update: PendingUpdate) {
        for entry in update.0.into_values() {
            self.put(entry);
        }
    }

    /// Replays one batch read back from the log (rebuilding after open), or written by a
    /// follower exactly as its leader stored it. No checks: what is in the log was accepted
    /// when it was written, and a follower mirrors its leader's decisions (Kafka skips the
    /// sequence checks for replicated batches likewise), so that it recognises a retry should
    /// it become the leader.
    ///
    /// `control` is the marker type of a control batch (read from its record by the caller,
    /// since replay works from headers); an abort of an open transaction returns its entry for
    /// the aborted-transaction index.
    pub(crate) fn replay(
        &mut self,
        header: &BatchHeader,
        control: Option<ControlRecordType>,
    ) -> Option<AbortedTxn> {
        if header.producer_id < 0 {
            return None;
        }
        if header.is_control() {
            return self.complete_txn(header, control?);
        }
        // Batches with a negative sequence carry no idempotence (nothing written by this
        // broker has one).
        if header.base_sequence < 0 {
            return None;
        }
        let batch = IncomingBatch::new(header, header.base_offset, header.max_timestamp);
        let mut entry = self
            .entries
            .get(&header.producer_id)
            .cloned()
            .unwrap_or_else(|| ProducerStateEntry::new(header.producer_id, header.producer_epoch));
        entry.add_batch(header.producer_epoch, batch.metadata);
        if batch.transactional && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(header.base_offset);
        }
        self.put(entry);
        None
    }

    /// Forgets every producer and deletes every snapshot: the log was emptied and starts
    /// afresh, so no snapshot describes it.
    pub(crate) fn truncate_fully(&mut self, dir: &Path) -> io::Result<()> {
        self.entries.clear();
        self.ongoing.clear();
        let offsets = list_snapshots(dir)?;
        for &offset in &offsets {
            remove_if_exists(&snapshot_path(dir, offset))?;
        }
        if !offsets.is_empty() {
            sync_dir(dir)?;
        }
        Ok(())
    }

    /// Forgets producers whose newest batch is older than `expiration_ms`; returns how many.
    /// A forgotten producer is treated as new on its next batch (any sequence is accepted), as
    /// Kafka does since 2.5.
    pub(crate) fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.entries.len();
        // A producer with an open transaction stays: its transaction still bounds the LSO
        // until the coordinator ends it.
        self.entries.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.entries.len()
    }

    /// Serializes the state in the snapshot layout described in the module docs.
    fn encode(&self) -> Vec<u8> {
        let mut entries: Vec<&ProducerStateEntry> = self.entries.values().collect();
        // A stable order makes equal states give equal files.
        entries.sort_unstable_by_key(|e| e.producer_id);
        let mut body = Vec::with_capacity(4 + entries.len() * (ENTRY_BYTES + BATCH_BYTES));
        body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for e in entries {
            body.extend_from_slice(&e.producer_id.to_be_bytes());
            body.extend_from_slice(&e.producer_epoch.to_be_bytes());
            body.extend_from_slice(&e.last_timestamp.to_be_bytes());
            body.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
            // At most MAX_CACHED_BATCHES, so this fits in a byte.
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.base_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
                body.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(6 + body.len());
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses a snapshot written by [`ProducerStateManager::encode`].
    fn decode(bytes: &[u8]) -> io::Result<ProducerStateManager> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.i16()?;
        if version != SNAPSHOT_VERSION && version != SNAPSHOT_VERSION_1 {
            return Err(invalid_data(format!(
                "unknown producer snapshot version {version}"
            )));
        }
        let crc = r.i32()? as u32;
        if crc32c::crc32c(&bytes[r.pos..]) != crc {
            return Err(invalid_data("producer snapshot CRC mismatch".into()));
        }
        let count = r.i32()? as u32;
        let mut manager = ProducerStateManager::default();
        for _ in 0..count {
            let producer_id = r.i64()?;
            let mut entry = ProducerStateEntry::new(producer_id, r.i16()?);
            entry.last_timestamp = r.i64()?;
            if version >= SNAPSHOT_VERSION {
                let first = r.i64()?;
                entry.current_txn_first_offset = (first >= 0).then_some(first);
            }
            let batches = r.u8()?;
            if usize::from(batches) > MAX_CACHED_BATCHES {
                return Err(invalid_data(format!(
                    "producer snapshot holds {batches} batches for producer {producer_id}"
                )));
            }
            for _ in 0..batches {
                entry.batches.push_back(BatchMetadata {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                    max_timestamp: r.i64()?,
                });
            }
            manager.put(entry);
        }
        if r.pos != bytes.len() {
            return Err(invalid_data("trailing bytes in producer snapshot".into()));
        }
        Ok(manager)
    }

    /// Writes the state as the snapshot at `offset` (the current log end) atomically (temp
    /// file, fsync, rename, directory fsync), then deletes all but the newest snapshots.
    pub(crate) fn write_snapshot(&self, dir: &Path, offset: i64) -> io::Result<()> {
        let path = snapshot_path(dir, offset);
        let tmp = dir.join(format!("{}.tmp", segment_file_name(offset, SNAPSHOT_EXT)));
        let mut f = File::create(&tmp)?;
        f.write_all(&self.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // Durable before older snapshots go, so a crash never leaves none.
        sync_dir(dir)?;
        let offsets = list_snapshots(dir)?;
        let keep_from = offsets.len().saturating_sub(SNAPSHOTS_KEPT);
        for &old in &offsets[..keep_from] {
            remove_if_exists(&snapshot_path(dir, old))?;
        }
        debug!(dir = %dir.display(), offset, producers = self.entries.len(), "wrote producer snapshot");
        Ok(())
    }

    /// Rebuilds the state of a recovered log: loads the newest usable snapshot at or below the
    /// log end (deleting those above it, which describe data lost in a crash, and unreadable
    /// ones), then replays the batch headers from the snapshot's offset to the log end. Writes a
    /// snapshot at the log end when it had to replay anything, so the next open is quick.
    ///
    /// Also returns the offset replay started from and the aborted transactions whose markers
    /// it met, with the base offset of the segment holding each marker: the
    /// aborted-transaction index is cut back to that offset and given them again.
    pub(crate) fn rebuild(dir: &Path, state: &LogState) -> Result<Rebuilt, LogError> {
        let log_end = state.active.next_offset();
        let (mut manager, from) = Self::load_snapshot(dir, log_end)?;
        let mut replayed = 0u64;
        let mut aborted = Vec::new();
        let segments = state
            .closed
            .iter()
            .map(|s| s.as_ref())
            .chain(std::iter::once(&state.active));
        for seg in segments {
            if seg.next_offset() <= from || seg.size() == 0 {
                continue;
            }
            let start = seg.position_for(from)?;
            let base = seg.base_offset();
            for_each_header(seg.file(), start, seg.size(), |pos, h, size| {
                // The index may point before `from`; those batches are in the snapshot already.
                if h.base_offset >= from {
                    let control = if h.is_control() {
                        read_control_type(seg.file(), pos, size)?
                    } else {
                        None
                    };
                    if let Some(txn) = manager.replay(h, control) {
                        aborted.push((base, txn));
                    }
                    replayed += 1;
                }
                Ok(true)
            })?;
        }
        if replayed > 0 {
            manager.write_snapshot(dir, log_end)?;
        }
        info!(dir = %dir.display(), snapshot_offset = from, replayed_batches = replayed, producers = manager.len(), open_transactions = manager.ongoing.len(), "rebuilt producer state");
        Ok(Rebuilt {
            manager,
            from,
            aborted,
        })
    }

    /// The newest readable snapshot at or below `log_end` and its offset, or an empty state
    /// from offset 0.
    fn load_snapshot(dir: &Path, log_end: i64) -> io::Result<(ProducerStateManager, i64)> {
        let mut offsets = list_snapshots(dir)?;
        offsets.reverse();
        for offset in offsets {
            let path = snapshot_path(dir, offset);
            if offset > log_end {
                warn!(path = %path.display(), log_end, "deleting producer snapshot beyond the log end");
                remove_if_exists(&path)?;
                continue;
            }
            match std::fs::read(&path).and_then(|b| Self::decode(&b)) {
                Ok(manager) => return Ok((manager, offset)),
                Err(error) => {
                    warn!(path = %path.display(), %error, "deleting unreadable producer snapshot");
                    remove_if_exists(&path)?;
                }
            }
        }
        Ok((ProducerStateManager::default(), 0))
    }
}

/// What [`ProducerStateManager::rebuild`] found.
pub(crate) struct Rebuilt {
    /// The producer state at the log end.
    pub manager: ProducerStateManager,
    /// The offset replay started from (a snapshot's).
    pub from: i64,
    /// Aborted transactions whose markers lie at or after `from`, with their segment's base.
    pub aborted: Vec<(i64, AbortedTxn)>,
}

/// Reads the marker type of the control batch at `pos` (of `size` bytes) in `file`; only the
/// start of its one record is needed.
pub(crate) fn read_control_type(
    file: &File,
    pos: u64,
    size: u64,
) -> io::Result<Option<ControlRecordType>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; size.min(128) as usize];
    file.read_exact_at(&mut buf, pos)?;
    Ok(control_batch::control_type(&buf))
}

/// Rejects a batch that does not continue `entry`'s sequence; duplicates are handled before.
fn check_sequence(
    entry: &ProducerStateEntry,
    epoch: i16,
    first_seq: i32,
    producer_id: i64,
) -> Result<(), LogError> {
    let out_of_order = |detail: String| LogError::OutOfOrderSequence {
        producer_id,
        epoch,
        sequence: first_seq,
        detail,
    };
    if epoch < entry.producer_epoch {
        return Err(LogError::InvalidProducerEpoch {
            producer_id,
            epoch,
            current: entry.producer_epoch,
        });
    }
    if epoch > entry.producer_epoch {
        // A bumped epoch restarts the sequence; anything else means lost batches.
        return if first_seq == 0 {
            Ok(())
        } else {
            Err(out_of_order(format!(
                "a new epoch (current {}) must start at sequence 0",
                entry.producer_epoch
            )))
        };
    }
    match entry.last_seq() {
        Some(last) if first_seq != increment_sequence(last, 1) => Err(out_of_order(format!(
            "expected sequence {}",
            increment_sequence(last, 1)
        ))),
        _ => Ok(()),
    }
}

/// Path of the snapshot at `offset`.
fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(segment_file_name(offset, SNAPSHOT_EXT))
}

/// Offsets of the snapshots in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> io::Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(offset) = entry
            .file_name()
            .to_str()
            .and_then(|n| parse_segment_name(n, SNAPSHOT_EXT))
        {
            offsets.push(offset);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Bounds-checked big-endian reads from a snapshot.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let end = self.pos + N;
        let Some(slice) = self.bytes.get(self.pos..end) else {
            return Err(invalid_data("truncated producer snapshot".into()));
        };
        self.pos = end;
        let mut a = [0u8; N];
        a.copy_from_slice(slice);
        Ok(a)
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take::<1>()?[0])
    }

    fn i16(&mut self) -> io::Result<i16> {
        Ok(i16::from_be_bytes(self.take()?))
    }

    fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    fn i64(&mut self) -> io::Result<i64> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::error::ResponseError;
    use crate::log::test_util::{producer_batch, read_all_records};
    use crate::log::{CleanupPolicy, LogConfig, PartitionLog, TimestampType};
    use bytes::{Bytes, BytesMut};
    use std::sync::Arc;

    const PID: i64 = 1000;
    const DAY: i64 = PRODUCER_ID_EXPIRATION_MS;

    fn config() -> LogConfig {
        LogConfig {
            index_interval_bytes: 256,
            ..LogConfig::default()
        }
    }

    fn open(dir: &Path, config: LogConfig) -> Arc<PartitionLog> {
        PartitionLog::open(dir.to_path_buf(), config).unwrap()
    }

    /// Appends batches of 5 records with sequences 0-4, 5-9, ... from offset 0; returns them.
    fn append_sequence(log: &PartitionLog, batches: i32) -> Vec<Bytes> {
        (0..batches)
            .map(|i| {
                let b = producer_batch(PID, 0, i * 5, 5, 100);
                let info = log.append(b.clone(), 100).unwrap();
                assert!(!info.duplicate);
                b
            })
            .collect()
    }

    fn concat(batches: &[Bytes]) -> Bytes {
        let mut buf = BytesMut::new();
        for b in batches {
            buf.extend_from_slice(b);
        }
        buf.freeze()
    }

    fn is_out_of_order(r: Result<crate::log::AppendInfo, LogError>) -> bool {
        matches!(r, Err(ref e @ LogError::OutOfOrderSequence { .. }) if ResponseError::from(e) == ResponseError::OutOfOrderSequenceNumber)
    }

    #[test]
    fn sequences_wrap_to_zero_after_i32_max() {
        assert_eq!(increment_sequence(5, 1), 6);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 4), 2);
        let meta = |first_seq, last_seq| BatchMetadata {
            first_seq,
            last_seq,
            base_offset: 0,
            last_offset: 0,
            max_timestamp: 0,
        };
        let mut m = ProducerStateManager::default();
        let mut entry = ProducerStateEntry::new(PID, 0);
        entry.add_batch(0, meta(i32::MAX - 2, i32::MAX));
        m.entries.insert(PID, entry);
        let next = |first_seq| IncomingBatch {
            producer_id: PID,
            producer_epoch: 0,
            transactional: false,
            metadata: meta(first_seq, first_seq),
        };
        assert!(matches!(m.check(&[next(0)]), Ok(AppendCheck::Append(_))));
        assert!(matches!(
            m.check(&[next(i32::MAX)]),
            Err(LogError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let mut m = ProducerStateManager::default();
        for pid in 0..3 {
            for seq in 0..7 {
                let h = BatchHeader::parse(&producer_batch(pid, 2, seq * 2, 2, 50)).unwrap();
                let b = IncomingBatch::new(&h, i64::from(seq) * 2, 50 + i64::from(seq));
                m.entries
                    .entry(pid)
                    .or_insert_with(|| ProducerStateEntry::new(pid, 2))
                    .add_batch(2, b.metadata);
            }
        }
        let bytes = m.encode();
        assert_eq!(ProducerStateManager::decode(&bytes).unwrap(), m);
        assert_eq!(m.entry(1).unwrap().batches.len(), MAX_CACHED_BATCHES);
        for i in [0, 3, 7, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(ProducerStateManager::decode(&bad).is_err(), "flip at {i}");
        }
        assert!(ProducerStateManager::decode(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(
            ProducerStateManager::decode(&ProducerStateManager::default().encode()).unwrap(),
            ProducerStateManager::default()
        );
    }

    #[test]
    fn sequences_in_order_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        append_sequence(&log, 8);
        assert_eq!(log.log_end_offset(), 40);
        let entry = log.producers().entry(PID).cloned().unwrap();
        assert_eq!(entry.batches.len(), MAX_CACHED_BATCHES);
        assert_eq!(entry.last_seq(), Some(39));
        // Non-idempotent batches are not tracked and never checked.
        let plain = crate::log::test_util::batch_of(3, 5, 0);
        log.append(plain.clone(), 0).unwrap();
        assert!(!log.append(plain, 0).unwrap().duplicate);
        assert_eq!(log.producers().len(), 1);
    }

    #[test]
    fn retry_of_any_of_the_last_five_batches_returns_the_original_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        let sent = append_sequence(&log, 7);
        let end = log.log_end_offset();
        let size = log.size_bytes();
        for (i, b) in sent.iter().enumerate().skip(2) {
            let info = log.append(b.clone(), 999).unwrap();
            let base = i as i64 * 5;
            assert!(info.duplicate);
            assert_eq!((info.base_offset, info.last_offset), (base, base + 4));
            assert_eq!((info.record_count, info.log_append_time_ms), (5, -1));
        }
        assert_eq!((log.log_end_offset(), log.size_bytes()), (end, size));
        // The sixth newest is no longer remembered: it reads as a sequence gap.
        assert!(is_out_of_order(log.append(sent[1].clone(), 999)));
        // A retry of a whole multi-batch request is a duplicate too.
        let info = log.append(concat(&sent[4..6]), 999).unwrap();
        assert!(info.duplicate);
        assert_eq!((info.base_offset, info.last_offset), (20, 29));
        assert_eq!(read_all_records(&log).len(), 35);
    }

    #[test]
    fn a_duplicate_on_a_log_append_time_topic_returns_the_original_append_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(
            dir.path(),
            LogConfig {
                message_timestamp_type: TimestampType::LogAppendTime,
                ..config()
            },
        );
        let b = producer_batch(PID, 0, 0, 3, 1);
        assert_eq!(
            log.append(b.clone(), 5_000).unwrap().log_append_time_ms,
            5_000
        );
        let info = log.append(b, 9_000).unwrap();
        assert!(info.duplicate);
        assert_eq!(info.log_append_time_ms, 5_000);
    }

    #[test]
    fn a_sequence_gap_is_out_of_order_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        append_sequence(&log, 2);
        assert!(is_out_of_order(
            log.append(producer_batch(PID, 0, 11, 5, 0), 0)
        ));
        assert_eq!(log.log_end_offset(), 10);
        // Overlapping but not identical to a cached batch: also out of order.
        assert!(is_out_of_order(
            log.append(producer_batch(PID, 0, 7, 3, 0), 0)
        ));
        let info = log.append(producer_batch(PID, 0, 10, 5, 0), 0).unwrap();
        assert_eq!((info.base_offset, info.duplicate), (10, false));
    }

    #[test]
    fn batches_of_one_call_are_checked_in_order_and_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        let two = concat(&[
            producer_batch(PID, 0, 0, 3, 0),
            producer_batch(PID, 0, 3, 3, 0),
        ]);
        assert_eq!(log.append(two, 0).unwrap().last_offset, 5);
        let gap = concat(&[
            producer_batch(PID, 0, 6, 3, 0),
            producer_batch(PID, 0, 10, 3, 0),
        ]);
        assert!(is_out_of_order(log.append(gap, 0)));
        assert_eq!(log.log_end_offset(), 6);
        // A retried batch next to a new one: refused as a whole (see `check`).
        let mixed = concat(&[
            producer_batch(PID, 0, 3, 3, 0),
            producer_batch(PID, 0, 6, 3, 0),
        ]);
        assert!(is_out_of_order(log.append(mixed, 0)));
        let mixed = concat(&[
            producer_batch(PID, 0, 3, 3, 0),
            crate::log::test_util::batch_of(2, 5, 0),
        ]);
        assert!(is_out_of_order(log.append(mixed, 0)));
        assert_eq!(log.log_end_offset(), 6);
        assert_eq!(log.producers().entry(PID).unwrap().last_seq(), Some(5));
        // Two producers in one call are tracked separately.
        let both = concat(&[
            producer_batch(PID, 0, 6, 1, 0),
            producer_batch(PID + 1, 0, 42, 1, 0),
        ]);
        assert_eq!(log.append(both, 0).unwrap().last_offset, 7);
        assert_eq!(log.producers().entry(PID + 1).unwrap().last_seq(), Some(42));
    }

    #[test]
    fn an_older_epoch_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        log.append(producer_batch(PID, 3, 0, 2, 0), 0).unwrap();
        let err = log.append(producer_batch(PID, 2, 2, 2, 0), 0).unwrap_err();
        assert_eq!(
            ResponseError::from(&err),
            ResponseError::InvalidProducerEpoch
        );
        assert!(matches!(
            err,
            LogError::InvalidProducerEpoch {
                producer_id: PID,
                epoch: 2,
                current: 3
            }
        ));
        assert_eq!(log.log_end_offset(), 2);
    }

    #[test]
    fn a_newer_epoch_must_start_at_sequence_zero() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        log.append(producer_batch(PID, 0, 0, 4, 0), 0).unwrap();
        assert!(is_out_of_order(
            log.append(producer_batch(PID, 1, 4, 2, 0), 0)
        ));
        let info = log.append(producer_batch(PID, 1, 0, 2, 0), 0).unwrap();
        assert_eq!((info.base_offset, info.duplicate), (4, false));
        let entry = log.producers().entry(PID).cloned().unwrap();
        assert_eq!((entry.producer_epoch, entry.batches.len()), (1, 1));
        // The old epoch is fenced now, and the new one continues from its own sequence.
        let fenced = log.append(producer_batch(PID, 0, 4, 1, 0), 0).unwrap_err();
        assert_eq!(
            ResponseError::from(&fenced),
            ResponseError::InvalidProducerEpoch
        );
        log.append(producer_batch(PID, 1, 2, 1, 0), 0).unwrap();
    }

    #[test]
    fn an_unknown_producer_may_start_at_any_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        let info = log.append(producer_batch(PID, 7, 1234, 3, 0), 0).unwrap();
        assert!(!info.duplicate);
        log.append(producer_batch(PID, 7, 1237, 1, 0), 0).unwrap();
        // Sequences wrap to 0 after i32::MAX.
        log.append(producer_batch(PID + 1, 0, i32::MAX, 1, 0), 0)
            .unwrap();
        log.append(producer_batch(PID + 1, 0, 0, 1, 0), 0).unwrap();
        // Negative producer fields with a producer id are malformed.
        let err = log.append(producer_batch(PID + 2, -1, 0, 1, 0), 0);
        assert_eq!(
            ResponseError::from(&err.unwrap_err()),
            ResponseError::InvalidRecord
        );
    }

    #[test]
    fn state_survives_a_clean_close_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let sent = {
            let log = open(dir.path(), config());
            let sent = append_sequence(&log, 3);
            log.close().unwrap();
            sent
        };
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![15]);
        let log = open(dir.path(), config());
        let info = log.append(sent[1].clone(), 0).unwrap();
        assert!(info.duplicate);
        assert_eq!((info.base_offset, info.last_offset), (5, 9));
        assert!(is_out_of_order(
            log.append(producer_batch(PID, 0, 16, 1, 0), 0)
        ));
        log.append(producer_batch(PID, 0, 15, 1, 0), 0).unwrap();
        assert_eq!(log.log_end_offset(), 16);
    }

    #[test]
    fn state_survives_a_crash_from_the_last_roll_snapshot_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let one = producer_batch(PID, 0, 0, 5, 0);
        // Two batches per segment.
        let config = LogConfig {
            segment_bytes: one.len() as u64 * 2,
            ..config()
        };
        let sent = {
            let log = open(dir.path(), config.clone());
            let sent = append_sequence(&log, 7);
            // Rolls at 10, 20 and 30; the newest two snapshots are kept.
            assert_eq!(list_snapshots(dir.path()).unwrap(), vec![20, 30]);
            // Dropped without close: the batch at 30 is only in the tail after the snapshot.
            sent
        };
        let log = open(dir.path(), config.clone());
        assert_eq!(log.log_end_offset(), 35);
        for (i, b) in sent.iter().enumerate().skip(2) {
            let info = log.append(b.clone(), 0).unwrap();
            assert!(info.duplicate, "batch {i}");
            assert_eq!(info.base_offset, i as i64 * 5);
        }
        assert_eq!(log.log_end_offset(), 35);
        log.append(producer_batch(PID, 0, 35, 5, 0), 0).unwrap();
        drop(log);
        // Replaying wrote a snapshot at the recovered end; still only two are kept.
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![30, 35]);
        let log = open(dir.path(), config);
        assert!(
            log.append(producer_batch(PID, 0, 35, 5, 0), 0)
                .unwrap()
                .duplicate
        );
        assert_eq!(log.log_end_offset(), 40);
    }

    #[test]
    fn without_snapshots_the_state_is_rebuilt_from_all_segments() {
        let dir = tempfile::tempdir().unwrap();
        let one = producer_batch(PID, 0, 0, 5, 0);
        let config = LogConfig {
            segment_bytes: one.len() as u64 * 2,
            ..config()
        };
        let sent = {
            let log = open(dir.path(), config.clone());
            let sent = append_sequence(&log, 6);
            log.close().unwrap();
            sent
        };
        for offset in list_snapshots(dir.path()).unwrap() {
            std::fs::remove_file(snapshot_path(dir.path(), offset)).unwrap();
        }
        let log = open(dir.path(), config);
        let state = log.producers().entry(PID).cloned().unwrap();
        assert_eq!(state.batches.len(), MAX_CACHED_BATCHES);
        assert_eq!(state.batches.front().unwrap().base_offset, 5);
        assert!(log.append(sent[5].clone(), 0).unwrap().duplicate);
    }

    #[test]
    fn an_unreadable_snapshot_falls_back_to_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let one = producer_batch(PID, 0, 0, 5, 0);
        let config = LogConfig {
            segment_bytes: one.len() as u64,
            ..config()
        };
        let sent = {
            let log = open(dir.path(), config.clone());
            append_sequence(&log, 4)
        };
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![10, 15]);
        std::fs::write(snapshot_path(dir.path(), 15), b"garbage").unwrap();
        let log = open(dir.path(), config);
        for b in &sent[1..] {
            assert!(log.append(b.clone(), 0).unwrap().duplicate);
        }
        assert_eq!(log.log_end_offset(), 20);
    }

    #[test]
    fn snapshots_beyond_a_truncated_tail_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let sent = {
            let log = open(dir.path(), config());
            let sent = append_sequence(&log, 3);
            log.close().unwrap();
            sent
        };
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![15]);
        // Tear the last batch: the snapshot at 15 now describes data that is gone.
        let path = dir.path().join("00000000000000000000.log");
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - sent[2].len() as u64 / 2).unwrap();
        drop(f);
        let log = open(dir.path(), config());
        assert_eq!(log.log_end_offset(), 10);
        assert!(!snapshot_path(dir.path(), 15).exists());
        // The lost batch is new again, not a duplicate of something that no longer exists.
        let info = log.append(sent[2].clone(), 0).unwrap();
        assert_eq!((info.base_offset, info.duplicate), (10, false));
        assert!(log.append(sent[1].clone(), 0).unwrap().duplicate);
    }

    #[test]
    fn silent_producers_expire_in_maintenance() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), config());
        let t0 = 1_700_000_000_000;
        log.append(producer_batch(PID, 0, 0, 2, t0), t0).unwrap();
        log.append(producer_batch(PID + 1, 0, 0, 2, t0 + DAY), t0 + DAY)
            .unwrap();
        // The newest record of PID has timestamp t0 + 1.
        let report = log.run_maintenance(t0 + DAY).unwrap();
        assert_eq!(report.producers_expired, 0);
        let report = log.run_maintenance(t0 + 1 + DAY).unwrap();
        assert_eq!(report.producers_expired, 1);
        assert!(log.producers().entry(PID).is_none());
        assert!(log.producers().entry(PID + 1).is_some());
        // Forgotten: any sequence is accepted, and an old retry is written again.
        let info = log
            .append(producer_batch(PID, 0, 0, 2, t0), t0 + DAY)
            .unwrap();
        assert!(!info.duplicate);
    }

    #[test]
    fn delete_records_and_retention_leave_the_state_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sent = {
            let log = open(dir.path(), config());
            let sent = append_sequence(&log, 3);
            // Rolls (snapshot at 15) and deletes every segment holding these batches.
            assert_eq!(log.delete_records_before(15).unwrap(), 15);
            assert_eq!(log.size_bytes(), 0);
            assert!(log.append(sent[2].clone(), 0).unwrap().duplicate);
            sent
        };
        let log = open(dir.path(), config());
        let info = log.append(sent[2].clone(), 0).unwrap();
        assert!(info.duplicate);
        assert_eq!(info.log_start_offset, 15);
        log.append(producer_batch(PID, 0, 15, 1, 0), 0).unwrap();
    }

    #[test]
    fn compaction_leaves_the_state_alone() {
        let dir = tempfile::tempdir().unwrap();
        let one = producer_batch(PID, 0, 0, 5, 0);
        let config = LogConfig {
            segment_bytes: one.len() as u64,
            cleanup_policy: CleanupPolicy::Compact,
            ..config()
        };
        // Every batch has keys k0..k4, so compaction empties all closed segments but the last.
        let sent = {
            let log = open(dir.path(), config.clone());
            let sent = append_sequence(&log, 4);
            assert!(log.run_maintenance(100).unwrap().segments_compacted > 0);
            assert!(log.append(sent[3].clone(), 0).unwrap().duplicate);
            sent
        };
        let log = open(dir.path(), config);
        assert!(log.append(sent[3].clone(), 0).unwrap().duplicate);
        assert!(log.append(sent[1].clone(), 0).unwrap().duplicate);
        log.append(producer_batch(PID, 0, 20, 1, 0), 0).unwrap();
    }
}

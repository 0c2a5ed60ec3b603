//! Idempotent producers: per producer id, the epoch and the last few batches' sequence numbers,
//! which is what lets the log recognise a retried batch and refuse a lost or reordered one.
//!
//! Named after Kafka's `ProducerStateManager`. The state is derived from the log alone: every
//! batch header carries producer id, epoch, base sequence and last offset delta, so the state
//! at any offset is a fold over the headers before it. Snapshots (`<offset>.snapshot`, the
//! state at that log end offset) only spare a full scan on open; they are written on every
//! roll and on close, and the tail after the newest usable one is rescanned.
//!
//! Snapshot file layout (big-endian): version `i16` (1), CRC-32C `u32` of everything after it,
//! entry count `u32`, then per entry producer id `i64`, epoch `i16`, last timestamp `i64`,
//! batch count `u8` and per batch first sequence `i32`, last sequence `i32`, base offset `i64`,
//! last offset `i64`, max timestamp `i64`.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use super::batch::BatchHeader;
use super::checkpoint::sync_dir;
use super::error::LogError;
use super::partition_log::LogState;
use super::segment::{for_each_header, invalid_data, parse_segment_name, segment_file_name};

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
const SNAPSHOT_VERSION: i16 = 1;
/// Bytes of one batch in a snapshot.
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;
/// Bytes of one entry in a snapshot before its batches.
const ENTRY_BYTES: usize = 8 + 2 + 8 + 1;

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
}

impl ProducerStateEntry {
    fn new(producer_id: i64, producer_epoch: i16) -> Self {
        ProducerStateEntry {
            producer_id,
            producer_epoch,
            batches: VecDeque::with_capacity(MAX_CACHED_BATCHES),
            last_timestamp: -1,
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
            }
            first_new.get_or_insert(batch);
            let mut entry = current
                .cloned()
                .unwrap_or_else(|| ProducerStateEntry::new(pid, epoch));
            entry.add_batch(epoch, meta);
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

    /// Makes an append's checked state current, once its batches are written.
    pub(crate) fn commit(&mut self, update: PendingUpdate) {
        self.entries.extend(update.0);
    }

    /// Replays one batch read back from the log (rebuilding after open). No checks: what is in
    /// the log was accepted when it was written.
    fn replay(&mut self, header: &BatchHeader) {
        // Control batches end transactions, which this log does not have; batches with a
        // negative sequence carry no idempotence (nothing written by this broker has one).
        if header.producer_id < 0 || header.base_sequence < 0 || header.is_control() {
            return;
        }
        let batch = IncomingBatch::new(header, header.base_offset, header.max_timestamp);
        self.entries
            .entry(header.producer_id)
            .or_insert_with(|| ProducerStateEntry::new(header.producer_id, header.producer_epoch))
            .add_batch(header.producer_epoch, batch.metadata);
    }

    /// Forgets producers whose newest batch is older than `expiration_ms`; returns how many.
    /// A forgotten producer is treated as new on its next batch (any sequence is accepted), as
    /// Kafka does since 2.5.
    pub(crate) fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) < expiration_ms);
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
        if version != SNAPSHOT_VERSION {
            return Err(invalid_data(format!(
                "unknown producer snapshot version {version}"
            )));
        }
        let crc = r.i32()? as u32;
        if crc32c::crc32c(&bytes[r.pos..]) != crc {
            return Err(invalid_data("producer snapshot CRC mismatch".into()));
        }
        let count = r.i32()? as u32;
        let mut entries = HashMap::new();
        for _ in 0..count {
            let producer_id = r.i64()?;
            let mut entry = ProducerStateEntry::new(producer_id, r.i16()?);
            entry.last_timestamp = r.i64()?;
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
            entries.insert(producer_id, entry);
        }
        if r.pos != bytes.len() {
            return Err(invalid_data("trailing bytes in producer snapshot".into()));
        }
        Ok(ProducerStateManager { entries })
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
    pub(crate) fn rebuild(dir: &Path, state: &LogState) -> Result<ProducerStateManager, LogError> {
        let log_end = state.active.next_offset();
        let (mut manager, from) = Self::load_snapshot(dir, log_end)?;
        let mut replayed = 0u64;
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
            for_each_header(seg.file(), start, seg.size(), |_, h, _| {
                // The index may point before `from`; those batches are in the snapshot already.
                if h.base_offset >= from {
                    manager.replay(h);
                    replayed += 1;
                }
                Ok(true)
            })?;
        }
        if replayed > 0 {
            manager.write_snapshot(dir, log_end)?;
        }
        info!(dir = %dir.display(), snapshot_offset = from, replayed_batches = replayed, producers = manager.len(), "rebuilt producer state");
        Ok(manager)
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

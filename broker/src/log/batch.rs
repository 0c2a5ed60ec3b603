//! Record batch v2 headers: parsing, validation of what producers send, and the few in-place
//! rewrites the broker makes (base offset, leader epoch, LogAppendTime).
//!
//! The broker never decompresses on the append path: everything here reads the fixed 61-byte
//! header and checks the CRC, which is what makes appends cheap.

use super::error::LogError;

/// Size of the fixed record batch v2 header.
pub(crate) const HEADER_SIZE: usize = 61;
/// Bytes before the part counted by `batchLength` (base offset and the length itself).
pub(crate) const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength`: the header without the first 12 bytes.
const MIN_BATCH_LENGTH: usize = HEADER_SIZE - LOG_OVERHEAD;
/// A record takes at least 7 bytes (length, attributes, timestamp delta, offset delta, key
/// length, value length, header count, one byte each), which bounds an uncompressed batch's count.
const MIN_RECORD_SIZE: usize = 7;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const FIRST_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORD_COUNT: usize = 57;

/// Attribute bits 0-2: the compression codec.
const COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: timestamps are LogAppendTime.
pub(crate) const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
/// Attribute bit 4: the batch belongs to a transaction.
pub(crate) const TRANSACTIONAL_BIT: i16 = 1 << 4;
/// Attribute bit 5: a control batch (transaction markers).
pub(crate) const CONTROL_BIT: i16 = 1 << 5;

/// The decoded fixed header of a record batch (magic 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parses the fixed header from the start of `buf`; `None` if fewer than 61 bytes.
    pub(crate) fn parse(buf: &[u8]) -> Option<BatchHeader> {
        if buf.len() < HEADER_SIZE {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET),
            batch_length: be_i32(buf, BATCH_LENGTH),
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH),
            magic: buf[MAGIC] as i8,
            crc: be_i32(buf, CRC) as u32,
            attributes: be_i16(buf, ATTRIBUTES),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA),
            first_timestamp: be_i64(buf, FIRST_TIMESTAMP),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP),
            producer_id: be_i64(buf, PRODUCER_ID),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH),
            base_sequence: be_i32(buf, BASE_SEQUENCE),
            record_count: be_i32(buf, RECORD_COUNT),
        })
    }

    /// Whole size of the batch on disk, or `None` if `batchLength` is too small to be legal.
    pub(crate) fn total_size(&self) -> Option<usize> {
        let len = usize::try_from(self.batch_length).ok()?;
        if len < MIN_BATCH_LENGTH {
            return None;
        }
        Some(LOG_OVERHEAD + len)
    }

    /// Offset of the last record the batch covers.
    pub(crate) fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The offset after this batch.
    pub(crate) fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub(crate) fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    /// Whether the batch's timestamps are LogAppendTime (all records carry `max_timestamp`).
    pub(crate) fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    /// Whether this is a control batch (transaction markers).
    pub(crate) fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Whether the batch belongs to a transaction (data or marker).
    pub(crate) fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }
}

/// The producer id and epoch of the first batch of `records` if that batch belongs to a
/// transaction: what the produce path verifies with the transaction coordinator (KIP-890).
pub fn transactional_producer(records: &[u8]) -> Option<(i64, i16)> {
    let h = BatchHeader::parse(records)?;
    (h.is_transactional() && !h.is_control()).then_some((h.producer_id, h.producer_epoch))
}

/// CRC-32C of a whole batch as stored in its header: everything after the CRC field.
pub(crate) fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES..])
}

/// Checks a stored batch's CRC (the batch must be complete and at least 61 bytes).
pub(crate) fn crc_matches(batch: &[u8], header: &BatchHeader) -> bool {
    batch.len() >= HEADER_SIZE && compute_crc(batch) == header.crc
}

/// One validated batch inside a produce buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ValidatedBatch {
    /// Where the batch starts in the buffer.
    pub position: usize,
    /// Its whole size in bytes.
    pub size: usize,
    /// Number of records (= lastOffsetDelta + 1 for producer batches).
    pub record_count: i32,
    /// The batch's max timestamp as sent.
    pub max_timestamp: i64,
}

/// Validates every batch of a produce request's `records` before anything is written.
///
/// Checks, per batch: at least a whole header is present, magic 2, a sane `batchLength` that
/// ends inside the buffer, size within `max_message_bytes`, the CRC, and
/// `recordCount == lastOffsetDelta + 1 >= 1`. The buffer must end exactly after the last batch.
pub(crate) fn validate_produce(
    buf: &[u8],
    max_message_bytes: usize,
) -> Result<Vec<ValidatedBatch>, LogError> {
    if buf.is_empty() {
        return Err(LogError::InvalidRecord("empty record set".into()));
    }
    let mut batches = Vec::with_capacity(1);
    let mut pos = 0usize;
    while pos < buf.len() {
        let (header, batch) = frame_batch(buf, pos, |size, _| {
            if size > max_message_bytes {
                return Err(LogError::RecordTooLarge {
                    size,
                    max: max_message_bytes,
                });
            }
            Ok(())
        })?;
        let size = batch.len();
        if !crc_matches(batch, &header) {
            return Err(LogError::CorruptRecord(format!(
                "CRC mismatch: header says {:#010x}, computed {:#010x}",
                header.crc,
                compute_crc(batch)
            )));
        }
        if header.record_count < 1 {
            return Err(LogError::InvalidRecord(format!(
                "record count {} < 1",
                header.record_count
            )));
        }
        if i64::from(header.record_count) != i64::from(header.last_offset_delta) + 1 {
            return Err(LogError::InvalidRecord(format!(
                "record count {} does not match last offset delta {}",
                header.record_count, header.last_offset_delta
            )));
        }
        // Without this an uncompressed batch of a few bytes could claim billions of records and
        // burn offsets; compressed batches are bounded later, when they are decompressed.
        if header.compression() == 0
            && (header.record_count as usize).saturating_mul(MIN_RECORD_SIZE) > size - HEADER_SIZE
        {
            return Err(LogError::InvalidRecord(format!(
                "{} records cannot fit in {} bytes",
                header.record_count,
                size - HEADER_SIZE
            )));
        }
        batches.push(ValidatedBatch {
            position: pos,
            size,
            record_count: header.record_count,
            max_timestamp: header.max_timestamp,
        });
        pos += size;
    }
    Ok(batches)
}

/// The batch starting at `pos` of `buf`: its header and bytes, after the checks every batch
/// needs before its fields mean anything (a whole header, magic 2, a legal `batchLength` that
/// `limit` accepts and that ends inside the buffer). The CRC is the caller's next check.
fn frame_batch(
    buf: &[u8],
    pos: usize,
    limit: impl Fn(usize, &BatchHeader) -> Result<(), LogError>,
) -> Result<(BatchHeader, &[u8]), LogError> {
    let rest = &buf[pos..];
    let Some(header) = BatchHeader::parse(rest) else {
        return Err(LogError::CorruptRecord(format!(
            "{} bytes at position {pos} are too few for a record batch header",
            rest.len()
        )));
    };
    if header.magic != 2 {
        return Err(LogError::InvalidRecord(format!(
            "unsupported record batch magic {}",
            header.magic
        )));
    }
    let Some(size) = header.total_size() else {
        return Err(illegal_length_of(&header));
    };
    limit(size, &header)?;
    if size > rest.len() {
        return Err(LogError::CorruptRecord(format!(
            "batch of {size} bytes truncated to {}",
            rest.len()
        )));
    }
    Ok((header, &rest[..size]))
}

fn illegal_length_of(header: &BatchHeader) -> LogError {
    LogError::CorruptRecord(format!("illegal batch length {}", header.batch_length))
}

/// Largest batch a follower accepts: one that fits a segment's u32 positions. The leader
/// already enforced `max.message.bytes`; refusing what it accepted would stall replication.
const MAX_REPLICATED_BATCH: usize = i32::MAX as usize;

/// Validates batches a follower fetched from its leader, before anything is written: batches
/// exactly as the leader stored them, offsets and leader epochs already assigned.
///
/// Checks, per batch: a whole header, magic 2, a legal `batchLength` that ends inside the
/// buffer, the CRC, `0 <= recordCount <= lastOffsetDelta + 1` (compaction leaves fewer records
/// than the offsets a batch spans), a non-negative base offset, and base offsets that increase
/// from batch to batch without overlap. The buffer must end exactly after the last batch.
/// Returns each batch's position, size and header.
pub(crate) fn validate_replicated(
    buf: &[u8],
) -> Result<Vec<(ValidatedBatch, BatchHeader)>, LogError> {
    if buf.is_empty() {
        return Err(LogError::InvalidRecord("empty record set".into()));
    }
    let mut batches: Vec<(ValidatedBatch, BatchHeader)> = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let (header, batch) = frame_batch(buf, pos, |size, header| {
            if size > MAX_REPLICATED_BATCH {
                return Err(illegal_length_of(header));
            }
            Ok(())
        })?;
        let size = batch.len();
        if !crc_matches(batch, &header) {
            return Err(LogError::CorruptRecord(format!(
                "CRC mismatch at offset {}: header says {:#010x}, computed {:#010x}",
                header.base_offset,
                header.crc,
                compute_crc(batch)
            )));
        }
        if header.last_offset_delta < 0
            || header.record_count < 0
            || i64::from(header.record_count) > i64::from(header.last_offset_delta) + 1
        {
            return Err(LogError::InvalidRecord(format!(
                "record count {} does not fit last offset delta {}",
                header.record_count, header.last_offset_delta
            )));
        }
        if header.base_offset < 0 {
            return Err(LogError::InvalidRecord(format!(
                "negative base offset {}",
                header.base_offset
            )));
        }
        if let Some((_, prev)) = batches.last() {
            if header.base_offset < prev.next_offset() {
                return Err(LogError::InvalidRecord(format!(
                    "batch at offset {} overlaps the previous one ending at {}",
                    header.base_offset,
                    prev.last_offset()
                )));
            }
        }
        batches.push((
            ValidatedBatch {
                position: pos,
                size,
                record_count: header.record_count,
                max_timestamp: header.max_timestamp,
            },
            header,
        ));
        pos += size;
    }
    Ok(batches)
}

/// Rewrites the base offset; outside the CRC, so the CRC stays valid.
pub(crate) fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch; outside the CRC.
pub(crate) fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Rewrites the attributes; the caller must recompute the CRC.
pub(crate) fn set_attributes(batch: &mut [u8], attributes: i16) {
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
}

/// Rewrites lastOffsetDelta; the caller must recompute the CRC.
pub(crate) fn set_last_offset_delta(batch: &mut [u8], delta: i32) {
    batch[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&delta.to_be_bytes());
}

/// Rewrites maxTimestamp; the caller must recompute the CRC.
pub(crate) fn set_max_timestamp(batch: &mut [u8], timestamp: i64) {
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
}

/// Rewrites baseSequence; the caller must recompute the CRC.
pub(crate) fn set_base_sequence(batch: &mut [u8], sequence: i32) {
    batch[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&sequence.to_be_bytes());
}

/// Recomputes and stores the CRC after a rewrite inside the checksummed range.
pub(crate) fn update_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Stamps a batch with LogAppendTime: sets the timestamp-type bit and the max timestamp, then
/// recomputes the CRC (both fields are inside it).
pub(crate) fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
    set_attributes(batch, attributes);
    set_max_timestamp(batch, now_ms);
    update_crc(batch);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::log::test_util::{encode_batch, records};
    use kafka_protocol::records::Compression;
    use proptest::prelude::*;

    const MAX: usize = 1_048_588;

    #[test]
    fn accepts_encoder_batches_with_every_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encode_batch(&records(0, 10, 1000), codec);
            let v = validate_produce(&batch, MAX).unwrap();
            assert_eq!(v.len(), 1, "{codec:?}");
            assert_eq!(v[0].record_count, 10);
            assert_eq!(v[0].size, batch.len());
            assert_eq!(v[0].max_timestamp, 1009);
        }
    }

    #[test]
    fn accepts_concatenated_batches() {
        let mut buf = encode_batch(&records(0, 3, 0), Compression::None).to_vec();
        buf.extend_from_slice(&encode_batch(&records(0, 2, 0), Compression::Gzip));
        let v = validate_produce(&buf, MAX).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].position, v[0].size);
    }

    #[test]
    fn rejects_bad_crc() {
        let mut b = encode_batch(&records(0, 3, 0), Compression::None).to_vec();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(
            validate_produce(&b, MAX),
            Err(LogError::CorruptRecord(_))
        ));
    }

    #[test]
    fn rejects_bad_magic() {
        let mut b = encode_batch(&records(0, 3, 0), Compression::None).to_vec();
        b[MAGIC] = 1;
        assert!(matches!(
            validate_produce(&b, MAX),
            Err(LogError::InvalidRecord(_))
        ));
    }

    #[test]
    fn rejects_truncated_batch() {
        let b = encode_batch(&records(0, 3, 0), Compression::None);
        for cut in [10, 60, 61, b.len() - 1] {
            assert!(
                matches!(
                    validate_produce(&b[..cut], MAX),
                    Err(LogError::CorruptRecord(_))
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn rejects_count_mismatch() {
        let mut b = encode_batch(&records(0, 3, 0), Compression::None).to_vec();
        b[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&2i32.to_be_bytes());
        update_crc(&mut b);
        assert!(matches!(
            validate_produce(&b, MAX),
            Err(LogError::InvalidRecord(_))
        ));
    }

    #[test]
    fn rejects_zero_count() {
        let mut b = encode_batch(&records(0, 1, 0), Compression::None).to_vec();
        b[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&0i32.to_be_bytes());
        set_last_offset_delta(&mut b, -1);
        update_crc(&mut b);
        assert!(matches!(
            validate_produce(&b, MAX),
            Err(LogError::InvalidRecord(_))
        ));
    }

    #[test]
    fn rejects_impossible_record_count() {
        let mut b = encode_batch(&records(0, 1, 0), Compression::None).to_vec();
        b[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&1_000_000i32.to_be_bytes());
        set_last_offset_delta(&mut b, 999_999);
        update_crc(&mut b);
        assert!(matches!(
            validate_produce(&b, MAX),
            Err(LogError::InvalidRecord(_))
        ));
    }

    #[test]
    fn rejects_trailing_garbage() {
        let mut b = encode_batch(&records(0, 3, 0), Compression::None).to_vec();
        b.extend_from_slice(&[0, 1, 2]);
        assert!(matches!(
            validate_produce(&b, MAX),
            Err(LogError::CorruptRecord(_))
        ));
    }

    #[test]
    fn rejects_too_large() {
        let b = encode_batch(&records(0, 3, 0), Compression::None);
        match validate_produce(&b, b.len() - 1) {
            Err(LogError::RecordTooLarge { size, max }) => {
                assert_eq!(size, b.len());
                assert_eq!(max, b.len() - 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_empty() {
        assert!(validate_produce(&[], MAX).is_err());
    }

    #[test]
    fn log_append_time_keeps_crc_valid() {
        let mut b = encode_batch(&records(0, 3, 0), Compression::Lz4).to_vec();
        set_log_append_time(&mut b, 12345);
        let h = BatchHeader::parse(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 12345);
        assert!(crc_matches(&b, &h));
    }

    #[test]
    fn base_offset_rewrite_keeps_crc_valid() {
        let mut b = encode_batch(&records(0, 3, 0), Compression::None).to_vec();
        set_base_offset(&mut b, 77);
        set_partition_leader_epoch(&mut b, 0);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset, 77);
        assert_eq!(h.last_offset(), 79);
        assert!(validate_produce(&b, MAX).is_ok());
    }

    #[test]
    fn leader_epoch_is_outside_the_crc() {
        let mut b = encode_batch(&records(0, 3, 0), Compression::None).to_vec();
        set_partition_leader_epoch(&mut b, 17);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.partition_leader_epoch, 17);
        assert!(crc_matches(&b, &h));
    }

    #[test]
    fn replicated_batches_are_checked_but_keep_their_offsets() {
        let mut first = encode_batch(&records(0, 3, 0), Compression::None).to_vec();
        set_base_offset(&mut first, 10);
        let mut second = encode_batch(&records(0, 2, 0), Compression::Gzip).to_vec();
        // A gap, as compaction on the leader leaves.
        set_base_offset(&mut second, 20);
        let mut buf = first.clone();
        buf.extend_from_slice(&second);
        let v = validate_replicated(&buf).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].1.base_offset, v[1].1.base_offset), (10, 20));
        assert_eq!(v[1].0.position, first.len());

        // Overlapping offsets.
        let mut overlap = second.clone();
        set_base_offset(&mut overlap, 12);
        let mut buf = first.clone();
        buf.extend_from_slice(&overlap);
        assert!(matches!(
            validate_replicated(&buf),
            Err(LogError::InvalidRecord(_))
        ));
        // A bit flip anywhere under the CRC.
        let mut bad = first.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x10;
        assert!(matches!(
            validate_replicated(&bad),
            Err(LogError::CorruptRecord(_))
        ));
        // Truncated, trailing garbage, empty, wrong magic.
        assert!(validate_replicated(&first[..first.len() - 1]).is_err());
        let mut trailing = first.clone();
        trailing.extend_from_slice(&[1, 2, 3]);
        assert!(validate_replicated(&trailing).is_err());
        assert!(validate_replicated(&[]).is_err());
        let mut magic = first.clone();
        magic[MAGIC] = 1;
        assert!(validate_replicated(&magic).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = validate_produce(&bytes, MAX);
            let _ = validate_replicated(&bytes);
            let _ = BatchHeader::parse(&bytes).map(|h| (h.total_size(), h.next_offset()));
        }

        #[test]
        fn mutated_batches_never_panic(
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..8),
            cut in 0usize..300,
        ) {
            let mut b = encode_batch(&records(0, 4, 0), Compression::None).to_vec();
            for (at, v) in flips {
                let n = b.len();
                b[at % n] = v;
            }
            b.truncate(cut.min(b.len()));
            let _ = validate_produce(&b, MAX);
            let _ = validate_replicated(&b);
        }
    }
}

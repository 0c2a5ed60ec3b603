//! Control batches: the commit and abort markers a transaction coordinator writes into each
//! partition of a transaction (Kafka's `EndTransactionMarker`).
//!
//! A marker is a batch with the control and transactional attribute bits set, the producer id
//! and epoch of the transaction, no sequence, and one record whose key is `version: i16 (0),
//! type: i16` (0 abort, 1 commit) and whose value is `version: i16 (0), coordinator epoch:
//! i32`. Control batches are never compressed, so the type is read straight from the bytes.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::batch::HEADER_SIZE;
use super::error::LogError;

/// What a control record says: the end of a transaction, one way or the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlRecordType {
    /// The transaction's records are to be skipped by read_committed consumers.
    Abort,
    /// The transaction's records are visible.
    Commit,
}

impl ControlRecordType {
    /// The type id stored in the record key.
    fn id(self) -> i16 {
        match self {
            ControlRecordType::Abort => 0,
            ControlRecordType::Commit => 1,
        }
    }
}

/// Reads the type of a control batch from its bytes (header included). `None` for a batch too
/// short or whose record is not a control record this broker knows (Kafka's other control
/// types, e.g. KRaft's, never appear in data partitions).
pub(crate) fn control_type(batch: &[u8]) -> Option<ControlRecordType> {
    let mut c = Varints(batch.get(HEADER_SIZE..)?);
    let _length = c.varint()?;
    let _attributes = c.byte()?;
    let _timestamp_delta = c.varint()?;
    let _offset_delta = c.varint()?;
    let key_len = c.varint()?;
    if key_len < 4 {
        return None;
    }
    let key = c.0.get(..4)?;
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(ControlRecordType::Abort),
        1 => Some(ControlRecordType::Commit),
        _ => None,
    }
}

/// Builds the marker batch ending producer `producer_id`'s transaction, at offset 0 (the log
/// assigns the real one).
pub(crate) fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    kind: ControlRecordType,
    timestamp_ms: i64,
) -> Result<Bytes, LogError> {
    let mut key = BytesMut::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.id().to_be_bytes());
    let mut value = BytesMut::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: timestamp_ms,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        std::iter::once(&record),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| LogError::InvalidRecord(format!("cannot encode a transaction marker: {e}")))?;
    Ok(buf.freeze())
}

/// A cursor over the zigzag varints at the start of a record.
struct Varints<'a>(&'a [u8]);

impl Varints<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn varint(&mut self) -> Option<i64> {
        let mut raw = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::log::batch::BatchHeader;

    #[test]
    fn markers_round_trip_their_type_and_are_control_batches() {
        for kind in [ControlRecordType::Abort, ControlRecordType::Commit] {
            let b = marker_batch(7, 3, 1, kind, 1000).unwrap();
            let h = BatchHeader::parse(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch, h.record_count), (7, 3, 1));
            assert_eq!(control_type(&b), Some(kind));
        }
    }

    #[test]
    fn garbage_after_a_header_has_no_control_type() {
        let mut b = marker_batch(7, 3, 1, ControlRecordType::Commit, 0)
            .unwrap()
            .to_vec();
        b.truncate(HEADER_SIZE + 3);
        assert_eq!(control_type(&b), None);
    }
}

//! Records of the `__consumer_offsets` topic, in Kafka's own key and value formats, so Kafka's
//! tools (`OffsetsMessageFormatter`) can read our topic.
//!
//! Offset commit key (version 1): i16 version, string group, string topic, i32 partition.
//! Offset commit value (version 3): i16 version, i64 offset, i32 leader epoch, string metadata,
//! i64 commit timestamp. A deleted offset is the key with a null value (a tombstone), which
//! compaction removes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Key of a committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetKey {
    /// Group id.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// Value of a committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetValue {
    /// Committed offset.
    pub offset: i64,
    /// Leader epoch or -1.
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: String,
    /// Commit time, ms since epoch.
    pub commit_timestamp: i64,
}

fn put_string(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    buf.put_i16(len);
    buf.put_slice(&s.as_bytes()[..usize::try_from(len).unwrap_or(0)]);
}

fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = usize::try_from(buf.get_i16()).ok()?;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

impl OffsetKey {
    /// Kafka's version-1 key bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(1);
        put_string(&mut buf, &self.group);
        put_string(&mut buf, &self.topic);
        buf.put_i32(self.partition);
        buf.freeze()
    }

    /// Decodes an offset-commit key (versions 0 and 1); `None` for other record kinds.
    pub fn decode(mut buf: Bytes) -> Option<OffsetKey> {
        if buf.remaining() < 2 {
            return None;
        }
        let version = buf.get_i16();
        if !(0..=1).contains(&version) {
            return None;
        }
        let group = get_string(&mut buf)?;
        let topic = get_string(&mut buf)?;
        if buf.remaining() < 4 {
            return None;
        }
        Some(OffsetKey {
            group,
            topic,
            partition: buf.get_i32(),
        })
    }
}

impl OffsetValue {
    /// Kafka's version-3 value bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        buf.put_i64(self.offset);
        buf.put_i32(self.leader_epoch);
        put_string(&mut buf, &self.metadata);
        buf.put_i64(self.commit_timestamp);
        buf.freeze()
    }

    /// Decodes value versions 1 and 3 (the ones without an expiry are 3; 1 carries one we
    /// ignore).
    pub fn decode(mut buf: Bytes) -> Option<OffsetValue> {
        if buf.remaining() < 2 {
            return None;
        }
        let version = buf.get_i16();
        if buf.remaining() < 8 {
            return None;
        }
        let offset = buf.get_i64();
        let leader_epoch = if version >= 3 {
            if buf.remaining() < 4 {
                return None;
            }
            buf.get_i32()
        } else {
            -1
        };
        let metadata = get_string(&mut buf)?;
        if buf.remaining() < 8 {
            return None;
        }
        let commit_timestamp = buf.get_i64();
        Some(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        })
    }
}

/// Encodes key/value pairs as one uncompressed record batch, as a non-idempotent producer
/// would (offsets relative from 0; the log assigns real ones).
pub fn encode_batch(entries: &[(Bytes, Option<Bytes>)], timestamp: i64) -> Option<Bytes> {
    if entries.is_empty() {
        return None;
    }
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch only while offset - sequence is constant.
            sequence: i32::try_from(i).unwrap_or(i32::MAX),
            timestamp,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .ok()?;
    if buf.len() < 61 {
        return None;
    }
    // No producer id, so no sequence: set base sequence to -1 and recompute the CRC.
    buf[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    Some(buf.freeze())
}

/// The `__consumer_offsets` partition of a group: Java's `String.hashCode` of the id,
/// made non-negative, modulo the partition count, exactly as Kafka places groups.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut hash: i32 = 0;
    for unit in group.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs maps i32::MIN to 0 rather than overflowing.
    let non_negative = if hash == i32::MIN { 0 } else { hash.abs() };
    non_negative % partitions.max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn group_partition_matches_java_string_hash_code() {
        // "hello".hashCode() == 99162322 in Java.
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE in Java.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }

    proptest! {
        #[test]
        fn keys_and_values_round_trip(group in "[a-z0-9._-]{1,40}", topic in "[a-z0-9._-]{1,40}", partition in 0i32..1000,
                                      offset in 0i64..i64::MAX, epoch in -1i32..100, metadata in ".{0,50}", ts in 0i64..i64::MAX) {
            let key = OffsetKey { group, topic, partition };
            prop_assert_eq!(OffsetKey::decode(key.encode()), Some(key));
            let value = OffsetValue { offset, leader_epoch: epoch, metadata, commit_timestamp: ts };
            prop_assert_eq!(OffsetValue::decode(value.encode()), Some(value));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = OffsetKey::decode(Bytes::from(bytes.clone()));
            let _ = OffsetValue::decode(Bytes::from(bytes));
        }
    }
}

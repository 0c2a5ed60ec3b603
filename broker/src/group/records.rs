//! Records of the `__consumer_offsets` topic, in Kafka's own key and value formats, so Kafka's
//! tools (`OffsetsMessageFormatter`) can read our topic.
//!
//! Offset commit key (version 1): i16 version, string group, string topic, i32 partition.
//! Offset commit value (version 3): i16 version, i64 offset, i32 leader epoch, string metadata,
//! i64 commit timestamp. A deleted offset is the key with a null value (a tombstone), which
//! compaction removes.
//!
//! Group metadata key (version 2): i16 version, string group. Group metadata value (version
//! 3): i16 version, string protocol type, i32 generation, nullable string protocol, nullable
//! string leader, i64 state timestamp, then the members (i32 count; each: string member id,
//! nullable string group instance id, string client id, string client host, i32 rebalance
//! timeout, i32 session timeout, bytes subscription, bytes assignment). A deleted group is the
//! key with a null value.

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

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn get_nullable_string(buf: &mut Bytes) -> Option<Option<String>> {
    if buf.remaining() >= 2 && buf.chunk()[..2] == [0xff, 0xff] {
        buf.advance(2);
        return Some(None);
    }
    get_string(buf).map(Some)
}

fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_i32(i32::try_from(bytes.len()).unwrap_or(i32::MAX));
    buf.put_slice(bytes);
}

fn get_bytes(buf: &mut Bytes) -> Option<Bytes> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = usize::try_from(buf.get_i32()).ok()?;
    if buf.remaining() < len {
        return None;
    }
    Some(buf.split_to(len))
}

fn get_i32(buf: &mut Bytes) -> Option<i32> {
    (buf.remaining() >= 4).then(|| buf.get_i32())
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

/// Key of a group's metadata record: the group id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadataKey {
    /// Group id.
    pub group: String,
}

impl GroupMetadataKey {
    /// Kafka's version-2 key bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(2);
        put_string(&mut buf, &self.group);
        buf.freeze()
    }

    /// Decodes a group metadata key (version 2); `None` for other record kinds.
    pub fn decode(mut buf: Bytes) -> Option<GroupMetadataKey> {
        if buf.remaining() < 2 || buf.get_i16() != 2 {
            return None;
        }
        let group = get_string(&mut buf)?;
        Some(GroupMetadataKey { group })
    }
}

/// One member in a group's metadata record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberMetadata {
    /// Member id.
    pub member_id: String,
    /// Static membership id (KIP-345).
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Rebalance timeout, ms.
    pub rebalance_timeout_ms: i32,
    /// Session timeout, ms.
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's chosen protocol.
    pub subscription: Bytes,
    /// Its assignment in this generation.
    pub assignment: Bytes,
}

/// A group's membership as of a completed rebalance (or its becoming empty): what a new
/// coordinator restores so that members carry on without rejoining.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadataValue {
    /// Protocol type (`consumer`, `connect`, ...); empty when never set.
    pub protocol_type: String,
    /// Generation.
    pub generation: i32,
    /// Chosen assignment strategy.
    pub protocol: Option<String>,
    /// Leader member id.
    pub leader: Option<String>,
    /// When the group entered this state, ms since epoch.
    pub state_timestamp: i64,
    /// Members, the longest-standing first.
    pub members: Vec<MemberMetadata>,
}

impl GroupMetadataValue {
    /// Kafka's version-3 value bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_i16(3);
        put_string(&mut buf, &self.protocol_type);
        buf.put_i32(self.generation);
        put_nullable_string(&mut buf, self.protocol.as_deref());
        put_nullable_string(&mut buf, self.leader.as_deref());
        buf.put_i64(self.state_timestamp);
        buf.put_i32(i32::try_from(self.members.len()).unwrap_or(i32::MAX));
        for member in &self.members {
            put_string(&mut buf, &member.member_id);
            put_nullable_string(&mut buf, member.group_instance_id.as_deref());
            put_string(&mut buf, &member.client_id);
            put_string(&mut buf, &member.client_host);
            buf.put_i32(member.rebalance_timeout_ms);
            buf.put_i32(member.session_timeout_ms);
            put_bytes(&mut buf, &member.subscription);
            put_bytes(&mut buf, &member.assignment);
        }
        buf.freeze()
    }

    /// Decodes value version 3 (what we write; Kafka 2.3+ writes it too). `None` for anything
    /// else or damaged bytes: the group then starts over, as if new, when its members rejoin.
    pub fn decode(mut buf: Bytes) -> Option<GroupMetadataValue> {
        if buf.remaining() < 2 || buf.get_i16() != 3 {
            return None;
        }
        let protocol_type = get_string(&mut buf)?;
        let generation = get_i32(&mut buf)?;
        let protocol = get_nullable_string(&mut buf)?;
        let leader = get_nullable_string(&mut buf)?;
        if buf.remaining() < 8 {
            return None;
        }
        let state_timestamp = buf.get_i64();
        let count = usize::try_from(get_i32(&mut buf)?).ok()?;
        // Every member takes at least 22 bytes: a count beyond that is damage, not a reason
        // to allocate.
        if count > buf.remaining() / 22 {
            return None;
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            members.push(MemberMetadata {
                member_id: get_string(&mut buf)?,
                group_instance_id: get_nullable_string(&mut buf)?,
                client_id: get_string(&mut buf)?,
                client_host: get_string(&mut buf)?,
                rebalance_timeout_ms: get_i32(&mut buf)?,
                session_timeout_ms: get_i32(&mut buf)?,
                subscription: get_bytes(&mut buf)?,
                assignment: get_bytes(&mut buf)?,
            });
        }
        Some(GroupMetadataValue {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp,
            members,
        })
    }
}

/// Encodes key/value pairs as one uncompressed record batch, as a non-idempotent producer
/// would (offsets relative from 0; the log assigns real ones).
pub fn encode_batch(entries: &[(Bytes, Option<Bytes>)], timestamp: i64) -> Option<Bytes> {
    encode_records(entries, timestamp, None)
}

/// Encodes key/value pairs as one uncompressed batch of `producer_id`'s open transaction
/// (the group coordinator's TxnOffsetCommit records).
pub fn encode_transactional_batch(
    entries: &[(Bytes, Option<Bytes>)],
    timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
) -> Option<Bytes> {
    encode_records(entries, timestamp, Some((producer_id, producer_epoch)))
}

fn encode_records(
    entries: &[(Bytes, Option<Bytes>)],
    timestamp: i64,
    producer: Option<(i64, i16)>,
) -> Option<Bytes> {
    if entries.is_empty() {
        return None;
    }
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
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
    if producer.is_some() {
        return Some(buf.freeze());
    }
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
        fn group_metadata_round_trips(group in "[a-z0-9._-]{1,40}", generation in 0i32..1000, members in 0usize..4,
                                      instance in proptest::option::of("[a-z]{1,8}"), sub in proptest::collection::vec(any::<u8>(), 0..40)) {
            let key = GroupMetadataKey { group };
            prop_assert_eq!(GroupMetadataKey::decode(key.encode()), Some(key.clone()));
            prop_assert_eq!(OffsetKey::decode(key.encode()), None);
            let value = GroupMetadataValue {
                protocol_type: "consumer".into(),
                generation,
                protocol: (members > 0).then(|| "range".to_string()),
                leader: (members > 0).then(|| "m-0".to_string()),
                state_timestamp: 1_700_000_000_000,
                members: (0..members).map(|i| MemberMetadata {
                    member_id: format!("m-{i}"),
                    group_instance_id: instance.clone(),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 60_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::from(sub.clone()),
                    assignment: Bytes::from(vec![i as u8; i]),
                }).collect(),
            };
            prop_assert_eq!(GroupMetadataValue::decode(value.encode()), Some(value));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = OffsetKey::decode(Bytes::from(bytes.clone()));
            let _ = GroupMetadataKey::decode(Bytes::from(bytes.clone()));
            let _ = GroupMetadataValue::decode(Bytes::from(bytes.clone()));
            let _ = OffsetValue::decode(Bytes::from(bytes));
        }
    }
}

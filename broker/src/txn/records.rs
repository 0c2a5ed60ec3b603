//! The records of `__transaction_state`, in Kafka's layout (`TransactionLogKey` version 0 and
//! `TransactionLogValue` versions 0 and 1), so a Kafka tool reading the topic understands them.
//!
//! Key: version `i16` (0), transactional id (`i16` length + UTF-8). Value version 0: producer id
//! `i64`, producer epoch `i16`, timeout `i32`, state `i8`, partitions (`i32` count of topics,
//! each topic name and `i32` count of `i32` partitions), last update time `i64`, start time
//! `i64`. Version 1 (written for producers on transaction version 2) is the same fields in
//! Kafka's flexible encoding (compact strings and arrays, unsigned-varint lengths plus one, a
//! tagged-field section after each structure), with the tagged fields PreviousProducerId (0),
//! NextProducerId (1) and ClientTransactionVersion (2). Decoding is checked throughout: a
//! damaged record is skipped, never a panic.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use super::state::{TxnMetadata, TxnState};

/// Encodes the key of a transactional id.
pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(0);
    put_string(&mut b, transactional_id);
    b.freeze()
}

/// Decodes a key; `None` if it is not a version-0 transaction log key.
pub fn decode_key(bytes: &[u8]) -> Option<String> {
    let mut r = Reader(bytes);
    if r.i16()? != 0 {
        return None;
    }
    r.string()
}

/// Encodes a transaction's state: version 1 for a producer on transaction version 2 (its
/// tagged fields carry what version 0 cannot), version 0 otherwise.
pub fn encode_value(m: &TxnMetadata) -> Bytes {
    let flexible = m.bumps_epoch_per_transaction();
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(i16::from(flexible));
    b.put_i64(m.producer_id);
    b.put_i16(m.producer_epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state.id());
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in &m.partitions {
        match topics.last_mut() {
            Some((t, ps)) if *t == topic.as_str() => ps.push(*partition),
            _ => topics.push((topic.as_str(), vec![*partition])),
        }
    }
    if flexible {
        put_uvarint(&mut b, topics.len() as u64 + 1);
        for (topic, partitions) in topics {
            put_uvarint(&mut b, topic.len() as u64 + 1);
            b.put_slice(topic.as_bytes());
            put_uvarint(&mut b, partitions.len() as u64 + 1);
            for p in partitions {
                b.put_i32(p);
            }
            put_uvarint(&mut b, 0); // the topic's tagged fields: none
        }
    } else {
        b.put_i32(topics.len() as i32);
        for (topic, partitions) in topics {
            put_string(&mut b, topic);
            b.put_i32(partitions.len() as i32);
            for p in partitions {
                b.put_i32(p);
            }
        }
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    if flexible {
        // Tagged fields in tag order, each only when it differs from its default.
        let mut tagged: Vec<(u64, Vec<u8>)> = Vec::new();
        if m.previous_producer_id != -1 {
            tagged.push((0, m.previous_producer_id.to_be_bytes().to_vec()));
        }
        if m.next_producer_id != -1 {
            tagged.push((1, m.next_producer_id.to_be_bytes().to_vec()));
        }
        if m.client_transaction_version != 0 {
            tagged.push((2, m.client_transaction_version.to_be_bytes().to_vec()));
        }
        put_uvarint(&mut b, tagged.len() as u64);
        for (tag, data) in tagged {
            put_uvarint(&mut b, tag);
            put_uvarint(&mut b, data.len() as u64);
            b.put_slice(&data);
        }
    }
    b.freeze()
}

/// Decodes a value (version 0 or 1) for `transactional_id`; `None` if damaged.
pub fn decode_value(transactional_id: &str, bytes: &[u8]) -> Option<TxnMetadata> {
    let mut r = Reader(bytes);
    let flexible = match r.i16()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_id(r.i8()?)?;
    let mut partitions = BTreeSet::new();
    if flexible {
        for _ in 0..r.compact_count()? {
            let topic = r.compact_string()?;
            for _ in 0..r.compact_count()? {
                partitions.insert((topic.clone(), r.i32()?));
            }
            r.skip_tagged_fields()?;
        }
    } else {
        for _ in 0..r.count()? {
            let topic = r.string()?;
            for _ in 0..r.count()? {
                partitions.insert((topic.clone(), r.i32()?));
            }
        }
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    let mut m = TxnMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
        client_transaction_version: 0,
        previous_producer_id: -1,
        next_producer_id: -1,
    };
    if flexible {
        for _ in 0..r.uvarint()? {
            let tag = r.uvarint()?;
            let len = usize::try_from(r.uvarint()?).ok()?;
            let mut data = Reader(r.bytes(len)?);
            match tag {
                0 => m.previous_producer_id = data.i64()?,
                1 => m.next_producer_id = data.i64()?,
                2 => m.client_transaction_version = data.i16()?,
                // A field of a later version: skipped, as Kafka's readers do.
                _ => {}
            }
        }
    }
    Some(m)
}

fn put_uvarint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn put_string(b: &mut BytesMut, s: &str) {
    // Transactional ids and topic names are far below 32 KiB (requests bound them).
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

/// Bounds-checked big-endian reads.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let head = self.0.get(..N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(head);
        self.0 = &self.0[N..];
        Some(a)
    }
    fn i8(&mut self) -> Option<i8> {
        self.take::<1>().map(|a| a[0] as i8)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
    /// An array length, bounded by the bytes left (each element takes at least 2 bytes).
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n <= self.0.len() / 2).then_some(n)
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        let s = std::str::from_utf8(self.bytes(len)?).ok()?.to_string();
        Some(s)
    }
    fn bytes(&mut self, len: usize) -> Option<&[u8]> {
        let head = self.0.get(..len)?;
        self.0 = &self.0[len..];
        Some(head)
    }
    /// An unsigned varint of at most ten bytes.
    fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.take::<1>()?[0];
            value |= u64::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    /// A compact array length (stored plus one; 0 is null, read as empty), bounded by the
    /// bytes left.
    fn compact_count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.uvarint()?).ok()?.saturating_sub(1);
        (n <= self.0.len()).then_some(n)
    }
    fn compact_string(&mut self) -> Option<String> {
        let len = usize::try_from(self.uvarint()?).ok()?.checked_sub(1)?;
        Some(std::str::from_utf8(self.bytes(len)?).ok()?.to_string())
    }
    fn skip_tagged_fields(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let len = usize::try_from(self.uvarint()?).ok()?;
            self.bytes(len)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_refused() {
        let m = TxnMetadata {
            transactional_id: "tx".into(),
            producer_id: 42,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into(),
            start_ms: 10,
            last_update_ms: 20,
            client_transaction_version: 0,
            previous_producer_id: -1,
            next_producer_id: -1,
        };
        let v2 = TxnMetadata {
            client_transaction_version: 2,
            next_producer_id: 43,
            ..m.clone()
        };
        for m in [m, v2] {
            let v = encode_value(&m);
            assert_eq!(
                u16::from_be_bytes([v[0], v[1]]),
                u16::from(m.client_transaction_version >= 2),
                "value version"
            );
            assert_eq!(decode_value("tx", &v), Some(m));
            for cut in 0..v.len() {
                assert_eq!(decode_value("tx", &v[..cut]), None);
            }
        }
        assert_eq!(decode_key(&encode_key("tx")).as_deref(), Some("tx"));
    }

    #[test]
    fn a_version_1_value_is_laid_out_as_kafkas_flexible_record() {
        let m = TxnMetadata {
            transactional_id: "tx".into(),
            producer_id: 7,
            producer_epoch: 1,
            timeout_ms: 1000,
            state: TxnState::Ongoing,
            partitions: [("t".to_string(), 3)].into(),
            start_ms: 5,
            last_update_ms: 6,
            client_transaction_version: 2,
            previous_producer_id: -1,
            next_producer_id: -1,
        };
        let mut expected = vec![0, 1];
        expected.extend(7i64.to_be_bytes());
        expected.extend(1i16.to_be_bytes());
        expected.extend(1000i32.to_be_bytes());
        expected.push(1);
        // One topic: compact array (2), compact string "t" (2, 't'), one partition (2, 3),
        // no tagged fields (0).
        expected.extend([2, 2, b't', 2, 0, 0, 0, 3, 0]);
        expected.extend(6i64.to_be_bytes());
        expected.extend(5i64.to_be_bytes());
        // One tagged field: ClientTransactionVersion (tag 2, 2 bytes, 2).
        expected.extend([1, 2, 2, 0, 2]);
        assert_eq!(encode_value(&m).to_vec(), expected);
    }
}
